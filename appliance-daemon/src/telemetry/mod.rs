//! Know the box: GPU readings (NVML, or a replayed trace) and host readings (`sysinfo`),
//! sampled on a thread of their own, the last hour kept in memory.
//!
//! No NVIDIA driver is a state, not an error: the daemon serves, reports
//! `gpu.available = false` with the reason, and keeps sampling the host. A GPU that stops
//! answering is reported in its own sample (`error`), not fatal.

pub mod alerts;
pub mod history;
pub mod replay;
pub mod webhook;

pub use appliance_host::facts as host;
pub use appliance_host::gpu_types as types;
pub use appliance_host::{inventory, nvml};

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::host::{HostSample, HostSource};
use self::types::{DriverInfo, GpuEvent, GpuSample, GpuSource};
pub use oasis_api::telemetry::{GpuBackend, GpuStatus};

/// Samples kept at full resolution (one hour at the default 1 s).
pub const HISTORY_SAMPLES: usize = 3600;
/// GPU events kept.
pub const EVENTS_KEPT: usize = 1000;

/// Everything read at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ts_ms: u64,
    pub host: HostSample,
    pub gpus: Vec<GpuSample>,
}

/// Sampler settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub interval: Duration,
    /// Replay this trace instead of reading NVML.
    pub replay: Option<PathBuf>,
    pub rules: alerts::AlertRules,
    /// Alert changes are POSTed here.
    pub webhooks: Vec<String>,
    /// Alerts persist here.
    pub store: Option<crate::store::Store>,
}

/// The telemetry state shared with the HTTP handlers.
#[derive(Debug)]
pub struct Telemetry {
    pub interval: Duration,
    status: RwLock<GpuStatus>,
    history: Mutex<VecDeque<Arc<Snapshot>>>,
    events: Mutex<VecDeque<GpuEvent>>,
    /// Samples taken and the time spent taking them.
    pub samples: AtomicU64,
    pub sample_ns: AtomicU64,
    alerts: Mutex<alerts::AlertEngine>,
    pub webhook: Option<webhook::WebhookSender>,
    store: Option<crate::store::Store>,
    /// Every snapshot, for `GET /admin/v1/telemetry/stream`.
    pub stream: tokio::sync::broadcast::Sender<Arc<Snapshot>>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    /// Opens the GPU source (a replay trace that cannot be read is an error: the operator
    /// asked for it; a missing NVIDIA driver is not) and starts the sampler thread, which
    /// ends when the returned handle is dropped.
    pub fn start(cfg: &TelemetryConfig) -> anyhow::Result<Arc<Telemetry>> {
        let (source, status): (Option<Box<dyn GpuSource>>, GpuStatus) = match &cfg.replay {
            Some(path) => {
                let r = replay::ReplaySource::open(path).map_err(anyhow::Error::msg)?;
                let driver = r.info();
                (
                    Some(Box::new(r)),
                    GpuStatus {
                        available: true,
                        reason: Some(format!("replaying {}", path.display())),
                        source: GpuBackend::Replay,
                        driver,
                    },
                )
            }
            None => match nvml::open() {
                Ok(n) => {
                    let driver = n.info();
                    (
                        Some(Box::new(n)),
                        GpuStatus {
                            available: true,
                            reason: None,
                            source: GpuBackend::Nvml,
                            driver,
                        },
                    )
                }
                Err(reason) => {
                    tracing::info!(%reason, "no GPU telemetry; serving host metrics only");
                    (
                        None,
                        GpuStatus {
                            available: false,
                            reason: Some(reason),
                            source: GpuBackend::None,
                            driver: DriverInfo::default(),
                        },
                    )
                }
            },
        };
        let restored = match &cfg.store {
            Some(store) => store
                .alerts::<alerts::Alert>()?
                .into_iter()
                .filter_map(Result::ok)
                .collect(),
            None => Vec::new(),
        };
        let t = Arc::new(Telemetry {
            alerts: Mutex::new(alerts::AlertEngine::new(cfg.rules.clone(), restored)),
            webhook: webhook::WebhookSender::start(cfg.webhooks.clone())?,
            store: cfg.store.clone(),
            stream: tokio::sync::broadcast::channel(64).0,
            interval: cfg.interval,
            status: RwLock::new(status),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES)),
            events: Mutex::new(VecDeque::new()),
            samples: AtomicU64::new(0),
            sample_ns: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&t);
        let mut host = HostSource::new();
        // The first reading now, so the API has data from the start.
        let mut source = source;
        sample_once(&t, &mut host, &mut source);
        std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || run(weak, host, source))?;
        Ok(t)
    }

    pub fn status(&self) -> GpuStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        lock(&self.history).back().cloned()
    }

    /// Snapshots between `from_ms` and `to_ms` (inclusive).
    pub fn history(&self, from_ms: u64, to_ms: u64) -> Vec<Arc<Snapshot>> {
        lock(&self.history)
            .iter()
            .filter(|s| s.ts_ms >= from_ms && s.ts_ms <= to_ms)
            .cloned()
            .collect()
    }

    /// Snapshots held in memory.
    pub fn history_len(&self) -> usize {
        lock(&self.history).len()
    }

    /// Each GPU's most recent XID code, by GPU index.
    pub fn last_xids(&self) -> std::collections::BTreeMap<u32, u64> {
        let mut out = std::collections::BTreeMap::new();
        for e in lock(&self.events).iter() {
            if let Some(x) = e.xid {
                out.insert(e.gpu, x);
            }
        }
        out
    }

    /// The most recent GPU events, oldest first.
    pub fn events(&self) -> Vec<GpuEvent> {
        lock(&self.events).iter().cloned().collect()
    }

    /// Every alert, firing first, most recent first.
    pub fn alerts(&self) -> Vec<alerts::Alert> {
        lock(&self.alerts).list()
    }

    /// Holds (or with `None` releases) the notifications of alert `key`; the alert as
    /// stored, `None` when there is no such alert.
    pub fn silence(
        &self,
        key: &str,
        until_ms: Option<u64>,
        by: Option<String>,
    ) -> anyhow::Result<Option<alerts::Alert>> {
        let changed = lock(&self.alerts).silence(key, until_ms, by);
        if let (Some(a), Some(store)) = (&changed, &self.store) {
            store.put_alert(&a.key, a)?;
        }
        Ok(changed)
    }

    /// Mean time one sample took, in microseconds.
    pub fn mean_sample_us(&self) -> f64 {
        let n = self.samples.load(Ordering::Relaxed);
        if n == 0 {
            return 0.0;
        }
        self.sample_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }
}

fn sample_once(t: &Telemetry, host: &mut HostSource, source: &mut Option<Box<dyn GpuSource>>) {
    let started = Instant::now();
    let (gpus, events) = match source {
        Some(s) => (s.sample(), s.events()),
        None => (Vec::new(), Vec::new()),
    };
    let snap = Arc::new(Snapshot {
        ts_ms: now_ms(),
        host: host.sample(),
        gpus,
    });
    let changed = lock(&t.alerts).evaluate(&snap, &events);
    for a in changed {
        tracing::warn!(key = %a.key, state = %a.state, severity = %a.severity, message = %a.message, "alert");
        if let Some(store) = &t.store
            && let Err(e) = store.put_alert(&a.key, &a)
        {
            tracing::error!(error = %e, "cannot persist an alert");
        }
        if let Some(w) = &t.webhook
            && !a.is_silenced(snap.ts_ms)
        {
            w.send(a);
        }
    }
    let finished_minute = {
        let mut h = lock(&t.history);
        let prev_minute = h.back().map(|p| p.ts_ms / 60_000);
        if h.len() == HISTORY_SAMPLES {
            h.pop_front();
        }
        h.push_back(snap.clone());
        prev_minute.filter(|m| *m != snap.ts_ms / 60_000)
    };
    if let (Some(minute), Some(store)) = (finished_minute, &t.store) {
        store_minute(t, store, minute * 60_000);
    }
    // Nobody listening is fine.
    let _ = t.stream.send(snap);
    if !events.is_empty() {
        let mut e = lock(&t.events);
        for ev in events {
            tracing::warn!(gpu = ev.gpu, kind = %ev.kind, xid = ?ev.xid, "GPU event");
            if e.len() == EVENTS_KEPT {
                e.pop_front();
            }
            e.push_back(ev);
        }
    }
    t.samples.fetch_add(1, Ordering::Relaxed);
    t.sample_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Aggregates the minute starting at `start_ms` per GPU into the store.
fn store_minute(t: &Telemetry, store: &crate::store::Store, start_ms: u64) {
    let snaps = t.history(start_ms, start_ms + 59_999);
    let gpus: Vec<u32> = snaps
        .last()
        .map(|s| s.gpus.iter().map(|g| g.index).collect())
        .unwrap_or_default();
    let keep_from = start_ms.saturating_sub(history::KEEP_MINUTES * 60_000);
    for gpu in gpus {
        for b in history::aggregate(&snaps, gpu, start_ms, 60_000) {
            if let Err(e) = store.put_minute(gpu, b.ts_ms, &b, keep_from) {
                tracing::error!(error = %e, "cannot store a minute of GPU history");
            }
        }
    }
}

impl Telemetry {
    /// GPU `gpu`'s history from `from_ms` to `to_ms` in buckets of `step_ms`: the part
    /// within the last hour from memory, the older part from the stored minutes.
    pub fn gpu_history(
        &self,
        gpu: u32,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
    ) -> Vec<history::Bucket> {
        let oldest = lock(&self.history).front().map_or(u64::MAX, |s| s.ts_ms);
        if from_ms >= oldest || self.store.is_none() {
            return history::aggregate(&self.history(from_ms, to_ms), gpu, from_ms, step_ms);
        }
        // Stored minutes before the hour in memory, then memory (buckets stay aligned).
        let minutes: Vec<history::Bucket> = self
            .store
            .as_ref()
            .and_then(|s| {
                s.minutes(gpu, from_ms, oldest.saturating_sub(1).min(to_ms))
                    .ok()
            })
            .unwrap_or_default();
        let mut out = history::merge_minutes(&minutes, from_ms, step_ms);
        let step = step_ms.max(1);
        let mem_from = from_ms + (oldest - from_ms).div_ceil(step) * step;
        if mem_from <= to_ms {
            out.extend(history::aggregate(
                &self.history(mem_from, to_ms),
                gpu,
                mem_from,
                step,
            ));
        }
        out
    }
}

/// The sampler thread: one sample per interval until the daemon drops its handle.
fn run(t: Weak<Telemetry>, mut host: HostSource, mut source: Option<Box<dyn GpuSource>>) {
    let mut next = Instant::now();
    loop {
        let Some(interval) = t.upgrade().map(|t| t.interval) else {
            return;
        };
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // fell behind: do not burst to catch up
        }
        let Some(t) = t.upgrade() else { return };
        sample_once(&t, &mut host, &mut source);
    }
}
