//! Incremental detokenization for streaming: text comes out as soon as it is complete UTF-8.
//!
//! A byte-level token can end in the middle of a character (an emoji is often two or four
//! byte tokens), so the bytes of the latest tokens cannot always be shown yet. The
//! [`Detokenizer`] keeps at most the three bytes of an unfinished character and lets out
//! everything before them. Its decisions are the ones `String::from_utf8_lossy` takes on the
//! whole byte stream: a sequence that can no longer become valid is replaced by U+FFFD at
//! once, so nothing waits forever, and the concatenation of everything it returns always
//! equals [`Tokenizer::decode`] of the same ids.

use super::Tokenizer;

/// U+FFFD, what an out-of-range id contributes to the byte stream.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Turns a stream of token ids into a stream of text.
#[derive(Debug, Default)]
pub struct Detokenizer {
    /// Bytes of an unfinished UTF-8 sequence at the end of the stream (at most 3 after each
    /// `push`).
    pending: Vec<u8>,
    /// Whether control tokens are shown as their text (llama.cpp `special=true`).
    render_special: bool,
}

impl Detokenizer {
    /// A detokenizer that hides control tokens, like [`Tokenizer::decode`].
    pub fn new() -> Detokenizer {
        Detokenizer::default()
    }

    /// A detokenizer that shows control tokens as their text, like
    /// [`Tokenizer::decode_with_special`].
    pub fn rendering_special() -> Detokenizer {
        Detokenizer {
            pending: Vec::new(),
            render_special: true,
        }
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty). An id out
    /// of the vocabulary stands for U+FFFD, as in [`Tokenizer::decode`].
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        let bytes = tokenizer
            .token_piece(id, self.render_special)
            .unwrap_or(REPLACEMENT);
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_end = consumed + error.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[consumed..valid_end]));
                    match error.error_len() {
                        // Invalid whatever follows: replace it, as from_utf8_lossy would.
                        Some(invalid_len) => {
                            text.push('\u{FFFD}');
                            consumed = valid_end + invalid_len;
                        }
                        // A character cut short by the end of the stream: wait for more.
                        None => {
                            consumed = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }

    /// Ends the stream: returns the bytes still held, an unfinished character becoming U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
