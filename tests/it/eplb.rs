//! The expert-parallel load balancer against DeepSeek's reference (`eplb.py`): the
//! fixture's cases and the reference README's example, through the library and through
//! `oasis eplb`.

use engine::eplb::{Placement, policy_name, rebalance_experts};
use serde_json::{Value, json};
use tests::{fixture_json, oasis, stdout_ok};

/// The example in the EPLB repository's README.
fn readme_input() -> Value {
    json!({
        "weight": [
            [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
            [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]
        ],
        "num_replicas": 16, "num_groups": 4, "num_nodes": 2, "num_gpus": 8
    })
}

/// The README example with one edit, as file text.
fn readme_edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut input = readme_input();
    edit(&mut input);
    input.to_string()
}

const README_PHY2LOG: [[usize; 16]; 2] = [
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
];

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Runs the library on an input document.
fn balance(input: &Value) -> Placement {
    let weight: Vec<Vec<f64>> = serde_json::from_value(input["weight"].clone()).unwrap();
    rebalance_experts(
        &weight,
        usize_of(&input["num_replicas"]),
        usize_of(&input["num_groups"]),
        usize_of(&input["num_nodes"]),
        usize_of(&input["num_gpus"]),
    )
    .unwrap()
}

#[test]
fn matches_the_reference_on_every_fixture_case() {
    let doc = fixture_json("eplb/reference.json");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    let mut policies = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let input = &case["input"];
        let p = balance(input);
        let policy = policy_name(
            usize_of(&input["num_groups"]),
            usize_of(&input["num_nodes"]),
        );
        assert_eq!(policy, case["policy"], "case {i}: policy");
        assert_eq!(json!(p.phy2log), case["phy2log"], "case {i}: phy2log");
        assert_eq!(json!(p.log2phy), case["log2phy"], "case {i}: log2phy");
        assert_eq!(json!(p.logcnt), case["logcnt"], "case {i}: logcnt");
        policies.push(policy);
    }
    // Both policies are covered.
    assert!(policies.contains(&"hierarchical") && policies.contains(&"global"));
}

#[test]
fn readme_example() {
    let p = balance(&readme_input());
    assert_eq!(p.phy2log, README_PHY2LOG.map(Vec::from).to_vec());
}

#[test]
fn cli_prints_the_placement_as_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loads.json");
    std::fs::write(&path, readme_input().to_string()).unwrap();
    let out = stdout_ok(&oasis(&["eplb", "--input", path.to_str().unwrap()]));
    assert_eq!(out.lines().count(), 1, "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let p = balance(&readme_input());
    assert_eq!(doc["policy"], "hierarchical");
    assert_eq!(doc["phy2log"], json!(README_PHY2LOG));
    assert_eq!(doc["log2phy"], json!(p.log2phy));
    assert_eq!(doc["logcnt"], json!(p.logcnt));
    let balance = doc["balance"].as_array().unwrap();
    assert_eq!(balance.len(), 2);
    assert!(
        balance
            .iter()
            .all(|b| (1.0..2.0).contains(&b.as_f64().unwrap())),
        "{balance:?}"
    );
}

#[test]
fn cli_rejects_bad_input_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated.json",
            "{\"weight\": [[1, 2".into(),
            "not a valid input",
        ),
        (
            "array.json",
            "[[[1, 2]], 2, 1, 1, 1]".into(),
            "expected a JSON object",
        ),
        (
            "types.json",
            readme_edited(|v| v["num_gpus"] = json!("eight")),
            "`num_gpus`: invalid type",
        ),
        (
            "missing.json",
            json!({"weight": [[1, 2]]}).to_string(),
            "missing field",
        ),
        (
            "invalid.json",
            readme_edited(|v| v["num_replicas"] = json!(18)),
            "`num_replicas` (18) must be a multiple of `num_gpus` (8)",
        ),
        (
            "negative.json",
            readme_edited(|v| v["weight"][1][3] = json!(-5)),
            "`weight[1][3]` is -5",
        ),
    ];
    let mut runs = Vec::new();
    for (name, text, needle) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        runs.push((
            oasis(&["eplb", "--input", path.to_str().unwrap()]),
            *needle,
            path,
        ));
    }
    let missing = dir.path().join("absent.json");
    runs.push((
        oasis(&["eplb", "--input", missing.to_str().unwrap()]),
        "cannot open",
        missing,
    ));
    for (out, needle, path) in runs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert!(out.stdout.is_empty(), "{needle}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{err:?} lacks the file name"
        );
    }
}
