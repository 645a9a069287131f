//! Typed metadata lookups on [`GgufFile`].
//!
//! Writers disagree on integer widths (one stores `llama.block_count` as u32, another as
//! u64 or i32), so the integer getters accept any integer type whose value fits and report
//! a value that does not fit instead of truncating it. Every getter answers `Ok(None)` for
//! an absent key and an error naming the key and both types for a present key of the wrong
//! type, so a caller can tell "optional and missing" from "present and malformed".

use std::path::Path;

use super::value::{Array, Value};
use super::{GgufError, GgufFile};

/// `value` as the integer type `T` (named `expected` in errors), if it is an integer that
/// fits.
pub(super) fn int_from_value<T: TryFrom<i128>>(
    value: &Value,
    key: &str,
    expected: &'static str,
    path: &Path,
) -> Result<T, GgufError> {
    let Some(n) = value.as_integer() else {
        return Err(GgufError::MetadataType {
            path: path.to_path_buf(),
            key: key.to_owned(),
            expected,
            got: value.type_name(),
        });
    };
    T::try_from(n).map_err(|_| GgufError::MetadataOutOfRange {
        path: path.to_path_buf(),
        key: key.to_owned(),
        expected,
        value: n.to_string(),
    })
}

impl GgufFile {
    fn type_error(&self, key: &str, expected: &'static str, got: &Value) -> GgufError {
        GgufError::MetadataType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            got: got.type_name(),
        }
    }

    fn get_int<T: TryFrom<i128>>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, GgufError> {
        self.get(key)
            .map(|v| int_from_value(v, key, expected, &self.path))
            .transpose()
    }

    /// An integer value that fits in a u32.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.get_int(key, "u32")
    }

    /// An integer value that fits in a u64.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get_int(key, "u64")
    }

    /// An integer value that fits in a usize (a count or size).
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.get_int(key, "usize")
    }

    /// An integer value that fits in an i32.
    pub fn get_i32(&self, key: &str) -> Result<Option<i32>, GgufError> {
        self.get_int(key, "i32")
    }

    /// An integer value that fits in an i64.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.get_int(key, "i64")
    }

    /// A float value: f32, or f64 rounded to f32.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(self.type_error(key, "f32", other)),
        }
    }

    /// A float value: f64, or f32 widened.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(f64::from(*v))),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(self.type_error(key, "f64", other)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.type_error(key, "bool", other)),
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v)),
            Some(other) => Err(self.type_error(key, "string", other)),
        }
    }

    /// An array value of any element type.
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(v)) => Ok(Some(v)),
            Some(other) => Err(self.type_error(key, "array", other)),
        }
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::String(v))) => {
                Ok(Some(v.iter().map(String::as_str).collect()))
            }
            Some(other) => Err(self.type_error(key, "array of string", other)),
        }
    }

    /// An array of floats (e.g. `tokenizer.ggml.scores`): f32, or f64 rounded to f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::F32(v))) => Ok(Some(v.clone())),
            Some(Value::Array(Array::F64(v))) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
            Some(other) => Err(self.type_error(key, "array of f32", other)),
        }
    }

    /// An array of integers that each fit in an i32 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.get_int_array(key, "array of i32")
    }

    /// An array of integers that each fit in a u32.
    pub fn get_u32_array(&self, key: &str) -> Result<Option<Vec<u32>>, GgufError> {
        self.get_int_array(key, "array of u32")
    }

    fn get_int_array<T: TryFrom<i128>>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Some(integers) = (match value {
            Value::Array(array) => array.integers(),
            _ => None,
        }) else {
            return Err(self.type_error(key, expected, value));
        };
        let mut out = Vec::with_capacity(integers.size_hint().0);
        for (i, n) in integers.enumerate() {
            let Ok(n) = T::try_from(n) else {
                return Err(GgufError::MetadataOutOfRange {
                    path: self.path.clone(),
                    key: key.to_owned(),
                    expected,
                    value: format!("{n} (element {i})"),
                });
            };
            out.push(n);
        }
        Ok(Some(out))
    }
}
