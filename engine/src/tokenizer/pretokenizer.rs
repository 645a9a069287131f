//! The pre-tokenizer types of llama.cpp (`tokenizer.ggml.pre`) and their split regexes.
//!
//! A byte-level BPE model first cuts the text into words with a list of regexes (each one
//! cutting every piece the previous one left, matches and gaps both kept as pieces), then maps
//! every byte of each word to GPT-2's printable alphabet, then runs the merges inside each word.
//! The regexes below are copied from `llm_tokenizer_bpe` in llama.cpp's `src/llama-vocab.cpp`
//! (the "adapted" forms it really runs), and the name-to-type table from
//! `llama_vocab::impl::load`. A name that is not listed here is refused with
//! [`TokenizerError::UnsupportedPreTokenizer`] rather than tokenized approximately.
//! [`pre_name_for_regexes`] goes the other way, for a Hugging Face `tokenizer.json` that
//! states its regexes instead of a name.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use super::error::{Result, TokenizerError};

/// GPT-2's word regex (without its final `|\s+`, which only re-matches what a split keeps as
/// a gap anyway). Also the regex of a Hugging Face `ByteLevel` step with `use_regex`.
pub(super) const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex with `(?i:...)` spelled out, as llama.cpp runs it.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's regex: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-V3's main regex (after its digit and CJK passes).
const DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;

/// Mistral's Tekken regex, with the case classes rewritten by lookaheads as llama.cpp does.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (o200k) regex, rewritten the same way.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A llama.cpp pre-tokenizer type: its regex passes and the flags it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreType {
    /// llama.cpp's fallback when `tokenizer.ggml.pre` is absent or `"default"`.
    Default,
    Gpt2,
    /// Digits isolated one by one, then GPT-2 (`smollm`, `starcoder`, ...).
    StarCoder,
    /// Llama 3 regex, merges skipped for words already in the vocabulary, BOS by default.
    Llama3,
    /// Llama 3 regex without Llama 3's flags (`dbrx`, `smaug-bpe`).
    Llama3Regex,
    Qwen2,
    DeepSeek3,
    Falcon,
    /// Tekken regex, merges skipped for known words, BOS by default.
    Tekken,
    Gpt4o,
}

/// `tokenizer.ggml.pre` names and their types, as `llama_vocab::impl::load` maps them.
const PRE_NAMES: &[(&str, PreType)] = &[
    ("default", PreType::Default),
    ("gpt-2", PreType::Gpt2),
    // Not a llama.cpp name (it spells it "gpt-2"); accepted because converters have used it.
    ("gpt2", PreType::Gpt2),
    ("phi-2", PreType::Gpt2),
    ("jina-es", PreType::Gpt2),
    ("jina-de", PreType::Gpt2),
    ("gigachat", PreType::Gpt2),
    ("jina-v2-es", PreType::Gpt2),
    ("jina-v2-de", PreType::Gpt2),
    ("a.x-4.0", PreType::Gpt2),
    ("mellum", PreType::Gpt2),
    ("modern-bert", PreType::Gpt2),
    ("mpt", PreType::Gpt2),
    ("olmo", PreType::Gpt2),
    ("jais", PreType::Gpt2),
    ("trillion", PreType::Gpt2),
    ("granite-docling", PreType::Gpt2),
    ("exaone4", PreType::Gpt2),
    ("starcoder", PreType::StarCoder),
    ("refact", PreType::StarCoder),
    ("command-r", PreType::StarCoder),
    ("smollm", PreType::StarCoder),
    ("codeshell", PreType::StarCoder),
    ("exaone", PreType::StarCoder),
    ("minerva-7b", PreType::StarCoder),
    ("mellum2", PreType::StarCoder),
    ("llama3", PreType::Llama3),
    ("llama-v3", PreType::Llama3),
    ("llama-bpe", PreType::Llama3),
    ("falcon3", PreType::Llama3),
    ("falcon-h1", PreType::Llama3),
    ("pixtral", PreType::Llama3),
    ("midm-2.0", PreType::Llama3),
    ("lfm2", PreType::Llama3),
    ("jina-v5-nano", PreType::Llama3),
    ("dbrx", PreType::Llama3Regex),
    ("smaug-bpe", PreType::Llama3Regex),
    ("qwen2", PreType::Qwen2),
    ("deepseek-r1-qwen", PreType::Qwen2),
    ("kormo", PreType::Qwen2),
    ("f2llmv2", PreType::Qwen2),
    ("megrez", PreType::Qwen2),
    ("stablelm2", PreType::Qwen2),
    ("hunyuan", PreType::Qwen2),
    ("solar-open", PreType::Qwen2),
    ("deepseek-v3", PreType::DeepSeek3),
    ("hunyuan-dense", PreType::DeepSeek3),
    ("joyai-llm", PreType::DeepSeek3),
    ("hy_v4", PreType::DeepSeek3),
    ("falcon", PreType::Falcon),
    ("tekken", PreType::Tekken),
    ("gpt-4o", PreType::Gpt4o),
    ("llama4", PreType::Gpt4o),
    ("kanana2", PreType::Gpt4o),
    ("talkie", PreType::Gpt4o),
    ("minimax-m2", PreType::Gpt4o),
];

impl PreType {
    fn from_name(pre: Option<&str>) -> Result<PreType> {
        // llama.cpp treats an empty value like an absent key.
        let Some(name) = pre.filter(|name| !name.is_empty()) else {
            return Ok(PreType::Default);
        };
        PRE_NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, pre_type)| *pre_type)
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer {
                pre: name.to_owned(),
            })
    }

    /// The regex passes, in order.
    fn regexes(self) -> &'static [&'static str] {
        match self {
            PreType::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            PreType::Gpt2 => &[GPT2],
            PreType::StarCoder => &[r"\p{N}", GPT2],
            PreType::Llama3 | PreType::Llama3Regex => &[LLAMA3],
            PreType::Qwen2 => &[QWEN2],
            PreType::DeepSeek3 => &[r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3],
            PreType::Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            PreType::Tekken => &[TEKKEN],
            PreType::Gpt4o => &[GPT4O],
        }
    }

    /// Whether a word that is itself a token skips the merges (llama.cpp's `ignore_merges`).
    fn ignore_merges(self) -> bool {
        matches!(self, PreType::Llama3 | PreType::Tekken)
    }
}

/// One name per type that a Hugging Face `tokenizer.json` can describe, as
/// [`pre_name_for_regexes`] reports it. `default` is absent: it is llama.cpp's fallback and has
/// no Hugging Face form. Llama 3's regex appears twice, with and without `ignore_merges`.
const DESCRIBABLE_NAMES: &[&str] = &[
    "gpt-2",
    "smollm",
    "llama-bpe",
    "smaug-bpe",
    "qwen2",
    "deepseek-v3",
    "falcon",
    "tekken",
    "gpt-4o",
];

/// The `tokenizer.ggml.pre` name of the type whose regex passes are exactly `regexes` (spelled
/// as llama.cpp spells them). Of two types with the same regexes, the one whose
/// `ignore_merges` equals the given flag wins. `None` when no type runs these regexes.
pub(crate) fn pre_name_for_regexes(
    regexes: &[String],
    ignore_merges: bool,
) -> Option<&'static str> {
    let mut found = None;
    for &name in DESCRIBABLE_NAMES {
        let Ok(pre_type) = PreType::from_name(Some(name)) else {
            continue;
        };
        if !pre_type.regexes().iter().eq(regexes.iter()) {
            continue;
        }
        if pre_type.ignore_merges() == ignore_merges {
            return Some(name);
        }
        found = found.or(Some(name));
    }
    found
}

/// How the text of one spec is cut into words before the merges run.
#[derive(Debug)]
pub(crate) struct PreTokenizerConfig {
    /// The regex passes.
    pub regexes: &'static [&'static str],
    /// A word that is itself a token is emitted whole instead of merged (llama.cpp's
    /// `ignore_merges`, set for the Llama 3 and Tekken types).
    pub ignore_merges: bool,
}

impl PreTokenizerConfig {
    /// The configuration for `tokenizer.ggml.pre` (`None` when the key is absent).
    pub fn for_name(pre: Option<&str>) -> Result<PreTokenizerConfig> {
        let pre_type = PreType::from_name(pre)?;
        Ok(PreTokenizerConfig {
            regexes: pre_type.regexes(),
            ignore_merges: pre_type.ignore_merges(),
        })
    }

    /// The `tokenizers` pre-tokenizer: each regex pass as an isolating split, then the byte
    /// mapping without GPT-2's own regex.
    pub fn build(&self) -> Result<Sequence> {
        let mut steps = Vec::with_capacity(self.regexes.len() + 1);
        for regex in self.regexes {
            let split = Split::new(
                SplitPattern::Regex((*regex).to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Backend {
                op: "compile a pre-tokenizer regex",
                message: e.to_string(),
            })?;
            steps.push(PreTokenizerWrapper::from(split));
        }
        steps.push(PreTokenizerWrapper::from(ByteLevel::new(
            false, false, false,
        )));
        Ok(Sequence::new(steps))
    }
}

/// llama.cpp's value of `add_bos` when the GGUF has no `tokenizer.ggml.add_bos_token` key.
///
/// For byte-level BPE (`gpt2`) it is `false` except for the pre-tokenizer types that set it
/// (the Llama 3 family, `tekken`, `chameleon`); SentencePiece (`llama`) and WordPiece (`bert`)
/// vocabularies default to `true`.
pub fn llama_cpp_default_add_bos(model: &str, pre: Option<&str>) -> bool {
    match model {
        "gpt2" => {
            pre == Some("chameleon")
                || matches!(
                    PreType::from_name(pre),
                    Ok(PreType::Llama3 | PreType::Tekken)
                )
        }
        "llama" | "bert" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_pre_type_compiles() {
        for (name, _) in PRE_NAMES {
            let config = PreTokenizerConfig::for_name(Some(name)).unwrap();
            config.build().unwrap();
        }
        PreTokenizerConfig::for_name(None).unwrap().build().unwrap();
    }

    #[test]
    fn unknown_pre_type_is_named_in_the_error() {
        let err = PreTokenizerConfig::for_name(Some("not-a-tokenizer")).unwrap_err();
        assert!(matches!(
            err,
            TokenizerError::UnsupportedPreTokenizer { ref pre } if pre == "not-a-tokenizer"
        ));
        assert!(err.to_string().contains("not-a-tokenizer"));
    }

    #[test]
    fn default_add_bos_follows_llama_cpp() {
        assert!(!llama_cpp_default_add_bos("gpt2", Some("smollm")));
        assert!(!llama_cpp_default_add_bos("gpt2", Some("qwen2")));
        assert!(!llama_cpp_default_add_bos("gpt2", None));
        assert!(llama_cpp_default_add_bos("gpt2", Some("llama-bpe")));
        assert!(llama_cpp_default_add_bos("gpt2", Some("tekken")));
        assert!(llama_cpp_default_add_bos("llama", None));
    }

    #[test]
    fn every_describable_name_is_found_by_its_own_regexes() {
        for &name in DESCRIBABLE_NAMES {
            let pre_type = PreType::from_name(Some(name)).unwrap();
            let regexes: Vec<String> = pre_type.regexes().iter().map(|r| (*r).to_owned()).collect();
            assert_eq!(
                pre_name_for_regexes(&regexes, pre_type.ignore_merges()),
                Some(name)
            );
        }
        let llama3 = [LLAMA3.to_owned()];
        assert_eq!(pre_name_for_regexes(&llama3, true), Some("llama-bpe"));
        assert_eq!(pre_name_for_regexes(&llama3, false), Some("smaug-bpe"));
        let qwen2 = [QWEN2.to_owned()];
        assert_eq!(
            pre_name_for_regexes(&qwen2, true),
            Some("qwen2"),
            "only one candidate"
        );
        assert_eq!(pre_name_for_regexes(&[], false), None);
    }

    #[test]
    fn only_llama3_and_tekken_ignore_merges() {
        let ignore = |name| {
            PreTokenizerConfig::for_name(Some(name))
                .unwrap()
                .ignore_merges
        };
        assert!(ignore("llama-bpe"));
        assert!(ignore("tekken"));
        assert!(!ignore("dbrx"));
        assert!(!ignore("smollm"));
        assert!(!ignore("qwen2"));
    }
}
