//! The collective steps between ranks: all-to-all with variable counts, all-gather and a
//! barrier, behind the [`Comm`] trait. [`LocalComm`] connects the ranks of one process
//! (worker threads on the CPU); a GPU implementation (NCCL through cudarc: `ncclSend` /
//! `ncclRecv` pairs in a group for the all-to-all, `ncclAllGather`) takes the same calls,
//! with [`Packet`]s becoming device buffers and their counts exchanged first.
//!
//! Every rank calls the same collectives in the same order. A rank that fails calls
//! [`Comm::abort`]; the others' pending and later calls then return [`CommError`] instead of
//! waiting for it forever.

use std::sync::{Condvar, Mutex};

/// What one rank sends another in an all-to-all: integer metadata and f32 payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packet {
    pub ids: Vec<u32>,
    pub vals: Vec<f32>,
}

impl Packet {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.vals.is_empty()
    }
}

/// A collective could not complete: another rank aborted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rank collective aborted: {0}")]
pub struct CommError(pub String);

/// Collective operations among `ranks()` ranks.
pub trait Comm: Send + Sync + std::fmt::Debug {
    fn ranks(&self) -> usize;
    /// Sends `send[r]` to each rank `r`; returns what each rank sent this one, by source.
    fn all_to_all(&self, rank: usize, send: Vec<Packet>) -> Result<Vec<Packet>, CommError>;
    /// Every rank's `value`, by rank.
    fn all_gather(&self, rank: usize, value: u64) -> Result<Vec<u64>, CommError>;
    /// Waits for every rank.
    fn barrier(&self) -> Result<(), CommError>;
    /// Makes every pending and later collective fail with `why`.
    fn abort(&self, why: &str);
}

#[derive(Debug)]
struct State {
    /// Barrier generation and arrivals in the current one.
    generation: u64,
    arrived: usize,
    /// `mail[src][dst]`, filled by all-to-all.
    mail: Vec<Vec<Option<Packet>>>,
    gathered: Vec<u64>,
    aborted: Option<String>,
}

/// In-process ranks (threads) exchanging through shared memory.
#[derive(Debug)]
pub struct LocalComm {
    ranks: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl LocalComm {
    pub fn new(ranks: usize) -> LocalComm {
        let ranks = ranks.max(1);
        LocalComm {
            ranks,
            state: Mutex::new(State {
                generation: 0,
                arrived: 0,
                mail: vec![vec![None; ranks]; ranks],
                gathered: vec![0; ranks],
                aborted: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left plain data behind: go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(st: &State) -> Result<(), CommError> {
        match &st.aborted {
            Some(why) => Err(CommError(why.clone())),
            None => Ok(()),
        }
    }
}

impl Comm for LocalComm {
    fn ranks(&self) -> usize {
        self.ranks
    }

    fn barrier(&self) -> Result<(), CommError> {
        let mut st = self.lock();
        Self::check(&st)?;
        let generation = st.generation;
        st.arrived += 1;
        if st.arrived == self.ranks {
            st.arrived = 0;
            st.generation += 1;
            self.changed.notify_all();
            return Ok(());
        }
        while st.generation == generation {
            Self::check(&st)?;
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    fn all_to_all(&self, rank: usize, send: Vec<Packet>) -> Result<Vec<Packet>, CommError> {
        if send.len() != self.ranks || rank >= self.ranks {
            let why = format!(
                "rank {rank} sent {} packets to {} ranks",
                send.len(),
                self.ranks
            );
            self.abort(&why);
            return Err(CommError(why));
        }
        {
            let mut st = self.lock();
            Self::check(&st)?;
            for (dst, p) in send.into_iter().enumerate() {
                st.mail[rank][dst] = Some(p);
            }
        }
        self.barrier()?;
        let recv = {
            let mut st = self.lock();
            (0..self.ranks)
                .map(|src| st.mail[src][rank].take().unwrap_or_default())
                .collect()
        };
        // Nobody writes the next round's mail before everyone has taken this one.
        self.barrier()?;
        Ok(recv)
    }

    fn all_gather(&self, rank: usize, value: u64) -> Result<Vec<u64>, CommError> {
        {
            let mut st = self.lock();
            Self::check(&st)?;
            if let Some(slot) = st.gathered.get_mut(rank) {
                *slot = value;
            }
        }
        self.barrier()?;
        let all = self.lock().gathered.clone();
        self.barrier()?;
        Ok(all)
    }

    fn abort(&self, why: &str) {
        let mut st = self.lock();
        if st.aborted.is_none() {
            st.aborted = Some(why.to_string());
        }
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn all_to_all_delivers_by_source_over_many_rounds() {
        let comm = Arc::new(LocalComm::new(3));
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let comm = comm.clone();
                std::thread::spawn(move || {
                    for round in 0..50u32 {
                        let send = (0..3)
                            .map(|dst| Packet {
                                ids: vec![rank as u32, dst as u32, round],
                                vals: vec![round as f32; dst],
                            })
                            .collect();
                        let recv = comm.all_to_all(rank, send).unwrap();
                        for (src, p) in recv.iter().enumerate() {
                            assert_eq!(p.ids, vec![src as u32, rank as u32, round]);
                            assert_eq!(p.vals.len(), rank);
                        }
                        let all = comm
                            .all_gather(rank, u64::from(round) * 10 + rank as u64)
                            .unwrap();
                        assert_eq!(
                            all,
                            vec![
                                u64::from(round) * 10,
                                u64::from(round) * 10 + 1,
                                u64::from(round) * 10 + 2
                            ]
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn an_abort_releases_the_waiting_ranks() {
        let comm = Arc::new(LocalComm::new(2));
        let c = comm.clone();
        let waiter = std::thread::spawn(move || c.barrier());
        std::thread::sleep(std::time::Duration::from_millis(20));
        comm.abort("rank 1 failed");
        assert_eq!(
            waiter.join().unwrap(),
            Err(CommError("rank 1 failed".into()))
        );
        assert!(comm.all_gather(0, 1).is_err());
    }
}
