//! The durable native store: pages in a redb file, with the same key/value shape as Durable
//! Object storage (one record per page, one `meta` record), committed in one redb write
//! transaction so a commit is all-or-nothing across crashes.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::{Commit, Head, Page, PageNo, PageSize, PageStore, StoreError};

const PAGES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("pages");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "meta";
const META_VERSION: u32 = 1;

/// Meta record layout (little-endian): version u32, page size u32, page count u32, txid u64.
#[derive(Clone, Copy, Debug)]
struct Meta {
    size: PageSize,
    head: Head,
}

impl Meta {
    const LEN: usize = 20;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&META_VERSION.to_le_bytes());
        out[4..8].copy_from_slice(&self.size.get().to_le_bytes());
        out[8..12].copy_from_slice(&self.head.page_count.to_le_bytes());
        out[12..20].copy_from_slice(&self.head.txid.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Meta, StoreError> {
        let field = |range: std::ops::Range<usize>| -> Result<&[u8], StoreError> {
            bytes
                .get(range)
                .ok_or_else(|| StoreError::corrupt(format!("meta record is {} bytes", bytes.len())))
        };
        let u32_at = |at: usize| -> Result<u32, StoreError> {
            let b = field(at..at + 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let version = u32_at(0)?;
        if version != META_VERSION {
            return Err(StoreError::corrupt(format!(
                "meta record version {version}; this build reads version {META_VERSION}"
            )));
        }
        let size = PageSize::new(u32_at(4)?)
            .ok_or_else(|| StoreError::corrupt("meta record holds an invalid page size"))?;
        let txid_bytes: [u8; 8] = field(12..20)?
            .try_into()
            .map_err(|_| StoreError::corrupt("meta record txid"))?;
        Ok(Meta {
            size,
            head: Head {
                page_count: u32_at(8)?,
                txid: u64::from_le_bytes(txid_bytes),
            },
        })
    }
}

/// Pages in a redb database file. Commits are durable when they return (redb's default
/// immediate durability: fsync before the commit is acknowledged).
pub struct RedbStore {
    db: Database,
    meta: Meta,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("meta", &self.meta)
            .finish()
    }
}

fn backend(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::read(format!("{context}: {err}"))
}

fn read_meta(db: &Database) -> Result<Option<Meta>, StoreError> {
    let txn = db.begin_read().map_err(|e| backend("begin read", e))?;
    match txn.open_table(META) {
        Ok(table) => match table.get(META_KEY).map_err(|e| backend("read meta", e))? {
            Some(v) => Meta::decode(v.value()).map(Some),
            None => Ok(None),
        },
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(backend("open meta table", e)),
    }
}

impl RedbStore {
    /// Opens the store at `path`, creating it with pages of `new_page_size` if it does not
    /// exist. An existing store keeps the page size it was created with (see
    /// [`PageStore::page_size`]).
    pub fn open(path: impl AsRef<Path>, new_page_size: PageSize) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| backend(&format!("opening {}", path.display()), e))?;
        let meta = match read_meta(&db)? {
            Some(meta) => meta,
            None => {
                let meta = Meta {
                    size: new_page_size,
                    head: Head::default(),
                };
                let txn = db
                    .begin_write()
                    .map_err(|e| StoreError::commit(format!("begin write: {e}")))?;
                {
                    let mut table = txn
                        .open_table(META)
                        .map_err(|e| StoreError::commit(e.to_string()))?;
                    table
                        .insert(META_KEY, meta.encode().as_slice())
                        .map_err(|e| StoreError::commit(e.to_string()))?;
                    txn.open_table(PAGES)
                        .map_err(|e| StoreError::commit(e.to_string()))?;
                }
                txn.commit()
                    .map_err(|e| StoreError::commit(e.to_string()))?;
                meta
            }
        };
        Ok(RedbStore { db, meta })
    }

    /// Opens an existing store; fails if `path` holds none.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::read(format!(
                "{}: no such store",
                path.display()
            )));
        }
        RedbStore::open(path, PageSize::DEFAULT)
    }
}

impl PageStore for RedbStore {
    fn page_size(&self) -> PageSize {
        self.meta.size
    }

    fn head(&mut self) -> Result<Head, StoreError> {
        // Re-read rather than trust the cached copy: after a commit whose outcome was unknown
        // (an error from redb's commit), the file is the truth.
        self.meta =
            read_meta(&self.db)?.ok_or_else(|| StoreError::corrupt("meta record missing"))?;
        Ok(self.meta.head)
    }

    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        Ok(self.read_pages(&[no])?.pop().flatten())
    }

    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend("begin read", e))?;
        let table = txn
            .open_table(PAGES)
            .map_err(|e| backend("open pages", e))?;
        let size = self.meta.size;
        nos.iter()
            .map(|&no| {
                if no.get() > self.meta.head.page_count {
                    return Ok(None);
                }
                match table.get(no.get()).map_err(|e| backend("read page", e))? {
                    None => Ok(None),
                    Some(v) if v.value().len() == size.bytes() => {
                        Ok(Some(Page::copy_from(v.value())))
                    }
                    Some(v) => Err(StoreError::corrupt(format!(
                        "page {no} is {} bytes; expected {size}",
                        v.value().len()
                    ))),
                }
            })
            .collect()
    }

    fn commit(&mut self, commit: Commit) -> Result<Head, StoreError> {
        commit.validate(self.meta.size)?;
        let fail = |e: &dyn std::fmt::Display| StoreError::commit(e.to_string());
        let head = Head {
            page_count: commit.page_count,
            txid: self.meta.head.txid + 1,
        };
        let txn = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut pages = txn.open_table(PAGES).map_err(|e| fail(&e))?;
            if commit.page_count < self.meta.head.page_count {
                pages
                    .retain_in(commit.page_count + 1.., |_, _| false)
                    .map_err(|e| fail(&e))?;
            }
            for (no, page) in &commit.pages {
                pages
                    .insert(no.get(), page.as_bytes())
                    .map_err(|e| fail(&e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| fail(&e))?;
            let new_meta = Meta {
                size: self.meta.size,
                head,
            };
            meta.insert(META_KEY, new_meta.encode().as_slice())
                .map_err(|e| fail(&e))?;
        }
        // Dropping an uncommitted write transaction aborts it, so every early return above
        // leaves the file unchanged.
        txn.commit().map_err(|e| fail(&e))?;
        self.meta.head = head;
        Ok(head)
    }
}
