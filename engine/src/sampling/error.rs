//! Errors raised while validating sampling parameters and stop strings.
//!
//! Every variant carries the offending parameter and the bound it broke, so the HTTP layer can
//! build an OpenAI-style message ("`temperature` must be between 0 and 2, got 3.5") without
//! parsing text. Sampling itself cannot fail once its inputs are validated.

use thiserror::Error;

/// A sampling parameter or stop string that the engine refuses.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingError {
    /// A numeric parameter outside a closed interval (NaN always lands here).
    #[error("`{param}` must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The request field, as the client spells it.
        param: &'static str,
        /// Smallest accepted value (inclusive).
        min: f32,
        /// Largest accepted value (inclusive).
        max: f32,
        /// The value the client sent.
        got: f32,
    },
    /// A numeric parameter outside a half-open interval `(min, max]` (NaN always lands here).
    #[error("`{param}` must be greater than {min} and at most {max}, got {got}")]
    OutOfRangeExclusiveMin {
        /// The request field, as the client spells it.
        param: &'static str,
        /// The value must be strictly greater than this.
        min: f32,
        /// Largest accepted value (inclusive).
        max: f32,
        /// The value the client sent.
        got: f32,
    },
    /// More stop strings than [`super::MAX_STOPS`].
    #[error("`stop` accepts at most {max} strings, got {got}")]
    TooManyStops {
        /// The limit, [`super::MAX_STOPS`].
        max: usize,
        /// How many the client sent.
        got: usize,
    },
    /// An empty stop string, which would match before any text.
    #[error("`stop[{index}]` must not be empty")]
    EmptyStop {
        /// Position of the empty string in the client's list.
        index: usize,
    },
    /// A stop string longer than [`super::MAX_STOP_LEN_BYTES`].
    #[error("`stop[{index}]` must be at most {max_bytes} bytes long, got {got_bytes}")]
    StopTooLong {
        /// Position of the long string in the client's list.
        index: usize,
        /// The limit, [`super::MAX_STOP_LEN_BYTES`].
        max_bytes: usize,
        /// Its length in UTF-8 bytes.
        got_bytes: usize,
    },
}
