//! Every parser of outside bytes, fed mutated inputs: the GGUF reader and the model built on
//! it (from the real SmolLM2 header), safetensors checkpoints and their `config.json`,
//! `tokenizer.json`, firmware profiles, and the API's request bodies through the edge's
//! checks. Each case must end in a value or an error, never a panic, and no case may ask
//! for an allocation larger than its input could describe (the allocation probe in
//! `kernels` records each thread's largest).
//!
//! Cases come from a seeded generator; `OASIS_FUZZ_CASES` scales their number (the default,
//! 10, runs some 90,000 cases in about 20 s on two cores) and `OASIS_FUZZ_SEED` replays a
//! run. A failing case is written to `target/fuzz-failures/` and named in the panic.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use kernels::alloc_probe;
use serde_json::Value;
use tests::{model_path, workspace_root};

/// A small, fast generator (xorshift64*): the same seed gives the same cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seed() -> u64 {
    std::env::var("OASIS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |t| t.as_nanos() as u64)
        })
}

/// Cases per parser: `base` scaled by `OASIS_FUZZ_CASES` (a multiplier, default 10).
fn cases(base: usize) -> usize {
    let k: f64 = std::env::var("OASIS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    ((base as f64) * k).max(1.0) as usize
}

/// Values that break arithmetic: zero, one, the edges of each width.
const EXTREMES: &[u64] = &[
    0,
    1,
    2,
    0x7F,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// One random change to `bytes`, kept mostly inside `0..limit` (the part worth mutating).
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, limit: usize) {
    let limit = limit.min(bytes.len()).max(1);
    let at = rng.below(limit);
    match rng.below(8) {
        0 => {
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 => {
            if let Some(b) = bytes.get_mut(at) {
                *b = [0x00, 0xFF, 0x7F, 0x80, b'"', b'{', b'\n'][rng.below(7)];
            }
        }
        2 | 3 => {
            // An integer field overwritten with an extreme value (4 or 8 bytes).
            let v = EXTREMES[rng.below(EXTREMES.len())];
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            for (i, b) in v.to_le_bytes().iter().take(width).enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = *b;
                }
            }
        }
        4 => bytes.truncate(at),
        5 => {
            let n = 1 + rng.below(16);
            let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let at = at.min(bytes.len());
            bytes.splice(at..at, fill);
        }
        6 => {
            let end = (at + 1 + rng.below(64)).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        _ => {
            // A piece copied over another (repeated structure in the wrong place).
            let len = 1 + rng.below(32);
            let from = rng.below(limit);
            let piece: Vec<u8> = bytes.iter().skip(from).take(len).copied().collect();
            for (i, b) in piece.into_iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = b;
                }
            }
        }
    }
}

/// Numbers, strings and nesting in JSON or TOML text replaced by hostile ones.
fn mutate_text(rng: &mut Rng, text: &str) -> String {
    const SWAPS: &[&str] = &[
        "-1",
        "0",
        "1e308",
        "-1e308",
        "18446744073709551616",
        "9223372036854775807",
        "4294967296",
        "NaN",
        "\"\"",
        "\"\\u0000\"",
        "\"é\u{1F600}\u{202E}\"",
        "null",
        "true",
        "[]",
        "{}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return SWAPS[rng.below(SWAPS.len())].to_string();
    }
    // Find a number or a quoted string to replace.
    for _ in 0..8 {
        let at = rng.below(chars.len());
        let c = chars[at];
        let (start, end) = if c.is_ascii_digit() {
            let mut s = at;
            while s > 0
                && (chars[s - 1].is_ascii_digit() || chars[s - 1] == '.' || chars[s - 1] == '-')
            {
                s -= 1;
            }
            let mut e = at;
            while e < chars.len() && (chars[e].is_ascii_alphanumeric() || chars[e] == '.') {
                e += 1;
            }
            (s, e)
        } else if c == '"' {
            let mut e = at + 1;
            while e < chars.len() && chars[e] != '"' {
                e += 1;
            }
            (at, (e + 1).min(chars.len()))
        } else {
            continue;
        };
        let mut out: String = chars[..start].iter().collect();
        out.push_str(SWAPS[rng.below(SWAPS.len())]);
        out.extend(&chars[end..]);
        return out;
    }
    let mut bytes = text.as_bytes().to_vec();
    mutate(rng, &mut bytes, usize::MAX);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs one case: no panic, and no allocation beyond `bound` bytes. A failing input is
/// saved and named.
fn check_case(kind: &str, case: usize, seed: u64, input: &[u8], bound: usize, run: impl FnOnce()) {
    alloc_probe::reset_largest();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(run));
    let largest = alloc_probe::largest();
    let problem = match outcome {
        Err(p) => Some(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Ok(()) if largest > bound => Some(format!(
            "allocated {largest} bytes at once for an input of {} bytes (bound {bound})",
            input.len()
        )),
        Ok(()) => None,
    };
    if let Some(problem) = problem {
        let dir = workspace_root().join("target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{kind}-seed{seed}-case{case}"));
        let _ = std::fs::write(&file, input);
        panic!(
            "{kind} case {case} (OASIS_FUZZ_SEED={seed}) {problem}; input in {}",
            file.display()
        );
    }
}

/// The allocation a parser may make for an input of `len` bytes: a generous multiple of
/// what the input could describe, plus room for fixed tables.
fn bound(len: usize, fixed: usize) -> usize {
    64 * len + fixed
}

/// The real SmolLM2 file's header (metadata with the tokenizer, tensor infos), and the
/// file's length: mutated headers are written in front of a sparse file of that length,
/// so the model builder sees a file as long as the real one.
fn smollm2_header() -> (Vec<u8>, u64) {
    let path = model_path();
    let gguf = engine::gguf::GgufFile::open(&path).unwrap();
    let data_offset = gguf.data_offset() as usize;
    let bytes = std::fs::read(&path).unwrap();
    (bytes[..data_offset].to_vec(), bytes.len() as u64)
}

#[test]
fn gguf_headers_and_the_models_built_on_them() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (header, file_len) = smollm2_header();
    // In memory: the reader alone, many cases (the tensor data is absent, so most end in
    // an error about it after the header and metadata parsed).
    for case in 0..cases(1500) {
        let mut bytes = header.clone();
        for _ in 0..1 + rng.below(4) {
            // Mostly the first KiB (counts, types, lengths), sometimes anywhere.
            let limit = if rng.below(3) == 0 { bytes.len() } else { 1024 };
            mutate(&mut rng, &mut bytes, limit);
        }
        let input = bytes.clone();
        check_case(
            "gguf",
            case,
            seed,
            &input,
            bound(input.len(), 1 << 20),
            || {
                let _ = engine::gguf::GgufFile::from_bytes(bytes);
            },
        );
    }
    // Through `Model::load`: hyperparameters, tensor shapes, the tokenizer from metadata.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    for case in 0..cases(60) {
        let mut bytes = header.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut bytes, usize::MAX);
        }
        std::fs::write(&path, &bytes).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(file_len.max(bytes.len() as u64))
            .unwrap();
        // The file is as long as the real one (its tensor data zeros): a count in the
        // header may make the reader walk into the data, but never allocate more than the
        // file holds (a real load's largest allocation is about 2 MB).
        let file_bound = file_len as usize + (16 << 20);
        check_case("gguf-model", case, seed, &bytes, file_bound, || {
            let _ = engine::Model::load(&path);
        });
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn checkpoints_their_configs_and_tokenizers() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let fixtures: Vec<PathBuf> =
        std::fs::read_dir(workspace_root().join("tests/fixtures/tiny-moe"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
    let tmp = tempfile::tempdir().unwrap();
    for case in 0..cases(240) {
        let src = &fixtures[rng.below(fixtures.len())];
        let dir = tmp.path().join(format!("c{case}"));
        copy_dir(src, &dir);
        let _ = std::fs::remove_file(dir.join("reference.json"));
        crate::moe::write_tokenizer(&dir);
        // One of the four files the loader reads.
        let (name, binary) = [
            ("model.safetensors", true),
            ("config.json", false),
            ("tokenizer.json", false),
            ("tokenizer_config.json", false),
        ][rng.below(4)];
        let file = dir.join(name);
        let original = std::fs::read(&file).unwrap();
        let mutated = if binary {
            // The header: its length prefix and JSON.
            let mut bytes = original.clone();
            let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut bytes, header_len);
            }
            bytes
        } else {
            let mut text = String::from_utf8_lossy(&original).into_owned();
            for _ in 0..1 + rng.below(3) {
                text = mutate_text(&mut rng, &text);
            }
            text.into_bytes()
        };
        std::fs::write(&file, &mutated).unwrap();
        let total: usize = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len() as usize)
            .sum();
        check_case(name, case, seed, &mutated, bound(total, 16 << 20), || {
            let _ = engine::Model::load(&dir);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn firmware_profiles() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let dir = workspace_root().join("firmware-profiles/profiles");
    let profiles: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for case in 0..cases(3000) {
        let mut text = profiles[rng.below(profiles.len())].clone();
        for _ in 0..1 + rng.below(4) {
            text = mutate_text(&mut rng, &text);
        }
        check_case(
            "profile",
            case,
            seed,
            text.as_bytes(),
            bound(text.len(), 1 << 20),
            || {
                let _ = firmware_profiles::Profile::parse(&text, "fuzz.toml");
            },
        );
    }
}

#[test]
fn request_bodies_through_the_edge() {
    use appliance_daemon::server::{extract, openai, validate};
    let seed = seed();
    let mut rng = Rng::new(seed);
    let model = engine::Model::load(&model_path()).unwrap();
    let chats = [
        r#"{"model":"m","messages":[{"role":"user","content":"Hello there"}],"max_tokens":8,"temperature":0.7,"top_p":0.9,"n":2,"stop":["\n","END"],"logprobs":true,"top_logprobs":3,"seed":7}"#,
        r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Why?"}]},{"role":"assistant","content":null}],"stream":true,"stream_options":{"include_usage":true},"min_tokens":2,"max_completion_tokens":16}"#,
    ];
    let texts = [
        r#"{"model":"m","prompt":"Once upon","max_tokens":4,"echo":true,"n":3,"repetition_penalty":1.1}"#,
        r#"{"model":"m","prompt":[[1,2,3],[4,5]],"logprobs":2,"stop":"x","presence_penalty":-1.5}"#,
        r#"{"model":"m","prompt":["a","b"],"top_k":-1,"min_p":0.05,"suffix":"","ignore_eos":true}"#,
    ];
    for case in 0..cases(4000) {
        let chat = rng.below(2) == 0;
        let base = if chat {
            chats[rng.below(chats.len())]
        } else {
            texts[rng.below(texts.len())]
        };
        let mut text = base.to_string();
        for _ in 0..1 + rng.below(4) {
            text = mutate_text(&mut rng, &text);
        }
        let model = &model;
        check_case(
            "request",
            case,
            seed,
            text.as_bytes(),
            bound(text.len(), 1 << 20),
            || {
                if chat {
                    if let Ok(req) =
                        extract::parse::<openai::ChatCompletionRequest>(text.as_bytes())
                    {
                        let _ = validate::chat(&req, model, 128);
                    }
                } else if let Ok(req) = extract::parse::<openai::CompletionRequest>(text.as_bytes())
                {
                    let _ = validate::completion(&req, model, 128);
                }
            },
        );
    }
    // A body that is valid JSON and deeply nested does not overflow the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(extract::parse::<openai::ChatCompletionRequest>(deep.as_bytes()).is_err());
    let _ = Value::Null;
}
