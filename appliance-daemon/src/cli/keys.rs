//! `oasis key create|list|revoke`, `oasis usage`, `oasis audit verify|list`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use oasis_api::{AuditReport, CreateKey, KeyList, KeyView, PairingCode, UsageReport};

use super::client::DaemonArgs;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key (printed once).
    Create(CreateArgs),
    /// Every key: id, name, role, prefix, limits, state.
    List(super::status::StatusArgs),
    /// Revoke a key: its next request gets 401.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    /// The team or person it is for.
    #[arg(long)]
    pub owner: Option<String>,
    /// `user` (inference), `viewer` (read-only admin API) or `admin`.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// Served names it may use, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    #[arg(long)]
    pub tokens_per_month: Option<u64>,
    /// Last day it works, YYYY-MM-DD (UTC; it stops at the end of that day).
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub id: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// `key`, `model` or `day`.
    #[arg(long, default_value = "key")]
    pub group_by: String,
    /// First day, YYYY-MM-DD [default: 30 days ago].
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD [default: today].
    #[arg(long)]
    pub to: Option<String>,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain (reads the file on this box).
    Verify(VerifyArgs),
    /// The newest entries (from the daemon).
    List(super::status::StatusArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory [default: as `oasis serve`].
    #[arg(long, env = "OASIS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `YYYY-MM-DD` -> the first second after that day (UTC).
fn end_of_day(date: &str) -> Result<u64> {
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        bail!("--expires must be YYYY-MM-DD, got `{date}`");
    };
    let (y, m, d): (i64, u32, u32) = match (y.parse(), m.parse(), d.parse()) {
        (Ok(y), Ok(m), Ok(d)) if (1..=12).contains(&m) && (1..=31).contains(&d) => (y, m, d),
        _ => bail!("--expires must be YYYY-MM-DD, got `{date}`"),
    };
    // Days from the civil date (the inverse of auth::civil).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if crate::auth::civil(days) != (y, m, d) {
        bail!("--expires: `{date}` is not a date");
    }
    Ok(((days + 1) * 86_400).max(0) as u64)
}

pub fn key(cmd: &KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Create(a) => {
            let expires_at = a.expires.as_deref().map(end_of_day).transpose()?;
            let body = CreateKey {
                name: a.name.clone(),
                owner: a.owner.clone(),
                role: Some(a.role.clone()),
                models: (!a.models.is_empty()).then(|| a.models.clone()),
                rpm: a.rpm,
                tpm: a.tpm,
                tokens_per_day: a.tokens_per_day,
                tokens_per_month: a.tokens_per_month,
                expires_at,
            };
            let (k, doc): (KeyView, _) = a.daemon.send_as("POST", "/admin/v1/keys", Some(&body))?;
            if a.daemon.json {
                println!("{doc}");
            } else {
                println!("{}", k.key.as_deref().unwrap_or("?"));
                eprintln!(
                    "key {} (`{}`, role {}): shown once, keep it now",
                    k.id,
                    a.name,
                    k.role.name()
                );
            }
            Ok(())
        }
        KeyCommand::List(a) => {
            let (list, doc): (KeyList, _) = a.daemon.get_as("/admin/v1/keys")?;
            if a.daemon.json {
                println!("{doc}");
                return Ok(());
            }
            println!("ID            PREFIX          ROLE    STATE    NAME");
            let now = crate::store::unix_now();
            for k in &list.data {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|t| t <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<13} {:<15} {:<7} {:<8} {}",
                    k.id,
                    k.prefix,
                    k.role.name(),
                    state,
                    k.name
                );
            }
            Ok(())
        }
        KeyCommand::Revoke(a) => {
            let path = format!("/admin/v1/keys/{}", a.id);
            let (k, doc): (KeyView, _) = a.daemon.send_as("DELETE", &path, None::<&()>)?;
            if a.daemon.json {
                println!("{doc}");
            } else {
                println!("revoked {} (`{}`)", a.id, k.name);
            }
            Ok(())
        }
    }
}

/// `oasis pair-code`: a new one-time pairing code for the admin's desktop app.
pub fn pair_code(a: &super::status::StatusArgs) -> Result<()> {
    let (code, doc): (PairingCode, _) =
        a.daemon
            .send_as("POST", "/admin/v1/pairing-code", None::<&()>)?;
    if a.daemon.json {
        println!("{doc}");
        return Ok(());
    }
    println!("pairing code: {}", code.code);
    println!("works once, for {} h", code.expires_in_s / 3600);
    if let Some(f) = &code.tls_fingerprint {
        println!("TLS certificate SHA-256: {f}");
    }
    Ok(())
}

pub fn usage(a: &UsageArgs) -> Result<()> {
    let mut q = format!("/admin/v1/usage?group_by={}", a.group_by);
    if let Some(f) = &a.from {
        q.push_str(&format!("&from={f}"));
    }
    if let Some(t) = &a.to {
        q.push_str(&format!("&to={t}"));
    }
    let (report, doc): (UsageReport, _) = a.daemon.get_as(&q)?;
    if a.daemon.json {
        println!("{doc}");
        return Ok(());
    }
    let by = report.group_by.name();
    if a.csv {
        println!("{by},name,requests,prompt_tokens,completion_tokens,total_tokens,failed");
        for r in &report.data {
            println!(
                "{},\"{}\",{},{},{},{},{}",
                r.group,
                r.name.as_deref().unwrap_or("").replace('"', "\"\""),
                r.counts.requests,
                r.counts.prompt_tokens,
                r.counts.completion_tokens,
                r.total_tokens,
                r.counts.failed
            );
        }
        return Ok(());
    }
    println!("usage {} .. {} by {by}", report.from, report.to);
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>12}",
        by.to_uppercase(),
        "REQUESTS",
        "PROMPT",
        "COMPLETION",
        "TOTAL"
    );
    for r in &report.data {
        let label = match &r.name {
            Some(name) => format!("{} ({name})", r.group),
            None => r.group.clone(),
        };
        println!(
            "{label:<24} {:>9} {:>12} {:>12} {:>12}",
            r.counts.requests, r.counts.prompt_tokens, r.counts.completion_tokens, r.total_tokens
        );
    }
    Ok(())
}

pub fn audit(cmd: &AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify(a) => {
            let dir = a.data_dir.clone().unwrap_or_else(crate::paths::data_dir);
            let path = crate::audit::path(&dir);
            let chain = crate::audit::verify(&dir);
            match (chain, crate::audit::write_failure(&dir)) {
                (Ok(n), None) => {
                    println!("{}: {n} entries, the hash chain holds", path.display());
                    Ok(())
                }
                (Ok(n), Some(failure)) => bail!(
                    "{}: {n} entries and the hash chain holds, but {failure}: admin actions since then are not in it yet",
                    path.display()
                ),
                (Err(e), Some(failure)) => bail!("{}: {e:#}; and {failure}", path.display()),
                (Err(e), None) => bail!("{}: {e:#}", path.display()),
            }
        }
        AuditCommand::List(a) => {
            let (report, doc): (AuditReport, _) = a.daemon.get_as("/admin/v1/audit")?;
            if a.daemon.json {
                println!("{doc}");
                return Ok(());
            }
            for e in &report.data {
                println!(
                    "{:>5}  {}  {:<24} {:<20} {}",
                    e.seq,
                    e.ts_ms,
                    e.actor,
                    e.action,
                    e.detail.outcome.as_deref().unwrap_or("")
                );
            }
            if !report.chain_ok {
                bail!(
                    "the audit log's chain is broken: {}",
                    report.chain_error.as_deref().unwrap_or("?")
                );
            }
            let w = &report.write;
            if !w.ok {
                bail!(
                    "the daemon cannot write the audit log ({} entries pending): {}",
                    w.entries_pending,
                    w.last_error.as_deref().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_end_their_day() {
        assert_eq!(end_of_day("1970-01-01").ok(), Some(86_400));
        assert_eq!(end_of_day("2026-12-01").ok(), Some(1_796_169_600));
        assert!(end_of_day("2026-02-30").is_err());
        assert!(end_of_day("tomorrow").is_err());
    }
}
