//! `oasis model import|rm`, `oasis deploy`, `oasis undeploy`, `oasis job`: model
//! management through a running daemon's admin API.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::DaemonArgs;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A `.gguf` file, a Hugging Face checkpoint folder or a `.tar` bundle on this box.
    pub path: PathBuf,
    /// The model's id in the catalog [default: from the file or folder name].
    #[arg(long)]
    pub name: Option<String>,
    /// Use the files where they lie instead of copying them into the model store.
    #[arg(long)]
    pub in_place: bool,
    /// Start the import and print its job id without following it.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The model's id (`oasis model list`).
    pub id: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The catalog id of the model to serve.
    pub model: String,
    /// The served name [default: the model's id]. If a deployment of that name exists, the
    /// model replaces it without dropping a request (a hot swap).
    #[arg(long)]
    pub name: Option<String>,
    /// Another name that reaches it (repeatable).
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,
    /// Engine ranks (expert parallelism) [default: the daemon's].
    #[arg(long)]
    pub ranks: Option<usize>,
    /// Context limit per sequence [default: the daemon's].
    #[arg(long, value_name = "TOKENS")]
    pub context: Option<usize>,
    /// Sequences batched at once [default: the daemon's].
    #[arg(long, value_name = "N")]
    pub max_sequences: Option<usize>,
    /// Prompt-lookup speculative decoding for requests that do not ask: draft tokens
    /// verified per step, 0 to 16 (0: off) [default: off].
    #[arg(long, value_name = "TOKENS")]
    pub prompt_lookup: Option<usize>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// The deployment's name.
    pub name: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Every job, newest first.
    List(super::status::StatusArgs),
    /// One job; `--follow` shows its progress until it ends.
    Show(JobArgs),
    /// Cancels a job that has not finished.
    Cancel(JobArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    pub id: String,
    /// Follow the job's progress until it ends.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

pub fn import(args: &ImportArgs) -> Result<()> {
    let path = std::path::absolute(&args.path)
        .with_context(|| format!("cannot resolve {}", args.path.display()))?;
    let job = args.daemon.send(
        "POST",
        "/admin/v1/models/import",
        Some(&json!({
            "path": path.display().to_string(),
            "name": args.name,
            "in_place": args.in_place,
        })),
    )?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    if args.detach {
        if args.daemon.json {
            println!("{job}");
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    eprintln!(
        "importing {} as `{}` (job {id}; `oasis job cancel {id}` stops it)",
        path.display(),
        job["model"].as_str().unwrap_or("?")
    );
    finish(&args.daemon, &id)
}

/// Follows job `id` to its end with a progress bar on stderr; an error unless it ended
/// ready.
fn finish(daemon: &DaemonArgs, id: &str) -> Result<()> {
    let last = follow(daemon, id)?;
    if daemon.json {
        println!("{last}");
    }
    match last["state"].as_str() {
        Some("ready") => {
            let model = last["model"].as_str().unwrap_or("?");
            if !daemon.json {
                let m = daemon.get(&format!("/admin/v1/models/{model}"))?;
                println!(
                    "imported `{model}`: {} {}, {:.1} MB, {}",
                    m["format"].as_str().unwrap_or("?"),
                    m["architecture"].as_str().unwrap_or("?"),
                    m["size_bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
                    m["digest"].as_str().unwrap_or("?"),
                );
            }
            Ok(())
        }
        Some("cancelled") => bail!("import {id} was cancelled"),
        _ => bail!(
            "import {id} failed: {}",
            last["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// Shows a job's progress until it ends; returns its last view.
fn follow(daemon: &DaemonArgs, id: &str) -> Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let mut bar = Bar::default();
    let mut last = Value::Null;
    daemon.events(&format!("/admin/v1/jobs/{id}/events"), |v| {
        bar.show(&v, tty);
        let done = matches!(v["state"].as_str(), Some("ready" | "failed" | "cancelled"));
        last = v;
        !done
    })?;
    if tty {
        eprintln!();
    }
    if last.is_null() {
        bail!("the daemon closed the progress stream of job {id}");
    }
    Ok(last)
}

/// A progress line: redrawn in place on a terminal, one line per state and per tenth
/// otherwise (logs, tests).
#[derive(Debug, Default)]
struct Bar {
    state: String,
    tenth: u64,
}

impl Bar {
    fn show(&mut self, v: &Value, tty: bool) {
        let state = v["state"].as_str().unwrap_or("?").to_string();
        let done = v["bytes_done"].as_u64().unwrap_or(0);
        let total = v["bytes_total"].as_u64().unwrap_or(0);
        let pct = (done.min(total) * 100).checked_div(total).unwrap_or(0);
        let line = render_progress(v);
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if state != self.state || pct / 10 > self.tenth {
            let _ = writeln!(err, "{line}");
        }
        if state != self.state {
            self.tenth = 0;
        }
        self.tenth = self.tenth.max(pct / 10);
        self.state = state;
    }
}

/// `copying    [########............]  40%   1.2/3.0 GB  110.0 MB/s  ETA 16s`
pub fn render_progress(v: &Value) -> String {
    let state = v["state"].as_str().unwrap_or("?");
    let done = v["bytes_done"].as_u64().unwrap_or(0);
    let total = v["bytes_total"].as_u64().unwrap_or(0);
    if total == 0 || matches!(state, "queued" | "failed" | "cancelled") {
        return state.to_string();
    }
    if state == "ready" {
        return format!("ready     [{}] 100%  {}", "#".repeat(20), human(total));
    }
    let frac = (done.min(total) as f64 / total as f64).clamp(0.0, 1.0);
    let width = 20;
    let filled = (frac * width as f64).round() as usize;
    let rate = v["rate_bytes_per_s"].as_f64().unwrap_or(0.0);
    let eta = v["eta_s"]
        .as_f64()
        .map_or_else(String::new, |s| format!("  ETA {}s", s.ceil() as u64));
    format!(
        "{state:<9} [{}{}] {:>3}%  {}/{}  {}/s{eta}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (frac * 100.0).floor() as u64,
        human(done),
        human(total),
        human(rate as u64),
    )
}

/// Bytes for people: `512 B`, `98.4 MB`, `1.31 TB`.
fn human(b: u64) -> String {
    let b = b as f64;
    match b {
        x if x >= 1e12 => format!("{:.2} TB", x / 1e12),
        x if x >= 1e9 => format!("{:.2} GB", x / 1e9),
        x if x >= 1e6 => format!("{:.1} MB", x / 1e6),
        x if x >= 1e3 => format!("{:.1} kB", x / 1e3),
        x => format!("{x} B"),
    }
}

pub fn rm(args: &RmArgs) -> Result<()> {
    let doc = args
        .daemon
        .send("DELETE", &format!("/admin/v1/models/{}", args.id), None)?;
    if args.daemon.json {
        println!("{doc}");
    } else {
        println!(
            "deleted `{}` (freed {})",
            args.id,
            human(doc["freed_bytes"].as_u64().unwrap_or(0))
        );
    }
    Ok(())
}

pub fn deploy(args: &DeployArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| args.model.clone());
    let (status, existing) =
        args.daemon
            .call("GET", &format!("/admin/v1/deployments/{name}"), None)?;
    let mut body = json!({ "model": args.model });
    if !args.aliases.is_empty() {
        body["aliases"] = json!(args.aliases);
    }
    for (key, v) in [
        ("ranks", args.ranks),
        ("context_length", args.context),
        ("max_sequences", args.max_sequences),
        ("prompt_lookup", args.prompt_lookup),
    ] {
        if let Some(v) = v {
            body[key] = json!(v);
        }
    }
    let doc = if status == 200 {
        args.daemon.send(
            "PATCH",
            &format!("/admin/v1/deployments/{name}"),
            Some(&body),
        )?
    } else {
        body["name"] = json!(name);
        args.daemon
            .send("POST", "/admin/v1/deployments", Some(&body))?
    };
    if args.daemon.json {
        println!("{doc}");
        return Ok(());
    }
    let ctx = doc["engine"]["context_length"].as_u64().unwrap_or(0);
    if status == 200 {
        println!(
            "`{name}` now serves `{}` (was `{}`; generation {}, context {ctx})",
            args.model,
            existing["model"].as_str().unwrap_or("?"),
            doc["generation"]
        );
    } else {
        println!("`{name}` serves `{}` (context {ctx})", args.model);
    }
    Ok(())
}

pub fn undeploy(args: &UndeployArgs) -> Result<()> {
    let doc = args.daemon.send(
        "DELETE",
        &format!("/admin/v1/deployments/{}", args.name),
        None,
    )?;
    if args.daemon.json {
        println!("{doc}");
    } else {
        println!(
            "`{}` is no longer served (the model `{}` stays in the catalog)",
            args.name,
            doc["model"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn job(cmd: &JobCommand) -> Result<()> {
    match cmd {
        JobCommand::List(args) => {
            let doc = args.daemon.get("/admin/v1/jobs")?;
            if args.daemon.json {
                println!("{doc}");
                return Ok(());
            }
            for j in doc["data"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<9}  {}  {}{}",
                    j["id"].as_str().unwrap_or("?"),
                    j["state"].as_str().unwrap_or("?"),
                    j["model"].as_str().unwrap_or("?"),
                    j["source"].as_str().unwrap_or("?"),
                    j["error"]
                        .as_str()
                        .map_or_else(String::new, |e| format!("  ({e})")),
                );
            }
            Ok(())
        }
        JobCommand::Show(a) => {
            if a.follow {
                return finish(&a.daemon, &a.id);
            }
            let doc = a.daemon.get(&format!("/admin/v1/jobs/{}", a.id))?;
            if a.daemon.json {
                println!("{doc}");
            } else {
                println!("{}  {}", a.id, render_progress(&doc));
                if let Some(e) = doc["error"].as_str() {
                    println!("error: {e}");
                }
            }
            Ok(())
        }
        JobCommand::Cancel(a) => {
            let doc = a
                .daemon
                .send("POST", &format!("/admin/v1/jobs/{}/cancel", a.id), None)?;
            if a.daemon.json {
                println!("{doc}");
            } else {
                println!("cancelling {}", a.id);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_reads_well() {
        let v = json!({"state": "copying", "bytes_done": 1_200_000_000u64,
            "bytes_total": 3_000_000_000u64, "rate_bytes_per_s": 110e6, "eta_s": 16.4});
        assert_eq!(
            render_progress(&v),
            "copying   [########............]  40%  1.20 GB/3.00 GB  110.0 MB/s  ETA 17s"
        );
        assert_eq!(render_progress(&json!({"state": "queued"})), "queued");
    }
}
