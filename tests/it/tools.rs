//! Tool calling (issue 19, part): the official Python `openai` client runs a two-step tool
//! loop on SmolLM2, whole and streamed (tests/python/tools.py), with `parse` over
//! `pydantic_function_tool`, a named function, parallel calls and refusals; the official
//! Node.js `openai` package streams a call and reassembles its arguments
//! (tests/node/tools.mjs). SmolLM2's template knows nothing of tools, so this is the
//! Hermes-style path with the calls constrained to the functions' schemas.

use std::process::Command;

use serde_json::{Value, json};
use tests::daemon::Daemon;
use tests::workspace_root;

fn start() -> (tempfile::TempDir, Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let (d, id) = Daemon::serving_default_model(&dir.path().join("data"));
    (dir, d, id)
}

fn args(call: &Value) -> Value {
    serde_json::from_str(call[1].as_str().unwrap()).unwrap()
}

#[test]
fn the_openai_python_client_runs_a_tool_loop_on_smollm2() {
    let (_dir, d, id) = start();
    let doc = tests::python_json("tools.py", &[&d.url, &id]);
    assert_eq!(doc["errors"], json!([]), "{doc:#}");

    let required = &doc["required"];
    assert_eq!(required["finish_reason"], "tool_calls", "{doc:#}");
    assert_eq!(required["content"], Value::Null);
    let calls = required["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "parallel calls off: {doc:#}");
    assert_eq!(calls[0][0], "get_weather");
    assert!(calls[0][2].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0][3], "function");
    let a = args(&calls[0]);
    assert_eq!(
        a.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["city", "unit"]
    );
    assert_eq!(required["valid"], true);

    // The result went back through the template and the model answered in text.
    let answer = &doc["answer"];
    assert!(
        !answer["content"].as_str().unwrap_or("").is_empty(),
        "{doc:#}"
    );
    assert!(answer["prompt_tokens"].as_u64() > answer["first_prompt_tokens"].as_u64());
    let streamed_answer = &doc["streamed_answer"];
    assert!(
        !streamed_answer["content"].as_str().unwrap_or("").is_empty(),
        "{doc:#}"
    );

    // Streamed deltas add up to the whole answer, name and id first.
    let streamed = &doc["streamed"];
    assert_eq!(streamed["whole"], streamed["streamed"], "{doc:#}");
    assert_eq!(streamed["ids"], 1);
    assert!(
        streamed["chunks"].as_u64().unwrap() > 3,
        "arguments arrive in pieces"
    );
    assert_eq!(streamed["finish_reason"], "tool_calls");
    assert_eq!(streamed["whole_finish_reason"], "tool_calls");
    assert_eq!(streamed["whole"][0][0], "get_weather");

    // The client's strict function tools parse into the Pydantic models.
    let parsed = doc["parsed"].as_array().unwrap();
    assert_eq!(parsed.len(), 1, "{doc:#}");
    assert_eq!(parsed[0][0], parsed[0][1], "{doc:#}");

    let parallel = &doc["parallel"];
    assert!(parallel["count"].as_u64().unwrap() >= 1, "{doc:#}");
    assert_ne!(parallel["valid"], false, "{doc:#}");
    assert!(!doc["none_text"].as_str().unwrap().is_empty());

    let refusals = &doc["refusals"];
    for (case, needles) in [
        ("unknown_tool", &["launch_rocket", "tool_choice"][..]),
        ("required_without_tools", &["no `tools`"]),
        ("orphan_result", &["call_nope", "messages[1].tool_call_id"]),
        ("bad_name", &["tools[0].function.name"]),
        ("duplicate", &["two tools"]),
        ("bad_schema", &["tools[0].function.parameters", "foo"]),
        ("with_response_format", &["response_format"]),
    ] {
        let msg = refusals[case].as_str().unwrap_or("");
        assert!(msg.contains("400"), "{case}: {msg}");
        for n in needles {
            assert!(msg.contains(n), "{case}: {msg}");
        }
    }
    // Still serving.
    let (status, _) = d.get("/v1/models");
    assert_eq!(status, 200);
}

#[test]
fn the_openai_node_package_streams_a_tool_call() {
    let root = workspace_root().join("tests/node");
    assert!(
        root.join("node_modules/openai").is_dir(),
        "the Node.js openai package is missing: run `npm ci` in tests/node (scripts/test does)"
    );
    let (_dir, d, id) = start();
    let out = Command::new("node")
        .arg(root.join("tools.mjs"))
        .args([&d.url, &id])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["whole_finish"], "tool_calls", "{doc:#}");
    assert_eq!(doc["whole"][0][0], "get_weather");
    let raw = &doc["raw"];
    assert_eq!(raw["finish"], "tool_calls");
    assert!(raw["id"].as_str().unwrap().starts_with("call_"));
    assert!(raw["chunks"].as_u64().unwrap() > 3);
    assert_eq!(json!([[raw["name"], raw["args"]]]), doc["whole"], "{doc:#}");
    assert!(doc["raw_args"]["unit"].as_str().is_some(), "{doc:#}");
    assert_eq!(doc["helper"], doc["whole"], "{doc:#}");
    assert_eq!(doc["helper_finish"], "tool_calls");
}

#[test]
fn langchain_the_agents_sdk_and_instructor_work_unchanged() {
    let (_dir, d, id) = start();
    let doc = tests::python_json("frameworks.py", &[&d.url, &id]);
    assert_eq!(doc["errors"], json!([]), "{doc:#}");
    let lc = &doc["langchain"];
    for mode in ["invoke", "stream"] {
        let calls = lc[mode]["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{mode}: {doc:#}");
        assert_eq!(calls[0][0], "get_weather");
        assert!(calls[0][1]["city"].as_str().is_some_and(|c| !c.is_empty()));
        assert!(
            !lc[mode]["answer"].as_str().unwrap().is_empty(),
            "{mode}: {doc:#}"
        );
    }
    assert_eq!(lc["invoke"]["calls"], lc["stream"]["calls"]);
    assert_eq!(lc["structured"], "City");
    assert_eq!(lc["structured_by_tool"], "City");
    for mode in ["whole", "streamed"] {
        let run = &doc["agents"][mode];
        assert!(run["tool_runs"].as_u64().unwrap() >= 1, "{mode}: {doc:#}");
        assert!(
            !run["final"].as_str().unwrap_or("").is_empty(),
            "{mode}: {doc:#}"
        );
    }
    let items = doc["agents"]["streamed"]["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i == "tool_call_output_item"),
        "{doc:#}"
    );
    assert_eq!(items.last().unwrap(), "message_output_item");
    assert_eq!(doc["instructor"], "City");
}

/// A template that renders tools itself (Qwen2.5's): the tools go through it, the forced
/// call comes back in its `<tool_call>` syntax, and the call and result render back.
#[test]
fn a_native_tool_template_renders_tools_calls_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(
        workspace_root().join("tests/fixtures/templates/qwen2.5-instruct.jinja"),
    )
    .unwrap();
    let model = tests::model_with_template(dir.path(), "qwen-tools", &template);
    let d = Daemon::start(
        &dir.path().join("data"),
        &["--model", &model.to_string_lossy(), "--threads", "2"],
    );
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let (status, first) = d.post(
        "/v1/chat/completions",
        &json!({"model": "qwen-tools", "messages": ask, "tools": tools, "tool_choice": "required",
                "parallel_tool_calls": false, "temperature": 0, "max_tokens": 64}),
    );
    assert_eq!(status, 200, "{first}");
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{first}");
    let call = &choice["message"]["tool_calls"][0];
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{first}");
    let history = json!([ask[0], choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": 18}"}]);
    let (status, second) = d.post(
        "/v1/chat/completions",
        &json!({"model": "qwen-tools", "messages": history, "tools": tools, "temperature": 0, "max_tokens": 8}),
    );
    assert_eq!(status, 200, "{second}");
    assert!(
        second["usage"]["prompt_tokens"].as_u64() > first["usage"]["prompt_tokens"].as_u64(),
        "{second}"
    );
}
