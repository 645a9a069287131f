//! A small fork-join thread pool for the compute kernels.
//!
//! A decode step runs about four matrix products per layer, each a few tens of
//! microseconds long, so the cost of handing work to threads matters as much as the
//! kernels themselves. Workers spin briefly on a generation counter between jobs (the next
//! job nearly always comes within microseconds) and then park, so an idle engine burns no
//! CPU. Tasks are claimed from an atomic counter, so uneven tasks balance themselves.
//!
//! Workers join a job by checking in, and the caller waits only for those that did: once
//! every task is claimed the job closes, and a worker the OS has not scheduled yet (the
//! box is busy with other work) finds it closed instead of holding the caller up for a
//! time slice. Without this, every one of a step's few hundred jobs waited for the
//! slowest thread to be scheduled, and a step on a loaded machine took seconds.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins waiting for the next job before it parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_millis(2);

/// Set in `Shared::active` while no job is open to join; the other bits count the
/// workers checked in.
const CLOSED: usize = 1 << (usize::BITS - 1);

type Job = dyn Fn(usize) + Sync;

/// A fixed set of worker threads plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises `run` calls from different threads: one job at a time.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

struct Shared {
    /// The current job, read only by workers checked in while it is open.
    job: UnsafeCell<Option<*const Job>>,
    n_tasks: AtomicUsize,
    /// Next task index to claim.
    next_task: AtomicUsize,
    /// `CLOSED` or not, plus the workers inside the current job.
    active: AtomicUsize,
    /// Bumped once per job; workers wake on a change.
    generation: AtomicU64,
    /// Set when a task panicked on a worker; the caller re-raises it.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread inside `run` (holding `run_lock`) while the
// job is closed with no worker inside, and read only by a worker whose check-in (Acquire)
// found it open (published with Release after the write); `run` does not return, and so
// the pointee outlives every use, until every checked-in worker has checked out.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above.
unsafe impl Send for Shared {}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            active: AtomicUsize::new(CLOSED),
            generation: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("oasis-kernel-{i}"))
                .spawn(move || worker_loop(&shared));
            // A thread that cannot be spawned only makes the pool smaller.
            if let Ok(handle) = spawned {
                workers.push(handle);
            }
        }
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads that take part in a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(first_row, rows)` over `data` cut into runs of whole rows of `row_len`
    /// values, spread over the pool; in one piece on the caller's thread when `data` is
    /// small (fewer than [`PARALLEL_MIN_VALUES`] values or two rows), where the hand-off
    /// would cost more than the work. A trailing partial row goes with the last run.
    pub fn run_rows<T: Send>(
        &self,
        data: &mut [T],
        row_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let rows = data.len().checked_div(row_len).unwrap_or(0);
        if rows < 2 || data.len() < PARALLEL_MIN_VALUES || self.workers.is_empty() {
            f(0, data);
            return;
        }
        // A few runs per thread, so a thread that starts late still gets its share.
        let per_task = rows.div_ceil(self.threads() * 4);
        let n_tasks = rows.div_ceil(per_task);
        let len = data.len();
        let out = DisjointSlice::new(data);
        self.run(n_tasks, &|task| {
            let r0 = task * per_task;
            let end = if task + 1 == n_tasks {
                len
            } else {
                (r0 + per_task) * row_len
            };
            // SAFETY: task `task` alone touches rows `r0..r0 + per_task` (the last task the
            // rest of `data`).
            f(r0, unsafe {
                out.slice_mut(r0 * row_len, end - r0 * row_len)
            });
        });
    }

    /// Runs `f(task)` for every task in `0..n_tasks`, spread over the pool, and returns
    /// when all have finished. A panic in a task is re-raised here.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // SAFETY: erases the lifetime of `f`; the pointer is used only until every worker
        // has checked out of the closed job, which this function waits for before returning.
        let job: *const Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(f as *const _)
        };
        // SAFETY: no worker reads `job` now: the previous job is closed, and a worker
        // checking in late finds it so and leaves without reading.
        unsafe { *shared.job.get() = Some(job) };
        shared.n_tasks.store(n_tasks, Ordering::Relaxed);
        shared.next_task.store(0, Ordering::Relaxed);
        shared.panicked.store(false, Ordering::Relaxed);
        // Open the job once no late worker is between its check-in and check-out (the
        // count must be zero so that their check-outs balance).
        let mut spins = 0u32;
        while shared
            .active
            .compare_exchange_weak(CLOSED, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            spins = backoff(spins);
        }
        {
            let _guard = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.generation.fetch_add(1, Ordering::Release);
        }
        shared.wake.notify_all();

        let caller = catch_unwind(AssertUnwindSafe(|| claim_tasks(shared, f)));
        // Every task is claimed: close the job and wait for the workers still inside it.
        shared.active.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while shared.active.load(Ordering::Acquire) != CLOSED {
            spins = backoff(spins);
        }
        // SAFETY: the job is closed and no worker is inside it.
        unsafe { *shared.job.get() = None };
        if let Err(payload) = caller {
            std::panic::resume_unwind(payload);
        }
        if shared.panicked.load(Ordering::Relaxed) {
            panic!("a kernel task panicked on a worker thread");
        }
    }
}

/// One round of a spin wait: a pause, and the core given away now and then.
fn backoff(spins: u32) -> u32 {
    let spins = spins.wrapping_add(1);
    if spins.is_multiple_of(1024) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
    spins
}

fn claim_tasks(shared: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = shared.n_tasks.load(Ordering::Relaxed);
    loop {
        let task = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if task >= n {
            break;
        }
        f(task);
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin, then park, until a new generation or shutdown.
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            if shared.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                // Give the core away now and then: when threads outnumber cores (other
                // pools, other processes), a pure spin would starve the thread with work.
                std::thread::yield_now();
            }
            if spins.is_multiple_of(256) && started.elapsed() > SPIN_BEFORE_PARK {
                let guard = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                let _guard = shared
                    .wake
                    .wait_while(guard, |_| {
                        shared.generation.load(Ordering::Acquire) == seen
                            && !shared.shutdown.load(Ordering::Acquire)
                    })
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            std::hint::spin_loop();
        }
        seen = shared.generation.load(Ordering::Acquire);
        // Check in; a job already closed (the caller and the others took every task) is
        // left alone. A worker that checks in to a newer job than the one it saw woken
        // for simply helps with that one.
        if shared.active.fetch_add(1, Ordering::Acquire) & CLOSED == 0 {
            // SAFETY: the open job's pointer was written before it was opened (Release,
            // seen by the Acquire check-in above), and `run` keeps the pointee alive until
            // this worker checks out.
            let job = unsafe { *shared.job.get() };
            if let Some(job) = job {
                // SAFETY: see above.
                let f = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| claim_tasks(shared, f))).is_err() {
                    shared.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        shared.active.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _guard = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The fewest values [`ThreadPool::run_rows`] spreads over the pool: below this, a batch's
/// row-wise operations (norms, activations, residuals) run on the caller's thread.
pub const PARALLEL_MIN_VALUES: usize = 16 * 1024;

/// A mutable slice that several tasks of one job write at disjoint indices.
///
/// `ThreadPool::run` takes a shared closure, so tasks cannot hold `&mut` to one output
/// buffer; this wrapper carries the raw pointer and makes each write an explicit promise.
#[derive(Debug)]
pub struct DisjointSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: writers promise disjoint indices (see `write`), so sharing is data-race free.
unsafe impl<T: Send> Sync for DisjointSlice<'_, T> {}

impl<'a, T> DisjointSlice<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        DisjointSlice {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other task of the same job may read or write `index`.
    #[inline]
    pub unsafe fn write(&self, index: usize, value: T) {
        assert!(
            index < self.len,
            "DisjointSlice index {index} out of bounds {}",
            self.len
        );
        // SAFETY: in bounds (checked) and exclusive (the caller's promise).
        unsafe { self.ptr.add(index).write(value) };
    }

    /// A mutable view of `range`.
    ///
    /// # Safety
    /// No other task of the same job may touch any index in `range` while the view lives.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the disjointness promise is what makes this sound
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "DisjointSlice range out of bounds"
        );
        // SAFETY: in bounds (checked) and exclusive (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every value is handed to exactly one run, at its own row, whether the data is split
    /// over the pool or kept whole, with a trailing partial row too.
    #[test]
    fn run_rows_covers_every_value_once_at_its_row() {
        let pool = ThreadPool::new(2);
        for (len, row) in [
            (100_003usize, 7usize),
            (70_000, 1536),
            (100, 7),
            (5, 0),
            (0, 3),
        ] {
            let mut data = vec![usize::MAX; len];
            pool.run_rows(&mut data, row, &|r0, rows| {
                for (i, v) in rows.iter_mut().enumerate() {
                    assert_eq!(*v, usize::MAX, "a value visited twice");
                    *v = r0 * row + i;
                }
            });
            assert!(
                data.iter().enumerate().all(|(k, v)| *v == k),
                "{len} x {row}"
            );
        }
    }

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = ThreadPool::new(3);
        for n in [0usize, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            pool.run(n, &|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn disjoint_writes_land() {
        let pool = ThreadPool::new(2);
        let mut out = vec![0usize; 257];
        let dst = DisjointSlice::new(&mut out);
        // SAFETY: each task writes only its own index.
        pool.run(257, &|t| unsafe { dst.write(t, t * 2) });
        assert!(out.iter().enumerate().all(|(i, v)| *v == i * 2));
    }

    #[test]
    fn more_threads_than_cores_join_late_and_every_task_runs_once() {
        // Eight threads on a two-core machine: workers often wake after the caller has
        // taken every task and must leave the closed job (or help with the next) without
        // running anything twice or touching a finished job.
        let pool = ThreadPool::new(8);
        let hits: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        for round in 0..20_000usize {
            let n = 1 + round % 64;
            pool.run(n, &|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
        }
        for (t, h) in hits.iter().enumerate() {
            // Task t runs in every round whose task count exceeds t.
            let expected = (0..20_000usize).filter(|r| 1 + r % 64 > t).count();
            assert_eq!(h.load(Ordering::Relaxed) as usize, expected, "task {t}");
        }
    }

    #[test]
    fn survives_idle_periods_and_many_jobs() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(4, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
            if round == 1000 {
                std::thread::sleep(Duration::from_millis(10)); // workers park
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_still_works() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|t| {
                if t == 63 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}
