//! Prompt-lookup drafts for speculative decoding: answers that copy from their prompt
//! (extraction, quoting, code edits, summaries that reuse names) repeat spans already in
//! the sequence. The draft is what followed the latest earlier occurrence of the last 4
//! (else 3) tokens; one forward pass then runs the last token and the draft together, and every
//! draft token the model would have chosen itself is kept ([`super::Sequence::on_verified`]).
//!
//! Exactness: each row of that pass is computed as a decode step computes it (the
//! single-token attention order, the same products per row), and the tokens are sampled
//! from those rows one by one with the same sampler state, so the output is the output
//! without speculation, bit for bit, greedy or seeded.

/// The most draft tokens one step verifies.
pub const MAX_DRAFT: usize = 16;
/// The longest and shortest n-gram looked up, longest first.
/// (Measured on SmolLM2, `scripts/bench-lookup`: with 2-grams too, free writing lost 10%
/// to drafts not taken, against 4% with 3-grams, and extraction gained less.)
const NGRAM_MAX: usize = 4;
const NGRAM_MIN: usize = 3;

/// Fills `out` with at most `n` tokens that followed the latest earlier occurrence of the
/// last `NGRAM_MAX` (down to `NGRAM_MIN`) tokens of `history`; empty when there is none.
pub fn draft(history: &[u32], n: usize, out: &mut Vec<u32>) {
    out.clear();
    if n == 0 {
        return;
    }
    let len = history.len();
    for g in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if len <= g {
            continue;
        }
        let tail = &history[len - g..];
        // Latest first; the occurrence must leave at least one token after it.
        let found = (0..len - g).rev().find(|&i| &history[i..i + g] == tail);
        if let Some(i) = found {
            let from = i + g;
            out.extend_from_slice(&history[from..(from + n).min(len)]);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(history: &[u32], n: usize) -> Vec<u32> {
        let mut out = vec![99];
        draft(history, n, &mut out);
        out
    }

    #[test]
    fn copies_what_followed_the_latest_occurrence() {
        // "1 2 3 4 5 ... 1 2 3" -> "4 5 6"
        assert_eq!(d(&[1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 3), vec![4, 5, 6]);
        // The latest of two occurrences wins.
        assert_eq!(d(&[1, 2, 3, 8, 9, 1, 2, 3, 4, 5, 1, 2, 3], 2), vec![4, 5]);
        // The draft stops at the end of the history.
        assert_eq!(d(&[5, 6, 7, 8, 5, 6, 7], 5), vec![8, 5, 6, 7]);
        // A repeating pattern continues itself.
        assert_eq!(d(&[1, 2, 1, 2, 1, 2], 4), vec![1, 2]);
        // A 4-gram match wins over a later 3-gram one.
        assert_eq!(
            d(&[1, 2, 3, 4, 5, 7, 2, 3, 4, 6, 1, 2, 3, 4], 2),
            vec![5, 7]
        );
    }

    #[test]
    fn falls_back_to_3_grams_and_gives_nothing_without_a_match() {
        // No earlier "4 1 2 3", but "1 2 3" -> 9.
        assert_eq!(d(&[7, 1, 2, 3, 9, 4, 1, 2, 3], 2), vec![9, 4]);
        // Two repeated tokens are not enough.
        assert_eq!(d(&[1, 2, 3, 4, 1, 2], 3), Vec::<u32>::new());
        assert_eq!(d(&[1, 2, 3], 3), Vec::<u32>::new());
        assert_eq!(d(&[], 3), Vec::<u32>::new());
        assert_eq!(d(&[1, 2, 3, 1, 2, 3], 0), Vec::<u32>::new());
    }
}
