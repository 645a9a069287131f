//! `oasis model import|rm`, `oasis deploy`, `oasis undeploy`, `oasis job`: model
//! management through a running daemon's admin API.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use oasis_api::{
    CatalogModel, ChangeDeployment, CreateDeployment, Deleted, DeploymentView, ImportRequest,
    JobList, JobPhase, JobView, Undeployed,
};
use serde::Deserialize as _;
use serde_json::Value;

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
    let body = ImportRequest {
        path: path.display().to_string(),
        name: args.name.clone(),
        in_place: args.in_place,
    };
    let (job, doc): (JobView, _) =
        args.daemon
            .send_as("POST", "/admin/v1/models/import", Some(&body))?;
    let id = job.id;
    if args.detach {
        if args.daemon.json {
            println!("{doc}");
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    eprintln!(
        "importing {} as `{}` (job {id}; `oasis job cancel {id}` stops it)",
        path.display(),
        job.model
    );
    finish(&args.daemon, &id)
}

/// Follows job `id` to its end with a progress bar on stderr; an error unless it ended
/// ready.
fn finish(daemon: &DaemonArgs, id: &str) -> Result<()> {
    let (last, doc) = follow(daemon, id)?;
    if daemon.json {
        println!("{doc}");
    }
    match last.state {
        JobPhase::Ready => {
            let model = &last.model;
            if !daemon.json {
                let (m, _): (CatalogModel, _) =
                    daemon.get_as(&format!("/admin/v1/models/{model}"))?;
                println!(
                    "imported `{model}`: {} {}, {:.1} MB, {}",
                    m.format,
                    m.architecture,
                    m.size_bytes as f64 / 1e6,
                    m.digest,
                );
            }
            Ok(())
        }
        JobPhase::Cancelled => bail!("import {id} was cancelled"),
        _ => bail!(
            "import {id} failed: {}",
            last.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// Shows a job's progress until it ends; returns its last view (and its document).
fn follow(daemon: &DaemonArgs, id: &str) -> Result<(JobView, Value)> {
    let tty = std::io::stderr().is_terminal();
    let mut bar = Bar::default();
    let mut last = None;
    let mut unreadable = None;
    let path = format!("/admin/v1/jobs/{id}/events");
    daemon.events(&path, |v| match JobView::deserialize(&v) {
        Ok(job) => {
            bar.show(&job, tty);
            let done = job.state.is_final();
            last = Some((job, v));
            !done
        }
        Err(e) => {
            unreadable = Some(e);
            false
        }
    })?;
    if tty {
        eprintln!();
    }
    if let Some(e) = unreadable {
        bail!("the daemon's progress of job {id} is not what this oasis reads: {e}");
    }
    last.with_context(|| format!("the daemon closed the progress stream of job {id}"))
}

/// A progress line: redrawn in place on a terminal, one line per state and per tenth
/// otherwise (logs, tests).
#[derive(Debug, Default)]
struct Bar {
    state: Option<JobPhase>,
    tenth: u64,
}

impl Bar {
    fn show(&mut self, v: &JobView, tty: bool) {
        let state = v.state;
        let (done, total) = (v.bytes_done, v.bytes_total);
        let pct = (done.min(total) * 100).checked_div(total).unwrap_or(0);
        let line = render_progress(v);
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if Some(state) != self.state || pct / 10 > self.tenth {
            let _ = writeln!(err, "{line}");
        }
        if Some(state) != self.state {
            self.tenth = 0;
        }
        self.tenth = self.tenth.max(pct / 10);
        self.state = Some(state);
    }
}

/// `copying    [########............]  40%   1.2/3.0 GB  110.0 MB/s  ETA 16s`
pub fn render_progress(v: &JobView) -> String {
    let state = v.state.name();
    let (done, total) = (v.bytes_done, v.bytes_total);
    if total == 0
        || matches!(
            v.state,
            JobPhase::Queued | JobPhase::Failed | JobPhase::Cancelled
        )
    {
        return state.to_string();
    }
    if v.state == JobPhase::Ready {
        return format!("ready     [{}] 100%  {}", "#".repeat(20), human(total));
    }
    let frac = (done.min(total) as f64 / total as f64).clamp(0.0, 1.0);
    let width = 20;
    let filled = (frac * width as f64).round() as usize;
    let rate = v.rate_bytes_per_s;
    let eta = v
        .eta_s
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
    let path = format!("/admin/v1/models/{}", args.id);
    let (d, doc): (Deleted, _) = args.daemon.send_as("DELETE", &path, None::<&()>)?;
    if args.daemon.json {
        println!("{doc}");
    } else {
        println!("deleted `{}` (freed {})", args.id, human(d.freed_bytes));
    }
    Ok(())
}

pub fn deploy(args: &DeployArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| args.model.clone());
    let path = format!("/admin/v1/deployments/{name}");
    let (status, existing) = args.daemon.call("GET", &path, None)?;
    let aliases = (!args.aliases.is_empty()).then(|| args.aliases.clone());
    let (d, doc): (DeploymentView, _) = if status == 200 {
        let body = ChangeDeployment {
            model: Some(args.model.clone()),
            aliases,
            ranks: args.ranks,
            context_length: args.context,
            max_sequences: args.max_sequences,
            prompt_lookup: args.prompt_lookup,
        };
        args.daemon.send_as("PATCH", &path, Some(&body))?
    } else {
        let body = CreateDeployment {
            model: args.model.clone(),
            name: Some(name.clone()),
            aliases: aliases.unwrap_or_default(),
            ranks: args.ranks,
            context_length: args.context,
            max_sequences: args.max_sequences,
            prompt_lookup: args.prompt_lookup,
        };
        args.daemon
            .send_as("POST", "/admin/v1/deployments", Some(&body))?
    };
    if args.daemon.json {
        println!("{doc}");
        return Ok(());
    }
    let ctx = d.engine.as_ref().map_or(0, |e| e.context_length);
    if status == 200 {
        println!(
            "`{name}` now serves `{}` (was `{}`; generation {}, context {ctx})",
            args.model,
            super::client::read_as::<DeploymentView>(&existing, &path)
                .map_or_else(|_| "?".to_string(), |e| e.model),
            d.generation
        );
    } else {
        println!("`{name}` serves `{}` (context {ctx})", args.model);
    }
    Ok(())
}

pub fn undeploy(args: &UndeployArgs) -> Result<()> {
    let path = format!("/admin/v1/deployments/{}", args.name);
    let (u, doc): (Undeployed, _) = args.daemon.send_as("DELETE", &path, None::<&()>)?;
    if args.daemon.json {
        println!("{doc}");
    } else {
        println!(
            "`{}` is no longer served (the model `{}` stays in the catalog)",
            args.name, u.model
        );
    }
    Ok(())
}

pub fn job(cmd: &JobCommand) -> Result<()> {
    match cmd {
        JobCommand::List(args) => {
            let (list, doc): (JobList, _) = args.daemon.get_as("/admin/v1/jobs")?;
            if args.daemon.json {
                println!("{doc}");
                return Ok(());
            }
            for j in &list.data {
                println!(
                    "{}  {:<9}  {}  {}{}",
                    j.id,
                    j.state.name(),
                    j.model,
                    j.source,
                    j.error
                        .as_deref()
                        .map_or_else(String::new, |e| format!("  ({e})")),
                );
            }
            Ok(())
        }
        JobCommand::Show(a) => {
            if a.follow {
                return finish(&a.daemon, &a.id);
            }
            let (job, doc): (JobView, _) = a.daemon.get_as(&format!("/admin/v1/jobs/{}", a.id))?;
            if a.daemon.json {
                println!("{doc}");
            } else {
                println!("{}  {}", a.id, render_progress(&job));
                if let Some(e) = &job.error {
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
        let job = |state: JobPhase| JobView {
            id: "job-1".into(),
            kind: "import".into(),
            state,
            source: "/m.gguf".into(),
            model: "m".into(),
            in_place: false,
            bytes_done: 1_200_000_000,
            bytes_total: 3_000_000_000,
            rate_bytes_per_s: 110e6,
            eta_s: Some(16.4),
            error: None,
            created_at: 0,
            finished_at: None,
        };
        assert_eq!(
            render_progress(&job(JobPhase::Copying)),
            "copying   [########............]  40%  1.20 GB/3.00 GB  110.0 MB/s  ETA 17s"
        );
        assert_eq!(render_progress(&job(JobPhase::Queued)), "queued");
    }
}
