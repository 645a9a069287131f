//! `oasis serve` end to end: the real binary on `127.0.0.1:0` with the real model, over
//! real HTTP, checked against llama.cpp's fixtures and OpenAI's wire format.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::daemon::{Daemon, open_stream, raw_request, send_request};
use tests::{fixture_json, model_path, oasis_with_env, stdout_ok};

const TOKENS: usize = 32;

fn model_arg() -> String {
    model_path().to_string_lossy().into_owned()
}

fn start(dir: &std::path::Path) -> Daemon {
    start_with(dir, &[])
}

/// [`start`] with more flags.
fn start_with(dir: &std::path::Path, flags: &[&str]) -> Daemon {
    let model = model_arg();
    let mut args = vec!["--model", &model, "--threads", "2"];
    args.extend_from_slice(flags);
    Daemon::start(dir, &args)
}

fn model_id(d: &Daemon) -> String {
    let (status, models) = d.get("/v1/models");
    assert_eq!(status, 200, "{models}");
    models["data"][0]["id"].as_str().unwrap().to_string()
}

/// The text llama.cpp's first `TOKENS` greedy tokens decode to.
fn expected_text(case: &Value, tok: &engine::tokenizer::Tokenizer) -> String {
    let ids: Vec<u32> = case["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .take(TOKENS)
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert!(
        case["first_eog_position"]
            .as_u64()
            .is_none_or(|p| p as usize >= TOKENS),
        "fixture case ends early; the test expects {TOKENS} tokens"
    );
    tok.decode(&ids)
}

fn sse_json(events: &[String]) -> Vec<Value> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{e}: {err}")))
        .collect()
}

#[test]
fn greedy_answers_match_llamacpp_streaming_and_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);
    let model = engine::Model::load(&model_path()).unwrap();
    let fixture = fixture_json("smollm2/llamacpp-reference.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let want = expected_text(case, model.tokenizer().unwrap());
        let n_prompt = case["prompt_ids"].as_array().unwrap().len();
        let (path, mut body) = if case["mode"] == "chat" {
            (
                "/v1/chat/completions",
                json!({"model": id, "messages": case["messages"]}),
            )
        } else {
            (
                "/v1/completions",
                json!({"model": id, "prompt": case["prompt"]}),
            )
        };
        body["max_tokens"] = json!(TOKENS);
        body["temperature"] = json!(0);

        let (status, doc) = d.post(path, &body);
        assert_eq!(status, 200, "{name}: {doc}");
        let choice = &doc["choices"][0];
        let got = if case["mode"] == "chat" {
            assert_eq!(doc["object"], "chat.completion");
            assert_eq!(choice["message"]["role"], "assistant");
            choice["message"]["content"].as_str().unwrap()
        } else {
            assert_eq!(doc["object"], "text_completion");
            choice["text"].as_str().unwrap()
        };
        assert_eq!(got, want, "{name}: greedy text differs from llama.cpp's");
        assert_eq!(choice["finish_reason"], "length", "{name}");
        assert_eq!(doc["usage"]["prompt_tokens"], n_prompt, "{name}");
        assert_eq!(doc["usage"]["completion_tokens"], TOKENS, "{name}");
        assert_eq!(doc["usage"]["total_tokens"], n_prompt + TOKENS, "{name}");
        assert_eq!(doc["model"], id.as_str());

        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let (status, events) = d.post_stream(path, &body);
        assert_eq!(status, 200, "{name}: {events:?}");
        let chunks = sse_json(&events);
        let mut text = String::new();
        let mut finish = Vec::new();
        for c in &chunks[..chunks.len() - 1] {
            assert!(c["usage"].is_null(), "{name}: usage before the end: {c}");
            let ch = &c["choices"][0];
            if case["mode"] == "chat" {
                assert_eq!(c["object"], "chat.completion.chunk");
                text.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            } else {
                assert_eq!(c["object"], "text_completion");
                text.push_str(ch["text"].as_str().unwrap_or(""));
            }
            if !ch["finish_reason"].is_null() {
                finish.push(ch["finish_reason"].clone());
            }
        }
        assert_eq!(text, want, "{name}: streamed text differs");
        assert_eq!(finish, [json!("length")], "{name}");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]), "{name}");
        assert_eq!(last["usage"]["completion_tokens"], TOKENS, "{name}");
        assert_eq!(last["usage"]["prompt_tokens"], n_prompt, "{name}");
        if case["mode"] == "chat" {
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        }
    }
}

#[test]
fn api_surface_models_health_openapi_logprobs_and_n() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);

    assert_eq!(d.get("/healthz").0, 200);
    let (status, ready) = d.get("/readyz");
    assert_eq!((status, &ready["status"]), (200, &json!("ready")));
    let (status, card) = d.get(&format!("/v1/models/{id}"));
    assert_eq!(status, 200);
    assert_eq!(card["object"], "model");
    assert_eq!(card["architecture"], "llama");
    assert_eq!(
        card["digest"],
        "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let (status, err) = d.get("/v1/models/nope");
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");

    // The OpenAPI document lists every route this test touches.
    let (status, doc) = d.get("/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/readyz",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from /openapi.json"
        );
    }

    // Request ids: generated when absent, echoed when sent.
    let resp = raw_request(
        &d.addr,
        "GET",
        "/healthz",
        &[("x-request-id", "abc-123")],
        b"",
    );
    assert_eq!(resp.header("x-request-id"), Some("abc-123"));
    let resp = raw_request(&d.addr, "GET", "/healthz", &[], b"");
    assert!(resp.header("x-request-id").is_some_and(|v| v.len() >= 16));

    // Log-probabilities: the chosen token is the argmax under greedy decoding, and the
    // alternatives are ordered.
    let (status, doc) = d.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}],
                "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 3}),
    );
    assert_eq!(status, 200, "{doc}");
    let content = doc["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 4);
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], t["token"]);
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
        assert_eq!(
            t["bytes"].as_array().unwrap().len(),
            t["token"].as_str().unwrap().len()
        );
    }
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0, "logprobs": 2}),
    );
    assert_eq!(status, 200, "{doc}");
    let lp = &doc["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);

    // n choices, a list of prompts, token-id prompts, seeds and stop strings.
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": [[9690, 1259, 28], [9690, 1259]], "n": 2, "max_tokens": 5,
                "temperature": 0.9, "seed": 7}),
    );
    assert_eq!(status, 200, "{doc}");
    let choices = doc["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    // Counted once per prompt, not once per choice, as OpenAI counts.
    assert_eq!(doc["usage"]["prompt_tokens"], 3 + 2);
    let again = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": [[9690, 1259, 28], [9690, 1259]], "n": 2, "max_tokens": 5,
                "temperature": 0.9, "seed": 7}),
    );
    assert_eq!(again.1["choices"], doc["choices"], "same seed, same output");
    let seeds_differ = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": [[9690, 1259, 28], [9690, 1259]], "n": 2, "max_tokens": 5,
                "temperature": 0.9, "seed": 8}),
    );
    assert_ne!(seeds_differ.1["choices"], doc["choices"]);
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": ["Once upon a time", "Once upon a time"], "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["choices"][0]["text"], doc["choices"][1]["text"]);
    assert_eq!(doc["usage"]["prompt_tokens"], 8);
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": "Three facts about the Moon:\n1.", "max_tokens": 40,
                "temperature": 0, "stop": ["2."]}),
    );
    assert_eq!(status, 200);
    assert_eq!(doc["choices"][0]["finish_reason"], "stop");
    assert!(!doc["choices"][0]["text"].as_str().unwrap().contains("2."));

    // min_tokens keeps end-of-generation tokens away until it is reached.
    let hi = json!({"model": id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60, "temperature": 0});
    let (_, short) = d.post("/v1/chat/completions", &hi);
    assert_eq!(short["choices"][0]["finish_reason"], "stop", "{short}");
    let n = short["usage"]["completion_tokens"].as_u64().unwrap();
    let mut longer = hi.clone();
    longer["min_tokens"] = json!(n + 5);
    let (status, longer) = d.post("/v1/chat/completions", &longer);
    assert_eq!(status, 200, "{longer}");
    assert!(
        longer["usage"]["completion_tokens"].as_u64().unwrap() >= n + 5,
        "{longer}"
    );

    // Prometheus metrics.
    let resp = raw_request(&d.addr, "GET", "/metrics", &[], b"");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = String::from_utf8(resp.body).unwrap();
    let running = format!("oasis_requests_running{{model=\"{id}\"}} 0");
    for needle in [
        running.as_str(),
        "# TYPE oasis_time_to_first_token_seconds histogram",
        "oasis_inter_token_latency_seconds_bucket{le=\"+Inf\"}",
        "oasis_e2e_request_latency_seconds_count",
        "oasis_generation_tokens_total{model=",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    let ttft_count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("oasis_time_to_first_token_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(ttft_count >= 8, "{ttft_count}");

    // The CLI reads the same daemon.
    let env = [("OASIS_URL", d.url.as_str())];
    let out = stdout_ok(&oasis_with_env(&["status"], &env));
    assert!(out.contains("ready") && out.contains(&id), "{out}");
    let out = stdout_ok(&oasis_with_env(&["model", "list", "--json"], &env));
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["data"][0]["id"], id.as_str());
    let out = stdout_ok(&oasis_with_env(&["model", "list"], &env));
    assert!(out.starts_with("ID ") && out.contains(&id), "{out}");
    let out = stdout_ok(&oasis_with_env(&["status", "--json"], &env));
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["models"][0]["state"], "ready");
    assert!(doc["models"][0]["requests_total"].as_u64().unwrap() >= 5);
}

/// One bad request: what to send and the status and error `code`/`param` expected.
struct Bad {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// A piece of the error message (the bound it states).
    message: &'static str,
}

#[test]
fn bad_input_gets_openai_errors_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);
    let chat = |extra: Value| {
        let mut body =
            json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        serde_json::to_vec(&body).unwrap()
    };
    let json_ct = Some("application/json");
    let cases = vec![
        Bad { name: "malformed JSON", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: b"{\"model\": ".to_vec(), status: 400, message: "not valid JSON" },
        Bad { name: "wrong type", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"temperature": "hot"})), status: 400, message: "`temperature`: invalid type" },
        Bad { name: "missing messages", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id})).unwrap(), status: 400, message: "`messages` is required" },
        Bad { name: "empty messages", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "messages": []})).unwrap(), status: 400, message: "at least one message" },
        Bad { name: "unknown model", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"model": "gpt-9"})), status: 404, message: "does not exist" },
        Bad { name: "negative max_tokens", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"max_tokens": -1})), status: 400, message: "between 1 and 8192, got -1" },
        Bad { name: "zero max_tokens", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"max_tokens": 0})), status: 400, message: "between 1 and 8192, got 0" },
        Bad { name: "huge max_tokens", method: "POST", path: "/v1/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "prompt": "x", "max_tokens": 1_000_000_000_000i64})).unwrap(),
              status: 400, message: "between 1 and 8192" },
        Bad { name: "temperature out of range", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"temperature": 2.5})), status: 400, message: "between 0 and 2, got 2.5" },
        Bad { name: "n too large", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"n": 1000})), status: 400, message: "between 1 and 16, got 1000" },
        Bad { name: "10 MB body", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: vec![b' '; 10 << 20], status: 413, message: "larger than the limit" },
        Bad { name: "wrong content type", method: "POST", path: "/v1/chat/completions", content_type: Some("text/plain"),
              body: chat(json!({})), status: 415, message: "application/json" },
        Bad { name: "invalid UTF-8", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: b"{\"model\": \"\xff\xfe\", \"messages\": []}".to_vec(), status: 400, message: "UTF-8" },
        Bad { name: "bad role", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "messages": [{"role": "robot", "content": "x"}]})).unwrap(),
              status: 400, message: "must be one of" },
        Bad { name: "image part", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})).unwrap(),
              status: 400, message: "not supported" },
        Bad { name: "token id outside vocabulary", method: "POST", path: "/v1/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "prompt": [1, 99_999_999]})).unwrap(), status: 400, message: "outside the vocabulary" },
        Bad { name: "prompt longer than the context", method: "POST", path: "/v1/completions", content_type: json_ct,
              body: serde_json::to_vec(&json!({"model": id, "prompt": vec![28; 9000]})).unwrap(), status: 400, message: "context holds 8192" },
        Bad { name: "too many stop strings", method: "POST", path: "/v1/chat/completions", content_type: json_ct,
              body: chat(json!({"stop": ["a", "b", "c", "d", "e"]})), status: 400, message: "stop" },
        Bad { name: "unknown route", method: "GET", path: "/v1/nothing", content_type: None,
              body: Vec::new(), status: 404, message: "Unknown request URL" },
        Bad { name: "wrong method", method: "GET", path: "/v1/chat/completions", content_type: None,
              body: Vec::new(), status: 405, message: "not allowed" },
    ];
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .content_type
            .map(|c| ("Content-Type", c))
            .into_iter()
            .collect();
        let resp = raw_request(&d.addr, case.method, case.path, &headers, &case.body);
        assert_eq!(
            resp.status,
            case.status,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&resp.body)
        );
        let body = resp.json();
        let err = &body["error"];
        let msg = err["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: not an OpenAI error: {body}", case.name));
        assert!(
            msg.contains(case.message),
            "{}: message {msg:?} lacks {:?}",
            case.name,
            case.message
        );
        assert!(err["type"].is_string(), "{}: {body}", case.name);
        assert!(
            err.get("param").is_some() && err.get("code").is_some(),
            "{}: {body}",
            case.name
        );
        assert!(
            resp.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{}",
            case.name
        );
        // The daemon is still there and still right.
        assert_eq!(d.get("/readyz").0, 200, "after {}", case.name);
    }
    // Unknown fields are ignored, as OpenAI does.
    let (status, _) = d.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "frobnicate": {"x": 1}}),
    );
    assert_eq!(status, 200);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn the_official_openai_python_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);
    let doc = tests::python_json("openai_client.py", &[&d.url, &id]);
    assert!(doc["chat"].as_str().unwrap().contains("light"), "{doc}");
    assert_eq!(doc["not_found"], 404);
    assert_eq!(doc["bad_request"], 400);
}

/// Reads SSE lines until `n` data events have arrived.
fn read_events(reader: &mut impl BufRead, n: usize) -> Vec<String> {
    let mut events = Vec::new();
    let mut line = String::new();
    while events.len() < n {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            events.push(data.to_string());
        }
    }
    events
}

#[test]
fn kill_9_mid_stream_loses_nothing_and_the_daemon_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = start(&data);
    let id = model_id(&d);
    let mut stream = open_stream(
        &d.addr,
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 500, "temperature": 0, "stream": true}),
    );
    let first = read_events(&mut stream, 3);
    assert_eq!(first.len(), 3, "{first:?}");
    d.kill9();
    // Restarted on the same data directory without --model: the catalog brings it back.
    let d = Daemon::start(&data, &["--threads", "2"]);
    assert_eq!(model_id(&d), id);
    let (status, doc) = d.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(status, 200, "{doc}");
    let (_, st) = d.get("/admin/v1/status");
    assert_eq!(st["starts"], 2);
}

#[test]
fn disconnect_stops_generation_and_sigterm_lets_streams_finish() {
    let dir = tempfile::tempdir().unwrap();
    // A grace period far beyond what the stream needs even on a loaded machine.
    let d = start_with(&dir.path().join("data"), &["--shutdown-grace-s", "120"]);
    let id = model_id(&d);
    let long = json!({"model": id, "messages": [{"role": "user", "content": "Tell me a long story."}],
                      "max_tokens": 2000, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let mut stream = open_stream(&d.addr, "/v1/chat/completions", &long);
    assert_eq!(read_events(&mut stream, 3).len(), 3);
    drop(stream);
    // The engine is free again at once: the next request does not wait for 2000 tokens.
    let started = Instant::now();
    let (status, _) = d.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(status, 200);
    let (_, st) = d.get("/admin/v1/status");
    let generated = st["models"][0]["completion_tokens_total"].as_u64().unwrap();
    assert!(
        generated < 1000,
        "generation went on after the client left: {generated} tokens ({:?})",
        started.elapsed()
    );

    // SIGTERM during a stream: the stream still ends properly, then the process exits 0.
    let short = json!({"model": id, "messages": [{"role": "user", "content": "Tell me a story."}],
                       "max_tokens": 48, "temperature": 0, "stream": true});
    let mut stream = open_stream(&d.addr, "/v1/chat/completions", &short);
    assert_eq!(read_events(&mut stream, 2).len(), 2);
    let addr = d.addr.clone();
    let waiter = std::thread::spawn(move || read_events(&mut stream, 1000));
    let status = d
        .terminate(Duration::from_secs(60))
        .expect("daemon did not exit");
    assert!(status.success(), "exit status {status}");
    let rest = waiter.join().unwrap();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening"
    );
}

#[test]
fn configuration_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file_dir = dir.path().join("from-file");
    let env_dir = dir.path().join("from-env");
    let config = dir.path().join("oasis.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nmax_waiting = 3\n",
            file_dir.to_string_lossy()
        ),
    )
    .unwrap();
    let flag_dir = dir.path().join("from-flag");
    let cfg = config.to_string_lossy().into_owned();
    let env_dir_s = env_dir.to_string_lossy().into_owned();
    // The flag beats the environment, which beats the file.
    let d = Daemon::start_with_env(
        &flag_dir,
        &["--config", &cfg],
        &[("OASIS_DATA_DIR", &env_dir_s)],
    );
    let (_, st) = d.get("/admin/v1/status");
    assert_eq!(st["data_dir"], flag_dir.to_string_lossy().as_ref());
    assert_eq!(d.get("/readyz").0, 503, "no model: not ready");
    drop(d);
    assert!(flag_dir.join("state").exists());

    // A bad file is refused with its line.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nthreds = 2\n").unwrap();
    let out = oasis_with_env(&["serve", "--config", &cfg], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("threds"), "{err}");
}

#[test]
fn startup_is_fast_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start(&data);
    let id = model_id(&first);
    drop(first);
    // The second start reuses the catalog's digest instead of re-hashing the file.
    let d = Daemon::start(&data, &["--threads", "2"]);
    assert_eq!(model_id(&d), id);
    eprintln!(
        "startup to listening with the model loaded: {:?}",
        d.startup
    );
    assert!(d.log().contains("serving"), "{}", d.log());
}

#[test]
fn overload_gets_429_with_retry_after_and_slow_requests_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--model",
            &model_arg(),
            "--threads",
            "2",
            "--max-waiting",
            "1",
            // One running sequence: the second request waits for real, not only until the
            // scheduler's next step admits it.
            "--max-running",
            "1",
            "--request-timeout-s",
            "2",
        ],
    );
    let id = model_id(&d);
    let long = json!({"model": id, "messages": [{"role": "user", "content": "Tell me a long story."}],
                      "max_tokens": 3000, "temperature": 0, "ignore_eos": true, "stream": true});
    // One running, one waiting: the queue of one is full.
    let began = Instant::now();
    let mut running = open_stream(&d.addr, "/v1/chat/completions", &long);
    let first = read_events(&mut running, 2);
    assert_eq!(first.len(), 2, "{first:?}\n{}", d.log());
    // The second request is only sent: nothing of it is read until it is admitted.
    let waiting = send_request(&d.addr, "/v1/chat/completions", &long);
    let mut overloaded = None;
    let mut last = serde_json::Value::Null;
    // Up to 60 s for the second request to reach the queue: a loaded 2-core CI machine
    // can take a while to accept it while the first one streams.
    while began.elapsed() < Duration::from_secs(60) {
        let (_, st) = d.get("/admin/v1/status");
        let m = &st["models"][0];
        if m["waiting"] == 1 && m["running"] == 1 {
            let resp = raw_request(
                &d.addr,
                "POST",
                "/v1/completions",
                &[("Content-Type", "application/json")],
                &serde_json::to_vec(&json!({"model": id, "prompt": "hi", "max_tokens": 2}))
                    .unwrap(),
            );
            overloaded = Some(resp);
            break;
        }
        last = st;
        std::thread::sleep(Duration::from_millis(20));
    }
    let resp = overloaded.unwrap_or_else(|| {
        panic!(
            "the second request never waited ({:?} after the first was sent); last status {last}\n{}",
            began.elapsed(),
            d.log()
        )
    });
    assert_eq!(resp.status, 429, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.json()["error"]["code"], "queue_full");
    drop(waiting);
    drop(running);
    // Both leave: the running one at its next token, the waiting one when its turn comes.
    let idle = (0..500).any(|_| {
        let (_, st) = d.get("/admin/v1/status");
        let m = &st["models"][0];
        if m["waiting"] == 0 && m["running"] == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(idle, "the engine stayed busy after its clients left");

    // A non-streaming request that cannot finish in 2 s gets 504 and its generation stops.
    let started = Instant::now();
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": "Once upon a time", "max_tokens": 5000, "ignore_eos": true, "temperature": 0}),
    );
    assert_eq!(status, 504, "{doc}");
    assert_eq!(doc["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (status, _) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": "Once upon a time", "max_tokens": 2}),
    );
    assert_eq!(status, 200, "the engine is free again");
}

/// The value of a Prometheus sample line starting with `prefix` in `/metrics`.
fn metric(d: &Daemon, prefix: &str) -> f64 {
    let resp = raw_request(&d.addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

/// Greedy completion of one request: (text, completion tokens).
fn greedy(d: &Daemon, id: &str, prompt: &str, max_tokens: usize) -> (String, u64) {
    let (status, doc) = d.post(
        "/v1/completions",
        &json!({"model": id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{doc}");
    (
        doc["choices"][0]["text"].as_str().unwrap().to_string(),
        doc["usage"]["completion_tokens"].as_u64().unwrap(),
    )
}

#[test]
fn batching_does_not_change_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);
    let fixture = fixture_json("smollm2/llamacpp-reference.json");
    // 16 prompts of different lengths (4 to ~500 tokens) and output lengths.
    let mut jobs: Vec<(String, usize)> = Vec::new();
    for (i, case) in fixture["cases"].as_array().unwrap().iter().enumerate() {
        let text = case["prompt_text"].as_str().unwrap().to_string();
        jobs.push((text.clone(), 8 + 5 * i));
        let cut: String = text.chars().take(40 + 13 * i).collect();
        jobs.push((cut, 30 - 2 * i));
    }
    assert_eq!(jobs.len(), 16);
    let alone: Vec<(String, u64)> = jobs.iter().map(|(p, n)| greedy(&d, &id, p, *n)).collect();
    // All at once, started at different times.
    let together: Vec<(String, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, (p, n))| {
                let (d, id) = (&d, &id);
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(37 * (i as u64 % 5)));
                    greedy(d, id, p, *n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(
            a, t,
            "request {i}: batched output differs from the output alone"
        );
    }
    let (_, st) = d.get("/admin/v1/status");
    eprintln!("status after the batch: {st}");
}

#[test]
fn a_light_tenant_gets_its_share_next_to_a_heavy_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--model",
            &model_arg(),
            "--threads",
            "2",
            "--max-running",
            "2",
        ],
    );
    let id = model_id(&d);
    let body = |user: &str| {
        json!({"model": id, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0,
               "ignore_eos": true, "user": user})
    };
    let finished = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..10 {
            let (d, finished, b) = (&d, &finished, body("heavy"));
            s.spawn(move || {
                assert_eq!(d.post("/v1/completions", &b).0, 200);
                finished.lock().unwrap().push("heavy".into());
            });
        }
        // The light tenant arrives once the heavy one has filled the queue.
        let wait_for_queue = (0..500).any(|_| {
            let (_, st) = d.get("/admin/v1/status");
            if st["models"][0]["waiting"].as_u64().unwrap_or(0) >= 6 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        });
        assert!(wait_for_queue, "the heavy tenant's requests never queued");
        let (d, finished, b) = (&d, &finished, body("light"));
        s.spawn(move || {
            assert_eq!(d.post("/v1/completions", &b).0, 200);
            finished.lock().unwrap().push("light".into());
        });
    });
    let order = finished.into_inner().unwrap();
    let light_at = order.iter().position(|t| t == "light").unwrap();
    // First come, first served would finish all ten heavy requests first. Fair admission
    // lets the light request in as soon as a place frees up: at most the two running and
    // the one admitted with it finish before it.
    assert!(
        light_at <= 4,
        "light tenant finished after {light_at} heavy requests: {order:?}"
    );
}

#[test]
fn a_small_cache_preempts_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    // 256 positions of cache (4 blocks) for 4 requests that each grow to ~120 positions.
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            "--model",
            &model_arg(),
            "--threads",
            "2",
            "--max-context",
            "256",
            "--kv-cache-bytes",
            "1048576",
        ],
    );
    let id = model_id(&d);
    assert_eq!(
        metric(&d, &format!("oasis_kv_blocks{{model=\"{id}\"}}")),
        4.0
    );
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (d, id) = (&d, &id);
                s.spawn(move || {
                    d.post(
                        "/v1/completions",
                        &json!({"model": id, "prompt": format!("Story number {i}: Once upon a time"),
                                "max_tokens": 100, "temperature": 0, "ignore_eos": true}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, doc) in &results {
        assert_eq!(*status, 200, "{doc}");
        assert_eq!(doc["usage"]["completion_tokens"], 100, "{doc}");
    }
    let preempted = metric(
        &d,
        &format!("oasis_requests_preempted_total{{model=\"{id}\"}}"),
    );
    assert!(
        preempted > 0.0,
        "expected preemptions with 4 blocks for 8 blocks of demand"
    );
    assert_eq!(
        metric(&d, &format!("oasis_kv_blocks_used{{model=\"{id}\"}}")),
        0.0
    );
}

/// With `max_step_ms` a long prompt arriving while a stream generates is read in chunks
/// that ride beside the stream's decode steps, instead of one step the stream waits for;
/// with 0 (off) it is one step. The answers are the same either way.
#[test]
fn a_long_prompt_is_read_beside_a_stream_within_the_step_budget() {
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(30);
    // (stream tokens that arrived while the long prompt was read, its answer, the stream's)
    let run = |max_step_ms: &str| -> (usize, String, String) {
        let dir = tempfile::tempdir().unwrap();
        // The budget never yields to a late prompt here, however slow the box.
        let d = start_with(
            &dir.path().join("data"),
            &["--max-step-ms", max_step_ms, "--ttft-target-ms", "0"],
        );
        let id = model_id(&d);
        let mut stream = open_stream(
            &d.addr,
            "/v1/completions",
            &json!({"model": id, "prompt": "Once upon a time", "max_tokens": 60,
                    "temperature": 0, "ignore_eos": true, "stream": true}),
        );
        assert_eq!(read_events(&mut stream, 3).len(), 3);
        // Each event with the time it arrived.
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).unwrap_or(0) == 0 {
                    break seen;
                }
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    seen.push((Instant::now(), data.to_string()));
                    if data == "[DONE]" {
                        break seen;
                    }
                }
            }
        });
        let sent = Instant::now();
        let (status, doc) = d.post(
            "/v1/completions",
            &json!({"model": id, "prompt": long_prompt, "max_tokens": 1, "temperature": 0}),
        );
        let answered = Instant::now();
        assert_eq!(status, 200, "{doc}");
        let prompt_tokens = doc["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!((250..=512).contains(&prompt_tokens), "{prompt_tokens}");
        let events = reader.join().unwrap();
        let during = events
            .iter()
            .filter(|(t, _)| *t > sent && *t <= answered)
            .count();
        let text: String = sse_json(&events.iter().map(|e| e.1.clone()).collect::<Vec<_>>())
            .iter()
            .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
            .collect();
        let answer = doc["choices"][0]["text"].as_str().unwrap().to_string();
        (during, answer, text)
    };
    let (budgeted, answer_budgeted, stream_budgeted) = run("1");
    let (whole, answer_whole, stream_whole) = run("0");
    eprintln!("stream tokens during the long prompt: {budgeted} budgeted, {whole} off");
    // At 1 ms every step beside the stream carries its decode token and 16 prompt tokens:
    // the ~330-token prompt takes ~21 steps, each giving the stream a token.
    assert!(
        budgeted >= 12,
        "the stream got {budgeted} tokens while the long prompt was read in chunks"
    );
    assert!(
        whole * 3 <= budgeted,
        "off, the prompt should be one step: {whole} stream tokens vs {budgeted} budgeted"
    );
    assert_eq!(answer_budgeted, answer_whole, "chunking changed the answer");
    assert_eq!(stream_budgeted, stream_whole, "chunking changed the stream");
}

/// Prompt-lookup speculative decoding changes no output: greedy and seeded, whole and
/// streamed, asked per request or set on the deployment; on an answer that copies its
/// prompt most drafts are kept (fewer steps than tokens). Bad values are 400s.
#[test]
fn prompt_lookup_speculation_gives_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir.path().join("data"));
    let id = model_id(&d);
    let text = "The Treaty of Westphalia was signed in 1648 in the cities of Osnabrück and \
                Münster. It ended the Thirty Years' War in the Holy Roman Empire and the \
                Eighty Years' War between Spain and the Dutch Republic.";
    let prompts = [
        format!("Repeat the following text exactly, word for word:\n\n{text}"),
        format!("Copy this paragraph:\n{text}\nNow copy it again."),
        "Write a short story about a cat.".to_string(),
        "1, 2, 3, 1, 2, 3, 1, 2,".to_string(),
    ];
    let ask = |prompt: &str, lookup: Option<u64>, seed: Option<u64>| -> Value {
        let mut body = json!({"model": id, "messages": [{"role": "user", "content": prompt}],
                              "max_tokens": 96, "temperature": if seed.is_some() { 0.8 } else { 0.0 }});
        if let Some(s) = seed {
            body["seed"] = json!(s);
        }
        if let Some(k) = lookup {
            body["prompt_lookup"] = json!(k);
        }
        let (status, doc) = d.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{doc}");
        doc
    };
    let content = |doc: &Value| doc["choices"][0]["message"]["content"].clone();
    let steps = || metric(&d, &format!("oasis_engine_steps_total{{model=\"{id}\"}}"));
    let tokens = || {
        metric(
            &d,
            &format!("oasis_generation_tokens_total{{model=\"{id}\"}}"),
        )
    };
    for (i, p) in prompts.iter().enumerate() {
        for seed in [None, Some(7)] {
            let plain = ask(p, None, seed);
            for k in [1, 4, 16] {
                let (s0, t0) = (steps(), tokens());
                let fast = ask(p, Some(k), seed);
                assert_eq!(
                    content(&fast),
                    content(&plain),
                    "prompt {i}, seed {seed:?}, {k} draft tokens"
                );
                assert_eq!(fast["usage"], plain["usage"]);
                assert_eq!(
                    fast["choices"][0]["finish_reason"],
                    plain["choices"][0]["finish_reason"]
                );
                if i == 0 && seed.is_none() && k == 16 {
                    let (s, t) = (steps() - s0, tokens() - t0);
                    assert!(
                        s * 1.5 <= t,
                        "copying its prompt, {t} tokens took {s} steps"
                    );
                }
            }
        }
    }
    let drafted = metric(&d, &format!("oasis_draft_tokens_total{{model=\"{id}\"}}"));
    let kept = metric(
        &d,
        &format!("oasis_draft_tokens_accepted_total{{model=\"{id}\"}}"),
    );
    assert!(kept > 0.0 && kept <= drafted, "{kept} of {drafted}");

    // Streamed, the chunks put together are the same text.
    let streamed = |lookup: u64| -> String {
        let (status, events) = d.post_stream(
            "/v1/completions",
            &json!({"model": id, "prompt": prompts[1], "max_tokens": 64, "temperature": 0,
                    "stream": true, "prompt_lookup": lookup}),
        );
        assert_eq!(status, 200);
        sse_json(&events)
            .iter()
            .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(streamed(8), streamed(0));

    // On the deployment: requests that do not say get it; those that say 0 do not.
    let (status, doc) = d.patch(
        &format!("/admin/v1/deployments/{id}"),
        &json!({"prompt_lookup": 8}),
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["prompt_lookup"], 8);
    let before = metric(&d, &format!("oasis_draft_tokens_total{{model=\"{id}\"}}"));
    let by_deployment = ask(&prompts[0], None, None);
    let after = metric(&d, &format!("oasis_draft_tokens_total{{model=\"{id}\"}}"));
    assert!(
        after > before,
        "the deployment's prompt_lookup was not used"
    );
    assert_eq!(
        content(&by_deployment),
        content(&ask(&prompts[0], Some(0), None))
    );
    assert_eq!(
        metric(&d, &format!("oasis_draft_tokens_total{{model=\"{id}\"}}")),
        after,
        "prompt_lookup 0 in the request still drafted"
    );

    // Bad values name the field.
    for bad in [json!(17), json!(-1), json!("many")] {
        let (status, doc) = d.post(
            "/v1/chat/completions",
            &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "prompt_lookup": bad}),
        );
        assert_eq!(status, 400, "{bad}: {doc}");
        assert_eq!(doc["error"]["param"], "prompt_lookup", "{doc}");
    }
    let (status, doc) = d.patch(
        &format!("/admin/v1/deployments/{id}"),
        &json!({"prompt_lookup": 17}),
    );
    assert_eq!(status, 400, "{doc}");
    assert_eq!(doc["error"]["param"], "prompt_lookup", "{doc}");
}
