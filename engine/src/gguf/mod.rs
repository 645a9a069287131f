//! A reader for GGUF v2/v3 model files (llama.cpp's format).
//!
//! [`GgufFile::open`] memory-maps the file read-only and validates all of it up front:
//! header, metadata, tensor infos, and that every tensor's data is aligned, inside the file
//! and of a type the kernels support. After that, lookups and [`GgufFile::tensor_data`]
//! cannot fail. A model file is untrusted input, so a malformed one yields a [`GgufError`]
//! that names what is wrong and where, never a panic, a hang or an allocation sized by a
//! corrupt count. Weights are never copied: tensor data is borrowed from the mapping.
//!
//! Format reference: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

mod error;
mod metadata;
mod parse;
mod reader;
mod tensors;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kernels::mmap::{Mmap, map_readonly};

pub use error::GgufError;
pub use tensors::TensorInfo;
pub use value::{Array, Value};

/// A parsed, validated GGUF file.
pub struct GgufFile {
    /// The file's bytes; tensor data is borrowed from here.
    storage: Storage,
    /// The GGUF version, 2 or 3.
    version: u32,
    /// Key/value pairs in file order, so listings match what `gguf-dump` shows.
    metadata: Vec<(String, Value)>,
    /// Key -> index into `metadata`, for lookups.
    metadata_index: HashMap<String, usize>,
    /// Tensor infos in file order.
    tensors: Vec<TensorInfo>,
    /// Name -> index into `tensors`, for lookups.
    tensor_index: HashMap<String, usize>,
    /// Absolute offset of the data section, to which tensor offsets are relative.
    data_offset: u64,
    /// The data section's alignment (`general.alignment`, default 32).
    alignment: usize,
    /// The file's path (`<memory>` for [`GgufFile::from_bytes`]), for error messages.
    path: PathBuf,
}

/// Where a file's bytes live.
enum Storage {
    /// A read-only memory map of the file.
    Mapped(Mmap),
    /// Bytes in memory: [`GgufFile::from_bytes`], or a file too short to map usefully.
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

impl GgufFile {
    /// Opens, memory-maps and validates the GGUF file at `path`. The file's bytes are not
    /// read into memory beyond what parsing the header, metadata and tensor infos touches.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io_error = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        // Mapping an empty file fails on some platforms; a file this short is an error
        // anyway, and reading it lets the parser say why.
        let storage = if len < parse::HEADER_BYTES {
            let mut bytes = Vec::new();
            file.take(parse::HEADER_BYTES)
                .read_to_end(&mut bytes)
                .map_err(io_error)?;
            Storage::Owned(bytes)
        } else {
            Storage::Mapped(map_readonly(&file).map_err(io_error)?)
        };
        Self::from_storage(storage, path.to_path_buf())
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes), PathBuf::from("<memory>"))
    }

    fn from_storage(storage: Storage, path: PathBuf) -> Result<GgufFile, GgufError> {
        let parsed = parse::parse(storage.bytes(), &path)?;
        Ok(GgufFile {
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            metadata_index: parsed.metadata_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
            data_offset: parsed.data_offset,
            alignment: parsed.alignment,
            path,
        })
    }

    /// The file's path (`<memory>` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version, 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section's alignment in bytes: a power of two.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of metadata `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.metadata_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The tensor's data: exactly `t.n_bytes` bytes, borrowed from the file.
    ///
    /// # Panics
    ///
    /// If `t` is not one of this file's tensors and its range lies outside the file
    /// (a programming error: ranges of this file's tensors were checked at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        let range = usize::try_from(start).unwrap_or(usize::MAX)
            ..usize::try_from(end).unwrap_or(usize::MAX);
        &self.storage.bytes()[range]
    }
}

impl fmt::Debug for GgufFile {
    // Not derived: the metadata holds whole vocabularies and the storage whole models.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("len", &self.storage.bytes().len())
            .field("mapped", &matches!(self.storage, Storage::Mapped(_)))
            .field("metadata_len", &self.metadata.len())
            .field("tensors_len", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("alignment", &self.alignment)
            .finish()
    }
}
