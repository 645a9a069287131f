//! A small blocking HTTP client for the commands that talk to a running daemon
//! (`oasis status`, `oasis model list`). The daemon is found by `--url`, `OASIS_URL`, or
//! the listen address the configuration (file or `OASIS_LISTEN`) gives.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::config::{FileConfig, Overrides, ServeConfig};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The daemon's URL, e.g. http://127.0.0.1:8080 [default: from the configuration].
    #[arg(long, env = "OASIS_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Configuration file to read the listen address from.
    #[arg(long, env = "OASIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl DaemonArgs {
    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.trim_end_matches('/').to_string());
        }
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let listen = std::env::var("OASIS_LISTEN").ok();
        let cfg = ServeConfig::resolve(
            file,
            Overrides {
                listen,
                ..Overrides::default()
            },
        )?;
        let mut addr = cfg.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(format!("http://{addr}"))
    }

    /// GETs `path` and parses the JSON answer; a non-2xx answer is an error carrying the
    /// daemon's message.
    pub fn get(&self, path: &str) -> Result<Value> {
        let base = self.base_url()?;
        let url = format!("{base}{path}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&url).call().with_context(|| {
            format!("cannot reach the daemon at {base} (is `oasis serve` running? set --url or OASIS_URL)")
        })?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} did not answer with JSON"))?;
        if !status.is_success() {
            let msg = value["error"]["message"].as_str().unwrap_or("no message");
            bail!("{url}: {status}: {msg}");
        }
        Ok(value)
    }
}
