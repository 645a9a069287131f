//! torch's CPU `sort(descending=True)`, tie order included.
//!
//! With `stable=False` (the default, and what EPLB calls) torch sorts each row of (value,
//! index) pairs with the C++ library's `std::sort`: on Linux, libstdc++'s introsort. It is
//! not stable, and EPLB sorts equal loads all the time (the replicas of one expert carry
//! exactly the same share), so which replica lands on which GPU depends on where introsort
//! leaves equal items. This is a port of libstdc++'s `std::sort` (`__introsort_loop`,
//! median-of-three pivot, unguarded partition, heap sort past the depth limit, final
//! insertion sort) that moves items exactly as it does. torch builds that dispatch float sorts
//! to x86-simd-sort order ties differently; the reference fixtures match this one.

/// Below this many items introsort leaves a range to the final insertion sort
/// (libstdc++'s `_S_threshold`).
const THRESHOLD: usize = 16;

/// The indices of `row` in the order torch's `row.sort(descending=True).indices` lists them.
/// `row` holds no NaN.
pub(super) fn argsort_descending(row: &[f32]) -> Vec<usize> {
    let mut items: Vec<(f32, usize)> = row.iter().copied().zip(0..).collect();
    sort(&mut items, &|a: &(f32, usize), b: &(f32, usize)| a.0 > b.0);
    items.into_iter().map(|(_, index)| index).collect()
}

/// libstdc++'s `std::sort(first, last, comp)` with `less` as `comp`.
fn sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    if v.len() < 2 {
        return;
    }
    let depth_limit = 2 * v.len().ilog2() as usize;
    introsort_loop(v, depth_limit, less);
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        // libstdc++'s unguarded insertion: the smallest item is already in the first 16.
        for i in THRESHOLD..v.len() {
            linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn introsort_loop<T: Copy>(v: &mut [T], mut depth_limit: usize, less: &impl Fn(&T, &T) -> bool) {
    let mut last = v.len();
    while last > THRESHOLD {
        if depth_limit == 0 {
            heap_sort(&mut v[..last], less);
            return;
        }
        depth_limit -= 1;
        let cut = partition_pivot(&mut v[..last], less);
        introsort_loop(&mut v[cut..last], depth_limit, less);
        last = cut;
    }
}

/// `__unguarded_partition_pivot`: the median of items 1, mid and last moves to the front
/// and the rest is partitioned around it.
fn partition_pivot<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) -> usize {
    let (a, b, c) = (1, v.len() / 2, v.len() - 1);
    let median = if less(&v[a], &v[b]) {
        if less(&v[b], &v[c]) {
            b
        } else if less(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if less(&v[a], &v[c]) {
        a
    } else if less(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(0, median);

    // `__unguarded_partition(first + 1, last, first)`. The pivot stays at 0 and the median
    // choice keeps both scans in range; the bounds checks only make that explicit.
    let (mut first, mut last) = (1, v.len());
    loop {
        while first < v.len() && less(&v[first], &v[0]) {
            first += 1;
        }
        last -= 1;
        while last > 0 && less(&v[0], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        let value = v[i];
        if less(&value, &v[0]) {
            v.copy_within(0..i, 1);
            v[0] = value;
        } else {
            linear_insert(v, i, less);
        }
    }
}

/// `__unguarded_linear_insert`: moves item `i` left past every item it sorts before.
fn linear_insert<T: Copy>(v: &mut [T], i: usize, less: &impl Fn(&T, &T) -> bool) {
    let value = v[i];
    let mut hole = i;
    while hole > 0 && less(&value, &v[hole - 1]) {
        v[hole] = v[hole - 1];
        hole -= 1;
    }
    v[hole] = value;
}

/// `std::__partial_sort(first, last, last)`: `make_heap`, then `sort_heap`.
fn heap_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent];
        adjust_heap(v, parent, len, value, less);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    for last in (1..len).rev() {
        let value = v[last];
        v[last] = v[0];
        adjust_heap(v, 0, last, value, less);
    }
}

/// `std::__adjust_heap`: sifts the hole at `hole` down to a leaf, then pushes `value` up.
fn adjust_heap<T: Copy>(
    v: &mut [T],
    mut hole: usize,
    len: usize,
    value: T,
    less: &impl Fn(&T, &T) -> bool,
) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    while hole > top {
        let parent = (hole - 1) / 2;
        if !less(&v[parent], &value) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the tests need no dependency.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    fn assert_sorted_permutation(row: &[f32], order: &[usize]) {
        let mut seen = order.to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..row.len()).collect::<Vec<_>>());
        assert!(
            order.windows(2).all(|w| row[w[0]] >= row[w[1]]),
            "{row:?} {order:?}"
        );
    }

    #[test]
    fn sorts_descending_with_many_ties() {
        let mut state = 7;
        for len in 0..200 {
            let row: Vec<f32> = (0..len).map(|_| (lcg(&mut state) % 6) as f32).collect();
            assert_sorted_permutation(&row, &argsort_descending(&row));
        }
    }

    #[test]
    fn heap_sort_fallback_sorts() {
        let mut state = 11;
        for len in [THRESHOLD + 1, 64, 101] {
            let row: Vec<f32> = (0..len).map(|_| (lcg(&mut state) % 9) as f32).collect();
            let mut items: Vec<(f32, usize)> = row.iter().copied().zip(0..).collect();
            // No depth left: the loop hands the whole range to the heap sort.
            introsort_loop(&mut items, 0, &|a: &(f32, usize), b: &(f32, usize)| {
                a.0 > b.0
            });
            let order: Vec<usize> = items.iter().map(|&(_, i)| i).collect();
            assert_sorted_permutation(&row, &order);
        }
    }

    #[test]
    fn ties_land_where_libstdcxx_leaves_them() {
        // Up to 16 items the insertion sort keeps ties in index order.
        assert_eq!(argsort_descending(&[1.0, 2.0, 1.0, 2.0]), vec![1, 3, 0, 2]);
        // 20 items: one partition step, which reorders equal items. This is the order g++ 12's
        // `std::sort` gives these (value, index) pairs.
        let row: Vec<f32> = (0..20).map(|i| (i % 3) as f32).collect();
        assert_eq!(
            argsort_descending(&row),
            vec![
                2, 17, 5, 14, 8, 11, 10, 19, 16, 13, 7, 4, 1, 0, 9, 12, 6, 15, 3, 18
            ]
        );
    }
}
