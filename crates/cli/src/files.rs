//! Paths and files: how a path shows in messages, and files written beside their destination
//! then renamed into place (an atomic switch).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The path as given, for messages.
pub fn show(path: &Path) -> String {
    path.display().to_string()
}

/// `dir/.<name>.<what>`: beside `path`, so a rename between the two is atomic.
pub fn sibling(path: &Path, what: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::msg(format!("{}: not a file path", show(path))))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{what}"));
    Ok(path.with_file_name(tmp_name))
}

/// Makes a rename in `path`'s directory durable (best effort: not every platform can).
pub fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
