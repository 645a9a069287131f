//! The individual steps of the sampling chain, as functions on reusable buffers.
//!
//! Kept apart from [`super::Sampler`] so each step can be tested on small hand-made logit
//! vectors. Semantics follow llama.cpp's `src/llama-sampling.cpp`: penalties CTRL-style plus
//! OpenAI presence/frequency, top-p keeps the token that crosses the threshold, min-p is
//! relative to the most likely token, and every filter keeps at least one token. No function
//! here allocates once its buffers have grown to the vocabulary size.

use std::cmp::Ordering;

use super::exp;

/// One token still in the running, with its (penalised, filtered) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate {
    /// Vocabulary id; positions in the buffer stop matching ids once a filter has run.
    pub(super) id: u32,
    /// Penalised logit, never NaN (see [`sanitize`]).
    pub(super) logit: f32,
    /// Probability in the final distribution, written by [`softmax`]; kept so a future
    /// `top_logprobs` can read the distribution the token was drawn from.
    pub(super) prob: f32,
}

/// First size tried by the incremental top-p sort when nothing is known about the nucleus;
/// grown 4x per round. Typical LLM distributions reach p = 0.95 within a few hundred tokens.
pub(super) const TOP_P_FIRST_CHUNK: usize = 64;

/// Maps logits the model should never produce onto values the chain handles without NaN:
/// NaN becomes -inf (never chosen) and +inf the largest finite value (chosen over the rest,
/// tied +inf logits share the mass).
pub(super) fn sanitize(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit.min(f32::MAX)
    }
}

/// Descending logit, ties broken by ascending id: a strict total order, so selection and
/// sorting give the same result on every run and every std version.
pub(super) fn by_rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Index and value of the largest logit, lowest index on ties (index 0 when all are -inf).
pub(super) fn argmax(logits: &[f32]) -> (usize, f32) {
    let mut best = 0;
    let mut best_logit = f32::NEG_INFINITY;
    for (index, &logit) in logits.iter().enumerate() {
        if logit > best_logit {
            best = index;
            best_logit = logit;
        }
    }
    (best, best_logit)
}

/// The penalty strengths, copied out of the validated parameters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Penalties {
    /// Divides positive logits and multiplies negative ones (CTRL / llama.cpp).
    pub(super) repetition: f32,
    /// Subtracted once from every token present in the window.
    pub(super) presence: f32,
    /// Subtracted once per occurrence in the window.
    pub(super) frequency: f32,
}

/// Applies the penalties to every token that occurs in `window`, in place. Ids outside the
/// vocabulary are skipped. `scratch` is reused to count occurrences by sorting, which avoids
/// hashing and allocation.
pub(super) fn apply_penalties(
    logits: &mut [f32],
    window: &[u32],
    penalties: Penalties,
    scratch: &mut Vec<u32>,
) {
    scratch.clear();
    scratch.extend_from_slice(window);
    scratch.sort_unstable();
    for run in scratch.chunk_by(|a, b| a == b) {
        let Some(logit) = logits.get_mut(run[0] as usize) else {
            continue;
        };
        // Dividing a negative logit would make the token *more* likely; llama.cpp multiplies.
        if *logit <= 0.0 {
            *logit *= penalties.repetition;
        } else {
            *logit /= penalties.repetition;
        }
        let count = run.len() as f32;
        *logit -= count * penalties.frequency + penalties.presence;
    }
}

/// Writes the `m` best tokens of `logits` (indexed by id) into `out`, sorted by [`by_rank`];
/// fewer when fewer than `m` are finite, since -inf tokens are never candidates.
///
/// One pass without first copying the vocabulary into [`Candidate`]s (which costs as much as
/// a selection over it): tokens above a running threshold are buffered, and whenever the
/// buffer reaches `2m` it is cut back to its best `m` by partial selection, raising the
/// threshold. Almost every logit is rejected by one comparison, and even logits ascending by
/// id cost O(vocab) in total. `out` grows to `2m` once and is reused.
pub(super) fn top_ranked(logits: &[f32], m: usize, out: &mut Vec<Candidate>) {
    out.clear();
    if m == 0 {
        return;
    }
    // The m-th best logit after the last cut. Ids arrive in ascending order, so a later
    // logit equal to it ranks below all m kept ones and is rejected too; -inf never gets in.
    let mut threshold = f32::NEG_INFINITY;
    for (id, &logit) in logits.iter().enumerate() {
        if logit <= threshold {
            continue;
        }
        out.push(Candidate {
            id: id as u32,
            logit,
            prob: 0.0,
        });
        if out.len() == 2 * m {
            out.select_nth_unstable_by(m - 1, by_rank);
            out.truncate(m);
            threshold = out[m - 1].logit;
        }
    }
    if out.len() > m {
        out.select_nth_unstable_by(m - 1, by_rank);
        out.truncate(m);
    }
    out.sort_unstable_by(by_rank);
}

/// Truncates `sorted` (in [`by_rank`] order) to the top-p nucleus when its probability mass
/// reaches `p` of `total` (the sum of `exp(logit - max)` over every candidate, `sorted` being
/// a prefix of them). Returns false, leaving `sorted` as it was, when it does not.
pub(super) fn top_p_prefix(sorted: &mut Vec<Candidate>, p: f32, max: f32, total: f64) -> bool {
    let target = f64::from(p) * total;
    let mut cumulative = 0.0;
    for index in 0..sorted.len() {
        cumulative += f64::from(exp::exp(sorted[index].logit - max));
        if cumulative >= target {
            sorted.truncate(index + 1);
            return true;
        }
    }
    false
}

/// Keeps the `k` best candidates (0 = off) in their current order, ties at the cut going to
/// the earlier candidate (the lower id when in id order). Partial selection on a copy of the
/// logits finds the k-th largest in O(vocab); [`top_ranked`] is cheaper when `k` is small.
pub(super) fn top_k(candidates: &mut Vec<Candidate>, k: u32, logits_scratch: &mut Vec<f32>) {
    let k = k as usize;
    if k == 0 || k >= candidates.len() {
        return;
    }
    logits_scratch.clear();
    logits_scratch.extend(candidates.iter().map(|c| c.logit));
    let (better, &mut threshold, _) =
        logits_scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let above = better
        .iter()
        .filter(|logit| logit.total_cmp(&threshold) == Ordering::Greater)
        .count();
    let mut ties_left = k - above;
    candidates.retain(|c| match c.logit.total_cmp(&threshold) {
        Ordering::Greater => true,
        Ordering::Equal if ties_left > 0 => {
            ties_left -= 1;
            true
        }
        _ => false,
    });
}

/// Keeps the smallest [`by_rank`] prefix whose temperature-1 probability reaches `p`
/// (1 = off), including the token that crosses it; the survivors end up sorted.
///
/// Sorting the whole vocabulary each token is wasteful when the nucleus is a few hundred
/// tokens, so it selects and sorts growing chunks (from `first_chunk`, 4x per round) until the
/// mass is reached. `sorted` says the input is already in [`by_rank`] order, which skips the
/// selection.
pub(super) fn top_p(candidates: &mut Vec<Candidate>, p: f32, sorted: bool, first_chunk: usize) {
    if p >= 1.0 || candidates.len() <= 1 {
        return;
    }
    let max = max_logit(candidates);
    let total: f64 = candidates
        .iter()
        .map(|c| f64::from(exp::exp(c.logit - max)))
        .sum();
    let target = f64::from(p) * total;
    let len = candidates.len();
    let mut sorted_len: usize = 0;
    let mut chunk = if sorted { len } else { first_chunk.max(1) };
    let mut cumulative = 0.0;
    loop {
        let end = sorted_len.saturating_add(chunk).min(len);
        if !sorted {
            let rest = &mut candidates[sorted_len..];
            if end < len {
                rest.select_nth_unstable_by(end - sorted_len - 1, by_rank);
            }
            candidates[sorted_len..end].sort_unstable_by(by_rank);
        }
        for index in sorted_len..end {
            cumulative += f64::from(exp::exp(candidates[index].logit - max));
            if cumulative >= target {
                candidates.truncate(index + 1);
                return;
            }
        }
        if end == len {
            // Rounding kept the sum just under `target`: keep everything, as llama.cpp does.
            return;
        }
        sorted_len = end;
        chunk = chunk.saturating_mul(4);
    }
}

/// Drops candidates whose probability is below `p` times the best one's (0 = off), i.e. whose
/// logit is below `max + ln p`. Order is preserved; the best candidate always survives.
pub(super) fn min_p(candidates: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || candidates.is_empty() {
        return;
    }
    let threshold = max_logit(candidates) + p.ln();
    candidates.retain(|c| c.logit >= threshold);
}

/// Writes each candidate's probability with logits multiplied by `scale` (1 / temperature)
/// and returns the max logit and the log of the normaliser, so
/// `logprob = (logit - max) * scale - log_norm`. Subtracting the max first keeps large scales
/// from overflowing.
pub(super) fn softmax(candidates: &mut [Candidate], scale: f32) -> (f32, f64) {
    let max = max_logit(candidates);
    let mut total = 0.0f64;
    for candidate in candidates.iter_mut() {
        candidate.prob = exp::exp((candidate.logit - max) * scale);
        total += f64::from(candidate.prob);
    }
    for candidate in candidates.iter_mut() {
        candidate.prob = (f64::from(candidate.prob) / total) as f32;
    }
    (max, total.ln())
}

/// Picks the candidate whose cumulative probability first exceeds `u` in `[0, 1)`. Rounding
/// can leave the total just under `u`; the last candidate with mass is the fallback.
pub(super) fn draw(candidates: &[Candidate], u: f64) -> usize {
    let mut cumulative = 0.0f64;
    let mut last_with_mass = 0;
    for (index, candidate) in candidates.iter().enumerate() {
        if candidate.prob > 0.0 {
            cumulative += f64::from(candidate.prob);
            last_with_mass = index;
            if u < cumulative {
                return index;
            }
        }
    }
    last_with_mass
}

/// Largest logit among the candidates (-inf for none).
fn max_logit(candidates: &[Candidate]) -> f32 {
    candidates
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;
