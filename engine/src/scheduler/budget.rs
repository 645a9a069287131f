//! The step-time budget: how long a step of `n` tokens takes on this model and device,
//! learned from the steps the scheduler runs, so that a step carrying decode tokens
//! takes only as many prompt tokens as fit in the latency target.
//!
//! A step that carries a prompt chunk holds every generating sequence until it ends:
//! with a fixed token budget a 512-token chunk turns one inter-token gap into seconds on
//! a CPU. The scheduler instead asks [`StepCost::tokens_within`] for the most tokens a
//! step may carry within `max_step_ms`, decode tokens first.
//!
//! The cost is measured, not modelled: steps are grouped by their token count into
//! powers of two, each group keeps a moving average of its token count and its time, and
//! a count between groups is interpolated (beyond the largest measured group, the time
//! grows in proportion to the tokens, which overestimates and so errs towards smoother
//! streams). The averages follow the model as its contexts grow and as other work on
//! the box comes and goes; the first steps of a fresh engine (its first prompts, its
//! first decode steps) fill the groups before any stream can stall.

/// Token-count groups: 1, 2-3, 4-7, ..., 2^31 and more.
const GROUPS: usize = 32;
/// Weight of a new measurement in its group's average.
const ALPHA: f64 = 0.25;

/// Measured step times by token count.
#[derive(Debug, Clone, Default)]
pub struct StepCost {
    /// Per group: (average tokens, average seconds), once measured.
    groups: [Option<(f64, f64)>; GROUPS],
}

impl StepCost {
    /// Records that a step of `tokens` tokens took `seconds`.
    pub fn observe(&mut self, tokens: usize, seconds: f64) {
        if tokens == 0 || !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let g = &mut self.groups[group_of(tokens)];
        let n = tokens as f64;
        *g = Some(match *g {
            None => (n, seconds),
            Some((gn, gs)) => (gn + ALPHA * (n - gn), gs + ALPHA * (seconds - gs)),
        });
    }

    /// The measured points, by token count, with times made non-decreasing (a larger
    /// step never predicts less time than a smaller one).
    fn points(&self) -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = self.groups.iter().flatten().copied().collect();
        let mut max = 0.0f64;
        for p in &mut pts {
            max = max.max(p.1);
            p.1 = max;
        }
        pts
    }

    /// Predicted seconds for a step of `tokens` tokens; `None` before any measurement.
    pub fn predict(&self, tokens: usize) -> Option<f64> {
        predict_from(&self.points(), tokens as f64)
    }

    /// The seconds a step carrying `decoding` decode tokens may take: `target`, or twice
    /// what those decode tokens alone are predicted to take when that is longer. With
    /// many streams decoding alone fills the target, and prompts would advance by a token
    /// floor per step while the newcomers wait; this way the waiting prompts get at least
    /// as much of each step as the streams, which are slowed at most twofold.
    pub fn step_seconds(&self, target: f64, decoding: usize) -> f64 {
        match self.predict(decoding) {
            Some(decode) if decoding > 0 => target.max(2.0 * decode),
            _ => target,
        }
    }

    /// The most tokens (between `floor` and `cap`) a step may carry and still end within
    /// `budget` seconds; `cap` before any measurement, `floor` when even that is over.
    pub fn tokens_within(&self, budget: f64, floor: usize, cap: usize) -> usize {
        let floor = floor.min(cap);
        let pts = self.points();
        if pts.is_empty() {
            return cap;
        }
        let fits = |n: usize| predict_from(&pts, n as f64).is_some_and(|t| t <= budget);
        if fits(cap) {
            return cap;
        }
        if !fits(floor) {
            return floor;
        }
        // fits(lo), !fits(hi); the prediction is non-decreasing in n.
        let (mut lo, mut hi) = (floor, cap);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

fn group_of(tokens: usize) -> usize {
    (usize::BITS - 1 - tokens.max(1).leading_zeros()).min(GROUPS as u32 - 1) as usize
}

/// Piecewise-linear through `pts` (sorted by tokens, times non-decreasing); below the
/// first point and above the last, in proportion to the tokens.
fn predict_from(pts: &[(f64, f64)], n: f64) -> Option<f64> {
    let first = *pts.first()?;
    let last = *pts.last()?;
    if n <= first.0 {
        return Some(first.1 * n / first.0);
    }
    if n >= last.0 {
        return Some(last.1 * n / last.0);
    }
    let i = pts.iter().position(|p| p.0 >= n)?;
    let (a, b) = (pts[i - 1], pts[i]);
    if b.0 <= a.0 {
        return Some(b.1);
    }
    Some(a.1 + (b.1 - a.1) * (n - a.0) / (b.0 - a.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device whose steps take 10 ms plus 3 ms per token.
    fn linear(n: usize) -> f64 {
        0.010 + 0.003 * n as f64
    }

    #[test]
    fn nothing_measured_means_no_limit() {
        let c = StepCost::default();
        assert_eq!(c.predict(10), None);
        assert_eq!(c.tokens_within(0.05, 16, 512), 512);
    }

    #[test]
    fn interpolates_between_measured_sizes_and_finds_the_budget() {
        let mut c = StepCost::default();
        for n in [1, 4, 16, 64, 256] {
            c.observe(n, linear(n));
        }
        for n in [2, 10, 40, 100, 200] {
            let p = c.predict(n).unwrap_or(f64::NAN);
            assert!((p - linear(n)).abs() < 1e-9, "{n}: {p} vs {}", linear(n));
        }
        // 10 ms + 3 ms x 13 = 49 ms; 14 tokens would be 52 ms.
        assert_eq!(c.tokens_within(0.050, 1, 512), 13);
        // Beyond 256 tokens, in proportion: 778 ms x n / 256 <= 1 s.
        assert_eq!(c.tokens_within(1.0, 1, 512), 329);
        assert_eq!(c.tokens_within(0.001, 16, 512), 16, "the floor holds");
        assert_eq!(c.tokens_within(0.050, 16, 8), 8, "the cap holds");
    }

    #[test]
    fn prompts_get_as_much_of_a_step_as_many_streams_take() {
        let mut c = StepCost::default();
        assert_eq!(c.step_seconds(0.035, 16), 0.035, "nothing measured yet");
        for n in [1, 4, 16, 64] {
            c.observe(n, linear(n));
        }
        // Few streams: 2 x 16 ms is under the target, which holds.
        assert_eq!(c.step_seconds(0.035, 2), 0.035);
        assert_eq!(c.step_seconds(0.035, 0), 0.035);
        // Sixteen streams take 58 ms alone: the step may take 116 ms, half of it prompts.
        let t = c.step_seconds(0.035, 16);
        assert!((t - 2.0 * linear(16)).abs() < 1e-9, "{t}");
        let n = c.tokens_within(t, 16 + 16, 512);
        assert_eq!(n, 35, "16 decode tokens and 19 prompt tokens fit in {t}");
    }

    #[test]
    fn beyond_the_measured_it_errs_long() {
        let mut c = StepCost::default();
        // Only decode steps of 4 tokens so far: 22 ms.
        c.observe(4, linear(4));
        let guess = c.predict(16).unwrap_or(0.0);
        assert!(guess >= linear(16), "{guess}");
        // So the first chunk is smaller than the budget would allow, never larger.
        let n = c.tokens_within(0.064, 1, 512);
        assert!((4..=18).contains(&n), "{n}");
    }

    #[test]
    fn follows_a_slower_machine() {
        let mut c = StepCost::default();
        for n in [1, 64] {
            c.observe(n, linear(n));
        }
        let before = c.tokens_within(0.1, 1, 512);
        for _ in 0..20 {
            for n in [1, 64] {
                c.observe(n, 2.0 * linear(n));
            }
        }
        let after = c.tokens_within(0.1, 1, 512);
        assert!(after < before, "{after} vs {before}");
        let p = c.predict(64).unwrap_or(0.0);
        assert!((p - 2.0 * linear(64)).abs() < 0.01 * linear(64), "{p}");
    }

    #[test]
    fn ignores_nonsense_and_never_predicts_less_for_more() {
        let mut c = StepCost::default();
        c.observe(0, 1.0);
        c.observe(5, f64::NAN);
        c.observe(5, -1.0);
        assert_eq!(c.predict(5), None);
        // A noisy large step measured faster than a small one.
        c.observe(8, 0.050);
        c.observe(32, 0.040);
        let small = c.predict(8).unwrap_or(0.0);
        let large = c.predict(32).unwrap_or(0.0);
        assert!(large >= small, "{large} < {small}");
        assert_eq!(group_of(usize::MAX), GROUPS - 1);
        assert_eq!(group_of(1), 0);
        assert_eq!(group_of(3), 1);
    }
}
