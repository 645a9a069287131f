//! Reasoning (issue 19, part): a thinking model's `<think>...</think>` goes to
//! `reasoning_content`, the rest to `content`, whole and streamed alike. The models are
//! SmolLM2 with Qwen3-style thinking templates written into copies of its GGUF by llama.cpp's
//! own `gguf-new-metadata` (from PyPI's `gguf`): one whose generation prompt opens the
//! thinking (as DeepSeek-R1's does), one where the model may open it itself.

use serde_json::{Value, json};
use tests::daemon::Daemon;
use tests::model_path;

/// Opens the thinking in the generation prompt.
const OPENED: &str = "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set content = message['content'].split('</think>')[-1].lstrip() %}{% else %}{% set content = message['content'] %}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}";
/// Leaves it to the model (Qwen3's layout).
const FREE: &str = "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set content = message['content'].split('</think>')[-1].lstrip('\\n') %}{% else %}{% set content = message['content'] %}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}";

/// The message of a whole answer and the same answer put together from its stream.
fn whole_and_streamed(d: &Daemon, body: Value) -> (Value, Value) {
    let (status, whole) = d.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{whole}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, events) = d.post_stream("/v1/chat/completions", &streamed);
    assert_eq!(status, 200);
    let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), Value::Null);
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(e).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            reasoning.push_str(c["delta"]["reasoning_content"].as_str().unwrap_or(""));
            content.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            if !c["finish_reason"].is_null() {
                finish = c["finish_reason"].clone();
            }
        }
    }
    let choice = &whole["choices"][0];
    let rebuilt = json!({
        "reasoning_content": reasoning,
        "content": content,
        "finish_reason": finish,
    });
    let message = json!({
        "reasoning_content": choice["message"]["reasoning_content"].as_str().unwrap_or(""),
        "content": choice["message"]["content"].as_str().unwrap_or(""),
        "finish_reason": choice["finish_reason"],
    });
    (message, rebuilt)
}

#[test]
fn thinking_goes_to_reasoning_content_whole_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let opened = tests::model_with_template(dir.path(), "think-opened", OPENED);
    let free = tests::model_with_template(dir.path(), "think-free", FREE);
    let (opened, free) = (opened.to_string_lossy(), free.to_string_lossy());
    let d = Daemon::start(
        &dir.path().join("data"),
        &["--model", &opened, "--model", &free, "--threads", "2"],
    );
    let ask = json!([{"role": "user", "content": "What is 2+2?"}]);

    // The prompt opened the thinking and SmolLM2 never closes it: all of it is thinking.
    let (whole, streamed) = whole_and_streamed(
        &d,
        json!({"model": "think-opened", "messages": ask, "temperature": 0, "max_tokens": 24}),
    );
    assert_eq!(whole, streamed);
    assert!(
        !whole["reasoning_content"].as_str().unwrap().is_empty(),
        "{whole}"
    );
    assert_eq!(whole["content"], "");

    // The output forced (a client's Lark grammar covers the whole output) to think, close
    // the thinking and answer: split exactly at `</think>`, blank lines after it dropped.
    let grammar = "start: THOUGHT \"</think>\\n\\n\" ANSWER\nTHOUGHT: /[a-z ]{3,30}/\nANSWER: /[A-Z][a-z ]{2,20}\\./";
    let (whole, streamed) = whole_and_streamed(
        &d,
        json!({"model": "think-opened", "messages": ask, "temperature": 0, "max_tokens": 48,
               "guided_grammar": grammar}),
    );
    assert_eq!(whole, streamed);
    let reasoning = whole["reasoning_content"].as_str().unwrap();
    let content = whole["content"].as_str().unwrap();
    assert!(
        (3..=30).contains(&reasoning.len())
            && reasoning
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b' '),
        "{whole}"
    );
    assert!(
        content.starts_with(|c: char| c.is_ascii_uppercase()) && content.ends_with('.'),
        "{whole}"
    );
    assert!(!content.contains("think"), "{whole}");

    // Structured output on a thinking model holds for the answer, not the thinking: with
    // the thinking opened and never closed, no JSON is forced into it.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}, "required": ["name"]});
    let format = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": schema}});
    let (whole, streamed) = whole_and_streamed(
        &d,
        json!({"model": "think-opened", "messages": ask, "temperature": 0, "max_tokens": 16,
               "response_format": format}),
    );
    assert_eq!(whole, streamed);
    assert_eq!(whole["finish_reason"], "length", "{whole}");
    assert!(!whole["reasoning_content"].as_str().unwrap().is_empty());
    assert_eq!(whole["content"], "");
    // Where the model does not think, the answer is the constrained JSON.
    let (whole, streamed) = whole_and_streamed(
        &d,
        json!({"model": "think-free", "messages": [{"role": "user", "content": "Give a person as JSON."}],
               "temperature": 0, "max_tokens": 64, "response_format": format}),
    );
    assert_eq!(whole, streamed);
    assert_eq!(whole["reasoning_content"], "");
    let answer: Value = serde_json::from_str(whole["content"].as_str().unwrap()).unwrap();
    assert!(
        answer["name"]
            .as_str()
            .is_some_and(|n| n.chars().count() <= 10),
        "{answer}"
    );

    // A model without thinking has no `reasoning_content` at all.
    let plain = model_path().to_string_lossy().into_owned();
    drop(d);
    let d = Daemon::start(
        &dir.path().join("data2"),
        &["--model", &plain, "--threads", "2"],
    );
    let (_, models) = d.get("/v1/models");
    let id = models["data"][0]["id"].as_str().unwrap();
    let (status, body) = d.post(
        "/v1/chat/completions",
        &json!({"model": id, "messages": ask, "max_tokens": 4}),
    );
    assert_eq!(status, 200);
    assert!(
        body["choices"][0]["message"]
            .get("reasoning_content")
            .is_none(),
        "{body}"
    );
}
