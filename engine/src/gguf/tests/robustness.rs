//! Wholesale abuse of a valid file: every truncation and many deterministic corruptions
//! must yield an error or a usable file, never a panic, hang or huge allocation.

use super::{GgufFile, sample};

/// Everything a caller might touch on a file that parsed, so a corruption that slipped
/// through validation would panic here.
fn exercise(file: &GgufFile) {
    for (key, value) in file.metadata() {
        let _ = (file.get(key), value.type_name(), format!("{value:?}").len());
        let _ = (file.get_u32(key), file.get_f32(key), file.get_str(key));
        let _ = (
            file.get_str_array(key),
            file.get_i32_array(key),
            file.get_f32_array(key),
        );
    }
    for t in file.tensors() {
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
        let _ = (t.n_elements(), t.row_len(), t.n_rows(), t.row_bytes());
    }
}

fn check(bytes: Vec<u8>) -> bool {
    match GgufFile::from_bytes(bytes) {
        Ok(file) => {
            exercise(&file);
            true
        }
        Err(err) => {
            let _ = err.to_string();
            false
        }
    }
}

/// Files whose last bytes are tensor data, so no prefix is a valid file. (A file without
/// tensors may legitimately stop before the padding that precedes an empty data section.)
#[test]
fn every_truncation_is_an_error() {
    for b in [sample(), sample().alignment(64)] {
        let bytes = b.build();
        assert!(check(bytes.clone()));
        for len in 0..bytes.len() {
            let result = GgufFile::from_bytes(bytes[..len].to_vec());
            let Err(err) = result else {
                panic!("a file cut to {len} of {} bytes parsed", bytes.len());
            };
            let _ = err.to_string();
        }
    }
}

/// xorshift64*: deterministic, dependency-free pseudo-randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that tend to break length and count handling.
const INTERESTING_U64: [u64; 8] = [
    0,
    1,
    u64::MAX,
    u64::MAX / 2,
    1 << 32,
    (1 << 32) - 1,
    0x8000_0000_0000_0000,
    4096,
];

#[test]
fn corrupted_bytes_never_panic() {
    let original = sample().build();
    let header_len = GgufFile::from_bytes(original.clone())
        .unwrap()
        .data_offset() as usize;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(3) {
            // Mostly hit the header, metadata and tensor infos, where the structure is.
            let len = if rng.below(8) == 0 {
                bytes.len()
            } else {
                header_len
            };
            let at = rng.below(len);
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => {
                    let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
                _ => {
                    let v = rng.below(16) as u32;
                    let end = (at + 4).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
            }
        }
        if rng.below(4) == 0 {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        parsed += usize::from(check(bytes));
    }
    println!("{parsed} of 20000 corrupted files still parsed");
    // Some corruptions (a flipped data byte, a changed f32) leave a valid file; most must not.
    assert!(parsed > 0 && parsed < 20_000, "{parsed}");
}
