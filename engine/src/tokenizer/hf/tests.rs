//! `spec_from_hf` on small synthetic checkpoints: the spec the converter would write, a
//! tokenizer that builds from it, the same tokens as the Hugging Face `tokenizers` library for
//! each pre-tokenizer family, and clear errors for malformed files.

use std::str::FromStr;

use serde_json::{Value, json};

use super::spec_from_hf;
use crate::tokenizer::pieces::char_to_byte;
use crate::tokenizer::{Tokenizer, TokenizerError, TokenizerSpec};

const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-V3's third regex as its `tokenizer.json` holds it: CR and LF are raw characters.
const DEEPSEEK3_MAIN_REGEX: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

/// Merges building "hello" and " world", then merges that only some pre-tokenizers let
/// happen (digit runs, a space before a digit, runs of spaces and newlines, a newline after
/// punctuation, upper-case contractions). In the spec test, even ones are written `"a b"`,
/// odd ones `["a", "b"]`.
const MERGES: [(&str, &str); 19] = [
    ("h", "e"),
    ("l", "l"),
    ("he", "ll"),
    ("hell", "o"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
    ("Ġwor", "l"),
    ("Ġworl", "d"),
    ("1", "2"),
    ("12", "3"),
    ("Ġ", "1"),
    ("Ġ", "Ġ"),
    ("ĠĠ", "Ġ"),
    ("Ċ", "Ċ"),
    ("!", "Ċ"),
    ("'", "s"),
    ("'", "L"),
    ("'L", "L"),
];
/// Ids of the merged tokens start here; the id after them is left a hole.
const FIRST_MERGED_ID: u32 = 256;
const HOLE_ID: u32 = FIRST_MERGED_ID + MERGES.len() as u32;
const ENDOFTEXT_ID: u32 = HOLE_ID + 1;
const IM_END_ID: u32 = HOLE_ID + 2;
const TOOL_CALL_ID: u32 = HOLE_ID + 3;

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex})
}

fn qwen2_pre() -> Value {
    json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
}

/// A complete `tokenizer.json` (loadable by the `tokenizers` library): the 256 byte tokens at
/// id = byte, [`MERGES`], a hole, and three added tokens: `<|endoftext|>` (special),
/// `<|im_end|>` (not marked special, but shaped like a control token) and `<tool_call>`
/// (user-defined).
fn tokenizer_value(pre_tokenizer: Value) -> Value {
    let mut vocab = serde_json::Map::new();
    for c in (0..0x200u32).filter_map(char::from_u32) {
        if let Some(byte) = char_to_byte(c) {
            vocab.insert(c.to_string(), json!(byte));
        }
    }
    let mut merges = Vec::new();
    for (id, (index, (left, right))) in (FIRST_MERGED_ID..).zip(MERGES.iter().enumerate()) {
        vocab.insert(format!("{left}{right}"), json!(id));
        merges.push(match index % 2 {
            0 => json!(format!("{left} {right}")),
            _ => json!([left, right]),
        });
    }
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            added(ENDOFTEXT_ID, "<|endoftext|>", true),
            added(IM_END_ID, "<|im_end|>", false),
            added(TOOL_CALL_ID, "<tool_call>", false),
        ],
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": byte_level(false),
        "decoder": byte_level(false),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    })
}

fn config_value() -> Value {
    json!({
        "add_bos_token": false,
        "bos_token": null,
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": true},
        "pad_token": "<|endoftext|>",
        "unk_token": null,
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}"},
        ],
    })
}

fn qwen2_spec() -> TokenizerSpec {
    let tokenizer = tokenizer_value(qwen2_pre()).to_string();
    spec_from_hf(&tokenizer, Some(&config_value().to_string())).unwrap()
}

#[test]
fn qwen2_style_checkpoint_gives_the_converters_spec() {
    let spec = qwen2_spec();
    assert_eq!(spec.model, "gpt2");
    assert_eq!(spec.pre.as_deref(), Some("qwen2"));
    assert_eq!(spec.tokens.len(), TOOL_CALL_ID as usize + 1);
    assert_eq!(spec.tokens[usize::from(b'a')], "a");
    assert_eq!(spec.tokens[usize::from(b' ')], "Ġ");
    assert_eq!(spec.tokens[FIRST_MERGED_ID as usize + 3], "hello");
    assert_eq!(spec.tokens[HOLE_ID as usize], format!("[PAD{HOLE_ID}]"));
    assert_eq!(spec.tokens[ENDOFTEXT_ID as usize], "<|endoftext|>");
    assert_eq!(spec.tokens[TOOL_CALL_ID as usize], "<tool_call>");
    assert!(spec.token_types[..HOLE_ID as usize].iter().all(|&t| t == 1));
    assert_eq!(spec.token_types[HOLE_ID as usize..], [5, 3, 3, 4]);
    assert_eq!(spec.merges[0], "h e");
    assert_eq!(spec.merges[1], "l l", "pair spelling joined by a space");
    assert_eq!(spec.merges.len(), MERGES.len());
    assert_eq!(spec.bos_id, None);
    assert_eq!(spec.eos_id, Some(IM_END_ID));
    assert_eq!(spec.pad_id, Some(ENDOFTEXT_ID));
    assert_eq!(spec.unk_id, None);
    assert_eq!(
        (spec.eot_id, spec.eom_id),
        (None, None),
        "left to text detection"
    );
    assert!(!spec.add_bos && !spec.add_eos);
    assert_eq!(
        spec.chat_template.as_deref(),
        Some("{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}")
    );
}

#[test]
fn spec_builds_a_tokenizer_that_round_trips() {
    let tokenizer = Tokenizer::from_spec(qwen2_spec()).unwrap();
    let hello = FIRST_MERGED_ID + 3;
    let world = FIRST_MERGED_ID + 8;
    assert_eq!(
        tokenizer.encode("hello world", false).unwrap(),
        [hello, world]
    );
    let text = "hello world<tool_call>, it's 2024!\n\tnaïve 東京 🙂<|im_end|>";
    let ids = tokenizer.encode(text, true).unwrap();
    assert!(ids.contains(&IM_END_ID) && ids.contains(&TOOL_CALL_ID));
    assert_eq!(tokenizer.decode_with_special(&ids, true), text);
    // Detected by text: the lowest id among llama.cpp's end-of-turn texts.
    assert_eq!(tokenizer.eot_id(), Some(ENDOFTEXT_ID));
    assert!(tokenizer.is_eog(IM_END_ID) && tokenizer.is_eog(ENDOFTEXT_ID));
    let messages = [crate::tokenizer::ChatMessage::new("user", "hi")];
    assert_eq!(
        tokenizer.render_chat(&messages, false).unwrap(),
        "hi<|im_end|>"
    );
}

/// The pre-tokenizers of the families this reads, as their `tokenizer.json` files write them,
/// with the `ignore_merges` flag those files carry and the name expected.
fn families() -> Vec<(&'static str, Value, bool)> {
    let deepseek3 = json!({"type": "Sequence", "pretokenizers": [
        split(r"\p{N}{1,3}"), split("[一-龥\u{3040}-ゟ゠-ヿ]+"), split(DEEPSEEK3_MAIN_REGEX),
        byte_level(false),
    ]});
    let smollm = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true}, byte_level(true),
    ]});
    let llama3 =
        json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]});
    vec![
        ("qwen2", qwen2_pre(), false),
        ("llama-bpe", llama3.clone(), true),
        ("smaug-bpe", llama3, false),
        ("deepseek-v3", deepseek3, false),
        ("smollm", smollm, false),
        ("gpt-2", byte_level(true), false),
    ]
}

#[test]
fn pre_tokenizers_of_real_families_are_recognized() {
    for (name, pre_tokenizer, ignore_merges) in families() {
        let mut tokenizer = tokenizer_value(pre_tokenizer);
        tokenizer["model"]["ignore_merges"] = json!(ignore_merges);
        let spec = spec_from_hf(&tokenizer.to_string(), None).unwrap();
        assert_eq!(spec.pre.as_deref(), Some(name));
    }
}

/// The regexes llama.cpp runs must cut text as the Hugging Face pre-tokenizer they were
/// matched to: same tokens from this module and from the `tokenizers` library.
#[test]
fn tokens_match_the_tokenizers_library_for_every_family() {
    let texts = [
        "Hello world, it's a test! I'LL SEE YOU'RE 'LL 's",
        "hello world 12345 and 3.14159",
        "  leading spaces\n\n\ttabs\r\nCRLF   trailing  ",
        "hi!\n\nyes!!\n    12 123 1234 x1 \n\n\n",
        "naïve café — 東京タワー ひらがな 漢字123 Ⅳ",
        "hello<|im_end|><tool_call>world<|endoftext|>",
        "emoji 🙂🙂 and symbols $$ ++ <=> ~|~",
    ];
    for (family, (name, pre_tokenizer, ignore_merges)) in families().into_iter().enumerate() {
        let mut json = tokenizer_value(pre_tokenizer);
        json["model"]["ignore_merges"] = json!(ignore_merges);
        // The library wants one spelling per file; use each in turn.
        json["model"]["merges"] = MERGES
            .iter()
            .map(|(left, right)| match family % 2 {
                0 => json!(format!("{left} {right}")),
                _ => json!([left, right]),
            })
            .collect();
        let json = json.to_string();
        let reference = tokenizers::Tokenizer::from_str(&json).unwrap();
        let ours = Tokenizer::from_spec(spec_from_hf(&json, None).unwrap()).unwrap();
        for text in texts {
            let expected = reference.encode(text, false).unwrap().get_tokens().to_vec();
            let ids = ours.encode(text, true).unwrap();
            let got: Vec<String> = ids
                .iter()
                .map(|&id| ours.token_text(id).unwrap().to_owned())
                .collect();
            assert_eq!(got, expected, "{name}: {text:?}");
        }
    }
}

#[test]
fn post_processor_template_gives_bos_and_add_bos() {
    // Llama 3 adds BOS only in its post-processor; its config has no add_bos_token.
    let mut tokenizer = tokenizer_value(qwen2_pre());
    tokenizer["post_processor"] = json!({"type": "Sequence", "processors": [
        byte_level(false),
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {}},
    ]});
    let tokenizer = tokenizer.to_string();
    let config = json!({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}).to_string();
    let spec = spec_from_hf(&tokenizer, Some(&config)).unwrap();
    assert_eq!(spec.bos_id, Some(ENDOFTEXT_ID));
    assert!(spec.add_bos && !spec.add_eos);

    let spec = spec_from_hf(&tokenizer, None).unwrap();
    assert_eq!(spec.bos_id, Some(ENDOFTEXT_ID), "taken from the template");
    assert!(spec.add_bos);

    let config = json!({"add_bos_token": false, "bos_token": "<|endoftext|>"}).to_string();
    assert!(
        !spec_from_hf(&tokenizer, Some(&config)).unwrap().add_bos,
        "config decides"
    );
}

#[test]
fn llama_cpp_default_add_bos_applies_without_a_key() {
    let mut tokenizer = tokenizer_value(families()[1].1.clone());
    tokenizer["model"]["ignore_merges"] = json!(true);
    let config = json!({"bos_token": "<|endoftext|>"}).to_string();
    let spec = spec_from_hf(&tokenizer.to_string(), Some(&config)).unwrap();
    assert_eq!(spec.pre.as_deref(), Some("llama-bpe"));
    assert!(
        spec.add_bos,
        "llama.cpp adds BOS for llama-bpe when the GGUF has no key"
    );
}

/// A change to a valid tokenizer.json and tokenizer_config.json.
type Edit = Box<dyn FnOnce(&mut Value, &mut Value)>;

/// Applies `edit` to a valid tokenizer.json and config and returns the error message.
fn error_after(edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut tokenizer = tokenizer_value(qwen2_pre());
    let mut config = config_value();
    edit(&mut tokenizer, &mut config);
    let err = spec_from_hf(&tokenizer.to_string(), Some(&config.to_string())).unwrap_err();
    err.to_string()
}

#[test]
fn malformed_json_is_reported_with_its_file() {
    let err = spec_from_hf("{\"model\": ", None).unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::HfJson {
            file: "tokenizer.json",
            ..
        }
    ));
    let tokenizer = tokenizer_value(qwen2_pre()).to_string();
    let err = spec_from_hf(&tokenizer, Some("not json")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tokenizer_config.json is not valid JSON"),
        "{err}"
    );
    let err = spec_from_hf("[1, 2]", None).unwrap_err();
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
}

#[test]
fn unknown_pre_tokenizer_regex_is_named() {
    let err = spec_from_hf(
        &tokenizer_value(json!({"type": "Sequence", "pretokenizers": [
        split(r"\w+|\s+"), byte_level(false)]}))
        .to_string(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::HfUnknownPreTokenizer { passes } if passes == &[r"\w+|\s+"]),
        "{err}"
    );
}

#[test]
fn wrong_shapes_and_values_give_field_errors() {
    let cases: Vec<(&str, Edit)> = vec![
        (
            "`model.type` must be \"BPE\"",
            Box::new(|t, _| t["model"]["type"] = json!("Unigram")),
        ),
        (
            "`model.byte_fallback` is true",
            Box::new(|t, _| t["model"]["byte_fallback"] = json!(true)),
        ),
        (
            "`model` is missing",
            Box::new(|t, _| t["model"] = Value::Null),
        ),
        (
            "\"Metaspace\"",
            Box::new(|t, _| t["decoder"] = json!({"type": "Metaspace"})),
        ),
        (
            "\"Metaspace\", a pre-tokenizer",
            Box::new(|t, _| t["pre_tokenizer"] = json!({"type": "Metaspace"})),
        ),
        (
            "has no ByteLevel step",
            Box::new(|t, _| t["pre_tokenizer"] = split(QWEN2_REGEX)),
        ),
        (
            "after the ByteLevel step",
            Box::new(
                |t, _| t["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [byte_level(false), split(QWEN2_REGEX)]}),
            ),
        ),
        (
            "`pre_tokenizer.behavior` must be \"Isolated\"",
            Box::new(|t, _| {
                t["pre_tokenizer"] = split(QWEN2_REGEX);
                t["pre_tokenizer"]["behavior"] = json!("Removed");
            }),
        ),
        (
            "`model.merges[3]` must be",
            Box::new(|t, _| t["model"]["merges"][3] = json!(7)),
        ),
        (
            "`model.merges[1]` must be",
            Box::new(|t, _| t["model"]["merges"][1] = json!(["l"])),
        ),
        (
            "`model.merges` must be an array",
            Box::new(|t, _| t["model"]["merges"] = json!("h e")),
        ),
        (
            "`model.vocab[\"a\"]` must be a token id",
            Box::new(|t, _| t["model"]["vocab"]["a"] = json!("97")),
        ),
        (
            "below 2097152, got the number 4000000000",
            Box::new(|t, _| t["model"]["vocab"]["a"] = json!(4_000_000_000u64)),
        ),
        (
            "gives id 98 to both",
            Box::new(|t, _| t["model"]["vocab"]["a"] = json!(98)),
        ),
        (
            "`model.vocab` holds no tokens",
            Box::new(|t, _| {
                t["model"]["vocab"] = json!({});
                t["added_tokens"] = json!([]);
            }),
        ),
        (
            "`added_tokens[0].content` is missing",
            Box::new(|t, _| t["added_tokens"][0]["content"] = Value::Null),
        ),
        (
            "is already the id of \"a\"",
            Box::new(|t, _| t["added_tokens"][0]["id"] = json!(97)),
        ),
        (
            "model.vocab gives \"hello\" the id 259",
            Box::new(|t, _| t["added_tokens"][0]["content"] = json!("hello")),
        ),
        (
            "`added_tokens[1].special` must be true or false",
            Box::new(|t, _| t["added_tokens"][1]["special"] = json!("yes")),
        ),
        (
            "`bos_token` names \"<s>\", which is not a token",
            Box::new(|_, c| c["bos_token"] = json!("<s>")),
        ),
        (
            "`eos_token` is an object without",
            Box::new(|_, c| c["eos_token"] = json!({})),
        ),
        (
            "`unk_token` must be a string or an object",
            Box::new(|_, c| c["unk_token"] = json!(0)),
        ),
        (
            "`add_bos_token` must be true or false",
            Box::new(|_, c| c["add_bos_token"] = json!("true")),
        ),
        (
            "`chat_template` must be a string or a list",
            Box::new(|_, c| c["chat_template"] = json!(5)),
        ),
        (
            "`chat_template[0].name` is missing",
            Box::new(|_, c| c["chat_template"] = json!([{"template": "x"}])),
        ),
    ];
    for (expected, edit) in cases {
        let message = error_after(edit);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn merges_with_spaces_inside_a_side_use_the_byte_level_space() {
    // The converter writes a space inside a pair's side as `Ġ` so that "a b" stays two sides.
    let mut tokenizer = tokenizer_value(qwen2_pre());
    tokenizer["model"]["merges"][4] = json!([" ", "w"]);
    let spec = spec_from_hf(&tokenizer.to_string(), None).unwrap();
    assert_eq!(spec.merges[4], "Ġ w");
}
