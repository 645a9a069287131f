//! Fit estimates through `oasis model fit`: the footprint counted from a checkpoint's
//! config.json equals the one read from its tensors, and DeepSeek-V3's config sized on
//! the written 8x H200 and 8x H20 inventories gives the hand-computed figures (see
//! `appliance-daemon/src/fit.rs` for the arithmetic).

use serde_json::Value;
use tests::{model_path, oasis, workspace_root};

fn fit(args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["model", "fit", "--json"];
    all.extend_from_slice(args);
    let out = oasis(&all);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.success(),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(rel: &str) -> String {
    workspace_root().join(rel).to_string_lossy().into_owned()
}

/// For every architecture, counting parameters from config.json alone gives exactly the
/// tensors' count; FP8 experts (weights and block scales) give exactly their bytes.
#[test]
fn the_config_alone_counts_what_the_tensors_hold() {
    for name in [
        "qwen3-moe",
        "qwen2-moe",
        "mixtral",
        "deepseek-v3",
        "deepseek-v3-fp8",
        "deepseek-v3-yarn-legacy",
    ] {
        let dir = path(&format!("tests/fixtures/tiny-moe/{name}"));
        let (ok, files, err) = fit(&[&dir]);
        assert!(ok, "{name}: {err}");
        let (ok, config, err) = fit(&[&format!("{dir}/config.json")]);
        assert!(ok, "{name}: {err}");
        let (a, b) = (&files["footprint"], &config["footprint"]);
        assert_eq!(a["parameters"], b["parameters"], "{name}");
        assert_eq!(
            a["cache_values_per_token"], b["cache_values_per_token"],
            "{name}"
        );
        assert_eq!(a["n_experts"], b["n_experts"], "{name}");
        if name == "deepseek-v3-fp8" {
            assert_eq!(a["expert_bytes"], b["expert_bytes"], "{name}");
        }
    }
}

#[test]
fn deepseek_v3_on_eight_h200_and_eight_h20() {
    let config = path("tests/fixtures/configs/deepseek-v3.json");
    let inv = |n: &str| path(&format!("tests/fixtures/inventories/{n}.json"));
    let (ok, doc, err) = fit(&[&config, "--inventory", &inv("hgx-h200-8")]);
    assert!(ok, "{err}");
    assert_eq!(doc["profile"], "hgx-h200-8");
    assert_eq!(doc["footprint"]["parameters"], 671_026_419_200u64);
    assert_eq!(doc["fit"]["sequences"], 1048);
    assert_eq!(
        doc["fit"]["summary"],
        "fits on 8 GPUs with EP8: 1048 concurrent sequences of 4096 tokens (weights 100.8 GB per GPU, KV cache 37.8 GB per GPU)"
    );
    let (ok, doc, err) = fit(&[&config, "--inventory", &inv("hgx-h20-8")]);
    assert!(!ok);
    assert_eq!(
        doc["fit"]["summary"],
        "does not fit on 8 GPUs with EP8: needs 837.2 GB, has 816.6 GB (weights 100.8 GB and overhead 3.5 GB per GPU of 102.1 GB free)"
    );
    assert!(
        err.contains("error: the model does not fit this box under the `hgx-h20-8` profile"),
        "{err}"
    );
    // Half the context, the same box: twice the sequences, within one per GPU.
    let (_, doc, _) = fit(&[
        &config,
        "--inventory",
        &inv("hgx-h200-8"),
        "--context",
        "2048",
    ]);
    assert_eq!(doc["fit"]["sequences"], 2096);
}

#[test]
fn the_default_model_on_the_cpu_profile() {
    let model = model_path().to_string_lossy().into_owned();
    let (ok, doc, err) = fit(&[
        &model,
        "--inventory",
        &path("tests/fixtures/inventories/cpu-dev.json"),
    ]);
    assert!(ok, "{err}");
    let f = &doc["fit"];
    assert_eq!(f["target"], "host");
    // 30 layers x 192 key/value dims x (key + value) x 2 bytes (f16) x 4096 tokens.
    assert_eq!(f["kv_bytes_per_sequence"], 30 * 192 * 2 * 2 * 4096);
    let kv = f["kv_bytes_per_rank"].as_u64().unwrap();
    assert_eq!(
        f["sequences"].as_u64().unwrap(),
        kv / (30 * 192 * 2 * 2 * 4096)
    );
    // 0.10 of the 20 GiB available, less the weights and overhead.
    assert!(kv < (20u64 << 30) / 10 && kv > (19u64 << 30) / 10, "{f}");
    let out = oasis(&["model", "fit", &model, "--context", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--context must be at least 1 token"),
        "{err}"
    );
}

/// The daemon sizes its served models on the box under the profile it selected.
#[test]
fn the_daemon_sizes_a_served_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_path().to_string_lossy().into_owned();
    let d = tests::daemon::Daemon::start(
        &dir.path().join("data"),
        &[
            "--model",
            &model,
            "--threads",
            "2",
            "--inventory",
            &path("tests/fixtures/inventories/cpu-dev.json"),
        ],
    );
    let id = "SmolLM2-135M-Instruct.Q4_1";
    let (status, doc) = d.get(&format!("/admin/v1/models/{id}/fit?context=2048"));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["profile"], "cpu-dev");
    assert_eq!(doc["fit"]["fits"], true);
    assert_eq!(doc["fit"]["kv_bytes_per_sequence"], 30 * 192 * 2 * 2 * 2048);
    // The same as `oasis model fit` on the same file and inventory.
    let (_, offline, _) = fit(&[
        &model,
        "--inventory",
        &path("tests/fixtures/inventories/cpu-dev.json"),
        "--context",
        "2048",
    ]);
    assert_eq!(doc["fit"], offline["fit"]);
    // Disk use: the model is used in place (outside this daemon's store) and served.
    let (status, st) = d.get("/admin/v1/storage");
    assert_eq!(status, 200, "{st}");
    let size = std::fs::metadata(&model).unwrap().len();
    assert_eq!(st["models"][0]["id"], id, "{st}");
    assert_eq!(st["models"][0]["bytes"], size, "{st}");
    assert_eq!(st["models"][0]["in_store"], false, "{st}");
    assert_eq!(st["models"][0]["served"], true, "{st}");
    assert_eq!(st["models_in_place_bytes"], size, "{st}");
    assert_eq!(st["models_in_store_bytes"], 0, "{st}");
    assert!(st["state_bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(st["volume"]["free_bytes"].as_u64().unwrap() > 0, "{st}");
    let env = [("OASIS_URL", d.url.as_str())];
    let show = tests::stdout_ok(&tests::oasis_with_env(&["model", "show", id], &env));
    assert!(show.contains("fits in the host's memory:"), "{show}");
    assert!(show.contains("(profile cpu-dev)"), "{show}");
    let storage = tests::stdout_ok(&tests::oasis_with_env(&["model", "storage"], &env));
    assert!(storage.contains("in place, served"), "{storage}");
    for (query, want) in [
        (format!("/admin/v1/models/{id}/fit?context=0"), 400),
        (format!("/admin/v1/models/{id}/fit?bogus=1"), 400),
        ("/admin/v1/models/nope/fit".to_string(), 404),
    ] {
        let (status, doc) = d.get(&query);
        assert_eq!(status, want, "{query}: {doc}");
        assert!(doc["error"]["message"].is_string(), "{doc}");
    }
    // Undeployed, the catalog model is sized from its files: the same figures.
    let r = tests::daemon::raw_request(
        &d.addr,
        "DELETE",
        &format!("/admin/v1/deployments/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (status, cold) = d.get(&format!("/admin/v1/models/{id}/fit?context=2048"));
    assert_eq!(status, 200, "{cold}");
    assert_eq!(cold["model"], id);
    assert_eq!(cold["fit"], doc["fit"]);
}
