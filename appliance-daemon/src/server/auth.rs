//! Authentication and authorization at the edge, and the admin routes of keys, usage and
//! the audit log.
//!
//! Every request passes [`authorize`]: health, readiness, metrics and the API document
//! are open; `/v1/*` needs a `user` or `admin` key; `GET /admin/v1/*` a `viewer` or
//! `admin` key; any other admin request an `admin` key. A token comes as
//! `Authorization: Bearer TOKEN` (or `x-api-key`). While no key but the local admin
//! credential exists, loopback clients may go without one, or with one it does not know
//! (a fresh install; logged at start). The principal is put in the request's extensions for the handlers.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::auth::{Denied, KeyRecord, Limits, Role};
use crate::store::unix_now;
pub use oasis_api::{
    AuditReport, CreateKey, GroupBy, KeyList, KeyView, PairRequest, PairingCode, UsageReport,
    UsageRow,
};

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key, or none for an anonymous loopback client of a fresh install.
    pub key: Option<KeyRecord>,
    pub from: Option<IpAddr>,
}

impl Principal {
    /// For the audit log: `key-1a2b3c4d (ops)` or `anonymous (192.0.2.7)`.
    pub fn actor(&self) -> String {
        match &self.key {
            Some(k) => format!("{} ({})", k.id, k.name),
            None => format!("anonymous ({})", self.from_str()),
        }
    }

    pub fn from_str(&self) -> String {
        self.from.map_or_else(|| "-".into(), |ip| ip.to_string())
    }

    /// The tenant for fair scheduling and metering.
    pub fn tenant(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.id.as_str())
    }
}

/// Attempts per source address in a sliding minute, for the unauthenticated pairing
/// route: a guesser gets a handful of tries a minute however many connections it opens.
#[derive(Debug)]
pub struct AttemptLimiter {
    per_minute: usize,
    seen: std::sync::Mutex<
        std::collections::HashMap<IpAddr, std::collections::VecDeque<std::time::Instant>>,
    >,
}

/// Source addresses the limiter remembers at most (each holds a few instants).
const LIMITER_ADDRESSES: usize = 65_536;

impl AttemptLimiter {
    pub fn new(per_minute: usize) -> AttemptLimiter {
        AttemptLimiter {
            per_minute,
            seen: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Counts an attempt from `ip`; `Err(retry_after)` when it is over the limit.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), std::time::Duration> {
        let now = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= LIMITER_ADDRESSES && !seen.contains_key(&ip) {
            seen.retain(|_, q| q.back().is_some_and(|t| now - *t < minute));
            if seen.len() >= LIMITER_ADDRESSES {
                // Flooded from that many addresses: every newcomer waits.
                return Err(std::time::Duration::from_secs(60));
            }
        }
        let q = seen.entry(ip).or_default();
        while q.front().is_some_and(|t| now - *t >= minute) {
            q.pop_front();
        }
        if q.len() >= self.per_minute {
            let wait = q
                .front()
                .map_or(minute, |t| minute.saturating_sub(now - *t));
            return Err(wait + std::time::Duration::from_millis(999));
        }
        q.push_back(now);
        Ok(())
    }
}

/// Pairing attempts a source address gets per minute.
pub const PAIR_ATTEMPTS_PER_MINUTE: usize = 10;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Inference,
    AdminRead,
    AdminWrite,
}

fn need(method: &Method, path: &str) -> Need {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/admin/v1/pair" => Need::Nothing,
        // The console's own files: public; what it shows comes from the API, with a key.
        p if super::console::is_console_path(method, p) => Need::Nothing,
        p if p.starts_with("/admin/") => {
            if method == Method::GET || method == Method::HEAD {
                Need::AdminRead
            } else {
                Need::AdminWrite
            }
        }
        _ => Need::Inference,
    }
}

fn allowed(role: Role, need: Need) -> bool {
    match need {
        Need::Nothing => true,
        Need::Inference => matches!(role, Role::User | Role::Admin),
        Need::AdminRead => matches!(role, Role::Viewer | Role::Admin),
        Need::AdminWrite => role == Role::Admin,
    }
}

fn unauthorized(message: impl Into<String>, code: &'static str) -> Response {
    let mut e = ApiError::invalid(message).with_code(code);
    e.status = StatusCode::UNAUTHORIZED;
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn forbidden(message: impl Into<String>) -> ApiError {
    let mut e = ApiError::invalid(message).with_code("permission_denied");
    e.status = StatusCode::FORBIDDEN;
    e
}

/// The token of a request, if it carries one.
fn token(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        let t = t.trim();
        return (!t.is_empty()).then(|| t.to_string());
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The middleware: finds the principal and checks it may use the route.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let need = need(req.method(), req.uri().path());
    let from = req
        .extensions()
        .get::<ConnectInfo<crate::tls::Peer>>()
        .map(|c| c.0.0.ip());
    let principal = match token(&req) {
        Some(t) => match st.keys.check(&t) {
            Ok(key) => Principal {
                key: Some(key),
                from,
            },
            // A fresh install ignores tokens it does not know from loopback clients (the
            // OpenAI SDK always sends one), as it would let them in without.
            Err(Denied::Unknown)
                if from.is_some_and(|ip| ip.is_loopback()) && st.keys.open_mode() =>
            {
                Principal { key: None, from }
            }
            // An open route ignores a token it does not accept.
            Err(_) if need == Need::Nothing => Principal { key: None, from },
            Err(d) => {
                let (msg, code) = match d {
                    Denied::Unknown => ("Incorrect API key provided", "invalid_api_key"),
                    Denied::Revoked => ("This API key has been revoked", "revoked_api_key"),
                    Denied::Expired => ("This API key has expired", "expired_api_key"),
                };
                tracing::info!(from = ?from, path = %req.uri().path(), code, "request refused");
                return unauthorized(msg, code);
            }
        },
        None => {
            let loopback = from.is_some_and(|ip| ip.is_loopback());
            if need != Need::Nothing && !(loopback && st.keys.open_mode()) {
                return unauthorized(
                    "A key is needed: send `Authorization: Bearer KEY` (an admin creates keys with `oasis key create`)",
                    "missing_api_key",
                );
            }
            Principal { key: None, from }
        }
    };
    if let Some(k) = &principal.key
        && !allowed(k.role, need)
    {
        return forbidden(format!(
            "Key `{}` has the role `{}`, which may not {} {}",
            k.name,
            k.role.name(),
            req.method(),
            req.uri().path()
        ))
        .into_response();
    }
    // An admin change whose audit entry could not be written would go unrecorded: while
    // the log refuses entries, changes are refused too (reads still work, to see why).
    if changes_state(need, req.method(), req.uri().path())
        && let Err(e) = st.audit.flush()
    {
        tracing::warn!(path = %req.uri().path(), "admin change refused: the audit log cannot be written");
        let mut err = ApiError::invalid(format!(
            "The audit log cannot be written ({e:#}); admin changes are refused until it can be (see GET /admin/v1/audit and `oasis audit verify`)"
        ))
        .with_code("audit_unavailable");
        err.status = StatusCode::SERVICE_UNAVAILABLE;
        err.retry_after = Some(std::time::Duration::from_secs(30));
        return err.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Requests whose outcome goes to the audit log: admin writes and pairing.
fn changes_state(need: Need, method: &Method, path: &str) -> bool {
    need == Need::AdminWrite || (method == Method::POST && path == "/admin/v1/pair")
}

fn key_view(k: KeyRecord, token: Option<String>) -> KeyView {
    KeyView {
        id: k.id,
        name: k.name,
        owner: k.owner,
        role: k.role,
        prefix: k.prefix,
        models: k.models,
        limits: k.limits,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        created_at: k.created_at,
        created_by: k.created_by,
        key: token,
        tls_fingerprint: None,
    }
}

/// Writes an audit entry for an admin action. A failure to write is not silent: the entry
/// is kept and written once the log takes entries again, the failure is logged and
/// reported, and [`authorize`] refuses further admin changes until then.
pub fn audit(
    st: &AppState,
    who: &Principal,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    audit_as(st, &who.actor(), &who.from_str(), action, outcome, detail);
}

/// Records an action of `actor` (a caller, or the daemon itself: `system`) from `from`.
pub fn audit_as(
    st: &AppState,
    actor: &str,
    from: &str,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    let entry = crate::audit::Entry {
        ts_ms: crate::telemetry::now_ms(),
        actor,
        action,
        detail: serde_json::json!({ "from": from, "outcome": outcome, "what": detail }),
    };
    // The writer logs and reports a failure itself.
    let _ = st.audit.record(&entry);
}

/// Audits an admin action by its result (`ok`, or the error's message) and passes the
/// result on.
pub fn audited<T>(
    st: &AppState,
    who: Option<&Principal>,
    action: &str,
    what: serde_json::Value,
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let anon = Principal {
        key: None,
        from: None,
    };
    let who = who.unwrap_or(&anon);
    let outcome = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused ({}): {}", e.status.as_u16(), e.message),
    };
    audit(st, who, action, &outcome, what);
    r
}

/// Largest rate or quota a key may have.
const MAX_LIMIT: u64 = 1_000_000_000_000_000;
/// The last second of year 9999.
const MAX_EXPIRES_AT: u64 = 253_402_300_799;

/// Creates a key; the answer holds its token, shown this once.
#[utoipa::path(post, path = "/admin/v1/keys", request_body = CreateKey,
    responses((status = 201, body = KeyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_key(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    JsonBody(req): JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    let count = req.name.chars().count();
    if !(1..=128).contains(&count) {
        return Err(ApiError::invalid_param(
            "name",
            format!("`name` must have 1 to 128 characters, got {count}"),
        ));
    }
    let name = match req.name.trim() {
        "" => req.name.clone(),
        trimmed => trimmed.to_string(),
    };
    if req.owner.as_ref().is_some_and(|o| o.chars().count() > 256) {
        return Err(ApiError::invalid_param(
            "owner",
            "`owner` must have at most 256 characters",
        ));
    }
    if req.models.as_ref().is_some_and(|m| m.len() > 1024) {
        return Err(ApiError::invalid_param(
            "models",
            "`models` may name at most 1024 models",
        ));
    }
    let role = match req.role.as_deref() {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| {
            ApiError::invalid_param(
                "role",
                format!("`role` must be user, viewer or admin, got `{r}`"),
            )
        })?,
    };
    let limits = Limits {
        rpm: req.rpm,
        tpm: req.tpm,
        tokens_per_day: req.tokens_per_day,
        tokens_per_month: req.tokens_per_month,
    };
    for (param, v) in [
        ("rpm", limits.rpm),
        ("tpm", limits.tpm),
        ("tokens_per_day", limits.tokens_per_day),
        ("tokens_per_month", limits.tokens_per_month),
    ] {
        if v.is_some_and(|v| !(1..=MAX_LIMIT).contains(&v)) {
            return Err(ApiError::invalid_param(
                param,
                format!("`{param}` must be between 1 and {MAX_LIMIT} (leave it out for no limit)"),
            ));
        }
    }
    if req.expires_at.is_some_and(|t| t > MAX_EXPIRES_AT) {
        return Err(ApiError::invalid_param(
            "expires_at",
            format!("`expires_at` must be at most {MAX_EXPIRES_AT} (the end of year 9999)"),
        ));
    }
    let token = crate::auth::new_token();
    let created_by = who
        .key
        .as_ref()
        .map_or_else(|| "anonymous".into(), |k| k.id.clone());
    let record = KeyRecord {
        owner: req.owner,
        models: req.models,
        limits,
        expires_at: req.expires_at,
        ..KeyRecord::new(&token, name, role, created_by)
    };
    st.keys
        .insert(record.clone())
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    tracing::info!(id = %record.id, prefix = %record.prefix, role = role.name(), "key created");
    audit(
        &st,
        &who,
        "key.create",
        "ok",
        serde_json::json!({
            "id": record.id, "name": record.name, "role": role.name(), "prefix": record.prefix,
            "models": record.models, "limits": record.limits, "expires_at": record.expires_at,
        }),
    );
    Ok((StatusCode::CREATED, Json(key_view(record, Some(token)))).into_response())
}

/// Every key (without tokens).
#[utoipa::path(get, path = "/admin/v1/keys", responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(st): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        data: st
            .keys
            .list()
            .into_iter()
            .map(|k| key_view(k, None))
            .collect(),
    })
}

/// Revokes a key: the next request with it gets 401.
#[utoipa::path(delete, path = "/admin/v1/keys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The box's local admin credential")))]
pub async fn revoke_key(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let what = serde_json::json!({ "id": id });
    let r = async {
        let local = crate::auth::local_token(&st.config.data_dir)
            .and_then(|t| st.keys.check(&t).ok())
            .filter(|k| k.id == id);
        if local.is_some() {
            // The box's own CLI signs in with it: revoked, `oasis` on the box would be
            // locked out until a restart.
            return Err(ApiError::conflict(format!(
                "`{id}` is this box's local admin credential ({}), which the `oasis` command on the box uses; it cannot be revoked over the API. To replace it, delete that file and restart the daemon: it makes a new one and revokes this one",
                crate::auth::admin_token_path(&st.config.data_dir).display()
            ))
            .with_code("local_admin_credential"));
        }
        let k = st
            .keys
            .revoke(&id)
            .map_err(|e| ApiError::internal(format!("{e:#}")))?
            .ok_or_else(|| ApiError::not_found(format!("no key `{id}`")).with_code("key_not_found"))?;
        tracing::info!(id = %k.id, prefix = %k.prefix, "key revoked");
        Ok(Json(key_view(k, None)))
    }
    .await;
    audited(&st, Some(&who), "key.revoke", what, r)
}

/// Pairs a client with the one-time code: an admin token, shown once. The code works once;
/// five wrong tries burn it.
#[utoipa::path(post, path = "/admin/v1/pair", request_body = PairRequest,
    responses((status = 201, body = KeyView), (status = 401, body = ErrorBody)))]
pub async fn pair(
    State(st): State<AppState>,
    who: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<PairRequest>,
) -> Result<Response, ApiError> {
    let who = who.map(|w| w.0);
    let name: String = req.name.chars().take(64).collect();
    let what = serde_json::json!({ "name": name });
    if let Some(ip) = who.as_ref().and_then(|w| w.from)
        && let Err(wait) = st.pair_attempts.attempt(ip)
    {
        // Not audited: the limit exists so a guesser cannot fill the log either.
        tracing::info!(from = %ip, "pairing attempt over the limit");
        return Err(ApiError::queue_full(
            format!(
                "Too many pairing attempts from {ip}: at most {PAIR_ATTEMPTS_PER_MINUTE} a minute"
            ),
            wait,
        )
        .with_code("rate_limit_exceeded"));
    }
    let (keys, dir) = (st.keys.clone(), st.config.data_dir.clone());
    let code = req.code;
    let n = name.clone();
    let out = tokio::task::spawn_blocking(move || keys.pair(&dir, &code, &n))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let r = match out {
        Ok((record, token)) => {
            tracing::info!(id = %record.id, prefix = %record.prefix, "paired");
            let mut view = key_view(record, Some(token));
            view.tls_fingerprint = st.tls_fingerprint.clone();
            Ok((StatusCode::CREATED, Json(view)).into_response())
        }
        Err(e) => {
            let msg = match e {
                crate::auth::PairError::NoCode => {
                    "No pairing code is open: make one on the box with `oasis pair-code`"
                        .to_string()
                }
                crate::auth::PairError::Wrong(0) => {
                    "Wrong pairing code; it is now burned: make a new one with `oasis pair-code`"
                        .to_string()
                }
                crate::auth::PairError::Wrong(left) => {
                    format!("Wrong pairing code ({left} tries left)")
                }
            };
            let mut e = ApiError::invalid(msg).with_code("pairing_failed");
            e.status = StatusCode::UNAUTHORIZED;
            Err(e)
        }
    };
    audited(&st, who.as_ref(), "auth.pair", what, r)
}

/// Makes a new one-time pairing code (replacing any other).
#[utoipa::path(post, path = "/admin/v1/pairing-code",
    responses((status = 201, body = PairingCode), (status = 403, body = ErrorBody)))]
pub async fn pairing_code(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    let code = st
        .keys
        .new_pairing_code(&st.config.data_dir)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    audit(&st, &who, "auth.pairing_code", "ok", serde_json::json!({}));
    Ok((
        StatusCode::CREATED,
        Json(PairingCode {
            code,
            expires_in_s: crate::auth::PAIRING_TTL_S,
            tls_fingerprint: st.tls_fingerprint.clone(),
        }),
    )
        .into_response())
}

/// `GET /admin/v1/usage` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `key`, `model` or `day` [default: key].
    #[param(pattern = "^(key|model|day)$")]
    pub group_by: Option<String>,
    /// First day, `YYYY-MM-DD`, not after `to` [default: 30 days ago].
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` [default: today].
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

fn check_day(param: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be a date YYYY-MM-DD, got `{v}`"),
        ))
    }
}

/// Tokens and requests by key, model or day over a range of days (UTC), as JSON or CSV.
#[utoipa::path(get, path = "/admin/v1/usage", params(UsageQuery),
    responses((status = 200, content((UsageReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody)))]
pub async fn usage(
    State(st): State<AppState>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad usage query: {e}")))?;
    let asked = q.group_by.as_deref().unwrap_or("key");
    let Some(group_by) = GroupBy::parse(asked) else {
        return Err(ApiError::invalid_param(
            "group_by",
            format!("`group_by` must be key, model or day, got `{asked}`"),
        ));
    };
    let now = unix_now();
    let from = q
        .from
        .unwrap_or_else(|| crate::auth::day_of(now.saturating_sub(30 * 86_400)));
    let to = q.to.unwrap_or_else(|| crate::auth::day_of(now));
    check_day("from", &from)?;
    check_day("to", &to)?;
    let names: std::collections::HashMap<String, String> =
        st.keys.list().into_iter().map(|k| (k.id, k.name)).collect();
    let mut groups: std::collections::BTreeMap<String, crate::metering::Counts> =
        Default::default();
    for r in st.meter.rows(&from, &to) {
        let g = match group_by {
            GroupBy::Model => r.model,
            GroupBy::Day => r.day,
            GroupBy::Key => r.key,
        };
        let e = groups.entry(g).or_default();
        *e = e.plus(&r.counts);
    }
    let data: Vec<UsageRow> = groups
        .into_iter()
        .map(|(group, counts)| UsageRow {
            name: (group_by == GroupBy::Key)
                .then(|| names.get(&group).cloned())
                .flatten(),
            total_tokens: counts.tokens(),
            group,
            counts,
        })
        .collect();
    if q.format.as_deref() == Some("csv") {
        let mut csv = format!(
            "{},name,requests,prompt_tokens,completion_tokens,total_tokens,failed,latency_ms\n",
            group_by.name()
        );
        for r in &data {
            let name = r.name.clone().unwrap_or_default().replace('"', "\"\"");
            csv.push_str(&format!(
                "{},\"{}\",{},{},{},{},{},{}\n",
                r.group,
                name,
                r.counts.requests,
                r.counts.prompt_tokens,
                r.counts.completion_tokens,
                r.total_tokens,
                r.counts.failed,
                r.counts.latency_ms
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    if let Some(f) = q.format.as_deref()
        && f != "json"
    {
        return Err(ApiError::invalid_param(
            "format",
            format!("`format` must be json or csv, got `{f}`"),
        ));
    }
    Ok(Json(UsageReport {
        group_by,
        from,
        to,
        data,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The newest entries to return [default: 100].
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<usize>,
}

/// The newest audit entries, and whether the chain of all of them holds.
#[utoipa::path(get, path = "/admin/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditReport), (status = 400, body = ErrorBody)))]
pub async fn audit_log(
    State(st): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditReport>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad audit query: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid_param(
            "limit",
            format!("`limit` must be between 1 and 10000, got {limit}"),
        ));
    }
    let dir = st.config.data_dir.clone();
    let write = st.audit.health();
    let report = tokio::task::spawn_blocking(move || {
        let verdict = crate::audit::verify(&dir);
        AuditReport {
            write,
            chain_ok: verdict.is_ok(),
            chain_error: verdict.as_ref().err().map(|e| format!("{e:#}")),
            entries_total: verdict.unwrap_or(0),
            data: crate::audit::tail(&dir, limit)
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
        }
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(report))
}
