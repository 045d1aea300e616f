//! `dosql`: see the library crate (`dosql_cli`) for the commands.

fn main() -> std::process::ExitCode {
    dosql_cli::main()
}
