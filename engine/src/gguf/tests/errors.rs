//! One test per way a GGUF file's header or metadata can be malformed: each checks the
//! error variant, its structured fields, and that the message says what and where.

use super::writer::{Builder, put_u32, put_u64, raw_kv};
use super::{GgufError, GgufFile, Value, err_of, err_of_builder, small};
use crate::gguf::Array;

#[test]
fn bad_magic_says_not_gguf_and_shows_the_bytes() {
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.resize(64, 0);
    let err = err_of(bytes);
    assert!(matches!(
        err,
        GgufError::BadMagic {
            found: [b'P', b'K', 3, 4],
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("not a GGUF file") && msg.contains(r"PK\x03\x04"),
        "{msg}"
    );
}

#[test]
fn file_shorter_than_header() {
    for bytes in [
        &b""[..],
        b"GG",
        b"GGUF",
        b"GGUF\x03\0\0\0\x01\0\0\0\0\0\0\0\0",
    ] {
        let err = err_of(bytes.to_vec());
        assert!(
            matches!(err, GgufError::TooShort { len, needed: 24, .. } if len == bytes.len() as u64),
            "{err:?}"
        );
    }
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, 1000] {
        let mut b = small();
        b.version = version;
        let err = err_of_builder(&b);
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: v, .. } if v == version),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("version {version} is not supported"))
        );
    }
}

#[test]
fn big_endian_is_detected() {
    for version in [1u32, 2, 3] {
        let mut bytes = small().build();
        bytes[4..8].copy_from_slice(&version.to_be_bytes());
        let err = err_of(bytes);
        assert!(matches!(err, GgufError::BigEndian { version: v, .. } if v == version));
        assert!(err.to_string().contains("big-endian GGUF"), "{err}");
    }
}

#[test]
fn truncated_key_says_what_and_where() {
    let mut bytes = small().build();
    // Header (24) + key length (8) + 8 of the 20 bytes of "general.architecture".
    bytes.truncate(40);
    let err = err_of(bytes);
    assert!(
        matches!(&err, GgufError::Truncated { what, offset: 32, needed: 20, available: 8, .. }
            if what == "metadata key #0"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("metadata key #0 at offset 32"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_in_key_and_value() {
    let mut key = Vec::new();
    put_u64(&mut key, 2);
    key.extend_from_slice(&[0xff, 0xfe]);
    put_u32(&mut key, 0);
    key.push(1);
    let err = err_of_builder(&Builder::new().raw_kv(key));
    assert!(
        matches!(&err, GgufError::InvalidUtf8 { what, offset: 32, .. } if what == "metadata key #0"),
        "{err:?}"
    );

    let mut value = Vec::new();
    put_u64(&mut value, 2);
    value.extend_from_slice(&[0xc3, 0x28]);
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 8, &value)));
    assert!(matches!(&err, GgufError::InvalidUtf8 { what, .. } if what.contains("`k`")));
}

#[test]
fn unknown_value_type() {
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 13, &[0; 8])));
    assert!(
        matches!(&err, GgufError::UnknownValueType { key, type_id: 13, offset: 33, .. }
            if key == "k"),
        "{err:?}"
    );
    // As an array's element type.
    let mut array = Vec::new();
    put_u32(&mut array, 99);
    put_u64(&mut array, 1);
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 9, &array)));
    assert!(
        matches!(err, GgufError::UnknownValueType { type_id: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn bool_must_be_zero_or_one() {
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 7, &[2])));
    assert!(
        matches!(
            err,
            GgufError::InvalidBool {
                byte: 2,
                offset: 37,
                ..
            }
        ),
        "{err:?}"
    );
    let mut array = Vec::new();
    put_u32(&mut array, 7);
    put_u64(&mut array, 3);
    array.extend_from_slice(&[1, 0, 7]);
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 9, &array)));
    assert!(
        matches!(
            err,
            GgufError::InvalidBool {
                byte: 7,
                offset: 51,
                ..
            }
        ),
        "{err:?}"
    );
}

fn nested(depth: usize) -> Array {
    (1..depth).fold(Array::U8(vec![1]), |inner, _| Array::Array(vec![inner]))
}

#[test]
fn array_nesting_is_bounded() {
    let ok = Builder::new().kv("k", Value::Array(nested(4)));
    assert!(GgufFile::from_bytes(ok.build()).is_ok());
    let err = err_of_builder(&Builder::new().kv("k", Value::Array(nested(5))));
    assert!(
        matches!(err, GgufError::NestingTooDeep { max_depth: 4, .. }),
        "{err:?}"
    );
    // Deep enough to overflow the stack if the bound were missing (written raw: the test
    // writer itself recurses).
    let mut array = Vec::new();
    for _ in 0..100_000 {
        put_u32(&mut array, 9);
        put_u64(&mut array, 1);
    }
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 9, &array)));
    assert!(matches!(err, GgufError::NestingTooDeep { .. }), "{err:?}");
}

/// Each of these would abort the test process (allocation failure) if a count were
/// allocated for before being checked against the file's size.
#[test]
fn huge_counts_are_rejected_before_allocating() {
    let mut b = small();
    b.kv_count = Some(u64::MAX);
    let err = err_of_builder(&b);
    assert!(matches!(
        err,
        GgufError::CountTooLarge {
            count: u64::MAX,
            offset: 16,
            ..
        }
    ));
    let mut b = small();
    b.tensor_count = Some(1 << 40);
    let err = err_of_builder(&b);
    assert!(
        matches!(err, GgufError::CountTooLarge { offset: 8, .. }),
        "{err:?}"
    );

    for elem_type in [0u32, 10, 8, 9] {
        let mut array = Vec::new();
        put_u32(&mut array, elem_type);
        put_u64(&mut array, u64::MAX / 2);
        let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 9, &array)));
        assert!(
            matches!(&err, GgufError::CountTooLarge { what, offset: 41, .. }
                if what.contains("array length")),
            "{err:?}"
        );
    }
    let mut string = Vec::new();
    put_u64(&mut string, u64::MAX);
    let err = err_of_builder(&Builder::new().raw_kv(raw_kv("k", 8, &string)));
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                needed: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn alignment_must_be_a_power_of_two_u32() {
    for bad in [0u32, 3, 48] {
        let err = err_of_builder(&small().kv("general.alignment", Value::U32(bad)));
        assert!(
            matches!(err, GgufError::BadAlignment { alignment, .. } if alignment == u64::from(bad))
        );
        assert!(err.to_string().contains("power of two"), "{err}");
    }
    let err = err_of_builder(&small().kv("general.alignment", Value::String("32".into())));
    assert!(matches!(
        err,
        GgufError::MetadataType {
            expected: "u32",
            got: "string",
            ..
        }
    ));
    let err = err_of_builder(&small().kv("general.alignment", Value::I32(-32)));
    assert!(
        matches!(err, GgufError::MetadataOutOfRange { .. }),
        "{err:?}"
    );
    // Any integer type holding a valid value is accepted.
    let file = GgufFile::from_bytes(small().kv("general.alignment", Value::U64(32)).build());
    assert_eq!(file.unwrap().alignment(), 32);
}

#[test]
fn duplicate_key() {
    let err = err_of_builder(&small().kv("general.architecture", Value::U8(1)));
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, .. } if key == "general.architecture"),
        "{err:?}"
    );
}
