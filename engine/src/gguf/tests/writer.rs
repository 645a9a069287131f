//! A minimal GGUF writer for tests.
//!
//! It writes well-formed files by default, and lets a test override exactly the field it
//! wants to break (version, counts, a tensor's raw type id or offset, a raw key/value
//! pair), so each failure test builds the smallest file showing one defect.

use kernels::GgmlType;

use crate::gguf::{Array, Value};

/// One metadata entry to write.
pub enum Kv {
    /// A well-formed key/value pair.
    Value(String, Value),
    /// Bytes written as is where a key/value pair belongs.
    Raw(Vec<u8>),
}

/// One tensor to write.
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Written instead of the computed offset, when set.
    pub offset: Option<u64>,
}

/// A GGUF file under construction.
pub struct Builder {
    pub version: u32,
    /// Written instead of the real counts, when set.
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<TensorSpec>,
    /// The alignment used to lay out data (does not by itself write `general.alignment`).
    pub alignment: u64,
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    pub fn kv(mut self, key: &str, value: Value) -> Builder {
        self.kvs.push(Kv::Value(key.to_owned(), value));
        self
    }

    pub fn raw_kv(mut self, bytes: Vec<u8>) -> Builder {
        self.kvs.push(Kv::Raw(bytes));
        self
    }

    /// Sets the layout alignment and writes it as `general.alignment`.
    pub fn alignment(mut self, alignment: u32) -> Builder {
        self.alignment = alignment.into();
        self.kv("general.alignment", Value::U32(alignment))
    }

    /// Adds a tensor of a supported type with patterned data of the right size.
    pub fn tensor(self, name: &str, dims: &[u64], t: GgmlType) -> Builder {
        let row_bytes = t.row_bytes(dims[0] as usize).unwrap() as u64;
        let n_bytes = row_bytes * dims[1..].iter().product::<u64>();
        let seed = name.len() as u64;
        let data = (0..n_bytes).map(|i| ((i * 7 + seed) % 251) as u8).collect();
        self.raw_tensor(name, dims, t.id(), data)
    }

    /// Adds a tensor with any type id and data.
    pub fn raw_tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Builder {
        self.tensors.push(TensorSpec {
            name: name.to_owned(),
            dims: dims.to_vec(),
            type_id,
            data,
            offset: None,
        });
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        put_u32(&mut out, self.version);
        put_u64(
            &mut out,
            self.tensor_count.unwrap_or(self.tensors.len() as u64),
        );
        put_u64(&mut out, self.kv_count.unwrap_or(self.kvs.len() as u64));
        for kv in &self.kvs {
            match kv {
                Kv::Value(key, value) => {
                    put_str(&mut out, key);
                    put_u32(&mut out, value_type_id(value));
                    put_value(&mut out, value);
                }
                Kv::Raw(bytes) => out.extend_from_slice(bytes),
            }
        }
        let mut offsets = Vec::new();
        let mut data_len = 0u64;
        for t in &self.tensors {
            let offset = data_len.next_multiple_of(self.alignment);
            offsets.push(offset);
            data_len = offset + t.data.len() as u64;
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, t.offset.unwrap_or(offset));
        }
        pad(&mut out, self.alignment);
        let data_start = out.len() as u64;
        for (t, offset) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + offset) as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

/// Appends zeros up to a multiple of `alignment`.
pub fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = (out.len() as u64).next_multiple_of(alignment);
    out.resize(len as usize, 0);
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A raw key/value pair: key, type id, then `value_bytes` as is.
pub fn raw_kv(key: &str, type_id: u32, value_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, key);
    put_u32(&mut out, type_id);
    out.extend_from_slice(value_bytes);
    out
}

pub fn value_type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn array_elem_type_id(a: &Array) -> u32 {
    match a {
        Array::U8(_) => 0,
        Array::I8(_) => 1,
        Array::U16(_) => 2,
        Array::I16(_) => 3,
        Array::U32(_) => 4,
        Array::I32(_) => 5,
        Array::F32(_) => 6,
        Array::Bool(_) => 7,
        Array::String(_) => 8,
        Array::Array(_) => 9,
        Array::U64(_) => 10,
        Array::I64(_) => 11,
        Array::F64(_) => 12,
    }
}

pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

pub fn put_array(out: &mut Vec<u8>, a: &Array) {
    put_u32(out, array_elem_type_id(a));
    put_u64(out, a.len() as u64);
    fn each<T: Copy>(out: &mut Vec<u8>, v: &[T], f: impl Fn(T) -> Value) {
        for &x in v {
            put_value(out, &f(x));
        }
    }
    match a {
        Array::U8(v) => each(out, v, Value::U8),
        Array::I8(v) => each(out, v, Value::I8),
        Array::U16(v) => each(out, v, Value::U16),
        Array::I16(v) => each(out, v, Value::I16),
        Array::U32(v) => each(out, v, Value::U32),
        Array::I32(v) => each(out, v, Value::I32),
        Array::U64(v) => each(out, v, Value::U64),
        Array::I64(v) => each(out, v, Value::I64),
        Array::F32(v) => each(out, v, Value::F32),
        Array::F64(v) => each(out, v, Value::F64),
        Array::Bool(v) => each(out, v, Value::Bool),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}
