//! Expert-parallel load balancing: where the replicas of each MoE expert live.
//!
//! A port of DeepSeek's EPLB (`eplb.py`, deepseek-ai/EPLB at d52c72d) that gives the same
//! placements bit for bit. Given each logical expert's load per layer, it picks how many
//! replicas each expert gets and which GPU slot holds each replica. When the expert groups
//! divide evenly over the nodes it balances hierarchically (groups to nodes, then replicas
//! within a node, then replicas to the node's GPUs), which keeps each group on one node, so
//! group-limited routing sends a token to few nodes; otherwise it balances globally (the
//! replicas of all experts spread over all GPUs).
//!
//! The reference computes in float32 on the CPU, so this module does too: loads are rounded to
//! `f32` first, and sums, divisions and comparisons happen in `f32` in the reference's order.
//! Ties break as torch breaks them, and they are common (the replicas of one expert carry
//! exactly equal shares): `max` takes the first maximum, Python's `min` the first of the
//! lightest packs, and torch's descending sort is libstdc++'s unstable `std::sort`, ported in
//! [`torch_sort`]. One float32 sum may differ: torch may add a large group's loads in vector
//! lanes, here they are added left to right, which matters only where two groups' loads tie
//! to within a rounding error.

mod torch_sort;

/// The most physical experts (replicas) one layer may have.
pub const MAX_PHYSICAL_EXPERTS: usize = 16_384;
/// The most layers one call may balance.
pub const MAX_LAYERS: usize = 1_024;
/// The most entries `log2phy` may hold (layers x experts x the largest replica count): a
/// placement that gives one expert thousands of replicas would otherwise need gigabytes.
pub const MAX_LOG2PHY_ENTRIES: usize = 1 << 26;
/// The largest total load of one layer: the reference's float32 sums must not overflow, and
/// half of `f32::MAX` leaves room for the rounding of partial sums.
pub const MAX_LAYER_LOAD: f64 = f32::MAX as f64 / 2.0;

/// Where every replica of every expert lives, per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `[layer][physical slot]`: the logical expert each slot holds. Slots are numbered GPU by
    /// GPU: GPU `g` holds slots `g * per_gpu .. (g + 1) * per_gpu`.
    pub phy2log: Vec<Vec<usize>>,
    /// `[layer][logical expert][replica rank]`: the slot holding that replica, padded with -1
    /// up to the largest replica count over all layers (the reference's layout).
    pub log2phy: Vec<Vec<Vec<i64>>>,
    /// `[layer][logical expert]`: how many replicas the expert has.
    pub logcnt: Vec<Vec<usize>>,
}

/// Input the balancer cannot place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EplbError {
    #[error("`weight` has no layers")]
    NoLayers,
    #[error("`weight` has no experts (layer 0 is empty)")]
    NoExperts,
    #[error("`weight` is ragged: layer {layer} has {got} experts, layer 0 has {expected}")]
    RaggedWeight {
        layer: usize,
        expected: usize,
        got: usize,
    },
    #[error("`weight[{layer}][{expert}]` is {value}; loads must be finite and non-negative")]
    BadLoad {
        layer: usize,
        expert: usize,
        value: f64,
    },
    #[error(
        "layer {layer}'s total load {total:e} exceeds {MAX_LAYER_LOAD:e} (the balancer computes in float32)"
    )]
    LoadTooLarge { layer: usize, total: f64 },
    #[error("`{name}` must be at least 1, got 0")]
    Zero { name: &'static str },
    #[error("`weight` has {got} layers; at most {max} are balanced at once")]
    TooManyLayers { max: usize, got: usize },
    #[error("`num_replicas` must be at most {max}, got {got}")]
    TooManyReplicas { max: usize, got: usize },
    #[error("`num_replicas` ({num_replicas}) must be at least the number of experts ({experts})")]
    TooFewReplicas { num_replicas: usize, experts: usize },
    #[error("`{name}` ({value}) must be a multiple of `{of}` ({divisor})")]
    NotMultiple {
        name: &'static str,
        value: usize,
        of: &'static str,
        divisor: usize,
    },
    #[error(
        "the number of experts ({experts}) must be a multiple of `num_groups` ({num_groups}) \
         for the hierarchical policy"
    )]
    ExpertsNotInGroups { experts: usize, num_groups: usize },
    /// Every extra replica went to a few experts, and the padded `log2phy` would be huge.
    #[error(
        "`log2phy` would hold {entries} entries (layers x experts x the most replicas of one \
         expert); the limit is {max}"
    )]
    PlacementTooLarge { entries: usize, max: usize },
}

/// The policy `rebalance_experts` takes: "hierarchical" when the groups divide evenly over
/// the nodes, else "global". A zero `num_nodes` (which `rebalance_experts` rejects) reads as
/// global.
pub fn policy_name(num_groups: usize, num_nodes: usize) -> &'static str {
    if hierarchical(num_groups, num_nodes) {
        "hierarchical"
    } else {
        "global"
    }
}

fn hierarchical(num_groups: usize, num_nodes: usize) -> bool {
    num_nodes != 0 && num_groups.is_multiple_of(num_nodes)
}

/// Places `num_replicas` physical experts per layer over `num_gpus` GPUs in `num_nodes`
/// nodes, balancing `weight` (layers x logical experts: token counts or loads), whose experts
/// fall in `num_groups` consecutive groups. The reference's `rebalance_experts`.
pub fn rebalance_experts(
    weight: &[Vec<f64>],
    num_replicas: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
) -> Result<Placement, EplbError> {
    let weight = validate(weight, num_replicas, num_groups, num_nodes, num_gpus)?;
    let Replication {
        phy2log,
        rank: phyrank,
        logcnt,
    } = if hierarchical(num_groups, num_nodes) {
        rebalance_hierarchical(&weight, num_replicas, num_groups, num_nodes, num_gpus)
    } else {
        rebalance_hierarchical(&weight, num_replicas, 1, 1, num_gpus)
    };

    let experts = weight[0].len();
    let max_count = logcnt.iter().flatten().copied().max().unwrap_or(1);
    let entries = weight
        .len()
        .saturating_mul(experts)
        .saturating_mul(max_count);
    if entries > MAX_LOG2PHY_ENTRIES {
        return Err(EplbError::PlacementTooLarge {
            entries,
            max: MAX_LOG2PHY_ENTRIES,
        });
    }
    let log2phy = phy2log
        .iter()
        .zip(&phyrank)
        .map(|(slots, ranks)| {
            let mut layer = vec![vec![-1i64; max_count]; experts];
            for (slot, (&expert, &rank)) in slots.iter().zip(ranks).enumerate() {
                layer[expert][rank] = slot as i64;
            }
            layer
        })
        .collect();
    Ok(Placement {
        phy2log,
        log2phy,
        logcnt,
    })
}

/// Checks the input against everything the reference asserts (and what it would divide by
/// zero or index out of range on), and rounds the loads to the reference's float32.
fn validate(
    weight: &[Vec<f64>],
    num_replicas: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
) -> Result<Vec<Vec<f32>>, EplbError> {
    for (name, value) in [
        ("num_replicas", num_replicas),
        ("num_groups", num_groups),
        ("num_nodes", num_nodes),
        ("num_gpus", num_gpus),
    ] {
        if value == 0 {
            return Err(EplbError::Zero { name });
        }
    }
    let first = weight.first().ok_or(EplbError::NoLayers)?;
    let experts = first.len();
    if experts == 0 {
        return Err(EplbError::NoExperts);
    }
    if weight.len() > MAX_LAYERS {
        return Err(EplbError::TooManyLayers {
            max: MAX_LAYERS,
            got: weight.len(),
        });
    }
    if num_replicas > MAX_PHYSICAL_EXPERTS {
        return Err(EplbError::TooManyReplicas {
            max: MAX_PHYSICAL_EXPERTS,
            got: num_replicas,
        });
    }
    let mut rounded = Vec::with_capacity(weight.len());
    for (layer, row) in weight.iter().enumerate() {
        if row.len() != experts {
            return Err(EplbError::RaggedWeight {
                layer,
                expected: experts,
                got: row.len(),
            });
        }
        if let Some((expert, &value)) = row
            .iter()
            .enumerate()
            .find(|&(_, &v)| !v.is_finite() || v < 0.0)
        {
            return Err(EplbError::BadLoad {
                layer,
                expert,
                value,
            });
        }
        let total: f64 = row.iter().sum();
        if total > MAX_LAYER_LOAD {
            return Err(EplbError::LoadTooLarge { layer, total });
        }
        rounded.push(row.iter().map(|&v| v as f32).collect());
    }
    if num_replicas < experts {
        return Err(EplbError::TooFewReplicas {
            num_replicas,
            experts,
        });
    }
    let multiple = |name, value: usize, of, divisor: usize| {
        if value.is_multiple_of(divisor) {
            Ok(())
        } else {
            Err(EplbError::NotMultiple {
                name,
                value,
                of,
                divisor,
            })
        }
    };
    multiple("num_replicas", num_replicas, "num_gpus", num_gpus)?;
    multiple("num_gpus", num_gpus, "num_nodes", num_nodes)?;
    if hierarchical(num_groups, num_nodes) && !experts.is_multiple_of(num_groups) {
        return Err(EplbError::ExpertsNotInGroups {
            experts,
            num_groups,
        });
    }
    Ok(rounded)
}

/// Replicas and where they live: the reference's `(phy2log, rank, logcnt)` triple, one row per
/// layer (or per layer and node, inside the hierarchical policy).
struct Replication {
    /// `[row][physical slot]`: the logical expert the slot holds.
    phy2log: Vec<Vec<usize>>,
    /// `[row][physical slot]`: which replica of its expert the slot holds (0 is the first).
    rank: Vec<Vec<usize>>,
    /// `[row][logical expert]`: how many replicas the expert has.
    logcnt: Vec<Vec<usize>>,
}

/// The reference's `rebalance_experts_hierarchical`. The global policy is this with one group
/// on one node. The caller has validated the sizes.
fn rebalance_hierarchical(
    weight: &[Vec<f32>],
    num_physical: usize,
    num_groups: usize,
    num_nodes: usize,
    num_gpus: usize,
) -> Replication {
    let experts = weight[0].len();
    let group_size = experts / num_groups;
    let groups_per_node = num_groups / num_nodes;
    let experts_per_node = experts / num_nodes;
    let phy_per_node = num_physical / num_nodes;
    let phy_per_gpu = num_physical / num_gpus;

    // Step 1: pack groups to nodes. "mlog" numbers experts node by node: node n holds
    // mlog n * experts_per_node ..
    let tokens_per_group: Vec<Vec<f32>> = weight
        .iter()
        .map(|row| {
            row.chunks(group_size)
                .map(|g| g.iter().fold(0f32, |sum, &w| sum + w))
                .collect()
        })
        .collect();
    let (group_pack, group_rank) = balanced_packing(&tokens_per_group, num_nodes);
    let log2mlog: Vec<Vec<usize>> = group_pack
        .iter()
        .zip(&group_rank)
        .map(|(packs, ranks)| {
            packs
                .iter()
                .zip(ranks)
                .flat_map(|(&pack, &rank)| {
                    let base = (pack * groups_per_node + rank) * group_size;
                    base..base + group_size
                })
                .collect()
        })
        .collect();
    let mlog2log = inverse(&log2mlog);

    // Step 2: replicate experts within each node. One row per (layer, node).
    let tokens_per_mlog: Vec<Vec<f32>> = weight
        .iter()
        .zip(&mlog2log)
        .flat_map(|(row, m2l)| {
            m2l.chunks(experts_per_node)
                .map(|node| node.iter().map(|&log| row[log]).collect::<Vec<f32>>())
        })
        .collect();
    let Replication {
        phy2log: phy2mlog,
        rank: phyrank,
        logcnt: mlogcnt,
    } = replicate_experts(&tokens_per_mlog, phy_per_node);

    // Step 3: pack each node's replicas to its GPUs.
    let tokens_per_phy: Vec<Vec<f32>> = tokens_per_mlog
        .iter()
        .zip(&phy2mlog)
        .zip(&mlogcnt)
        .map(|((tokens, p2m), counts)| p2m.iter().map(|&m| tokens[m] / counts[m] as f32).collect())
        .collect();
    let (gpu_pack, gpu_rank) = balanced_packing(&tokens_per_phy, num_gpus / num_nodes);
    let phy2pphy: Vec<Vec<usize>> = gpu_pack
        .iter()
        .zip(&gpu_rank)
        .map(|(packs, ranks)| {
            packs
                .iter()
                .zip(ranks)
                .map(|(&pack, &rank)| pack * phy_per_gpu + rank)
                .collect()
        })
        .collect();
    let pphy2phy = inverse(&phy2pphy);

    let mut phy2log = Vec::with_capacity(weight.len());
    let mut ranks = Vec::with_capacity(weight.len());
    let mut logcnt = Vec::with_capacity(weight.len());
    for (layer, m2l) in mlog2log.iter().enumerate() {
        let mut layer_phy2log = Vec::with_capacity(num_physical);
        let mut layer_ranks = Vec::with_capacity(num_physical);
        for node in 0..num_nodes {
            let r = layer * num_nodes + node;
            for &phy in &pphy2phy[r] {
                layer_phy2log.push(m2l[phy2mlog[r][phy] + node * experts_per_node]);
                layer_ranks.push(phyrank[r][phy]);
            }
        }
        phy2log.push(layer_phy2log);
        ranks.push(layer_ranks);
        let node_counts = &mlogcnt[layer * num_nodes..(layer + 1) * num_nodes];
        logcnt.push(
            log2mlog[layer]
                .iter()
                .map(|&m| node_counts[m / experts_per_node][m % experts_per_node])
                .collect(),
        );
    }
    Replication {
        phy2log,
        rank: ranks,
        logcnt,
    }
}

/// The reference's `balanced_packing`: puts each row's items into `num_packs` packs of equal
/// size, heaviest first, each into the lightest pack with room. Returns `(pack_index,
/// rank_in_pack)` per item. The row length is a multiple of `num_packs`.
fn balanced_packing(weight: &[Vec<f32>], num_packs: usize) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let mut pack_index = Vec::with_capacity(weight.len());
    let mut rank_in_pack = Vec::with_capacity(weight.len());
    for row in weight {
        let per_pack = row.len() / num_packs;
        if per_pack == 1 {
            pack_index.push((0..row.len()).collect());
            rank_in_pack.push(vec![0; row.len()]);
            continue;
        }
        let order = torch_sort::argsort_descending(row);
        let mut packs = vec![0; row.len()];
        let mut ranks = vec![0; row.len()];
        let mut pack_weights = vec![0f32; num_packs];
        let mut pack_items = vec![0usize; num_packs];
        for item in order {
            // Python's `min` over the packs with room: the first of the lightest.
            let mut lightest: Option<usize> = None;
            for p in (0..num_packs).filter(|&p| pack_items[p] < per_pack) {
                if lightest.is_none_or(|l| pack_weights[p] < pack_weights[l]) {
                    lightest = Some(p);
                }
            }
            let Some(pack) = lightest else {
                unreachable!("num_packs * per_pack items leave a pack with room for each")
            };
            packs[item] = pack;
            ranks[item] = pack_items[pack];
            pack_weights[pack] += row[item];
            pack_items[pack] += 1;
        }
        pack_index.push(packs);
        rank_in_pack.push(ranks);
    }
    (pack_index, rank_in_pack)
}

/// The reference's `replicate_experts`: gives each row's `num_phy - num_log` extra replicas
/// one at a time to the expert with the highest load per replica (the first such).
/// `num_phy` is at least the row length.
fn replicate_experts(weight: &[Vec<f32>], num_phy: usize) -> Replication {
    let mut phy2log = Vec::with_capacity(weight.len());
    let mut rank = Vec::with_capacity(weight.len());
    let mut logcnt = Vec::with_capacity(weight.len());
    for row in weight {
        let mut p2l: Vec<usize> = (0..num_phy).collect();
        let mut r = vec![0; num_phy];
        let mut counts = vec![1usize; row.len()];
        for slot in row.len()..num_phy {
            let mut best = 0;
            let mut best_load = f32::NEG_INFINITY;
            for (expert, (&w, &c)) in row.iter().zip(&counts).enumerate() {
                let load = w / c as f32;
                if load > best_load {
                    best = expert;
                    best_load = load;
                }
            }
            p2l[slot] = best;
            r[slot] = counts[best];
            counts[best] += 1;
        }
        phy2log.push(p2l);
        rank.push(r);
        logcnt.push(counts);
    }
    Replication {
        phy2log,
        rank,
        logcnt,
    }
}

/// The inverse of each row's permutation: `inv[perm[i]] = i`.
fn inverse(perm: &[Vec<usize>]) -> Vec<Vec<usize>> {
    perm.iter()
        .map(|row| {
            let mut inv = vec![0; row.len()];
            for (i, &p) in row.iter().enumerate() {
                inv[p] = i;
            }
            inv
        })
        .collect()
}

/// Per layer, the most loaded GPU's load over the mean GPU load under `p` (1.0 is perfect
/// balance). An expert's load is split evenly over its replicas; GPU `g` holds the
/// `num_replicas / num_gpus` consecutive slots from `g * num_replicas / num_gpus`. A layer
/// with no load at all scores 1.0; a layer that `p` or `num_gpus` does not fit (wrong sizes,
/// zero GPUs) scores NaN.
pub fn gpu_balance(weight: &[Vec<f64>], p: &Placement, num_gpus: usize) -> Vec<f64> {
    weight
        .iter()
        .enumerate()
        .map(|(layer, row)| layer_balance(row, p, layer, num_gpus).unwrap_or(f64::NAN))
        .collect()
}

fn layer_balance(row: &[f64], p: &Placement, layer: usize, num_gpus: usize) -> Option<f64> {
    let slots = p.phy2log.get(layer)?;
    let counts = p.logcnt.get(layer)?;
    if num_gpus == 0 || slots.is_empty() || slots.len() % num_gpus != 0 {
        return None;
    }
    let mut gpu_loads = Vec::with_capacity(num_gpus);
    for gpu in slots.chunks(slots.len() / num_gpus) {
        let mut load = 0.0;
        for &expert in gpu {
            let count = *counts.get(expert)?;
            if count == 0 {
                return None;
            }
            load += row.get(expert)? / count as f64;
        }
        gpu_loads.push(load);
    }
    let max = gpu_loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = gpu_loads.iter().sum::<f64>() / num_gpus as f64;
    Some(if mean == 0.0 { 1.0 } else { max / mean })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the EPLB repository's README.
    fn readme_weight() -> Vec<Vec<f64>> {
        vec![
            vec![
                90.0, 132.0, 40.0, 61.0, 104.0, 165.0, 39.0, 4.0, 73.0, 56.0, 183.0, 86.0,
            ],
            vec![
                20.0, 107.0, 104.0, 64.0, 19.0, 197.0, 187.0, 157.0, 172.0, 86.0, 16.0, 27.0,
            ],
        ]
    }

    #[test]
    fn readme_example() {
        let p = rebalance_experts(&readme_weight(), 16, 4, 2, 8).unwrap();
        assert_eq!(
            p.phy2log,
            vec![
                vec![5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                vec![7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
            ]
        );
        // log2phy and logcnt agree with phy2log.
        for layer in 0..2 {
            for (expert, slots) in p.log2phy[layer].iter().enumerate() {
                let count = p.logcnt[layer][expert];
                assert!(
                    slots[..count]
                        .iter()
                        .all(|&s| p.phy2log[layer][s as usize] == expert)
                );
                assert!(slots[count..].iter().all(|&s| s == -1));
            }
        }
        assert_eq!(policy_name(4, 2), "hierarchical");
        assert_eq!(policy_name(5, 2), "global");
        assert_eq!(policy_name(5, 0), "global");
    }

    fn err(
        weight: &[Vec<f64>],
        replicas: usize,
        groups: usize,
        nodes: usize,
        gpus: usize,
    ) -> String {
        rebalance_experts(weight, replicas, groups, nodes, gpus)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let w = readme_weight();
        assert_eq!(err(&[], 16, 4, 2, 8), "`weight` has no layers");
        assert_eq!(
            err(&[vec![]], 16, 4, 2, 8),
            "`weight` has no experts (layer 0 is empty)"
        );
        assert_eq!(
            err(&[vec![1.0, 2.0], vec![1.0]], 4, 1, 1, 2),
            "`weight` is ragged: layer 1 has 1 experts, layer 0 has 2"
        );
        for (name, e) in [
            ("num_replicas", err(&w, 0, 4, 2, 8)),
            ("num_groups", err(&w, 16, 0, 2, 8)),
            ("num_nodes", err(&w, 16, 4, 0, 8)),
            ("num_gpus", err(&w, 16, 4, 2, 0)),
        ] {
            assert_eq!(e, format!("`{name}` must be at least 1, got 0"));
        }
        assert_eq!(
            err(&w, 8, 4, 2, 8),
            "`num_replicas` (8) must be at least the number of experts (12)"
        );
        assert_eq!(
            err(&w, 18, 4, 2, 8),
            "`num_replicas` (18) must be a multiple of `num_gpus` (8)"
        );
        assert_eq!(
            err(&w, 18, 4, 2, 3),
            "`num_gpus` (3) must be a multiple of `num_nodes` (2)"
        );
        assert_eq!(
            err(&w, 16, 8, 2, 8),
            "the number of experts (12) must be a multiple of `num_groups` (8) for the \
             hierarchical policy"
        );
        // The global policy ignores the groups, as the reference does.
        assert!(rebalance_experts(&w, 16, 5, 2, 8).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let mut w = w.clone();
            w[1][3] = bad;
            assert_eq!(
                err(&w, 16, 4, 2, 8),
                format!("`weight[1][3]` is {bad}; loads must be finite and non-negative")
            );
        }
        let mut huge = w.clone();
        huge[0][0] = 1e300;
        assert!(err(&huge, 16, 4, 2, 8).starts_with("layer 0's total load 1e300 exceeds"));
        assert_eq!(
            err(&w, MAX_PHYSICAL_EXPERTS + 8, 4, 2, 8),
            format!(
                "`num_replicas` must be at most {MAX_PHYSICAL_EXPERTS}, got {}",
                MAX_PHYSICAL_EXPERTS + 8
            )
        );
        let many = vec![vec![1.0; 12]; MAX_LAYERS + 1];
        assert_eq!(
            err(&many, 16, 4, 2, 8),
            format!(
                "`weight` has {} layers; at most {MAX_LAYERS} are balanced at once",
                MAX_LAYERS + 1
            )
        );
        // One hot expert takes every extra replica, which makes log2phy too large to hold.
        let mut hot = vec![vec![0.0; 4096]; 2];
        for layer in &mut hot {
            layer[0] = 1.0;
        }
        assert!(err(&hot, MAX_PHYSICAL_EXPERTS, 1, 1, 1).starts_with("`log2phy"));
    }

    #[test]
    fn replicas_on_one_node_and_one_per_gpu() {
        // As many replicas as experts and one slot per GPU: nothing to replicate or pack.
        let w = vec![vec![3.0, 1.0, 2.0, 5.0]];
        let p = rebalance_experts(&w, 4, 2, 1, 4).unwrap();
        assert_eq!(p.logcnt, vec![vec![1, 1, 1, 1]]);
        assert_eq!(p.log2phy[0].iter().map(Vec::len).max(), Some(1));
        // Zero loads tie everywhere: torch's `max` picks the first expert every time.
        let p = rebalance_experts(&[vec![0.0; 6]], 12, 3, 1, 4).unwrap();
        assert_eq!(p.logcnt, vec![vec![7, 1, 1, 1, 1, 1]]);
        assert_eq!(gpu_balance(&[vec![0.0; 6]], &p, 4), vec![1.0]);
    }

    #[test]
    fn gpu_balance_splits_load_over_replicas() {
        let p = Placement {
            phy2log: vec![vec![0, 1, 2, 3], vec![0, 0, 1, 0]],
            log2phy: Vec::new(),
            logcnt: vec![vec![1, 1, 1, 1], vec![3, 1]],
        };
        // Layer 0: GPUs carry 4 + 2 and 2 + 0: max 6 over mean 4. Layer 1: expert 0's 6 is
        // 2 per replica, so both GPUs carry 4.
        let w = vec![vec![4.0, 2.0, 2.0, 0.0], vec![6.0, 2.0]];
        assert_eq!(gpu_balance(&w, &p, 2), vec![1.5, 1.0]);
        // Sizes that do not fit give NaN, not a panic.
        assert!(gpu_balance(&w, &p, 3).iter().all(|b| b.is_nan()));
        assert!(gpu_balance(&w, &p, 0).iter().all(|b| b.is_nan()));
        let three_layers = vec![w[0].clone(), w[1].clone(), w[1].clone()];
        assert!(gpu_balance(&three_layers, &p, 2)[2].is_nan());
        assert!(gpu_balance(&[vec![1.0]], &p, 2)[0].is_nan());
    }

    #[test]
    fn balancing_beats_the_identity_placement() {
        let w = readme_weight();
        let p = rebalance_experts(&w, 16, 4, 2, 8).unwrap();
        let balance = gpu_balance(&w, &p, 8);
        for (layer, row) in w.iter().enumerate() {
            // 16 slots, the first 12 the experts in order, the last 4 empty-loaded repeats.
            let naive = Placement {
                phy2log: vec![(0..16).map(|s| s % 12).collect()],
                log2phy: Vec::new(),
                logcnt: vec![(0..12).map(|e| if e < 4 { 2 } else { 1 }).collect()],
            };
            let naive_balance = gpu_balance(std::slice::from_ref(row), &naive, 8)[0];
            assert!(balance[layer] >= 1.0 && balance[layer] < naive_balance);
        }
    }
}
