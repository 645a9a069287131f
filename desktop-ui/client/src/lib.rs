//! A small blocking client for the Oasis daemon's admin API, used by the desktop app's
//! commands (and nothing else in the workspace).
//!
//! A box is reached at an [`Address`]. Over HTTPS every connection is pinned to the SHA-256
//! fingerprint of the certificate the admin confirmed when pairing (see [`tls`]); plain HTTP
//! is only allowed to loopback addresses, where the daemon serves it by default. [`probe`]
//! learns a box's fingerprint without trusting it; [`Client::pair`] trades the one-time
//! pairing code for an admin token; [`Client::request`] is every later call.

mod address;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use oasis_api::{ErrorBody, KeyView, PairRequest};
use serde::{Deserialize as _, Serialize};
use serde_json::Value;
use ureq::Agent;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector as _, TcpConnector};

pub use address::{Address, DEFAULT_PORT};
pub use tls::{fingerprint, normalise_fingerprint};

use tls::{PinVerifier, PinnedTlsConnector};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole request may take (the daemon answers admin calls quickly; a stream
/// endpoint such as `/admin/v1/telemetry/stream` is cut off here rather than hanging).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read, in bytes.
const MAX_BODY_BYTES: u64 = 32 << 20;
/// Longest request path accepted.
const MAX_PATH_LEN: usize = 2048;

/// Why a call to a box failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{address}` is not a box address: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error(
        "plain http:// to {address} would send the token over the network in clear: use https:// (plain HTTP is only allowed to this machine)"
    )]
    PlainHttpNotLoopback { address: String },
    #[error("`{fingerprint}` is not a SHA-256 fingerprint (32 hex pairs such as AB:CD:...)")]
    InvalidFingerprint { fingerprint: String },
    #[error("{address} uses TLS: its certificate fingerprint must be confirmed first")]
    MissingFingerprint { address: String },
    #[error(
        "certificate fingerprint changed: expected {expected}, got {got}; the box may have a new certificate, or something else answers at its address"
    )]
    FingerprintChanged { expected: String, got: String },
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("TLS with {address} failed: {message}")]
    Tls { address: String, message: String },
    #[error("{address} did not answer within {seconds} s")]
    Timeout { address: String, seconds: u64 },
    #[error("request to {address} failed: {message}")]
    Http { address: String, message: String },
    #[error("`{method}` is not a supported method (GET, POST, PUT, PATCH, DELETE)")]
    InvalidMethod { method: String },
    #[error(
        "`{path}` is not an API path: it must start with `/`, hold no spaces and be at most {MAX_PATH_LEN} characters"
    )]
    InvalidPath { path: String },
    #[error("{method} takes no request body")]
    UnexpectedBody { method: String },
    #[error("pairing refused ({status}): {message}")]
    PairingRefused { status: u16, message: String },
    #[error("unexpected answer from {address}: {message}")]
    BadResponse { address: String, message: String },
}

/// An answer from the daemon, whatever its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    pub status: u16,
    /// The body parsed as JSON; text that is not JSON as a string; `null` when empty.
    pub body: Value,
}

/// What [`probe`] learnt about an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The normalised base URL (`https://host:port`).
    pub address: String,
    pub tls: bool,
    /// SHA-256 of the certificate the box served (not yet trusted), in the daemon's form.
    pub fingerprint: Option<String>,
    /// `GET /healthz` answered 200.
    pub healthy: bool,
    /// Why the box could not be reached, if it could not.
    pub error: Option<String>,
}

/// What pairing returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// The admin token (shown once by the daemon; keep it in a keyring).
    pub token: String,
    /// The daemon's id for the key made by pairing.
    pub key_id: String,
}

/// Connects to `address` without trusting its certificate: its fingerprint (for the admin
/// to compare with the one the box printed) and whether `/healthz` answers. With no scheme
/// given, a loopback address that does not speak TLS is tried again over plain HTTP (the
/// daemon's default on loopback). Fails only for an address that does not parse; an
/// unreachable box is an answer with `error` set.
pub fn probe(address: &str) -> Result<Probe, Error> {
    let parsed = Address::parse(address)?;
    let scheme_given = address.trim().contains("://");
    let first = probe_once(&parsed);
    if parsed.tls
        && first.fingerprint.is_none()
        && first.error.is_some()
        && !scheme_given
        && let Ok(plain) = parsed.with_plain_http()
    {
        let second = probe_once(&plain);
        if second.error.is_none() {
            return Ok(second);
        }
    }
    Ok(first)
}

fn probe_once(address: &Address) -> Probe {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier::new(None, &provider));
    let client = match Client::build(
        address.clone(),
        Some(verifier.clone()),
        provider,
        PROBE_TIMEOUT,
    ) {
        Ok(c) => c,
        Err(e) => {
            return Probe {
                address: address.to_string(),
                tls: address.tls,
                fingerprint: None,
                healthy: false,
                error: Some(e.to_string()),
            };
        }
    };
    let answer = client.request("GET", "/healthz", None, None);
    Probe {
        address: address.to_string(),
        tls: address.tls,
        fingerprint: verifier.seen_fingerprint(),
        healthy: matches!(&answer, Ok(r) if r.status == 200),
        error: match answer {
            Ok(r) if r.status != 200 => Some(format!("/healthz answered {}", r.status)),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        },
    }
}

/// A connection to one box: pinned to its certificate over HTTPS, plain on loopback.
#[derive(Debug, Clone)]
pub struct Client {
    address: Address,
    agent: Agent,
    /// The pinning verifier (HTTPS only), asked after a failure which certificate it saw.
    verifier: Option<Arc<PinVerifier>>,
    /// The request timeout, for error messages.
    timeout: Duration,
}

impl Client {
    /// A client for `address` that accepts only the certificate with `fingerprint` (required
    /// for https, ignored for http on loopback).
    pub fn new(address: &str, fingerprint: Option<&str>) -> Result<Client, Error> {
        let address = Address::parse(address)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = if address.tls {
            let Some(fp) = fingerprint else {
                return Err(Error::MissingFingerprint {
                    address: address.to_string(),
                });
            };
            Some(Arc::new(PinVerifier::new(
                Some(normalise_fingerprint(fp)?),
                &provider,
            )))
        } else {
            None
        };
        Client::build(address, verifier, provider, REQUEST_TIMEOUT)
    }

    fn build(
        address: Address,
        verifier: Option<Arc<PinVerifier>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("oasis-admin/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match (&verifier, address.tls) {
            (Some(v), true) => {
                let tls_config = tls::client_config(&address.to_string(), v.clone(), provider)?;
                let connector =
                    ().chain(TcpConnector::default())
                        .chain(PinnedTlsConnector { config: tls_config });
                Agent::with_parts(config, connector, DefaultResolver::default())
            }
            (None, true) => {
                return Err(Error::MissingFingerprint {
                    address: address.to_string(),
                });
            }
            (_, false) => {
                let connector = ().chain(TcpConnector::default());
                Agent::with_parts(config, connector, DefaultResolver::default())
            }
        };
        Ok(Client {
            address,
            agent,
            verifier,
            timeout,
        })
    }

    /// The normalised base URL.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// The box's host name or IP address.
    pub fn host(&self) -> &str {
        &self.address.host
    }

    /// Whether calls go over (pinned) TLS.
    pub fn is_tls(&self) -> bool {
        self.address.tls
    }

    /// Trades the one-time pairing `code` for an admin token; `name` names this machine in
    /// the daemon's key list.
    pub fn pair(&self, code: &str, name: &str) -> Result<Paired, Error> {
        let body = PairRequest {
            code: code.trim().to_string(),
            name: name.to_string(),
        };
        let body = serde_json::to_value(&body).map_err(|e| Error::BadResponse {
            address: self.address(),
            message: format!("cannot write the pairing request: {e}"),
        })?;
        let r = self.request("POST", "/admin/v1/pair", Some(&body), None)?;
        if r.status != 201 && r.status != 200 {
            return Err(Error::PairingRefused {
                status: r.status,
                message: error_message(&r.body),
            });
        }
        let bad = |message: String| Error::BadResponse {
            address: self.address(),
            message,
        };
        let key: KeyView = serde_json::from_value(r.body)
            .map_err(|e| bad(format!("the pairing answer is not a key: {e}")))?;
        match key.key {
            Some(token) => Ok(Paired {
                token,
                key_id: key.id,
            }),
            None => Err(bad("the pairing answer holds no token".into())),
        }
    }

    /// Sends `method path` with an optional JSON body and bearer token. Any HTTP status is an
    /// answer; only a failure to get one is an error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Response, Error> {
        if !path.starts_with('/') || path.len() > MAX_PATH_LEN || path.contains(char::is_whitespace)
        {
            return Err(Error::InvalidPath {
                path: path.chars().take(200).collect(),
            });
        }
        let url = format!("{}{}", self.address, path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let method = method.to_ascii_uppercase();
        let result = match method.as_str() {
            "GET" | "DELETE" | "HEAD" => {
                let req = match method.as_str() {
                    "GET" => self.agent.get(&url),
                    "HEAD" => self.agent.head(&url),
                    _ => self.agent.delete(&url),
                };
                let req = match &auth {
                    Some(a) => req.header("Authorization", a),
                    None => req,
                };
                match body {
                    Some(b) if method == "DELETE" => req.force_send_body().send_json(b),
                    Some(_) => return Err(Error::UnexpectedBody { method }),
                    None => req.call(),
                }
            }
            "POST" | "PUT" | "PATCH" => {
                let req = match method.as_str() {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                let req = match &auth {
                    Some(a) => req.header("Authorization", a),
                    None => req,
                };
                match body {
                    Some(b) => req.send_json(b),
                    None => req.send_empty(),
                }
            }
            _ => return Err(Error::InvalidMethod { method }),
        };
        let mut response = result.map_err(|e| self.map_error(e))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| self.map_error(e))?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Response { status, body })
    }

    /// Turns ureq's error into one that names the box and, above all, says when the
    /// certificate was not the pinned one.
    fn map_error(&self, e: ureq::Error) -> Error {
        let address = self.address();
        if let Some(v) = &self.verifier
            && let (Some(expected), Some(got)) = (v.pinned(), v.seen_fingerprint())
            && expected != got
        {
            return Error::FingerprintChanged {
                expected: expected.to_string(),
                got,
            };
        }
        match e {
            ureq::Error::Timeout(_) => Error::Timeout {
                address,
                seconds: self.timeout.as_secs(),
            },
            ureq::Error::HostNotFound => Error::Connect {
                address,
                message: "host not found".into(),
            },
            ureq::Error::Io(io) => {
                if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Error::Tls {
                        address,
                        message: tls.to_string(),
                    };
                }
                let message = match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        "connection refused (is the daemon running and listening there?)".into()
                    }
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        return Error::Timeout {
                            address,
                            seconds: self.timeout.as_secs(),
                        };
                    }
                    _ => io.to_string(),
                };
                Error::Connect { address, message }
            }
            ureq::Error::BodyExceedsLimit(n) => Error::BadResponse {
                address,
                message: format!("the answer is larger than {n} bytes"),
            },
            other => Error::Http {
                address,
                message: other.to_string(),
            },
        }
    }
}

/// The message of the daemon's `{"error": {"message": ...}}` body, else the body itself.
pub fn error_message(body: &Value) -> String {
    ErrorBody::deserialize(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| match body {
            Value::String(s) => s.clone(),
            Value::Null => "no message".into(),
            other => other.to_string(),
        })
}
