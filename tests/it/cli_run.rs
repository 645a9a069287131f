//! `oasis run` and `oasis bench` on the real model, through the real binary.

use serde_json::Value;
use tests::{model_path, oasis, oasis_with_env, stdout_ok};

fn model() -> String {
    model_path().to_string_lossy().into_owned()
}

#[test]
fn chat_answers_a_question() {
    let out = oasis(&[
        "run",
        "--model",
        &model(),
        "--chat",
        "--max-tokens",
        "32",
        "Why is the sky blue?",
    ]);
    let text = stdout_ok(&out);
    assert!(text.contains("light"), "answer was {text:?}");
}

#[test]
fn streamed_text_equals_the_json_text_and_ids() {
    let args = [
        "run",
        "--model",
        &model(),
        "--max-tokens",
        "40",
        "Three facts about the Moon:\n1.",
    ];
    let streamed = stdout_ok(&oasis(&args));
    let mut json_args = args.to_vec();
    json_args.insert(1, "--json");
    let doc: Value = serde_json::from_str(stdout_ok(&oasis(&json_args)).trim()).unwrap();
    assert_eq!(
        streamed.strip_suffix('\n').unwrap(),
        doc["text"].as_str().unwrap()
    );
    assert_eq!(doc["output_token_ids"].as_array().unwrap().len(), 40);
    assert_eq!(doc["finish_reason"], "length");
    // The fixture's tokenization of this prompt (no BOS: the file does not ask for one).
    let prompt: Vec<u64> = doc["prompt_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(prompt.len(), 9);
}

#[test]
fn portable_kernels_give_the_same_tokens_as_simd() {
    let args = [
        "run",
        "--json",
        "--model",
        &model(),
        "--max-tokens",
        "24",
        "--chat",
        "Name three colours.",
    ];
    let simd: Value = serde_json::from_str(stdout_ok(&oasis(&args)).trim()).unwrap();
    let portable: Value = serde_json::from_str(
        stdout_ok(&oasis_with_env(&args, &[("OASIS_KERNELS", "portable")])).trim(),
    )
    .unwrap();
    assert_eq!(simd["output_token_ids"], portable["output_token_ids"]);
}

#[test]
fn same_seed_same_sample_and_seeds_differ() {
    let run = |seed: &str| {
        let args = [
            "run",
            "--json",
            "--model",
            &model(),
            "--max-tokens",
            "24",
            "--temperature",
            "1.0",
            "--seed",
            seed,
            "Once upon a time",
        ];
        let doc: Value = serde_json::from_str(stdout_ok(&oasis(&args)).trim()).unwrap();
        doc["output_token_ids"].clone()
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert!(
        ["8", "9", "10"].iter().any(|s| run(s) != a),
        "three other seeds all gave the same sample"
    );
}

#[test]
fn stop_strings_cut_the_output_before_them() {
    let base = [
        "run",
        "--json",
        "--model",
        &model(),
        "--max-tokens",
        "40",
        "Three facts about the Moon:\n1.",
    ];
    let full: Value = serde_json::from_str(stdout_ok(&oasis(&base)).trim()).unwrap();
    let full_text = full["text"].as_str().unwrap().to_string();
    // Stop at the second item of the list, wherever the model puts it.
    let stop = "2.";
    let cut = full_text
        .find(stop)
        .expect("the greedy output has a second list item");
    let mut args = base.to_vec();
    args.extend(["--stop", stop]);
    let doc: Value = serde_json::from_str(stdout_ok(&oasis(&args)).trim()).unwrap();
    assert_eq!(doc["text"].as_str().unwrap(), &full_text[..cut]);
    assert_eq!(doc["finish_reason"], "stop");
}

#[test]
fn bench_reports_both_speeds_as_json() {
    let out = oasis(&[
        "bench",
        "--model",
        &model(),
        "--json",
        "--prompt-tokens",
        "64",
        "--gen-tokens",
        "8",
        "--reps",
        "1",
        "--threads",
        "2",
    ]);
    let doc: Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
    for key in ["prefill_tok_s", "decode_tok_s"] {
        assert!(doc[key].as_f64().unwrap() > 0.0, "{key} missing in {doc}");
    }
    assert_eq!(doc["threads"], 2);
    assert_eq!(doc["prompt_tokens"], 64);
    assert_eq!(doc["gen_tokens"], 8);
}

#[test]
fn bench_runs_at_a_depth_and_refuses_one_past_the_context() {
    let m = model();
    let with_model = |depth: &str| {
        oasis(&[
            "bench",
            "--json",
            "--model",
            &m,
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "4",
            "--reps",
            "1",
            "--threads",
            "2",
            "--batch",
            "3",
            "--depth",
            depth,
        ])
    };
    let doc: Value = serde_json::from_str(stdout_ok(&with_model("40")).trim()).unwrap();
    assert_eq!(doc["depth"], 40);
    assert_eq!(doc["batch"], 3);
    for key in ["prefill_tok_s", "decode_tok_s"] {
        assert!(doc[key].as_f64().unwrap() > 0.0, "{key} missing in {doc}");
    }
    // SmolLM2 holds 8192 tokens: a depth that leaves no room is a clear error.
    let out = with_model("8190");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8192"), "{err}");
}
