//! Tests of the whole tokenizer on a small hand-made byte-level vocabulary. The exactness
//! tests against llama.cpp use the real SmolLM2 vocabulary and live with the fixtures.

use super::pieces::char_to_byte;
use super::*;

const ENDOFTEXT: u32 = 0;
const IM_START: u32 = 1;
const IM_END: u32 = 2;
const TOOL: u32 = 3;
/// Id of the first byte token; byte tokens are in GPT-2 alphabet order of their char.
const FIRST_BYTE_ID: u32 = 4;

/// The char GPT-2's byte-level alphabet writes `byte` as.
fn byte_char(byte: u8) -> char {
    (0..0x200u32)
        .filter_map(char::from_u32)
        .find(|&c| char_to_byte(c) == Some(byte))
        .unwrap()
}

fn byte_id(byte: u8) -> u32 {
    FIRST_BYTE_ID + u32::from(byte)
}

/// Four special tokens, the 256 byte tokens (id 4 + byte), and merges building "hello",
/// " world", "ll" and " w".
fn small_spec() -> TokenizerSpec {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
        .map(String::from)
        .to_vec();
    let mut token_types = vec![3, 3, 3, 4];
    for byte in 0..=255u8 {
        tokens.push(byte_char(byte).to_string());
        token_types.push(1);
    }
    let merges = [
        "l l", "h e", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    ];
    for merge in merges {
        tokens.push(merge.replace(' ', ""));
        token_types.push(1);
    }
    TokenizerSpec {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types,
        merges: merges.map(String::from).to_vec(),
        bos_id: Some(IM_START),
        eos_id: Some(IM_END),
        chat_template: Some("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into()),
        ..TokenizerSpec::default()
    }
}

fn small() -> Tokenizer {
    Tokenizer::from_spec(small_spec()).unwrap()
}

fn id_of(tokenizer: &Tokenizer, text: &str) -> u32 {
    (0..tokenizer.vocab_size() as u32)
        .find(|&id| tokenizer.token_text(id) == Some(text))
        .unwrap()
}

#[test]
fn merges_apply_within_words_and_digits_are_isolated() {
    let tok = small();
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(ids, vec![id_of(&tok, "hello"), id_of(&tok, "Ġworld")]);
    let ids = tok.encode("12", false).unwrap();
    assert_eq!(ids, vec![byte_id(b'1'), byte_id(b'2')]);
    assert_eq!(
        tok.decode(&tok.encode("hello world 12\n", false).unwrap()),
        "hello world 12\n"
    );
}

#[test]
fn empty_text_gives_no_ids() {
    let tok = small();
    assert!(tok.encode("", true).unwrap().is_empty());
    assert!(tok.encode("", false).unwrap().is_empty());
}

#[test]
fn control_tokens_are_parsed_only_when_asked() {
    let tok = small();
    let parsed = tok.encode("<|im_start|>hello<|im_end|>", true).unwrap();
    assert_eq!(parsed, vec![IM_START, id_of(&tok, "hello"), IM_END]);
    let plain = tok.encode("<|im_start|>", false).unwrap();
    assert!(!plain.contains(&IM_START));
    assert_eq!(tok.decode(&plain), "<|im_start|>");
}

#[test]
fn user_defined_tokens_are_matched_even_without_parse_special() {
    let tok = small();
    assert_eq!(tok.encode("<tool>", false).unwrap(), vec![TOOL]);
    // And they are always rendered, unlike control tokens.
    assert_eq!(tok.decode(&[TOOL, IM_END]), "<tool>");
    assert_eq!(
        tok.decode_with_special(&[TOOL, IM_END], true),
        "<tool><|im_end|>"
    );
}

#[test]
fn encode_prompt_adds_bos_and_eos_as_configured() {
    let mut spec = small_spec();
    spec.add_bos = true;
    spec.add_eos = true;
    let tok = Tokenizer::from_spec(spec).unwrap();
    assert_eq!(
        tok.encode_prompt("hello", false).unwrap(),
        vec![IM_START, id_of(&tok, "hello"), IM_END]
    );
    assert_eq!(
        small().encode_prompt("hello", false).unwrap(),
        vec![id_of(&tok, "hello")]
    );
}

#[test]
fn eog_set_holds_eos_and_known_texts() {
    let tok = small();
    assert_eq!(tok.eog_ids(), &[ENDOFTEXT, IM_END]);
    assert!(tok.is_eog(IM_END) && tok.is_eog(ENDOFTEXT) && !tok.is_eog(IM_START));
    assert_eq!(
        tok.eot_id(),
        Some(ENDOFTEXT),
        "lowest id with an end-of-turn text"
    );
}

#[test]
fn out_of_range_ids_decode_to_replacement_without_panicking() {
    let tok = small();
    let out_of_range = tok.vocab_size() as u32;
    assert_eq!(tok.token_bytes(out_of_range), None);
    assert_eq!(tok.token_text(u32::MAX), None);
    assert_eq!(
        tok.decode(&[id_of(&tok, "hello"), out_of_range, u32::MAX]),
        "hello\u{FFFD}\u{FFFD}"
    );
}

/// A tiny deterministic generator, so the property test needs no dependency.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn streamed(tok: &Tokenizer, ids: &[u32], render_special: bool) -> String {
    let mut detokenizer = if render_special {
        Detokenizer::rendering_special()
    } else {
        Detokenizer::new()
    };
    let mut text = String::new();
    for &id in ids {
        text.push_str(&detokenizer.push(tok, id));
    }
    text + &detokenizer.finish()
}

#[test]
fn streaming_equals_decode_for_any_id_sequence() {
    let tok = small();
    // Multi-byte characters cut into byte tokens, plus specials, merges and bad ids.
    let mut pool: Vec<u32> = "é中😀👩\u{200d}💻".bytes().map(byte_id).collect();
    pool.extend([
        ENDOFTEXT,
        IM_START,
        TOOL,
        id_of(&tok, "hello"),
        byte_id(b' '),
        0xFFFF_FFF0,
    ]);
    pool.extend([byte_id(0x80), byte_id(0xC3), byte_id(0xF0), byte_id(0xFF)]);
    let mut rng = Lcg(7);
    for _ in 0..3000 {
        let len = rng.below(12);
        let ids: Vec<u32> = (0..len).map(|_| pool[rng.below(pool.len())]).collect();
        for render_special in [false, true] {
            assert_eq!(
                streamed(&tok, &ids, render_special),
                tok.decode_with_special(&ids, render_special),
                "ids {ids:?}"
            );
        }
    }
}

#[test]
fn detokenizer_holds_back_only_unfinished_characters() {
    let tok = small();
    let robot: Vec<u32> = "🤖".bytes().map(byte_id).collect();
    let mut detokenizer = Detokenizer::new();
    for &id in &robot[..3] {
        assert_eq!(detokenizer.push(&tok, id), "");
    }
    assert!(detokenizer.has_pending());
    assert_eq!(detokenizer.push(&tok, robot[3]), "🤖");
    // A lead byte followed by ASCII can never complete: replaced at once, not held.
    assert_eq!(detokenizer.push(&tok, byte_id(0xE4)), "");
    assert_eq!(detokenizer.push(&tok, byte_id(b'a')), "\u{FFFD}a");
    assert_eq!(detokenizer.push(&tok, byte_id(0xE4)), "");
    assert_eq!(detokenizer.finish(), "\u{FFFD}");
    assert!(!detokenizer.has_pending());
}

fn build_error(spec: TokenizerSpec) -> TokenizerError {
    Tokenizer::from_spec(spec).unwrap_err()
}

#[test]
fn bad_specs_are_refused_with_what_is_wrong() {
    let mut spec = small_spec();
    spec.token_types.pop();
    assert!(matches!(
        build_error(spec),
        TokenizerError::TokenTypesLength {
            expected: 269,
            got: 268
        }
    ));

    let mut spec = small_spec();
    spec.merges.push("nospace".into());
    assert!(matches!(
        build_error(spec),
        TokenizerError::MalformedMerge { index: 9, .. }
    ));

    let mut spec = small_spec();
    spec.merges.push("hello Ġworld".into());
    let err = build_error(spec);
    assert!(
        matches!(
            err,
            TokenizerError::MalformedMerge {
                reason: "merged text is not a token",
                ..
            }
        ),
        "{err}"
    );

    let mut spec = small_spec();
    spec.model = "llama".into();
    assert!(
        matches!(build_error(spec), TokenizerError::UnsupportedModel { model } if model == "llama")
    );

    let mut spec = small_spec();
    spec.pre = Some("mystery".into());
    assert!(
        matches!(build_error(spec), TokenizerError::UnsupportedPreTokenizer { pre } if pre == "mystery")
    );

    let mut spec = small_spec();
    spec.tokens[5] = spec.tokens[6].clone();
    assert!(matches!(
        build_error(spec),
        TokenizerError::DuplicateToken {
            first_id: 5,
            second_id: 6,
            ..
        }
    ));

    let mut spec = small_spec();
    spec.eos_id = Some(100_000);
    assert!(matches!(
        build_error(spec),
        TokenizerError::SpecialTokenOutOfRange {
            field: "eos_id",
            ..
        }
    ));

    let mut spec = small_spec();
    spec.bos_id = None;
    spec.add_bos = true;
    assert!(matches!(
        build_error(spec),
        TokenizerError::MissingSpecialToken {
            flag: "add_bos",
            ..
        }
    ));

    let spec = TokenizerSpec {
        model: "gpt2".into(),
        ..TokenizerSpec::default()
    };
    assert!(matches!(
        build_error(spec),
        TokenizerError::VocabSize { got: 0, .. }
    ));

    let mut spec = small_spec();
    spec.chat_template = Some("{% if x %}\n{{ oops".into());
    assert!(matches!(
        build_error(spec),
        TokenizerError::TemplateSyntax { line: 2, .. }
    ));
}

#[test]
fn missing_token_types_mean_all_normal_and_repeated_merges_keep_first_rank() {
    let mut spec = small_spec();
    spec.token_types.clear();
    spec.merges.push("h e".into());
    let tok = Tokenizer::from_spec(spec).unwrap();
    // Without types every token is normal; <|endoftext|> and <|im_end|> still end
    // generation and become control tokens because of their text, <|im_start|> does not.
    assert_eq!(tok.eog_ids(), &[ENDOFTEXT, IM_END]);
    assert!(!tok.is_control(IM_START));
    assert_eq!(
        tok.encode("hello", false).unwrap(),
        vec![id_of(&tok, "hello")]
    );
}

#[test]
fn render_chat_uses_the_model_template() {
    let tok = small();
    let text = tok
        .render_chat(&[ChatMessage::new("user", "hello")], true)
        .unwrap();
    assert_eq!(text, "<|im_start|>user\nhello<|im_end|>\n");
    let ids = tok.encode_prompt(&text, true).unwrap();
    assert_eq!(ids[0], IM_START);
    let mut spec = small_spec();
    spec.chat_template = None;
    let err = Tokenizer::from_spec(spec)
        .unwrap()
        .render_chat(&[], true)
        .unwrap_err();
    assert!(matches!(err, TokenizerError::NoChatTemplate));
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<Detokenizer>();
}
