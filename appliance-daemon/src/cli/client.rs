//! A small blocking HTTP client for the commands that talk to a running daemon
//! (`oasis status`, `oasis model list`). The daemon is found by `--url`, `OASIS_URL`, or
//! the listen address the configuration (file or `OASIS_LISTEN`) gives.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
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
    /// The token to send [default: with no --url/OASIS_URL, the local admin credential
    /// `DATA_DIR/admin.token`, readable by its owner only].
    #[arg(
        long,
        env = "OASIS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A certificate (PEM) to trust for HTTPS, e.g. a box's own self-signed one whose
    /// fingerprint its console shows [default: for this box's daemon, its certificate].
    #[arg(long, env = "OASIS_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Print one JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl DaemonArgs {
    /// The configuration as the daemon on this box resolves it.
    pub fn local_config(&self) -> Result<ServeConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        ServeConfig::resolve(
            file,
            Overrides {
                listen: std::env::var("OASIS_LISTEN").ok(),
                data_dir: std::env::var_os("OASIS_DATA_DIR").map(PathBuf::from),
                ..Overrides::default()
            },
        )
    }

    /// The token to send: `--token`/`OASIS_TOKEN`, else (for the daemon of this box's
    /// configuration) the local admin credential when this user can read it.
    pub fn token(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.trim().to_string());
        }
        if self.url.is_some() {
            return None;
        }
        let cfg = self.local_config().ok()?;
        crate::auth::local_token(&cfg.data_dir)
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.trim_end_matches('/').to_string());
        }
        let cfg = self.local_config()?;
        let mut addr = cfg.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        if cfg.tls {
            // The daemon's own certificate names the loopback addresses (not only
            // `localhost`, which a minimal system may not resolve).
            return Ok(format!("https://{addr}"));
        }
        Ok(format!("http://{addr}"))
    }

    /// The certificate the local daemon serves (its own, or the operator's), trusted for
    /// HTTPS to it.
    fn local_cert(&self) -> Result<Option<Vec<u8>>> {
        if let Some(p) = &self.cacert {
            return std::fs::read(p)
                .map(Some)
                .with_context(|| format!("cannot read the certificate {}", p.display()));
        }
        let Ok(cfg) = self.local_config() else {
            return Ok(None);
        };
        let path = cfg
            .tls_cert
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("tls").join("cert.pem"));
        Ok(std::fs::read(path).ok())
    }

    fn agent(&self, timeout: Option<Duration>) -> Result<ureq::Agent> {
        let cert = self.local_cert()?;
        if let Some(pem) = &cert
            && self.cacert.is_some()
            && ureq::tls::Certificate::from_pem(pem).is_err()
        {
            bail!("the --cacert file holds no PEM certificate");
        }
        Ok(agent(timeout, cert.as_deref()))
    }

    /// GETs `path` and parses the JSON answer; a non-2xx answer is an error carrying the
    /// daemon's message.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.send("GET", path, None)
    }

    /// GETs `path` and reads the answer as the shared API type `T` (`oasis_api`); the
    /// document itself comes back too, for `--json`.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Value)> {
        let doc = self.get(path)?;
        Ok((read_as(&doc, path)?, doc))
    }

    /// Sends `body` (a shared API request type) and reads the answer as `T`, like
    /// [`DaemonArgs::get_as`].
    pub fn send_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(T, Value)> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .context("cannot write the request")?;
        let doc = self.send(method, path, body.as_ref())?;
        Ok((read_as(&doc, path)?, doc))
    }

    /// Sends `method path` with an optional JSON body and parses the JSON answer; a non-2xx
    /// answer is an error carrying the daemon's message. Waits up to ten minutes (a
    /// deployment answers once its model is loaded).
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{} (HTTP {status})", error_message(&value));
        }
        Ok(value)
    }

    /// Like [`DaemonArgs::send`], but a non-2xx answer comes back as (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let base = self.base_url()?;
        let url = format!("{base}{path}");
        let timeout = if method == "GET" { 10 } else { 600 };
        let agent = self.agent(Some(Duration::from_secs(timeout)))?;
        let unreachable = || {
            format!(
                "cannot reach the daemon at {base} (is `oasis serve` running? set --url or OASIS_URL)"
            )
        };
        let auth = self
            .token()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let mut resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
            ("POST", Some(b)) => agent.post(&url).header("authorization", &auth).send_json(b),
            ("POST", None) => agent.post(&url).header("authorization", &auth).send_empty(),
            ("PATCH", Some(b)) => agent
                .patch(&url)
                .header("authorization", &auth)
                .send_json(b),
            (m, _) => bail!("unsupported method {m}"),
        }
        .with_context(unreachable)?;
        let (status, value) = read_json(&mut resp, &url)?;
        Ok((status, value))
    }

    /// POSTs the file at `file` as the body (streamed, with its length) and parses the JSON
    /// answer; a non-2xx answer is an error carrying the daemon's message.
    pub fn send_file(&self, path: &str, file: &std::path::Path) -> Result<Value> {
        let base = self.base_url()?;
        let url = format!("{base}{path}");
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let auth = self
            .token()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let mut resp = self
            .agent(Some(Duration::from_secs(3600)))?
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/octet-stream")
            .send(f)
            .with_context(|| format!("cannot send {} to the daemon at {base}", file.display()))?;
        let (status, value) = read_json(&mut resp, &url)?;
        if !(200..300).contains(&status) {
            bail!("{} (HTTP {status})", error_message(&value));
        }
        Ok(value)
    }

    /// Follows the server-sent events at `path`, calling `each` with every event's JSON
    /// data until it returns false or the stream ends.
    pub fn events(&self, path: &str, mut each: impl FnMut(Value) -> bool) -> Result<()> {
        use std::io::BufRead as _;
        let base = self.base_url()?;
        let url = format!("{base}{path}");
        let auth = self
            .token()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let mut resp = self.agent(None)?.get(&url).header("authorization", &auth).call().with_context(|| {
            format!("cannot reach the daemon at {base} (is `oasis serve` running? set --url or OASIS_URL)")
        })?;
        if !resp.status().is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            bail!("{} (HTTP {})", error_message(&v), resp.status());
        }
        let reader = std::io::BufReader::new(resp.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading the events of {url}"))?;
            if let Some(data) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(data.trim())
                    .with_context(|| format!("{url} sent an event that is not JSON"))?;
                if !each(v) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// An answer's status and JSON body.
/// The message of the daemon's error answer.
pub fn error_message(body: &Value) -> String {
    oasis_api::ErrorBody::deserialize(body)
        .map_or_else(|_| "no message".into(), |b| b.error.message)
}

/// Reads a daemon's answer as `T`; a daemon that answers otherwise (another version,
/// or not a daemon) is an error naming the route and the field.
pub fn read_as<T: DeserializeOwned>(doc: &Value, path: &str) -> Result<T> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        anyhow::anyhow!(
            "the daemon's answer to {path} is not what this oasis reads at `{}`: {} \
             (is the daemon another version?)",
            e.path(),
            e.inner()
        )
    })
}

fn read_json(resp: &mut ureq::http::Response<ureq::Body>, url: &str) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer with JSON"))?;
    Ok((status, value))
}

/// An HTTP client; `cert` (PEM), when given, is the one certificate it trusts, so
/// that HTTPS to this box's own daemon (a self-signed certificate) works.
fn agent(timeout: Option<Duration>, cert: Option<&[u8]>) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut config = ureq::Agent::config_builder()
        .timeout_global(timeout)
        .http_status_as_error(false);
    if let Some(c) = cert.and_then(|pem| Certificate::from_pem(pem).ok()) {
        config = config.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&[c]))
                .build(),
        );
    }
    config.build().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_does_not_read_names_the_route_and_the_field() {
        let doc = serde_json::json!({"data": [{"id": 5}]});
        let e = read_as::<oasis_api::KeyList>(&doc, "/admin/v1/keys")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/admin/v1/keys") && e.contains("data[0].id"),
            "{e}"
        );
        // Fields this oasis does not know (a newer daemon) are no error.
        let doc = serde_json::json!({"data": [], "next": "page-2"});
        assert!(read_as::<oasis_api::KeyList>(&doc, "/admin/v1/keys").is_ok());
        let err = serde_json::json!({"error": {"message": "no such key", "type": "not_found_error",
            "param": null, "code": "key_not_found"}});
        assert_eq!(error_message(&err), "no such key");
        assert_eq!(error_message(&serde_json::json!("text")), "no message");
    }
}
