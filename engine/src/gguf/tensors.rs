//! Tensor infos: reading them, and validating shape, type and data range.
//!
//! A tensor info names a tensor, gives its dimensions in ggml order (`dims[0]` is the
//! contiguous row length), its ggml type id and the offset of its data within the data
//! section. Everything the engine later relies on (a supported storage type, whole blocks
//! per row, a byte size without overflow, data aligned and inside the file, no two tensors
//! sharing bytes) is checked here once, so the rest of the engine never re-checks it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use kernels::{GgmlType, ggml_type_name};

use super::GgufError;
use super::reader::Reader;

/// The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub(super) const MAX_DIMS: u32 = 4;
/// The smallest possible tensor info: empty name, n_dims, one dimension, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One tensor's description, validated against the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous in memory), the
    /// others count rows. One to four entries, each nonzero.
    pub dims: Vec<u64>,
    /// The element type; always a storage type the kernels support.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section; a multiple of the alignment.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Total number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Values per row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        let row_len = self.dims.first().copied().unwrap_or(0);
        usize::try_from(row_len).unwrap_or(usize::MAX)
    }

    /// Number of rows: the product of `dims[1..]` (1 for a vector).
    pub fn n_rows(&self) -> usize {
        let n_rows = self
            .dims
            .iter()
            .skip(1)
            .fold(1u64, |n, &d| n.saturating_mul(d));
        usize::try_from(n_rows).unwrap_or(usize::MAX)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ggml_type
            .row_bytes(self.row_len())
            .unwrap_or(usize::MAX)
    }
}

/// Reads `count` tensor infos, validating each and rejecting duplicate names.
pub(super) fn read_tensor_infos(
    r: &mut Reader<'_>,
    count: u64,
    count_offset: u64,
) -> Result<(Vec<TensorInfo>, HashMap<String, usize>), GgufError> {
    let count = r.check_count(count, MIN_TENSOR_INFO_BYTES, count_offset, || {
        "tensor count".to_owned()
    })?;
    let mut tensors = Vec::with_capacity(count);
    let mut index = HashMap::with_capacity(count);
    for i in 0..count {
        let tensor = read_tensor_info(r, i)?;
        match index.entry(tensor.name.clone()) {
            Entry::Occupied(_) => {
                return Err(GgufError::DuplicateTensor {
                    path: r.path().to_path_buf(),
                    tensor: tensor.name,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(tensors.len());
            }
        }
        tensors.push(tensor);
    }
    Ok((tensors, index))
}

fn read_tensor_info(r: &mut Reader<'_>, i: usize) -> Result<TensorInfo, GgufError> {
    let name = r.string(|| format!("name of tensor #{i}"))?;
    let n_dims_offset = r.pos();
    let n_dims = r.u32(|| format!("dimension count of tensor `{name}`"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::TensorRank {
            path: r.path().to_path_buf(),
            tensor: name,
            n_dims,
            max: MAX_DIMS,
            offset: n_dims_offset,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64(|| format!("dimensions of tensor `{name}`"))?);
    }
    let type_id = r.u32(|| format!("type of tensor `{name}`"))?;
    let offset = r.u64(|| format!("data offset of tensor `{name}`"))?;
    let (ggml_type, n_bytes) = layout(&name, &dims, type_id, r.path())?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// The tensor's type and byte size, if the type is supported and the shape sound.
fn layout(
    name: &str,
    dims: &[u64],
    type_id: u32,
    path: &Path,
) -> Result<(GgmlType, u64), GgufError> {
    let ggml_type = match GgmlType::from_id(type_id) {
        Some(t) if t.is_storage_type() => t,
        _ => {
            return Err(GgufError::UnsupportedTensorType {
                path: path.to_path_buf(),
                tensor: name.to_owned(),
                type_id,
                type_name: ggml_type_name(type_id),
            });
        }
    };
    let bad_shape = |reason| GgufError::TensorShape {
        path: path.to_path_buf(),
        tensor: name.to_owned(),
        dims: dims.to_vec(),
        reason,
    };
    // ggml holds dimensions and element counts in i64.
    const MAX_COUNT: u64 = i64::MAX as u64;
    if dims.contains(&0) {
        return Err(bad_shape("a dimension is zero"));
    }
    if dims.iter().any(|&d| d > MAX_COUNT) {
        return Err(bad_shape("a dimension exceeds i64::MAX"));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| n <= MAX_COUNT));
    let Some(n_elements) = n_elements else {
        return Err(bad_shape("the element count overflows i64"));
    };
    let row_len = dims.first().copied().unwrap_or(1);
    let block_len = ggml_type.block_len();
    if !row_len.is_multiple_of(block_len as u64) {
        return Err(GgufError::PartialBlock {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            type_name: ggml_type.name(),
            row_len,
            block_len,
        });
    }
    let n_rows = n_elements / row_len;
    let n_bytes = usize::try_from(row_len)
        .ok()
        .and_then(|row_len| ggml_type.row_bytes(row_len))
        .and_then(|row_bytes| (row_bytes as u64).checked_mul(n_rows))
        .filter(|_| usize::try_from(n_rows).is_ok());
    let Some(n_bytes) = n_bytes else {
        return Err(bad_shape("the byte size overflows"));
    };
    Ok((ggml_type, n_bytes))
}

/// Checks that every tensor's data is aligned, lies inside the file, and overlaps no other.
pub(super) fn check_tensor_data(
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: usize,
    file_len: u64,
    path: &Path,
) -> Result<(), GgufError> {
    for t in tensors {
        if !t.offset.is_multiple_of(alignment as u64) {
            return Err(GgufError::MisalignedTensor {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        // Saturation only ever makes `end` larger, so it cannot let a bad range pass.
        if end > file_len {
            return Err(GgufError::TensorOutOfBounds {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                start,
                end,
                file_len,
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    // Sorted by start, and with no overlap so far, the previous tensor reaches furthest.
    for pair in by_offset.windows(2) {
        if let [prev, t] = pair
            && t.offset < prev.offset.saturating_add(prev.n_bytes)
        {
            return Err(GgufError::TensorOverlap {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                other: prev.name.clone(),
            });
        }
    }
    Ok(())
}
