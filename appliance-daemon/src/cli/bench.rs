//! `oasis bench`: prefill and decode speed, measured the way llama.cpp's `llama-bench`
//! measures them, so the two can be compared side by side.
//!
//! Prefill: a prompt of `--prompt-tokens` pseudo-random tokens (BOS first where the model
//! adds one) in one batch from an empty cache, logits for the last position only. Decode:
//! `--gen-tokens` single-token steps from an empty cache, each computing full logits.
//! Each is repeated `--reps` times after one warm-up; the median is reported.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use engine::Logits;

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
        bail!("--prompt-tokens, --gen-tokens and --reps must be at least 1");
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
    let tok = engine.model().tokenizer();
    let first = if tok.add_bos() { tok.bos_id() } else { None };
    let mut rng = Tokens(42);
    let mut prompt: Vec<u32> = (0..args.prompt_tokens).map(|_| rng.next(vocab)).collect();
    if let Some(bos) = first {
        prompt[0] = bos;
    }

    let mut prefill = Vec::with_capacity(args.reps);
    let mut decode = Vec::with_capacity(args.reps);
    for rep in 0..=args.reps {
        engine.reset();
        let t = Instant::now();
        engine.forward(&prompt, Logits::Last)?;
        let pp = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();

        engine.reset();
        let mut token = first.unwrap_or_else(|| rng.next(vocab));
        let t = Instant::now();
        for _ in 0..args.gen_tokens {
            engine.forward(&[token], Logits::Last)?;
            token = rng.next(vocab);
        }
        let tg = args.gen_tokens as f64 / t.elapsed().as_secs_f64();
        if rep > 0 {
            // Rep 0 is the warm-up (page faults, caches), as in llama-bench.
            prefill.push(pp);
            decode.push(tg);
        }
    }
    let (pp, tg) = (median(prefill), median(decode));
    if args.json {
        let doc = serde_json::json!({
            "prefill_tok_s": (pp * 100.0).round() / 100.0,
            "decode_tok_s": (tg * 100.0).round() / 100.0,
            "threads": engine.threads(),
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "reps": args.reps,
            "isa": engine.isa().name(),
        });
        println!("{doc}");
    } else {
        println!(
            "{}: prefill {pp:.2} tok/s (pp{}), decode {tg:.2} tok/s (tg{}), {} threads, {}, median of {}",
            engine.model().name(),
            args.prompt_tokens,
            args.gen_tokens,
            engine.threads(),
            engine.isa().name(),
            args.reps
        );
    }
    Ok(())
}
