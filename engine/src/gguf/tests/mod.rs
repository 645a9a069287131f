//! Tests of the GGUF reader: well-formed files round-trip through [`writer`], each defect
//! has a test in [`errors`] or [`tensor_errors`], [`robustness`] truncates and corrupts files wholesale, and the
//! last test here reads the real SmolLM2 model when it is present.

mod errors;
mod robustness;
mod tensor_errors;
mod writer;

use std::io::Write;
use std::path::Path;

use kernels::GgmlType;

use super::{Array, GgufError, GgufFile, Value};
use writer::{Builder, Kv};

/// A file with every value type, nested arrays, and tensors of every supported storage
/// type, of sizes that need padding between them.
fn sample() -> Builder {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Builder::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("t.u8", Value::U8(200))
        .kv("t.i8", Value::I8(-100))
        .kv("t.u16", Value::U16(60_000))
        .kv("t.i16", Value::I16(-30_000))
        .kv("t.u32", Value::U32(4_000_000_000))
        .kv("t.i32", Value::I32(-2_000_000_000))
        .kv("t.u64", Value::U64(1 << 40))
        .kv("t.i64", Value::I64(-(1 << 40)))
        .kv("t.f32", Value::F32(1.5))
        .kv("t.f64", Value::F64(-2.25))
        .kv("t.bool", Value::Bool(true))
        .kv("t.string", Value::String("héllo ✓".into()))
        .kv("t.a_u8", Value::Array(Array::U8(vec![1, 2, 255])))
        .kv("t.a_i8", Value::Array(Array::I8(vec![-1, 2])))
        .kv("t.a_u16", Value::Array(Array::U16(vec![1, 65_535])))
        .kv("t.a_i16", Value::Array(Array::I16(vec![-1, 300])))
        .kv("t.a_u32", Value::Array(Array::U32(vec![7, u32::MAX])))
        .kv("t.a_i32", Value::Array(Array::I32(vec![1, 3, -6])))
        .kv("t.a_u64", Value::Array(Array::U64(vec![u64::MAX])))
        .kv("t.a_i64", Value::Array(Array::I64(vec![-5, 5])))
        .kv("t.a_f32", Value::Array(Array::F32(vec![0.5, -1e-3])))
        .kv("t.a_f64", Value::Array(Array::F64(vec![1e300])))
        .kv("t.a_bool", Value::Array(Array::Bool(vec![true, false])))
        .kv("t.a_str", Value::Array(Array::String(s(&["a", "", "ß"]))))
        .kv("t.a_empty", Value::Array(Array::F32(vec![])))
        .kv(
            "t.a_nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, -2]),
                Array::String(s(&["x"])),
                Array::Array(vec![Array::Array(vec![Array::Bool(vec![false])])]),
            ])),
        )
        .tensor("token_embd.weight", &[64, 4], GgmlType::Q8_0)
        .tensor("blk.0.attn_q.weight", &[32, 3], GgmlType::Q4_1)
        .tensor("blk.0.ffn_up.weight", &[256, 2], GgmlType::Q4_K)
        .tensor("blk.0.ffn_down.weight", &[256, 1], GgmlType::Q5_K)
        .tensor("output.weight", &[256, 1], GgmlType::Q6_K)
        .tensor("output_norm.weight", &[5], GgmlType::F32)
        .tensor("x.f16", &[3, 2], GgmlType::F16)
        .tensor("x.bf16", &[2, 1, 2, 1], GgmlType::BF16)
        .tensor("x.q4_0", &[32, 1], GgmlType::Q4_0)
}

pub(super) fn err_of(bytes: Vec<u8>) -> GgufError {
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    // Every message must render, and name the source.
    assert!(err.to_string().starts_with("<memory>: "), "{err}");
    err
}

pub(super) fn err_of_builder(b: &Builder) -> GgufError {
    err_of(b.build())
}

/// A small valid file to break: one key, one tensor.
pub(super) fn small() -> Builder {
    Builder::new()
        .kv("general.architecture", Value::String("llama".into()))
        .tensor("a", &[32, 2], GgmlType::Q8_0)
}

fn parse(b: &Builder) -> GgufFile {
    GgufFile::from_bytes(b.build()).unwrap()
}

fn check_matches_builder(file: &GgufFile, b: &Builder) {
    let expected: Vec<(&str, &Value)> = b
        .kvs
        .iter()
        .map(|kv| match kv {
            Kv::Value(k, v) => (k.as_str(), v),
            Kv::Raw(_) => panic!("raw kv in round-trip fixture"),
        })
        .collect();
    assert_eq!(file.metadata().collect::<Vec<_>>(), expected);
    assert_eq!(file.tensors().len(), b.tensors.len());
    for (info, spec) in file.tensors().iter().zip(&b.tensors) {
        assert_eq!(info.name, spec.name);
        assert_eq!(info.dims, spec.dims);
        assert_eq!(info.ggml_type.id(), spec.type_id);
        assert_eq!(info.n_bytes, spec.data.len() as u64, "{}", info.name);
        assert_eq!(info.offset % file.alignment() as u64, 0);
        assert_eq!(file.tensor_data(info), &spec.data[..], "{}", info.name);
        assert_eq!(file.tensor(&info.name), Some(info));
    }
    assert_eq!(file.data_offset() % file.alignment() as u64, 0);
}

#[test]
fn round_trip_keeps_values_order_and_tensor_data() {
    let b = sample();
    let file = parse(&b);
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    check_matches_builder(&file, &b);
    assert_eq!(file.tensor("missing"), None);
    assert_eq!(file.get("missing"), None);
}

#[test]
fn version_2_is_read() {
    let mut b = sample();
    b.version = 2;
    let file = parse(&b);
    assert_eq!(file.version(), 2);
    check_matches_builder(&file, &b);
}

#[test]
fn custom_alignment_lays_out_data() {
    let b = sample().alignment(256);
    let file = parse(&b);
    assert_eq!(file.alignment(), 256);
    check_matches_builder(&file, &b);
}

#[test]
fn empty_file_with_no_metadata_or_tensors_parses() {
    let file = parse(&Builder::new());
    assert_eq!(file.metadata().count(), 0);
    assert!(file.tensors().is_empty());
}

#[test]
fn tensor_info_shape_helpers() {
    let file = parse(&sample());
    let t = file.tensor("token_embd.weight").unwrap();
    assert_eq!((t.n_elements(), t.row_len(), t.n_rows()), (256, 64, 4));
    assert_eq!(t.row_bytes(), 68);
    let t = file.tensor("x.bf16").unwrap();
    assert_eq!((t.n_elements(), t.row_len(), t.n_rows()), (4, 2, 2));
    let t = file.tensor("output_norm.weight").unwrap();
    assert_eq!((t.n_elements(), t.row_len(), t.n_rows()), (5, 5, 1));
}

#[test]
fn integer_getters_accept_any_fitting_integer_type() {
    let file = parse(&sample());
    assert_eq!(file.get_u32("t.u8").unwrap(), Some(200));
    assert_eq!(file.get_u64("t.u32").unwrap(), Some(4_000_000_000));
    assert_eq!(file.get_i64("t.i8").unwrap(), Some(-100));
    assert_eq!(file.get_i32("t.i16").unwrap(), Some(-30_000));
    assert_eq!(file.get_usize("t.u64").unwrap(), Some(1 << 40));
    assert_eq!(file.get_i64("t.i64").unwrap(), Some(-(1 << 40)));
    assert_eq!(file.get_f32("t.f32").unwrap(), Some(1.5));
    assert_eq!(file.get_f32("t.f64").unwrap(), Some(-2.25));
    assert_eq!(file.get_f64("t.f32").unwrap(), Some(1.5));
    assert_eq!(file.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(file.get_str("t.string").unwrap(), Some("héllo ✓"));
    assert_eq!(file.get_str("general.architecture").unwrap(), Some("llama"));
}

#[test]
fn getters_answer_none_for_absent_keys() {
    let file = parse(&sample());
    assert_eq!(file.get_u32("nope").unwrap(), None);
    assert_eq!(file.get_f32("nope").unwrap(), None);
    assert_eq!(file.get_bool("nope").unwrap(), None);
    assert_eq!(file.get_str("nope").unwrap(), None);
    assert_eq!(file.get_str_array("nope").unwrap(), None);
    assert_eq!(file.get_i32_array("nope").unwrap(), None);
    assert_eq!(file.get_f32_array("nope").unwrap(), None);
}

#[test]
fn getters_report_wrong_type_and_out_of_range() {
    let file = parse(&sample());
    let err = file.get_u32("t.string").unwrap_err();
    assert!(
        matches!(&err, GgufError::MetadataType { key, expected: "u32", got: "string", .. }
            if key == "t.string"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("`t.string` should be u32, but is string"),
        "{err}"
    );
    let err = file.get_u32("t.i8").unwrap_err();
    assert!(matches!(&err, GgufError::MetadataOutOfRange { value, .. } if value == "-100"));
    assert!(matches!(
        file.get_u32("t.u64"),
        Err(GgufError::MetadataOutOfRange { .. })
    ));
    assert!(matches!(
        file.get_i32("t.u32"),
        Err(GgufError::MetadataOutOfRange { .. })
    ));
    assert!(matches!(
        file.get_f32("t.u32"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_bool("t.u8"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_str("t.a_str"),
        Err(GgufError::MetadataType {
            got: "array of string",
            ..
        })
    ));
    assert!(matches!(
        file.get_array("t.u8"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_str_array("t.a_i32"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_f32_array("t.a_i32"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_i32_array("t.a_str"),
        Err(GgufError::MetadataType { .. })
    ));
    assert!(matches!(
        file.get_i32_array("t.i32"),
        Err(GgufError::MetadataType { .. })
    ));
    let err = file.get_i32_array("t.a_u64").unwrap_err();
    assert!(err.to_string().contains("(element 0)"), "{err}");
    assert!(matches!(
        file.get_u32_array("t.a_i8"),
        Err(GgufError::MetadataOutOfRange { .. })
    ));
}

#[test]
fn array_getters() {
    let file = parse(&sample());
    assert_eq!(
        file.get_str_array("t.a_str").unwrap(),
        Some(vec!["a", "", "ß"])
    );
    assert_eq!(file.get_i32_array("t.a_i32").unwrap(), Some(vec![1, 3, -6]));
    assert_eq!(file.get_i32_array("t.a_u8").unwrap(), Some(vec![1, 2, 255]));
    assert_eq!(
        file.get_u32_array("t.a_u32").unwrap(),
        Some(vec![7, u32::MAX])
    );
    assert_eq!(
        file.get_f32_array("t.a_f32").unwrap(),
        Some(vec![0.5, -1e-3])
    );
    assert_eq!(file.get_f32_array("t.a_empty").unwrap(), Some(vec![]));
    assert_eq!(
        file.get_array("t.a_nested").unwrap().map(Array::len),
        Some(3)
    );
    assert_eq!(
        file.get("t.a_nested").map(Value::type_name),
        Some("array of array")
    );
}

#[test]
fn open_maps_the_file_like_from_bytes() {
    let b = sample();
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(&b.build()).unwrap();
    tmp.flush().unwrap();
    let file = GgufFile::open(tmp.path()).unwrap();
    assert_eq!(file.path(), tmp.path());
    check_matches_builder(&file, &b);
    assert!(format!("{file:?}").contains("mapped: true"));
}

#[test]
fn open_reports_missing_file_with_its_path() {
    let err = GgufFile::open(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn open_reports_short_and_empty_files() {
    for contents in [&b""[..], b"GGUF\x03\0\0\0"] {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(contents).unwrap();
        let err = GgufFile::open(tmp.path()).unwrap_err();
        assert!(matches!(err, GgufError::TooShort { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&tmp.path().display().to_string()),
            "{err}"
        );
    }
}

/// The model the integration tests serve; checked here against facts `gguf-dump` shows.
#[test]
fn smollm2_q4_1_model() {
    let path = Path::new("/root/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        println!("skipping: {} is absent", path.display());
        return;
    }
    let file = GgufFile::open(path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(file.get_u32("llama.block_count").unwrap(), Some(30));
    let t = file.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (t.ggml_type, t.dims.as_slice()),
        (GgmlType::Q8_0, &[576, 49152][..])
    );
    assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
    let t = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (t.ggml_type, t.dims.as_slice()),
        (GgmlType::Q4_1, &[576, 576][..])
    );
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .unwrap();
    assert_eq!(tokens.len(), 49152);
}
