//! Prefill and decode speed, measured as llama.cpp's `llama-bench` measures them, on any
//! device: a prompt of `prompt_tokens` pseudo-random tokens in one batch from an empty
//! cache (logits for the last position), then `gen_tokens` single-token steps from an
//! empty cache (full logits each), or `batch` sequences decoding together. Each test runs
//! `reps` times after one warm-up; medians are reported. With `depth`, both tests run after
//! that many tokens already in each sequence's cache (llama-bench's `-d`), filled untimed.

use std::time::Instant;

use crate::device::DeviceSpec;
use crate::error::{EngineError, Result};
use crate::model::hf::Phase;
use crate::model::{BatchSeq, Exec, KvBudget, KvPool, Logits, Model, SeqKv, blocks_for};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
    /// Sequences decoded together.
    pub batch: usize,
    /// Tokens already in each sequence's cache when a test starts (llama-bench's `-d`).
    pub depth: usize,
    pub threads: usize,
    pub device: DeviceSpec,
}

/// Medians and, for mixture-of-experts checkpoints, the decode time by phase.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Fraction of the decode time in each phase (empty for dense models).
    pub decode_time_fraction: Vec<(&'static str, f64)>,
    /// On a GPU under `OASIS_GPU_PROFILE=1`: the time per operation in the measured
    /// prefill and decode repetitions, by phase (`prefill`, `decode`).
    pub gpu_profile: Vec<(&'static str, Vec<kernels::cuda::OpTime>)>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub threads: usize,
    /// The CPU instruction set (`avx2`, `portable`), on the CPU.
    pub isa: Option<&'static str>,
}

/// llama-bench's token stream: deterministic here (a fixed LCG), any in-vocabulary ids.
#[derive(Debug)]
pub struct Tokens(u64);

impl Tokens {
    pub fn new(seed: u64) -> Tokens {
        Tokens(seed)
    }

    pub fn next(&mut self, vocab: usize) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % vocab as u64) as u32
    }
}

/// The median (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds per phase of a checkpoint's forward pass so far (zeros for GGUF models).
pub fn phase_seconds(model: &Model) -> Vec<f64> {
    match model.hf() {
        Some(hf) => hf.phase_seconds().into_iter().map(|(_, s)| s).collect(),
        None => vec![0.0; Phase::ALL.len()],
    }
}

/// Puts `context` into the cache of every sequence of `seqs` (untimed: the depth a test
/// starts from), one sequence per forward pass, so the pass is never larger than the
/// depth whatever the batch.
fn fill(
    exec: &mut Exec,
    model: &Model,
    kv: &mut KvPool,
    seqs: &mut [SeqKv],
    context: &[u32],
) -> Result<()> {
    if context.is_empty() {
        return Ok(());
    }
    for seq in seqs {
        let mut one = [BatchSeq {
            kv: seq,
            tokens: context,
            batched_order: true,
            logits: Logits::None,
        }];
        exec.forward_batch(model, kv, &mut one, None)?;
    }
    Ok(())
}

/// Runs the benchmark of `cfg` on `model`.
pub fn run(model: &Model, cfg: &BenchConfig) -> Result<BenchResult> {
    if cfg.prompt_tokens == 0 || cfg.gen_tokens == 0 || cfg.reps == 0 || cfg.batch == 0 {
        return Err(EngineError::InvalidRequest(
            "prompt tokens, generated tokens, repetitions and batch must be at least 1".into(),
        ));
    }
    let needed = cfg.depth + cfg.prompt_tokens.max(cfg.gen_tokens + 1);
    if needed > model.config.n_ctx_train {
        return Err(EngineError::InvalidRequest(format!(
            "the model's context holds {} tokens; the benchmark needs {needed}",
            model.config.n_ctx_train
        )));
    }
    let seq_blocks = blocks_for(needed);
    let decode_len = cfg.depth + cfg.gen_tokens + 1;
    let blocks = seq_blocks.max(cfg.batch * blocks_for(decode_len));
    let mut exec = Exec::new(
        model,
        &cfg.device,
        cfg.threads,
        KvBudget::Blocks(blocks),
        needed,
    )?;
    let mut kv = exec.kv_pool(model);
    let vocab = model.config.vocab_size;
    let first = match model.tokenizer_opt() {
        Some(tok) if tok.add_bos() => tok.bos_id(),
        _ => None,
    };
    let mut rng = Tokens::new(42);
    let mut prompt: Vec<u32> = (0..cfg.prompt_tokens).map(|_| rng.next(vocab)).collect();
    // The cache's first `depth` tokens, then the prompt (BOS only at the very start).
    let mut context: Vec<u32> = (0..cfg.depth).map(|_| rng.next(vocab)).collect();
    match (first, context.first_mut()) {
        (Some(bos), Some(t)) => *t = bos,
        (Some(bos), None) => prompt[0] = bos,
        (None, _) => {}
    }
    let mut prefill = Vec::with_capacity(cfg.reps);
    let mut decode = Vec::with_capacity(cfg.reps);
    let mut phases = vec![0f64; Phase::ALL.len()];
    let mut decode_secs = 0f64;
    let (mut prefill_profile, mut decode_profile) = (Vec::new(), Vec::new());
    for rep in 0..=cfg.reps {
        // What the warm-up left in the GPU profile is not this repetition's.
        let _ = exec.take_gpu_profile();
        let mut seq = SeqKv::new(needed);
        fill(
            &mut exec,
            model,
            &mut kv,
            std::slice::from_mut(&mut seq),
            &context,
        )?;
        let t = Instant::now();
        exec.forward_batch(
            model,
            &mut kv,
            &mut [BatchSeq {
                kv: &mut seq,
                tokens: &prompt,
                batched_order: true,
                logits: Logits::Last,
            }],
            None,
        )?;
        let pp = cfg.prompt_tokens as f64 / t.elapsed().as_secs_f64();
        kv.release(&mut seq);
        let prefill_ops = exec.take_gpu_profile();

        let mut seqs: Vec<SeqKv> = (0..cfg.batch).map(|_| SeqKv::new(decode_len)).collect();
        fill(&mut exec, model, &mut kv, &mut seqs, &context)?;
        let start = match first {
            Some(bos) if cfg.depth == 0 => Some(bos),
            _ => None,
        };
        let before = phase_seconds(model);
        let t = Instant::now();
        let mut tokens: Vec<[u32; 1]> = (0..cfg.batch)
            .map(|_| [start.unwrap_or_else(|| rng.next(vocab))])
            .collect();
        for _ in 0..cfg.gen_tokens {
            let mut batch: Vec<BatchSeq<'_>> = seqs
                .iter_mut()
                .zip(&tokens)
                .map(|(kv, t)| BatchSeq {
                    kv,
                    tokens: t,
                    batched_order: false,
                    logits: Logits::Last,
                })
                .collect();
            exec.forward_batch(model, &mut kv, &mut batch, None)?;
            for t in &mut tokens {
                t[0] = rng.next(vocab);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        for s in &mut seqs {
            kv.release(s);
        }
        let tg = (cfg.gen_tokens * cfg.batch) as f64 / secs;
        if rep > 0 {
            // Rep 0 is the warm-up (page faults, caches, kernel loading), as in llama-bench.
            prefill.push(pp);
            decode.push(tg);
            decode_secs += secs;
            for o in prefill_ops {
                kernels::cuda::OpTime::add(&mut prefill_profile, o);
            }
            for o in exec.take_gpu_profile() {
                kernels::cuda::OpTime::add(&mut decode_profile, o);
            }
            for ((sum, after), before) in phases.iter_mut().zip(phase_seconds(model)).zip(before) {
                *sum += after - before;
            }
        }
    }
    let decode_time_fraction = match model.hf() {
        Some(_) => Phase::ALL
            .iter()
            .zip(&phases)
            .map(|(p, s)| (p.name(), s / decode_secs))
            .collect(),
        None => Vec::new(),
    };
    Ok(BenchResult {
        prefill_tok_s: median(prefill),
        decode_tok_s: median(decode),
        decode_time_fraction,
        gpu_profile: vec![("prefill", prefill_profile), ("decode", decode_profile)],
        device: exec.device_name(),
        threads: exec.threads(),
        isa: exec.isa().map(|i| i.name()),
    })
}
