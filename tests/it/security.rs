//! Keys, roles, limits, metering and the audit log through the real daemon: every route
//! against every kind of caller, exact rate limits and quotas, usage equal to what the
//! clients were told, across a kill -9, a chained audit log that shows tampering, and
//! tokens that never reach the log.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tests::daemon::{Daemon, RawResponse, raw_request};
use tests::{model_path, oasis_with_env};

pub(crate) fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

pub(crate) fn req(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    raw_request(&d.addr, method, path, &headers, &bytes)
}

/// Creates a key with the admin token; (id, token).
pub(crate) fn create_key(d: &Daemon, admin: &str, body: Value) -> (String, String) {
    let r = req(d, "POST", "/admin/v1/keys", Some(admin), &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

fn chat(d: &Daemon, token: Option<&str>, max_tokens: u32) -> RawResponse {
    let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": max_tokens, "temperature": 0});
    req(d, "POST", "/v1/chat/completions", token, &body)
}

fn start(data: &Path) -> Daemon {
    let model = model_path();
    Daemon::start_with_env(
        data,
        &[
            "--threads",
            "2",
            "--kv-cache-bytes",
            "33554432",
            "--model",
            model.to_str().unwrap(),
        ],
        &[("OASIS_LOG", "debug")],
    )
}

#[test]
fn every_route_against_every_kind_of_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = start(&data);
    let admin = admin_token(&data);
    assert!(admin.starts_with("oasis-") && admin.len() == 70, "{admin}");
    // A fresh install: loopback clients need no key yet.
    assert_eq!(
        req(&d, "GET", "/admin/v1/status", None, &Value::Null).status,
        200
    );
    assert_eq!(chat(&d, None, 2).status, 200);
    // Nor one it knows (the OpenAI SDK always sends something).
    assert_eq!(
        req(
            &d,
            "GET",
            "/admin/v1/status",
            Some("sk-unused"),
            &Value::Null
        )
        .status,
        200
    );

    let (_, user) = create_key(&d, &admin, json!({"name": "team a"}));
    let (_, viewer) = create_key(&d, &admin, json!({"name": "auditors", "role": "viewer"}));
    let (_, admin2) = create_key(&d, &admin, json!({"name": "ops", "role": "admin"}));
    let (revoked_id, revoked) = create_key(&d, &admin, json!({"name": "gone"}));
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let (_, expired) = create_key(&d, &admin, json!({"name": "temp", "expires_at": soon}));
    assert_eq!(chat(&d, Some(&revoked), 2).status, 200);
    let r = req(
        &d,
        "DELETE",
        &format!("/admin/v1/keys/{revoked_id}"),
        Some(&admin2),
        &Value::Null,
    );
    assert_eq!(r.status, 200);
    // Revocation takes effect on the next request.
    let r = chat(&d, Some(&revoked), 2);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "revoked_api_key");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        chat(&d, Some(&expired), 2).json()["error"]["code"],
        "expired_api_key"
    );
    // Keys exist now: no key, no entry, loopback or not.
    let r = req(&d, "GET", "/admin/v1/status", None, &Value::Null);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // Every documented route, every caller.
    let doc = req(&d, "GET", "/openapi.json", None, &Value::Null).json();
    let callers: [(&str, Option<&str>); 7] = [
        ("none", None),
        (
            "bad",
            Some("oasis-0000000000000000000000000000000000000000000000000000000000000000"),
        ),
        ("expired", Some(&expired)),
        ("revoked", Some(&revoked)),
        ("viewer", Some(&viewer)),
        ("user", Some(&user)),
        ("admin", Some(&admin)),
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = method.to_uppercase();
            let concrete = path
                .replace("{id}", "nope")
                .replace("{name}", "nope")
                .replace("{index}", "0");
            let open = [
                "/healthz",
                "/readyz",
                "/metrics",
                "/openapi.json",
                "/admin/v1/pair",
            ]
            .contains(&path.as_str());
            let class = if open {
                "open"
            } else if path.starts_with("/admin/") {
                if m == "GET" { "read" } else { "write" }
            } else {
                "inference"
            };
            for (who, token) in &callers {
                let want: &[u16] = match (class, *who) {
                    ("open", _) => &[],
                    (_, "none" | "bad" | "expired" | "revoked") => &[401],
                    ("inference", "viewer") | ("read", "user") | ("write", "viewer" | "user") => {
                        &[403]
                    }
                    _ => &[],
                };
                // Streams that never end are only checked where they are refused.
                let endless = path == "/admin/v1/telemetry/stream";
                if endless && want.is_empty() {
                    continue;
                }
                let body = if m == "GET" || m == "DELETE" {
                    Value::Null
                } else {
                    json!({})
                };
                let r = req(&d, &m, &concrete, *token, &body);
                if want.is_empty() {
                    assert!(
                        r.status != 401 && r.status != 403,
                        "{m} {concrete} as {who}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                } else {
                    assert!(
                        want.contains(&r.status),
                        "{m} {concrete} as {who}: want {want:?}, got {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                    assert!(
                        r.json()["error"]["message"].is_string(),
                        "{m} {concrete} as {who}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "{checked}");
    // A key limited to other models may not use this one.
    let (_, narrow) = create_key(&d, &admin, json!({"name": "narrow", "models": ["other"]}));
    let r = chat(&d, Some(&narrow), 2);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");

    // No token ever reaches the log, at debug level.
    let log = d.log();
    for t in [&admin, &user, &viewer, &admin2, &revoked, &expired, &narrow] {
        assert!(!log.contains(t.as_str()), "a token is in the log");
        assert!(!log.contains(&t[6..]), "a token's secret is in the log");
    }
    // Nor in the state database or the audit log.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(&user[6..]));
}

#[test]
fn limits_and_quotas_are_exact_and_usage_is_what_clients_were_told() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = start(&data);
    let admin = admin_token(&data);
    let (rpm_id, rpm) = create_key(&d, &admin, json!({"name": "rpm3", "rpm": 3}));
    let (quota_id, quota) = create_key(&d, &admin, json!({"name": "quota", "tokens_per_day": 120}));
    let (busy_id, busy) = create_key(&d, &admin, json!({"name": "busy"}));

    // Requests per minute: exactly three.
    for _ in 0..3 {
        assert_eq!(chat(&d, Some(&rpm), 2).status, 200);
    }
    let r = chat(&d, Some(&rpm), 2);
    assert_eq!(r.status, 429);
    let e = r.json();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["param"].as_str()),
        (Some("rate_limit_exceeded"), Some("rpm")),
        "{e}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "{retry}");

    // Tokens per day: a request is admitted while what the key used plus its prompt and
    // one token of answer fit the quota (its `max_tokens` lowered to what is left), and
    // refused from the first one that does not: the quota is never passed.
    let mut used = 0u64;
    let mut n = 0;
    loop {
        let r = chat(&d, Some(&quota), 8);
        if r.status == 429 {
            let e = r.json();
            assert_eq!(e["error"]["code"], "insufficient_quota", "{e}");
            assert_eq!(e["error"]["param"], "tokens_per_day");
            let msg = e["error"]["message"].as_str().unwrap();
            assert!(msg.contains(&format!("used {used} of its 120")), "{msg}");
            let p: u64 = msg
                .split("needs ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                used + p + 1 > 120,
                "refused with {used} used and a prompt of {p}"
            );
            break;
        }
        assert_eq!(r.status, 200);
        let u = &r.json()["usage"];
        let p = u["prompt_tokens"].as_u64().unwrap();
        assert!(
            used + p < 120,
            "admitted with {used} used and a prompt of {p}"
        );
        used += u["total_tokens"].as_u64().unwrap();
        assert!(used <= 120, "the quota was passed: {used}");
        n += 1;
        assert!(n < 20, "the quota never applied");
    }
    assert!(n >= 2, "{n}");

    // Four clients at once on one key: the metered totals are the sum of what they got.
    let sums: Vec<(u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let (d, busy) = (&d, &busy);
                s.spawn(move || {
                    let mut p = 0;
                    let mut c = 0;
                    for j in 0..4 {
                        let r = chat(d, Some(busy), 3 + (i + j) % 5);
                        assert_eq!(r.status, 200);
                        let u = &r.json()["usage"];
                        p += u["prompt_tokens"].as_u64().unwrap();
                        c += u["completion_tokens"].as_u64().unwrap();
                    }
                    (p, c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (p, c) = sums.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let by_key = |d: &Daemon| -> Value {
        let r = req(
            d,
            "GET",
            "/admin/v1/usage?group_by=key",
            Some(&admin),
            &Value::Null,
        );
        assert_eq!(r.status, 200);
        r.json()
    };
    let row = |doc: &Value, id: &str| -> Value {
        doc["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let doc = by_key(&d);
    let b = row(&doc, &busy_id);
    assert_eq!(
        (
            b["requests"].as_u64(),
            b["prompt_tokens"].as_u64(),
            b["completion_tokens"].as_u64()
        ),
        (Some(16), Some(p), Some(c)),
        "{b}"
    );
    assert_eq!(b["name"], "busy");
    assert_eq!(row(&doc, &quota_id)["total_tokens"].as_u64(), Some(used));
    assert_eq!(row(&doc, &rpm_id)["requests"].as_u64(), Some(3));

    // kill -9 in the middle of a load: every answer a client got was counted; at most the
    // requests in flight when it died were counted without their client hearing back.
    let per = prompt_of(&d, &admin) + 6;
    let (crash_id, crash) = create_key(&d, &admin, json!({"name": "crash"}));
    let addr = d.addr.clone();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::sync::atomic::AtomicU64::new(0);
    let mut d = Some(d);
    let told = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (addr, crash, stop, answered) = (addr.clone(), crash.clone(), &stop, &answered);
                s.spawn(move || {
                    let mut got = (0u64, 0u64);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Some(r) = try_chat(&addr, &crash) else {
                            break;
                        };
                        if r.status != 200 {
                            break;
                        }
                        got.0 += 1;
                        got.1 += r.json()["usage"]["total_tokens"].as_u64().unwrap_or(0);
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    got
                })
            })
            .collect();
        // Kill once a few answers are out (however slow the machine), with more in flight.
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 4
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(d) = d.take() {
            d.kill9();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let d = start(&data);
    let c = row(&by_key(&d), &crash_id);
    let (requests, tokens) = (
        c["requests"].as_u64().unwrap_or(0),
        c["total_tokens"].as_u64().unwrap_or(0),
    );
    assert!(told.0 >= 1, "no request finished before the kill");
    assert!(
        requests >= told.0 && requests <= told.0 + 4,
        "{requests} counted, {} answered",
        told.0
    );
    assert!(
        tokens >= told.1 && tokens <= told.1 + 4 * per,
        "{tokens} counted, {} told",
        told.1
    );
    // What was counted before stays counted, and the quota still holds.
    d.kill9();
    let d = start(&data);
    let after = by_key(&d);
    assert_eq!(row(&after, &busy_id), b);
    assert_eq!(row(&after, &quota_id)["total_tokens"].as_u64(), Some(used));
    assert_eq!(chat(&d, Some(&quota), 8).status, 429);
    // By model and day, and as CSV, the same totals.
    let r = req(
        &d,
        "GET",
        "/admin/v1/usage?group_by=model",
        Some(&admin),
        &Value::Null,
    );
    let total: u64 = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    let keys_total: u64 = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(total, keys_total);
    let r = req(
        &d,
        "GET",
        "/admin/v1/usage?group_by=day&format=csv",
        Some(&admin),
        &Value::Null,
    );
    let csv = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        csv.starts_with("day,name,requests,") && csv.contains(&format!(",{keys_total},")),
        "{csv}"
    );
    let r = req(
        &d,
        "GET",
        "/admin/v1/usage?group_by=colour",
        Some(&admin),
        &Value::Null,
    );
    assert_eq!(r.status, 400);
    // The CLI on the box reads the same.
    let env = [
        ("OASIS_URL", d.url.as_str()),
        ("OASIS_TOKEN", admin.as_str()),
    ];
    let out = oasis_with_env(&["usage"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("(busy)"), "{text}");
}

/// The prompt tokens of the test chat request (asked with the admin token).
fn prompt_of(d: &Daemon, admin: &str) -> u64 {
    let r = chat(d, Some(admin), 1);
    assert_eq!(r.status, 200);
    r.json()["usage"]["prompt_tokens"].as_u64().unwrap()
}

/// The test chat request with at most 6 tokens; `None` once the daemon is gone.
fn try_chat(addr: &str, token: &str) -> Option<RawResponse> {
    use std::io::{Read, Write};
    let body = json!({"model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 6, "temperature": 0})
    .to_string();
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        headers: Vec::new(),
        body: rest.as_bytes().to_vec(),
    })
}

#[test]
fn the_audit_log_records_admin_actions_in_a_chain_that_shows_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = start(&data);
    let admin = admin_token(&data);
    let env = [
        ("OASIS_URL", d.url.as_str()),
        ("OASIS_TOKEN", admin.as_str()),
    ];
    // Keys from the CLI on the box.
    let out = oasis_with_env(
        &["key", "create", "--name", "team b", "--rpm", "5", "--json"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = k["id"].as_str().unwrap();
    assert_eq!(k["limits"]["rpm"], 5);
    let out = oasis_with_env(&["key", "list"], &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("team b"));
    assert!(
        oasis_with_env(&["key", "revoke", id], &env)
            .status
            .success()
    );
    let out = oasis_with_env(&["key", "list"], &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    // Usage, read by the CLI as the API's types, as a table and as CSV.
    let out = oasis_with_env(&["usage", "--group-by", "model"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("by model"), "{text}");
    let out = oasis_with_env(&["usage", "--group-by", "day", "--csv"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("day,name,requests,"),
        "{text}"
    );
    // A refused admin action is recorded with its outcome.
    let r = req(
        &d,
        "POST",
        "/admin/v1/deployments",
        Some(&admin),
        &json!({"model": "nope"}),
    );
    assert_eq!(r.status, 422);
    let r = req(&d, "GET", "/admin/v1/audit", Some(&admin), &Value::Null);
    let doc = r.json();
    assert_eq!(doc["chain_ok"], true, "{doc}");
    let actions: Vec<&str> = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.revoke", "deployment.create"],
        "{doc}"
    );
    let last = &doc["data"][2];
    assert!(
        last["detail"]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("refused (422)"),
        "{last}"
    );
    assert!(
        last["actor"].as_str().unwrap().contains("local admin"),
        "{last}"
    );
    assert_eq!(last["detail"]["from"], "127.0.0.1");
    let dd = data.to_str().unwrap();
    let out = oasis_with_env(&["audit", "verify", "--data-dir", dd], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 entries"));
    // The daemon's view of the same entries, read by the CLI as the API's types.
    let out = oasis_with_env(&["audit", "list"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("key.revoke") && text.contains("refused (422)"),
        "{text}"
    );

    // Change one entry's outcome: the chain breaks there.
    let path = data.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"key.revoke\"", "\"key.rotate\"", 1)).unwrap();
    let out = oasis_with_env(&["audit", "verify", "--data-dir", dd], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2 does not match its hash"), "{err}");
    let doc = req(&d, "GET", "/admin/v1/audit", Some(&admin), &Value::Null).json();
    assert_eq!(doc["chain_ok"], false);
    let out = oasis_with_env(&["audit", "list"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("chain is broken"),
        "{err}"
    );
    // A pairing code from the CLI, read as the API's type.
    let out = oasis_with_env(&["pair-code"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("pairing code: ") && text.contains("works once"),
        "{text}"
    );
}

/// Runs `sh -c script`; its stdout.
fn sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pairing_over_tls_with_the_pinned_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let model = model_path();
    let d = Daemon::start(
        &data,
        &[
            "--threads",
            "2",
            "--kv-cache-bytes",
            "33554432",
            "--tls",
            "on",
            "--model",
            model.to_str().unwrap(),
        ],
    );
    assert!(d.url.starts_with("https://"), "{}", d.url);
    // The fingerprint the daemon printed is the certificate it serves.
    let log = d.log();
    let printed = log
        .split("fingerprint=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in the log: {log}"))
        .to_string();
    let served = sh(&format!(
        "openssl s_client -connect {} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
        d.addr
    ));
    assert_eq!(
        served.rsplit('=').next(),
        Some(printed.as_str()),
        "{served}"
    );
    let on_disk = sh(&format!(
        "openssl x509 -noout -fingerprint -sha256 -in {}",
        data.join("tls/cert.pem").display()
    ));
    assert_eq!(on_disk, served);
    let key_mode = sh(&format!(
        "stat -c %a {}",
        data.join("tls/key.pem").display()
    ));
    assert_eq!(key_mode, "600");

    // Pair with the one-time code, trusting exactly that certificate.
    let code = std::fs::read_to_string(data.join("pairing.code")).unwrap();
    let code = code.trim();
    assert_eq!(code.len(), 19, "{code}");
    let cert = data.join("tls/cert.pem");
    let curl = |args: &str| {
        sh(&format!(
            "curl -s --cacert {} -w '\\n%{{http_code}}' {args}",
            cert.display()
        ))
    };
    let url = format!("https://127.0.0.1:{}", d.addr.rsplit(':').next().unwrap());
    let pair = |code: &str| {
        curl(&format!(
            "-X POST -H 'Content-Type: application/json' -d '{{\"code\": \"{code}\", \"name\": \"admin laptop\"}}' {url}/admin/v1/pair"
        ))
    };
    let wrong = pair("AAAA-AAAA-AAAA-AAAA");
    assert!(
        wrong.ends_with("401") && wrong.contains("4 tries left"),
        "{wrong}"
    );
    let out = pair(code);
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "201", "{out}");
    let paired = serde_json::from_str::<Value>(body).unwrap();
    // The answer names the served certificate, for the client to compare with its pin.
    assert_eq!(paired["tls_fingerprint"], printed.as_str(), "{paired}");
    let token = paired["key"].as_str().unwrap().to_string();
    // The code works once, and its file is gone.
    assert!(pair(code).ends_with("401"));
    assert!(!data.join("pairing.code").exists());
    // The paired token is an admin's; with keys in place, nothing gets in without one.
    let status = curl(&format!(
        "-H 'Authorization: Bearer {token}' {url}/admin/v1/status"
    ));
    assert!(status.ends_with("\n200"), "{status}");
    let none = curl(&format!("{url}/admin/v1/status"));
    assert!(none.ends_with("\n401"), "{none}");
    // Plain HTTP to the TLS port gets nowhere.
    let plain = sh(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' http://{}/healthz",
        d.addr
    ));
    assert_eq!(plain, "000");
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"auth.pair\"") && audit.contains("refused (401)"),
        "{audit}"
    );
    assert!(!d.log().contains(&token[6..]) && !d.log().contains(code));

    // The whole admin round over TLS with the paired token: two keys with different
    // quotas, load on both, exact per-key usage, a quota hit, a revocation, the audit log.
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let data = body.map_or_else(String::new, |b| {
            format!("-H 'Content-Type: application/json' -d '{b}'")
        });
        let out = curl(&format!(
            "-X {method} -H 'Authorization: Bearer {token}' {data} {url}{path}"
        ));
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        (
            status.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    };
    let mut keys = Vec::new();
    for (name, quota) in [("team a", 400), ("team b", 100)] {
        let (s, k) = call(
            &token,
            "POST",
            "/admin/v1/keys",
            Some(json!({"name": name, "tokens_per_day": quota})),
        );
        assert_eq!(s, 201, "{k}");
        keys.push((
            k["id"].as_str().unwrap().to_string(),
            k["key"].as_str().unwrap().to_string(),
        ));
    }
    let ask = |key: &str| {
        call(
            key,
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "SmolLM2-135M-Instruct.Q4_1",
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0})),
        )
    };
    let mut told = [0u64, 0u64];
    let mut refused = [0, 0];
    for _ in 0..6 {
        for (i, (_, key)) in keys.iter().enumerate() {
            let (s, r) = ask(key);
            match s {
                200 => told[i] += r["usage"]["total_tokens"].as_u64().unwrap(),
                429 => {
                    assert_eq!(r["error"]["code"], "insufficient_quota", "{r}");
                    refused[i] += 1;
                }
                other => panic!("{other}: {r}"),
            }
        }
    }
    assert_eq!(refused[0], 0, "team a has room for six");
    assert!(refused[1] > 0, "team b's quota of 100 never applied");
    let (_, usage) = call(&token, "GET", "/admin/v1/usage?group_by=key", None);
    for (i, (id, _)) in keys.iter().enumerate() {
        let row = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == id.as_str())
            .cloned();
        assert_eq!(
            row.map(|r| r["total_tokens"].as_u64()),
            Some(Some(told[i])),
            "{usage}"
        );
    }
    let (s, _) = call(
        &token,
        "DELETE",
        &format!("/admin/v1/keys/{}", keys[0].0),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(ask(&keys[0].1).0, 401);
    let (_, audit) = call(&token, "GET", "/admin/v1/audit", None);
    assert_eq!(audit["chain_ok"], true, "{audit}");
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "auth.pair",
            "auth.pair",
            "auth.pair",
            "key.create",
            "key.create",
            "key.revoke"
        ],
        "{audit}"
    );
}

#[test]
fn plain_http_beyond_loopback_needs_to_be_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let out = oasis_with_env(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--tls",
            "off",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain HTTP on 0.0.0.0:0") && err.contains("allow_plain_http"),
        "{err}"
    );
}
