//! `oasis bench`: prefill and decode speed, measured the way llama.cpp's `llama-bench`
//! measures them, so the two can be compared side by side.
//!
//! Prefill: a prompt of `--prompt-tokens` pseudo-random tokens (BOS first where the model
//! adds one) in one batch from an empty cache, logits for the last position only. Decode:
//! `--gen-tokens` single-token steps from an empty cache, each computing full logits.
//! Each is repeated `--reps` times after one warm-up; the median is reported.
//!
//! `--batch N` decodes N sequences together instead (one batched forward pass per step, as
//! the scheduler runs them), and reports the tokens of all of them per second. For
//! mixture-of-experts checkpoints the decode time is split by phase (attention, routing,
//! routed experts, dense and shared feed-forward).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use engine::model::hf::Phase;
use engine::model::{BatchSeq, KvPool, Scratch, SeqKv, blocks_for};
use engine::{Logits, Model};
use kernels::{Isa, ThreadPool};

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length of the prefill test.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub prompt_tokens: usize,
    /// Tokens generated in the decode test.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub gen_tokens: usize,
    /// Repetitions of each test (the median is reported).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reps: usize,
    /// Sequences decoded together in the decode test.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// llama-bench's token stream: deterministic here (a fixed LCG), any in-vocabulary ids.
struct Tokens(u64);

impl Tokens {
    fn next(&mut self, vocab: usize) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % vocab as u64) as u32
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.reps == 0 {
        bail!("--prompt-tokens, --gen-tokens, --reps and --batch must be at least 1");
    }
    let needed = args.prompt_tokens.max(args.gen_tokens);
    let mut engine = args.model.engine(None)?;
    if needed > engine.context_len() {
        bail!(
            "the model's context holds {} tokens; the benchmark needs {needed}",
            engine.context_len()
        );
    }
    let vocab = engine.model().config.vocab_size;
    let first = match engine.model().tokenizer_opt() {
        Some(tok) if tok.add_bos() => tok.bos_id(),
        _ => None,
    };
    let mut rng = Tokens(42);
    let mut prompt: Vec<u32> = (0..args.prompt_tokens).map(|_| rng.next(vocab)).collect();
    if let Some(bos) = first {
        prompt[0] = bos;
    }

    let mut prefill = Vec::with_capacity(args.reps);
    let mut decode = Vec::with_capacity(args.reps);
    let batch = Batch::new(
        engine.model(),
        engine.threads(),
        args.batch,
        args.gen_tokens,
    )?;
    let mut phases = vec![0f64; Phase::ALL.len()];
    let mut decode_secs = 0f64;
    for rep in 0..=args.reps {
        engine.reset();
        let t = Instant::now();
        engine.forward(&prompt, Logits::Last)?;
        let pp = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();

        let before = phase_seconds(engine.model());
        let t = Instant::now();
        if let Some(b) = &batch {
            b.run(engine.model(), engine.isa(), first, &mut rng)?;
        } else {
            engine.reset();
            let mut token = first.unwrap_or_else(|| rng.next(vocab));
            for _ in 0..args.gen_tokens {
                engine.forward(&[token], Logits::Last)?;
                token = rng.next(vocab);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let tg = (args.gen_tokens * args.batch) as f64 / secs;
        if rep > 0 {
            // Rep 0 is the warm-up (page faults, caches), as in llama-bench.
            prefill.push(pp);
            decode.push(tg);
            decode_secs += secs;
            for ((sum, after), before) in phases
                .iter_mut()
                .zip(phase_seconds(engine.model()))
                .zip(before)
            {
                *sum += after - before;
            }
        }
    }
    let split: Vec<(&str, f64)> = match engine.model().hf() {
        Some(_) => Phase::ALL
            .iter()
            .zip(&phases)
            .map(|(p, s)| (p.name(), s / decode_secs))
            .collect(),
        None => Vec::new(),
    };
    let (pp, tg) = (median(prefill), median(decode));
    if args.json {
        let doc = serde_json::json!({
            "prefill_tok_s": (pp * 100.0).round() / 100.0,
            "decode_tok_s": (tg * 100.0).round() / 100.0,
            "threads": engine.threads(),
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "reps": args.reps,
            "batch": args.batch,
            "isa": engine.isa().name(),
            "decode_time_fraction": split.iter().map(|(n, f)| (n.to_string(), serde_json::json!((f * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{doc}");
    } else {
        println!(
            "{}: prefill {pp:.2} tok/s (pp{}), decode {tg:.2} tok/s (tg{} x batch {}), {} threads, {}, median of {}",
            engine.model().name(),
            args.prompt_tokens,
            args.gen_tokens,
            args.batch,
            engine.threads(),
            engine.isa().name(),
            args.reps
        );
        if !split.is_empty() {
            let parts: Vec<String> = split
                .iter()
                .map(|(n, f)| format!("{n} {:.1}%", f * 100.0))
                .collect();
            let rest = 1.0 - split.iter().map(|(_, f)| f).sum::<f64>();
            println!(
                "decode time: {}, rest (embeddings, norms, output head, scheduling) {:.1}%",
                parts.join(", "),
                rest * 100.0
            );
        }
    }
    Ok(())
}

/// Seconds per phase of a checkpoint's forward pass so far (empty for GGUF models).
fn phase_seconds(model: &Model) -> Vec<f64> {
    match model.hf() {
        Some(hf) => hf.phase_seconds().into_iter().map(|(_, s)| s).collect(),
        None => vec![0.0; Phase::ALL.len()],
    }
}

/// The batched decode test: `size` sequences stepping together.
struct Batch {
    pool: ThreadPool,
    size: usize,
    steps: usize,
    max_len: usize,
    kv: std::cell::RefCell<KvPool>,
}

impl Batch {
    /// None for a batch of one (the engine's own single-sequence path runs it).
    fn new(model: &Model, threads: usize, size: usize, steps: usize) -> Result<Option<Batch>> {
        if size <= 1 {
            return Ok(None);
        }
        let max_len = steps + 1;
        Ok(Some(Batch {
            pool: ThreadPool::new(threads),
            size,
            steps,
            max_len,
            kv: std::cell::RefCell::new(model.new_kv_pool(size * blocks_for(max_len))),
        }))
    }

    fn run(&self, model: &Model, isa: Isa, first: Option<u32>, rng: &mut Tokens) -> Result<()> {
        let vocab = model.config.vocab_size;
        let mut kv = self.kv.borrow_mut();
        let mut seqs: Vec<SeqKv> = (0..self.size).map(|_| SeqKv::new(self.max_len)).collect();
        let mut tokens: Vec<[u32; 1]> = (0..self.size)
            .map(|_| [first.unwrap_or_else(|| rng.next(vocab))])
            .collect();
        let mut scratch = Scratch::default();
        for _ in 0..self.steps {
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
            model.forward_batch(&self.pool, isa, &mut scratch, &mut kv, &mut batch)?;
            for t in &mut tokens {
                t[0] = rng.next(vocab);
            }
        }
        for s in &mut seqs {
            kv.release(s);
        }
        Ok(())
    }
}
