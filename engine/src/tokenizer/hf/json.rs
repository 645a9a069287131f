//! Reading `serde_json` values with errors that name the file and the field's path, so a
//! malformed tokenizer file is reported as "`model.merges[3]` must be ..., got ..." rather
//! than as a panic or a bare type error.

use serde_json::{Map, Value};

use crate::tokenizer::error::{Result, TokenizerError};

/// Parses one file's text; a syntax error names the file.
pub(super) fn parse(file: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| TokenizerError::HfJson {
        file,
        message: e.to_string(),
    })
}

/// A short description of a JSON value for error messages; long strings are cut.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 80 => {
            let head: String = s.chars().take(80).collect();
            format!("the string {head:?}...")
        }
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A JSON object in one of the files, with its path there for error messages.
pub(super) struct Obj<'a> {
    /// The file name, for errors.
    pub(super) file: &'static str,
    /// Dotted path from the document root, e.g. `added_tokens[3]`; empty at the root.
    path: String,
    /// The object's fields.
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    pub(super) fn root(file: &'static str, value: &'a Value) -> Result<Obj<'a>> {
        Obj::new(file, String::new(), value)
    }

    pub(super) fn new(file: &'static str, path: String, value: &'a Value) -> Result<Obj<'a>> {
        match value {
            Value::Object(map) => Ok(Obj { file, path, map }),
            other => Err(TokenizerError::HfField {
                file,
                key: if path.is_empty() {
                    "(document)".to_owned()
                } else {
                    path
                },
                problem: format!("must be a JSON object, got {}", describe(other)),
            }),
        }
    }

    pub(super) fn key(&self, name: &str) -> String {
        match self.path.as_str() {
            "" => name.to_owned(),
            path => format!("{path}.{name}"),
        }
    }

    pub(super) fn error(&self, name: &str, problem: impl Into<String>) -> TokenizerError {
        TokenizerError::HfField {
            file: self.file,
            key: self.key(name),
            problem: problem.into(),
        }
    }

    /// The field, `None` when it is absent or null (Hugging Face writes both for "unset").
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    pub(super) fn required(&self, name: &str) -> Result<&'a Value> {
        self.get(name).ok_or_else(|| self.error(name, "is missing"))
    }

    pub(super) fn object(&self, name: &str) -> Result<Obj<'a>> {
        Obj::new(self.file, self.key(name), self.required(name)?)
    }

    pub(super) fn map_of(&self, name: &str) -> Result<&'a Map<String, Value>> {
        let value = self.required(name)?;
        value
            .as_object()
            .ok_or_else(|| self.error(name, format!("must be an object, got {}", describe(value))))
    }

    pub(super) fn string(&self, name: &str) -> Result<&'a str> {
        let value = self.required(name)?;
        value
            .as_str()
            .ok_or_else(|| self.error(name, format!("must be a string, got {}", describe(value))))
    }

    pub(super) fn array(&self, name: &str) -> Result<&'a [Value]> {
        let value = self.required(name)?;
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.error(name, format!("must be an array, got {}", describe(value))))
    }

    pub(super) fn opt_array(&self, name: &str) -> Result<&'a [Value]> {
        match self.get(name) {
            None => Ok(&[]),
            Some(_) => self.array(name),
        }
    }

    pub(super) fn opt_bool(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                name,
                format!("must be true or false, got {}", describe(other)),
            )),
        }
    }
}
