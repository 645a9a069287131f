//! What each token is and stands for: attributes, end-of-generation set, special-token
//! order and rendered bytes, derived from the GGUF token types the way llama.cpp does.
//!
//! llama.cpp does not trust the token types alone. In `llama_vocab::impl::load` it also
//! recognizes tokens by their text: the FIM and end-of-turn tokens become control tokens, a
//! fixed list of texts (`<|im_end|>`, `<|endoftext|>`, ...) plus the FIM pad/repo/separator
//! tokens form the end-of-generation set, and a few model-specific fixes follow. This file
//! reproduces that, so that SmolLM2's `<reponame>` (detected as the FIM repo token) is an
//! end-of-generation token exactly as it is in llama.cpp.

use std::collections::BTreeSet;

use super::pieces::render_piece;

/// A token's attributes: llama.cpp's `llama_token_attr` bits (only those this module uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr(u16);

impl Attr {
    pub const UNDEFINED: Attr = Attr(0);
    pub const UNKNOWN: Attr = Attr(1 << 0);
    pub const UNUSED: Attr = Attr(1 << 1);
    pub const NORMAL: Attr = Attr(1 << 2);
    pub const CONTROL: Attr = Attr(1 << 3);
    pub const USER_DEFINED: Attr = Attr(1 << 4);
    pub const BYTE: Attr = Attr(1 << 5);

    /// The attribute of a GGUF `tokenizer.ggml.token_type` value.
    fn from_token_type(token_type: i32) -> Attr {
        match token_type {
            1 => Attr::NORMAL,
            2 => Attr::UNKNOWN,
            3 => Attr::CONTROL,
            4 => Attr::USER_DEFINED,
            5 => Attr::UNUSED,
            6 => Attr::BYTE,
            _ => Attr::UNDEFINED,
        }
    }

    /// Tokens whose text is hidden in normal output (llama.cpp `token_to_piece`, special=false).
    pub const HIDDEN: Attr = Attr::UNKNOWN.union(Attr::CONTROL);
    /// Tokens that render as their raw text, and that the special-token partition matches.
    pub const SPECIAL: Attr = Attr::HIDDEN.union(Attr::USER_DEFINED);

    /// Whether any bit of `mask` is set.
    pub fn any(self, mask: Attr) -> bool {
        self.0 & mask.0 != 0
    }

    const fn union(self, other: Attr) -> Attr {
        Attr(self.0 | other.0)
    }
}

/// Texts llama.cpp takes for the end-of-turn token when the GGUF names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Texts that end generation wherever they appear in a vocabulary.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// gpt-oss tokens llama.cpp always renders, whatever their type.
const ALWAYS_RENDERED_TEXTS: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The special-token ids of the spec that take part in the end-of-generation set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EogSources {
    pub eos_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub eom_id: Option<u32>,
}

/// Everything about the tokens besides the BPE merges.
#[derive(Debug)]
pub(crate) struct VocabInfo {
    /// Attributes after llama.cpp's text-based fixes; index = token id.
    pub attrs: Vec<Attr>,
    /// End-of-generation ids, ascending.
    pub eog_ids: Vec<u32>,
    /// End-of-turn token: the spec's, else the first token with a known end-of-turn text.
    pub eot_id: Option<u32>,
    /// End-of-message token: the spec's, else `<|eom_id|>` if present.
    pub eom_id: Option<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which the
    /// special-token partition tries them.
    pub special_order: Vec<u32>,
    /// All rendered pieces back to back; piece `i` ends at `piece_ends[i]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
}

impl VocabInfo {
    /// Derives the attributes, EOG set, partition order and pieces. `texts` are the token
    /// strings, `token_types` their GGUF types (empty when absent: all normal), `lookup` finds
    /// a token id by its text.
    pub fn new(
        texts: &[String],
        token_types: &[i32],
        eog_sources: EogSources,
        lookup: impl Fn(&str) -> Option<u32>,
    ) -> VocabInfo {
        let mut attrs: Vec<Attr> = if token_types.is_empty() {
            vec![Attr::NORMAL; texts.len()]
        } else {
            token_types
                .iter()
                .map(|&t| Attr::from_token_type(t))
                .collect()
        };
        // llama.cpp visits tokens in hash-map order and keeps the first match; the lowest id
        // is the deterministic stand-in.
        let detect = |candidates: &[&str]| candidates.iter().filter_map(|t| lookup(t)).min();
        let eot_id = match eog_sources.eot_id {
            Some(id) => Some(id),
            None => detect(EOT_TEXTS).inspect(|&id| make_control(&mut attrs, id)),
        };
        let eom_id = match eog_sources.eom_id {
            Some(id) => Some(id),
            None => detect(EOM_TEXTS).inspect(|&id| make_control(&mut attrs, id)),
        };
        let mut eog = BTreeSet::new();
        for (texts_of_kind, ends_generation) in [
            (FIM_PRE_TEXTS, false),
            (FIM_SUF_TEXTS, false),
            (FIM_MID_TEXTS, false),
            (FIM_PAD_TEXTS, true),
            (FIM_REP_TEXTS, true),
            (FIM_SEP_TEXTS, true),
        ] {
            if let Some(id) = detect(texts_of_kind) {
                make_control(&mut attrs, id);
                if ends_generation {
                    eog.insert(id);
                }
            }
        }
        for text in EOG_TEXTS {
            if let Some(id) = lookup(text) {
                eog.insert(id);
                make_control(&mut attrs, id);
            }
        }
        for text in ALWAYS_RENDERED_TEXTS {
            if let Some(id) = lookup(text) {
                attrs[id as usize] = Attr::USER_DEFINED;
            }
        }
        eog.extend([eog_sources.eos_id, eot_id, eom_id].into_iter().flatten());
        apply_eog_workarounds(texts, &mut attrs, &mut eog);

        let mut special_order: Vec<u32> = (0..texts.len())
            .filter(|&i| attrs[i].any(Attr::SPECIAL))
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        // Stable, so equally long tokens keep id order (llama.cpp's std::sort leaves it open).
        special_order.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

        let mut piece_bytes = Vec::with_capacity(texts.iter().map(String::len).sum());
        let mut piece_ends = Vec::with_capacity(texts.len());
        for (text, &attr) in texts.iter().zip(&attrs) {
            render_piece(text, attr, &mut piece_bytes);
            piece_ends.push(piece_bytes.len());
        }
        VocabInfo {
            attrs,
            eog_ids: eog.into_iter().collect(),
            eot_id,
            eom_id,
            special_order,
            piece_bytes,
            piece_ends,
        }
    }

    /// The bytes token `id` stands for, as llama.cpp's `token_to_piece`: control and unknown
    /// tokens are empty unless `render_special`. `None` when `id` is out of range.
    pub fn piece(&self, id: u32, render_special: bool) -> Option<&[u8]> {
        let index = id as usize;
        let attr = *self.attrs.get(index)?;
        if !render_special && attr.any(Attr::HIDDEN) {
            return Some(&[]);
        }
        let start = match index {
            0 => 0,
            _ => self.piece_ends[index - 1],
        };
        self.piece_bytes.get(start..self.piece_ends[index])
    }
}

/// Adds the control bit (llama.cpp: "control-looking token ... its type will be overridden").
fn make_control(attrs: &mut [Attr], id: u32) {
    attrs[id as usize] = attrs[id as usize].union(Attr::CONTROL);
}

/// llama.cpp's fixes for vocabularies where a listed EOG text is not one: `<|end|>` of
/// gpt-oss / solar-open, `</s>` of gemma4 / paddleocr.
fn apply_eog_workarounds(texts: &[String], attrs: &mut [Attr], eog: &mut BTreeSet<u32>) {
    let find = |eog: &BTreeSet<u32>, text: &str| {
        eog.iter().copied().find(|&id| texts[id as usize] == text)
    };
    let has = |eog: &BTreeSet<u32>, text: &str| find(eog, text).is_some();
    if let Some(end_id) = find(eog, "<|end|>") {
        let has_call = has(eog, "<|call|>") || has(eog, "<|calls|>");
        if has_call && (has(eog, "<|return|>") || has(eog, "<|flush|>")) {
            eog.remove(&end_id);
            attrs[end_id as usize] = Attr::USER_DEFINED;
        }
    }
    if has(eog, "<|tool_response>")
        && let Some(s_id) = find(eog, "</s>")
    {
        eog.remove(&s_id);
        attrs[s_id as usize] = Attr::NORMAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_for(texts: &[&str], types: &[i32], sources: EogSources) -> VocabInfo {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        let lookup = |t: &str| texts.iter().position(|x| x == t).map(|i| i as u32);
        VocabInfo::new(&texts, types, sources, lookup)
    }

    const NO_SOURCES: EogSources = EogSources {
        eos_id: None,
        eot_id: None,
        eom_id: None,
    };

    #[test]
    fn eog_texts_become_control_and_fim_repo_ends_generation() {
        // <|im_end|> is typed normal here; llama.cpp overrides it to control.
        let info = info_for(
            &["a", "<|im_end|>", "<reponame>", "<fim_prefix>"],
            &[1, 1, 3, 1],
            NO_SOURCES,
        );
        assert_eq!(info.eog_ids, vec![1, 2]);
        assert!(info.attrs[1].any(Attr::CONTROL));
        assert!(
            info.attrs[3].any(Attr::CONTROL),
            "FIM prefix is control but not EOG"
        );
        assert_eq!(info.piece(1, false), Some(&b""[..]));
        assert_eq!(info.piece(1, true), Some(&b"<|im_end|>"[..]));
    }

    #[test]
    fn gpt_oss_end_is_not_eog_when_return_and_call_exist() {
        let info = info_for(
            &["<|end|>", "<|return|>", "<|call|>", "<|channel|>"],
            &[3, 3, 3, 3],
            NO_SOURCES,
        );
        assert_eq!(info.eog_ids, vec![1, 2]);
        assert_eq!(info.attrs[0], Attr::USER_DEFINED);
        assert_eq!(info.attrs[3], Attr::USER_DEFINED);
        assert_eq!(
            info.piece(3, false),
            Some(&b"<|channel|>"[..]),
            "always rendered"
        );
    }

    #[test]
    fn explicit_eos_joins_eog_and_special_order_is_longest_first() {
        let sources = EogSources {
            eos_id: Some(0),
            eot_id: None,
            eom_id: None,
        };
        let info = info_for(
            &["<x>", "b", "<long>", "<yy>", "<zz>"],
            &[3, 1, 4, 3, 2],
            sources,
        );
        assert_eq!(info.eog_ids, vec![0]);
        assert_eq!(info.special_order, vec![2, 3, 4, 0]);
    }

    #[test]
    fn pieces_follow_token_types() {
        let info = info_for(&["Ġhi", "<0x41>", "unused", "Ċ"], &[1, 6, 5, 0], NO_SOURCES);
        assert_eq!(info.piece(0, false), Some(&b" hi"[..]));
        assert_eq!(info.piece(1, false), Some(&b"A"[..]));
        assert_eq!(info.piece(2, true), Some(&b""[..]));
        assert_eq!(
            info.piece(3, true),
            Some(&b""[..]),
            "undefined type renders nothing"
        );
        assert_eq!(info.piece(4, true), None);
    }
}
