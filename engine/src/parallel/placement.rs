//! Where the routed experts live: per MoE layer, a map from physical expert slots to
//! logical experts, slots split evenly over the ranks (rank `r` holds slots
//! `r * slots_per_rank ..`). A logical expert may have several replicas; each token's
//! replica is chosen to balance the step's load, deterministically.

/// The placement of every layer's experts.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub ranks: usize,
    pub slots_per_rank: usize,
    /// Per layer: the logical expert of each physical slot.
    pub phy2log: Vec<Vec<usize>>,
    /// Per layer, per logical expert: its slots, ascending.
    pub log2phy: Vec<Vec<Vec<usize>>>,
}

impl Placement {
    /// `n_experts + redundant` slots (rounded up to a multiple of `ranks`) per layer: slot
    /// `s` holds expert `s % n_experts`, so the extra slots replicate the first experts.
    pub fn round_robin(
        n_layers: usize,
        n_experts: usize,
        ranks: usize,
        redundant: usize,
    ) -> Placement {
        let ranks = ranks.max(1);
        let n_experts = n_experts.max(1);
        let slots = (n_experts + redundant).div_ceil(ranks) * ranks;
        let layer: Vec<usize> = (0..slots).map(|s| s % n_experts).collect();
        Placement::from_phy2log(vec![layer; n_layers], n_experts, ranks)
            .unwrap_or_else(|_| Placement::empty(ranks))
    }

    fn empty(ranks: usize) -> Placement {
        Placement {
            ranks,
            slots_per_rank: 0,
            phy2log: Vec::new(),
            log2phy: Vec::new(),
        }
    }

    /// A placement from its physical-to-logical map (EPLB's `phy2log`), checked: every
    /// layer has the same number of slots, divisible by `ranks`, and every logical expert
    /// at least one slot.
    pub fn from_phy2log(
        phy2log: Vec<Vec<usize>>,
        n_experts: usize,
        ranks: usize,
    ) -> Result<Placement, String> {
        let ranks = ranks.max(1);
        let slots = phy2log.first().map_or(0, Vec::len);
        if slots == 0 || !slots.is_multiple_of(ranks) {
            return Err(format!(
                "{slots} expert slots do not split over {ranks} ranks"
            ));
        }
        let mut log2phy = Vec::with_capacity(phy2log.len());
        for (l, layer) in phy2log.iter().enumerate() {
            if layer.len() != slots {
                return Err(format!(
                    "layer {l} has {} slots, layer 0 {slots}",
                    layer.len()
                ));
            }
            let mut map = vec![Vec::new(); n_experts];
            for (s, &e) in layer.iter().enumerate() {
                match map.get_mut(e) {
                    Some(v) => v.push(s),
                    None => return Err(format!("layer {l} slot {s}: expert {e} of {n_experts}")),
                }
            }
            if let Some(e) = map.iter().position(Vec::is_empty) {
                return Err(format!("layer {l}: expert {e} has no slot"));
            }
            log2phy.push(map);
        }
        Ok(Placement {
            ranks,
            slots_per_rank: slots / ranks,
            phy2log,
            log2phy,
        })
    }

    pub fn rank_of_slot(&self, slot: usize) -> usize {
        slot / self.slots_per_rank.max(1)
    }

    /// The logical experts rank `rank` holds in `layer` (with repeats for replicas).
    pub fn experts_on(&self, layer: usize, rank: usize) -> &[usize] {
        let s = self.slots_per_rank;
        self.phy2log.get(layer).map_or(&[], |p| {
            &p[(rank * s).min(p.len())..((rank + 1) * s).min(p.len())]
        })
    }

    /// The rank that computes `expert` of `layer` for the next token, given the tokens each
    /// rank was given so far in this step (`load`, by rank): the replica on the least
    /// loaded rank, the lowest slot on ties. `load` is updated.
    pub fn pick(&self, layer: usize, expert: usize, load: &mut [usize]) -> usize {
        let slots = &self.log2phy[layer][expert];
        let mut best = self.rank_of_slot(slots[0]);
        for &s in &slots[1..] {
            let r = self.rank_of_slot(s);
            if load[r] < load[best] {
                best = r;
            }
        }
        load[best] += 1;
        best
    }

    /// Per layer: the most loaded rank's load over the mean rank load when each expert's
    /// `weight` is split evenly over its replicas (1 = perfectly even; layers without load
    /// count as 1).
    pub fn balance(&self, weight: &[Vec<u64>]) -> Vec<f64> {
        self.phy2log
            .iter()
            .zip(&self.log2phy)
            .zip(weight)
            .map(|((slots, replicas), w)| {
                let mut rank_load = vec![0f64; self.ranks];
                for (s, &e) in slots.iter().enumerate() {
                    let share = w.get(e).copied().unwrap_or(0) as f64 / replicas[e].len() as f64;
                    rank_load[self.rank_of_slot(s)] += share;
                }
                let mean = rank_load.iter().sum::<f64>() / self.ranks as f64;
                if mean == 0.0 {
                    1.0
                } else {
                    rank_load.iter().fold(0f64, |m, x| m.max(*x)) / mean
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_spread_the_load() {
        // 4 experts, 2 ranks, 4 redundant slots: every expert on both ranks.
        let p = Placement::round_robin(1, 4, 2, 4);
        assert_eq!(p.slots_per_rank, 4);
        assert_eq!(p.experts_on(0, 0), &[0, 1, 2, 3]);
        let mut load = vec![0, 0];
        let ranks: Vec<usize> = (0..6).map(|_| p.pick(0, 2, &mut load)).collect();
        assert_eq!(ranks, vec![0, 1, 0, 1, 0, 1]);
        // Without redundancy an expert has one home.
        let p = Placement::round_robin(1, 4, 2, 0);
        let mut load = vec![5, 0];
        assert_eq!(p.pick(0, 1, &mut load), 0);
        assert!(
            Placement::from_phy2log(vec![vec![0, 0, 1]], 3, 1)
                .unwrap_err()
                .contains("expert 2")
        );
    }
}
