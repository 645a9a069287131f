//! Token sampling and stop strings: the last step of each decode iteration.
//!
//! The forward pass produces one logit per vocabulary entry; this module turns those logits
//! into the next token id (and its log-probability), and turns the decoded text stream into
//! what a client may see, holding back text that could still become a stop string.
//!
//! Raw request fields arrive as [`SamplingParams`] and are checked once by
//! [`SamplingParams::validate`] into a [`ValidatedSampling`]; the [`Sampler`] only accepts the
//! validated type and never re-checks. Stop strings are validated by [`StopStrings::new`].
//!
//! The filter chain follows llama.cpp's common sampler: penalties -> top-k -> top-p -> min-p
//! -> temperature -> softmax -> draw. A temperature of 0 (below [`MIN_SAMPLING_TEMPERATURE`])
//! is greedy argmax over the penalised logits and never touches the random number generator.

mod error;
mod exp;
mod filters;
mod params;
mod rng;
mod sampler;
mod stop;

pub use error::SamplingError;
pub use params::{
    DEFAULT_PENALTY_LAST_N, MAX_REPETITION_PENALTY, MIN_SAMPLING_TEMPERATURE, SamplingParams,
    ValidatedSampling,
};
pub use rng::{SplitMix64, Xoshiro256StarStar};
pub use sampler::{SampledToken, Sampler};
pub use stop::{MAX_STOP_LEN_BYTES, MAX_STOPS, StopOutput, StopStrings};
