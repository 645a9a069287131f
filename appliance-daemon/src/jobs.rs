//! Long work the admin starts and watches: imports, each a job with an id, a state, bytes
//! done and to do, a rate and an ETA, cancellable.
//!
//! Imports run one at a time (they compete for the same disks) on a thread each, in the
//! order they were submitted; the others wait as `queued`. One stuck job cannot hold the others up: a job that is
//! cancelled, or whose reads have not moved for [`STALL`], no longer holds the lane, and
//! a cancel takes effect at once in any state (a thread stuck in a read cleans up when the
//! read returns). Sources that are not regular files or folders are refused before a job
//! is queued, and so is a copy the store's volume has no room for. A job's record is written to sled when it is created and at
//! each change of state, the ready one in the same transaction as the model's catalog
//! record. A job found unfinished at start was interrupted by a crash: it is marked failed
//! and what it left in the store is removed (`import::clean_store`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::import::{self, Cancelled, ImportSpec, Phase, Progress, StoreDir};
use crate::store::{Store, random_hex, unix_now};
pub use oasis_api::JobView;

#[derive(Debug)]
struct Entry {
    view: Mutex<JobView>,
    progress: Arc<Progress>,
    /// Deleted: its thread, if still running, must not write its record back.
    forgotten: std::sync::atomic::AtomicBool,
}

impl Entry {
    /// The view with live progress.
    fn snapshot(&self) -> JobView {
        let mut v = match self.view.lock() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if !v.state.is_final() {
            v.state = self.progress.phase();
            v.bytes_done = self.progress.done.load(Ordering::Relaxed);
            v.bytes_total = self.progress.total.load(Ordering::Relaxed);
            v.rate_bytes_per_s = self.progress.rate();
            v.eta_s = (v.rate_bytes_per_s > 0.0 && v.bytes_total >= v.bytes_done)
                .then(|| (v.bytes_total - v.bytes_done) as f64 / v.rate_bytes_per_s);
        }
        v
    }
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The store's volume has no room for the copy.
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Internal(String),
}

/// How long a running import may go without reading a byte before the next job in the
/// queue may start beside it.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Who may run an import now: one job at a time, except that a job cancelled or stalled
/// (see [`STALL`]) stops counting.
#[derive(Debug)]
struct Lane {
    running: Mutex<LaneState>,
    changed: std::sync::Condvar,
    /// How long a job may read nothing before it stops holding the lane.
    stall: std::time::Duration,
}

/// Who holds the lane and who waits for it, in the order they were queued.
#[derive(Debug, Default)]
struct LaneState {
    running: Vec<Arc<Progress>>,
    waiting: std::collections::VecDeque<Arc<Progress>>,
}

/// A job's turn in the lane, given back when dropped.
struct Turn<'a> {
    lane: &'a Lane,
    me: Arc<Progress>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut running = self
            .lane
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.running.retain(|p| !Arc::ptr_eq(p, &self.me));
        drop(running);
        self.lane.changed.notify_all();
    }
}

impl Lane {
    fn new(stall: std::time::Duration) -> Lane {
        Lane {
            running: Mutex::new(LaneState::default()),
            changed: std::sync::Condvar::new(),
            stall,
        }
    }

    /// Puts `me` in the queue; jobs enter the lane in the order they were queued.
    fn queue(&self, me: &Arc<Progress>) {
        let mut state = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.waiting.iter().any(|p| Arc::ptr_eq(p, me)) {
            state.waiting.push_back(me.clone());
        }
    }

    /// Waits for the lane (queueing `me` if it is not yet); `None` when `me` is
    /// cancelled while it waits.
    fn enter(&self, me: &Arc<Progress>) -> Option<Turn<'_>> {
        self.queue(me);
        let mut state = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if me.cancelled() {
                state.waiting.retain(|p| !Arc::ptr_eq(p, me));
                drop(state);
                self.changed.notify_all();
                return None;
            }
            let busy = state
                .running
                .iter()
                .any(|p| !p.cancelled() && p.idle() < self.stall);
            let first = state.waiting.iter().find(|p| !p.cancelled());
            let my_turn = first.is_some_and(|p| Arc::ptr_eq(p, me));
            if !busy && my_turn {
                state.waiting.retain(|p| !Arc::ptr_eq(p, me));
                state.running.push(me.clone());
                drop(state);
                self.changed.notify_all();
                return Some(Turn {
                    lane: self,
                    me: me.clone(),
                });
            }
            // Woken by a job ending or a cancel; re-checked now and then for stalls.
            state = self
                .changed
                .wait_timeout(state, self.stall.min(std::time::Duration::from_secs(1)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// The daemon's jobs.
#[derive(Debug)]
pub struct Jobs {
    store: Store,
    dir: StoreDir,
    jobs: Mutex<BTreeMap<String, Arc<Entry>>>,
    /// Which import may run.
    lane: Arc<Lane>,
}

impl Jobs {
    /// Loads the jobs of earlier runs, marks those a crash interrupted as failed, and
    /// cleans the store of what they left.
    pub fn open(store: Store, dir: StoreDir) -> anyhow::Result<Jobs> {
        let mut jobs = BTreeMap::new();
        for j in store.jobs::<JobView>()? {
            let mut view = match j {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "skipping a corrupt job record");
                    continue;
                }
            };
            if !view.state.is_final() {
                view.state = Phase::Failed;
                view.error = Some("interrupted: the daemon stopped during the import".into());
                view.finished_at = Some(unix_now());
                view.rate_bytes_per_s = 0.0;
                view.eta_s = None;
                store.put_job(&view.id, &view)?;
                tracing::warn!(job = %view.id, model = %view.model, "an import was interrupted by a stop; its files are removed");
            }
            jobs.insert(
                view.id.clone(),
                Arc::new(Entry {
                    view: Mutex::new(view),
                    progress: Arc::new(Progress::default()),
                    forgotten: Default::default(),
                }),
            );
        }
        let records: Vec<_> = store.models()?.into_iter().filter_map(Result::ok).collect();
        for p in import::clean_store(&dir.root, &records) {
            tracing::warn!(path = %p.display(), "removed a partial or unreferenced folder from the model store");
        }
        Ok(Jobs {
            store,
            dir,
            jobs: Mutex::new(jobs),
            lane: Arc::new(Lane::new(STALL)),
        })
    }

    /// A fresh job id.
    pub fn new_id() -> String {
        format!("job-{}", random_hex(8))
    }

    /// Starts importing `source` as `name` (or a name derived from the path). The checks
    /// that can be made at once (the source exists, the name is free) are errors here; the
    /// rest end the job as failed.
    pub fn submit_import(
        &self,
        job_id: Option<String>,
        source: PathBuf,
        name: Option<String>,
        in_place: bool,
        consume: bool,
    ) -> Result<JobView, SubmitError> {
        if !source.is_absolute() {
            return Err(SubmitError::Invalid(format!(
                "`path` must be absolute, got `{}`",
                source.display()
            )));
        }
        if !source.exists() {
            return Err(SubmitError::Invalid(format!(
                "{} does not exist (the path is read by the daemon, on this box)",
                source.display()
            )));
        }
        import::check_source(&source).map_err(SubmitError::Invalid)?;
        // The store's files belong to their models: one deleted would take the in-place
        // reference with it.
        let canonical = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
        if in_place && canonical(&source).starts_with(canonical(&self.dir.root)) {
            return Err(SubmitError::Invalid(format!(
                "{} is inside the model store; import it without `in_place` (a copy)",
                source.display()
            )));
        }
        if !in_place && !consume {
            let need = import::space_needed(&source)
                .map_err(|e| SubmitError::Invalid(format!("{e:#}")))?;
            import::check_space(&self.dir.root, need).map_err(SubmitError::NoSpace)?;
        }
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| SubmitError::Internal("the job table is poisoned".into()))?;
        let taken = |id: &str| -> Result<bool, SubmitError> {
            let in_catalog = self
                .store
                .get_model(id)
                .map_err(|e| SubmitError::Internal(e.to_string()))?
                .is_some();
            let importing = jobs.values().any(|e| {
                let v = e.snapshot();
                !v.state.is_final() && v.model == id
            });
            Ok(in_catalog || importing)
        };
        let id = match name {
            Some(n) => {
                import::check_id(&n).map_err(SubmitError::Invalid)?;
                if taken(&n)? {
                    return Err(SubmitError::Conflict(format!(
                        "a model named `{n}` is already in the catalog or being imported; pick another --name or delete it first"
                    )));
                }
                n
            }
            None => {
                let stem = import::id_from_path(&source);
                let mut id = stem.clone();
                let mut i = 2;
                while taken(&id)? {
                    id = format!("{stem}-{i}");
                    i += 1;
                }
                id
            }
        };
        let job_id = job_id.unwrap_or_else(Self::new_id);
        let view = JobView {
            id: job_id.clone(),
            kind: "import".into(),
            state: Phase::Queued,
            source: source.display().to_string(),
            model: id.clone(),
            in_place,
            bytes_done: 0,
            bytes_total: 0,
            rate_bytes_per_s: 0.0,
            eta_s: None,
            error: None,
            created_at: unix_now(),
            finished_at: None,
        };
        self.store
            .put_job(&job_id, &view)
            .map_err(|e| SubmitError::Internal(e.to_string()))?;
        let entry = Arc::new(Entry {
            view: Mutex::new(view.clone()),
            progress: Arc::new(Progress::default()),
            forgotten: Default::default(),
        });
        jobs.insert(job_id.clone(), entry.clone());
        drop(jobs);
        let spec = ImportSpec {
            source,
            id,
            in_place,
            consume,
        };
        // Queued now, so that jobs run in the order they were submitted whichever
        // thread the scheduler wakes first.
        self.lane.queue(&entry.progress);
        let progress = entry.progress.clone();
        let (store, dir, lane) = (self.store.clone(), self.dir.clone(), self.lane.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("import-{job_id}"))
            .spawn(move || run(&store, &dir, &lane, &spec, &job_id, &entry));
        if let Err(e) = spawned {
            progress.cancel();
            self.lane.changed.notify_all();
            return Err(SubmitError::Internal(format!(
                "cannot start the import thread: {e}"
            )));
        }
        Ok(view)
    }

    /// A job with its live progress.
    pub fn get(&self, id: &str) -> Option<JobView> {
        let jobs = self.jobs.lock().ok()?;
        jobs.get(id).map(|e| e.snapshot())
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let Ok(jobs) = self.jobs.lock() else {
            return Vec::new();
        };
        let mut all: Vec<JobView> = jobs.values().map(|e| e.snapshot()).collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        all
    }

    /// Stops a job in any state that has not finished, at once: it is cancelled as far as
    /// anyone can see, its turn in the lane is given up, and its thread removes what it
    /// wrote when its current read returns. Returns its view (unchanged if it had finished).
    pub fn cancel(&self, id: &str) -> Option<JobView> {
        let jobs = self.jobs.lock().ok()?;
        let e = jobs.get(id)?;
        let mut view = e.snapshot();
        if !view.state.is_final() {
            e.progress.cancel();
            view.state = Phase::Cancelled;
            view.finished_at = Some(unix_now());
            view.rate_bytes_per_s = 0.0;
            view.eta_s = None;
            if let Err(err) = self.store.put_job(id, &view) {
                tracing::error!(job = id, error = %err, "cannot record the cancel");
            }
            if let Ok(mut v) = e.view.lock() {
                *v = view.clone();
            }
            e.progress.set_phase(Phase::Cancelled);
            self.lane.changed.notify_all();
        }
        Some(view)
    }

    /// Deletes a job: cancels it first if it has not finished, then forgets its record
    /// (the files it wrote are removed as for a cancel). Returns its last view.
    pub fn forget(&self, id: &str) -> Option<JobView> {
        let view = self.cancel(id)?;
        let mut jobs = self.jobs.lock().ok()?;
        let e = jobs.remove(id)?;
        // Under the view's lock, so a thread finishing now does not write it back.
        let _guard = e.view.lock();
        e.forgotten.store(true, Ordering::Release);
        if let Err(err) = self.store.remove_job(id) {
            tracing::error!(job = id, error = %err, "cannot forget the job's record");
        }
        Some(view)
    }

    /// Models being imported now (their ids).
    pub fn importing(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|v| !v.state.is_final())
            .map(|v| v.model)
            .collect()
    }
}

/// One import, start to finish, on its own thread.
fn run(store: &Store, dir: &StoreDir, lane: &Lane, spec: &ImportSpec, job: &str, entry: &Entry) {
    let progress = &entry.progress;
    let turn = lane.enter(progress);
    let outcome = if turn.is_none() || progress.cancelled() {
        import::discard_upload(spec);
        Err(anyhow::Error::new(Cancelled))
    } else {
        tracing::info!(job, model = %spec.id, source = %spec.source.display(), in_place = spec.in_place, "import started");
        persist_state(store, job, entry, Phase::Copying);
        import::import(spec, job, dir, progress)
    };
    // What was read, also past the size the files had at the start (a growing file).
    let (done, total) = (
        progress.done.load(Ordering::Relaxed),
        progress.total.load(Ordering::Relaxed),
    );
    let mut view = entry.snapshot();
    view.finished_at = Some(unix_now());
    view.rate_bytes_per_s = 0.0;
    view.eta_s = None;
    view.bytes_done = done;
    view.bytes_total = total.max(done);
    // Cancelled while it ran: nothing of it may enter the catalog.
    let outcome = match outcome {
        Ok(record) if progress.cancelled() => {
            let _ = import::remove_stored(&dir.root, &record);
            Err(anyhow::Error::new(Cancelled))
        }
        other => other,
    };
    match outcome {
        Ok(record) => {
            view.state = Phase::Ready;
            match store.commit_import(&record, job, &view) {
                Ok(true) => {
                    tracing::info!(job, model = %record.id, digest = %record.digest, "import ready");
                }
                Ok(false) => {
                    let _ = import::remove_stored(&dir.root, &record);
                    view.state = Phase::Failed;
                    view.error = Some(format!(
                        "a model named `{}` entered the catalog meanwhile",
                        record.id
                    ));
                }
                Err(e) => {
                    let _ = import::remove_stored(&dir.root, &record);
                    view.state = Phase::Failed;
                    view.error = Some(format!("cannot commit the model: {e}"));
                }
            }
        }
        Err(e) if e.is::<Cancelled>() || progress.cancelled() => {
            view.state = Phase::Cancelled;
            tracing::info!(job, "import cancelled");
        }
        Err(e) => {
            view.state = Phase::Failed;
            view.error = Some(format!("{e:#}"));
            tracing::warn!(job, error = %format!("{e:#}"), "import failed");
        }
    }
    let state = view.state;
    if let Ok(mut v) = entry.view.lock() {
        if view.state != Phase::Ready
            && !entry.forgotten.load(Ordering::Acquire)
            && let Err(e) = store.put_job(job, &view)
        {
            tracing::error!(job, error = %e, "cannot record the job's end");
        }
        *v = view;
    }
    progress.set_phase(state);
    drop(turn);
}

fn persist_state(store: &Store, job: &str, entry: &Entry, phase: Phase) {
    let mut view = entry.snapshot();
    view.state = phase;
    if let Err(e) = store.put_job(job, &view) {
        tracing::error!(job, error = %e, "cannot record the job's state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Regression (issue 16, finding 5): one stuck import held the lane and every later
    /// import waited behind it for ever.
    #[test]
    fn a_stalled_or_cancelled_job_stops_holding_the_lane() {
        let lane = Lane::new(Duration::from_millis(200));
        let stuck = Arc::new(Progress::default());
        stuck.tick();
        let _held = lane.enter(&stuck);
        // Its reads stopped returning: after the stall time the next job may start.
        let next = Arc::new(Progress::default());
        let t = std::time::Instant::now();
        let turn = lane.enter(&next);
        assert!(turn.is_some());
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        drop(turn);
        // A job cancelled while it waits gives up its place at once.
        let busy = Arc::new(Progress::default());
        busy.tick();
        let lane = Arc::new(Lane::new(Duration::from_secs(600)));
        let _busy_turn = lane.enter(&busy);
        let waiting = Arc::new(Progress::default());
        let (l2, w2) = (lane.clone(), waiting.clone());
        let h = std::thread::spawn(move || l2.enter(&w2).is_some());
        std::thread::sleep(Duration::from_millis(50));
        waiting.cancel();
        lane.changed.notify_all();
        assert!(!h.join().unwrap_or(true));
        // And the running one, once cancelled, lets the next in.
        busy.cancel();
        let third = Arc::new(Progress::default());
        assert!(lane.enter(&third).is_some());
    }

    /// The CI saw the second of two imports start first (its thread woke first): jobs
    /// enter the lane in the order they were queued, and skip the cancelled.
    #[test]
    fn jobs_enter_the_lane_in_the_order_they_were_queued() {
        let lane = Arc::new(Lane::new(Duration::from_secs(600)));
        let (a, b, c) = (
            Arc::new(Progress::default()),
            Arc::new(Progress::default()),
            Arc::new(Progress::default()),
        );
        for p in [&a, &b, &c] {
            lane.queue(p);
        }
        let (l2, c2) = (lane.clone(), c.clone());
        let third = std::thread::spawn(move || l2.enter(&c2).is_some());
        let (l3, b2) = (lane.clone(), b.clone());
        let second = std::thread::spawn(move || l3.enter(&b2).is_some());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!third.is_finished() && !second.is_finished());
        b.cancel();
        lane.changed.notify_all();
        assert!(!second.join().unwrap_or(true));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!third.is_finished(), "c entered before a");
        let turn = lane.enter(&a);
        assert!(turn.is_some());
        drop(turn);
        assert!(third.join().unwrap_or(false));
    }
}
