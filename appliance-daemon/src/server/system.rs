//! The box itself: `GET /admin/v1/system` (host, driver, GPU summary) and
//! `GET /admin/v1/gpus` (every GPU's latest reading), from the telemetry sampler.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::StreamExt;

use super::AppState;
use super::auth::{Principal, audited};
use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use oasis_api::{Alert, ProfileAnswer};
pub use oasis_api::{
    AlertsReport, GpuSummary, GpusReport, HistoryReport, SamplerReport, SilenceRequest,
    SystemReport, UpdateAccepted,
};

/// The host, the driver and a summary of every GPU.
#[utoipa::path(get, path = "/admin/v1/system", responses((status = 200, body = SystemReport)))]
pub async fn system(State(st): State<AppState>) -> Json<SystemReport> {
    let t = &st.telemetry;
    let latest = t.latest();
    let gpus = latest
        .as_ref()
        .map(|s| s.gpus.iter().map(GpuSummary::from).collect())
        .unwrap_or_default();
    Json(SystemReport {
        host: latest.as_ref().map(|s| s.host.clone()),
        gpu: t.status(),
        gpus,
        sampler: SamplerReport {
            interval_ms: t.interval.as_millis() as u64,
            samples: t.samples.load(std::sync::atomic::Ordering::Relaxed),
            mean_sample_us: t.mean_sample_us(),
            history_len: t.history_len(),
        },
    })
}

#[utoipa::path(get, path = "/admin/v1/gpus", responses((status = 200, body = GpusReport)))]
pub async fn gpus(State(st): State<AppState>) -> Json<GpusReport> {
    let t = &st.telemetry;
    let status = t.status();
    let latest = t.latest();
    Json(GpusReport {
        available: status.available,
        reason: status.reason,
        ts_ms: latest.as_ref().map_or(0, |s| s.ts_ms),
        gpus: latest.map(|s| s.gpus.clone()).unwrap_or_default(),
        events: t.events(),
    })
}

#[utoipa::path(get, path = "/admin/v1/alerts", responses((status = 200, body = AlertsReport)))]
pub async fn alerts(State(st): State<AppState>) -> Json<AlertsReport> {
    let list = st.telemetry.alerts();
    let now = crate::telemetry::now_ms();
    Json(AlertsReport {
        firing: list.iter().filter(|a| a.state == "firing").count(),
        silenced: list
            .iter()
            .filter(|a| a.state == "firing" && a.is_silenced(now))
            .count(),
        alerts: list,
    })
}

/// Longest silence: 30 days.
const MAX_SILENCE_MINUTES: u64 = 30 * 24 * 60;

/// Silences an alert: its webhook notifications are held for `minutes` (also when it
/// resolves and fires again meanwhile); it still shows, marked silenced.
#[utoipa::path(post, path = "/admin/v1/alerts/{key}/silence", params(("key" = String, Path, description = "The alert's key, e.g. `gpu_temperature:gpu0`")),
    request_body = SilenceRequest,
    responses((status = 200, description = "The alert", body = Alert), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn silence_alert(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(key): Path<String>,
    JsonBody(req): JsonBody<SilenceRequest>,
) -> Result<Json<Alert>, ApiError> {
    if !(1..=MAX_SILENCE_MINUTES).contains(&req.minutes) {
        return Err(ApiError::invalid_param(
            "minutes",
            format!(
                "`minutes` must be 1 to {MAX_SILENCE_MINUTES} (30 days), got {}",
                req.minutes
            ),
        ));
    }
    let until = crate::telemetry::now_ms() + req.minutes * 60_000;
    let r = set_silence(&st, &key, Some(until), Some(who.actor()));
    audited(
        &st,
        Some(&who),
        "alert.silence",
        serde_json::json!({ "key": key, "minutes": req.minutes }),
        r,
    )
}

/// Ends an alert's silence: its next change is notified again.
#[utoipa::path(delete, path = "/admin/v1/alerts/{key}/silence", params(("key" = String, Path)),
    responses((status = 200, description = "The alert", body = Alert), (status = 404, body = ErrorBody)))]
pub async fn unsilence_alert(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(key): Path<String>,
) -> Result<Json<Alert>, ApiError> {
    let r = set_silence(&st, &key, None, None);
    audited(
        &st,
        Some(&who),
        "alert.unsilence",
        serde_json::json!({ "key": key }),
        r,
    )
}

fn set_silence(
    st: &AppState,
    key: &str,
    until_ms: Option<u64>,
    by: Option<String>,
) -> Result<Json<Alert>, ApiError> {
    let alert = st
        .telemetry
        .silence(key, until_ms, by)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no alert `{key}` (GET /admin/v1/alerts lists them)"
            ))
            .with_code("alert_not_found")
        })?;
    tracing::info!(key, until_ms, "alert silence changed");
    Ok(Json(alert))
}

/// The firmware profile: which one, how it was picked, every profile's fit, the engine
/// settings in force and where each came from, the changes made at start, and the
/// compliance report, checked again now (the box's settings may have changed since).
#[utoipa::path(get, path = "/admin/v1/profile", responses((status = 200, body = ProfileAnswer)))]
pub async fn profile(State(st): State<AppState>) -> Json<ProfileAnswer> {
    let recorded = st.config.inventory.clone();
    let fresh =
        tokio::task::spawn_blocking(move || crate::telemetry::inventory::read(recorded.as_deref()))
            .await
            .ok()
            .and_then(Result::ok);
    Json(crate::profile::answer(
        &st.profile,
        fresh,
        crate::telemetry::now_ms(),
    ))
}

/// `from`, `to` (ms since the Unix epoch) and `step` (ms) of a history query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Start, ms since the Unix epoch, before `to` [default: an hour before `to`].
    pub from: Option<u64>,
    /// End [default: now].
    pub to: Option<u64>,
    /// Bucket width in ms [default: 60000; at least the sampling interval, and at most
    /// 100000 buckets].
    #[param(minimum = 1)]
    pub step: Option<u64>,
}

/// A GPU's readings over time: the last hour from memory at any step, older ranges from the
/// minute aggregates kept for 30 days.
#[utoipa::path(get, path = "/admin/v1/gpus/{index}/history", params(("index" = u32, Path, minimum = 0, maximum = 2147483647), HistoryQuery),
    responses((status = 200, body = HistoryReport), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn gpu_history(
    State(st): State<AppState>,
    Path(index): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryReport>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad history query: {e}")))?;
    let gpu: u32 = index
        .parse()
        .map_err(|_| ApiError::invalid_param("index", format!("`{index}` is not a GPU index")))?;
    let t = &st.telemetry;
    let known = t
        .latest()
        .is_some_and(|s| s.gpus.iter().any(|g| g.index == gpu));
    if !known {
        return Err(ApiError::not_found(format!("no GPU with index {gpu}")));
    }
    let to = q.to.unwrap_or_else(crate::telemetry::now_ms);
    let from = q.from.unwrap_or(to.saturating_sub(3_600_000));
    if from >= to {
        return Err(ApiError::invalid_param(
            "from",
            "`from` must be before `to`",
        ));
    }
    let min_step = t.interval.as_millis() as u64;
    let step = q.step.unwrap_or(60_000);
    if step < min_step || (to - from) / step > 100_000 {
        return Err(ApiError::invalid_param(
            "step",
            format!(
                "`step` must be at least the sampling interval ({min_step} ms) and give at most 100000 buckets"
            ),
        ));
    }
    let buckets = {
        let t = t.clone();
        tokio::task::spawn_blocking(move || t.gpu_history(gpu, from, to, step))
            .await
            .map_err(ApiError::internal)?
    };
    Ok(Json(HistoryReport {
        gpu,
        from,
        to,
        step,
        buckets,
    }))
}

/// Server-sent events: one `sample` event per telemetry sample (the host and every GPU).
#[utoipa::path(get, path = "/admin/v1/telemetry/stream", responses((status = 200, description = "text/event-stream of samples", content_type = "text/event-stream")))]
pub async fn stream(
    State(st): State<AppState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.telemetry.stream.subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(snap) => {
                    let ev = SseEvent::default()
                        .event("sample")
                        .data(serde_json::to_string(&*snap).unwrap_or_default());
                    return Some((ev, rx));
                }
                // A slow reader skips samples rather than holding the sampler up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}

/// The installed system's two slots, the one booted, and the last update's outcome.
#[utoipa::path(get, path = "/admin/v1/system/slots",
    responses((status = 200, body = crate::system_update::SystemSlots)))]
pub async fn slots(State(st): State<AppState>) -> Json<crate::system_update::SystemSlots> {
    Json(st.system.status())
}

/// How long after answering an update the box reboots: the answer reaches the client.
const REBOOT_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Installs a signed update bundle (the request body, `oasis-installer bundle`) into the
/// slot not running and reboots into it; the box goes back by itself if it does not get
/// ready. Admin only, audited.
#[utoipa::path(post, path = "/admin/v1/system/update",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = UpdateAccepted), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    who: Option<axum::Extension<Principal>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(axum::http::StatusCode, Json<UpdateAccepted>), ApiError> {
    use crate::system_update::UpdateError;
    let who = who.map(|w| w.0);
    let length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let r = async {
        let to_api = |e: UpdateError| match e {
            UpdateError::Conflict(m) => ApiError::conflict(m),
            UpdateError::Bundle(m) => ApiError::invalid(format!("the update bundle is refused: {m}")),
            UpdateError::Failed(m) => ApiError::internal(format!("the update failed: {m}")),
        };
        if let Err(e) = st.system.check_update() {
            return Err(super::models::after_draining(body, to_api(e)).await);
        }
        let incoming = st.system.incoming_dir();
        if let Some(len) = length {
            let _ = std::fs::create_dir_all(&incoming);
            if let Err(m) = crate::import::check_space(&incoming, len) {
                return Err(super::models::after_draining(body, ApiError::insufficient_storage(m)).await);
            }
        }
        let dir = incoming.join(crate::store::random_hex(8));
        let path = dir.join("bundle.tar");
        super::models::receive(body, &dir, &path, st.config.idle_timeout).await?;
        let st2 = st.clone();
        let installed = tokio::task::spawn_blocking(move || st2.system.install(&path))
            .await
            .map_err(ApiError::internal);
        let _ = std::fs::remove_dir_all(&dir);
        let record = installed?.map_err(to_api)?;
        tracing::warn!(version = %record.version, slot = %record.to, "system update installed: rebooting into it");
        tokio::spawn(async {
            tokio::time::sleep(REBOOT_DELAY).await;
            let run = tokio::task::spawn_blocking(|| {
                std::process::Command::new("systemctl").arg("reboot").status()
            });
            match run.await.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::error!(status = %s, "systemctl reboot failed: reboot the box to run the update"),
                Err(e) => tracing::error!(error = %e, "cannot run systemctl reboot: reboot the box to run the update"),
            }
        });
        Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(UpdateAccepted {
                update: crate::system_update::record_view(&record),
                reboot_in_s: Some(REBOOT_DELAY.as_secs()),
            }),
        ))
    }
    .await;
    let what = match &r {
        Ok((_, a)) => serde_json::json!({
            "version": a.update.version, "from": a.update.from, "to": a.update.to, "bytes": length,
        }),
        Err(_) => serde_json::json!({ "bytes": length }),
    };
    audited(&st, who.as_ref(), "system.update", what, r)
}

/// At start, once serving: the last update's outcome by the slot this boot runs from, in
/// the log and the audit log.
pub fn settle_update(st: &AppState) {
    let Some(r) = st.system.settle() else {
        return;
    };
    let (action, outcome) = match r.state {
        system_image::slots::UpdateState::Succeeded => ("system.update.succeeded", "ok"),
        _ => ("system.update.rolled_back", "rolled back"),
    };
    if r.state == system_image::slots::UpdateState::Succeeded {
        tracing::info!(version = %r.version, slot = %r.to, "system update succeeded");
    } else {
        tracing::error!(version = %r.version, detail = %r.detail, "system update rolled back");
    }
    super::auth::audit_as(
        st,
        "system",
        "-",
        action,
        outcome,
        serde_json::to_value(&r).unwrap_or_default(),
    );
}
