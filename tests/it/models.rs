//! Model management end to end through the real daemon: import from a "USB" folder, a
//! `.tar` bundle, a checkpoint folder, in place and by upload; verification failures that
//! leave nothing behind; kill -9 during an import; cancellation; deployments with a hot swap
//! under load, restored after a crash; deletion.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::daemon::{Daemon, raw_request};
use tests::{model_path, oasis_with_env, workspace_root};

/// Small KV caches: several deployments of the test model live at once.
const SMALL: &[&str] = &[
    "--threads",
    "2",
    "--kv-cache-bytes",
    "33554432",
    "--max-context",
    "1024",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = SMALL.to_vec();
    v.extend_from_slice(extra);
    v
}

/// Waits for job `id` to end; its last view.
pub(crate) fn wait_job(d: &Daemon, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = d.get(&format!("/admin/v1/jobs/{id}"));
        assert_eq!(status, 200, "{job}");
        if matches!(
            job["state"].as_str(),
            Some("ready" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never ended: {job}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Imports `path` through the API and waits for the job.
fn import(d: &Daemon, path: &Path, name: &str, in_place: bool) -> Value {
    let (status, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": path.to_str().unwrap(), "name": name, "in_place": in_place}),
    );
    assert_eq!(status, 202, "{job}");
    wait_job(d, job["id"].as_str().unwrap())
}

fn catalog_ids(d: &Daemon) -> Vec<String> {
    let (status, doc) = d.get("/admin/v1/models");
    assert_eq!(status, 200, "{doc}");
    doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Names in the model store (hidden partial folders included).
fn store_entries(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("models/store"))
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A "USB" folder holding a copy of the test model (and, when asked, its manifest).
fn usb_copy(dir: &Path, file: &str, manifest_sha: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let dest = dir.join(file);
    std::fs::copy(model_path(), &dest).unwrap();
    if let Some(sha) = manifest_sha {
        let size = std::fs::metadata(&dest).unwrap().len();
        let manifest = json!({"schema": "oasis.model/v1", "name": "SmolLM2 135M Instruct",
            "format": "gguf", "architecture": "llama", "license": "Apache-2.0 (manifest)",
            "files": [{"path": file, "size_bytes": size, "sha256": sha}]});
        std::fs::write(dir.join("oasis-model.json"), manifest.to_string()).unwrap();
    }
    dest
}

fn tar(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

fn chat(addr: &str, model: &str, stream: bool) -> (u16, String) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 8, "temperature": 0, "stream": stream});
    let resp = raw_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    // A stream that broke off has no [DONE].
    if stream && resp.status == 200 && !text.contains("data: [DONE]") {
        return (599, text);
    }
    (resp.status, text)
}

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    oasis_with_env(args, &[("OASIS_URL", d.url.as_str())])
}

fn ok(out: &std::process::Output) -> (String, String) {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout: {so}\nstderr: {se}");
    (so, se)
}

#[test]
fn a_model_from_a_usb_folder_is_imported_deployed_swapped_under_load_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let usb = usb_copy(&tmp.path().join("usb"), "smollm2.gguf", None);
    let sha = sha256sum(&usb);
    // 60 MB/s: the copy takes over a second, long enough to watch.
    let limit = ["--import-max-bytes-per-s", "60000000"];
    let d = Daemon::start(&data, &args(&limit));
    assert!(catalog_ids(&d).is_empty());

    // Import with the CLI: a progress bar (lines, off a terminal), then the summary.
    let (so, se) = ok(&cli(
        &d,
        &[
            "model",
            "import",
            usb.to_str().unwrap(),
            "--name",
            "smol-v1",
        ],
    ));
    assert!(
        se.contains("importing") && se.contains("copying") && se.contains('%'),
        "{se}"
    );
    assert!(
        so.contains("imported `smol-v1`") && so.contains(&sha),
        "{so}"
    );
    let (_, m) = d.get("/admin/v1/models/smol-v1");
    assert_eq!(m["digest"], format!("sha256:{sha}"));
    assert_eq!(m["in_store"], true);
    // From the GGUF's `general.license`.
    assert_eq!(m["license"], "apache-2.0");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(data.join("models/store/smol-v1/oasis-model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["files"][0]["sha256"], sha.as_str(), "{manifest}");
    assert_eq!(manifest["architecture"], "llama");
    assert_eq!(store_entries(&data), ["smol-v1"]);
    let (so, _) = ok(&cli(&d, &["model", "list"]));
    assert!(so.contains("smol-v1") && so.contains("DEPLOYED AS"), "{so}");
    // The import's job, read by the CLI as the API's types.
    let (so, _) = ok(&cli(&d, &["job", "list"]));
    let job = so.split_whitespace().next().unwrap_or_default().to_string();
    assert!(
        job.starts_with("job-") && so.contains("ready") && so.contains("smol-v1"),
        "{so}"
    );
    let (so, _) = ok(&cli(&d, &["job", "show", &job]));
    assert!(so.contains(&job) && so.contains("ready"), "{so}");

    // Not served until deployed.
    assert_eq!(chat(&d.addr, "chat", false).0, 404);
    let (so, _) = ok(&cli(
        &d,
        &["deploy", "smol-v1", "--name", "chat", "--alias", "default"],
    ));
    assert!(so.contains("`chat` serves `smol-v1`"), "{so}");
    let (status, first) = chat(&d.addr, "chat", false);
    assert_eq!(status, 200, "{first}");
    assert_eq!(chat(&d.addr, "default", false).0, 200);
    // A served name (not a catalog id) shows its model card.
    let (so, _) = ok(&cli(&d, &["model", "show", "default"]));
    assert!(
        so.starts_with("default\n") && so.contains("llama") && so.contains("fit"),
        "{so}"
    );

    // Version 2 arrives as a bundle with a manifest (license included).
    let v2 = tmp.path().join("v2");
    usb_copy(&v2, "smollm2.gguf", Some(&sha));
    let bundle = tmp.path().join("smol-v2.tar");
    tar(&v2, &bundle);
    ok(&cli(
        &d,
        &[
            "model",
            "import",
            bundle.to_str().unwrap(),
            "--name",
            "smol-v2",
        ],
    ));
    let (_, m2) = d.get("/admin/v1/models/smol-v2");
    assert_eq!(m2["license"], "Apache-2.0 (manifest)", "{m2}");
    assert_eq!(m2["digest"], m["digest"]);

    // Hot swap under load: four clients keep asking `chat` (streamed and not) while it
    // changes model; each goes on until it has finished two requests after the swap.
    let swapped: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let results = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let (addr, swapped) = (d.addr.clone(), &swapped);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut after = 0;
                    while after < 2 {
                        let start = Instant::now();
                        let (status, body) = chat(&addr, "chat", i % 2 == 0);
                        let end = Instant::now();
                        if swapped.get().is_some_and(|t| start > *t) {
                            after += 1;
                        }
                        seen.push((status, body, start, end));
                        assert!(seen.len() < 500, "the swap never finished");
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1000));
        let (so, _) = ok(&cli(
            &d,
            &["deploy", "smol-v2", "--name", "chat", "--alias", "default"],
        ));
        let _ = swapped.set(Instant::now());
        assert!(so.contains("now serves `smol-v2` (was `smol-v1`"), "{so}");
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let swap = *swapped.get().unwrap();
    let failed: Vec<_> = results.iter().filter(|r| r.0 != 200).collect();
    let across = results.iter().filter(|r| r.2 < swap && r.3 > swap).count();
    eprintln!(
        "hot swap under load: {} requests, {} failed, {} in flight at the swap",
        results.len(),
        failed.len(),
        across
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        failed.first().map(|r| (r.0, &r.1))
    );
    assert!(results.len() >= 12, "{}", results.len());
    assert!(across >= 1, "no request was in flight at the swap");
    let (_, dep) = d.get("/admin/v1/deployments/chat");
    assert_eq!(dep["model"], "smol-v2");
    assert_eq!(dep["generation"], 2);
    assert_eq!(dep["state"], "ready");
    // The same weights: the same greedy answer.
    assert_eq!(
        chat(&d.addr, "chat", false).1.split("\"content\"").nth(1),
        first.split("\"content\"").nth(1)
    );

    // A deployment outlives a crash.
    d.kill9();
    let d = Daemon::start(&data, &args(&[]));
    let (_, dep) = d.get("/admin/v1/deployments/chat");
    assert_eq!(
        (dep["model"].as_str(), dep["state"].as_str()),
        (Some("smol-v2"), Some("ready")),
        "{dep}"
    );
    assert_eq!(chat(&d.addr, "default", true).0, 200);

    // Deleting: refused while deployed, then the files go.
    let out = cli(&d, &["model", "rm", "smol-v2"]);
    assert!(!out.status.success());
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        se.contains("deployed as `chat`") && se.contains("409"),
        "{se}"
    );
    let (so, _) = ok(&cli(&d, &["model", "rm", "smol-v1"]));
    assert!(so.contains("deleted `smol-v1`"), "{so}");
    assert_eq!(store_entries(&data), ["smol-v2"]);
    ok(&cli(&d, &["undeploy", "chat"]));
    assert_eq!(chat(&d.addr, "chat", false).0, 404);
    ok(&cli(&d, &["model", "rm", "smol-v2"]));
    assert!(store_entries(&data).is_empty());
    assert!(catalog_ids(&d).is_empty());
    let (_, storage) = d.get("/admin/v1/storage");
    assert_eq!(storage["models_in_store_bytes"], 0, "{storage}");
    // The source was only read.
    assert_eq!(sha256sum(&usb), sha);
}

#[test]
fn moe_checkpoints_import_copied_and_in_place_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(&data, &args(&[]));
    let fixtures = workspace_root().join("tests/fixtures/tiny-moe");
    let job = import(&d, &fixtures.join("qwen2-moe"), "qwen2-moe", false);
    assert_eq!(job["state"], "ready", "{job}");
    assert_eq!(job["bytes_done"], job["bytes_total"]);
    let job = import(&d, &fixtures.join("mixtral"), "mixtral", true);
    assert_eq!(job["state"], "ready", "{job}");
    let (_, m) = d.get("/admin/v1/models/mixtral");
    assert_eq!(m["in_store"], false);
    assert_eq!(m["path"], fixtures.join("mixtral").to_str().unwrap());
    assert_eq!(m["format"], "safetensors");
    let (_, q) = d.get("/admin/v1/models/qwen2-moe");
    assert_eq!(q["architecture"], "Qwen2MoeForCausalLM", "{q}");
    assert_eq!(store_entries(&data), ["qwen2-moe"]);

    for name in ["qwen2-moe", "mixtral"] {
        let (status, dep) = d.post("/admin/v1/deployments", &json!({"model": name}));
        assert_eq!(status, 201, "{dep}");
        let (status, out) = d.post(
            "/v1/completions",
            &json!({"model": name, "prompt": [1, 2, 3], "max_tokens": 4, "temperature": 0}),
        );
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["usage"]["completion_tokens"], 4, "{out}");
        assert_eq!(out["model"], name);
    }
    // Deleting an in-place model leaves its files.
    assert_eq!(
        raw_request(&d.addr, "DELETE", "/admin/v1/deployments/mixtral", &[], b"").status,
        200
    );
    let resp = raw_request(&d.addr, "DELETE", "/admin/v1/models/mixtral", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["freed_bytes"], 0);
    assert!(fixtures.join("mixtral/model.safetensors").is_file());
}

/// A copy of a fixture checkpoint folder.
fn checkpoint_copy(name: &str, dest: &Path) -> PathBuf {
    let src = workspace_root().join("tests/fixtures/tiny-moe").join(name);
    std::fs::create_dir_all(dest).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dest.join(f)).unwrap();
    }
    dest.to_path_buf()
}

/// Tensor names in a safetensors file's header.
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

#[test]
fn broken_models_are_refused_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(&data, &args(&[]));
    let usb = tmp.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();

    // A GGUF cut in half.
    let whole = std::fs::read(model_path()).unwrap();
    let truncated = usb.join("truncated.gguf");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    // A safetensors file whose header points past its end.
    let short = checkpoint_copy("qwen2-moe", &usb.join("short"));
    let st = std::fs::read(short.join("model.safetensors")).unwrap();
    std::fs::write(short.join("model.safetensors"), &st[..st.len() - 4096]).unwrap();
    // A sharded checkpoint missing its second shard.
    let sharded = checkpoint_copy("qwen2-moe", &usb.join("sharded"));
    let names = tensor_names(&sharded.join("model.safetensors"));
    std::fs::rename(
        sharded.join("model.safetensors"),
        sharded.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let mut map = serde_json::Map::new();
    for n in &names {
        map.insert(n.clone(), json!("model-00001-of-00002.safetensors"));
    }
    map.insert(
        "lm_head.extra".into(),
        json!("model-00002-of-00002.safetensors"),
    );
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    // A bundle whose manifest's digest does not match its file.
    let bad = tmp.path().join("bad-bundle");
    usb_copy(&bad, "smollm2.gguf", Some(&"0".repeat(64)));
    let bundle = tmp.path().join("bad.tar");
    tar(&bad, &bundle);

    for (path, name, expect) in [
        (&truncated, "truncated", "does not verify"),
        (&short, "short", "does not verify"),
        (&sharded, "sharded", "model-00002-of-00002.safetensors"),
        (&bundle, "bad-bundle", "SHA-256"),
    ] {
        let job = import(&d, path, name, false);
        assert_eq!(job["state"], "failed", "{name}: {job}");
        let error = job["error"].as_str().unwrap();
        eprintln!("{name}: {error}");
        assert!(error.contains(expect), "{name}: {error}");
        assert!(catalog_ids(&d).is_empty(), "{name}");
        assert!(
            store_entries(&data).is_empty(),
            "{name}: {:?}",
            store_entries(&data)
        );
    }
    // In place too: nothing enters the catalog, the files stay.
    let job = import(&d, &truncated, "truncated", true);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(truncated.is_file() && catalog_ids(&d).is_empty());

    // Requests that are wrong at once get their status, not a job.
    let good = usb_copy(&usb, "good.gguf", None);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"path": "relative/x.gguf"}), 400, "absolute"),
        (
            json!({"path": "/nonexistent/x.gguf"}),
            400,
            "does not exist",
        ),
        (
            json!({"path": good.to_str().unwrap(), "name": "../up"}),
            400,
            "not a valid model name",
        ),
        (
            json!({"path": good.to_str().unwrap(), "colour": "red"}),
            400,
            "colour",
        ),
        (json!({"path": 7}), 400, "path"),
    ];
    for (body, status, msg) in cases {
        let (s, e) = d.post("/admin/v1/models/import", &body);
        assert_eq!(s, status, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(msg),
            "{body}: {e}"
        );
    }
    assert_eq!(import(&d, &good, "good", false)["state"], "ready");
    let (s, e) = d.post(
        "/admin/v1/models/import",
        &json!({"path": good.to_str().unwrap(), "name": "good"}),
    );
    assert_eq!(s, 409, "{e}");
    // A model the body names that is not in the catalog: 422 (a 404 would say the URL's
    // resource is missing, which for a PATCH is the deployment).
    let (s, e) = d.post("/admin/v1/deployments", &json!({"model": "nope"}));
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["error"]["code"], "model_not_found", "{e}");
    let (s, e) = d.post(
        "/admin/v1/deployments",
        &json!({"model": "good", "ranks": 0}),
    );
    assert_eq!(s, 400, "{e}");
    let (s, _) = d.post("/admin/v1/deployments", &json!({"model": "good"}));
    assert_eq!(s, 201);
    let (s, e) = d.post("/admin/v1/deployments", &json!({"model": "good"}));
    assert_eq!(s, 409, "{e}");
    let (s, e) = d.post(
        "/admin/v1/deployments",
        &json!({"model": "good", "name": "other", "aliases": ["good"]}),
    );
    assert_eq!(s, 409, "{e}");
    // The daemon's `--max-context` (1024 here) is the ceiling of a deployment's context.
    let (s, e) = d.patch(
        "/admin/v1/deployments/good",
        &json!({"context_length": 1025}),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["param"], "context_length", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_context"),
        "{e}"
    );
    let (s, e) = d.patch("/admin/v1/deployments/good", &json!({"model": "nope"}));
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["error"]["param"], "model", "{e}");
    let (s, e) = d.get("/admin/v1/deployments/good");
    assert_eq!((s, e["model"].as_str()), (200, Some("good")), "{e}");
    for (method, path, status) in [
        ("DELETE", "/admin/v1/deployments/nope", 404),
        ("DELETE", "/admin/v1/models/nope", 404),
        ("DELETE", "/admin/v1/models/good", 409),
        ("GET", "/admin/v1/jobs/nope", 404),
        ("DELETE", "/admin/v1/jobs/nope", 404),
        ("POST", "/admin/v1/models/upload?filename=../x.gguf", 400),
        ("POST", "/admin/v1/models/upload?filename=x.bin", 400),
        ("POST", "/admin/v1/models/upload", 400),
    ] {
        let r = raw_request(&d.addr, method, path, &[], b"x");
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A finished job cannot be cancelled; deleted, it is gone.
    let (_, jobs) = d.get("/admin/v1/jobs");
    let id = jobs["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        raw_request(
            &d.addr,
            "POST",
            &format!("/admin/v1/jobs/{id}/cancel"),
            &[],
            b""
        )
        .status,
        409
    );
    assert_eq!(
        raw_request(&d.addr, "DELETE", &format!("/admin/v1/jobs/{id}"), &[], b"").status,
        200
    );
    assert_eq!(d.get(&format!("/admin/v1/jobs/{id}")).0, 404);
}

#[test]
fn kill_9_during_an_import_leaves_no_partial_model_and_cancel_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let usb = usb_copy(&tmp.path().join("usb"), "smollm2.gguf", None);
    // 20 MB/s: the 100 MB copy takes five seconds.
    let slow = ["--import-max-bytes-per-s", "20000000"];
    let d = Daemon::start(&data, &args(&slow));
    let (status, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": usb.to_str().unwrap(), "name": "smol"}),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, j) = d.get(&format!("/admin/v1/jobs/{id}"));
        if j["state"] == "copying" && j["bytes_done"].as_u64().unwrap() > 10_000_000 {
            assert!(j["eta_s"].as_f64().unwrap() > 0.0, "{j}");
            assert!(j["rate_bytes_per_s"].as_f64().unwrap() > 1e6, "{j}");
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(store_entries(&data), [format!(".partial-{id}")]);
    d.kill9();

    let d = Daemon::start(&data, &args(&slow));
    let (_, j) = d.get(&format!("/admin/v1/jobs/{id}"));
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["error"].as_str().unwrap().contains("interrupted"), "{j}");
    assert!(
        store_entries(&data).is_empty(),
        "{:?}",
        store_entries(&data)
    );
    assert!(catalog_ids(&d).is_empty());

    // Cancelled halfway: nothing left either.
    let (_, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": usb.to_str().unwrap(), "name": "smol"}),
    );
    let id = job["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(800));
    let r = raw_request(
        &d.addr,
        "POST",
        &format!("/admin/v1/jobs/{id}/cancel"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let j = wait_job(&d, &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    // A cancel takes effect at once for everyone (the job is final, the lane free); the
    // job's thread removes what it wrote when its current read returns (`Jobs::cancel`),
    // which on a loaded machine can be a moment later: nothing may be left once it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store_entries(&data).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        store_entries(&data).is_empty(),
        "{:?}",
        store_entries(&data)
    );
    assert!(catalog_ids(&d).is_empty());
    d.kill9();

    // A new import of the same file succeeds.
    let d = Daemon::start(&data, &args(&[]));
    let j = import(&d, &usb, "smol", false);
    assert_eq!(j["state"], "ready", "{j}");
    assert_eq!(catalog_ids(&d), ["smol"]);
    assert_eq!(store_entries(&data), ["smol"]);
}

#[test]
fn a_model_uploaded_over_the_admin_api_is_streamed_to_disk_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(&data, &args(&[]));
    let bytes = std::fs::read(model_path()).unwrap();
    let resp = raw_request(
        &d.addr,
        "POST",
        "/admin/v1/models/upload?filename=smollm2.gguf&name=uploaded",
        &[("Content-Type", "application/octet-stream")],
        &bytes,
    );
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    let job = wait_job(&d, resp.json()["id"].as_str().unwrap());
    assert_eq!(job["state"], "ready", "{job}");
    let (_, m) = d.get("/admin/v1/models/uploaded");
    assert_eq!(m["digest"], format!("sha256:{}", sha256sum(&model_path())));
    assert_eq!(store_entries(&data), ["uploaded"]);
    // A damaged upload fails its job and leaves nothing.
    let resp = raw_request(
        &d.addr,
        "POST",
        "/admin/v1/models/upload?filename=half.gguf",
        &[],
        &bytes[..bytes.len() / 3],
    );
    assert_eq!(resp.status, 202);
    let job = wait_job(&d, resp.json()["id"].as_str().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(store_entries(&data), ["uploaded"]);
}
