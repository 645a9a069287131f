//! The tokenizer of a GGUF model: text to token ids and back, exactly as llama.cpp does it,
//! plus the model's chat template.
//!
//! The engine does not read GGUF here: the loader copies the `tokenizer.*` metadata into a
//! [`TokenizerSpec`] and [`Tokenizer::from_spec`] validates it once. [`spec_from_hf`] builds
//! the same spec from a Hugging Face checkpoint's `tokenizer.json`, as llama.cpp's converter
//! would have written it into a GGUF. Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`)
//! is implemented; other families are refused by name.
//!
//! Encoding follows llama.cpp's `llama_vocab::impl::tokenize`: special tokens are cut out of
//! the text first (`partition.rs`), then each plain fragment goes through the pre-tokenizer's
//! regexes and the BPE merges (the `tokenizers` crate, which is given the whole vocabulary but
//! no "added tokens", so it never splits special tokens itself). Decoding follows
//! `token_to_piece`: byte-level tokens map back to their bytes, control tokens vanish unless
//! asked for, and [`Detokenizer`] streams complete UTF-8.

mod chat_template;
mod detokenizer;
mod error;
mod hf;
mod partition;
mod pieces;
mod pretokenizer;
mod spec;
mod template_functions;
mod vocab;

#[cfg(test)]
mod tests;

pub use chat_template::{ChatMessage, ChatTemplate, ToolCall};
pub use detokenizer::Detokenizer;
pub use error::{Result, TokenizerError};
pub use hf::spec_from_hf;
pub use pretokenizer::llama_cpp_default_add_bos;
pub use spec::TokenizerSpec;

use partition::{Fragment, SpecialToken, partition};
use vocab::VocabInfo;

/// A validated tokenizer for one model. `Send + Sync` and used through `&self`, so one
/// instance (behind an `Arc`) serves every request.
pub struct Tokenizer {
    /// Pre-tokenizer + BPE over plain text; knows nothing of special tokens.
    bpe: tokenizers::Tokenizer,
    /// Token strings; index = id.
    texts: Vec<String>,
    /// Attributes, end-of-generation ids, special-token order and rendered pieces.
    info: VocabInfo,
    /// Special-token ids from the spec, checked to be in range.
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eot_id: Option<u32>,
    eom_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    /// Whether prompts get BOS in front / EOS behind ([`Tokenizer::encode_prompt`]).
    add_bos: bool,
    add_eos: bool,
    /// The model's chat template, compiled when the tokenizer is built.
    chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.texts.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("eog_ids", &self.info.eog_ids)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Validates `spec` and builds the tokenizer (see [`TokenizerSpec`] for what is checked).
    /// A chat template that does not compile fails the build with
    /// [`TokenizerError::TemplateSyntax`], so a broken model is reported at load time.
    pub fn from_spec(spec: TokenizerSpec) -> Result<Tokenizer> {
        spec::build(spec)
    }

    /// Tokenizes `text` without BOS/EOS. With `parse_special`, the text of control tokens
    /// (e.g. `"<|im_start|>"`) becomes their id; without it, it is tokenized as plain text.
    /// User-defined tokens are matched either way, as in llama.cpp.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let specials = self.info.special_order.iter().map(|&id| SpecialToken {
            id,
            text: &self.texts[id as usize],
            attr: self.info.attrs[id as usize],
        });
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        for fragment in partition(text, specials, parse_special) {
            match fragment {
                Fragment::Token(id) => ids.push(id),
                Fragment::Text(plain) => {
                    let encoding = self.bpe.encode_fast(plain, false).map_err(|e| {
                        TokenizerError::Backend {
                            op: "tokenize",
                            message: e.to_string(),
                        }
                    })?;
                    ids.extend_from_slice(encoding.get_ids());
                }
            }
        }
        Ok(ids)
    }

    /// Tokenizes a prompt as llama.cpp does with `add_special`: [`Tokenizer::encode`], then
    /// BOS in front if `add_bos` and EOS behind if `add_eos`.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            ids.push(bos);
        }
        ids.extend(self.encode(text, parse_special)?);
        if let (true, Some(eos)) = (self.add_eos, self.eos_id) {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// The text of `ids`, control tokens left out; a byte sequence that is not UTF-8 becomes
    /// U+FFFD, and so does an id outside the vocabulary (never a panic).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with_special(ids, false)
    }

    /// Like [`Tokenizer::decode`], with control tokens shown as their text when
    /// `render_special` (llama.cpp `special=true`).
    pub fn decode_with_special(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let piece = self.token_piece(id, render_special);
            bytes.extend_from_slice(piece.unwrap_or("\u{FFFD}".as_bytes()));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` stands for in normal output (empty for control tokens), or `None`
    /// if `id` is not in the vocabulary. May be part of a UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.info.piece(id, false)
    }

    /// The bytes of token `id`; with `render_special`, control tokens give their text.
    pub fn token_piece(&self, id: u32, render_special: bool) -> Option<&[u8]> {
        self.info.piece(id, render_special)
    }

    /// The token's string as stored in the vocabulary (byte-level form, e.g. `"Ġthe"`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// Whether generation stops at `id` (llama.cpp `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.info.eog_ids.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending: EOS, EOT, EOM, the FIM pad/repo/separator tokens
    /// and every token whose text is one of llama.cpp's end-of-generation strings.
    pub fn eog_ids(&self) -> &[u32] {
        &self.info.eog_ids
    }

    /// Whether token `id` is a control or unknown token, hidden in normal output.
    pub fn is_control(&self, id: u32) -> bool {
        self.info
            .attrs
            .get(id as usize)
            .is_some_and(|attr| attr.any(vocab::Attr::HIDDEN))
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// End-of-turn token, as given by the spec or detected by its text.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// End-of-message token (Llama 3.1 tool calls), as given by the spec or detected.
    pub fn eom_id(&self) -> Option<u32> {
        self.eom_id
    }

    /// Unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether [`Tokenizer::encode_prompt`] puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`Tokenizer::encode_prompt`] puts EOS behind.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The model's compiled chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Renders `messages` with the model's template, giving it this vocabulary's BOS and EOS
    /// texts as `bos_token` / `eos_token`. Tokenize the result with
    /// `encode_prompt(text, true)`.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_chat_with_tools(messages, None, add_generation_prompt)
    }

    /// [`Tokenizer::render_chat`] giving the template `tools` (see
    /// [`ChatTemplate::render_with_tools`]).
    pub fn render_chat_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        let text_of = |id: Option<u32>| id.and_then(|id| self.token_text(id)).unwrap_or("");
        template.render_with_tools(
            messages,
            tools,
            add_generation_prompt,
            text_of(self.bos_id),
            text_of(self.eos_id),
        )
    }
}
