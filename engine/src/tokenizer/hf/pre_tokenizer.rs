//! The `pre_tokenizer` of a `tokenizer.json`, recognized as one of llama.cpp's pre-tokenizer
//! types by its regex passes.
//!
//! The converter identifies the type by hashing how the Hugging Face tokenizer cuts a sample
//! text, which needs that tokenizer; the regexes say the same thing directly. Each step is
//! turned into the regex llama.cpp would run for it (a `Split` regex respelled, `Digits` as
//! `\p{N}`, a `ByteLevel` with `use_regex` as GPT-2's regex) and the list is looked up in
//! `pretokenizer.rs`.

use serde_json::Value;

use super::json::Obj;
use crate::tokenizer::error::{Result, TokenizerError};
use crate::tokenizer::pretokenizer::{self, GPT2};

/// The regex passes of a `pre_tokenizer`: `spelled` as llama.cpp spells them, for matching,
/// and `as_written` for the error when nothing matches.
#[derive(Default)]
struct Passes {
    spelled: Vec<String>,
    as_written: Vec<String>,
    /// A `ByteLevel` step has been seen; it must be the last step.
    byte_level: bool,
}

/// The `tokenizer.ggml.pre` name of the pre-tokenizer, found by its regex passes.
pub(super) fn pre_tokenizer_name(tokenizer: &Obj, model: &Obj) -> Result<&'static str> {
    let mut passes = Passes::default();
    walk_pre_tokenizer(&tokenizer.object("pre_tokenizer")?, &mut passes)?;
    if !passes.byte_level {
        return Err(tokenizer.error(
            "pre_tokenizer",
            "has no ByteLevel step, so this is not a byte-level BPE tokenizer",
        ));
    }
    let ignore_merges = model.opt_bool("ignore_merges")?.unwrap_or(false);
    pretokenizer::pre_name_for_regexes(&passes.spelled, ignore_merges).ok_or(
        TokenizerError::HfUnknownPreTokenizer {
            passes: passes.as_written,
        },
    )
}

fn walk_pre_tokenizer(step: &Obj, passes: &mut Passes) -> Result<()> {
    let step_type = step.string("type")?;
    if passes.byte_level {
        return Err(step.error(
            "type",
            format!("is {step_type:?} after the ByteLevel step, which llama.cpp runs last"),
        ));
    }
    let mut push = |spelled: String, as_written: String| {
        passes.spelled.push(spelled);
        passes.as_written.push(as_written);
    };
    match step_type {
        "Sequence" => {
            for (index, value) in step.array("pretokenizers")?.iter().enumerate() {
                let key = step.key(&format!("pretokenizers[{index}]"));
                walk_pre_tokenizer(&Obj::new(step.file, key, value)?, passes)?;
            }
        }
        "Split" => {
            let pattern = step.object("pattern")?;
            let Some(Value::String(regex)) = pattern.get("Regex") else {
                return Err(pattern.error("Regex", "must be a regex string"));
            };
            let behavior = step.string("behavior")?;
            if behavior != "Isolated" {
                return Err(step.error(
                    "behavior",
                    format!("must be \"Isolated\", got {behavior:?}"),
                ));
            }
            if step.opt_bool("invert")? == Some(true) {
                return Err(step.error("invert", "must be false"));
            }
            push(llama_cpp_spelling(regex), regex.clone());
        }
        "Digits" => {
            let individual = step.opt_bool("individual_digits")?.unwrap_or(false);
            let regex = if individual { r"\p{N}" } else { r"\p{N}+" };
            push(
                regex.to_owned(),
                format!("Digits (individual_digits: {individual})"),
            );
        }
        "ByteLevel" => {
            // `add_prefix_space` is ignored: llama.cpp never adds one, nor does the converter
            // look at it.
            if step.opt_bool("use_regex")?.unwrap_or(true) {
                push(GPT2.to_owned(), "ByteLevel (use_regex: true)".to_owned());
            }
            passes.byte_level = true;
        }
        other => {
            return Err(step.error(
                "type",
                format!("is {other:?}, a pre-tokenizer llama.cpp has no equivalent for"),
            ));
        }
    }
    Ok(())
}

/// A Hugging Face regex as llama.cpp writes the same regex: the case-insensitive contraction
/// group spelled out, and raw CR, LF and tab (DeepSeek-V3's file holds them raw) escaped.
fn llama_cpp_spelling(regex: &str) -> String {
    const HF_CONTRACTIONS: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    const LLAMA_CPP_CONTRACTIONS: &str =
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
    regex
        .replace(HF_CONTRACTIONS, LLAMA_CPP_CONTRACTIONS)
        .replace('\r', r"\r")
        .replace('\n', r"\n")
        .replace('\t', r"\t")
}
