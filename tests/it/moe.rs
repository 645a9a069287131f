//! Mixture-of-experts checkpoints against Hugging Face transformers
//! (`tests/fixtures/tiny-moe`): final logits within 1e-3 relative error and identical
//! greedy continuations, through the engine, `oasis run` and the daemon's API (batched with
//! other requests); and clear errors for broken checkpoints.

use std::path::{Path, PathBuf};

use engine::{Engine, EngineOptions, Logits, Model};
use serde_json::{Value, json};
use tests::daemon::Daemon;
use tests::{fixture_json, oasis, stdout_ok, workspace_root};

const ARCHS: [&str; 6] = [
    "qwen3-moe",
    "qwen2-moe",
    "mixtral",
    "deepseek-v3",
    "deepseek-v3-fp8",
    "deepseek-v3-yarn-legacy",
];

/// The issue's bound: max |ours - theirs| over max |theirs|.
const MAX_REL_ERR: f64 = 1e-3;

fn dir(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/tiny-moe").join(name)
}

fn cases(name: &str) -> Vec<Value> {
    fixture_json(&format!("tiny-moe/{name}/reference.json"))["cases"]
        .as_array()
        .unwrap()
        .clone()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn rel_err(ours: &[f32], theirs: &Value) -> f64 {
    let theirs: Vec<f64> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = ours
        .iter()
        .zip(&theirs)
        .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
    diff / scale
}

/// Index of the largest logit (ties to the lowest).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn every_architecture_matches_transformers() {
    for name in ARCHS {
        let model = Model::load(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut engine = Engine::new(
            model,
            &EngineOptions {
                threads: 2,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        for (i, case) in cases(name).iter().enumerate() {
            engine.reset();
            let prompt = ids(&case["input_ids"]);
            let logits = engine.forward(&prompt, Logits::Last).unwrap().to_vec();
            let err = rel_err(&logits, &case["final_logits"]);
            eprintln!("{name} case {i}: final logits relative error {err:.2e}");
            assert!(err <= MAX_REL_ERR, "{name} case {i}: relative error {err}");
            // Greedy, one cached decode step at a time (transformers recomputed the whole
            // sequence each step, without a cache).
            let want = ids(&case["greedy_ids"]);
            let mut got = vec![argmax(&logits)];
            while got.len() < want.len() {
                let last = *got.last().unwrap();
                let l = engine.forward(&[last], Logits::Last).unwrap();
                got.push(argmax(l));
            }
            assert_eq!(got, want, "{name} case {i}");
        }
    }
}

#[test]
fn oasis_run_prints_the_greedy_continuations() {
    for name in ARCHS {
        let case = &cases(name)[0];
        let prompt: Vec<String> = ids(&case["input_ids"]).iter().map(u32::to_string).collect();
        let prompt = prompt.join(",");
        let path = dir(name);
        let base = [
            "run",
            "--json",
            "--threads",
            "2",
            "--model",
            path.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--max-tokens",
            "16",
        ];
        for ranks in [&[][..], &["--ranks", "4", "--redundant-experts", "2"][..]] {
            let out = oasis(&[&base[..], ranks].concat());
            let doc: Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
            assert_eq!(
                ids(&doc["output_token_ids"]),
                ids(&case["greedy_ids"]),
                "{name} {ranks:?}"
            );
            assert_eq!(doc["finish_reason"], "length");
        }
    }
}

/// The token ids of a completion with `logprobs`: a model without a tokenizer names its
/// tokens `token_id:N`.
fn completion_ids(doc: &Value) -> Vec<u32> {
    doc["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs in {doc}"))
        .iter()
        .map(|t| {
            t.as_str()
                .and_then(|t| t.strip_prefix("token_id:"))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("token {t}"))
        })
        .collect()
}

#[test]
fn the_daemon_serves_them_batched_with_other_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["--threads", "2"];
    let dirs: Vec<String> = ARCHS
        .iter()
        .map(|a| dir(a).to_string_lossy().into_owned())
        .collect();
    for d in &dirs {
        args.extend(["--model", d.as_str()]);
    }
    let d = Daemon::start(&tmp.path().join("data"), &args);
    let (status, models) = d.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(
        models["data"].as_array().unwrap().len(),
        ARCHS.len(),
        "{models}"
    );
    // Every case of every model at once, plus filler requests on the same models, so the
    // reference requests share steps with others.
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for name in ARCHS {
            for (i, case) in cases(name).into_iter().enumerate() {
                let d = &d;
                handles.push(s.spawn(move || {
                    let body = json!({"model": name, "prompt": case["input_ids"], "max_tokens": 16,
                                      "temperature": 0, "ignore_eos": true, "logprobs": 1});
                    let (status, doc) = d.post("/v1/completions", &body);
                    assert_eq!(status, 200, "{name}: {doc}");
                    assert_eq!(
                        completion_ids(&doc),
                        ids(&case["greedy_ids"]),
                        "{name} case {i}"
                    );
                }));
            }
            let d = &d;
            handles.push(s.spawn(move || {
                let body = json!({"model": name, "prompt": [[1, 2, 3], [4, 5, 6, 7, 8]],
                                  "max_tokens": 24, "temperature": 0.8, "seed": 1});
                let (status, doc) = d.post("/v1/completions", &body);
                assert_eq!(status, 200, "{doc}");
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    // A text prompt to a model without a tokenizer is a clear 400.
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": "mixtral", "prompt": "hello", "max_tokens": 2}),
    );
    assert_eq!(status, 400, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token ids"),
        "{doc}"
    );
    // Per-expert token counts reach /metrics.
    let resp = tests::daemon::raw_request(&d.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body);
    let routed: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("oasis_moe_expert_tokens_total{model=\"deepseek-v3\",layer=\"1\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // Layer 1 routes every token run through it to 2 experts.
    assert!(routed >= 2.0 * (16.0 + 15.0), "{routed}\n{text}");
    assert!(
        !text.contains("model=\"deepseek-v3\",layer=\"0\""),
        "layer 0 is dense"
    );
}

/// Copies a fixture checkpoint to a temporary folder for breaking.
fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(dir(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Rewrites a safetensors file's header with `edit`, keeping its data.
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn load_err(dir: &Path) -> String {
    let err = Model::load(dir).unwrap_err().to_string();
    // The same message reaches the command line, without a panic.
    let out = oasis(&["run", "--model", dir.to_str().unwrap(), "--prompt-ids", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    err
}

#[test]
fn broken_checkpoints_get_errors_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();

    // Unknown architecture.
    let d = tmp.path().join("arch");
    copy_fixture("mixtral", &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("MixtralForCausalLM", "FancyForCausalLM"),
    )
    .unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("FancyForCausalLM") && e.contains("MixtralForCausalLM"),
        "{e}"
    );

    // A tensor whose shape contradicts config.json.
    let d = tmp.path().join("shape");
    copy_fixture("qwen3-moe", &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace(
            "\"moe_intermediate_size\": 32",
            "\"moe_intermediate_size\": 48",
        ),
    )
    .unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors")
            && e.contains("experts.0.gate_proj.weight")
            && e.contains("[48, 64]"),
        "{e}"
    );

    // An FP8 tensor without its weight_scale_inv.
    let d = tmp.path().join("fp8");
    copy_fixture("deepseek-v3-fp8", &d);
    edit_header(&d.join("model.safetensors"), |h| {
        h.remove("model.layers.1.self_attn.o_proj.weight_scale_inv");
    });
    let e = load_err(&d);
    assert!(
        e.contains("model.layers.1.self_attn.o_proj.weight")
            && e.contains("weight_scale_inv")
            && e.contains("model.safetensors"),
        "{e}"
    );

    // A sharded checkpoint with a shard missing.
    let d = tmp.path().join("shards");
    copy_fixture("mixtral", &d);
    std::fs::rename(
        d.join("model.safetensors"),
        d.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let header = {
        let bytes = std::fs::read(d.join("model-00001-of-00002.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes[8..8 + n]).unwrap()
    };
    let mut map = serde_json::Map::new();
    for k in header.keys().filter(|k| *k != "__metadata__") {
        map.insert(k.clone(), json!("model-00001-of-00002.safetensors"));
    }
    map.insert(
        "lm_head.weight".into(),
        json!("model-00002-of-00002.safetensors"),
    );
    std::fs::write(
        d.join("model.safetensors.index.json"),
        json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing shard"),
        "{e}"
    );

    // A truncated shard.
    let d = tmp.path().join("truncated");
    copy_fixture("qwen2-moe", &d);
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

/// GPT-2's byte-to-character map of byte-level BPE vocabularies.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|x| !printable(*x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    }
}

/// A Qwen2-style byte-level BPE `tokenizer.json` + `tokenizer_config.json`: the 256 bytes,
/// merges building "hello" (id 259), and `<|im_end|>` (id 300) as end of turn.
pub(crate) fn write_tokenizer(dir: &Path) {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o")];
    for (i, (l, r)) in merges.iter().enumerate() {
        vocab.insert(format!("{l}{r}"), json!(256 + i));
    }
    let regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let tokenizer = json!({
        "version": "1.0",
        "added_tokens": [{"id": 300, "content": "<|im_end|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                  "merges": merges.iter().map(|(l, r)| format!("{l} {r}")).collect::<Vec<_>>()},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = json!({
        "add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>",
        "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

#[test]
fn a_checkpoint_with_tokenizer_json_takes_text_and_chat() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("qwen3-moe-tok");
    copy_fixture("qwen3-moe", &d);
    write_tokenizer(&d);
    let model = Model::load(&d).unwrap();
    let tok = model.tokenizer().unwrap();
    assert_eq!(tok.encode("hello", false).unwrap(), vec![259]);
    assert!(model.is_eog(300));

    let daemon = Daemon::start(
        &tmp.path().join("data"),
        &["--threads", "2", "--model", d.to_str().unwrap()],
    );
    // The text prompt and its token ids give the same greedy text.
    let body = |prompt: Value| json!({"model": "qwen3-moe-tok", "prompt": prompt, "max_tokens": 12, "temperature": 0});
    let (status, by_text) = daemon.post("/v1/completions", &body(json!("hello hello")));
    assert_eq!(status, 200, "{by_text}");
    let ids = tok.encode("hello hello", false).unwrap();
    let (status, by_ids) = daemon.post("/v1/completions", &body(json!(ids)));
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(by_text["choices"][0]["text"], by_ids["choices"][0]["text"]);
    assert_eq!(by_text["usage"]["prompt_tokens"], 3);
    // Chat renders through the checkpoint's template.
    let (status, chat) = daemon.post(
        "/v1/chat/completions",
        &json!({"model": "qwen3-moe-tok", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{chat}");
    // <user> hello <|im_end|> <assistant>: 6 + 1 + 1 + 11 tokens.
    assert_eq!(chat["usage"]["prompt_tokens"], 19, "{chat}");
}

/// Collects one request's tokens and reports them when it ends.
struct Collect {
    tokens: Vec<u32>,
    done: std::sync::mpsc::Sender<(usize, Result<Vec<u32>, String>)>,
    index: usize,
    /// Counts tokens across requests (to act while they run).
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl engine::serve::SeqSink for Collect {
    fn started(&mut self, _: usize) -> std::ops::ControlFlow<()> {
        std::ops::ControlFlow::Continue(())
    }
    fn token(&mut self, ev: engine::TokenEvent<'_>) -> std::ops::ControlFlow<()> {
        self.tokens.push(ev.token_id);
        self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::ops::ControlFlow::Continue(())
    }
    fn finished(&mut self, _: engine::FinishReason, _: usize) {
        let _ = self
            .done
            .send((self.index, Ok(std::mem::take(&mut self.tokens))));
    }
    fn failed(&mut self, e: engine::EngineError) {
        let _ = self.done.send((self.index, Err(e.to_string())));
    }
    fn alive(&self) -> bool {
        true
    }
}

fn greedy_request(prompt: Vec<u32>, max_tokens: usize) -> engine::GenerateRequest {
    engine::GenerateRequest {
        prompt: engine::Prompt::Tokens(prompt),
        max_tokens,
        sampling: engine::sampling::SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        stop: Vec::new(),
        ignore_eos: true,
        min_tokens: 0,
        logprobs: None,
        constraint: None,
        prompt_lookup: 0,
    }
}

/// Token copies sent, (token, expert) pairs routed, pairs computed by each rank.
type DispatchStats = (u64, u64, Vec<u64>);

/// Runs `prompts` (all at once) through a group of `ranks` ranks; their greedy tokens.
fn run_group(
    model: &std::sync::Arc<Model>,
    ranks: usize,
    redundant: usize,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> (Vec<Vec<u32>>, Option<DispatchStats>) {
    run_group_rebalancing(model, ranks, redundant, prompts, max_tokens, false)
}

/// [`run_group`], optionally proposing an EPLB rebalance once the requests have produced a
/// few tokens (installed at the next step, while they run).
fn run_group_rebalancing(
    model: &std::sync::Arc<Model>,
    ranks: usize,
    redundant: usize,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    rebalance: bool,
) -> (Vec<Vec<u32>>, Option<DispatchStats>) {
    let cfg = engine::serve::EngineConfig {
        device: engine::device::DeviceSpec::Cpu,
        threads: 2,
        ranks,
        redundant_experts: redundant,
        n_ctx: 512,
        max_batch_tokens: 64,
        max_running: 8,
        max_step_ms: None,
        ttft_target_ms: None,
        kv: engine::model::KvBudget::Blocks(64),
    };
    let group = engine::serve::spawn(model.clone(), cfg, "test").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for (index, p) in prompts.iter().enumerate() {
        let sub = engine::serve::Submission {
            request: greedy_request(p.clone(), max_tokens),
            tenant: format!("t{}", index % 3),
            sink: Box::new(Collect {
                tokens: Vec::new(),
                done: tx.clone(),
                index,
                seen: seen.clone(),
            }),
        };
        assert!(group.submit(sub).is_ok());
    }
    if rebalance {
        let ep = group.ep().unwrap();
        while seen.load(std::sync::atomic::Ordering::Relaxed) < prompts.len() * 2 {
            std::thread::yield_now();
        }
        ep.rebalance(1).unwrap();
        // Far from done, so steps follow and the next one installs it.
        let total = prompts.len() * max_tokens;
        assert!(
            seen.load(std::sync::atomic::Ordering::Relaxed) < total / 2,
            "the requests were nearly done before the rebalance"
        );
    }
    let mut out = vec![Vec::new(); prompts.len()];
    for _ in prompts {
        let (i, r) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a request never ended");
        out[i] = r.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
    }
    if rebalance {
        let rebalances = group
            .ep()
            .unwrap()
            .rebalances
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            rebalances, 1,
            "the rebalance was not installed while the requests ran"
        );
    }
    let stats = group.ep().map(|ep| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            ep.tokens_sent.load(Relaxed),
            ep.pairs_routed.load(Relaxed),
            ep.rank_pairs.iter().map(|a| a.load(Relaxed)).collect(),
        )
    });
    (out, stats)
}

#[test]
fn expert_parallel_ranks_give_the_same_tokens() {
    for name in ARCHS {
        let model = std::sync::Arc::new(Model::load(&dir(name)).unwrap());
        let cs = cases(name);
        let prompts: Vec<Vec<u32>> = cs.iter().map(|c| ids(&c["input_ids"])).collect();
        let want: Vec<Vec<u32>> = cs.iter().map(|c| ids(&c["greedy_ids"])).collect();
        for (ranks, redundant) in [(1, 0), (2, 0), (4, 0), (2, 3), (4, 4)] {
            let (got, stats) = run_group(&model, ranks, redundant, &prompts, 16);
            assert_eq!(
                got, want,
                "{name}: {ranks} ranks, {redundant} redundant experts"
            );
            if let Some((sent, pairs, per_rank)) = stats {
                // Top-2 routing: a token goes once to a rank holding both its experts.
                assert!(
                    sent <= pairs,
                    "{name}: {sent} token copies for {pairs} pairs"
                );
                assert!(
                    per_rank.iter().sum::<u64>() == pairs,
                    "{per_rank:?} vs {pairs}"
                );
            }
        }
        // A rebalance while they run changes no token.
        let (long, _) = run_group(&model, 1, 0, &prompts, 48);
        for (ranks, redundant) in [(2, 2), (4, 0)] {
            let (got, _) = run_group_rebalancing(&model, ranks, redundant, &prompts, 48, true);
            assert_eq!(got, long, "{name}: {ranks} ranks, rebalanced while running");
        }
        // One request on four ranks: three ranks have no tokens and still serve experts.
        let (got, stats) = run_group(&model, 4, 0, &prompts[..1], 16);
        assert_eq!(got[0], want[0], "{name}: one request on 4 ranks");
        let per_rank = stats.unwrap().2;
        assert!(
            per_rank.iter().filter(|p| **p > 0).count() > 1,
            "{name}: {per_rank:?}"
        );
    }
}

#[test]
fn the_daemon_runs_experts_over_four_ranks_and_rebalances_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = dir("deepseek-v3");
    let d = Daemon::start(
        &tmp.path().join("data"),
        &[
            "--threads",
            "2",
            "--ranks",
            "4",
            "--redundant-experts",
            "4",
            "--model",
            ds.to_str().unwrap(),
        ],
    );
    let model = std::sync::Arc::new(Model::load(&ds).unwrap());
    let complete = |prompt: &[u32], max_tokens: usize| {
        let body = json!({"model": "deepseek-v3", "prompt": prompt, "max_tokens": max_tokens,
                          "temperature": 0, "ignore_eos": true, "logprobs": 1});
        let (status, doc) = d.post("/v1/completions", &body);
        assert_eq!(status, 200, "{doc}");
        completion_ids(&doc)
    };
    // The fixtures' cases, at once, over four ranks.
    let cs = cases("deepseek-v3");
    std::thread::scope(|s| {
        let hs: Vec<_> = cs
            .iter()
            .map(|c| {
                s.spawn(|| assert_eq!(complete(&ids(&c["input_ids"]), 16), ids(&c["greedy_ids"])))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let (status, ex) = d.get("/admin/v1/engine/experts");
    assert_eq!(status, 200);
    let m = &ex["models"][0];
    assert_eq!(m["ranks"], 4);
    assert_eq!(m["slots_per_rank"], 3, "{m}");
    let initial = m["placement"].clone();
    assert_eq!(initial.as_array().unwrap().len(), 3);
    assert!(
        m["expert_tokens"][1]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_u64().unwrap() > 0)
    );

    // Long requests; a rebalance proposed while they run is installed between two steps.
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| vec![3 + i, 100 + 7 * i, 5, 250 - i, 17])
        .collect();
    let t = std::time::Instant::now();
    let (want, _) = run_group(&model, 1, 0, &prompts, 400);
    eprintln!("reference: {:?}", t.elapsed());
    let running = || {
        d.get("/admin/v1/status").1["models"][0]["running"]
            .as_u64()
            .unwrap()
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| s.spawn(|| complete(p, 400)))
            .collect();
        let started = std::time::Instant::now();
        while running() == 0 && started.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        eprintln!("running after {:?}", started.elapsed());
        let (status, report) = d.post(
            "/admin/v1/engine/rebalance",
            &json!({"model": "deepseek-v3"}),
        );
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["before"].as_array().unwrap().len(), 3);
        let still_running = running() > 0;
        for (h, w) in hs.into_iter().zip(&want) {
            assert_eq!(
                &h.join().unwrap(),
                w,
                "an output changed across the rebalance"
            );
        }
        assert!(
            still_running,
            "the requests ended before the rebalance was proposed"
        );
        eprintln!("rebalance proposed under load: {report}");
    });
    // The next step installs it, if the requests ended first.
    let _ = complete(&[1, 2, 3], 2);
    let (_, ex) = d.get("/admin/v1/engine/experts");
    let m = &ex["models"][0];
    assert_eq!(m["rebalances"], 1, "{m}");
    assert_ne!(
        m["placement"], initial,
        "EPLB kept the round-robin placement"
    );
    // After the rebalance the same requests still give the same tokens.
    assert_eq!(complete(&prompts[0], 400), want[0]);
    let resp = tests::daemon::raw_request(&d.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body);
    assert!(
        text.contains("oasis_rank_imbalance_ratio{model=\"deepseek-v3\"}"),
        "{text}"
    );
    assert!(text.contains("oasis_rank_expert_pairs_total{model=\"deepseek-v3\",rank=\"3\"}"));
    // Bad requests.
    let (status, _) = d.post("/admin/v1/engine/rebalance", &json!({"model": "nope"}));
    assert_eq!(status, 404);
    let (status, _) = d.post(
        "/admin/v1/engine/rebalance",
        &json!({"modle": "deepseek-v3"}),
    );
    assert_eq!(status, 400);
}
