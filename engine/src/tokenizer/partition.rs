//! Cutting special tokens out of the text before BPE, as llama.cpp's
//! `tokenizer_st_partition` does.
//!
//! llama.cpp does not scan the text once for the leftmost-longest special token. It takes the
//! special tokens one at a time, longest text first, and splits every still-plain fragment at
//! each occurrence of that token (left to right, non-overlapping). Only then does each plain
//! fragment go through the pre-tokenizer and BPE on its own. With `parse_special` off, control
//! and unknown tokens are skipped but user-defined tokens are still cut out, as in Hugging
//! Face's tokenizers. This file reproduces that order exactly, because it decides the ids of
//! texts such as `"<|im_start|>"` that contain or overlap other special tokens.

use super::vocab::Attr;

/// A piece of the input after the special-token partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    /// Text still to be pre-tokenized and merged.
    Text(&'a str),
    /// A special token found in the text.
    Token(u32),
}

/// A special token as the partition sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialToken<'v> {
    pub id: u32,
    pub text: &'v str,
    pub attr: Attr,
}

/// Splits `text` into plain fragments and special tokens. `specials` must be in llama.cpp's
/// order (longest text first) and have non-empty texts.
pub(crate) fn partition<'a, 'v>(
    text: &'a str,
    specials: impl IntoIterator<Item = SpecialToken<'v>>,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut fragments = vec![Fragment::Text(text)];
    let mut next = Vec::new();
    for special in specials {
        if !parse_special && special.attr.any(Attr::HIDDEN) {
            continue;
        }
        let found = fragments.iter().any(|fragment| match fragment {
            Fragment::Text(plain) => plain.contains(special.text),
            Fragment::Token(_) => false,
        });
        if !found {
            continue;
        }
        next.clear();
        for fragment in fragments.iter().copied() {
            match fragment {
                Fragment::Text(plain) => split_at_token(plain, special, &mut next),
                Fragment::Token(_) => next.push(fragment),
            }
        }
        std::mem::swap(&mut fragments, &mut next);
    }
    fragments
}

/// Pushes `plain` cut at every occurrence of `special`, dropping empty remainders.
fn split_at_token<'a>(plain: &'a str, special: SpecialToken<'_>, out: &mut Vec<Fragment<'a>>) {
    let mut rest_start = 0;
    for (start, matched) in plain.match_indices(special.text) {
        if start > rest_start {
            out.push(Fragment::Text(&plain[rest_start..start]));
        }
        out.push(Fragment::Token(special.id));
        rest_start = start + matched.len();
    }
    if rest_start < plain.len() {
        out.push(Fragment::Text(&plain[rest_start..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::{Text, Token};

    fn special(id: u32, text: &'static str, attr: Attr) -> SpecialToken<'static> {
        SpecialToken { id, text, attr }
    }

    #[test]
    fn control_tokens_are_cut_only_with_parse_special() {
        let specials = [
            special(1, "<|im_start|>", Attr::CONTROL),
            special(2, "<|im_end|>", Attr::CONTROL),
        ];
        let text = "<|im_start|>user\nhi<|im_end|>\n";
        assert_eq!(
            partition(text, specials, true),
            vec![Token(1), Text("user\nhi"), Token(2), Text("\n")]
        );
        assert_eq!(partition(text, specials, false), vec![Text(text)]);
    }

    #[test]
    fn user_defined_tokens_are_cut_even_without_parse_special() {
        let specials = [special(7, "<tool>", Attr::USER_DEFINED)];
        assert_eq!(
            partition("a<tool>b<tool>", specials, false),
            vec![Text("a"), Token(7), Text("b"), Token(7)]
        );
    }

    #[test]
    fn longer_tokens_are_tried_first_even_when_a_shorter_one_starts_earlier() {
        // "<a><ab>": "<ab>" (longer) is taken first, then "<a>" in what is left.
        let specials = [
            special(2, "<ab>", Attr::CONTROL),
            special(1, "<a>", Attr::CONTROL),
        ];
        assert_eq!(
            partition("<a><ab>x", specials, true),
            vec![Token(1), Token(2), Text("x")]
        );
        // Overlapping matches: the longer token is cut out first and consumes the overlap.
        let specials = [
            special(3, "<ab", Attr::CONTROL),
            special(4, "b>", Attr::CONTROL),
        ];
        assert_eq!(partition("<ab>", specials, true), vec![Token(3), Text(">")]);
    }

    #[test]
    fn empty_text_has_no_fragments() {
        assert!(partition("", [special(1, "<s>", Attr::CONTROL)], true).is_empty());
    }
}
