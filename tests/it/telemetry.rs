//! Telemetry end to end through the real daemon: no NVIDIA driver on this machine (host
//! metrics, `available: false`), and a replayed trace driving the GPU views and the
//! dcgm-exporter-named metrics.

use std::time::Duration;

use serde_json::json;

use tests::daemon::{Daemon, raw_request};
use tests::workspace_root;

fn metrics(d: &Daemon) -> String {
    String::from_utf8_lossy(&raw_request(&d.addr, "GET", "/metrics", &[], b"").body).into_owned()
}

#[test]
fn without_a_driver_the_daemon_reports_the_host_and_no_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &tmp.path().join("data"),
        &["--telemetry-interval-ms", "100"],
    );
    let (status, sys) = d.get("/admin/v1/system");
    assert_eq!(status, 200, "{sys}");
    assert_eq!(sys["gpu"]["available"], false, "{sys}");
    assert_eq!(sys["gpu"]["source"], "none");
    let reason = sys["gpu"]["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    let host = &sys["host"];
    assert!(host["cpu_count"].as_u64().unwrap() >= 1, "{host}");
    assert!(host["mem_total_bytes"].as_u64().unwrap() > 0);
    assert!(!host["disks"].as_array().unwrap().is_empty());
    let (status, gpus) = d.get("/admin/v1/gpus");
    assert_eq!(status, 200);
    assert_eq!(gpus["available"], false);
    assert!(gpus["gpus"].as_array().unwrap().is_empty());
    // The sampler keeps going.
    std::thread::sleep(Duration::from_millis(350));
    let (_, sys) = d.get("/admin/v1/system");
    assert!(sys["sampler"]["samples"].as_u64().unwrap() >= 3, "{sys}");
    let m = metrics(&d);
    assert!(m.contains("oasis_gpu_available 0"), "{m}");
    assert!(m.contains("oasis_host_memory_total_bytes"));
    assert!(!m.contains("DCGM_FI_DEV_GPU_TEMP"));
}

#[test]
fn a_replayed_trace_drives_the_gpu_views_and_dcgm_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = workspace_root().join("tests/fixtures/telemetry/synthetic-h200x2.jsonl");
    let d = Daemon::start(
        &tmp.path().join("data"),
        &[
            "--telemetry-interval-ms",
            "50",
            "--telemetry-replay",
            trace.to_str().unwrap(),
        ],
    );
    let (_, sys) = d.get("/admin/v1/system");
    assert_eq!(sys["gpu"]["available"], true, "{sys}");
    assert_eq!(sys["gpu"]["source"], "replay");
    assert_eq!(sys["gpu"]["driver"]["cuda_driver_version"], "12.8");
    assert_eq!(sys["gpus"].as_array().unwrap().len(), 2);
    // Within the trace's 20 samples the XID 79 of GPU 1 arrives.
    let mut xid = false;
    for _ in 0..100 {
        let (_, g) = d.get("/admin/v1/gpus");
        assert_eq!(g["gpus"][0]["name"], "NVIDIA H200 (synthetic)");
        if g["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["xid"] == 79 && e["gpu"] == 1)
        {
            xid = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(xid, "the trace's XID 79 never showed");
    // Both GPUs answer in most samples (GPU 1 drops out at samples 15-16 of each loop).
    let m = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            metrics(&d)
        })
        .find(|m| m.contains("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu=\"1\""))
        .unwrap_or_else(|| metrics(&d));
    assert!(m.contains("oasis_gpu_available 1"));
    let temp = m
        .lines()
        .find(|l| {
            l.starts_with(
                "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"GPU-00000000-0000-0000-0000-000000000000\"",
            )
        })
        .unwrap_or_else(|| panic!("{m}"));
    assert!(
        temp.contains("modelName=\"NVIDIA H200 (synthetic)\""),
        "{temp}"
    );
    assert!(m.contains("DCGM_FI_DEV_XID_ERRORS{gpu=\"1\""), "{m}");
    assert!(m.contains("# TYPE DCGM_FI_DEV_FB_USED gauge"));
    assert!(m.contains("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu=\"1\""));

    // promtool: the text parses; the only lint findings are the ones dcgm-exporter's own
    // names and labels carry (kept so its dashboards work), none on Oasis's metrics.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/setup-host installs it)");
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        code == 0 || code == 3,
        "promtool failed to parse /metrics ({code}): {report}"
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("DCGM_FI_"),
            "lint finding on an Oasis metric: {line}"
        );
        assert!(
            line.contains("camelCase")
                || line.contains("\"_total\" suffix")
                || line.contains("should not include type"),
            "unexpected lint finding: {line}"
        );
    }

    // Every metric the shipped Grafana dashboard queries is exported.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/grafana/oasis-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut names = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("DCGM_") || word.starts_with("oasis_") {
                    names.push(word.to_string());
                }
            }
        }
    }
    assert!(names.len() > 10);
    for name in names {
        assert!(
            m.lines()
                .any(|l| l.starts_with(&name) || l.starts_with(&format!("# TYPE {name} "))),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }

    // History from memory: 200 ms buckets of the last few seconds.
    std::thread::sleep(Duration::from_millis(1200));
    let now = d.get("/admin/v1/gpus").1["ts_ms"].as_u64().unwrap();
    let (status, h) = d.get(&format!(
        "/admin/v1/gpus/0/history?from={}&to={now}&step=200",
        now - 3000
    ));
    assert_eq!(status, 200, "{h}");
    let buckets = h["buckets"].as_array().unwrap();
    assert!(buckets.len() >= 5, "{h}");
    for b in buckets {
        let (avg, max) = (
            b["temp_gpu_c_avg"].as_f64().unwrap(),
            b["temp_gpu_c_max"].as_f64().unwrap(),
        );
        assert!(b["samples"].as_u64().unwrap() >= 1 && avg <= max, "{b}");
        assert_eq!(b["ts_ms"].as_u64().unwrap() % 200, (now - 3000) % 200);
    }
    for (query, want) in [
        ("/admin/v1/gpus/0/history?step=10", 400),
        ("/admin/v1/gpus/7/history", 404),
        ("/admin/v1/gpus/zero/history", 400),
        ("/admin/v1/gpus/0/history?from=20&to=10", 400),
        ("/admin/v1/gpus/0/history?bogus=1", 400),
        ("/admin/v1/gpus/0/history?step=-5", 400),
    ] {
        let (status, body) = d.get(query);
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["error"]["message"].is_string(), "{query}: {body}");
    }

    // The live stream: one `sample` event per sample.
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(&d.addr).unwrap();
    conn.write_all(b"GET /admin/v1/telemetry/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut samples = 0;
    for line in BufReader::new(conn).lines() {
        let line = line.unwrap();
        if line == "event: sample" {
            samples += 1;
            if samples == 3 {
                break;
            }
        }
    }
    assert_eq!(samples, 3);
}

#[test]
fn recording_without_a_driver_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tests::oasis(&[
        "telemetry",
        "record",
        "--out",
        tmp.path().join("t.jsonl").to_str().unwrap(),
        "--samples",
        "2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot record") && err.contains("NVIDIA"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn a_bad_trace_stops_the_start_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"type\":\"sample\",\"ts_ms\":1,\"gpus\":[{\"index\":\"zero\"}]}\n",
    )
    .unwrap();
    let out = tests::oasis(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        tmp.path().join("data").to_str().unwrap(),
        "--telemetry-replay",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl") && err.contains("line 1"), "{err}");
}

/// A webhook receiver on 127.0.0.1: records each POSTed JSON body, answers 200.
fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                sink.lock().unwrap().push(v);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn a_replayed_xid_and_heat_raise_and_resolve_alerts_that_reach_a_webhook_and_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let trace = workspace_root().join("tests/fixtures/telemetry/synthetic-h200x2.jsonl");
    let (url, got) = webhook_receiver();
    let d = Daemon::start(
        &data,
        &[
            "--telemetry-interval-ms",
            "50",
            "--telemetry-replay",
            trace.to_str().unwrap(),
            "--alert-webhook",
            &url,
        ],
    );
    let key_state = |alerts: &serde_json::Value, key: &str| -> Option<String> {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["state"].as_str().unwrap().to_string())
    };
    let mut ok = false;
    for _ in 0..200 {
        let (status, alerts) = d.get("/admin/v1/alerts");
        assert_eq!(status, 200);
        let heat = got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["alert"]["key"] == "gpu_temperature:gpu0")
            .map(|v| v["alert"]["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        let missing_hook =
            got.lock().unwrap().iter().any(|v| {
                v["alert"]["key"] == "gpu_missing:gpu1" && v["alert"]["state"] == "firing"
            });
        let xid_hook = got.lock().unwrap().iter().any(|v| {
            v["alert"]["key"] == "xid_critical:gpu1:xid79" && v["alert"]["state"] == "firing"
        });
        if key_state(&alerts, "xid_critical:gpu1:xid79").as_deref() == Some("firing")
            && heat.contains(&"firing".to_string())
            && heat.contains(&"resolved".to_string())
            && xid_hook
            && missing_hook
        {
            let xid = alerts["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "xid_critical:gpu1:xid79")
                .unwrap();
            assert!(
                xid["action"]
                    .as_str()
                    .unwrap()
                    .contains("fallen off the bus"),
                "{xid}"
            );
            assert_eq!(xid["severity"], "critical");
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        ok,
        "alerts: {}\nwebhook: {:?}",
        d.get("/admin/v1/alerts").1,
        got.lock().unwrap()
    );
    // `oasis status` shows the GPUs and the firing alerts.
    let out = tests::stdout_ok(&tests::oasis_with_env(
        &["status"],
        &[("OASIS_URL", d.url.as_str())],
    ));
    assert!(
        out.contains("NVIDIA H200 (synthetic)") && out.contains("driver 570.86.15"),
        "{out}"
    );
    assert!(
        out.contains("xid_critical:gpu1:xid79") && out.contains("fallen off the bus"),
        "{out}"
    );
    // Silencing: the heat alert fires again each time the trace loops, but while silenced
    // no notification of it reaches the webhook; it still shows, marked.
    let heat = "gpu_temperature:gpu0";
    let (status, body) = d.post(
        &format!("/admin/v1/alerts/{heat}/silence"),
        &json!({"minutes": 0}),
    );
    assert_eq!(
        (status, &body["error"]["param"]),
        (400, &json!("minutes")),
        "{body}"
    );
    let (status, body) = d.post(
        "/admin/v1/alerts/no_such:gpu9/silence",
        &json!({"minutes": 5}),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("alert_not_found")),
        "{body}"
    );
    let (status, body) = d.post(
        &format!("/admin/v1/alerts/{heat}/silence"),
        &json!({"minutes": 60}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["silenced_until_ms"].as_u64().unwrap() > body["last_seen_ms"].as_u64().unwrap());
    let fired_at_silence = body["fired"].as_u64().unwrap();
    let hooks_at_silence = got.lock().unwrap().len();
    let refired = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        let (_, alerts) = d.get("/admin/v1/alerts");
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == heat && a["fired"].as_u64().unwrap() > fired_at_silence)
    });
    assert!(
        refired,
        "the heat alert did not fire again: {}",
        d.get("/admin/v1/alerts").1
    );
    let late_heat: Vec<_> = got.lock().unwrap()[hooks_at_silence..]
        .iter()
        .filter(|v| v["alert"]["key"] == heat && v["alert"]["state"] == "firing")
        .cloned()
        .collect();
    assert!(
        late_heat.is_empty(),
        "notified while silenced: {late_heat:?}"
    );
    let (_, alerts) = d.get("/admin/v1/alerts");
    let silenced = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == heat)
        .unwrap();
    assert!(
        silenced["silenced_by"]
            .as_str()
            .unwrap()
            .contains("anonymous"),
        "{silenced}"
    );

    // Alerts survive a crash: the records are in sled, silences included.
    d.kill9();
    let d = Daemon::start(&data, &["--telemetry-interval-ms", "50"]);
    let (_, alerts) = d.get("/admin/v1/alerts");
    assert!(
        key_state(&alerts, "xid_critical:gpu1:xid79").is_some(),
        "{alerts}"
    );
    let kept = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == heat)
        .unwrap();
    assert!(kept["silenced_until_ms"].as_u64().is_some(), "{kept}");
    let (status, body) = raw_delete(&d, &format!("/admin/v1/alerts/{heat}/silence"));
    assert_eq!(status, 200, "{body}");
    assert!(body["silenced_until_ms"].is_null(), "{body}");
}

fn raw_delete(d: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let r = raw_request(&d.addr, "DELETE", path, &[], b"");
    (r.status, r.json())
}

/// The minute aggregates kept for 30 days, through the API: a minute the first daemon
/// sampled is written to sled when the wall clock passes its end; after kill -9 a new
/// daemon on the same data directory (nothing of it in memory) serves that minute from
/// the store with the same sample count, averages and maxima the first one had in memory.
/// Waits for a wall-clock minute boundary (up to a minute).
#[test]
fn a_minute_of_history_outlives_the_process_that_sampled_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let trace = workspace_root().join("tests/fixtures/telemetry/synthetic-h200x2.jsonl");
    let args = [
        "--telemetry-interval-ms",
        "200",
        "--telemetry-replay",
        trace.to_str().unwrap(),
    ];
    let first = Daemon::start(&data, &args);
    let now = first.get("/admin/v1/gpus").1["ts_ms"].as_u64().unwrap();
    let minute = now / 60_000 * 60_000;
    // Past the end of this minute, plus a few samples into the next one.
    std::thread::sleep(Duration::from_millis(minute + 60_000 - now + 1_500));
    let query = format!(
        "/admin/v1/gpus/1/history?from={minute}&to={}&step=60000",
        minute + 59_999
    );
    let (status, in_memory) = first.get(&query);
    assert_eq!(status, 200, "{in_memory}");
    let want = in_memory["buckets"][0].clone();
    assert!(want["samples"].as_u64().unwrap() >= 1, "{in_memory}");
    first.kill9();

    let second = Daemon::start(&data, &args);
    let (status, stored) = second.get(&query);
    assert_eq!(status, 200, "{stored}");
    let got = &stored["buckets"][0];
    assert_eq!(got["ts_ms"], minute, "{stored}");
    for key in ["samples", "temp_gpu_c_max", "power_w_max", "gpu_util_max"] {
        assert_eq!(got[key], want[key], "{key}: stored {got} vs sampled {want}");
    }
    for key in ["temp_gpu_c_avg", "power_w_avg", "mem_used_bytes_avg"] {
        let (a, b) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{key}: {a} vs {b}"
        );
    }
}
