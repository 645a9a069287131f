//! Tests of the formats against gguf-py's reference dequantizers, of the dot products
//! against a float64 reference, and of the AVX2 path against the portable one (bitwise).

use super::*;
use crate::QK_K;

/// A small deterministic generator (SplitMix64) so tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `blocks` random blocks of weight type `ty` with finite, moderate scales.
fn random_weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        let x: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
        quantize::quantize_row(ty, &x, &mut out);
        return out;
    }
    let bb = ty.block_bytes();
    let mut out = rng.bytes(ty.row_bytes(n).unwrap());
    for b in out.chunks_exact_mut(bb) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 => put_f16(b, 0, rng.uniform(-0.05, 0.05)),
            GgmlType::Q4_1 => {
                put_f16(b, 0, rng.uniform(0.001, 0.05));
                put_f16(b, 2, rng.uniform(-0.5, 0.5));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                put_f16(b, 0, rng.uniform(0.0005, 0.01));
                put_f16(b, 2, rng.uniform(0.0005, 0.01));
            }
            GgmlType::Q6_K => put_f16(b, 208, rng.uniform(-0.01, 0.01)),
            _ => unreachable!(),
        }
    }
    out
}

const WEIGHT_TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn dequantize_matches_gguf_py_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/ggml-quants/dequant.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let name = case["type"].as_str().unwrap();
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .unwrap();
        let hex = case["hex"].as_str().unwrap();
        let raw: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<f64> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut got = vec![0f32; want.len()];
        dequantize_row(ty, &raw, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // gguf-py computes in float32 with numpy; the order of its multiplications may
            // differ from ggml's by one rounding.
            let tol = 1e-6 * w.abs().max(1e-3);
            assert!(
                (f64::from(*g) - w).abs() <= tol,
                "{name} value {i}: got {g}, gguf-py {w}"
            );
        }
    }
}

#[test]
fn dot_products_match_float64_reference() {
    let mut rng = Rng(7);
    for ty in WEIGHT_TYPES {
        let n = if ty.block_len() == QK_K { 512 } else { 576 };
        let w = random_weights(&mut rng, ty, n);
        let x: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect();
        let act_ty = ty.vec_dot_type();
        let mut a = vec![0u8; act_ty.row_bytes(n).unwrap()];
        quantize_row(act_ty, &x, &mut a).unwrap();
        let (mut wf, mut af) = (vec![0f32; n], vec![0f32; n]);
        dequantize_row(ty, &w, &mut wf).unwrap();
        dequantize_row(act_ty, &a, &mut af).unwrap();
        let want: f64 = wf
            .iter()
            .zip(&af)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum();
        let scale: f64 = wf
            .iter()
            .zip(&af)
            .map(|(p, q)| (f64::from(*p) * f64::from(*q)).abs())
            .sum();
        for isa in [Isa::Portable, Isa::detect()] {
            let got = f64::from(vec_dot(isa, ty, n, &w, &a).unwrap());
            assert!(
                (got - want).abs() <= 1e-5 * scale + 1e-6,
                "{} on {}: {got} vs {want}",
                ty.name(),
                isa.name()
            );
        }
        // And the quantized activations are close to what they quantize.
        let err: f32 = x
            .iter()
            .zip(&af)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "{} activations off by {err}", act_ty.name());
    }
}

#[test]
fn simd_and_portable_give_identical_bits() {
    if Isa::detect() == Isa::Portable {
        eprintln!("no AVX2 on this CPU: nothing to compare");
        return;
    }
    let mut rng = Rng(11);
    for ty in WEIGHT_TYPES {
        for n in [256usize, 512, 1536] {
            let n = if ty.block_len() == 1 { n + 7 } else { n }; // float tails too
            let w = random_weights(&mut rng, ty, n);
            let act_ty = ty.vec_dot_type();
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let x: Vec<f32> = (0..n).map(|_| rng.uniform(-3.0, 3.0)).collect();
                    let mut a = vec![0u8; act_ty.row_bytes(n).unwrap()];
                    quantize_row(act_ty, &x, &mut a).unwrap();
                    a
                })
                .collect();
            let p = DotKernel::new(Isa::Portable, ty).unwrap();
            // Four weight rows (this one and three more) against one activation row.
            let more: Vec<Vec<u8>> = (0..3).map(|_| random_weights(&mut rng, ty, n)).collect();
            let xs = [&w[..], &more[0][..], &more[1][..], &more[2][..]];
            let ys = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            for isa in [Isa::Avx2, Isa::Avx512]
                .into_iter()
                .filter(|i| i.is_available())
            {
                let s = DotKernel::new(isa, ty).unwrap();
                let what = format!("{} n={n} on {}", ty.name(), isa.name());
                for y in ys {
                    assert_eq!(
                        (p.one)(n, &w, y).to_bits(),
                        (s.one)(n, &w, y).to_bits(),
                        "{what}"
                    );
                }
                let (pf, sf) = ((p.acts4)(n, &w, ys), (s.acts4)(n, &w, ys));
                for r in 0..4 {
                    assert_eq!(pf[r].to_bits(), sf[r].to_bits(), "{what} acts4 {r}");
                    assert_eq!(
                        pf[r].to_bits(),
                        (p.one)(n, &w, ys[r]).to_bits(),
                        "{what} acts4 vs one"
                    );
                }
                let (pr, sr) = ((p.rows4)(n, xs, ys[1]), (s.rows4)(n, xs, ys[1]));
                for r in 0..4 {
                    assert_eq!(pr[r].to_bits(), sr[r].to_bits(), "{what} rows4 {r}");
                    assert_eq!(
                        sr[r].to_bits(),
                        (s.one)(n, xs[r], ys[1]).to_bits(),
                        "{what} rows4 vs one"
                    );
                }
            }
        }
    }
}

#[test]
fn saturation_in_pair_sums_is_the_same_on_both_paths() {
    // Q8_0 weights of -128 against activations of -128 saturate maddubs' i16 pair sums.
    if Isa::detect() == Isa::Portable {
        return;
    }
    let mut w = vec![0x80u8; 34];
    put_f16(&mut w, 0, 1.0);
    let mut y = vec![0x80u8; 34];
    put_f16(&mut y, 0, 1.0);
    let p = vec_dot(Isa::Portable, GgmlType::Q8_0, 32, &w, &y).unwrap();
    for isa in [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|i| i.is_available())
    {
        let s = vec_dot(isa, GgmlType::Q8_0, 32, &w, &y).unwrap();
        assert_eq!(p.to_bits(), s.to_bits(), "{}", isa.name());
        let k = DotKernel::new(isa, GgmlType::Q8_0).unwrap();
        for v in (k.rows4)(32, [&w[..]; 4], &y) {
            assert_eq!(p.to_bits(), v.to_bits(), "{} rows4", isa.name());
        }
    }
}

#[test]
fn wrong_lengths_are_errors_not_panics() {
    let mut out = vec![0f32; 32];
    assert!(matches!(
        dequantize_row(GgmlType::Q4_1, &[0u8; 19], &mut out),
        Err(KernelError::Length { .. })
    ));
    let mut out = vec![0f32; 33];
    assert!(matches!(
        dequantize_row(GgmlType::Q4_1, &[0u8; 20], &mut out),
        Err(KernelError::NotBlockMultiple { .. })
    ));
    assert!(vec_dot(Isa::Portable, GgmlType::Q4_K, 256, &[0u8; 144], &[0u8; 10]).is_err());
    assert!(quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut [0u8; 18]).is_err());
}
