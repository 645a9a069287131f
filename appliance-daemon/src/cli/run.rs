//! `oasis run`: one prompt, streamed to stdout (or one JSON object with `--json`).

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::sampling::SamplingParams;
use engine::tokenizer::ChatMessage;
use engine::{GenerateRequest, Prompt};

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Apply the model's chat template to PROMPT as one user message.
    #[arg(long)]
    pub chat: bool,
    /// Token ids to use as the prompt instead of text, e.g. `1,2,3`.
    #[arg(long, value_name = "IDS", value_delimiter = ',', conflicts_with_all = ["prompt", "chat"])]
    pub prompt_ids: Option<Vec<u32>>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (the default, so output is reproducible).
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: u32,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub min_p: f32,
    /// Penalise recently seen tokens (1 = off).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    pub frequency_penalty: f32,
    /// Random seed for sampling (same seed, same output).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Stop when this text appears (may be given several times).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Context limit in tokens [default: the model's].
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Print one JSON object with the token ids, text and finish reason.
    #[arg(long)]
    pub json: bool,
    /// Engine ranks (expert parallelism for MoE checkpoints: the experts spread over the
    /// ranks, tokens exchanged at each MoE layer; the answer is the same).
    #[arg(long, default_value_t = 1, value_name = "R", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub ranks: u16,
    /// Extra expert slots per MoE layer with `--ranks` (replicas).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub redundant_experts: usize,
    /// The prompt text.
    pub prompt: Option<String>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let prompt = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => Prompt::Tokens(ids.clone()),
        (None, Some(text)) if args.chat => {
            Prompt::Chat(vec![ChatMessage::new("user", text.clone())])
        }
        (None, Some(text)) => Prompt::Text(text.clone()),
        (None, None) => bail!("give a PROMPT (or --prompt-ids)"),
    };
    if matches!(&prompt, Prompt::Text(t) if t.is_empty())
        || matches!(&prompt, Prompt::Tokens(t) if t.is_empty())
    {
        bail!("the prompt is empty");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1, got 0");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    // Check the request before the (slower) model load.
    sampling.validate()?;
    let request = GenerateRequest {
        prompt,
        max_tokens: args.max_tokens,
        sampling,
        stop: args.stop.clone(),
        ignore_eos: false,
        min_tokens: 0,
        logprobs: None,
        constraint: None,
        prompt_lookup: 0,
    };
    if args.ranks > 1 {
        return run_ranked(args, request);
    }
    let mut engine = args.model.engine(args.ctx)?;
    let mut stdout = std::io::stdout().lock();
    let stream = !args.json;
    let mut write_err = None;
    let out = engine.generate(&request, &mut |event| {
        if stream
            && !event.text.is_empty()
            && let Err(e) = stdout
                .write_all(event.text.as_bytes())
                .and_then(|()| stdout.flush())
        {
            write_err = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = write_err {
        return Err(e).context("cannot write to stdout");
    }
    if args.json {
        let doc = serde_json::json!({
            "prompt_token_ids": out.prompt_token_ids,
            "output_token_ids": out.output_token_ids,
            "text": out.text,
            "finish_reason": out.finish_reason.as_str(),
        });
        writeln!(stdout, "{doc}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(())
}

/// What the ranks report to `run_ranked`.
enum Out {
    Token(u32, String),
    Done(engine::FinishReason),
    Failed(engine::EngineError),
}

struct ChannelSink(std::sync::mpsc::Sender<Out>);

impl engine::serve::SeqSink for ChannelSink {
    fn started(&mut self, _: usize) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn token(&mut self, ev: engine::TokenEvent<'_>) -> ControlFlow<()> {
        match self.0.send(Out::Token(ev.token_id, ev.text.to_string())) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
    fn finished(&mut self, reason: engine::FinishReason, _: usize) {
        let _ = self.0.send(Out::Done(reason));
    }
    fn failed(&mut self, e: engine::EngineError) {
        let _ = self.0.send(Out::Failed(e));
    }
    fn alive(&self) -> bool {
        true
    }
}

/// `oasis run --ranks R`: the request goes through a group of ranks, as the daemon runs it.
fn run_ranked(args: &RunArgs, request: GenerateRequest) -> Result<()> {
    let model = std::sync::Arc::new(args.model.load()?);
    let n_ctx = args.ctx.unwrap_or(model.config.n_ctx_train).max(1);
    let prompt_ids = engine::generate::tokenize(&model, &request.prompt)?;
    if prompt_ids.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens; the context holds {n_ctx}",
            prompt_ids.len()
        );
    }
    let ranks = usize::from(args.ranks);
    let device = args.model.device_for(&model)?;
    let cfg = engine::serve::EngineConfig {
        device,
        threads: args.model.threads(),
        ranks,
        redundant_experts: args.redundant_experts,
        n_ctx,
        max_batch_tokens: 512,
        max_running: 1,
        max_step_ms: None,
        ttft_target_ms: None,
        kv: engine::model::KvBudget::Sequences(ranks),
    };
    let group = engine::serve::spawn(model, cfg, "run").context("cannot start the engine ranks")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let sub = engine::serve::Submission {
        request: GenerateRequest {
            prompt: Prompt::Tokens(prompt_ids.clone()),
            ..request
        },
        tenant: String::new(),
        sink: Box::new(ChannelSink(tx)),
    };
    if group.submit(sub).is_err() {
        bail!("the engine ranks stopped");
    }
    let mut stdout = std::io::stdout().lock();
    let (mut ids, mut text) = (Vec::new(), String::new());
    let finish = loop {
        match rx.recv() {
            Ok(Out::Token(id, piece)) => {
                ids.push(id);
                if !args.json && !piece.is_empty() {
                    stdout
                        .write_all(piece.as_bytes())
                        .and_then(|()| stdout.flush())
                        .context("cannot write to stdout")?;
                }
                text.push_str(&piece);
            }
            Ok(Out::Done(reason)) => break reason,
            Ok(Out::Failed(e)) => return Err(e.into()),
            Err(_) => bail!("the engine ranks stopped"),
        }
    };
    if args.json {
        let doc = serde_json::json!({
            "prompt_token_ids": prompt_ids,
            "output_token_ids": ids,
            "text": text,
            "finish_reason": finish.as_str(),
            "ranks": group.ranks(),
        });
        writeln!(stdout, "{doc}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(())
}
