//! The tokenizer metadata of a GGUF file, and its validation into a [`Tokenizer`].
//!
//! Everything that can be wrong with the metadata is caught here, once, so the encoding and
//! decoding paths never check raw input again: lengths, id ranges, duplicate tokens and
//! merges whose sides or result are not tokens.

use std::collections::HashSet;
use std::collections::hash_map::Entry;

use tokenizers::models::bpe::{BPE, Vocab};

use super::error::{Result, TokenizerError};
use super::pretokenizer::PreTokenizerConfig;
use super::vocab::{EogSources, VocabInfo};
use super::{ChatTemplate, Tokenizer};

/// The `tokenizer.*` metadata of a GGUF file, as the model loader reads it.
///
/// Absent keys are `None` / empty / `false`. Note that llama.cpp gives `add_bos` a default
/// when `tokenizer.ggml.add_bos_token` is absent ([`super::llama_cpp_default_add_bos`]); the
/// loader applies it, this struct takes the value as final. The FIM token ids
/// (`tokenizer.ggml.fim_*_token_id`) are not read: they are recognized by their text, as
/// llama.cpp does when the keys are absent, and the FIM pad/repo/separator tokens end
/// generation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: only `"gpt2"` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer type, e.g. `"smollm"`, `"llama-bpe"`,
    /// `"qwen2"`; `None` means llama.cpp's `"default"`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token strings, index = id. Must be unique; an empty string is
    /// renamed `[EMPTY_<id>]` as llama.cpp does.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte); empty when absent, meaning all normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, `"left right"` each, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`; when absent it is detected by text, as in llama.cpp.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`; when absent it is detected by text.
    pub eom_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: put BOS in front of prompts.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`: put EOS behind prompts.
    pub add_eos: bool,
    /// `tokenizer.chat_template`: the Jinja chat template.
    pub chat_template: Option<String>,
}

/// Validates `spec` and builds the tokenizer.
pub(super) fn build(spec: TokenizerSpec) -> Result<Tokenizer> {
    let TokenizerSpec {
        model,
        pre,
        tokens,
        token_types,
        merges,
        bos_id,
        eos_id,
        eot_id,
        eom_id,
        unk_id,
        pad_id,
        add_bos,
        add_eos,
        chat_template,
    } = spec;
    if model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel { model });
    }
    let pre_tokenizer = PreTokenizerConfig::for_name(pre.as_deref())?;
    let max_tokens = u32::MAX as usize;
    if tokens.is_empty() || tokens.len() > max_tokens {
        return Err(TokenizerError::VocabSize {
            max: max_tokens,
            got: tokens.len(),
        });
    }
    if !token_types.is_empty() && token_types.len() != tokens.len() {
        return Err(TokenizerError::TokenTypesLength {
            expected: tokens.len(),
            got: token_types.len(),
        });
    }
    let ids = [
        ("bos_id", bos_id),
        ("eos_id", eos_id),
        ("eot_id", eot_id),
        ("eom_id", eom_id),
        ("unk_id", unk_id),
        ("pad_id", pad_id),
    ];
    for (field, id) in ids {
        if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
            return Err(TokenizerError::SpecialTokenOutOfRange {
                field,
                id,
                vocab_size: tokens.len(),
            });
        }
    }
    for (flag, field, wanted, id) in [
        ("add_bos", "bos_id", add_bos, bos_id),
        ("add_eos", "eos_id", add_eos, eos_id),
    ] {
        if wanted && id.is_none() {
            return Err(TokenizerError::MissingSpecialToken { flag, field });
        }
    }

    let mut texts = tokens;
    let mut token_ids = Vocab::with_capacity(texts.len());
    for (index, text) in texts.iter_mut().enumerate() {
        let id = u32::try_from(index).unwrap_or(u32::MAX);
        if text.is_empty() {
            *text = format!("[EMPTY_{id}]");
        }
        match token_ids.entry(text.clone()) {
            Entry::Occupied(first) => {
                return Err(TokenizerError::DuplicateToken {
                    text: text.clone(),
                    first_id: *first.get(),
                    second_id: id,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
    }
    let bpe_merges = validate_merges(&merges, |text| token_ids.get(text).copied())?;

    let eog_sources = EogSources {
        eos_id,
        eot_id,
        eom_id,
    };
    let info = VocabInfo::new(&texts, &token_types, eog_sources, |text| {
        token_ids.get(text).copied()
    });
    let model = BPE::builder()
        .vocab_and_merges(token_ids, bpe_merges)
        .ignore_merges(pre_tokenizer.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Backend {
            op: "build the BPE model",
            message: e.to_string(),
        })?;
    let mut bpe = tokenizers::Tokenizer::new(model);
    bpe.with_pre_tokenizer(Some(pre_tokenizer.build()?));
    let chat_template = chat_template
        .as_deref()
        .map(ChatTemplate::new)
        .transpose()?;

    Ok(Tokenizer {
        bpe,
        texts,
        bos_id,
        eos_id,
        eot_id: info.eot_id,
        eom_id: info.eom_id,
        unk_id,
        pad_id,
        add_bos,
        add_eos,
        chat_template,
        info,
    })
}

/// Parses the merges into pairs, checking that both sides and their concatenation are tokens.
/// A repeated pair keeps its first (highest) priority, as llama.cpp's rank map does.
fn validate_merges(
    merges: &[String],
    token_id: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::with_capacity(merges.len());
    let mut seen = HashSet::with_capacity(merges.len());
    let mut merged = String::new();
    for (index, merge) in merges.iter().enumerate() {
        let malformed = |reason| TokenizerError::MalformedMerge {
            index,
            merge: merge.clone(),
            reason,
        };
        // llama.cpp splits at the first space after the first byte.
        let split = merge.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
        let (left, right) = match split {
            Some(at) if at + 1 < merge.len() => (&merge[..at], &merge[at + 1..]),
            _ => return Err(malformed("expected two tokens separated by a space")),
        };
        let left_id = token_id(left).ok_or_else(|| malformed("left side is not a token"))?;
        let right_id = token_id(right).ok_or_else(|| malformed("right side is not a token"))?;
        merged.clear();
        merged.push_str(left);
        merged.push_str(right);
        if token_id(&merged).is_none() {
            return Err(malformed("merged text is not a token"));
        }
        if seen.insert((left_id, right_id)) {
            pairs.push((left.to_owned(), right.to_owned()));
        }
    }
    Ok(pairs)
}
