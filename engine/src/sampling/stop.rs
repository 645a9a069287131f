//! Stop strings over a stream of decoded text.
//!
//! Generation stops when the text contains one of the request's stop strings; as in the
//! OpenAI API, the stop string itself and everything after it are never sent. Text arrives a
//! token at a time, so the tail that could still grow into a stop string is held back until
//! it either completes one (and is dropped) or cannot anymore (and is released): a streaming
//! client never sees part of a stop string. Everything works on `&str` boundaries, so
//! multi-byte characters are never split.

use super::SamplingError;

/// Most stop strings a request may send (the OpenAI limit).
pub const MAX_STOPS: usize = 4;

/// Longest stop string accepted, in UTF-8 bytes. It bounds the text held back and the work per
/// push; real stop strings are a few words at most.
pub const MAX_STOP_LEN_BYTES: usize = 256;

/// What a [`StopStrings::push`] releases to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that can no longer be part of a stop string; may be empty.
    pub emit: String,
    /// A stop string matched: generation should end, and `emit` is the last text.
    pub stopped: bool,
}

/// Matches stop strings against streamed text, holding back what may still match.
#[derive(Debug, Clone)]
pub struct StopStrings {
    /// The stop strings: non-empty, at most [`MAX_STOPS`], each at most
    /// [`MAX_STOP_LEN_BYTES`].
    stops: Vec<String>,
    /// Received but not yet emitted text: the longest tail that is a proper prefix of some
    /// stop string (between pushes it never contains a whole one).
    pending: String,
    /// Length in bytes of the longest stop string, which bounds how much tail can be held.
    longest_stop_bytes: usize,
    /// A stop string matched; later text is dropped.
    stopped: bool,
}

impl StopStrings {
    /// Validates `stops` (at most [`MAX_STOPS`], none empty, none longer than
    /// [`MAX_STOP_LEN_BYTES`]). An empty list is valid and never stops.
    pub fn new(stops: Vec<String>) -> Result<Self, SamplingError> {
        if stops.len() > MAX_STOPS {
            return Err(SamplingError::TooManyStops {
                max: MAX_STOPS,
                got: stops.len(),
            });
        }
        for (index, stop) in stops.iter().enumerate() {
            if stop.is_empty() {
                return Err(SamplingError::EmptyStop { index });
            }
            if stop.len() > MAX_STOP_LEN_BYTES {
                return Err(SamplingError::StopTooLong {
                    index,
                    max_bytes: MAX_STOP_LEN_BYTES,
                    got_bytes: stop.len(),
                });
            }
        }
        let longest_stop_bytes = stops.iter().map(String::len).max().unwrap_or(0);
        Ok(Self {
            stops,
            pending: String::new(),
            longest_stop_bytes,
            stopped: false,
        })
    }

    /// Whether a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Appends newly decoded `text` and returns what can be released.
    ///
    /// When a stop string completes, everything before it is released and `stopped` is set;
    /// text pushed afterwards is dropped. If two stop strings could match, the one that
    /// completes first wins (the longer one if they complete together), which is what a
    /// token-by-token stream sees, so the result does not depend on how the text is split.
    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.stopped {
            return StopOutput {
                emit: String::new(),
                stopped: true,
            };
        }
        self.pending.push_str(text);
        if let Some(start) = self.first_completed_match() {
            self.pending.truncate(start);
            self.stopped = true;
            return StopOutput {
                emit: std::mem::take(&mut self.pending),
                stopped: true,
            };
        }
        let held_from = self.held_suffix_start();
        let held = self.pending.split_off(held_from);
        StopOutput {
            emit: std::mem::replace(&mut self.pending, held),
            stopped: false,
        }
    }

    /// Releases the held-back text when generation ends for another reason (length limit,
    /// end-of-sequence token); empty after a stop. The matcher is then empty but still usable.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Byte offset where the first-completing stop string starts in `pending`, if any.
    fn first_completed_match(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| {
                let start = self.pending.find(stop.as_str())?;
                Some((start + stop.len(), start))
            })
            // Earliest end first; for equal ends, the earliest start (the longer stop).
            .min()
            .map(|(_, start)| start)
    }

    /// Byte offset of the longest tail of `pending` that is a prefix of some stop string
    /// (`pending.len()` when none is). Only char boundaries are considered.
    fn held_suffix_start(&self) -> usize {
        let len = self.pending.len();
        // A whole stop string cannot be pending here, so the tail is shorter than the longest.
        let lowest = len.saturating_sub(self.longest_stop_bytes.saturating_sub(1));
        (lowest..len)
            .filter(|&start| self.pending.is_char_boundary(start))
            .find(|&start| {
                let tail = &self.pending[start..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
#[path = "stop_tests.rs"]
mod tests;
