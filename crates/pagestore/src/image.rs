//! Whole database files ("images") to and from pages: import an existing `.sqlite` file,
//! export a store as one.

use crate::{Commit, Page, PageNo, PageSize, PageStore, StoreError};

/// The 16 bytes every SQLite database file starts with.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Splits a SQLite database file into the commit that loads it into an empty store.
///
/// Checks the header (magic, page size) and that the file is a whole number of pages. A
/// file left in WAL mode (header bytes 18-19 = 2) is switched to rollback-journal mode, since
/// dosql stores pages, not a WAL; the caller must have checkpointed it (no `-wal` file).
pub fn commit_from_image(bytes: &[u8]) -> Result<(PageSize, Commit), StoreError> {
    if bytes.len() < 100 || &bytes[..16] != SQLITE_MAGIC {
        return Err(StoreError::invalid(
            "not a SQLite database file (bad header)",
        ));
    }
    let size = PageSize::from_header(bytes)
        .ok_or_else(|| StoreError::invalid("the header holds no valid page size"))?;
    if !bytes.len().is_multiple_of(size.bytes()) {
        return Err(StoreError::invalid(format!(
            "the file is {} bytes, not a whole number of {size}-byte pages (truncated?)",
            bytes.len()
        )));
    }
    let page_count = u32::try_from(bytes.len() / size.bytes())
        .map_err(|_| StoreError::invalid("the file has too many pages"))?;
    let mut pages = Vec::with_capacity(page_count as usize);
    for (i, chunk) in bytes.chunks(size.bytes()).enumerate() {
        let no = PageNo::new(i as u32 + 1).ok_or_else(|| StoreError::invalid("page number"))?;
        let mut page = chunk.to_vec();
        if i == 0 && (page[18] == 2 || page[19] == 2) {
            page[18] = 1;
            page[19] = 1;
        }
        pages.push((no, Page::from(page)));
    }
    Ok((size, Commit { page_count, pages }))
}

/// Reads every page of `store` into one database file image.
pub fn image_of(store: &mut dyn PageStore) -> Result<Vec<u8>, StoreError> {
    let size = store.page_size();
    let head = store.head()?;
    let mut out = Vec::with_capacity(head.page_count as usize * size.bytes());
    for n in 1..=head.page_count {
        let no = PageNo::new(n).ok_or_else(|| StoreError::invalid("page number"))?;
        match store.read_page(no)? {
            Some(page) => out.extend_from_slice(&page),
            None => out.resize(out.len() + size.bytes(), 0),
        }
    }
    Ok(out)
}
