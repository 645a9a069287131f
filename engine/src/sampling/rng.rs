//! Small, reproducible pseudo-random number generators for token sampling.
//!
//! Sampling needs a fast generator whose output depends only on the request's `seed`, on every
//! platform and across releases; a dependency could change its stream in a minor version.
//! [`Xoshiro256StarStar`] (Blackman & Vigna) does the drawing and [`SplitMix64`] expands a
//! 64-bit seed into its 256-bit state, as the authors recommend. Both follow the public-domain
//! reference code at <https://prng.di.unimi.it/>; the tests pin their reference outputs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: a 64-bit-state generator used here to expand one seed into a larger state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    /// The Weyl-sequence counter; each output is a mix of its next value.
    state: u64,
}

impl SplitMix64 {
    /// Starts the sequence at `seed` (any value, zero included, is fine).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Returns the next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// xoshiro256**: the generator that draws tokens.
#[derive(Debug, Clone)]
pub struct Xoshiro256StarStar {
    /// The 256-bit state; never all zero (seeding through SplitMix64 guarantees it).
    state: [u64; 4],
}

impl Xoshiro256StarStar {
    /// Seeds the state from four consecutive SplitMix64 outputs of `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut mixer = SplitMix64::new(seed);
        let state = [
            mixer.next_u64(),
            mixer.next_u64(),
            mixer.next_u64(),
            mixer.next_u64(),
        ];
        Self { state }
    }

    /// Uses `state` verbatim; only for reproducing reference vectors. An all-zero state would
    /// output zeros forever, so it is replaced by the SplitMix64 seeding of 0.
    pub fn from_state(state: [u64; 4]) -> Self {
        if state == [0; 4] {
            return Self::seed_from_u64(0);
        }
        Self { state }
    }

    /// Returns the next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Returns a uniform `f64` in `[0, 1)` built from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        // 2^-53: every value is an exact multiple, so 1.0 is never reached.
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

/// A seed for requests that did not send one: std's per-process random hash keys mixed with
/// the wall clock, so two requests in the same nanosecond still differ.
pub(crate) fn entropy_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let since_epoch_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(since_epoch_ns);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference output of Vigna's `splitmix64.c` for seed 1234567 (also the Rosetta Code
    /// "Pseudo-random numbers/Splitmix64" task values).
    #[test]
    fn splitmix64_matches_reference() {
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    /// Reference output of Vigna's `xoshiro256starstar.c` from state [1, 2, 3, 4] (the same
    /// vector `rand_xoshiro` pins).
    #[test]
    fn xoshiro256starstar_matches_reference() {
        let mut rng = Xoshiro256StarStar::from_state([1, 2, 3, 4]);
        let got: Vec<u64> = (0..10).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                11_520,
                0,
                1_509_978_240,
                1_215_971_899_390_074_240,
                1_216_172_134_540_287_360,
                607_988_272_756_665_600,
                16_172_922_978_634_559_625,
                8_476_171_486_693_032_832,
                10_595_114_339_597_558_777,
                2_904_607_092_377_533_576,
            ]
        );
    }

    /// The reference C programs chained: splitmix64(42) fills the state, then xoshiro256**.
    #[test]
    fn seeding_matches_reference_chain() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(42);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                1_546_998_764_402_558_742,
                6_990_951_692_964_543_102,
                12_544_586_762_248_559_009,
            ]
        );
    }

    #[test]
    fn next_f64_stays_in_unit_interval() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(7);
        for _ in 0..10_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn all_zero_state_is_replaced() {
        let mut rng = Xoshiro256StarStar::from_state([0; 4]);
        assert_ne!(rng.next_u64() | rng.next_u64(), 0);
    }

    #[test]
    fn entropy_seeds_differ() {
        assert_ne!(entropy_seed(), entropy_seed());
    }
}
