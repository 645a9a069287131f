//! `oasis bench`: prefill and decode speed, measured the way llama.cpp's `llama-bench`
//! measures them, so the two can be compared side by side.
//!
//! Prefill: a prompt of `--prompt-tokens` pseudo-random tokens (BOS first where the model
//! adds one) in one batch from an empty cache, logits for the last position only. Decode:
//! `--gen-tokens` single-token steps from an empty cache, each computing full logits.
//! Each is repeated `--reps` times after one warm-up; the median is reported.
//!
//! `--depth N` runs both tests after N tokens already in each sequence's cache (llama-bench's
//! `-d`; the filling is not timed), where attention over a long context weighs in.
//!
//! `--batch N` decodes N sequences together instead (one batched forward pass per step, as
//! the scheduler runs them), and reports the tokens of all of them per second. For
//! mixture-of-experts checkpoints the decode time is split by phase (attention, routing,
//! routed experts, dense and shared feed-forward).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use engine::bench::{Tokens, median, phase_seconds};
use engine::model::hf::Phase;

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
    /// Tokens already in each sequence's cache when a test starts, filled untimed
    /// (llama-bench's `-d`).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub depth: usize,
    /// Engine ranks (MoE checkpoints): the decode test runs `--batch` requests through a
    /// group of ranks, experts spread over them, and reports the time in dispatch/combine
    /// and the load imbalance between ranks.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub ranks: usize,
    /// Extra expert slots per MoE layer with `--ranks`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub redundant_experts: usize,
    /// With `--ranks`: every request gets the same 8-token prompt, so a few experts get
    /// most tokens (a skewed load).
    #[arg(long)]
    pub skewed: bool,
    /// With `--ranks`: after half the repetitions, rebalance the experts with EPLB from
    /// the loads seen so far; imbalance is reported before and after.
    #[arg(long)]
    pub rebalance: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.ranks > 1 {
        return bench_ranks(args);
    }
    let model = args.model.load()?;
    let device = args.model.device_for(&model)?;
    let r = engine::bench::run(
        &model,
        &engine::bench::BenchConfig {
            prompt_tokens: args.prompt_tokens,
            gen_tokens: args.gen_tokens,
            reps: args.reps,
            batch: args.batch,
            depth: args.depth,
            threads: args.model.threads(),
            device,
        },
    )?;
    let isa = r.isa.unwrap_or("gpu");
    if args.json {
        let doc = serde_json::json!({
            "prefill_tok_s": (r.prefill_tok_s * 100.0).round() / 100.0,
            "decode_tok_s": (r.decode_tok_s * 100.0).round() / 100.0,
            "threads": r.threads,
            "device": r.device,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "reps": args.reps,
            "batch": args.batch,
            "depth": args.depth,
            "isa": isa,
            "decode_time_fraction": r.decode_time_fraction.iter().map(|(n, f)| (n.to_string(), serde_json::json!((f * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
            "gpu_profile": r.gpu_profile.iter().flat_map(|(phase, ops)| ops.iter().map(move |o| serde_json::json!({"phase": phase, "op": o.op, "calls": o.calls, "seconds": o.seconds}))).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        println!(
            "{}: prefill {:.2} tok/s (pp{}), decode {:.2} tok/s (tg{} x batch {}){}, {} on {} threads, {isa}, median of {}",
            model.name(),
            r.prefill_tok_s,
            args.prompt_tokens,
            r.decode_tok_s,
            args.gen_tokens,
            args.batch,
            match args.depth {
                0 => String::new(),
                d => format!(" at depth {d}"),
            },
            r.device,
            r.threads,
            args.reps
        );
        let split = &r.decode_time_fraction;
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

/// Reports a request's end to the bench.
struct DoneSink(std::sync::mpsc::Sender<Result<(), String>>);

impl engine::serve::SeqSink for DoneSink {
    fn started(&mut self, _: usize) -> std::ops::ControlFlow<()> {
        std::ops::ControlFlow::Continue(())
    }
    fn token(&mut self, _: engine::TokenEvent<'_>) -> std::ops::ControlFlow<()> {
        std::ops::ControlFlow::Continue(())
    }
    fn finished(&mut self, _: engine::FinishReason, _: usize) {
        let _ = self.0.send(Ok(()));
    }
    fn failed(&mut self, e: engine::EngineError) {
        let _ = self.0.send(Err(e.to_string()));
    }
    fn alive(&self) -> bool {
        true
    }
}

/// The decode test through a group of ranks (expert parallelism).
fn bench_ranks(args: &BenchArgs) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if args.gen_tokens == 0 || args.reps == 0 || args.batch == 0 {
        bail!("--gen-tokens, --reps and --batch must be at least 1");
    }
    let model = std::sync::Arc::new(args.model.load()?);
    let Some(hf) = model.hf() else {
        bail!("--ranks needs a mixture-of-experts checkpoint");
    };
    let n_group = hf.cfg.moe.n_group();
    const PROMPT: usize = 8;
    let n_ctx = PROMPT + args.gen_tokens + 1;
    if n_ctx > model.config.n_ctx_train {
        bail!(
            "the model's context holds {} tokens",
            model.config.n_ctx_train
        );
    }
    let cfg = engine::serve::EngineConfig {
        device: engine::device::DeviceSpec::Cpu,
        threads: args.model.threads(),
        ranks: args.ranks,
        redundant_experts: args.redundant_experts,
        n_ctx,
        max_batch_tokens: 512,
        max_running: args.batch,
        max_step_ms: None,
        ttft_target_ms: None,
        kv: engine::model::KvBudget::Sequences(args.batch),
    };
    let group = engine::serve::spawn(model.clone(), cfg, "bench")?;
    let Some(ep) = group.ep().cloned() else {
        bail!("the group has one rank");
    };
    let vocab = model.config.vocab_size;
    let mut rng = Tokens::new(42);
    let (mut rates, mut imbalance) = (Vec::new(), Vec::new());
    let mut phases = vec![0f64; Phase::ALL.len()];
    let mut rank_secs = 0f64;
    let mut rebalance = None;
    for rep in 0..=args.reps {
        if args.rebalance && rep == args.reps / 2 + 1 {
            rebalance = Some(ep.rebalance(n_group).map_err(anyhow::Error::msg)?);
        }
        let pairs0: Vec<u64> = ep.rank_pairs.iter().map(|a| a.load(Relaxed)).collect();
        let before = phase_seconds(&model);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Instant::now();
        for _ in 0..args.batch {
            let prompt: Vec<u32> = if args.skewed {
                vec![7; PROMPT]
            } else {
                (0..PROMPT).map(|_| rng.next(vocab)).collect()
            };
            let request = engine::GenerateRequest {
                prompt: engine::Prompt::Tokens(prompt),
                max_tokens: args.gen_tokens,
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
            };
            let sub = engine::serve::Submission {
                request,
                tenant: String::new(),
                sink: Box::new(DoneSink(tx.clone())),
            };
            if group.submit(sub).is_err() {
                bail!("the engine ranks stopped");
            }
        }
        for _ in 0..args.batch {
            rx.recv()
                .map_err(|_| anyhow::anyhow!("the engine ranks stopped"))?
                .map_err(anyhow::Error::msg)?;
        }
        let secs = t.elapsed().as_secs_f64();
        if rep == 0 {
            continue; // warm-up
        }
        rates.push((args.batch * args.gen_tokens) as f64 / secs);
        let pairs: Vec<f64> = ep
            .rank_pairs
            .iter()
            .zip(&pairs0)
            .map(|(a, b)| (a.load(Relaxed) - b) as f64)
            .collect();
        let mean = pairs.iter().sum::<f64>() / pairs.len() as f64;
        imbalance.push(pairs.iter().fold(0f64, |m, x| m.max(*x)) / mean.max(1e-9));
        rank_secs += secs * args.ranks as f64;
        for ((sum, after), before) in phases.iter_mut().zip(phase_seconds(&model)).zip(before) {
            *sum += after - before;
        }
    }
    let split: Vec<(&str, f64)> = Phase::ALL
        .iter()
        .zip(&phases)
        .map(|(p, s)| (p.name(), s / rank_secs))
        .collect();
    let half = imbalance.len() / 2;
    let (im_before, im_after) = if rebalance.is_some() {
        (
            median(imbalance[..half].to_vec()),
            median(imbalance[half..].to_vec()),
        )
    } else {
        let m = median(imbalance.clone());
        (m, m)
    };
    let doc = serde_json::json!({
        "decode_tok_s": (median(rates) * 100.0).round() / 100.0,
        "ranks": args.ranks,
        "batch": args.batch,
        "gen_tokens": args.gen_tokens,
        "skewed": args.skewed,
        "redundant_experts": args.redundant_experts,
        "rank_time_fraction": split.iter().map(|(n, f)| (n.to_string(), serde_json::json!((f * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
        "imbalance_before": (im_before * 1000.0).round() / 1000.0,
        "imbalance_after": (im_after * 1000.0).round() / 1000.0,
        "rebalanced": rebalance.is_some(),
        "placement_balance_before": rebalance.as_ref().map(|r| r.before.clone()),
        "placement_balance_after": rebalance.as_ref().map(|r| r.after.clone()),
    });
    println!("{doc}");
    Ok(())
}
