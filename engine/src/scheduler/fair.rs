//! Weighted-fair admission across tenants: each tenant has its own FIFO queue, and the
//! next request admitted is the head of the queue whose tenant has been served the fewest
//! tokens (start-time fair queueing, weight 1 each). A tenant that was idle joins at the
//! current minimum instead of with its old low count, so idling earns no burst credit; a
//! tenant sending 100 requests cannot starve one sending 1.

use std::collections::{BTreeMap, VecDeque};

/// Waiting items per tenant, admitted in fair order.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: BTreeMap<String, VecDeque<T>>,
    /// Tokens served per tenant (virtual time), kept while the tenant is known.
    served: BTreeMap<String, u64>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            queues: BTreeMap::new(),
            served: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest count among tenants with work waiting.
    fn min_active(&self) -> Option<u64> {
        self.queues
            .keys()
            .filter_map(|t| self.served.get(t).copied())
            .min()
    }

    /// Queues `item` for `tenant`. `active` says whether the tenant has work running, in
    /// which case it keeps its count; otherwise it joins no lower than the others waiting.
    pub fn push(&mut self, tenant: &str, item: T, active: bool) {
        let floor = self.min_active();
        let count = self.served.entry(tenant.to_string()).or_insert(0);
        if !active
            && !self.queues.contains_key(tenant)
            && let Some(f) = floor
        {
            *count = (*count).max(f);
        }
        self.queues
            .entry(tenant.to_string())
            .or_default()
            .push_back(item);
        self.len += 1;
    }

    /// Puts `item` back at the head of `tenant`'s queue (it could not be admitted yet).
    pub fn push_front(&mut self, tenant: &str, item: T) {
        self.queues
            .entry(tenant.to_string())
            .or_default()
            .push_front(item);
        self.served.entry(tenant.to_string()).or_insert(0);
        self.len += 1;
    }

    /// The next item in fair order, with its tenant.
    pub fn pop(&mut self) -> Option<(String, T)> {
        let tenant = self
            .queues
            .keys()
            .min_by_key(|t| self.served.get(*t).copied().unwrap_or(0))?
            .clone();
        let queue = self.queues.get_mut(&tenant)?;
        let item = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&tenant);
        }
        self.len -= 1;
        Some((tenant, item))
    }

    /// Charges `tokens` served to `tenant`.
    pub fn charge(&mut self, tenant: &str, tokens: u64) {
        *self.served.entry(tenant.to_string()).or_insert(0) += tokens;
    }

    /// Removes the items `drop` selects (e.g. requests whose client left).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T>
    where
        T: Sized,
    {
        let mut removed = Vec::new();
        for q in self.queues.values_mut() {
            let mut kept = VecDeque::with_capacity(q.len());
            while let Some(item) = q.pop_front() {
                if keep(&item) {
                    kept.push_back(item);
                } else {
                    removed.push(item);
                }
            }
            *q = kept;
        }
        self.queues.retain(|_, q| !q.is_empty());
        self.len -= removed.len();
        removed
    }

    /// Forgets the counts of tenants with nothing waiting and nothing in `active`, so the
    /// table stays bounded by the tenants actually in use.
    pub fn forget_idle(&mut self, active: &dyn Fn(&str) -> bool) {
        let queues = &self.queues;
        self.served
            .retain(|t, _| queues.contains_key(t) || active(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_light_tenant_is_not_starved_by_a_heavy_one() {
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push("heavy", i, false);
        }
        q.push("light", 1000, false);
        // One heavy request is served and charged; the light one goes next, not after
        // the 99 other heavy ones.
        let (t, _) = q.pop().unwrap();
        assert_eq!(t, "heavy");
        q.charge(&t, 50);
        let order: Vec<String> = (0..3).map(|_| q.pop().unwrap().0).collect();
        assert_eq!(order, ["light", "heavy", "heavy"]);
    }

    #[test]
    fn an_idle_tenant_earns_no_credit() {
        let mut q = FairQueue::default();
        q.push("a", 1, false);
        let (t, _) = q.pop().unwrap();
        q.charge(&t, 1000);
        q.push("b", 2, false);
        q.charge("b", 2000);
        // "a" was idle; it rejoins at b's count, not at its own 1000.
        q.push("a", 3, false);
        q.push("b", 4, true);
        assert_eq!(q.pop().unwrap().0, "a");
        assert_eq!(q.len(), 2);
        let removed = q.retain(|x| *x != 4);
        assert_eq!(removed, vec![4]);
        assert_eq!(q.len(), 1);
    }
}
