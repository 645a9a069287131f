//! `oasis serve`: the HTTP daemon.
//!
//! [`app`] builds the axum router over an [`AppState`] (so handlers can be tested with
//! `oneshot`); [`run`] opens the state database, loads the catalog, binds the listener and
//! serves until SIGINT/SIGTERM, then gives in-flight requests a bounded grace period.
//! Only this module speaks HTTP; the engine is reached over [`worker`]'s channels.

pub mod auth;
pub mod catalog;
pub mod completions;
pub mod console;
pub mod deployments;
pub mod embeddings;
pub mod error;
pub mod experts;
pub mod extract;
pub mod fit;
pub mod http;
pub mod metrics;
pub mod models;
pub use oasis_api::openai;
pub mod openapi;
pub mod routes;
pub mod storage;
pub mod system;
pub mod validate;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Mutex as AsyncMutex;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use self::catalog::{Catalog, ServedModel};
use self::error::ApiError;
use crate::config::ServeConfig;
use crate::store::{Settings, Store};

/// The share of a GPU's memory left after the weights that the caches take when neither
/// the configuration nor a profile says (vLLM's `gpu_memory_utilization` default).
const DEFAULT_GPU_KV_FRACTION: f64 = 0.9;

/// The request-id header, set when the client did not send one and echoed back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared state of the running daemon.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: ServeConfig,
    pub catalog: Catalog,
    pub settings: Settings,
    /// Kept so the daemon's state stays open for later admin writes.
    pub store: Store,
    pub started: Instant,
    /// Set on SIGINT/SIGTERM: readiness turns false and new generations get 503.
    pub draining: AtomicBool,
    /// TTFT, inter-token and end-to-end latency histograms for `/metrics`.
    pub latencies: metrics::Latencies,
    /// GPU and host readings.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The firmware profile selected at start and what came of it.
    pub profile: crate::profile::ProfileState,
    /// Imports and their progress.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// API keys and admin tokens, their limits.
    pub keys: Arc<crate::auth::Keys>,
    /// Token metering.
    pub meter: crate::metering::Meter,
    /// The TLS certificate's fingerprint, when serving HTTPS.
    pub tls_fingerprint: Option<String>,
    /// The audit log's writer: entries that could not be written wait here, and admin
    /// changes are refused until they are.
    pub audit: crate::audit::AuditLog,
    /// Pairing attempts per source address.
    pub pair_attempts: auth::AttemptLimiter,
    /// Held while a deployment is created, changed or removed, and while a model is
    /// deleted: one change to what is served at a time.
    pub deploy_lock: AsyncMutex<()>,
    /// The installed system's slots and updates.
    pub system: crate::system_update::SystemImage,
}

/// The daemon's long-lived helpers: imports, keys, metering.
#[derive(Debug)]
pub struct Services {
    pub jobs: Arc<crate::jobs::Jobs>,
    pub keys: Arc<crate::auth::Keys>,
    pub meter: crate::metering::Meter,
    /// The TLS certificate's fingerprint, when serving HTTPS.
    pub tls_fingerprint: Option<String>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: ServeConfig,
        catalog: Catalog,
        settings: Settings,
        store: Store,
        telemetry: Arc<crate::telemetry::Telemetry>,
        profile: crate::profile::ProfileState,
        services: Services,
    ) -> Self {
        let Services {
            jobs,
            keys,
            meter,
            tls_fingerprint,
        } = services;
        let audit = crate::audit::AuditLog::new(&config.data_dir);
        let system = crate::system_update::SystemImage::detect(&config.data_dir);
        AppState(Arc::new(Inner {
            audit,
            pair_attempts: auth::AttemptLimiter::new(auth::PAIR_ATTEMPTS_PER_MINUTE),
            config,
            catalog,
            settings,
            store,
            telemetry,
            profile,
            jobs,
            keys,
            meter,
            tls_fingerprint,
            deploy_lock: AsyncMutex::new(()),
            system,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            latencies: metrics::Latencies::default(),
        }))
    }

    /// The served model `id`, or 404.
    pub fn model(&self, id: &str) -> Result<Arc<ServedModel>, ApiError> {
        self.catalog
            .get(id)
            .ok_or_else(|| ApiError::model_not_found(id, &self.catalog.all_ids()))
    }

    /// The chat model a generation request names: an embedding model there is a 400 that
    /// says where it belongs (elsewhere, such as a fit, it is not found: 404).
    pub fn generation_model(&self, id: &str) -> Result<Arc<ServedModel>, ApiError> {
        if self.catalog.get(id).is_none() && self.catalog.embedder(id).is_some() {
            return Err(ApiError::invalid_param(
                "model",
                format!("`{id}` is an embedding model: use POST /v1/embeddings"),
            ));
        }
        self.model(id)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Every route the daemon serves, as (method, path): the OpenAPI document is checked
/// against this list in the tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("POST", "/v1/embeddings"),
    ("GET", "/admin/v1/models/{id}/fit"),
    ("GET", "/admin/v1/storage"),
    ("GET", "/admin/v1/models"),
    ("GET", "/admin/v1/models/{id}"),
    ("DELETE", "/admin/v1/models/{id}"),
    ("POST", "/admin/v1/models/import"),
    ("POST", "/admin/v1/models/upload"),
    ("GET", "/admin/v1/jobs"),
    ("GET", "/admin/v1/jobs/{id}"),
    ("DELETE", "/admin/v1/jobs/{id}"),
    ("POST", "/admin/v1/jobs/{id}/cancel"),
    ("GET", "/admin/v1/jobs/{id}/events"),
    ("POST", "/admin/v1/pair"),
    ("POST", "/admin/v1/pairing-code"),
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys"),
    ("DELETE", "/admin/v1/keys/{id}"),
    ("GET", "/admin/v1/usage"),
    ("GET", "/admin/v1/audit"),
    ("GET", "/admin/v1/deployments"),
    ("POST", "/admin/v1/deployments"),
    ("GET", "/admin/v1/deployments/{name}"),
    ("PATCH", "/admin/v1/deployments/{name}"),
    ("DELETE", "/admin/v1/deployments/{name}"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/openapi.json"),
    ("GET", "/admin/v1/status"),
    ("GET", "/admin/v1/system"),
    ("GET", "/admin/v1/gpus"),
    ("GET", "/admin/v1/gpus/{index}/history"),
    ("GET", "/admin/v1/telemetry/stream"),
    ("GET", "/admin/v1/alerts"),
    ("POST", "/admin/v1/alerts/{key}/silence"),
    ("DELETE", "/admin/v1/alerts/{key}/silence"),
    ("GET", "/admin/v1/profile"),
    ("GET", "/admin/v1/system/slots"),
    ("POST", "/admin/v1/system/update"),
    ("GET", "/admin/v1/engine/experts"),
    ("POST", "/admin/v1/engine/rebalance"),
    ("GET", "/metrics"),
];

/// The router with all middleware.
pub fn app(state: AppState) -> Router {
    let timeout = state.config.request_timeout + Duration::from_secs(5);
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/v1/models", get(routes::list_models))
        .route("/v1/models/{id}", get(routes::get_model))
        .route("/v1/chat/completions", post(completions::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/admin/v1/status", get(routes::status))
        .route("/admin/v1/system", get(system::system))
        .route("/admin/v1/gpus", get(system::gpus))
        .route("/admin/v1/gpus/{index}/history", get(system::gpu_history))
        .route("/admin/v1/telemetry/stream", get(system::stream))
        .route("/admin/v1/alerts", get(system::alerts))
        .route(
            "/admin/v1/alerts/{key}/silence",
            post(system::silence_alert).delete(system::unsilence_alert),
        )
        .route("/admin/v1/profile", get(system::profile))
        .route("/admin/v1/system/slots", get(system::slots))
        .route("/admin/v1/models/{id}/fit", get(fit::model_fit))
        .route("/admin/v1/storage", get(storage::storage))
        .route("/admin/v1/models", get(models::list))
        .route(
            "/admin/v1/models/{id}",
            get(models::show).delete(models::remove),
        )
        .route("/admin/v1/models/import", post(models::import))
        .route("/admin/v1/jobs", get(models::jobs))
        .route(
            "/admin/v1/jobs/{id}",
            get(models::job).delete(models::delete_job),
        )
        .route("/admin/v1/jobs/{id}/cancel", post(models::cancel_job))
        .route("/admin/v1/jobs/{id}/events", get(models::job_events))
        .route("/admin/v1/pair", post(auth::pair))
        .route("/admin/v1/pairing-code", post(auth::pairing_code))
        .route(
            "/admin/v1/keys",
            get(auth::list_keys).post(auth::create_key),
        )
        .route("/admin/v1/keys/{id}", axum::routing::delete(auth::revoke_key))
        .route("/admin/v1/usage", get(auth::usage))
        .route("/admin/v1/audit", get(auth::audit_log))
        .route(
            "/admin/v1/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/admin/v1/deployments/{name}",
            get(deployments::show)
                .patch(deployments::change)
                .delete(deployments::remove),
        )
        .route("/admin/v1/engine/experts", get(experts::experts))
        .route("/admin/v1/engine/rebalance", post(experts::rebalance))
        .route("/metrics", get(metrics::metrics))
        .fallback(console::serve)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Innermost first: each `layer` wraps everything above it.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        // Uploads stream to disk for as long as they take, past the body limit and the
        // request timeout.
        .merge(
            Router::new()
                .route("/admin/v1/models/upload", post(models::upload))
                .route("/admin/v1/system/update", post(system::update)),
        )
        .layer(middleware::from_fn_with_state(state.clone(), auth::authorize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            openai_error_bodies,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Gives error responses made outside our handlers (the timeout, hyper) OpenAI's JSON body,
/// and runs the request with its id at hand for [`ApiError::internal`].
async fn openai_error_bodies(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let resp = error::REQUEST_ID.scope(id, next.run(req)).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_client_error() || status.is_server_error() {
        if is_json {
            return resp;
        }
        let (parts, _) = resp.into_parts();
        let mut err = match status {
            StatusCode::GATEWAY_TIMEOUT => ApiError::timeout(st.config.request_timeout),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(st.config.max_body_bytes),
            _ => ApiError::invalid(status.canonical_reason().unwrap_or("error")),
        };
        err.status = status;
        let mut out = err.into_response();
        for (k, v) in parts.headers.iter() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                out.headers_mut().insert(k.clone(), v.clone());
            }
        }
        return out;
    }
    resp
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(mut config: ServeConfig) -> Result<()> {
    let started = Instant::now();
    crate::paths::restrict(&config.data_dir)?;
    let store = Store::open(&config.data_dir.join("state"))?;
    let settings = store.record_start()?;
    tracing::info!(data_dir = %config.data_dir.display(), instance = %settings.instance_id, starts = settings.starts, "state opened");
    // Where models run: a GPU when one can be used (`auto`), said in the log with why.
    let kernel_cache = Some(config.data_dir.join("cache").join("kernels"));
    let choice = config.device_choice;
    config.device =
        tokio::task::spawn_blocking(move || engine::device::select(choice, kernel_cache))
            .await
            .context("the device check stopped")??;
    tracing::info!(device = %config.device.spec.describe(), why = %config.device.why, "device");
    // The profile first: its engine plan sets the defaults the models load with.
    let models = store.models()?.len().max(config.models.len()).max(1);
    let (config_out, profile) = tokio::task::spawn_blocking(move || {
        let profile = crate::profile::prepare(&mut config, models);
        (config, profile)
    })
    .await
    .context("the profile check stopped")?;
    config = config_out;
    let profile = profile?;
    if config.device.spec.is_cuda()
        && config.gpu_kv_fraction.is_none()
        && config.origins.kv_cache_bytes == crate::config::Origin::Default
    {
        config.gpu_kv_fraction = Some(DEFAULT_GPU_KV_FRACTION / models as f64);
    }
    let catalog = {
        let (store, config) = (store.clone(), config.clone());
        tokio::task::spawn_blocking(move || catalog::load(&store, &config))
            .await
            .context("model loading stopped")??
    };
    if catalog.is_empty() {
        tracing::warn!("no model is loaded: /readyz reports not ready; start with --model PATH");
    }
    let telemetry = crate::telemetry::Telemetry::start(&crate::telemetry::TelemetryConfig {
        interval: config.telemetry_interval,
        replay: config.telemetry_replay.clone(),
        rules: crate::profile::alert_rules(profile.selection.profile.as_ref()),
        webhooks: config.alert_webhooks.clone(),
        store: Some(store.clone()),
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let grace = config.shutdown_grace;
    let jobs = Arc::new(crate::jobs::Jobs::open(
        store.clone(),
        crate::import::StoreDir {
            root: models::store_root(&config.data_dir),
            max_bytes_per_s: config.import_max_bytes_per_s,
        },
    )?);
    let keys = Arc::new(crate::auth::Keys::open(store.clone(), &config.data_dir)?);
    let meter =
        crate::metering::Meter::start(store.clone()).context("cannot start the metering thread")?;
    seed_totals(&keys, &meter);
    if keys.open_mode() {
        tracing::warn!(
            "no API keys yet: loopback clients may use the API without a key; the first `oasis key create` ends that"
        );
    }
    let tls = if config.tls {
        let names = tls_names(addr);
        let (dir, cert, key) = (
            config.data_dir.clone(),
            config.tls_cert.clone(),
            config.tls_key.clone(),
        );
        Some(
            tokio::task::spawn_blocking(move || {
                crate::tls::load_or_make(&dir, cert.as_deref(), key.as_deref(), &names)
            })
            .await
            .context("the TLS set-up stopped")??,
        )
    } else {
        None
    };
    // A fresh install gets a one-time pairing code for the admin's desktop app.
    let pairing = if settings.starts == 1 && !keys.pairing_open() {
        Some(keys.new_pairing_code(&config.data_dir)?)
    } else {
        None
    };
    let data_dir = config.data_dir.clone();
    let state = AppState::new(
        config,
        catalog,
        settings,
        store,
        telemetry,
        profile,
        Services {
            jobs,
            keys,
            meter,
            tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
        },
    );
    if let Some(t) = &tls {
        tracing::info!(fingerprint = %t.fingerprint, cert = %t.cert_path.display(), self_signed = t.self_signed, "TLS");
    }
    // One machine-readable line on stdout: scripts and tests read the address from it.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("oasis: listening on {scheme}://{addr}");
    if let Some(t) = &tls {
        println!(
            "oasis: TLS certificate SHA-256 fingerprint {}",
            t.fingerprint
        );
    }
    // The code goes to a terminal only: a redirected stdout is a log file, which others
    // may read (the installer's console service shows the 0600 file instead).
    if let Some(code) = &pairing {
        let file = data_dir.join(crate::auth::PAIRING_FILE);
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            println!(
                "oasis: pairing code {code} (one use, 24 h; also in {})",
                file.display()
            );
        } else {
            println!(
                "oasis: a one-time pairing code is in {} (readable by this user only; `oasis pair-code` makes a new one)",
                file.display()
            );
        }
    }
    match &state.config.console_dir {
        Some(dir) => println!(
            "oasis: web console at {scheme}://{addr}/ (from {})",
            dir.display()
        ),
        None => tracing::warn!(
            "no web console installed: `/` answers 404 (build it with `npm ci && npm run build` in desktop-ui/, or set console_dir)"
        ),
    }
    tracing::info!(%addr, startup_ms = started.elapsed().as_millis() as u64, models = ?state.catalog.served_ids(), "serving");
    system::settle_update(&state);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut deadline_rx = stop_rx.clone();
    let shutdown_state = state.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown_state.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
    });
    let limits = http::ConnLimits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: http::fit_connection_cap(state.config.max_connections),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        idle_timeout_s = state.config.idle_timeout.as_secs(),
        "connection limits"
    );
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    let server = http::serve(listener, acceptor, app(state), limits, stop_rx);
    let deadline = async move {
        let _ = deadline_rx.wait_for(|v| *v).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!("grace period over: closing the remaining connections"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The names the daemon's own certificate is made for: localhost, the host's name, the
/// loopback addresses and the listen address (or, for an unspecified one, every address
/// of the host's interfaces).
fn tls_names(addr: std::net::SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(h) = sysinfo::System::host_name() {
        names.push(h);
    }
    if addr.ip().is_unspecified() {
        names.extend(
            appliance_host::facts::interface_addresses()
                .iter()
                .map(ToString::to_string),
        );
    } else {
        names.push(addr.ip().to_string());
    }
    names.sort();
    names.dedup();
    names
}

/// Each key's tokens of today and of this month, from the metered usage.
fn seed_totals(keys: &crate::auth::Keys, meter: &crate::metering::Meter) {
    let now = crate::store::unix_now();
    let today = crate::auth::day_of(now);
    let month_start = format!("{}-01", &today[..7]);
    let mut totals: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for r in meter.rows(&month_start, &today) {
        let t = totals.entry(r.key).or_default();
        t.1 += r.counts.tokens();
        if r.day == today {
            t.0 += r.counts.tokens();
        }
    }
    for (key, (day, month)) in totals {
        keys.seed_totals(&key, day, month);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
