//! The web console in a real browser: the daemon serves the built front end at `/`, and
//! Playwright drives Debian's Chromium through every screen against the real daemon (a
//! telemetry replay trace, SmolLM2 and a small MoE model): pairing with the printed code,
//! live GPU charts, an alert from the trace, an import with its progress bar, a key created
//! in the browser and used with curl, its usage, the expert heatmap and a rebalance, the
//! profile report, the audit log, and the Chinese interface. Screenshots of every screen go
//! to `target/console-screenshots/`. Then the daemon's own records are checked for what the
//! browser did.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{Daemon, raw_request};
use tests::{model_path, workspace_root};

use crate::security::{admin_token, req};

/// The screens the browser script saves, each checked to exist and hold a real picture.
const SCREENSHOTS: &[&str] = &[
    "connect",
    "overview",
    "gpus",
    "gpus-silenced",
    "models-importing",
    "models-fit",
    "models",
    "keys-created",
    "usage",
    "experts",
    "profile",
    "audit",
    "overview-zh",
];

/// What the browser test needs that is not Rust: the built console, its node modules and
/// Chromium. Missing ones fail with the command that provides them.
fn browser_prerequisites(ui: &Path) -> PathBuf {
    assert!(
        ui.join("dist/index.html").is_file(),
        "the web console is not built: run `npm ci && npm run build` in desktop-ui/ (scripts/test does)"
    );
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in desktop-ui/ (scripts/test does)"
    );
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        chromium.is_file(),
        "Chromium is missing at {}: `apt-get install chromium` (scripts/setup-host does)",
        chromium.display()
    );
    chromium
}

/// The console's files come with their types, the security headers and the right caching;
/// API paths keep their JSON errors and nothing outside the folder is reachable.
fn check_static_serving(d: &Daemon) {
    let index = raw_request(&d.addr, "GET", "/", &[], b"");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = index.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8_lossy(&index.body).into_owned();
    let script = html
        .split('"')
        .find(|s| s.contains("assets/") && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("no script in index.html: {html}"));
    let script = format!(
        "/{}",
        script.trim_start_matches("./").trim_start_matches('/')
    );
    let js = raw_request(&d.addr, "GET", &script, &[], b"");
    assert_eq!(js.status, 200, "{script}");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let head = raw_request(&d.addr, "HEAD", &script, &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for path in [
        "/../Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/%2e%2e/index.html",
        "/no-such-file.js",
    ] {
        let r = raw_request(&d.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "unknown_url", "{path}");
    }
    let api = raw_request(&d.addr, "GET", "/admin/v1/nothing", &[], b"");
    assert_eq!(api.status, 404);
    assert_eq!(api.header("content-type"), Some("application/json"));
    let post = raw_request(&d.addr, "POST", "/", &[], b"");
    assert_eq!(post.status, 404);
}

/// Runs the Playwright script, its output streamed into the test's; fails on a non-zero
/// exit or past `limit`.
fn run_browser_script(ui: &Path, env: &[(&str, String)], limit: Duration) -> String {
    let mut cmd = Command::new("node");
    cmd.arg("e2e/console.e2e.mjs")
        .current_dir(ui)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (apt-get install nodejs npm): {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    println!("{stdout}");
    match status {
        Some(s) if s.success() => stdout,
        Some(s) => panic!("the browser test failed ({s}):\n{stdout}\n{stderr}"),
        None => panic!("the browser test ran past {limit:?}:\n{stdout}\n{stderr}"),
    }
}

#[test]
fn the_console_pairs_and_drives_every_screen_in_a_real_browser() {
    let root = workspace_root();
    let ui = root.join("desktop-ui");
    let chromium = browser_prerequisites(&ui);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The model to import sits on a "USB disk" outside the store.
    let usb = tmp.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let import = usb.join("smollm2-usb.gguf");
    std::fs::copy(model_path(), &import).unwrap();
    let fixtures = root.join("tests/fixtures");
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let model = path(model_path());
    let moe = path(fixtures.join("tiny-moe/qwen2-moe"));
    let trace = path(fixtures.join("telemetry/synthetic-h200x2.jsonl"));
    let inventory = path(fixtures.join("inventories/hgx-h200-8-power-limit.json"));
    let dist = path(ui.join("dist"));
    let d = Daemon::start(
        &data,
        &[
            "--threads",
            "2",
            "--kv-cache-bytes",
            "33554432",
            "--model",
            &model,
            "--model",
            &moe,
            "--telemetry-replay",
            &trace,
            "--telemetry-interval-ms",
            "500",
            "--inventory",
            &inventory,
            "--console-dir",
            &dist,
        ],
    );
    check_static_serving(&d);

    let code = std::fs::read_to_string(data.join("pairing.code"))
        .unwrap()
        .trim()
        .to_string();
    let shots = root.join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    run_browser_script(
        &ui,
        &[
            ("OASIS_URL", d.url.clone()),
            ("OASIS_PAIRING_CODE", code),
            ("OASIS_IMPORT_PATH", path(import.clone())),
            ("OASIS_CHAT_MODEL", "SmolLM2-135M-Instruct.Q4_1".to_string()),
            ("OASIS_SCREENSHOTS", path(shots.clone())),
            ("CHROMIUM_PATH", path(chromium)),
        ],
        Duration::from_secs(600),
    );

    for name in SCREENSHOTS {
        let png = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&png)
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", png.display()))
            .len();
        assert!(len > 10_000, "{} is only {len} bytes", png.display());
    }

    // The daemon's own records show what was done in the browser.
    let admin = admin_token(&data);
    let get = |p: &str| -> Value {
        let r = req(&d, "GET", p, Some(&admin), &Value::Null);
        assert_eq!(r.status, 200, "{p}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let keys = get("/admin/v1/keys");
    let keys = keys["data"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["role"] == "admin" && k["revoked_at"].is_null()),
        "the pairing made no admin key: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| !k["revoked_at"].is_null()),
        "no key was revoked in the browser: {keys:?}"
    );
    let models = get("/admin/v1/models");
    let imported = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["in_store"] == true)
        .unwrap_or_else(|| panic!("the import is not in the catalog: {models}"));
    assert!(
        !imported["deployed_as"].as_array().unwrap().is_empty(),
        "the imported model was not deployed: {imported}"
    );
    let audit = get("/admin/v1/audit");
    assert_eq!(audit["chain_ok"], true, "{audit}");
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "auth.pair",
        "model.import",
        "deployment.create",
        "key.create",
        "key.revoke",
        "alert.silence",
        "alert.unsilence",
        "engine.rebalance",
    ] {
        assert!(
            actions.contains(&action),
            "no {action} in the audit log: {actions:?}"
        );
    }
    // The USB file is untouched by the import.
    assert_eq!(
        std::fs::metadata(&import).unwrap().len(),
        std::fs::metadata(model_path()).unwrap().len()
    );
}
