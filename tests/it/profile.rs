//! Firmware profiles through the real binary: `oasis profile check` on this machine and
//! on the written inventories of each SKU (`tests/fixtures/inventories/`), `apply` as a
//! dry run and its refusals, and the daemon's start: the selected profile, its policy and
//! the engine plan it takes its defaults from.

use serde_json::Value;
use tests::daemon::Daemon;
use tests::{model_path, oasis, workspace_root};

fn inventory(name: &str) -> String {
    workspace_root()
        .join("tests/fixtures/inventories")
        .join(format!("{name}.json"))
        .to_string_lossy()
        .into_owned()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn check_on_this_machine_selects_the_cpu_profile_and_passes() {
    let out = oasis(&["profile", "check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("`cpu-dev` is the only profile that matches this box"),
        "{text}"
    );
    assert!(
        text.contains("Profile cpu-dev (CPU-only development box)"),
        "{text}"
    );
    assert!(
        text.contains("Engine plan: 1 rank, KV cache 10% of the host's available memory"),
        "{text}"
    );
    let doc = json_of(&oasis(&["profile", "check", "--json"]));
    assert_eq!(doc["profile"], "cpu-dev");
    // A machine without AVX2/FMA/F16C warns (the portable kernels run); nothing fails.
    for c in doc["report"]["checks"].as_array().unwrap() {
        let ok =
            c["verdict"] == "pass" || (c["verdict"] == "warn" && c["id"] == "host.cpu_features");
        assert!(ok, "{c}");
    }
    assert_eq!(doc["plan"]["ranks"], 1);
    assert_eq!(doc["plan"]["max_batch_tokens"], 512);
}

/// Each SKU's inventory selects its profile with the expected verdict, and the exit
/// status says whether the box fails.
#[test]
fn each_inventory_selects_its_sku_with_the_right_verdict() {
    for (inv, profile, verdict) in [
        ("hgx-h200-8", "hgx-h200-8", "pass"),
        ("hgx-h100-8", "hgx-h100-8", "pass"),
        ("hgx-h20-8", "hgx-h20-8", "pass"),
        ("l40s-4", "l40s-4", "pass"),
        ("rtx4090-8", "rtx4090-8", "pass"),
        ("h200-1", "h200-1", "pass"),
        ("cpu-dev", "cpu-dev", "pass"),
        ("hgx-h200-8-gpu-missing", "hgx-h200-8", "fail"),
        ("hgx-h200-8-old-driver", "hgx-h200-8", "fail"),
        ("hgx-h200-8-ecc-off", "hgx-h200-8", "fail"),
        ("hgx-h200-8-power-limit", "hgx-h200-8", "warn"),
    ] {
        let out = oasis(&["profile", "check", "--json", "--inventory", &inventory(inv)]);
        let doc = json_of(&out);
        assert_eq!(doc["profile"], profile, "{inv}: {}", doc["how"]);
        assert_eq!(
            doc["report"]["verdict"], verdict,
            "{inv}: {}",
            doc["report"]
        );
        assert_eq!(out.status.success(), verdict != "fail", "{inv}");
    }
    let out = oasis(&["profile", "check", "--inventory", &inventory("a100-2")]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no profile matches this box"), "{text}");
    assert!(
        text.contains("l40s-4: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x26b9"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: no firmware profile matches this box"),
        "{err}"
    );
}

#[test]
fn the_report_names_the_failure_and_what_to_do() {
    let out = oasis(&[
        "profile",
        "check",
        "--inventory",
        &inventory("hgx-h200-8-old-driver"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  software.driver            expected >= 550.54.14; found 535.129.03"),
        "{text}"
    );
    assert!(
        text.contains("-> install an NVIDIA data-center driver"),
        "{text}"
    );
    assert!(
        text.contains("Verdict: FAIL (15 passed, 0 warnings, 2 failures)"),
        "{text}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: this box fails the `hgx-h200-8` profile's check"
    );
}

#[test]
fn apply_dry_run_lists_each_change_and_a_real_apply_is_guarded() {
    let inv = inventory("hgx-h200-8-power-limit");
    let out = oasis(&[
        "profile",
        "apply",
        "--dry-run",
        "--json",
        "--inventory",
        &inv,
    ]);
    let doc = json_of(&out);
    assert!(out.status.success());
    let changes: Vec<String> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "GPU {} {} {} -> {} {}",
                c["gpu"], c["setting"]["setting"], c["before"], c["after"], c["result"]
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            r#"GPU 2 "power_limit_w" "500 W" -> "700 W" "dry_run""#,
            r#"GPU 3 "persistence" "off" -> "on" "dry_run""#
        ]
    );
    let text = String::from_utf8_lossy(
        &oasis(&["profile", "apply", "--dry-run", "--inventory", &inv]).stdout,
    )
    .into_owned();
    assert!(
        text.contains("GPU 2   power_limit    500 W -> 700 W  dry run"),
        "{text}"
    );

    // A recorded inventory is another box: only a dry run may use it.
    let out = oasis(&["profile", "apply", "--inventory", &inv]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only --dry-run can use it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without root, a real apply is refused before anything is read or set.
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if setpriv.exists() && root {
        let out = std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(tests::oasis_bin())
            .args(["profile", "apply", "--profile", "cpu-dev"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("needs root (running as uid 65534)"), "{err}");
    }
}

/// The written inventories each pass through the daemon: the profile it picks, the
/// engine plan it takes, the report it serves.
#[test]
fn the_daemon_takes_its_engine_defaults_from_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--inventory",
            &inventory("hgx-h200-8"),
            "--max-running",
            "4",
        ],
    );
    let (status, doc) = d.get("/admin/v1/profile");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["profile"]["id"], "hgx-h200-8");
    assert_eq!(doc["origin"], "builtin:hgx-h200-8.toml");
    assert_eq!(doc["policy"], "warn");
    assert_eq!(doc["report"]["verdict"], "pass");
    assert_eq!(doc["report_at_start"]["verdict"], "pass");
    assert_eq!(doc["candidates"].as_array().unwrap().len(), 7);
    let engine: Vec<String> = doc["engine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} = {} ({})",
                s["key"].as_str().unwrap(),
                s["value"],
                s["source"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        engine,
        [
            "ranks = 8 (profile hgx-h200-8)",
            "kv_cache_bytes = 2147483648 (profile hgx-h200-8)",
            "max_batch_tokens = 16384 (profile hgx-h200-8)",
            "max_running = 4 (flag or OASIS_* variable)",
            "weight_precision = \"fp8\" (profile hgx-h200-8)",
        ]
    );
    assert!(
        doc["engine"][1]["note"]
            .as_str()
            .unwrap()
            .contains("on a GPU, 0.85 of the memory free after each model's weights"),
        "{}",
        doc["engine"][1]
    );
    let log = d.log();
    assert!(
        log.contains("engine plan: ranks 8 (profile hgx-h200-8)"),
        "{log}"
    );
    let env = [("OASIS_URL", d.url.as_str())];
    let status = tests::stdout_ok(&tests::oasis_with_env(&["status"], &env));
    assert!(
        status.contains(
            "profile: hgx-h200-8 (8x NVIDIA H200 SXM 141GB (HGX H200)), PASS, policy warn"
        ),
        "{status}"
    );
}

#[test]
fn on_the_cpu_profile_the_kv_cache_is_its_share_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_path().to_string_lossy().into_owned();
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--model",
            &model,
            "--threads",
            "2",
            "--inventory",
            &inventory("cpu-dev"),
        ],
    );
    let (_, doc) = d.get("/admin/v1/profile");
    assert_eq!(doc["profile"]["id"], "cpu-dev");
    let kv = &doc["engine"][1];
    assert_eq!(kv["source"], "profile cpu-dev", "{kv}");
    let bytes = kv["value"].as_u64().unwrap();
    // SmolLM2-135M: 30 layers x 192 key/value dims x (key + value) x 2 bytes x 64
    // positions per block.
    let per_block = 30 * 192 * 2 * 2 * 64;
    let resp = tests::daemon::raw_request(&d.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let blocks: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("oasis_kv_blocks{model=\"SmolLM2-135M-Instruct.Q4_1\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no oasis_kv_blocks in\n{text}"));
    assert_eq!(blocks, (bytes / per_block).max(128), "{kv}");
}

#[test]
fn refuse_stops_a_failing_or_unknown_box_and_apply_lists_changes_on_a_recorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = |inv: &str| {
        let out = std::process::Command::new(tests::oasis_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join(inv))
            .args(["--inventory", &inventory(inv), "--profile-policy", "refuse"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{inv} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refuse("hgx-h200-8-ecc-off");
    assert!(
        err.contains(
            "this box fails its firmware profile's check and `profile_policy` is `refuse`"
        ),
        "{err}"
    );
    assert!(err.contains("FAIL  gpu.ecc"), "{err}");
    let err = refuse("a100-2");
    assert!(
        err.contains("no firmware profile matches this box and `profile_policy` is `refuse`"),
        "{err}"
    );

    let d = Daemon::start(
        &dir.path().join("apply"),
        &[
            "--inventory",
            &inventory("hgx-h200-8-power-limit"),
            "--profile-policy",
            "apply",
        ],
    );
    let (_, doc) = d.get("/admin/v1/profile");
    let applied: Vec<(u64, String)> = doc["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["gpu"].as_u64().unwrap(),
                o["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(applied, [(2, "dry_run".into()), (3, "dry_run".into())]);
    assert_eq!(doc["report"]["verdict"], "warn");
    // Nothing was changed, so nothing is in the audit log.
    assert!(!dir.path().join("apply/audit.jsonl").exists());
}

#[test]
fn a_bad_or_unknown_profile_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = firmware_builtin("cpu-dev.toml").replace("ranks = 1", "ranks = 0");
    std::fs::write(&bad, text).unwrap();
    let start = |profile: &str| {
        let out = std::process::Command::new(tests::oasis_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--profile", profile])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = start(bad.to_str().unwrap());
    assert!(
        err.contains(&format!(
            "{}:21: engine.ranks: must be between 1 and 64, got 0",
            bad.display()
        )),
        "{err}"
    );
    let err = start("hgx-b300-8");
    assert!(
        err.contains("no profile `hgx-b300-8`; known profiles: hgx-h200-8, "),
        "{err}"
    );
}

/// A profile's health thresholds become the alert rules: a profile that calls 30 °C hot
/// raises a temperature alert on the replayed trace's 45 °C GPUs.
#[test]
fn the_profiles_health_thresholds_drive_the_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let hot = dir.path().join("hot.toml");
    std::fs::write(
        &hot,
        firmware_builtin("h200-1.toml")
            .replace("id = \"h200-1\"", "id = \"hot-h200\"")
            .replace("gpu_temp_max_c = 85", "gpu_temp_max_c = 30"),
    )
    .unwrap();
    let trace = workspace_root().join("tests/fixtures/telemetry/synthetic-h200x2.jsonl");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--profile",
            hot.to_str().unwrap(),
            "--inventory",
            &inventory("h200-1"),
            "--telemetry-replay",
            trace.to_str().unwrap(),
            "--telemetry-interval-ms",
            "50",
        ],
    );
    let mut seen = None;
    for _ in 0..200 {
        let (_, alerts) = d.get("/admin/v1/alerts");
        seen = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "gpu_temperature:gpu0")
            .cloned();
        if seen.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let alert = seen.expect("no temperature alert under a 30 °C limit");
    assert!(
        alert["message"].as_str().unwrap().ends_with("(limit 30 C)"),
        "{alert}"
    );
}

fn firmware_builtin(name: &str) -> String {
    std::fs::read_to_string(
        workspace_root()
            .join("firmware-profiles/profiles")
            .join(name),
    )
    .unwrap()
}
