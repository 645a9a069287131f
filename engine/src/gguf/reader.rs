//! A bounds-checked little-endian cursor over the bytes of a GGUF file.
//!
//! Every read the parser makes goes through here, so that no malformed file can index past
//! its end: a short read becomes [`GgufError::Truncated`] naming what was being read and at
//! which offset. Descriptions are passed as closures so that the common, successful path
//! never formats a string.

use std::path::Path;

use super::GgufError;

/// A read position in a file's bytes.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    /// The whole file.
    bytes: &'a [u8],
    /// Offset of the next byte to read; never past `bytes.len()`.
    pos: usize,
    /// The file's path, for error messages.
    path: &'a Path,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(super) fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Reader {
            bytes,
            pos: 0,
            path,
        }
    }

    /// The file's path.
    pub(super) fn path(&self) -> &'a Path {
        self.path
    }

    /// Offset of the next byte to read.
    pub(super) fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// The bytes not read yet.
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Bytes left to read.
    pub(super) fn remaining(&self) -> u64 {
        self.rest().len() as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what,
            offset: self.pos(),
            needed,
            available: self.remaining(),
        }
    }

    /// The next `n` bytes.
    pub(super) fn bytes(
        &mut self,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], GgufError> {
        let rest = self.rest();
        match usize::try_from(n).ok().and_then(|n| rest.get(..n)) {
            Some(taken) => {
                self.pos += taken.len();
                Ok(taken)
            }
            None => Err(self.truncated(what(), n)),
        }
    }

    /// The next `N` bytes, as an array.
    pub(super) fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        match self.rest().first_chunk::<N>() {
            Some(&chunk) => {
                self.pos += N;
                Ok(chunk)
            }
            None => Err(self.truncated(what(), N as u64)),
        }
    }

    /// The next byte.
    pub(super) fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        self.array::<1>(what).map(|[b]| b)
    }

    /// The next little-endian u32.
    pub(super) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// The next little-endian u64.
    pub(super) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// The next GGUF string: a u64 byte length, then that many bytes of UTF-8.
    pub(super) fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let start = self.pos();
        let bytes = self.bytes(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                path: self.path.to_path_buf(),
                what: what(),
                offset: start,
            }),
        }
    }

    /// Checks that `count` items of at least `min_item_bytes` each can fit in the rest of
    /// the file, before anything is allocated for them, and returns the count as a `usize`.
    /// `count_offset` is where the count itself was stored.
    pub(super) fn check_count(
        &self,
        count: u64,
        min_item_bytes: u64,
        count_offset: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize, GgufError> {
        let min_bytes = count.saturating_mul(min_item_bytes);
        let available = self.remaining();
        match usize::try_from(count) {
            Ok(count) if min_bytes <= available => Ok(count),
            _ => Err(GgufError::CountTooLarge {
                path: self.path.to_path_buf(),
                what: what(),
                offset: count_offset,
                count,
                min_bytes,
                available,
            }),
        }
    }
}
