//! The mixture-of-experts layer, split along its real axes: routing (router logits to
//! chosen experts and weights), grouping (tokens sorted by expert so each expert runs one
//! matrix-matrix product over its tokens) and combining (each token's expert outputs summed
//! with its routing weights). Shared experts and Qwen2-MoE's gated shared expert are added
//! by the caller.

use super::config::{MoeConfig, Scoring, TopK};

/// The choice for one token: `top_k` (expert, weight) pairs.
pub type Choice = Vec<(usize, f32)>;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices of the `k` largest values of `v`, largest first; ties go to the lower index
/// (as `torch.topk` does on CPU for distinct values; equal values are a coin toss there).
fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Chooses the experts of one token from its router logits, as transformers does for the
/// configured architecture.
pub fn route(cfg: &MoeConfig, logits: &[f32], bias: Option<&[f32]>) -> Choice {
    let n = logits.len();
    // Scores the weights come from.
    let scores: Vec<f32> = match cfg.scoring {
        Scoring::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        }
        Scoring::Sigmoid => logits.iter().map(|l| sigmoid(*l)).collect(),
    };
    // Scores the choice is made on.
    let mut choice_scores: Vec<f32> = match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.clone(),
    };
    match cfg.topk {
        TopK::Greedy => {}
        TopK::GroupMax {
            n_group,
            topk_group,
        }
        | TopK::GroupTop2Sum {
            n_group,
            topk_group,
        } => {
            let per = n / n_group;
            let group_score: Vec<f32> = choice_scores
                .chunks_exact(per)
                .map(|g| match cfg.topk {
                    TopK::GroupMax { .. } => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    _ => top_indices(g, 2).iter().map(|&i| g[i]).sum(),
                })
                .collect();
            let keep = top_indices(&group_score, topk_group);
            // transformers masks the other groups' scores to 0, not -inf
            // (`masked_fill(~score_mask, 0.0)`), for V2 and V3 alike.
            for (g, chunk) in choice_scores.chunks_exact_mut(per).enumerate() {
                if !keep.contains(&g) {
                    chunk.fill(0.0);
                }
            }
        }
    }
    let chosen = top_indices(&choice_scores, cfg.top_k);
    let mut out: Choice = chosen.iter().map(|&e| (e, scores[e])).collect();
    if cfg.norm_topk {
        let sum: f32 = out.iter().map(|(_, w)| w).sum();
        // DeepSeek adds 1e-20 to the denominator; softmax weights never sum to 0.
        let denom = if cfg.topk == TopK::Greedy && cfg.scoring == Scoring::Softmax {
            sum
        } else {
            sum + 1e-20
        };
        for (_, w) in &mut out {
            *w /= denom;
        }
    }
    if cfg.routed_scaling != 1.0 {
        for (_, w) in &mut out {
            *w *= cfg.routed_scaling;
        }
    }
    out
}

/// Tokens grouped by expert: for expert `e`, `rows[starts[e]..starts[e + 1]]` are
/// (token row, weight) pairs in token order.
#[derive(Debug, Default)]
pub struct Groups {
    pub starts: Vec<usize>,
    pub rows: Vec<(usize, f32)>,
}

impl Groups {
    /// Sorts each token's choices by expert (a counting sort: stable, linear).
    pub fn build(&mut self, n_experts: usize, choices: &[Choice]) {
        self.starts.clear();
        self.starts.resize(n_experts + 1, 0);
        for c in choices {
            for &(e, _) in c {
                self.starts[e + 1] += 1;
            }
        }
        for e in 0..n_experts {
            self.starts[e + 1] += self.starts[e];
        }
        let mut fill = self.starts.clone();
        self.rows.clear();
        self.rows.resize(self.starts[n_experts], (0, 0.0));
        for (t, c) in choices.iter().enumerate() {
            for &(e, w) in c {
                self.rows[fill[e]] = (t, w);
                fill[e] += 1;
            }
        }
    }

    /// The (token row, weight) pairs of expert `e`.
    pub fn of(&self, e: usize) -> &[(usize, f32)] {
        &self.rows[self.starts[e]..self.starts[e + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scoring: Scoring, topk: TopK, top_k: usize, norm: bool, scale: f32) -> MoeConfig {
        MoeConfig {
            n_experts: 8,
            top_k,
            expert_ffn: 4,
            scoring,
            topk,
            norm_topk: norm,
            routed_scaling: scale,
            shared_ffn: 0,
            shared_gate: false,
            moe_layers: vec![true],
        }
    }

    #[test]
    fn softmax_top_k_with_and_without_renormalisation() {
        let logits = [0.1, 2.0, -1.0, 1.5, 0.0, 0.3, -0.2, 1.0];
        let c = route(
            &cfg(Scoring::Softmax, TopK::Greedy, 2, false, 1.0),
            &logits,
            None,
        );
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        assert!((c[0].1 - 2f32.exp() / z).abs() < 1e-6);
        let c = route(
            &cfg(Scoring::Softmax, TopK::Greedy, 2, true, 1.0),
            &logits,
            None,
        );
        assert!((c[0].1 + c[1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn deepseek_v3_group_limited_choice_uses_the_bias_but_not_for_weights() {
        // 4 groups of 2. Group sums of the biased scores decide; within the kept groups
        // the biased scores pick; the weights are the unbiased sigmoids, renormalised
        // and scaled.
        let logits = [3.0, -3.0, 0.5, 0.4, 0.0, 0.1, -0.5, 2.5];
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -5.0];
        let c = cfg(
            Scoring::Sigmoid,
            TopK::GroupTop2Sum {
                n_group: 4,
                topk_group: 2,
            },
            2,
            true,
            2.5,
        );
        let got = route(&c, &logits, Some(&bias));
        // Group sums: g0 = s(3)+s(-3) = 1.0, g1 = s(.5)+s(.4) = 1.22, g2 = 1.02,
        // g3 = s(-.5)+s(2.5)-5 < 0: keep g1 and g2; best biased scores: 2 (s(.5)), 3.
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 3]);
        let (a, b) = (sigmoid(0.5), sigmoid(0.4));
        assert!((got[0].1 - 2.5 * a / (a + b)).abs() < 1e-6);
    }

    #[test]
    fn groups_sort_tokens_by_expert_in_token_order() {
        let choices = vec![
            vec![(3, 0.5), (1, 0.5)],
            vec![(1, 0.7), (0, 0.3)],
            vec![(3, 1.0)],
        ];
        let mut g = Groups::default();
        g.build(4, &choices);
        assert_eq!(g.of(0), &[(1, 0.3)]);
        assert_eq!(g.of(1), &[(0, 0.5), (1, 0.7)]);
        assert!(g.of(2).is_empty());
        assert_eq!(g.of(3), &[(0, 0.5), (2, 1.0)]);
    }
}
