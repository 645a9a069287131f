//! One test per way a GGUF file's tensor infos can be malformed: bad rank, shape or type,
//! partial blocks, and data that is misaligned, past the end of the file or overlapping.

use kernels::GgmlType;

use super::{GgufError, err_of, err_of_builder, small};

#[test]
fn duplicate_tensor() {
    let err = err_of_builder(&small().tensor("a", &[32], GgmlType::Q8_0));
    assert!(matches!(&err, GgufError::DuplicateTensor { tensor, .. } if tensor == "a"));
}

#[test]
fn tensor_rank_must_be_one_to_four() {
    for dims in [&[][..], &[32, 1, 1, 1, 1]] {
        let err = err_of_builder(&small().raw_tensor("t", dims, 0, vec![0; 128]));
        assert!(
            matches!(&err, GgufError::TensorRank { tensor, n_dims, max: 4, .. }
                if tensor == "t" && *n_dims as usize == dims.len()),
            "{err:?}"
        );
    }
    let mut b = small();
    b.tensors[0].dims = vec![1; 1_000_000];
    let err = err_of_builder(&b);
    assert!(
        matches!(
            err,
            GgufError::TensorRank {
                n_dims: 1_000_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn tensor_shape_zero_absurd_or_overflowing() {
    let cases: [(&[u64], u32, &str); 5] = [
        (&[32, 0], 0, "zero"),
        (&[32, 1 << 63], 0, "exceeds i64::MAX"),
        (&[1 << 32, 1 << 32], 0, "element count overflows"),
        (&[1 << 31, 1 << 31, 2], 0, "element count overflows"),
        (&[1 << 62], 0, "byte size overflows"),
    ];
    for (dims, type_id, reason) in cases {
        let err = err_of_builder(&small().raw_tensor("t", dims, type_id, vec![]));
        assert!(
            matches!(&err, GgufError::TensorShape { tensor, reason: r, .. }
                if tensor == "t" && r.contains(reason)),
            "{dims:?}: {err:?}"
        );
    }
}

#[test]
fn unsupported_tensor_types_are_named() {
    let err = err_of_builder(&small().raw_tensor("blk.0.attn_q.weight", &[32], 6, vec![0; 22]));
    assert!(matches!(
        err,
        GgufError::UnsupportedTensorType {
            type_id: 6,
            type_name: Some("Q5_0"),
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "<memory>: tensor blk.0.attn_q.weight has type Q5_0 (id 6), which Oasis does not support"
    );
    let err = err_of_builder(&small().raw_tensor("t", &[32], 99, vec![]));
    assert!(matches!(
        err,
        GgufError::UnsupportedTensorType {
            type_name: None,
            ..
        }
    ));
    assert!(err.to_string().contains("type unknown (id 99)"), "{err}");
    // Activation-only types never appear in a valid model file.
    for t in [GgmlType::Q8_1, GgmlType::Q8_K] {
        let err = err_of_builder(&small().tensor("t", &[256], t));
        assert!(
            matches!(err, GgufError::UnsupportedTensorType { type_name: Some(n), .. }
                if n == t.name()),
            "{err:?}"
        );
    }
}

#[test]
fn rows_must_be_whole_blocks() {
    let cases = [
        (GgmlType::Q4_0, 33u64),
        (GgmlType::Q8_0, 48),
        (GgmlType::Q4_K, 32),
    ];
    for (t, row_len) in cases {
        let err = err_of_builder(&small().raw_tensor("t", &[row_len, 2], t.id(), vec![]));
        assert!(
            matches!(&err, GgufError::PartialBlock { row_len: r, block_len, .. }
                if *r == row_len && *block_len == t.block_len()),
            "{err:?}"
        );
    }
}

#[test]
fn tensor_offset_must_be_aligned() {
    let mut b = small().tensor("b", &[32], GgmlType::F32);
    b.tensors[1].offset = Some(80);
    let err = err_of_builder(&b);
    assert!(
        matches!(&err, GgufError::MisalignedTensor { tensor, offset: 80, alignment: 32, .. }
            if tensor == "b"),
        "{err:?}"
    );
}

#[test]
fn tensor_data_past_end_of_file() {
    let mut bytes = small().build();
    let len = bytes.len() as u64;
    bytes.pop();
    let err = err_of(bytes);
    assert!(
        matches!(&err, GgufError::TensorOutOfBounds { tensor, end, file_len, .. }
            if tensor == "a" && *end == len && *file_len == len - 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("only {} bytes", len - 1)),
        "{err}"
    );

    // An offset so large that offset + size overflows.
    let mut b = small();
    b.tensors[0].offset = Some(u64::MAX - 31);
    let err = err_of_builder(&b);
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { end: u64::MAX, .. }),
        "{err:?}"
    );
}

#[test]
fn overlapping_tensors() {
    let mut b = small().tensor("b", &[32], GgmlType::F32);
    b.tensors[1].offset = Some(32);
    let err = err_of_builder(&b);
    assert!(
        matches!(&err, GgufError::TensorOverlap { tensor, other, .. }
            if tensor == "b" && other == "a"),
        "{err:?}"
    );
}

#[test]
fn truncated_tensor_info_says_which_field() {
    let mut bytes = small().build();
    // Header 24 + key/value 45 = 69, where tensor `a`'s info starts; its data offset field
    // follows the name (9), n_dims (4), dims (16) and type (4), at 102.
    bytes.truncate(105);
    let err = err_of(bytes);
    assert!(
        matches!(&err, GgufError::Truncated { what, offset: 102, needed: 8, available: 3, .. }
            if what == "data offset of tensor `a`"),
        "{err:?}"
    );
}
