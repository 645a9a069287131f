//! Sends alert changes to the configured webhooks: one JSON POST per alert and URL, retried
//! with backoff, from a bounded queue on a thread of its own (a slow receiver never holds up
//! sampling; when the queue is full the newest change is dropped and counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Duration;

use super::alerts::Alert;

/// Alert changes waiting to be sent.
pub const QUEUE: usize = 256;
/// Attempts per alert and URL.
pub const ATTEMPTS: u32 = 4;

#[derive(Debug)]
pub struct WebhookSender {
    tx: SyncSender<Alert>,
    pub dropped: Arc<AtomicU64>,
    pub sent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl WebhookSender {
    /// Starts the sender thread for `urls` (none: no sender).
    pub fn start(urls: Vec<String>) -> std::io::Result<Option<WebhookSender>> {
        if urls.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::sync_channel::<Alert>(QUEUE);
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, f) = (sent.clone(), failed.clone());
        std::thread::Builder::new()
            .name("alert-webhooks".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(5)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                for alert in rx {
                    let body = serde_json::json!({"source": "oasis", "alert": alert});
                    for url in &urls {
                        if post(&agent, url, &body) {
                            s.fetch_add(1, Ordering::Relaxed);
                        } else {
                            f.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%url, key = %alert.key, "alert webhook failed after retries");
                        }
                    }
                }
            })?;
        Ok(Some(WebhookSender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            sent,
            failed,
        }))
    }

    /// Queues an alert change without waiting.
    pub fn send(&self, alert: Alert) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(alert)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// POSTs `body`, retrying with doubling backoff; true once a 2xx answer came.
fn post(agent: &ureq::Agent, url: &str, body: &serde_json::Value) -> bool {
    let mut wait = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        match agent.post(url).send_json(body) {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => {
                tracing::debug!(%url, status = %resp.status(), attempt, "alert webhook refused")
            }
            Err(e) => tracing::debug!(%url, error = %e, attempt, "alert webhook unreachable"),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    false
}
