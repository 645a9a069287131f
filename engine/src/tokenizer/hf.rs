//! A Hugging Face checkpoint's `tokenizer.json` (and `tokenizer_config.json`) read into the
//! same [`TokenizerSpec`] that llama.cpp's `convert_hf_to_gguf.py` would have written into a
//! GGUF (`_set_vocab_gpt2`, `get_vocab_base` and gguf-py's `SpecialVocab`), so a checkpoint
//! folder is served with exactly the tokenizer its converted GGUF would have.
//!
//! Only byte-level BPE is read (Qwen2/3, DeepSeek-V3, Llama 3, SmolLM): a `BPE` model without
//! byte fallback, a `ByteLevel` decoder, and a pre-tokenizer whose regex passes are those of a
//! type llama.cpp knows. The pre-tokenizer is recognized by its regexes, where the converter
//! hashes a sample tokenization; a pattern no type runs is refused rather than guessed.
//!
//! What these two files cannot say is left to the caller: `config.json`'s `vocab_size` (the
//! converter pads the token list to it with `[PAD<id>]` tokens), `*_token_id` fallbacks in
//! `config.json`, and a `chat_template.jinja` next to them. The normalizer (Qwen2's NFC) is
//! ignored, as llama.cpp ignores it.

mod config;
mod json;
mod pre_tokenizer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde_json::Value;

use super::TokenizerSpec;
use super::error::Result;
use config::Specials;
use json::{Obj, describe, parse};
use pre_tokenizer::pre_tokenizer_name;

const TOKENIZER_JSON: &str = "tokenizer.json";
const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";

/// `tokenizer.ggml.token_type` values, as `vocab.rs` reads them.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// The largest vocabulary read. Ids come from the file and holes are filled, so an id of 4
/// billion must not allocate 4 billion tokens; real vocabularies stay under 300k.
const MAX_VOCAB_SIZE: usize = 1 << 21;

/// Builds the spec of a byte-level BPE tokenizer from the text of `tokenizer.json` and, when
/// the folder has one, of `tokenizer_config.json`. Errors name the file and field at fault;
/// the caller adds which folder they came from.
pub fn spec_from_hf(
    tokenizer_json: &str,
    tokenizer_config_json: Option<&str>,
) -> Result<TokenizerSpec> {
    let tokenizer_value = parse(TOKENIZER_JSON, tokenizer_json)?;
    let tokenizer = Obj::root(TOKENIZER_JSON, &tokenizer_value)?;
    let config_value = tokenizer_config_json
        .map(|text| parse(TOKENIZER_CONFIG_JSON, text))
        .transpose()?;
    let config = config_value
        .as_ref()
        .map(|value| Obj::root(TOKENIZER_CONFIG_JSON, value))
        .transpose()?;

    let model = tokenizer.object("model")?;
    check_byte_level_bpe(&tokenizer, &model)?;
    let (tokens, token_types) = vocabulary(&tokenizer, &model)?;
    let merges = merges(&model)?;
    let pre = pre_tokenizer_name(&tokenizer, &model)?;
    let specials = Specials::read(&tokenizer, config.as_ref(), &tokens, pre)?;

    Ok(TokenizerSpec {
        model: "gpt2".to_owned(),
        pre: Some(pre.to_owned()),
        tokens,
        token_types,
        merges,
        bos_id: specials.bos_id,
        eos_id: specials.eos_id,
        // llama.cpp finds the end-of-turn and end-of-message tokens by their text when the
        // GGUF names none, and so does `vocab.rs`; the converter names none either.
        eot_id: None,
        eom_id: None,
        unk_id: specials.unk_id,
        pad_id: specials.pad_id,
        add_bos: specials.add_bos,
        add_eos: specials.add_eos,
        chat_template: specials.chat_template,
    })
}

/// Refuses anything but byte-level BPE, as the converter's `BpeVocab` does.
fn check_byte_level_bpe(tokenizer: &Obj, model: &Obj) -> Result<()> {
    let model_type = model.string("type")?;
    if model_type != "BPE" {
        return Err(model.error(
            "type",
            format!("must be \"BPE\" (byte-level BPE), got {model_type:?}"),
        ));
    }
    if model.opt_bool("byte_fallback")? == Some(true) {
        return Err(model.error(
            "byte_fallback",
            "is true: a SentencePiece-style BPE, not byte-level BPE",
        ));
    }
    let decoder = tokenizer.object("decoder")?;
    let decoder_type = decoder.string("type")?;
    let byte_level = match decoder_type {
        "ByteLevel" => true,
        "Sequence" => decoder
            .array("decoders")?
            .iter()
            .any(|step| step.get("type").and_then(Value::as_str) == Some("ByteLevel")),
        _ => false,
    };
    if !byte_level {
        return Err(decoder.error(
            "type",
            format!("must be a ByteLevel decoder (byte-level BPE), got {decoder_type:?}"),
        ));
    }
    Ok(())
}

/// The token list and types: `model.vocab` as normal tokens, `added_tokens` at their ids as
/// control (special, or looking special) or user-defined tokens, holes as unused `[PAD<id>]`.
fn vocabulary(tokenizer: &Obj, model: &Obj) -> Result<(Vec<String>, Vec<i32>)> {
    let vocab = model.map_of("vocab")?;
    let mut entries = Vec::with_capacity(vocab.len());
    for (text, id) in vocab {
        let id = token_id(id).ok_or_else(|| {
            model.error(
                &format!("vocab[{text:?}]"),
                format!(
                    "must be a token id below {MAX_VOCAB_SIZE}, got {}",
                    describe(id)
                ),
            )
        })?;
        entries.push((text.as_str(), id));
    }
    let mut added = Vec::new();
    for (index, value) in tokenizer.opt_array("added_tokens")?.iter().enumerate() {
        let token = Obj::new(tokenizer.file, format!("added_tokens[{index}]"), value)?;
        let id = token_id(token.required("id")?).ok_or_else(|| {
            token.error("id", format!("must be a token id below {MAX_VOCAB_SIZE}"))
        })?;
        let content = token.string("content")?;
        let special = token.opt_bool("special")?.unwrap_or(false);
        added.push((token, id, content, special));
    }
    let size = entries
        .iter()
        .map(|&(_, id)| id)
        .chain(added.iter().map(|&(_, id, _, _)| id))
        .max()
        .map_or(0, |max| max as usize + 1);
    if size == 0 {
        return Err(model.error("vocab", "holds no tokens"));
    }

    let mut slots: Vec<Option<(String, i32)>> = vec![None; size];
    let mut vocab_ids = HashMap::with_capacity(entries.len());
    for (text, id) in entries {
        if let Some((other, _)) = &slots[id as usize] {
            return Err(model.error(
                "vocab",
                format!("gives id {id} to both {other:?} and {text:?}"),
            ));
        }
        slots[id as usize] = Some((text.to_owned(), TYPE_NORMAL));
        vocab_ids.insert(text, id);
    }
    for (token, id, content, special) in added {
        if let Some(&vocab_id) = vocab_ids.get(content).filter(|&&v| v != id) {
            return Err(token.error(
                "id",
                format!("is {id}, but model.vocab gives {content:?} the id {vocab_id}"),
            ));
        }
        match &slots[id as usize] {
            Some((text, TYPE_NORMAL)) if text == content => {}
            Some((text, _)) => {
                return Err(token.error(
                    "id",
                    format!("{id} of {content:?} is already the id of {text:?}"),
                ));
            }
            None => {}
        }
        // The converter's rule: special, or shaped like a control token.
        let slot = if special || looks_special(content) {
            (content.to_owned(), TYPE_CONTROL)
        } else {
            // Gemma's pre-normalization of user-defined spaces, kept for fidelity.
            (content.replace('\u{2581}', " "), TYPE_USER_DEFINED)
        };
        slots[id as usize] = Some(slot);
    }
    Ok(slots
        .into_iter()
        .enumerate()
        .map(|(id, slot)| slot.unwrap_or_else(|| (format!("[PAD{id}]"), TYPE_UNUSED)))
        .unzip())
}

/// A token id within [`MAX_VOCAB_SIZE`].
fn token_id(value: &Value) -> Option<u32> {
    value
        .as_u64()
        .filter(|&id| id < MAX_VOCAB_SIZE as u64)
        .and_then(|id| u32::try_from(id).ok())
}

/// The converter's `does_token_look_special`: added tokens some models forget to mark special.
fn looks_special(text: &str) -> bool {
    matches!(text, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with("<\u{ff5c}") && text.ends_with("\u{ff5c}>"))
        || (text.starts_with("<unused") && text.ends_with('>'))
}

/// `model.merges`: `"left right"` strings, or `["left", "right"]` pairs (transformers 4.45+)
/// joined by a space, a space inside a side written as `Ġ` as the converter does.
fn merges(model: &Obj) -> Result<Vec<String>> {
    let merges = model.array("merges")?;
    let mut joined = Vec::with_capacity(merges.len());
    for (index, merge) in merges.iter().enumerate() {
        let text = match merge {
            Value::String(text) => text.clone(),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(left), Value::String(right)] => {
                    format!(
                        "{} {}",
                        left.replace(' ', "\u{120}"),
                        right.replace(' ', "\u{120}")
                    )
                }
                _ => String::new(),
            },
            _ => String::new(),
        };
        if text.is_empty() {
            return Err(model.error(
                &format!("merges[{index}]"),
                format!(
                    "must be \"left right\" or [\"left\", \"right\"], got {}",
                    describe(merge)
                ),
            ));
        }
        joined.push(text);
    }
    Ok(joined)
}
