//! Constrained decoding: structured output (JSON schema, any JSON object), regular
//! expressions and Lark grammars, through `llguidance` (the library behind structured output
//! in llama.cpp, vLLM and SGLang). Each model's tokenizer gets one parser factory (built on
//! first use); each constrained request a [`Constraint`], which masks the logits of every
//! step to the tokens the grammar allows and follows the tokens sampled.
//!
//! The mask is applied before sampling, so a constrained answer depends only on the
//! request's own logits: batching never changes it.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId};
use llguidance::{Matcher, ParserFactory};

use crate::tokenizer::Tokenizer;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON schema (`response_format: {"type": "json_schema", ...}`).
    JsonSchema(serde_json::Value),
    /// A regular expression over the whole output.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
    /// `inner` after the model's `<think>...</think>` (which is free): for thinking models,
    /// whose constraints apply to the answer, never to the thinking. `opened`: the prompt
    /// opened the thinking, so the output begins inside it; otherwise the thinking may be
    /// absent. An inner Lark grammar names its start rule `start`.
    AfterThinking {
        inner: Box<GrammarSpec>,
        opened: bool,
    },
}

/// Whitespace between JSON tokens: any of JSON's four characters, at most 12 in a row, so
/// that a small model cannot fill its whole answer with blank lines.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,12}";

/// `schema` with our JSON options unless the client set its own (`x-guidance`).
pub(crate) fn with_json_options(schema: &serde_json::Value) -> serde_json::Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        obj.insert(
            "x-guidance".into(),
            serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }),
        );
    }
    s
}

impl GrammarSpec {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_json_options(
                &serde_json::json!({"type": "object"}),
            )),
            GrammarSpec::JsonSchema(s) => TopLevelGrammar::from_json_schema(with_json_options(s)),
            GrammarSpec::Regex(r) => TopLevelGrammar::from_regex(r),
            GrammarSpec::Lark(l) => TopLevelGrammar::from_lark(l.clone()),
            GrammarSpec::AfterThinking { inner, opened } => {
                let body = match inner.as_ref() {
                    GrammarSpec::JsonObject => format!(
                        "answer: %json {}",
                        with_json_options(&serde_json::json!({"type": "object"}))
                    ),
                    GrammarSpec::JsonSchema(s) => format!("answer: %json {}", with_json_options(s)),
                    GrammarSpec::Regex(r) => format!("answer: /{}/", r.replace('/', "\\/")),
                    GrammarSpec::Lark(l) => l
                        .lines()
                        .map(|line| match line.strip_prefix("start:") {
                            Some(rest) => format!("answer:{rest}"),
                            None => line.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                    GrammarSpec::AfterThinking { .. } => return inner.top_level(),
                };
                let think = if *opened {
                    "thought"
                } else {
                    "(\"<think>\" thought)?"
                };
                TopLevelGrammar::from_lark(format!(
                    "start: {think} gap? answer\nthought[suffix=\"</think>\"]: /(?s:.*)/\ngap: /[ \\t\\r\\n]{{1,4}}/\n{body}"
                ))
            }
        }
    }
}

/// One tokenizer's parser factory (every token's bytes, control tokens marked so that a
/// grammar never spells them): builds a [`Constraint`] per request.
pub struct Grammars {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammars")
    }
}

impl Grammars {
    /// The factory for `tokenizer` (vocabulary of `vocab` logits; tokens past the
    /// tokenizer's own are never allowed).
    pub fn new(tokenizer: &Tokenizer, vocab: usize) -> Result<Grammars, String> {
        let n = vocab.max(tokenizer.vocab_size());
        let mut words: Vec<Vec<u8>> = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let word = if id as usize >= tokenizer.vocab_size() {
                // Padding rows of the output head: a name no text can spell.
                format!("\u{ff}<pad{id}>").into_bytes()
            } else if tokenizer.is_control(id) || tokenizer.is_eog(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(tokenizer.token_piece(id, true).unwrap_or_default());
                w
            } else {
                tokenizer.token_bytes(id).unwrap_or_default().to_vec()
            };
            words.push(word);
        }
        let eos = tokenizer
            .eos_id()
            .or_else(|| tokenizer.eog_ids().first().copied())
            .ok_or("the tokenizer has no end-of-sequence token")?;
        let info = TokRxInfo::new(n as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(tokenizer.eog_ids());
        // The trie is all the masks need (the grammar's own text is tokenized greedily).
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Grammars {
            factory: Arc::new(factory),
        })
    }

    /// A constraint for one request, or what is wrong with `spec` (unsupported or invalid
    /// schema, bad regex or grammar) in words fit for the client.
    pub fn constraint(&self, spec: &GrammarSpec) -> Result<Constraint, String> {
        let parser = self
            .factory
            .create_parser(spec.top_level())
            .map_err(|e| e.to_string())?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            ready: None,
        })
    }
}

/// One request's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// The tokens allowed next, computed ahead ([`Constraint::prepare`]) while the forward
    /// pass runs; cleared by each token consumed.
    ready: Option<SimpleVob>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            ready: self.ready.clone(),
        }
    }
}

impl Constraint {
    /// Writes `logits` into `out` with every token the grammar does not allow next set to
    /// minus infinity (end-of-generation tokens are allowed once the output is complete).
    pub fn mask(&mut self, logits: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        let allowed = match self.ready.take() {
            Some(allowed) => allowed,
            None => self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| e.to_string())?,
        };
        out.clear();
        out.extend(logits.iter().enumerate().map(|(i, &l)| {
            if allowed.is_allowed(i as TokenId) {
                l
            } else {
                f32::NEG_INFINITY
            }
        }));
        Ok(())
    }

    /// Computes the next step's allowed tokens ahead of [`Constraint::mask`] (the
    /// scheduler runs this beside the forward pass); a failure is left for `mask` to meet.
    pub fn prepare(&mut self) {
        if self.ready.is_none() {
            self.ready = self.matcher.compute_mask_or_eos().ok();
        }
    }

    /// Whether the next step's mask is already computed.
    pub fn is_prepared(&self) -> bool {
        self.ready.is_some()
    }

    /// Follows the token sampled.
    pub fn consume(&mut self, id: u32) -> Result<(), String> {
        self.ready = None;
        self.matcher.consume_token(id).map_err(|e| e.to_string())
    }

    /// Nothing more can follow: the output is complete.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}
