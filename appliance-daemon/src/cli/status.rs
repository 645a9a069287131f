//! `oasis status` and `oasis model list`: readable summaries of a running daemon, or its
//! JSON with `--json`.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use oasis_api::openai::ModelCard;
use oasis_api::{
    AlertsReport, CatalogList, CatalogModel, FitAnswer, ProfileAnswer, StatusReport, StorageReport,
    SystemReport, Verdict,
};
use serde_json::Value;

use super::client::DaemonArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The model's id (`oasis model list`).
    pub id: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Every model in the catalog and the deployments serving it.
    List(StatusArgs),
    /// Import a model (a GGUF file, a checkpoint folder or a .tar bundle) with a progress
    /// bar: copied into the store, hashed, verified, then added to the catalog.
    Import(super::models::ImportArgs),
    /// Delete a model from the catalog and its files from the store (refused while deployed).
    Rm(super::models::RmArgs),
    /// One model (a catalog id or a served name): what it is, where its files are, what
    /// serves it, how it fits this box.
    Show(ShowArgs),
    /// Disk use: the model store, models used in place, the state, the volume's free space.
    Storage(StatusArgs),
    /// Whether a model fits this box under its profile, and how many sequences at once
    /// (offline: a GGUF file, a checkpoint folder or its config.json).
    Fit(super::fit::FitArgs),
}

pub fn status(args: &StatusArgs) -> Result<()> {
    let (report, doc): (StatusReport, _) = args.daemon.get_as("/admin/v1/status")?;
    let (system_report, system): (SystemReport, _) = args.daemon.get_as("/admin/v1/system")?;
    let (alerts_report, alerts): (AlertsReport, _) = args.daemon.get_as("/admin/v1/alerts")?;
    let (profile_answer, profile): (ProfileAnswer, _) = args.daemon.get_as("/admin/v1/profile")?;
    if args.daemon.json {
        let mut all = doc.clone();
        if let Some(o) = all.as_object_mut() {
            o.insert("system".into(), system);
            o.insert("alerts".into(), alerts);
            o.insert("profile".into(), profile);
        }
        println!("{all}");
        return Ok(());
    }
    print!("{}", render_status(&args.daemon.base_url()?, &report));
    print!("{}", render_profile(&profile_answer));
    print!("{}", render_health(&system_report, &alerts_report));
    Ok(())
}

/// The firmware profile: which one, its verdict and its failing checks.
fn render_profile(p: &ProfileAnswer) -> String {
    let mut out = String::new();
    let Some(profile) = &p.profile else {
        let _ = writeln!(out, "profile: none ({}), policy {}", p.how, p.policy);
        return out;
    };
    let verdict = p
        .report
        .as_ref()
        .map_or("-".to_string(), |r| r.verdict.name().to_uppercase());
    let _ = writeln!(
        out,
        "profile: {} ({}), {verdict}, policy {}",
        profile.id, profile.name, p.policy,
    );
    for c in p.report.iter().flat_map(|r| &r.checks) {
        if c.verdict != Verdict::Pass {
            let _ = writeln!(
                out,
                "  {} {}: expected {}; found {}",
                c.verdict.name().to_uppercase(),
                c.id,
                c.expected,
                c.found
            );
        }
    }
    out
}

/// The host, the GPUs and the firing alerts, as a table.
fn render_health(system: &SystemReport, alerts: &AlertsReport) -> String {
    let mut out = String::new();
    let gib = |v: u64| v as f64 / (1u64 << 30) as f64;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match &system.host {
        Some(h) => {
            let _ = writeln!(
                out,
                "host: {} ({}), {} cores at {:.0}%, load {:.2}, memory {:.1}/{:.1} GiB",
                h.hostname,
                h.os,
                h.cpu_count,
                h.cpu_pct,
                h.load_1m,
                gib(h.mem_used_bytes),
                gib(h.mem_total_bytes),
            );
        }
        None => {
            let _ = writeln!(out, "host: not sampled yet");
        }
    }
    let gpu = &system.gpu;
    if !gpu.available {
        let _ = writeln!(out, "gpus: none ({})", or_dash(&gpu.reason));
    } else {
        let _ = writeln!(
            out,
            "gpus: {} (driver {}, CUDA {})",
            system.gpus.len(),
            or_dash(&gpu.driver.driver_version),
            or_dash(&gpu.driver.cuda_driver_version),
        );
        let _ = writeln!(
            out,
            "  {:<3} {:<26} {:>5} {:>15} {:>6} {:>7}",
            "gpu", "name", "util", "memory GiB", "temp", "power"
        );
        for g in &system.gpus {
            if let Some(e) = &g.error {
                let _ = writeln!(out, "  {:<3} {:<26} ERROR: {e}", g.index, g.name);
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<3} {:<26} {:>4.0}% {:>6.1} / {:>6.1} {:>5.0}C {:>6.0}W",
                g.index,
                g.name,
                g.gpu_util_pct.unwrap_or(0.0),
                gib(g.mem_used_bytes.unwrap_or(0)),
                gib(g.mem_total_bytes.unwrap_or(0)),
                g.temp_gpu_c.unwrap_or(0.0),
                g.power_w.unwrap_or(0.0),
            );
        }
    }
    let firing: Vec<_> = alerts
        .alerts
        .iter()
        .filter(|a| a.state == "firing")
        .collect();
    if firing.is_empty() {
        let _ = writeln!(out, "alerts: none firing");
    } else {
        let _ = writeln!(out, "alerts firing: {}", firing.len());
        for a in firing {
            let _ = writeln!(out, "  [{}] {}: {}", a.severity, a.key, a.message);
            if let Some(action) = &a.action {
                let _ = writeln!(out, "      -> {action}");
            }
        }
    }
    out
}

pub fn model(cmd: &ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::List(args) => {
            let (list, doc): (CatalogList, _) = args.daemon.get_as("/admin/v1/models")?;
            if args.daemon.json {
                println!("{doc}");
            } else {
                print!("{}", render_models(&list));
            }
            Ok(())
        }
        ModelCommand::Fit(args) => super::fit::fit(args),
        ModelCommand::Import(args) => super::models::import(args),
        ModelCommand::Rm(args) => super::models::rm(args),
        ModelCommand::Show(args) => {
            // A catalog id (served or not), else a served name or alias.
            let path = format!("/admin/v1/models/{}", args.id);
            let (status, doc) = args.daemon.call("GET", &path, None)?;
            let (shown, model) = if status == 200 {
                let m: CatalogModel = super::client::read_as(&doc, &path)?;
                (Shown::from(m), doc)
            } else {
                let card = format!("/v1/models/{}", args.id);
                let (m, doc): (ModelCard, _) = args.daemon.get_as(&card)?;
                (Shown::from(m), doc)
            };
            // The fit of a served model; a box no profile matches cannot size it, which
            // is said in its place rather than failing the whole answer.
            let fit = match shown.deployed_as.first() {
                Some(name) => {
                    let path = format!("/admin/v1/models/{name}/fit");
                    let (status, doc) = args.daemon.call("GET", &path, None)?;
                    let fit = if status == 200 {
                        Ok(super::client::read_as::<FitAnswer>(&doc, &path)?)
                    } else {
                        Err(super::client::error_message(&doc))
                    };
                    Some((fit, doc))
                }
                None => None,
            };
            if args.daemon.json {
                let fit = fit.map_or(Value::Null, |(_, doc)| doc);
                println!("{}", serde_json::json!({ "model": model, "fit": fit }));
                return Ok(());
            }
            print!("{}", render_model(&shown, fit.as_ref().map(|(f, _)| f)));
            Ok(())
        }
        ModelCommand::Storage(args) => {
            let (report, doc): (StorageReport, _) = args.daemon.get_as("/admin/v1/storage")?;
            if args.daemon.json {
                println!("{doc}");
            } else {
                print!("{}", render_storage(&report));
            }
            Ok(())
        }
    }
}

/// `1.5M`, `7.2B`: a count for people.
fn count(v: u64) -> String {
    match v {
        0..1_000 => v.to_string(),
        1_000..1_000_000 => format!("{:.1}K", v as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", v as f64 / 1e6),
        _ => format!("{:.1}B", v as f64 / 1e9),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn render_status(url: &str, doc: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "oasis {} at {url}: {}, up {} (start #{})",
        doc.version,
        doc.state,
        duration(doc.uptime_s),
        doc.starts,
    );
    let _ = writeln!(out, "data dir: {}", doc.data_dir);
    if doc.models.is_empty() {
        let _ = writeln!(out, "models: none (start the daemon with --model PATH)");
    } else {
        let _ = writeln!(out, "models:");
    }
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for m in &doc.models {
        if m.state == "ready" {
            let _ = writeln!(
                out,
                "  {}  ready  {}  {}  {} params  ctx {}  waiting {}  running {}  requests {}  tokens in/out {}/{}",
                m.id,
                or_dash(&m.device_detail),
                or_dash(&m.architecture),
                count(m.parameters.unwrap_or(0)),
                m.context_length.unwrap_or(0),
                m.waiting,
                m.running,
                m.requests_total,
                m.prompt_tokens_total,
                m.completion_tokens_total,
            );
        } else {
            let _ = writeln!(out, "  {}  {}  {}", m.id, m.state, or_dash(&m.error));
        }
    }
    out
}

/// What `oasis model show` prints of a model: a catalog entry, or the card of a served
/// name (which has no license or path of its own).
#[derive(Debug)]
struct Shown {
    id: String,
    architecture: String,
    format: String,
    parameters: u64,
    context_length: usize,
    size_bytes: u64,
    digest: String,
    license: Option<String>,
    path: Option<String>,
    deployed_as: Vec<String>,
}

impl From<CatalogModel> for Shown {
    fn from(m: CatalogModel) -> Shown {
        Shown {
            id: m.id,
            architecture: m.architecture,
            format: m.format,
            parameters: m.parameters,
            context_length: m.context_length,
            size_bytes: m.size_bytes,
            digest: m.digest,
            license: m.license,
            path: Some(m.path),
            deployed_as: m.deployed_as,
        }
    }
}

impl From<ModelCard> for Shown {
    fn from(m: ModelCard) -> Shown {
        Shown {
            deployed_as: vec![m.id.clone()],
            id: m.id,
            architecture: m.architecture,
            format: m.format,
            parameters: m.parameters,
            context_length: m.context_length,
            size_bytes: m.size_bytes,
            digest: m.digest,
            license: None,
            path: None,
        }
    }
}

/// One model and its fit.
fn render_model(m: &Shown, fit: Option<&Result<FitAnswer, String>>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", m.id);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for (k, v) in [
        ("architecture", m.architecture.clone()),
        ("format", m.format.clone()),
        ("parameters", count(m.parameters)),
        ("context", m.context_length.to_string()),
        ("size", format!("{:.1} MB", m.size_bytes as f64 / 1e6)),
        ("digest", m.digest.clone()),
        ("license", dash(&m.license)),
        ("path", dash(&m.path)),
        ("deployed as", deployed_names(&m.deployed_as)),
        (
            "fit",
            match fit {
                None => "not deployed: `oasis model fit PATH` sizes it offline".to_string(),
                Some(Ok(f)) => format!("{} (profile {})", f.fit.summary, f.profile),
                Some(Err(why)) => format!("cannot say: {why}"),
            },
        ),
    ] {
        if v != "-" {
            let _ = writeln!(out, "  {k:<12} {v}");
        }
    }
    out
}

/// Disk use.
fn render_storage(doc: &StorageReport) -> String {
    let mut out = String::new();
    let gb = |v: u64| v as f64 / 1e9;
    let _ = writeln!(out, "data dir: {}", doc.data_dir);
    if let Some(v) = &doc.volume {
        let _ = writeln!(
            out,
            "volume {}: {:.1} GB free of {:.1} GB",
            v.mount_point,
            gb(v.free_bytes),
            gb(v.total_bytes)
        );
    }
    let _ = writeln!(
        out,
        "models: {:.2} GB in the store, {:.2} GB used in place; state {:.2} MB",
        gb(doc.models_in_store_bytes),
        gb(doc.models_in_place_bytes),
        doc.state_bytes as f64 / 1e6
    );
    for m in &doc.models {
        let _ = writeln!(
            out,
            "  {}  {:.1} MB  {}{}  {}",
            m.id,
            m.bytes as f64 / 1e6,
            if m.in_store { "in store" } else { "in place" },
            if m.served { ", served" } else { "" },
            m.path
        );
    }
    out
}

/// `chat, chat-b` or `-`.
fn deployed_names(names: &[impl AsRef<str>]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn render_models(list: &CatalogList) -> String {
    let rows: Vec<[String; 7]> = list
        .data
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.architecture.clone(),
                count(m.parameters),
                m.context_length.to_string(),
                format!("{:.1} MB", m.size_bytes as f64 / 1e6),
                m.digest.chars().take(19).collect(),
                deployed_names(&m.deployed_as),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no models in the catalog (import one with `oasis model import PATH`)\n".into();
    }
    let header = [
        "ID",
        "ARCH",
        "PARAMS",
        "CONTEXT",
        "SIZE",
        "DIGEST",
        "DEPLOYED AS",
    ]
    .map(String::from);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_table_lines_up() {
        let list = CatalogList {
            data: vec![oasis_api::CatalogModel {
                id: "SmolLM2".into(),
                name: "SmolLM2 135M Instruct".into(),
                format: "gguf".into(),
                architecture: "llama".into(),
                parameters: 134_515_008,
                context_length: 8192,
                digest: "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
                    .into(),
                size_bytes: 98_362_432,
                path: "/models/SmolLM2.gguf".into(),
                in_store: true,
                license: None,
                added_at: 0,
                deployed_as: vec!["chat".into()],
            }],
        };
        let text = render_models(&list);
        assert_eq!(
            text,
            "ID       ARCH   PARAMS  CONTEXT  SIZE     DIGEST               DEPLOYED AS\n\
             SmolLM2  llama  134.5M  8192     98.4 MB  sha256:b179c9523d0e  chat\n"
        );
    }

    #[test]
    fn durations_and_counts_read_well() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(7200), "2h 0m");
        assert_eq!(count(999), "999");
        assert_eq!(count(7_200_000_000), "7.2B");
    }
}
