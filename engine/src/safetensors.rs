//! Hugging Face checkpoints in safetensors: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header mapping each
//! tensor name to its dtype, shape and byte range in the data section, then the data. Every
//! range is checked against the file size and the dtype's element size when the file is
//! opened, so a tensor handed out later always has exactly the bytes its shape needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use kernels::mmap::{Mmap, map_readonly};

use crate::error::{EngineError, Result};

/// The index that lists the shards of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Headers larger than this are refused (the format's own reader caps them at 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Element types of safetensors tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    /// float8 e4m3fn (DeepSeek-V3's weights).
    F8E4M3,
    /// float8 e5m2.
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F64" => Dtype::F64,
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::F8E4M3 | Dtype::F8E5M2 | Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The name safetensors uses.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }
}

/// One tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Index of its shard in [`Checkpoint::files`].
    shard: usize,
    /// Absolute byte range in the shard.
    start: usize,
    end: usize,
}

impl TensorRef {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data.
    pub fn n_bytes(&self) -> usize {
        self.end - self.start
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The tensors of a checkpoint folder, across all its shards.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, TensorRef>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: the shards named by `model.safetensors.index.json`,
    /// else `model.safetensors`, else the folder's only `*.safetensors` file.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join(INDEX_FILE);
        let files: Vec<PathBuf> = if index.is_file() {
            shard_list(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else if dir.join(SINGLE_FILE).is_file() {
            vec![dir.join(SINGLE_FILE)]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| bad(dir, format!("cannot list the folder: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            found.sort();
            if found.len() != 1 {
                return Err(bad(
                    dir,
                    format!(
                        "no {INDEX_FILE} or {SINGLE_FILE}, and {} other .safetensors files",
                        found.len()
                    ),
                ));
            }
            found
        };
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: HashMap::new(),
        };
        for path in files {
            ck.add_shard(path)?;
        }
        if index.is_file() {
            ck.check_index(&index)?;
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| bad(&path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| bad(&path, format!("cannot stat: {e}")))?
            .len();
        if len < 8 {
            return Err(bad(&path, format!("{len} bytes: too short for a header")));
        }
        let mut head = [0u8; 8];
        (&file)
            .read_exact(&mut head)
            .map_err(|e| bad(&path, format!("cannot read: {e}")))?;
        let n = u64::from_le_bytes(head);
        if n > MAX_HEADER || n > len - 8 {
            return Err(bad(
                &path,
                format!(
                    "header length {n} does not fit the file ({len} bytes): truncated or not safetensors"
                ),
            ));
        }
        let map = map_readonly(&file).map_err(|e| bad(&path, format!("cannot map: {e}")))?;
        let header = &map[8..8 + n as usize];
        let data_start = 8 + n as usize;
        let data_len = map.len() - data_start;
        let doc: serde_json::Value = serde_json::from_slice(header)
            .map_err(|e| bad(&path, format!("header is not JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| bad(&path, "header is not a JSON object"))?;
        let shard = self.shards.len();
        let mut ranges = Vec::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                continue;
            }
            let t = parse_entry(name, v, data_len).map_err(|p| bad(&path, p))?;
            ranges.push((t.0, t.1, name.clone()));
            let tensor = TensorRef {
                name: name.clone(),
                dtype: t.2,
                shape: t.3,
                shard,
                start: data_start + t.0,
                end: data_start + t.1,
            };
            if let Some(prev) = self.tensors.insert(name.clone(), tensor) {
                return Err(bad(
                    &path,
                    format!(
                        "tensor `{name}` is also in {}",
                        self.shards[prev.shard].path.display()
                    ),
                ));
            }
        }
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(bad(
                    &path,
                    format!("tensors `{}` and `{}` overlap", w[0].2, w[1].2),
                ));
            }
        }
        self.shards.push(Shard { path, map });
        Ok(())
    }

    /// Every tensor the index names must be in the shard it names.
    fn check_index(&self, index: &Path) -> Result<()> {
        let doc = read_json(index)?;
        let map = doc
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(index, "no `weight_map` object"))?;
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(index, format!("`{name}`: shard name is not a string")))?;
            match self.tensors.get(name) {
                None => {
                    return Err(bad(
                        &self.dir.join(file),
                        format!("lacks tensor `{name}` (listed in {INDEX_FILE})"),
                    ));
                }
                Some(t) if self.shards[t.shard].path != self.dir.join(file) => {
                    return Err(bad(
                        index,
                        format!(
                            "`{name}` is listed in {file} but found in {}",
                            self.shards[t.shard].path.display()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The checkpoint's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard files.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The bytes of `t` (a tensor of this checkpoint).
    pub fn data(&self, t: &TensorRef) -> &[u8] {
        &self.shards[t.shard].map[t.start..t.end]
    }

    /// The shard holding `t`, for error messages.
    pub fn file_of(&self, t: &TensorRef) -> &Path {
        &self.shards[t.shard].path
    }

    /// Bytes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.n_bytes() as u64).sum()
    }
}

/// (start, end, dtype, shape) of one header entry, relative to the data section.
fn parse_entry(
    name: &str,
    v: &serde_json::Value,
    data_len: usize,
) -> std::result::Result<(usize, usize, Dtype, Vec<usize>), String> {
    let dtype_name = v
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("tensor `{name}`: no dtype"))?;
    let dtype = Dtype::parse(dtype_name)
        .ok_or_else(|| format!("tensor `{name}`: unknown dtype {dtype_name}"))?;
    let shape: Vec<usize> = v
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| format!("tensor `{name}`: no shape"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("tensor `{name}`: shape is not a list of sizes"))?;
    let offs: Vec<usize> = v
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .unwrap_or_default();
    let [start, end] = offs[..] else {
        return Err(format!("tensor `{name}`: data_offsets is not [start, end]"));
    };
    if start > end || end > data_len {
        return Err(format!(
            "tensor `{name}`: bytes {start}..{end} outside the data section ({data_len} bytes): truncated file?"
        ));
    }
    let want = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
    if end - start != want {
        return Err(format!(
            "tensor `{name}`: {} bytes for shape {shape:?} of {dtype_name} (needs {want})",
            end - start
        ));
    }
    Ok((start, end, dtype, shape))
}

/// Reads a JSON file of a checkpoint folder.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

/// The shard files an index names, each once, in order of first mention.
fn shard_list(index: &Path) -> Result<Vec<String>> {
    let doc = read_json(index)?;
    let map = doc
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(index, "no `weight_map` object"))?;
    let mut files: Vec<String> = Vec::new();
    for (name, f) in map {
        let f = f
            .as_str()
            .ok_or_else(|| bad(index, format!("`{name}`: shard name is not a string")))?;
        if f.contains('/') || f.contains("..") {
            return Err(bad(
                index,
                format!("shard `{f}` is not a file in the folder"),
            ));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    for f in &files {
        if !index.with_file_name(f).is_file() {
            return Err(bad(
                &index.with_file_name(f),
                format!("missing shard (listed in {INDEX_FILE})"),
            ));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file holding `tensors` (name, dtype, shape, bytes).
    pub(crate) fn write_st(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        std::fs::write(path, out).unwrap();
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn single_and_sharded_checkpoints_open_and_serve_bytes() {
        let dir = tempfile::tempdir().unwrap();
        write_st(
            &dir.path().join(SINGLE_FILE),
            &[
                ("a", "F32", vec![2], f32s(&[1.0, 2.0])),
                ("b", "U8", vec![3], vec![7, 8, 9]),
            ],
        );
        let ck = Checkpoint::open(dir.path()).unwrap();
        let a = ck.tensor("a").unwrap();
        assert_eq!(ck.data(a), &f32s(&[1.0, 2.0])[..]);
        assert_eq!(ck.data(ck.tensor("b").unwrap()), &[7, 8, 9]);

        let sharded = tempfile::tempdir().unwrap();
        write_st(
            &sharded.path().join("s-1.safetensors"),
            &[("x", "F32", vec![1], f32s(&[3.0]))],
        );
        write_st(
            &sharded.path().join("s-2.safetensors"),
            &[("y", "BF16", vec![1], vec![0, 0x3f])],
        );
        let index = serde_json::json!({"metadata": {}, "weight_map": {"x": "s-1.safetensors", "y": "s-2.safetensors"}});
        std::fs::write(sharded.path().join(INDEX_FILE), index.to_string()).unwrap();
        let ck = Checkpoint::open(sharded.path()).unwrap();
        assert_eq!(ck.files().count(), 2);
        assert_eq!(ck.tensor("y").unwrap().dtype, Dtype::BF16);
    }

    #[test]
    fn bad_files_get_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SINGLE_FILE);
        let err = |p: &Path| {
            Checkpoint::open(p.parent().unwrap())
                .unwrap_err()
                .to_string()
        };
        std::fs::write(&p, b"abc").unwrap();
        assert!(err(&p).contains("too short"), "{}", err(&p));
        std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
        assert!(err(&p).contains("does not fit"), "{}", err(&p));
        let mut junk = 4u64.to_le_bytes().to_vec();
        junk.extend_from_slice(b"nope");
        std::fs::write(&p, junk).unwrap();
        assert!(err(&p).contains("not JSON"), "{}", err(&p));
        // Truncated data, a wrong byte count for the shape, an unknown dtype.
        write_st(&p, &[("a", "F32", vec![4], f32s(&[1.0, 2.0, 3.0, 4.0]))]);
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 4]).unwrap();
        assert!(err(&p).contains("truncated"), "{}", err(&p));
        write_st(&p, &[("a", "F32", vec![3], f32s(&[1.0, 2.0]))]);
        assert!(err(&p).contains("needs 12"), "{}", err(&p));
        write_st(&p, &[("a", "Q9", vec![1], vec![0])]);
        assert!(err(&p).contains("unknown dtype"), "{}", err(&p));
        assert!(err(&p).contains(&p.display().to_string()));

        // A missing shard.
        let sharded = tempfile::tempdir().unwrap();
        let index = serde_json::json!({"weight_map": {"x": "s-1.safetensors"}});
        std::fs::write(sharded.path().join(INDEX_FILE), index.to_string()).unwrap();
        let e = Checkpoint::open(sharded.path()).unwrap_err().to_string();
        assert!(
            e.contains("missing shard") && e.contains("s-1.safetensors"),
            "{e}"
        );
        // A tensor the index lists but its shard lacks.
        write_st(
            &sharded.path().join("s-1.safetensors"),
            &[("z", "U8", vec![1], vec![1])],
        );
        let e = Checkpoint::open(sharded.path()).unwrap_err().to_string();
        assert!(e.contains("lacks tensor `x`"), "{e}");
    }
}
