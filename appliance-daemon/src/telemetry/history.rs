//! GPU history: buckets of averages and maxima over a time range, from the in-memory hour
//! at full resolution, and per-minute aggregates kept in sled for 30 days (older minutes
//! are deleted as new ones are written, so the tree's size is bounded by
//! GPUs x 43,200 minutes x one small record).

use super::Snapshot;
pub use oasis_api::telemetry::HistoryBucket as Bucket;

/// Minutes of aggregates kept.
pub const KEEP_MINUTES: u64 = 30 * 24 * 60;

/// Running sums of one bucket.
#[derive(Debug, Default, Clone)]
struct Acc {
    n: u32,
    sums: [(f64, u32, f64); 4],
}

impl Acc {
    fn add(&mut self, values: [Option<f64>; 4]) {
        self.n += 1;
        for (slot, v) in self.sums.iter_mut().zip(values) {
            if let Some(v) = v {
                if slot.1 == 0 || v > slot.2 {
                    slot.2 = v;
                }
                slot.0 += v;
                slot.1 += 1;
            }
        }
    }

    fn bucket(&self, ts_ms: u64) -> Bucket {
        let avg = |i: usize| {
            let (s, n, _) = self.sums[i];
            (n > 0).then(|| s / f64::from(n))
        };
        let max = |i: usize| (self.sums[i].1 > 0).then_some(self.sums[i].2);
        Bucket {
            ts_ms,
            samples: self.n,
            gpu_util_avg: avg(0),
            gpu_util_max: max(0),
            mem_used_bytes_avg: avg(1),
            mem_used_bytes_max: max(1),
            temp_gpu_c_avg: avg(2),
            temp_gpu_c_max: max(2),
            power_w_avg: avg(3),
            power_w_max: max(3),
        }
    }
}

fn readings(s: &Snapshot, gpu: u32) -> Option<[Option<f64>; 4]> {
    let g = s
        .gpus
        .iter()
        .find(|g| g.index == gpu && g.error.is_none())?;
    Some([
        g.gpu_util_pct,
        g.mem_used_bytes.map(|b| b as f64),
        g.temp_gpu_c,
        g.power_w,
    ])
}

/// Buckets of `step_ms` from `from_ms` over `snaps` (in time order) for `gpu`; empty
/// buckets are left out.
pub fn aggregate(
    snaps: &[std::sync::Arc<Snapshot>],
    gpu: u32,
    from_ms: u64,
    step_ms: u64,
) -> Vec<Bucket> {
    let step = step_ms.max(1);
    let mut out: Vec<Bucket> = Vec::new();
    let mut cur: Option<(u64, Acc)> = None;
    for s in snaps {
        let Some(v) = readings(s, gpu) else { continue };
        let start = from_ms + (s.ts_ms.saturating_sub(from_ms)) / step * step;
        match &mut cur {
            Some((b, acc)) if *b == start => acc.add(v),
            _ => {
                if let Some((b, acc)) = cur.take() {
                    out.push(acc.bucket(b));
                }
                let mut acc = Acc::default();
                acc.add(v);
                cur = Some((start, acc));
            }
        }
    }
    if let Some((b, acc)) = cur {
        out.push(acc.bucket(b));
    }
    out
}

/// Merges stored minute buckets into buckets of `step_ms` (a multiple of a minute):
/// averages weighted by samples, maxima of maxima.
pub fn merge_minutes(minutes: &[Bucket], from_ms: u64, step_ms: u64) -> Vec<Bucket> {
    let step = step_ms.max(60_000);
    let mut out: Vec<Bucket> = Vec::new();
    for m in minutes {
        let start = from_ms + m.ts_ms.saturating_sub(from_ms) / step * step;
        if out.last().map(|b| b.ts_ms) != Some(start) {
            out.push(Bucket {
                ts_ms: start,
                ..Bucket::default()
            });
        }
        let Some(b) = out.last_mut() else { continue };
        let total = b.samples + m.samples;
        let w = |a: Option<f64>, an: u32, x: Option<f64>, xn: u32| match (a, x) {
            (Some(a), Some(x)) => {
                Some((a * f64::from(an) + x * f64::from(xn)) / f64::from(an + xn).max(1.0))
            }
            (a, x) => a.or(x),
        };
        let mx = |a: Option<f64>, x: Option<f64>| match (a, x) {
            (Some(a), Some(x)) => Some(a.max(x)),
            (a, x) => a.or(x),
        };
        b.gpu_util_avg = w(b.gpu_util_avg, b.samples, m.gpu_util_avg, m.samples);
        b.mem_used_bytes_avg = w(
            b.mem_used_bytes_avg,
            b.samples,
            m.mem_used_bytes_avg,
            m.samples,
        );
        b.temp_gpu_c_avg = w(b.temp_gpu_c_avg, b.samples, m.temp_gpu_c_avg, m.samples);
        b.power_w_avg = w(b.power_w_avg, b.samples, m.power_w_avg, m.samples);
        b.gpu_util_max = mx(b.gpu_util_max, m.gpu_util_max);
        b.mem_used_bytes_max = mx(b.mem_used_bytes_max, m.mem_used_bytes_max);
        b.temp_gpu_c_max = mx(b.temp_gpu_c_max, m.temp_gpu_c_max);
        b.power_w_max = mx(b.power_w_max, m.power_w_max);
        b.samples = total;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::types::GpuSample;
    use std::sync::Arc;

    fn snap(ts: u64, temp: f64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            ts_ms: ts,
            host: Default::default(),
            gpus: vec![GpuSample {
                index: 0,
                temp_gpu_c: Some(temp),
                power_w: Some(temp * 10.0),
                ..Default::default()
            }],
        })
    }

    #[test]
    fn buckets_average_and_max_and_merge_by_sample_weight() {
        let snaps: Vec<_> = (0..6).map(|i| snap(i * 1000, 40.0 + i as f64)).collect();
        let b = aggregate(&snaps, 0, 0, 3000);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].samples, b[0].temp_gpu_c_avg, b[0].temp_gpu_c_max),
            (3, Some(41.0), Some(42.0))
        );
        assert_eq!(b[1].temp_gpu_c_avg, Some(44.0));
        assert!(b[0].gpu_util_avg.is_none());
        // Two minutes of 3 and 1 samples merge into one bucket weighted 3:1.
        let mut m1 = b[0].clone();
        m1.ts_ms = 0;
        let mut m2 = b[1].clone();
        m2.ts_ms = 60_000;
        m2.samples = 1;
        let merged = merge_minutes(&[m1, m2], 0, 120_000);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].samples, 4);
        assert_eq!(merged[0].temp_gpu_c_avg, Some((41.0 * 3.0 + 44.0) / 4.0));
        assert_eq!(merged[0].temp_gpu_c_max, Some(45.0));
    }
}
