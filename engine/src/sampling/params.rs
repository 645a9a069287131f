//! Sampling parameters as a request sends them, and their validated form.
//!
//! [`SamplingParams`] is plain data that (de)serialises from a request; it may hold anything.
//! [`SamplingParams::validate`] checks the OpenAI bounds once and wraps the result in
//! [`ValidatedSampling`], the only type the [`super::Sampler`] accepts, so the per-token code
//! never re-checks raw input.

use serde::{Deserialize, Serialize};

use super::SamplingError;

/// How many recent tokens the penalties look at when a request does not say: llama.cpp's
/// `repeat_last_n` default.
pub const DEFAULT_PENALTY_LAST_N: usize = 64;

/// Temperatures below this (0 included) decode greedily. The distribution is then all but
/// an argmax anyway, and it keeps 1 / temperature finite; vLLM uses the same cut.
pub const MIN_SAMPLING_TEMPERATURE: f32 = 1e-5;

/// Largest accepted `repetition_penalty`. Neither OpenAI nor llama.cpp bounds it; past 10 a
/// repeated token is already all but forbidden, so larger values only signal a client bug.
pub const MAX_REPETITION_PENALTY: f32 = 10.0;

/// Sampling settings for one request, unvalidated. `Default` is greedy decoding with every
/// filter and penalty off; missing fields deserialise to those defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature, 0..=2; 0 (or anything below [`MIN_SAMPLING_TEMPERATURE`]) means
    /// greedy argmax, with no randomness.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns the filter off.
    pub top_k: u32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability sums
    /// to at least `top_p`; in (0, 1], 1 turns the filter off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely token's; in
    /// 0..=1, 0 turns the filter off.
    pub min_p: f32,
    /// CTRL / llama.cpp repetition penalty for tokens seen in the last `penalty_last_n`:
    /// positive logits are divided by it, negative ones multiplied; 1 turns it off.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty, -2..=2: subtracted once from any token seen in the window.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty, -2..=2: subtracted once per occurrence in the window.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens (prompt included) the penalties look at; 0 turns
    /// the penalties off. Defaults to [`DEFAULT_PENALTY_LAST_N`]. Unbounded: the history it
    /// windows is itself bounded by the context length.
    pub penalty_last_n: usize,
    /// Seed for the random draws; `None` seeds from the clock and std's random hash keys.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: DEFAULT_PENALTY_LAST_N,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Checks every field against its bound (NaN is always rejected) and returns the first
    /// violation in field order.
    pub fn validate(&self) -> Result<ValidatedSampling, SamplingError> {
        closed("temperature", self.temperature, 0.0, 2.0)?;
        open_closed("top_p", self.top_p, 0.0, 1.0)?;
        closed("min_p", self.min_p, 0.0, 1.0)?;
        open_closed(
            "repetition_penalty",
            self.repetition_penalty,
            0.0,
            MAX_REPETITION_PENALTY,
        )?;
        closed("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        closed("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        Ok(ValidatedSampling {
            params: self.clone(),
        })
    }
}

/// Rejects `got` outside `[min, max]`; NaN fails both comparisons and is rejected too.
fn closed(param: &'static str, got: f32, min: f32, max: f32) -> Result<(), SamplingError> {
    if got >= min && got <= max {
        Ok(())
    } else {
        Err(SamplingError::OutOfRange {
            param,
            min,
            max,
            got,
        })
    }
}

/// Rejects `got` outside `(min, max]`; NaN is rejected too.
fn open_closed(param: &'static str, got: f32, min: f32, max: f32) -> Result<(), SamplingError> {
    if got > min && got <= max {
        Ok(())
    } else {
        Err(SamplingError::OutOfRangeExclusiveMin {
            param,
            min,
            max,
            got,
        })
    }
}

/// Sampling parameters that passed [`SamplingParams::validate`]; the only way to build a
/// [`super::Sampler`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedSampling {
    /// The checked values; private so nothing can change them after validation.
    params: SamplingParams,
}

impl ValidatedSampling {
    /// The validated values, for logging or echoing back to the client.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Whether decoding is greedy argmax (temperature below [`MIN_SAMPLING_TEMPERATURE`]),
    /// which ignores the filters and the random number generator.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature < MIN_SAMPLING_TEMPERATURE
    }

    /// Whether any penalty would change a logit, so the sampler can skip counting history.
    pub(super) fn penalties_enabled(&self) -> bool {
        let p = &self.params;
        p.penalty_last_n > 0
            && (p.repetition_penalty != 1.0
                || p.presence_penalty != 0.0
                || p.frequency_penalty != 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut SamplingParams)) -> Result<ValidatedSampling, SamplingError> {
        let mut params = SamplingParams::default();
        edit(&mut params);
        params.validate()
    }

    #[test]
    fn default_is_greedy_and_valid() {
        let validated = SamplingParams::default().validate().unwrap();
        assert!(validated.is_greedy());
        assert!(!validated.penalties_enabled());
        assert_eq!(validated.params().penalty_last_n, DEFAULT_PENALTY_LAST_N);
    }

    #[test]
    fn message_states_the_bound() {
        let err = with(|p| p.temperature = 3.5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`temperature` must be between 0 and 2, got 3.5"
        );
        let err = with(|p| p.top_p = 0.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`top_p` must be greater than 0 and at most 1, got 0"
        );
    }

    #[test]
    fn structured_fields() {
        let err = with(|p| p.presence_penalty = -2.5).unwrap_err();
        assert_eq!(
            err,
            SamplingError::OutOfRange {
                param: "presence_penalty",
                min: -2.0,
                max: 2.0,
                got: -2.5
            }
        );
    }

    #[test]
    fn bounds_are_inclusive_where_openai_says_so() {
        assert!(with(|p| p.temperature = 2.0).is_ok());
        assert!(with(|p| p.top_p = 1.0).is_ok());
        assert!(with(|p| p.top_p = 1e-6).is_ok());
        assert!(with(|p| p.min_p = 1.0).is_ok());
        assert!(with(|p| p.frequency_penalty = -2.0).is_ok());
        assert!(with(|p| p.repetition_penalty = MAX_REPETITION_PENALTY).is_ok());
        assert!(with(|p| p.top_k = u32::MAX).is_ok());
        assert!(with(|p| p.penalty_last_n = usize::MAX).is_ok());
    }

    #[test]
    fn rejects_out_of_range_and_nan() {
        type Edit = fn(&mut SamplingParams);
        let bad: [(&str, Edit); 12] = [
            ("temperature", |p| p.temperature = -0.1),
            ("temperature", |p| p.temperature = f32::NAN),
            ("temperature", |p| p.temperature = f32::INFINITY),
            ("top_p", |p| p.top_p = 1.01),
            ("top_p", |p| p.top_p = f32::NAN),
            ("min_p", |p| p.min_p = -0.01),
            ("min_p", |p| p.min_p = f32::NAN),
            ("repetition_penalty", |p| p.repetition_penalty = 0.0),
            ("repetition_penalty", |p| p.repetition_penalty = 10.5),
            ("repetition_penalty", |p| p.repetition_penalty = f32::NAN),
            ("presence_penalty", |p| p.presence_penalty = f32::NAN),
            ("frequency_penalty", |p| p.frequency_penalty = 2.01),
        ];
        for (param, edit) in bad {
            let err = with(edit).unwrap_err();
            let got_param = match err {
                SamplingError::OutOfRange { param, .. }
                | SamplingError::OutOfRangeExclusiveMin { param, .. } => param,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got_param, param);
        }
    }

    #[test]
    fn penalties_enabled_needs_a_window_and_a_penalty() {
        assert!(
            with(|p| p.presence_penalty = 0.5)
                .unwrap()
                .penalties_enabled()
        );
        assert!(
            !with(|p| {
                p.presence_penalty = 0.5;
                p.penalty_last_n = 0;
            })
            .unwrap()
            .penalties_enabled()
        );
        assert!(
            with(|p| p.repetition_penalty = 1.1)
                .unwrap()
                .penalties_enabled()
        );
    }
}
