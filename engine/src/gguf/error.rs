//! The one error type of the GGUF reader.
//!
//! A model file comes from outside the appliance, so every way it can be malformed has its
//! own variant whose fields say what was wrong and where: the file's path, the byte offset,
//! the metadata key or the tensor name. Messages are meant to be shown to an operator as is
//! ("tensor blk.0.attn_q.weight has type Q5_0 (id 6), which Oasis does not support").

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong opening or reading a GGUF file.
///
/// `path` is the file's path, or `<memory>` for [`super::GgufFile::from_bytes`]. Offsets are
/// absolute byte offsets into the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, measured, read or memory-mapped.
    #[error("{}: cannot read GGUF file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The file ends before the fixed-size header does.
    #[error(
        "{}: file is {len} bytes, shorter than the {needed}-byte GGUF header",
        .path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// The file's length in bytes.
        len: u64,
        /// The bytes needed to read the header so far.
        needed: u64,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "{}: not a GGUF file: it starts with \"{}\", expected \"GGUF\"",
        .path.display(), .found.escape_ascii()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The file's first four bytes.
        found: [u8; 4],
    },

    /// The file is a GGUF file written in big-endian byte order.
    #[error(
        "{}: big-endian GGUF (version {version}) is not supported; convert the model to a \
         little-endian GGUF file",
        .path.display()
    )]
    BigEndian {
        /// The file.
        path: PathBuf,
        /// The version, read in big-endian order.
        version: u32,
    },

    /// A GGUF version other than 2 or 3.
    #[error(
        "{}: GGUF version {version} is not supported (Oasis reads versions 2 and 3)",
        .path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version the file declares.
        version: u32,
    },

    /// The file ends in the middle of something.
    #[error(
        "{}: file truncated while reading {what} at offset {offset}: needed {needed} bytes, \
         {available} remain",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// The bytes it needs.
        needed: u64,
        /// The bytes left in the file from `offset`.
        available: u64,
    },

    /// A count or length that the rest of the file cannot possibly hold; rejected before
    /// anything is allocated for it.
    #[error(
        "{}: {what} at offset {offset} is {count}, which needs at least {min_bytes} bytes \
         but only {available} remain",
        .path.display()
    )]
    CountTooLarge {
        /// The file.
        path: PathBuf,
        /// What was counted.
        what: String,
        /// Where the count is stored.
        offset: u64,
        /// The count.
        count: u64,
        /// The fewest bytes `count` items can occupy (saturating).
        min_bytes: u64,
        /// The bytes left in the file after the count.
        available: u64,
    },

    /// A string that is not valid UTF-8.
    #[error("{}: {what} at offset {offset} is not valid UTF-8", .path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// What the string is.
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },

    /// A metadata value type id outside the GGUF specification.
    #[error(
        "{}: metadata key `{key}` has unknown value type {type_id} at offset {offset}",
        .path.display()
    )]
    UnknownValueType {
        /// The file.
        path: PathBuf,
        /// The key whose value (or array element) has the type.
        key: String,
        /// The type id.
        type_id: u32,
        /// Where the type id is stored.
        offset: u64,
    },

    /// A bool stored as a byte other than 0 or 1.
    #[error(
        "{}: metadata key `{key}` has bool byte {byte} at offset {offset} (must be 0 or 1)",
        .path.display()
    )]
    InvalidBool {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The byte.
        byte: u8,
        /// Where the byte is stored.
        offset: u64,
    },

    /// Arrays of arrays nested deeper than the reader allows.
    #[error(
        "{}: metadata key `{key}` nests arrays deeper than {max_depth} levels (at offset \
         {offset})",
        .path.display()
    )]
    NestingTooDeep {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The deepest nesting allowed.
        max_depth: usize,
        /// Where the too-deep array starts.
        offset: u64,
    },

    /// The same metadata key appears twice.
    #[error("{}: metadata key `{key}` appears twice (again at offset {offset})", .path.display())]
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Where the second occurrence starts.
        offset: u64,
    },

    /// `general.alignment` is not a nonzero power of two.
    #[error(
        "{}: general.alignment must be a nonzero power of two, got {alignment}",
        .path.display()
    )]
    BadAlignment {
        /// The file.
        path: PathBuf,
        /// The value found.
        alignment: u64,
    },

    /// A metadata value has a different type than the caller asked for.
    #[error("{}: metadata key `{key}` should be {expected}, but is {got}", .path.display())]
    MetadataType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type found.
        got: &'static str,
    },

    /// An integer metadata value that does not fit the type asked for.
    #[error("{}: metadata key `{key}` should fit {expected}, but is {value}", .path.display())]
    MetadataOutOfRange {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The value found, formatted.
        value: String,
    },

    /// The same tensor name appears twice.
    #[error("{}: tensor `{tensor}` appears twice", .path.display())]
    DuplicateTensor {
        /// The file.
        path: PathBuf,
        /// The name.
        tensor: String,
    },

    /// A tensor with a number of dimensions outside 1..=4.
    #[error(
        "{}: tensor `{tensor}` has {n_dims} dimensions at offset {offset} (must be 1 to {max})",
        .path.display()
    )]
    TensorRank {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dimension count found.
        n_dims: u32,
        /// The most dimensions allowed.
        max: u32,
        /// Where the dimension count is stored.
        offset: u64,
    },

    /// A tensor whose dimensions are zero, absurd, or whose sizes overflow.
    #[error("{}: tensor `{tensor}` has shape {dims:?}: {reason}", .path.display())]
    TensorShape {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dimensions, in ggml order.
        dims: Vec<u64>,
        /// What is wrong with them.
        reason: &'static str,
    },

    /// A tensor type the kernels cannot compute with, or an activation-only type.
    #[error(
        "{}: tensor {tensor} has type {} (id {type_id}), which Oasis does not support",
        .path.display(), .type_name.unwrap_or("unknown")
    )]
    UnsupportedTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// ggml's type id.
        type_id: u32,
        /// ggml's name for the id, when it is a known ggml type.
        type_name: Option<&'static str>,
    },

    /// A row that is not a whole number of the type's blocks.
    #[error(
        "{}: tensor `{tensor}` of type {type_name} has rows of {row_len} values, not a \
         multiple of the type's block of {block_len}",
        .path.display()
    )]
    PartialBlock {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The tensor's type.
        type_name: &'static str,
        /// Values per row (`dims[0]`).
        row_len: u64,
        /// Values per block of the type.
        block_len: usize,
    },

    /// A tensor whose data offset is not a multiple of the file's alignment.
    #[error(
        "{}: tensor `{tensor}` data offset {offset} is not a multiple of the alignment \
         {alignment}",
        .path.display()
    )]
    MisalignedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: usize,
    },

    /// A tensor whose data lies (partly) past the end of the file.
    #[error(
        "{}: tensor `{tensor}` needs bytes {start}..{end} of the file, but the file has only \
         {file_len} bytes (truncated download?)",
        .path.display()
    )]
    TensorOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Absolute offset of the tensor's first byte.
        start: u64,
        /// Absolute offset one past its last byte (saturating): the file length expected.
        end: u64,
        /// The file length present.
        file_len: u64,
    },

    /// Two tensors whose data ranges overlap.
    #[error(
        "{}: tensors `{tensor}` and `{other}` overlap in the data section",
        .path.display()
    )]
    TensorOverlap {
        /// The file.
        path: PathBuf,
        /// The tensor that starts later.
        tensor: String,
        /// The tensor it overlaps.
        other: String,
    },
}
