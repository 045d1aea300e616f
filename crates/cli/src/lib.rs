//! The `dosql` command: a SQL shell, import, export, verify and info for dosql databases.
//!
//! Every subcommand takes a `<target>`: `http(s)://host[:port]/db/<name>` for a database on a
//! dosql server (the Worker; `--token`/`DOSQL_TOKEN` for its bearer token), or the path of a
//! local store file (the Durable Object layout in a redb file: `dosql_layout::RedbKv`), so
//! everything also works offline.
//!
//! Errors are one line on stderr, `dosql: <what went wrong>`, and exit code 1 (usage errors:
//! clap's message and 2).

#![forbid(unsafe_code)]

mod backup;
mod db;
pub mod error;
mod files;
mod follow;
mod history;
mod local;
mod progress;
mod remote;
pub mod render;
mod shell;
mod source;
mod target;
mod transfer;
pub mod when;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::db::Open;
use crate::error::Result;
use crate::render::Mode;
use crate::target::Target;

#[derive(Debug, Parser)]
#[command(
    name = "dosql",
    version,
    about = "SQL shell, import, export and checks for dosql databases",
    long_about = "SQL shell, import, export and checks for dosql databases.\n\n\
        <TARGET> is a database on a dosql server, http(s)://host[:port]/db/<name>, or the path of a \
        local dosql store file (created by `dosql import` or `dosql shell`)."
)]
struct Cli {
    /// Bearer token for remote targets (the server's DOSQL_TOKEN secret)
    #[arg(long, env = "DOSQL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Read a state at least as new as this bookmark (`<lineage>:<txid>`, from an answer's
    /// x-dosql-bookmark), or "first-primary"; each answer's bookmark is sent with the next
    /// request, so a session reads its own writes on a read replica
    #[arg(long, env = "DOSQL_BOOKMARK", global = true)]
    bookmark: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL: interactively, or the SQL argument, or SQL read from stdin
    Shell {
        /// http(s)://host/db/<name>, or a local store path (created if missing)
        target: String,
        /// SQL statements (or a dot-command) to run instead of reading input
        sql: Option<String>,
        /// Output mode [default: table on a terminal, list otherwise]
        #[arg(short, long, value_enum)]
        mode: Option<Mode>,
        /// Print column names in list and csv modes
        #[arg(long)]
        header: bool,
    },
    /// Load a SQLite database file, replacing the target's database atomically
    Import {
        /// The SQLite database file
        file: PathBuf,
        /// http(s)://host/db/<name>, or a local store path (created if missing)
        target: String,
        /// Replace a database that is not empty
        #[arg(long)]
        force: bool,
        /// No progress and no summary
        #[arg(short, long)]
        quiet: bool,
        /// Skip PRAGMA integrity_check on the file before the import
        #[arg(long)]
        no_check: bool,
        /// Pages per upload request or local commit (default: as many as the server takes;
        /// 16 MiB locally). For tests.
        #[arg(long, hide = true)]
        chunk_pages: Option<u32>,
    },
    /// Write a consistent snapshot of the database as a SQLite file
    Export {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// The SQLite file to write
        file: PathBuf,
        /// Replace the file if it exists
        #[arg(long)]
        force: bool,
        /// No progress and no summary
        #[arg(short, long)]
        quiet: bool,
        /// Export the database as of this txid (its history must keep it)
        #[arg(long)]
        txid: Option<u64>,
        /// Pages per request (default: as many as the server gives). For tests.
        #[arg(long, hide = true)]
        chunk_pages: Option<u32>,
    },
    /// List the commits the database's history keeps, newest first, and the window
    History {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// How many commits to list
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Print the history as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Make the database what it was at a txid or a time, as a new commit (undoable)
    Restore {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// The txid to go back to
        #[arg(long, conflicts_with = "time")]
        txid: Option<u64>,
        /// The time to go back to: RFC 3339 (2026-12-06T10:26:00Z) or "<n> minutes ago"
        #[arg(long)]
        time: Option<String>,
    },
    /// Create a database holding TARGET as of a txid (now by default), with its own history
    Branch {
        /// The database to branch: http(s)://host/db/<name>, or a local store path
        target: String,
        /// The new database: http(s)://host/db/<name>, or a local store path
        new_target: String,
        /// The txid to branch at (its history must keep it)
        #[arg(long)]
        txid: Option<u64>,
        /// Replace the new target if it is not empty
        #[arg(long)]
        force: bool,
        /// No progress and no summary
        #[arg(short, long)]
        quiet: bool,
    },
    /// Keep a plain SQLite file in sync with the database (sqlite3 and any SQLite library can
    /// read it meanwhile); every update is checked by checksum and applied atomically
    Follow {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// The SQLite file to keep (created by the first run; its state beside it)
        file: PathBuf,
        /// Catch up once, then exit
        #[arg(long)]
        once: bool,
        /// Milliseconds between polls of the database
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// No progress and no line per update
        #[arg(short, long)]
        quiet: bool,
    },
    /// Back the database up continuously as LTX files in Litestream's layout
    /// (<DIR>/ltx/<level>/<min txid>-<max txid>.ltx): one file per commit, compacted later,
    /// and snapshots; resumable after a kill
    Backup {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// The backup directory (created if missing)
        dir: PathBuf,
        /// Catch up once (and compact), then exit
        #[arg(long)]
        once: bool,
        /// Milliseconds between polls of the database
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Seconds between snapshots
        #[arg(long, default_value_t = 86_400)]
        snapshot_interval: u64,
        /// Seconds a per-commit file (level 0) is kept before compaction into level 1
        #[arg(long, default_value_t = 300)]
        compact_after: u64,
        /// Milliseconds of commits one level 1 file covers
        #[arg(long, default_value_t = 30_000)]
        l1_window_ms: u64,
        /// No line per file
        #[arg(short, long)]
        quiet: bool,
    },
    /// Rebuild the database as of a txid or a time from a backup directory, into a SQLite
    /// file or (an http(s) URL) a dosql database
    RestoreBackup {
        /// The backup directory
        dir: PathBuf,
        /// A SQLite file to write, or http(s)://host/db/<name> to import into
        to: String,
        /// The txid to rebuild (default: the newest the backup reaches)
        #[arg(long, conflicts_with = "time")]
        txid: Option<u64>,
        /// The time to rebuild: RFC 3339 or "<n> minutes ago"
        #[arg(long)]
        time: Option<String>,
        /// Replace the file or the database
        #[arg(long)]
        force: bool,
        /// No summary
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run PRAGMA integrity_check, print the SHA-256 of the database's pages and check LTX's
    /// checksum of them against the one the database keeps
    Verify {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// No progress
        #[arg(short, long)]
        quiet: bool,
    },
    /// Page size, page count, size and commit counter (txid)
    Info {
        /// http(s)://host/db/<name>, or a local store path
        target: String,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    // Nothing should panic; if something does, say so in one line, not with a trace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("dosql: internal error: {what}{at} (a bug: please report it)");
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dosql: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Keeps an error on one line whatever its parts contained.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn run(cli: Cli) -> Result<()> {
    let token = cli.token.as_deref();
    if let Some(b) = cli.bookmark.as_deref() {
        remote::start_bookmark(b)?;
    }
    match cli.command {
        Command::Shell {
            target,
            sql,
            mode,
            header,
        } => {
            let mut db = Target::parse(&target, token)?;
            // Before any input is read: a bad target fails at once (a missing store is created).
            db.open(Open::OrCreate)?;
            shell::run(
                &mut *db,
                shell::ShellOptions {
                    sql,
                    mode,
                    headers: header,
                },
            )
        }
        Command::Import {
            file,
            target,
            force,
            quiet,
            no_check,
            chunk_pages,
        } => transfer::import(
            &file,
            &mut *Target::parse(&target, token)?,
            &transfer::ImportOptions {
                force,
                quiet,
                check: !no_check,
                chunk_pages,
            },
        ),
        Command::Export {
            target,
            file,
            force,
            quiet,
            txid,
            chunk_pages,
        } => transfer::export(
            &mut *Target::parse(&target, token)?,
            &file,
            &transfer::ExportOptions {
                force,
                quiet,
                chunk_pages,
                txid,
            },
        ),
        Command::History {
            target,
            limit,
            json,
        } => history::history(&mut *Target::parse(&target, token)?, limit, json),
        Command::Restore { target, txid, time } => {
            history::restore(&mut *Target::parse(&target, token)?, txid, time.as_deref())
        }
        Command::Branch {
            target,
            new_target,
            txid,
            force,
            quiet,
        } => history::branch(
            &mut *Target::parse(&target, token)?,
            &mut *Target::parse(&new_target, token)?,
            txid,
            force,
            quiet,
        ),
        Command::Follow {
            target,
            file,
            once,
            interval_ms,
            quiet,
        } => follow::follow(
            &mut *Target::parse(&target, token)?,
            &file,
            &follow::FollowOptions {
                once,
                interval: std::time::Duration::from_millis(interval_ms.max(10)),
                quiet,
            },
        ),
        Command::Backup {
            target,
            dir,
            once,
            interval_ms,
            snapshot_interval,
            compact_after,
            l1_window_ms,
            quiet,
        } => backup::backup(
            &mut *Target::parse(&target, token)?,
            &dir,
            &backup::BackupOptions {
                once,
                interval: std::time::Duration::from_millis(interval_ms.max(10)),
                snapshot_interval: std::time::Duration::from_secs(snapshot_interval),
                compact_after: std::time::Duration::from_secs(compact_after),
                l1_window: std::time::Duration::from_millis(l1_window_ms.max(1)),
                quiet,
            },
        ),
        Command::RestoreBackup {
            dir,
            to,
            txid,
            time,
            force,
            quiet,
        } => {
            let time_ms = match time.as_deref() {
                Some(t) => {
                    let now = when::now_ms();
                    let ms = when::parse(t, now)?;
                    when::not_future(ms, now)?;
                    Some(ms)
                }
                None => None,
            };
            if to.starts_with("http://") || to.starts_with("https://") {
                let mut db = Target::parse(&to, token)?;
                backup::restore_backup(
                    &dir,
                    backup::RestoreTarget::Database(&mut *db),
                    txid,
                    time_ms,
                    force,
                    quiet,
                )
            } else {
                backup::restore_backup(
                    &dir,
                    backup::RestoreTarget::File(std::path::Path::new(&to)),
                    txid,
                    time_ms,
                    force,
                    quiet,
                )
            }
        }
        Command::Verify { target, quiet } => {
            transfer::verify(&mut *Target::parse(&target, token)?, quiet)
        }
        Command::Info { target, json } => {
            transfer::info(&mut *Target::parse(&target, token)?, json)
        }
    }
}
