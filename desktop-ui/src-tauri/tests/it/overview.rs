//! The real app showing a real box: a daemon replaying two H200s' telemetry is paired
//! through the app's own commands (on the mock runtime), its token kept in the kernel's
//! session keyring; then the real app binary, started with the same config folder and
//! token store, opens on that box's Overview and polls it with the paired key. A
//! screenshot of it is kept as `target/desktop-screenshots/tauri-overview.png`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use desktop_ui::{TokenStore, TokenStoreKind};
use serde_json::{Value, json};
use tests::daemon::Daemon;

use crate::commands::{cert_fingerprint, invoke, pairing_code, start_app};
use crate::window::{
    assert_drawn_and_running, check_prerequisites, keep_screenshot, screenshot, spawn_app,
    start_xvfb, wait_for_window,
};

/// The calls only the Overview makes, each needing the key (after pairing the daemon no
/// longer lets anonymous loopback calls in): once all have answered 200, the Overview is
/// on screen with the box's data.
const OVERVIEW_CALLS: [&str; 4] = [
    "/admin/v1/status",
    "/admin/v1/gpus",
    "/admin/v1/alerts",
    "/admin/v1/deployments",
];

/// Deletes the box's token from the session keyring when dropped, so a failed test leaves
/// no key behind either.
struct ForgetToken(String);

impl Drop for ForgetToken {
    fn drop(&mut self) {
        let _ = TokenStore::new(TokenStoreKind::Keyutils).delete(&self.0);
    }
}

/// The tokens must reach a second process: keyutils' session keyring does that here and
/// in CI. A machine without it fails this test with the reason, never skips it.
fn require_keyutils() {
    let store = TokenStore::new(TokenStoreKind::Keyutils);
    let probe = format!("overview-probe-{}", std::process::id());
    let kept = store.set(&probe, "probe").and_then(|()| store.get(&probe));
    let _ = store.delete(&probe);
    match kept {
        Ok(Some(t)) if t == "probe" => {}
        other => panic!(
            "this test needs the kernel's keyutils session keyring, so that the app process \
             can read the token the test pairs with, and it does not work here ({other:?}); \
             a container may filter the keyctl system calls (Docker's default seccomp profile \
             allows them)"
        ),
    }
}

/// `(path, status)` of every request the daemon answered, from its JSON log.
fn answered(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "finished processing request")
        .filter_map(|entry| {
            let path = entry["span"]["path"].as_str()?.to_string();
            let status = entry["fields"]["status"].as_u64()?;
            Some((path, status))
        })
        .collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_app_shows_the_overview_of_a_paired_box() {
    check_prerequisites();
    require_keyutils();
    let started = Instant::now();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let fixtures = repo_root().join("tests/fixtures");
    let trace = fixtures.join("telemetry/synthetic-h200x2.jsonl");
    let inventory = fixtures.join("inventories/hgx-h200-8-power-limit.json");
    let daemon = Daemon::start_with_env(
        &data,
        &[
            "--tls",
            "on",
            "--telemetry-replay",
            trace.to_str().unwrap(),
            "--telemetry-interval-ms",
            "500",
            "--inventory",
            inventory.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        // tower-http logs each answered request (path, status) at debug.
        &[("OASIS_LOG", "info,tower_http=debug")],
    );

    // Pair as the Connect screen does: probe, then pair with the probed fingerprint.
    let config = tmp.path().join("config");
    let (app, window) = start_app(&config, Some(TokenStoreKind::Keyutils));
    let probe = invoke(&window, "box_probe", json!({ "address": daemon.addr })).unwrap();
    let fingerprint = cert_fingerprint(&data);
    assert_eq!(probe["fingerprint"], fingerprint.as_str(), "{probe}");
    let entry = invoke(
        &window,
        "box_pair",
        json!({ "address": daemon.addr, "fingerprint": fingerprint,
                "code": pairing_code(&data), "name": "overview test" }),
    )
    .unwrap();
    let id = entry["id"].as_str().unwrap().to_string();
    let _forget = ForgetToken(id.clone());
    assert_eq!(entry["token_store"], "keyutils", "{entry}");
    assert_eq!(entry["paired"], true, "{entry}");
    // What the Overview should show: the replayed GPUs.
    let gpus = invoke(
        &window,
        "api_request",
        json!({ "boxId": id, "method": "GET", "path": "/admin/v1/gpus", "body": null }),
    )
    .unwrap();
    let names: Vec<&str> = gpus["body"]["gpus"]
        .as_array()
        .unwrap_or_else(|| panic!("no GPUs: {gpus}"))
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["NVIDIA H200 (synthetic)"; 2], "{gpus}");
    drop(window);
    drop(app);
    let paired_at = answered(&daemon.log()).len();
    let paired_s = started.elapsed().as_secs_f64();

    // The real app, another process, with the same box list and token store.
    let (_xvfb, display) = start_xvfb();
    let log_path = tmp.path().join("app.log");
    let mut app = spawn_app(&display, &config, "keyutils", &log_path);
    let app_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for_window(&display, &mut app, &app_log);
    let window_s = started.elapsed().as_secs_f64();

    // The app polls the Overview's calls with the paired key.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let log = daemon.log();
        let calls = answered(&log);
        let ok: BTreeSet<&str> = calls[paired_at..]
            .iter()
            .filter(|(_, status)| *status == 200)
            .map(|(path, _)| path.as_str())
            .collect();
        if OVERVIEW_CALLS.iter().all(|p| ok.contains(p)) {
            break;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited ({status}):\n{}", app_log());
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s the app had not made all of {OVERVIEW_CALLS:?} with its key; \
             the daemon answered {:?}\napp log:\n{}",
            &calls[paired_at..],
            app_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let polled_s = started.elapsed().as_secs_f64();

    // Answers reach the screen on the next paint; charts and fonts settle within a second
    // or two. The replay advances every 500 ms, so a few polls have landed by then.
    std::thread::sleep(Duration::from_secs(3));
    let shot = tmp.path().join("overview.png");
    let colours = screenshot(&display, &shot);
    let kept = keep_screenshot(&shot, "tauri-overview.png");
    assert_drawn_and_running(colours, &kept, &mut app, &app_log);
    drop(app);

    // Forget the box through the app, as the Connect screen does; its key goes with it.
    let (app, window) = start_app(&config, Some(TokenStoreKind::Keyutils));
    assert_eq!(
        invoke(&window, "box_remove", json!({ "id": id })),
        Ok(Value::Null)
    );
    assert_eq!(
        TokenStore::new(TokenStoreKind::Keyutils).get(&id).unwrap(),
        None
    );
    drop(window);
    drop(app);
    eprintln!(
        "daemon up and box paired at {paired_s:.1} s, window at {window_s:.1} s, Overview \
         calls answered at {polled_s:.1} s, done at {:.1} s; screenshot {}",
        started.elapsed().as_secs_f64(),
        kept.display()
    );
}
