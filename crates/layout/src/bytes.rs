//! Reading the little-endian binary records of the layout (the head, log records, the host's
//! answers): one cursor, whose running out is an error that names what was being read.

use dosql_pagestore::{ErrorKind, StoreError};

/// A cursor over `bytes`.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    /// The offset read up to.
    pub(crate) at: usize,
    /// What is read, for the error ("head record").
    what: &'static str,
    /// The error's kind: stored records cut short are corrupt, the host's answers a failed read.
    kind: ErrorKind,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from offset `at`.
    pub(crate) fn new(bytes: &'a [u8], at: usize, what: &'static str, kind: ErrorKind) -> Self {
        Reader {
            bytes,
            at,
            what,
            kind,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| StoreError::new(self.kind, format!("{}: cut short", self.what)))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A u32 length, then that many bytes.
    pub(crate) fn sized(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
