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
/// A step that streams wait for may take this many times their decode tokens' own time,
/// so waiting prompts get at least half of it ([`StepCost::step_seconds`]).
const STREAM_FACTOR: f64 = 2.0;
/// The same once the decode tokens alone take longer than the step target (many
/// streams): waiting prompts get two thirds of the step.
const MANY_STREAMS_FACTOR: f64 = 3.0;
/// However late a prompt is, a step that streams wait for takes at most this many times
/// the larger of the step target and the decode tokens' own time.
const LATE_CAP: f64 = 4.0;

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

    /// The seconds a step carrying `decoding` decode tokens may take, for a `target` that
    /// waiting prompts have raised `growth`-fold (1 when none is late):
    /// - the raised target, or [`STREAM_FACTOR`] times what the decode tokens alone are
    ///   predicted to take when that is longer ([`MANY_STREAMS_FACTOR`] times once that
    ///   alone is longer than the target). With many streams decoding alone fills the
    ///   target, and prompts would advance by a token floor per step while the newcomers
    ///   wait; this way they get half of each step, two thirds under many streams;
    /// - but never more than [`LATE_CAP`] times the larger of the target and the decode
    ///   tokens' own time, however late a prompt is: a late prompt is read faster, but no
    ///   stream waits seconds for it.
    pub fn step_seconds(&self, target: f64, growth: f64, decoding: usize) -> f64 {
        let decode = match self.predict(decoding) {
            Some(decode) if decoding > 0 => decode,
            _ => 0.0,
        };
        let factor = if decode > target {
            MANY_STREAMS_FACTOR
        } else {
            STREAM_FACTOR
        };
        let want = (target * growth.max(1.0)).max(factor * decode);
        want.min(LATE_CAP * target.max(decode))
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
    fn prompts_get_half_of_a_step_or_two_thirds_under_many_streams() {
        let mut c = StepCost::default();
        assert_eq!(c.step_seconds(0.05, 1.0, 16), 0.05, "nothing measured yet");
        for n in [1, 4, 16, 64] {
            c.observe(n, linear(n));
        }
        // Few streams: 2 x 16 ms is under the target, which holds.
        assert_eq!(c.step_seconds(0.05, 1.0, 2), 0.05);
        assert_eq!(c.step_seconds(0.05, 1.0, 0), 0.05);
        // Eight streams take 34 ms alone: the step may take twice that, half of it prompts.
        let t = c.step_seconds(0.05, 1.0, 8);
        assert!((t - 2.0 * linear(8)).abs() < 1e-9, "{t}");
        // Sixteen streams take 58 ms alone: the step may take 174 ms, two thirds of it
        // prompts.
        let t = c.step_seconds(0.05, 1.0, 16);
        assert!((t - 3.0 * linear(16)).abs() < 1e-9, "{t}");
        let n = c.tokens_within(t, 16 + 16, 512);
        assert_eq!(n, 54, "16 decode tokens and 38 prompt tokens fit in {t}");
    }

    #[test]
    fn a_late_prompt_raises_the_step_at_most_fourfold() {
        let mut c = StepCost::default();
        for n in [1, 4, 16, 64] {
            c.observe(n, linear(n));
        }
        // One stream (13 ms alone): the 50 ms target doubles as the prompt waits, up to
        // four times the target.
        assert_eq!(c.step_seconds(0.05, 2.0, 1), 0.1);
        assert_eq!(c.step_seconds(0.05, 4.0, 1), 0.2);
        assert_eq!(c.step_seconds(0.05, 1024.0, 1), 0.2);
        // Sixteen streams (58 ms alone): three times that until the raised target passes
        // it, then at most four times it.
        let near = |t: f64, want: f64| assert!((t - want).abs() < 1e-9, "{t} != {want}");
        near(c.step_seconds(0.05, 2.0, 16), 3.0 * linear(16));
        near(c.step_seconds(0.05, 4.0, 16), 0.2);
        near(c.step_seconds(0.05, 1024.0, 16), 4.0 * linear(16));
        // Before anything is measured the raised target is capped the same way.
        assert_eq!(StepCost::default().step_seconds(0.05, 1024.0, 16), 0.2);
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
