//! Parsing a GGUF file's header and metadata, and driving the whole parse.
//!
//! The layout (GGUF v2/v3, little-endian) is: magic `GGUF`, version u32, tensor count u64,
//! metadata count u64, the metadata key/value pairs, the tensor infos, padding to
//! `general.alignment`, then the tensor data. Version 1 (u32 counts) and big-endian files
//! are recognised and refused with their own errors rather than misread.
//!
//! Nothing here allocates in proportion to a count read from the file before checking that
//! the rest of the file could hold that many items, so a corrupt count fails fast instead
//! of exhausting memory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use super::metadata::int_from_value;
use super::reader::Reader;
use super::tensors::{check_tensor_data, read_tensor_infos};
use super::value::{Array, Value, ValueType};
use super::{GgufError, TensorInfo};

/// Bytes of the fixed header: magic, version, tensor count, metadata count.
pub(super) const HEADER_BYTES: u64 = 4 + 4 + 8 + 8;
/// The deepest nesting of arrays inside arrays accepted in metadata. llama.cpp writes no
/// nested arrays at all; the bound keeps a crafted file from recursing without end.
pub(super) const MAX_ARRAY_DEPTH: usize = 4;
/// The metadata key that sets the data section's alignment.
pub(super) const ALIGNMENT_KEY: &str = "general.alignment";
/// The alignment when the file does not set one.
pub(super) const DEFAULT_ALIGNMENT: usize = 32;
/// The smallest possible key/value pair: empty key, type id, one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// Key/value pairs in file order, and each key's index among them.
type MetadataTable = (Vec<(String, Value)>, HashMap<String, usize>);

/// Everything read from a file's header, metadata and tensor infos, validated.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) version: u32,
    pub(super) metadata: Vec<(String, Value)>,
    pub(super) metadata_index: HashMap<String, usize>,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) tensor_index: HashMap<String, usize>,
    pub(super) alignment: usize,
    pub(super) data_offset: u64,
}

/// Parses and validates a whole file held in `bytes`.
pub(super) fn parse(bytes: &[u8], path: &Path) -> Result<Parsed, GgufError> {
    let version = read_version(bytes, path)?;
    let mut r = Reader::new(bytes, path);
    r.bytes(8, || "magic and version".to_owned())?;
    let tensor_count_offset = r.pos();
    let tensor_count = r.u64(|| "tensor count".to_owned())?;
    let kv_count_offset = r.pos();
    let kv_count = r.u64(|| "metadata count".to_owned())?;

    let (metadata, metadata_index) = read_metadata(&mut r, kv_count, kv_count_offset)?;
    let (tensors, tensor_index) = read_tensor_infos(&mut r, tensor_count, tensor_count_offset)?;
    let alignment = alignment(&metadata, &metadata_index, path)?;
    let data_offset = r
        .pos()
        .checked_next_multiple_of(alignment as u64)
        .unwrap_or(u64::MAX);
    check_tensor_data(&tensors, data_offset, alignment, bytes.len() as u64, path)?;
    Ok(Parsed {
        version,
        metadata,
        metadata_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// Checks the magic, the byte order and the version, and that the whole fixed header is
/// present; returns the version.
fn read_version(bytes: &[u8], path: &Path) -> Result<u32, GgufError> {
    let too_short = |needed: u64| GgufError::TooShort {
        path: path.to_path_buf(),
        len: bytes.len() as u64,
        needed,
    };
    let Some(&magic) = bytes.first_chunk::<4>() else {
        return Err(too_short(HEADER_BYTES));
    };
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
        });
    }
    let Some(&[_, _, _, _, v0, v1, v2, v3]) = bytes.first_chunk::<8>() else {
        return Err(too_short(HEADER_BYTES));
    };
    let version = u32::from_le_bytes([v0, v1, v2, v3]);
    match version {
        2 | 3 => {}
        // A big-endian writer stores small versions as huge little-endian numbers.
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(GgufError::BigEndian {
                path: path.to_path_buf(),
                version: v.swap_bytes(),
            });
        }
        v => {
            return Err(GgufError::UnsupportedVersion {
                path: path.to_path_buf(),
                version: v,
            });
        }
    }
    if (bytes.len() as u64) < HEADER_BYTES {
        return Err(too_short(HEADER_BYTES));
    }
    Ok(version)
}

/// Reads `count` key/value pairs, keeping file order and rejecting duplicate keys.
fn read_metadata(
    r: &mut Reader<'_>,
    count: u64,
    count_offset: u64,
) -> Result<MetadataTable, GgufError> {
    let count = r.check_count(count, MIN_KV_BYTES, count_offset, || {
        "metadata count".to_owned()
    })?;
    let mut entries = Vec::with_capacity(count);
    let mut index = HashMap::with_capacity(count);
    for i in 0..count {
        let key_offset = r.pos();
        let key = r.string(|| format!("metadata key #{i}"))?;
        let type_id = r.u32(|| format!("value type of metadata key `{key}`"))?;
        let value = read_value(r, &key, type_id, 0)?;
        match index.entry(key.clone()) {
            Entry::Occupied(_) => {
                return Err(GgufError::DuplicateKey {
                    path: r.path().to_path_buf(),
                    key,
                    offset: key_offset,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(entries.len());
            }
        }
        entries.push((key, value));
    }
    Ok((entries, index))
}

/// The value type with `type_id`, whose id was just read (so it starts 4 bytes back).
fn value_type(r: &Reader<'_>, key: &str, type_id: u32) -> Result<ValueType, GgufError> {
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        path: r.path().to_path_buf(),
        key: key.to_owned(),
        type_id,
        offset: r.pos().saturating_sub(4),
    })
}

/// Reads one value of type `type_id` for `key`, inside `depth` enclosing arrays.
fn read_value(
    r: &mut Reader<'_>,
    key: &str,
    type_id: u32,
    depth: usize,
) -> Result<Value, GgufError> {
    let what = || format!("value of metadata key `{key}`");
    Ok(match value_type(r, key, type_id)? {
        ValueType::U8 => Value::U8(r.u8(what)?),
        ValueType::I8 => Value::I8(r.u8(what)? as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(r.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(r.array(what)?)),
        ValueType::U32 => Value::U32(r.u32(what)?),
        ValueType::I32 => Value::I32(r.u32(what)? as i32),
        ValueType::U64 => Value::U64(r.u64(what)?),
        ValueType::I64 => Value::I64(r.u64(what)? as i64),
        ValueType::F32 => Value::F32(f32::from_bits(r.u32(what)?)),
        ValueType::F64 => Value::F64(f64::from_bits(r.u64(what)?)),
        ValueType::Bool => {
            let offset = r.pos();
            let byte = r.u8(what)?;
            Value::Bool(to_bool(r, key, byte, offset)?)
        }
        ValueType::String => Value::String(r.string(what)?),
        ValueType::Array => Value::Array(read_array(r, key, depth + 1)?),
    })
}

fn to_bool(r: &Reader<'_>, key: &str, byte: u8, offset: u64) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::InvalidBool {
            path: r.path().to_path_buf(),
            key: key.to_owned(),
            byte,
            offset,
        }),
    }
}

/// Reads an array's element type, count and elements; `depth` counts this array.
fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    let start = r.pos();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            path: r.path().to_path_buf(),
            key: key.to_owned(),
            max_depth: MAX_ARRAY_DEPTH,
            offset: start,
        });
    }
    let what = || format!("array of metadata key `{key}`");
    let elem_type_id = r.u32(what)?;
    let elem_type = value_type(r, key, elem_type_id)?;
    let count_offset = r.pos();
    let count = r.u64(what)?;
    let count = r.check_count(count, elem_type.min_encoded_bytes(), count_offset, || {
        format!("array length of metadata key `{key}`")
    })?;

    /// Reads `count` fixed-size little-endian elements in one bounds check.
    fn elems<const N: usize, T>(
        r: &mut Reader<'_>,
        count: usize,
        what: impl FnOnce() -> String,
        from_le: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufError> {
        let bytes = r.bytes((count as u64).saturating_mul(N as u64), what)?;
        Ok(bytes
            .as_chunks::<N>()
            .0
            .iter()
            .map(|&c| from_le(c))
            .collect())
    }

    Ok(match elem_type {
        ValueType::U8 => Array::U8(elems(r, count, what, u8::from_le_bytes)?),
        ValueType::I8 => Array::I8(elems(r, count, what, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(elems(r, count, what, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(elems(r, count, what, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(elems(r, count, what, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(elems(r, count, what, i32::from_le_bytes)?),
        ValueType::U64 => Array::U64(elems(r, count, what, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(elems(r, count, what, i64::from_le_bytes)?),
        ValueType::F32 => Array::F32(elems(r, count, what, f32::from_le_bytes)?),
        ValueType::F64 => Array::F64(elems(r, count, what, f64::from_le_bytes)?),
        ValueType::Bool => {
            let bytes = r.bytes(count as u64, what)?;
            let mut bools = Vec::with_capacity(count);
            for (i, &byte) in bytes.iter().enumerate() {
                bools.push(to_bool(r, key, byte, start + 12 + i as u64)?);
            }
            Array::Bool(bools)
        }
        ValueType::String => {
            let mut strings = Vec::with_capacity(count);
            for i in 0..count {
                strings.push(r.string(|| format!("element {i} of metadata key `{key}`"))?);
            }
            Array::String(strings)
        }
        ValueType::Array => {
            let mut arrays = Vec::with_capacity(count);
            for _ in 0..count {
                arrays.push(read_array(r, key, depth + 1)?);
            }
            Array::Array(arrays)
        }
    })
}

/// The file's `general.alignment`, or the default.
fn alignment(
    metadata: &[(String, Value)],
    index: &HashMap<String, usize>,
    path: &Path,
) -> Result<usize, GgufError> {
    let Some((_, value)) = index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let alignment: u32 = int_from_value(value, ALIGNMENT_KEY, "u32", path)?;
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment {
            path: path.to_path_buf(),
            alignment: alignment.into(),
        });
    }
    Ok(alignment as usize)
}
