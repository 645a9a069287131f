//! Unit tests for the sampling-chain steps on small hand-made logit vectors.

use super::*;
use crate::sampling::Xoshiro256StarStar;

fn candidates(logits: &[f32]) -> Vec<Candidate> {
    logits
        .iter()
        .enumerate()
        .map(|(id, &logit)| Candidate {
            id: id as u32,
            logit,
            prob: 0.0,
        })
        .collect()
}

fn ids(candidates: &[Candidate]) -> Vec<u32> {
    candidates.iter().map(|c| c.id).collect()
}

/// Logits whose temperature-1 softmax is exactly `probs` (up to rounding).
fn from_probs(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

#[test]
fn sanitize_maps_nan_and_inf() {
    assert_eq!(sanitize(f32::NAN), f32::NEG_INFINITY);
    assert_eq!(sanitize(f32::INFINITY), f32::MAX);
    assert_eq!(sanitize(f32::NEG_INFINITY), f32::NEG_INFINITY);
    assert_eq!(sanitize(-1.5), -1.5);
}

#[test]
fn argmax_breaks_ties_by_lowest_id() {
    assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), (1, 3.0));
    assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), (0, f32::NEG_INFINITY));
}

#[test]
fn penalties_follow_llama_cpp() {
    let mut logits = [2.0, -2.0, 1.0, 0.5, 3.0];
    let penalties = Penalties {
        repetition: 2.0,
        presence: 0.5,
        frequency: 0.25,
    };
    // Token 0 twice, 1 and 3 once, 2 and 4 never; 99 is outside the vocabulary.
    apply_penalties(&mut logits, &[0, 1, 0, 3, 99], penalties, &mut Vec::new());
    assert_eq!(
        logits,
        [
            2.0 / 2.0 - (2.0 * 0.25 + 0.5),
            -2.0 * 2.0 - (0.25 + 0.5),
            1.0,
            0.5 / 2.0 - (0.25 + 0.5),
            3.0,
        ]
    );
}

#[test]
fn negative_presence_penalty_encourages() {
    let mut logits = [0.0, 0.0];
    let penalties = Penalties {
        repetition: 1.0,
        presence: -1.0,
        frequency: 0.0,
    };
    apply_penalties(&mut logits, &[1, 1, 1], penalties, &mut Vec::new());
    assert_eq!(logits, [0.0, 1.0]);
}

#[test]
fn top_k_keeps_the_k_best_in_id_order() {
    let mut c = candidates(&[1.0, 3.0, 2.0, 3.0, 0.5]);
    top_k(&mut c, 3, &mut Vec::new());
    assert_eq!(ids(&c), [1, 2, 3]);

    // A tie at the boundary keeps the lower ids.
    let mut c = candidates(&[3.0, 1.0, 2.0, 2.0, 3.0, 2.0]);
    top_k(&mut c, 4, &mut Vec::new());
    assert_eq!(ids(&c), [0, 2, 3, 4]);
}

#[test]
fn top_k_zero_or_large_is_off() {
    for k in [0, 5, 6, u32::MAX] {
        let mut c = candidates(&[1.0, 3.0, 2.0, 3.0, 0.5]);
        top_k(&mut c, k, &mut Vec::new());
        assert_eq!(ids(&c), [0, 1, 2, 3, 4], "k = {k}");
    }
}

#[test]
fn top_p_keeps_the_token_that_crosses_p() {
    let logits = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    for (p, expected) in [
        (0.4, vec![1]),
        (0.7, vec![1, 3]),
        (0.81, vec![1, 3, 0]),
        (0.99, vec![1, 3, 0, 2]),
    ] {
        let mut c = candidates(&logits);
        top_p(&mut c, p, false, TOP_P_FIRST_CHUNK);
        assert_eq!(ids(&c), expected, "p = {p}");
    }
}

#[test]
fn top_p_one_is_off_and_tiny_p_keeps_one() {
    let logits = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    let mut c = candidates(&logits);
    top_p(&mut c, 1.0, false, TOP_P_FIRST_CHUNK);
    assert_eq!(ids(&c), [0, 1, 2, 3]);
    top_p(&mut c, 1e-6, false, TOP_P_FIRST_CHUNK);
    assert_eq!(ids(&c), [1]);
}

#[test]
fn top_p_after_top_k_uses_the_remaining_mass() {
    // After top-k = 2 the survivors are 0.5 and 0.3, i.e. 0.625 and 0.375 renormalised.
    for (p, expected) in [(0.6, vec![1]), (0.65, vec![1, 3])] {
        let mut c = candidates(&from_probs(&[0.15, 0.5, 0.05, 0.3]));
        top_k(&mut c, 2, &mut Vec::new());
        top_p(&mut c, p, false, TOP_P_FIRST_CHUNK);
        assert_eq!(ids(&c), expected, "p = {p}");
    }
}

/// The chunked selection must give exactly what a full sort gives, on a vocabulary large
/// enough to need several rounds.
#[test]
fn top_p_chunked_matches_full_sort() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(3);
    let logits: Vec<f32> = (0..50_000)
        .map(|_| (rng.next_f64() * 12.0 - 6.0) as f32)
        .collect();
    for p in [0.01, 0.2, 0.5, 0.9, 0.95, 0.999] {
        let mut slow = candidates(&logits);
        slow.sort_unstable_by(by_rank);
        top_p(&mut slow, p, true, 0);
        assert!(slow.len() > TOP_P_FIRST_CHUNK || p < 0.5, "p = {p}");

        for first_chunk in [1, TOP_P_FIRST_CHUNK, 1000, 100_000] {
            let mut fast = candidates(&logits);
            top_p(&mut fast, p, false, first_chunk);
            assert_eq!(ids(&fast), ids(&slow), "p = {p}, first chunk {first_chunk}");
        }
    }
}

#[test]
fn min_p_is_relative_to_the_best_token() {
    let logits = from_probs(&[0.15, 0.5, 0.05, 0.3]);
    for (p, expected) in [
        (0.5, vec![1, 3]),
        (0.2, vec![0, 1, 3]),
        (0.05, vec![0, 1, 2, 3]),
        (1.0, vec![1]),
        (0.0, vec![0, 1, 2, 3]),
    ] {
        let mut c = candidates(&logits);
        min_p(&mut c, p);
        assert_eq!(ids(&c), expected, "min_p = {p}");
    }
}

#[test]
fn softmax_and_logprob_agree() {
    let mut c = candidates(&[1.0, 2.0, 3.0]);
    let (max, log_norm) = softmax(&mut c, 2.0);
    let weights: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|l| (l / 0.5).exp()).collect();
    let total: f64 = weights.iter().sum();
    for (candidate, weight) in c.iter().zip(&weights) {
        assert!((f64::from(candidate.prob) - weight / total).abs() < 1e-6);
        let logprob = f64::from((candidate.logit - max) * 2.0) - log_norm;
        assert!((logprob - (weight / total).ln()).abs() < 1e-6);
    }
}

#[test]
fn softmax_survives_huge_scale() {
    let mut c = candidates(&[1.0, 2.0, f32::MAX]);
    softmax(&mut c, 1e5);
    assert_eq!(
        c.iter().map(|c| c.prob).collect::<Vec<_>>(),
        [0.0, 0.0, 1.0]
    );
}

#[test]
fn draw_walks_the_cumulative_distribution() {
    let mut c = candidates(&[0.0; 4]);
    for (candidate, prob) in c.iter_mut().zip([0.1, 0.0, 0.6, 0.3]) {
        candidate.prob = prob;
    }
    assert_eq!(draw(&c, 0.0), 0);
    assert_eq!(draw(&c, 0.099), 0);
    assert_eq!(draw(&c, 0.101), 2);
    assert_eq!(draw(&c, 0.69), 2);
    assert_eq!(draw(&c, 0.71), 3);
    // Mass summing to just under u falls back to the last token with mass, never id 1.
    c[3].prob = 0.299;
    assert_eq!(draw(&c, 0.9995), 3);
}

/// The one-pass selection must keep exactly what partial selection keeps, in the same
/// order, ties and -inf included.
#[test]
fn top_ranked_matches_top_k() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(5);
    let mut out = Vec::new();
    for round in 0..20 {
        // Coarse values force many ties; some tokens are masked out.
        let logits: Vec<f32> = (0..3000)
            .map(|_| match rng.next_u64() % 10 {
                0 => f32::NEG_INFINITY,
                r => (r as f32) + (rng.next_u64() % 4) as f32,
            })
            .collect();
        for k in [1u32, 7, 64, 500] {
            top_ranked(&logits, k as usize, &mut out);
            let mut reference = candidates(&logits);
            reference.retain(|c| c.logit > f32::NEG_INFINITY);
            top_k(&mut reference, k, &mut Vec::new());
            reference.sort_unstable_by(by_rank);
            assert_eq!(ids(&out), ids(&reference), "round {round}, k {k}");
        }
    }
    // Ascending logits: every token enters the buffer, which is cut back again and again.
    let ascending: Vec<f32> = (0..1000).map(|i| (i / 2) as f32).collect();
    top_ranked(&ascending, 3, &mut out);
    assert_eq!(ids(&out), [998, 999, 996]);
    top_ranked(&[f32::NEG_INFINITY, 1.0], 5, &mut out);
    assert_eq!(ids(&out), [1]);
    top_ranked(&[1.0], 0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn top_p_prefix_truncates_or_reports_shortfall() {
    let logits = from_probs(&[0.5, 0.3, 0.15, 0.05]);
    // The prefix holds only the two best tokens of a distribution whose total mass is 1.
    let mut prefix = candidates(&logits[..2]);
    assert!(top_p_prefix(&mut prefix, 0.7, logits[0], 1.0 / 0.5));
    assert_eq!(ids(&prefix), [0, 1]);
    let mut prefix = candidates(&logits[..2]);
    assert!(!top_p_prefix(&mut prefix, 0.9, logits[0], 1.0 / 0.5));
    assert_eq!(ids(&prefix), [0, 1]);
}
