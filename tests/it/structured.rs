//! Structured output (issue 19, part): the official `openai` client's `parse` with 20
//! Pydantic models on SmolLM2, streamed and not, a regex and a Lark grammar, bad schemas
//! refused with a 400 naming the problem, and batching that leaves constrained answers
//! unchanged (tests/python/structured.py drives the daemon; this checks what it found).

use tests::daemon::Daemon;

#[test]
fn the_openai_client_parses_structured_output_on_smollm2() {
    let dir = tempfile::tempdir().unwrap();
    let (d, id) = Daemon::serving_default_model(&dir.path().join("data"));
    let doc = tests::python_json("structured.py", &[&d.url, &id]);
    assert_eq!(doc["errors"], serde_json::json!([]), "{doc:#}");
    let parsed = doc["parsed"].as_array().unwrap();
    assert_eq!(parsed.len(), 20, "{doc:#}");
    for p in parsed.iter().chain(doc["streamed"].as_array().unwrap()) {
        assert_eq!(p["parsed"], true, "{p}");
    }
    assert_eq!(doc["streamed"].as_array().unwrap().len(), 5);
    assert_eq!(doc["regex_ok"], true, "{doc:#}");
    assert!(
        doc["lark"] == "yes" || doc["lark"] == "no",
        "{}",
        doc["lark"]
    );
    assert!(doc["json_object"].is_object(), "{}", doc["json_object"]);
    let refusals = &doc["refusals"];
    for (case, needle) in [
        ("bad_type", "foo"),
        ("unsatisfiable", "minimum"),
        ("bad_regex", "regex"),
        ("unknown_format", "yaml"),
        ("two_at_once", "not several"),
    ] {
        let msg = refusals[case].as_str().unwrap_or("");
        assert!(msg != "accepted" && msg.contains(needle), "{case}: {msg}");
    }
    assert_eq!(doc["batch_equal"], true, "{doc:#}");
}
