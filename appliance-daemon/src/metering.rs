//! Token metering: every request's prompt and completion tokens, by UTC day, key and
//! model, in sled.
//!
//! Requests report to one thread that applies whatever has arrived as one batch and
//! flushes once (group commit); a request waits for its batch to be on disk before its
//! answer ends, so what a client was told it used is what the box counted, and a crash
//! loses at most the requests still in flight.

use std::collections::BTreeMap;
use std::sync::mpsc;

use crate::store::Store;
pub use oasis_api::Counts;

/// What one request used.
#[derive(Debug, Clone)]
pub struct Record {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// The key id, or `anonymous`.
    pub key: String,
    pub model: String,
    pub counts: Counts,
}

/// The row key: day, key, model, separated by NUL (day first: ranges are date ranges).
fn row_key(day: &str, key: &str, model: &str) -> Vec<u8> {
    format!("{day}\0{key}\0{model}").into_bytes()
}

type Batch = (Record, Option<tokio::sync::oneshot::Sender<()>>);

/// The metering thread's inbox.
#[derive(Debug, Clone)]
pub struct Meter {
    tx: mpsc::Sender<Batch>,
    store: Store,
}

impl Meter {
    pub fn start(store: Store) -> std::io::Result<Meter> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let thread_store = store.clone();
        std::thread::Builder::new()
            .name("metering".into())
            .spawn(move || run(&thread_store, &rx))?;
        Ok(Meter { tx, store })
    }

    /// Counts `r` and waits until it is on disk.
    pub async fn record(&self, r: Record) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send((r, Some(done))).is_ok() {
            let _ = wait.await;
        }
    }

    /// Counts `r` without waiting (a request cut short).
    pub fn record_later(&self, r: Record) {
        let _ = self.tx.send((r, None));
    }

    /// Rows from day `from` to day `to` (inclusive, `YYYY-MM-DD`).
    pub fn rows(&self, from: &str, to: &str) -> Vec<Record> {
        let lo = row_key(from, "", "");
        let hi = format!("{to}\u{1}").into_bytes();
        self.store
            .usage_range::<Counts>(&lo, &hi)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, counts)| {
                let text = String::from_utf8(k).ok()?;
                let mut parts = text.split('\0');
                Some(Record {
                    day: parts.next()?.to_string(),
                    key: parts.next()?.to_string(),
                    model: parts.next()?.to_string(),
                    counts,
                })
            })
            .collect()
    }
}

fn run(store: &Store, rx: &mpsc::Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut rows: BTreeMap<Vec<u8>, Counts> = BTreeMap::new();
        for (r, _) in &batch {
            let e = rows.entry(row_key(&r.day, &r.key, &r.model)).or_default();
            *e = e.plus(&r.counts);
        }
        let rows: Vec<(Vec<u8>, Counts)> = rows.into_iter().collect();
        if let Err(e) = store.add_usage(&rows, |old, d| old.unwrap_or_default().plus(d)) {
            tracing::error!(error = %e, "cannot record usage");
        }
        for (_, done) in batch {
            if let Some(d) = done {
                let _ = d.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn usage_adds_up_by_row_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
            let m = Meter::start(store).unwrap_or_else(|e| panic!("{e}"));
            for (day, key, p) in [
                ("2026-12-01", "a", 3),
                ("2026-12-01", "a", 4),
                ("2026-12-02", "b", 5),
            ] {
                let counts = Counts {
                    requests: 1,
                    prompt_tokens: p,
                    completion_tokens: 1,
                    ..Counts::default()
                };
                m.record(Record {
                    day: day.into(),
                    key: key.into(),
                    model: "m".into(),
                    counts,
                })
                .await;
            }
        }
        // The old metering thread lets go of the database once its inbox closes.
        let mut store = Store::open(dir.path());
        for _ in 0..200 {
            if store.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            store = Store::open(dir.path());
        }
        let store = store.unwrap_or_else(|e| panic!("{e}"));
        let m = Meter::start(store).unwrap_or_else(|e| panic!("{e}"));
        let rows = m.rows("2026-12-01", "2026-12-01");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].counts.prompt_tokens, 7);
        assert_eq!(rows[0].counts.requests, 2);
        assert_eq!(m.rows("2026-11-01", "2026-12-31").len(), 2);
    }
}
