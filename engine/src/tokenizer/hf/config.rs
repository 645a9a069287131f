//! The special tokens, `add_bos` / `add_eos` and chat template of a checkpoint: what
//! `tokenizer_config.json` says, else what `tokenizer.json`'s post-processor implies, else
//! llama.cpp's default, in the order gguf-py's `SpecialVocab` applies them.

use std::collections::HashMap;

use serde_json::Value;

use super::TOKENIZER_JSON;
use super::json::{Obj, describe};
use crate::tokenizer::error::{Result, TokenizerError};
use crate::tokenizer::llama_cpp_default_add_bos;

/// The spec fields that come from the special tokens and the tokenizer config; each is the
/// [`TokenizerSpec`](crate::tokenizer::TokenizerSpec) field of the same name.
#[derive(Debug)]
pub(super) struct Specials {
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
}

impl Specials {
    /// Reads them from `tokenizer.json` and `tokenizer_config.json` (when the folder has one),
    /// resolving token texts to ids through `tokens`, the final token list. `pre` is the
    /// pre-tokenizer name, which sets llama.cpp's default `add_bos`.
    pub fn read(
        tokenizer: &Obj,
        config: Option<&Obj>,
        tokens: &[String],
        pre: &str,
    ) -> Result<Specials> {
        let mut ids_by_text = HashMap::with_capacity(tokens.len());
        for (id, text) in (0u32..).zip(tokens) {
            ids_by_text.entry(text.as_str()).or_insert(id);
        }
        let resolve = |text: Option<&str>, file, key: &str| -> Result<Option<u32>> {
            let Some(text) = text else { return Ok(None) };
            match ids_by_text.get(text) {
                Some(&id) => Ok(Some(id)),
                None => Err(TokenizerError::HfField {
                    file,
                    key: key.to_owned(),
                    problem: format!("names {text:?}, which is not a token"),
                }),
            }
        };
        let hints = post_processor_hints(tokenizer);
        // Without tokenizer_config.json the converter takes BOS/EOS from the post-processor.
        let (bos_id, eos_id, unk_id, pad_id) = match config {
            Some(config) => (
                resolve(special_text(config, "bos_token")?, config.file, "bos_token")?,
                resolve(special_text(config, "eos_token")?, config.file, "eos_token")?,
                resolve(special_text(config, "unk_token")?, config.file, "unk_token")?,
                resolve(special_text(config, "pad_token")?, config.file, "pad_token")?,
            ),
            None => (
                resolve(hints.first, TOKENIZER_JSON, "post_processor")?,
                resolve(hints.last, TOKENIZER_JSON, "post_processor")?,
                None,
                None,
            ),
        };
        let flag = |name| config.map_or(Ok(None), |config| config.opt_bool(name));
        let is_token =
            |text: &str, id: Option<u32>| id.is_some() && ids_by_text.get(text).copied() == id;
        let add_bos = match flag("add_bos_token")? {
            Some(add) => add,
            None if hints.roberta => true,
            None => match hints.first {
                Some(first) => is_token(first, bos_id),
                // No key in the GGUF either: llama.cpp's default applies.
                None => llama_cpp_default_add_bos("gpt2", Some(pre)) && bos_id.is_some(),
            },
        };
        let add_eos = match flag("add_eos_token")? {
            Some(add) => add,
            None if hints.roberta => true,
            None => hints.last.is_some_and(|last| is_token(last, eos_id)),
        };
        let chat_template = match config {
            Some(config) => chat_template(config)?,
            None => None,
        };
        Ok(Specials {
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            chat_template,
        })
    }
}

/// What the post-processor says about special tokens around a prompt.
#[derive(Debug, Default)]
struct PostProcessorHints<'a> {
    /// The special token a `TemplateProcessing` puts before the text.
    first: Option<&'a str>,
    /// The special token it puts after the text.
    last: Option<&'a str>,
    /// A `RobertaProcessing` adds BOS and EOS.
    roberta: bool,
}

/// The converter's "crude parsing" of the post-processor, reduced to what sets `add_bos` and
/// `add_eos` (e.g. Llama 3 adds `<|begin_of_text|>` only here). Like the converter it reads
/// what it recognizes and skips the rest: the post-processor never changes the tokens.
fn post_processor_hints<'a>(tokenizer: &Obj<'a>) -> PostProcessorHints<'a> {
    let mut hints = PostProcessorHints::default();
    let Some(post_processor) = tokenizer.get("post_processor") else {
        return hints;
    };
    let processors = match post_processor.get("processors").and_then(Value::as_array) {
        Some(processors) => processors.as_slice(),
        None => std::slice::from_ref(post_processor),
    };
    for processor in processors {
        match processor.get("type").and_then(Value::as_str) {
            Some("RobertaProcessing") => hints.roberta = true,
            Some("TemplateProcessing") => {
                let single = processor.get("single").and_then(Value::as_array);
                let special =
                    |item: Option<&'a Value>| item?.get("SpecialToken")?.get("id")?.as_str();
                if let Some(single) = single.filter(|s| s.len() > 1) {
                    hints.first = special(single.first());
                    hints.last = special(single.last());
                }
            }
            _ => {}
        }
    }
    hints
}

/// A special token of `tokenizer_config.json`: a string, an object with `content`, or absent.
fn special_text<'a>(config: &Obj<'a>, key: &str) -> Result<Option<&'a str>> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(Value::Object(token)) => match token.get("content") {
            Some(Value::String(text)) => Ok(Some(text)),
            _ => Err(config.error(key, "is an object without a string `content`")),
        },
        Some(other) => Err(config.error(
            key,
            format!(
                "must be a string or an object with `content`, got {}",
                describe(other)
            ),
        )),
    }
}

/// `chat_template`: a string, or a list of `{name, template}` of which `default` is the one
/// llama.cpp uses (the converter stores the others under their names, which nothing reads).
fn chat_template(config: &Obj) -> Result<Option<String>> {
    match config.get("chat_template") {
        None => Ok(None),
        Some(Value::String(template)) => Ok(Some(template.clone())),
        Some(Value::Array(templates)) => {
            for (index, value) in templates.iter().enumerate() {
                let entry = Obj::new(config.file, format!("chat_template[{index}]"), value)?;
                if entry.string("name")? == "default" {
                    return entry.string("template").map(|t| Some(t.to_owned()));
                }
            }
            Ok(None)
        }
        Some(other) => Err(config.error(
            "chat_template",
            format!(
                "must be a string or a list of {{name, template}}, got {}",
                describe(other)
            ),
        )),
    }
}
