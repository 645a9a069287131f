//! The one error type of the tokenizer module.
//!
//! Every failure carries the fields a caller needs to report it without parsing the message:
//! which spec field was wrong and how, where a chat template broke, or the message a template
//! raised on purpose (`raise_exception`), which is the user's fault rather than the server's.

/// Everything that can go wrong when building a tokenizer, tokenizing, or rendering a chat
/// template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer family this module does not implement.
    #[error("unsupported tokenizer model `{model}`: only `gpt2` (byte-level BPE) is supported")]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this module does not implement.
    #[error("unsupported pre-tokenizer `{pre}` (tokenizer.ggml.pre)")]
    UnsupportedPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
    },
    /// The vocabulary has no tokens, or more than a `u32` id can address.
    #[error("vocabulary must hold between 1 and {max} tokens, got {got}")]
    VocabSize {
        /// The largest supported vocabulary.
        max: usize,
        /// The number of tokens in the spec.
        got: usize,
    },
    /// `token_types` is neither empty (absent) nor one entry per token.
    #[error("token_types must have one entry per token ({expected}), got {got}")]
    TokenTypesLength {
        /// The number of tokens.
        expected: usize,
        /// The number of token types.
        got: usize,
    },
    /// Two ids share one token string (llama.cpp refuses such a vocabulary too).
    #[error("duplicate token {text:?}: ids {first_id} and {second_id}")]
    DuplicateToken {
        /// The repeated token text.
        text: String,
        /// The first id holding it.
        first_id: u32,
        /// The second id holding it.
        second_id: u32,
    },
    /// A special-token id (`bos_id`, `eos_id`, ...) is not a valid token id.
    #[error("{field} = {id} is out of range: the vocabulary has {vocab_size} tokens")]
    SpecialTokenOutOfRange {
        /// The spec field, e.g. `"bos_id"`.
        field: &'static str,
        /// The id given.
        id: u32,
        /// The number of tokens.
        vocab_size: usize,
    },
    /// `add_bos` / `add_eos` is set but the matching token id is absent.
    #[error("{flag} is true but {field} is not set")]
    MissingSpecialToken {
        /// `"add_bos"` or `"add_eos"`.
        flag: &'static str,
        /// `"bos_id"` or `"eos_id"`.
        field: &'static str,
    },
    /// A merge rule is not of the form `"left right"` with both sides and their
    /// concatenation in the vocabulary.
    #[error("merge #{index} {merge:?} is malformed: {reason}")]
    MalformedMerge {
        /// Position of the merge in `tokenizer.ggml.merges` (its rank).
        index: usize,
        /// The merge as given.
        merge: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `tokenizers` library refused the model or failed while tokenizing; this points to
    /// a bug here rather than bad input, since the spec was validated first.
    #[error("tokenizers library failed to {op}: {message}")]
    Backend {
        /// What was being done, e.g. `"build the BPE model"`.
        op: &'static str,
        /// The library's message.
        message: String,
    },
    /// A Hugging Face tokenizer file (`tokenizer.json`, `tokenizer_config.json`) is not JSON.
    #[error("{file} is not valid JSON: {message}")]
    HfJson {
        /// The file name.
        file: &'static str,
        /// The JSON parser's message, with line and column.
        message: String,
    },
    /// A field of a Hugging Face tokenizer file is missing, has the wrong type, or holds a value
    /// that byte-level BPE as llama.cpp runs it cannot honour.
    #[error("{file}: `{key}` {problem}")]
    HfField {
        /// The file name.
        file: &'static str,
        /// The field's path in the file, e.g. `model.type` or `added_tokens[3].id`.
        key: String,
        /// What is wrong, with the value found.
        problem: String,
    },
    /// The pre-tokenizer of a `tokenizer.json` cuts text with regex passes that no llama.cpp
    /// pre-tokenizer type runs, so tokenizing it the llama.cpp way would be a guess.
    #[error(
        "tokenizer.json: the pre-tokenizer's passes {passes:?} match no llama.cpp pre-tokenizer type"
    )]
    HfUnknownPreTokenizer {
        /// Each pass as the file spells it: a `Split` regex, or a description of a `Digits` or
        /// `ByteLevel` step.
        passes: Vec<String>,
    },
    /// The model has no chat template, so chat messages cannot be rendered.
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// The chat template does not compile.
    #[error("chat template syntax error at line {line}: {message}")]
    TemplateSyntax {
        /// 1-based line of the template where the error is (0 when unknown).
        line: usize,
        /// The template engine's message.
        message: String,
    },
    /// The template called `raise_exception(message)`: the messages break a rule of the model's
    /// chat format (e.g. roles that do not alternate).
    #[error("chat template rejected the conversation: {message}")]
    TemplateException {
        /// The argument of `raise_exception`.
        message: String,
    },
    /// Rendering the chat template failed for another reason.
    #[error("chat template failed at line {line}: {message}")]
    TemplateRender {
        /// 1-based line of the template where rendering failed (0 when unknown).
        line: usize,
        /// The template engine's message.
        message: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
