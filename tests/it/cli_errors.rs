//! Bad input to `oasis run`: a one-line error naming the problem, a non-zero exit, no panic.

use std::process::Output;

use tests::gguf_writer::{self, Meta, Tensor};
use tests::{model_path, oasis};

/// Asserts a clean failure whose single stderr line contains `needle`.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code (2 is clap usage, 101 a panic): {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line: {err}"
    );
    assert!(
        err.contains(needle),
        "stderr {err:?} does not mention {needle:?}"
    );
}

fn run_on(model: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--model", model.to_str().unwrap()];
    args.extend(extra);
    oasis(&args)
}

#[test]
fn missing_file() {
    let out = run_on(std::path::Path::new("/nonexistent/model.gguf"), &["hi"]);
    assert_clean_error(&out, "/nonexistent/model.gguf");
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let full = std::fs::read(model_path()).unwrap();
    // Cut inside the tensor data: the header parses, the data does not fit.
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    assert_clean_error(&run_on(&path, &["hi"]), "truncated download");
    // Cut inside the metadata.
    std::fs::write(&path, &full[..5000]).unwrap();
    assert_clean_error(&run_on(&path, &["hi"]), "remain");
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are not the weights you are looking for").unwrap();
    assert_clean_error(&run_on(&path, &["hi"]), "not a GGUF file");
}

/// The smallest file that gets past the GGUF reader: architecture and one tensor.
fn tiny_model(arch: &str, type_id: u32, data_len: usize) -> Vec<u8> {
    let meta = [("general.architecture", Meta::Str(arch.into()))];
    let tensor = Tensor {
        name: "token_embd.weight".into(),
        dims: vec![32, 4],
        type_id,
        data: vec![0u8; data_len],
    };
    gguf_writer::write(&meta, &[tensor])
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    std::fs::write(&path, tiny_model("mamba", 0, 32 * 4 * 4)).unwrap();
    assert_clean_error(
        &run_on(&path, &["hi"]),
        "unsupported model architecture `mamba`",
    );
}

#[test]
fn unknown_quantization_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q5_0.gguf");
    // Q5_0 (id 6): 22 bytes per 32 values; real, but not one Oasis runs.
    std::fs::write(&path, tiny_model("llama", 6, 22 * 4)).unwrap();
    assert_clean_error(&run_on(&path, &["hi"]), "Q5_0");
    std::fs::write(&path, tiny_model("llama", 77, 64)).unwrap();
    assert_clean_error(&run_on(&path, &["hi"]), "id 77");
}

#[test]
fn empty_prompt() {
    assert_clean_error(&run_on(&model_path(), &[""]), "prompt is empty");
}

#[test]
fn zero_max_tokens() {
    assert_clean_error(
        &run_on(&model_path(), &["--max-tokens", "0", "hi"]),
        "--max-tokens must be at least 1, got 0",
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let long = "word ".repeat(100);
    assert_clean_error(
        &run_on(&model_path(), &["--ctx", "32", &long]),
        "context holds 32",
    );
}

#[test]
fn out_of_range_sampling_parameters() {
    assert_clean_error(
        &run_on(&model_path(), &["--temperature", "5", "hi"]),
        "temperature",
    );
    assert_clean_error(&run_on(&model_path(), &["--top-p", "0", "hi"]), "top_p");
}

#[test]
fn token_ids_outside_the_vocabulary() {
    assert_clean_error(
        &run_on(&model_path(), &["--prompt-ids", "1,99999999"]),
        "outside the vocabulary",
    );
}
