//! The per-request sampler: turns one step's logits into the next token id.
//!
//! A [`Sampler`] lives as long as its request. It owns the random number generator, so a
//! seeded request replays the same tokens given the same logits, and the scratch buffers,
//! so the once-per-token path allocates nothing after the first call even for a 150k-entry
//! vocabulary. See the module header for the order of the chain.
//!
//! Cost per token on a 152k vocabulary (`sampling_cost` test, release, a shared 2-core
//! x86-64 box, so upper bounds): greedy, temperature only, or min-p ~0.4-0.5 ms (one copy,
//! one argmax, one vectorised softmax sum); top-k 40 ~0.2-0.4 ms (one-pass selection); top-p
//! 0.95 ~0.5-0.6 ms while the nucleus fits in [`NUCLEUS_TRY`] tokens; a larger nucleus falls
//! back to chunked selection over the whole vocabulary, ~4-9 ms.

use super::ValidatedSampling;
use super::exp::Softmax;
use super::filters::{self, Candidate, Penalties};
use super::rng::{self, Xoshiro256StarStar};

/// Top-k uses the one-pass [`filters::top_ranked`] while `k` is at most 1/this of the
/// vocabulary; beyond that, partial selection over the full candidate list is cheaper.
const ONE_PASS_MAX_FRACTION: usize = 8;

/// Candidates tried for a top-p nucleus without top-k before selecting over the whole
/// vocabulary; typical LLM distributions reach p = 0.95 well within it.
const NUCLEUS_TRY: usize = 512;

/// The chosen token and how likely it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    /// Vocabulary id of the token.
    pub token_id: u32,
    /// Natural log of its probability in the distribution it was drawn from: after penalties,
    /// filters and temperature when sampling; the log-softmax of the penalised logits over the
    /// whole vocabulary when greedy.
    pub logprob: f32,
}

/// Samples tokens for one request.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// What to do each step; validated once, never re-checked here.
    config: ValidatedSampling,
    /// The seed actually in use (the request's, or one drawn for it), kept so a response can
    /// report it and the run can be replayed.
    seed: u64,
    /// Draws tokens; advanced once per non-greedy step and never touched when greedy.
    rng: Xoshiro256StarStar,
    /// Scratch: the step's logits, sanitised and penalised, indexed by token id. Greedy reads
    /// its argmax and log-softmax here; a future `top_logprobs` can too.
    penalised: Vec<f32>,
    /// Scratch: the tokens still in the running after each filter, and after the softmax the
    /// final distribution (ids, logits and probabilities) the token was drawn from. Empty when
    /// neither top-k nor top-p is on: the distribution is then `penalised` itself, scaled by
    /// the temperature above the min-p floor, which a future `top_logprobs` reads directly.
    candidates: Vec<Candidate>,
    /// Scratch: the penalty window, sorted to count occurrences without hashing.
    window_sorted: Vec<u32>,
    /// Scratch: a copy of the candidates' logits for the partial selection of a large top-k.
    logits_scratch: Vec<f32>,
    /// Scratch: per-block softmax sums over `penalised`, so a draw skips to its block.
    block_sums: Vec<f64>,
}

impl Sampler {
    /// Builds a sampler, seeded from `params.seed` or, when absent, from the clock and std's
    /// random hash keys.
    pub fn new(config: ValidatedSampling) -> Self {
        let seed = config.params().seed.unwrap_or_else(rng::entropy_seed);
        Self {
            config,
            seed,
            rng: Xoshiro256StarStar::seed_from_u64(seed),
            penalised: Vec::new(),
            candidates: Vec::new(),
            window_sorted: Vec::new(),
            logits_scratch: Vec::new(),
            block_sums: Vec::new(),
        }
    }

    /// The parameters this sampler follows.
    pub fn config(&self) -> &ValidatedSampling {
        &self.config
    }

    /// The seed in use, drawn at construction when the request had none.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token from `logits` (one per vocabulary id). `history` is the prompt
    /// followed by the tokens generated so far; the penalties look at its last
    /// `penalty_last_n` ids and ignore ids outside the vocabulary.
    ///
    /// NaN logits count as -inf and +inf as the largest finite value. If every logit is -inf
    /// (or NaN) the result is token 0 with the uniform log-probability, without using the
    /// random number generator. Greedy ties go to the lowest id.
    ///
    /// # Panics
    ///
    /// If `logits` is empty or longer than `u32::MAX`: a model always has a vocabulary that
    /// token ids can address.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> SampledToken {
        assert!(!logits.is_empty(), "sampling needs at least one logit");
        assert!(
            u32::try_from(logits.len()).is_ok(),
            "vocabulary of {} does not fit u32 token ids",
            logits.len()
        );
        let params = self.config.params();

        self.penalised.clear();
        self.penalised
            .extend(logits.iter().copied().map(filters::sanitize));
        if self.config.penalties_enabled() {
            let window_len = params.penalty_last_n.min(history.len());
            let penalties = Penalties {
                repetition: params.repetition_penalty,
                presence: params.presence_penalty,
                frequency: params.frequency_penalty,
            };
            filters::apply_penalties(
                &mut self.penalised,
                &history[history.len() - window_len..],
                penalties,
                &mut self.window_sorted,
            );
        }

        let (best, best_logit) = filters::argmax(&self.penalised);
        if best_logit == f32::NEG_INFINITY {
            // No token has any mass: nothing to draw from, so fall back to a fixed choice.
            return SampledToken {
                token_id: 0,
                logprob: -(logits.len() as f32).ln(),
            };
        }
        if self.config.is_greedy() {
            let softmax = Softmax {
                shift: best_logit,
                scale: 1.0,
                floor: f32::NEG_INFINITY,
            };
            let total = softmax.sum(&self.penalised, &mut self.block_sums);
            return SampledToken {
                token_id: best as u32,
                logprob: -(total.ln() as f32),
            };
        }
        let vocab = self.penalised.len();
        let (top_k, top_p, min_p) = (params.top_k, params.top_p, params.min_p);
        let scale = 1.0 / params.temperature;
        if (top_k == 0 || top_k as usize >= vocab) && top_p >= 1.0 {
            return self.sample_min_p(best, best_logit, min_p, scale);
        }
        self.select_candidates(best_logit, top_k, top_p);
        filters::min_p(&mut self.candidates, min_p);
        let (max, log_norm) = filters::softmax(&mut self.candidates, scale);
        let chosen = filters::draw(&self.candidates, self.rng.next_f64());
        let candidate = self.candidates[chosen];
        SampledToken {
            token_id: candidate.id,
            logprob: (f64::from((candidate.logit - max) * scale) - log_norm) as f32,
        }
    }

    /// Samples straight from the penalised logits when neither top-k nor top-p is on (the
    /// OpenAI default): min-p is a floor on the logit, and block sums let the draw skip to
    /// its block, so the vocabulary is never copied or sorted. `candidates` is left empty.
    fn sample_min_p(
        &mut self,
        best: usize,
        best_logit: f32,
        min_p: f32,
        scale: f32,
    ) -> SampledToken {
        self.candidates.clear();
        let softmax = Softmax {
            shift: best_logit,
            scale,
            // p_i >= min_p * p_max  <=>  logit_i >= max + ln(min_p), as llama.cpp compares.
            floor: if min_p > 0.0 {
                best_logit + min_p.ln()
            } else {
                f32::NEG_INFINITY
            },
        };
        let total = softmax.sum(&self.penalised, &mut self.block_sums);
        let target = self.rng.next_f64() * total;
        // Rounding can leave `target` past every weight; the argmax always has mass.
        let chosen = softmax
            .draw(&self.penalised, &self.block_sums, target)
            .unwrap_or(best);
        let logit = self.penalised[chosen];
        SampledToken {
            token_id: chosen as u32,
            logprob: (f64::from((logit - best_logit) * scale) - total.ln()) as f32,
        }
    }

    /// Fills `candidates` with the tokens that survive top-k then top-p (at least one is on):
    /// sorted by [`filters::by_rank`] after a small top-k or any top-p, in id order after a
    /// large top-k alone. Either order is fixed by the logits alone, so a seed replays.
    fn select_candidates(&mut self, best_logit: f32, top_k: u32, top_p: f32) {
        let vocab = self.penalised.len();
        let k = if top_k == 0 {
            vocab
        } else {
            (top_k as usize).min(vocab)
        };
        let one_pass_limit = vocab / ONE_PASS_MAX_FRACTION;
        if k <= one_pass_limit {
            filters::top_ranked(&self.penalised, k, &mut self.candidates);
            filters::top_p(
                &mut self.candidates,
                top_p,
                true,
                filters::TOP_P_FIRST_CHUNK,
            );
            return;
        }
        let mut first_chunk = filters::TOP_P_FIRST_CHUNK;
        if k == vocab && NUCLEUS_TRY <= one_pass_limit {
            // Top-p alone: the nucleus is usually a few hundred tokens, so try a small prefix
            // against the whole vocabulary's mass before selecting over all of it.
            let softmax = Softmax {
                shift: best_logit,
                scale: 1.0,
                floor: f32::NEG_INFINITY,
            };
            let total = softmax.sum(&self.penalised, &mut self.block_sums);
            filters::top_ranked(&self.penalised, NUCLEUS_TRY, &mut self.candidates);
            if filters::top_p_prefix(&mut self.candidates, top_p, best_logit, total) {
                return;
            }
            // The nucleus is bigger: start the chunked selection past it.
            first_chunk = NUCLEUS_TRY * 4;
        }
        self.candidates.clear();
        // -inf tokens can never be drawn; dropping them now shortens every later pass.
        self.candidates.extend(
            self.penalised
                .iter()
                .enumerate()
                .filter(|(_, logit)| **logit > f32::NEG_INFINITY)
                .map(|(id, &logit)| Candidate {
                    id: id as u32,
                    logit,
                    prob: 0.0,
                }),
        );
        filters::top_k(&mut self.candidates, top_k, &mut self.logits_scratch);
        filters::top_p(&mut self.candidates, top_p, false, first_chunk);
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
