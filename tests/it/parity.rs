//! Parity with llama.cpp on SmolLM2-135M-Instruct Q4_1 (`tests/fixtures/smollm2`):
//! tokenization, greedy continuations and teacher-forced logits.

use std::sync::{Mutex, OnceLock};

use engine::tokenizer::ChatMessage;
use engine::{Engine, EngineOptions, Logits, Model, Prompt};
use serde_json::Value;
use tests::{fixture_json, model_path, oasis, stdout_ok};

/// top-1 and top-2 logits closer than this make a position a near-tie (fixture README).
const NEAR_TIE: f64 = 0.01;

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| fixture_json("smollm2/llamacpp-reference.json"))
}

/// One engine shared by the library-level tests (the model loads once).
fn engine() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let model = Model::load(&model_path()).expect("the default model loads");
        Mutex::new(
            Engine::new(
                model,
                &EngineOptions {
                    threads: 2,
                    ..EngineOptions::default()
                },
            )
            .expect("engine"),
        )
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases() -> &'static [Value] {
    reference()["cases"].as_array().expect("cases")
}

#[test]
fn tokenization_matches_llama_cpp_on_every_string() {
    let e = engine().lock().unwrap_or_else(|e| e.into_inner());
    let tok = e.model().tokenizer().unwrap();
    let strings = reference()["tokenize"].as_array().unwrap();
    assert!(strings.len() >= 10);
    for s in strings {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&s["ids"]),
            "tokenizing {text:?}"
        );
    }
}

#[test]
fn prompts_match_llama_cpp_raw_and_chat_templated() {
    let e = engine().lock().unwrap_or_else(|e| e.into_inner());
    let tok = e.model().tokenizer().unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let prompt = match case["mode"].as_str().unwrap() {
            "chat" => {
                let messages: Vec<ChatMessage> =
                    serde_json::from_value(case["messages"].clone()).unwrap();
                let rendered = tok.render_chat(&messages, true).unwrap();
                assert_eq!(
                    rendered,
                    case["prompt_text"].as_str().unwrap(),
                    "{name}: template"
                );
                Prompt::Chat(messages)
            }
            _ => Prompt::Text(case["prompt_text"].as_str().unwrap().to_string()),
        };
        assert_eq!(
            e.tokenize(&prompt).unwrap(),
            ids(&case["prompt_ids"]),
            "{name}: prompt ids"
        );
    }
}

/// The greedy continuation of `oasis run` (the real binary) equals llama.cpp's for the
/// first 64 tokens (the issue asks for 32), except that it may part ways at a near-tie.
#[test]
fn greedy_continuations_match_llama_cpp_through_the_binary() {
    let model = model_path();
    let eog = ids(&reference()["eog_token_ids"]);
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let prompt: Vec<String> = ids(&case["prompt_ids"])
            .iter()
            .map(u32::to_string)
            .collect();
        let out = oasis(&[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--threads",
            "2",
            "--json",
            "--max-tokens",
            "64",
            "--prompt-ids",
            &prompt.join(","),
        ]);
        let doc: Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
        let got = ids(&doc["output_token_ids"]);
        let want = ids(&case["greedy_ids"]);
        let top5 = case["top5"].as_array().unwrap();
        match got.iter().zip(&want).position(|(a, b)| a != b) {
            None => {
                // Equal as far as ours goes; ours may only be shorter by stopping at EOG.
                if got.len() < 64 {
                    let last = *got.last().unwrap();
                    assert!(
                        eog.contains(&last),
                        "{name}: stopped early on a non-EOG token"
                    );
                    assert_eq!(doc["finish_reason"], "stop");
                }
            }
            Some(i) => {
                let t = top5[i].as_array().unwrap();
                let (l1, l2) = (t[0][1].as_f64().unwrap(), t[1][1].as_f64().unwrap());
                assert!(
                    l1 - l2 < NEAR_TIE,
                    "{name}: token {i} differs ({} vs llama.cpp {}) where llama.cpp's top-2 gap is {}",
                    got[i],
                    want[i],
                    l1 - l2
                );
                let ours = u64::from(got[i]);
                assert!(
                    t[..2].iter().any(|p| p[0].as_u64() == Some(ours)),
                    "{name}: at near-tie {i} we chose {ours}, not one of the tied pair"
                );
            }
        }
    }
}

/// Logits along llama.cpp's own path: the prompt in one batch, then llama.cpp's greedy
/// tokens fed back one at a time; compared at the five tokens llama.cpp ranked highest at
/// each of the 64 positions. The engine follows llama.cpp's arithmetic operation for
/// operation, so the only difference left is the fixture's rounding to 4 decimals.
#[test]
fn logits_match_llama_cpp_at_every_position() {
    let mut e = engine().lock().unwrap_or_else(|e| e.into_inner());
    let mut worst = (0.0f64, String::new());
    let mut positions = 0;
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let top5 = case["top5"].as_array().unwrap();
        assert_eq!(top5.len(), greedy.len());
        e.reset();
        let mut logits = e.forward(&prompt, Logits::Last).unwrap().to_vec();
        for (i, t) in top5.iter().enumerate() {
            for pair in t.as_array().unwrap() {
                let (id, want) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                let diff = (f64::from(logits[id]) - want).abs();
                if diff > worst.0 {
                    worst = (diff, format!("{name} position {i} token {id}"));
                }
            }
            positions += 1;
            logits = e.forward(&[greedy[i]], Logits::Last).unwrap().to_vec();
        }
    }
    eprintln!(
        "largest |logit - llama.cpp| over {positions} positions x top-5: {:.6} ({})",
        worst.0, worst.1
    );
    assert!(positions >= 8 * 64);
    // The fixture holds logits rounded to 4 decimals: 5e-5 is rounding, anything more a bug.
    assert!(
        worst.0 <= 1e-4,
        "logits differ from llama.cpp by {} at {}",
        worst.0,
        worst.1
    );
}
