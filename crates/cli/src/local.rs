//! Local targets: a durable native store (`RedbStore`) in one file, served through the same
//! JSON API (`dosql_api::Session`) the Durable Object serves, so local and remote answer alike.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use dosql_api::Session;
use dosql_pagestore::{PageSize, PageStore, RedbStore, SQLITE_MAGIC};
use dosql_vfs::VfsConfig;
use serde_json::{Value as Json, json};

use crate::bail;
use crate::error::{Error, Result};
use crate::target::show;

/// Opens the store at `path`, which must exist.
pub fn open_existing(path: &Path) -> Result<RedbStore> {
    if !path.exists() {
        bail!(
            "{}: no such store (a local target is a dosql store file; `dosql import` or `dosql shell` creates one)",
            show(path)
        );
    }
    open(path, PageSize::DEFAULT)
}

/// Opens the store at `path`, creating an empty one (pages of `page_size`) if there is none.
pub fn open(path: &Path, page_size: PageSize) -> Result<RedbStore> {
    if path.is_dir() {
        bail!("{}: is a directory, not a store file", show(path));
    }
    refuse_sqlite_file(path)?;
    RedbStore::open(path, page_size).map_err(|e| {
        Error::msg(format!(
            "{}: cannot open as a dosql store: {}",
            show(path),
            e.message()
        ))
    })
}

/// A plain SQLite file given where a store is expected: say what to do instead of letting redb
/// say "invalid database".
fn refuse_sqlite_file(path: &Path) -> Result<()> {
    let mut head = [0u8; 16];
    let is_sqlite = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_MAGIC;
    if is_sqlite {
        bail!(
            "{} is a SQLite database file, not a dosql store: load it with `dosql import {} <store>`",
            show(path),
            show(path)
        );
    }
    Ok(())
}

/// A SQL session over a local store.
pub fn session(store: RedbStore) -> Result<Session> {
    // The VFS registers databases by name, once per process: make every name unique.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("dosql-cli-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    Session::open(&name, store, VfsConfig::default())
        .map_err(|e| Error::msg(format!("opening the database: {}", e.message)))
}

/// Runs `sql` with `params` through the session's JSON API: the answer's JSON, or its error.
pub fn query(session: &mut Session, sql: &str, params: &Json) -> Result<Json> {
    let body = json!({ "sql": sql, "params": params }).to_string();
    let resp = session.query(body.as_bytes());
    let answer = resp.json();
    if resp.status != 200 {
        let code = answer["error"]["code"].as_str().unwrap_or("ERROR");
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("unknown error");
        return Err(Error::api(code, format!("{message} ({code})")));
    }
    Ok(answer)
}

/// Number of schema objects (tables, indexes, views, triggers): 0 means nothing to lose.
pub fn schema_objects(mut store: RedbStore) -> Result<i64> {
    if head(&mut store)?.1.page_count == 0 {
        return Ok(0);
    }
    let mut s = session(store)?;
    let answer = query(&mut s, "SELECT count(*) FROM sqlite_schema", &json!([]))?;
    Ok(answer["rows"][0][0].as_i64().unwrap_or(0))
}

/// The page size and head of a store.
pub fn head(store: &mut RedbStore) -> Result<(PageSize, dosql_pagestore::Head)> {
    let head = store
        .head()
        .map_err(|e| Error::msg(format!("reading the store: {}", e.message())))?;
    Ok((store.page_size(), head))
}
