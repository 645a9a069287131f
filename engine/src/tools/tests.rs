use super::*;

/// Feeds `text` in pieces of `n` characters and joins the events.
fn streamed(format: ToolFormat, max_calls: Option<usize>, text: &str, n: usize) -> Vec<ToolEvent> {
    let mut p = ToolParser::new(format, max_calls);
    let chars: Vec<char> = text.chars().collect();
    let mut events = Vec::new();
    for piece in chars.chunks(n) {
        events.extend(p.push(&piece.iter().collect::<String>()));
    }
    events.extend(p.finish());
    events
}

/// Whole and streamed (1, 2, 3, 7 characters at a time) parses agree; returns the parse.
fn parse(
    format: ToolFormat,
    max_calls: Option<usize>,
    text: &str,
) -> (String, Vec<(String, String)>) {
    let whole = parse_whole(format, max_calls, text);
    for n in [1, 2, 3, 7] {
        assert_eq!(
            collect(streamed(format, max_calls, text, n)),
            whole,
            "pieces of {n}: {text:?}"
        );
    }
    whole
}

fn call(name: &str, args: &str) -> (String, String) {
    (name.to_string(), args.to_string())
}

#[test]
fn hermes_calls_between_text() {
    let text = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let (content, calls) = parse(ToolFormat::Hermes, None, text);
    assert_eq!(content, "Let me look.\n");
    assert_eq!(
        calls,
        [
            call("get_weather", r#"{"city": "Zürich", "days": [1, 2]}"#),
            call("get_time", "{}")
        ]
    );
    // Parallel calls off: the first only.
    let (_, calls) = parse(ToolFormat::Hermes, Some(1), text);
    assert_eq!(
        calls,
        [call("get_weather", r#"{"city": "Zürich", "days": [1, 2]}"#)]
    );
}

#[test]
fn hermes_streams_arguments_before_the_call_closes() {
    let mut p = ToolParser::new(ToolFormat::Hermes, None);
    let mut events = p.push("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"a b");
    assert_eq!(
        events,
        [
            ToolEvent::Call {
                index: 0,
                name: "f".into()
            },
            ToolEvent::Arguments {
                index: 0,
                delta: "{\"q\": \"a b".into()
            }
        ]
    );
    events = p.push(" c\"}}\n</tool_");
    assert_eq!(
        events,
        [ToolEvent::Arguments {
            index: 0,
            delta: " c\"}".into()
        }]
    );
    events = p.push("call> done");
    assert_eq!(events, [ToolEvent::Text(" done".into())]);
    assert_eq!(p.finish(), []);
    assert_eq!(p.calls(), 1);
}

#[test]
fn hermes_text_that_only_looks_like_a_call_stays_text() {
    let (content, calls) = parse(ToolFormat::Hermes, None, "a <tool_ b <tool_call>not json");
    assert_eq!(content, "a <tool_ b <tool_call>not json");
    assert!(calls.is_empty());
    let (content, calls) = parse(
        ToolFormat::Hermes,
        None,
        "<tool_call>{\"arguments\": {}}</tool_call> x",
    );
    assert_eq!(content, "<tool_call>{\"arguments\": {}}</tool_call> x");
    assert!(calls.is_empty());
    // Cut off inside a call that had begun: the call keeps what it had.
    let (content, calls) = parse(
        ToolFormat::Hermes,
        None,
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1",
    );
    assert_eq!(content, "");
    assert_eq!(calls, [call("f", "{\"a\": 1")]);
}

#[test]
fn arguments_given_as_a_string_or_before_the_name() {
    let (_, calls) = parse(
        ToolFormat::Hermes,
        None,
        "<tool_call>{\"arguments\": {\"x\": \"}\"}, \"name\": \"g\"}</tool_call>",
    );
    assert_eq!(calls, [call("g", "{\"x\": \"}\"}")]);
    let (_, calls) = parse(
        ToolFormat::Hermes,
        None,
        "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>",
    );
    assert_eq!(calls, [call("g", "{\"x\": 1}")]);
}

#[test]
fn mistral_llama3_and_deepseek_calls() {
    let (content, calls) = parse(
        ToolFormat::Mistral,
        None,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"n\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
    );
    assert_eq!(content, "");
    assert_eq!(calls, [call("a", "{\"n\": 1}"), call("b", "{}")]);

    let (content, calls) = parse(
        ToolFormat::Llama3,
        None,
        "\n{\"name\": \"a\", \"parameters\": {\"n\": 1.5}}; {\"name\": \"b\", \"parameters\": {\"s\": \"x\"}}",
    );
    assert_eq!(content, "");
    assert_eq!(
        calls,
        [call("a", "{\"n\": 1.5}"), call("b", "{\"s\": \"x\"}")]
    );
    let (content, calls) = parse(
        ToolFormat::Llama3,
        None,
        "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}",
    );
    assert_eq!((content.as_str(), calls), ("", vec![call("a", "{}")]));
    // A JSON answer that is not a call, and text: both stay text.
    let (content, calls) = parse(ToolFormat::Llama3, None, "{\"answer\": 42}");
    assert_eq!((content.as_str(), calls.len()), ("{\"answer\": 42}", 0));
    let (content, calls) = parse(ToolFormat::Llama3, None, "It is {\"name\": \"a\"}");
    assert_eq!(
        (content.as_str(), calls.len()),
        ("It is {\"name\": \"a\"}", 0)
    );

    let ds = "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let (content, calls) = parse(ToolFormat::DeepSeek, None, ds);
    assert_eq!(content, "Sure.");
    assert_eq!(
        calls,
        [
            call("get_weather", "{\"city\": \"Paris\"}"),
            call("get_time", "{}")
        ]
    );
}

#[test]
fn families_are_told_apart_by_their_templates() {
    let of = |t: &str| ToolSyntax::of_template(Some(t));
    assert_eq!(
        of("{{ messages }}"),
        ToolSyntax {
            format: ToolFormat::Hermes,
            native: false
        }
    );
    assert!(!ToolSyntax::of_template(None).native);
    assert_eq!(
        of("{% if tools %}<tools>{% endif %}<tool_call>"),
        ToolSyntax {
            format: ToolFormat::Hermes,
            native: true
        }
    );
    assert_eq!(
        of("{% if tools %}[TOOL_CALLS]{% endif %}").format,
        ToolFormat::Mistral
    );
    assert_eq!(
        of("{% if tools %}<|python_tag|>{% endif %}").format,
        ToolFormat::Llama3
    );
    assert_eq!(
        of("{% if tools %}<｜tool▁calls▁begin｜>{% endif %}").format,
        ToolFormat::DeepSeek
    );
}

#[test]
fn a_template_without_tools_gets_them_in_the_system_message() {
    let syntax = ToolSyntax::of_template(None);
    let tools = [ToolDef {
        name: "get_weather".into(),
        description: Some("Weather now".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }];
    let mut assistant = ChatMessage::new("assistant", "");
    assistant.tool_calls.push(crate::tokenizer::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\": \"Oslo\"}".into(),
    });
    let mut result = ChatMessage::new("tool", "{\"temp\": 3}");
    result.tool_call_id = Some("call_1".into());
    let messages = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Weather in Oslo?"),
        assistant,
        result.clone(),
        result,
    ];
    let (out, listed) = syntax.prepare(messages, &tools);
    assert!(listed.is_none());
    let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(out[0].content.starts_with("Be brief.\n\n# Tools"));
    assert!(out[0].content.contains(
        r#"<tools>
{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":"#
    ));
    assert_eq!(
        out[2].content,
        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"
    );
    assert_eq!(
        out[3].content,
        "<tool_response>\n{\"temp\": 3}\n</tool_response>\n<tool_response>\n{\"temp\": 3}\n</tool_response>"
    );
}

#[test]
fn forced_call_schemas_close_objects_that_list_properties() {
    let schema = object_schema(&json!({
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}},
                       "c": {"type": "array", "items": {"type": "object", "properties": {}}},
                       "d": {"type": "object", "properties": {}, "additionalProperties": true}},
    }));
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(
        schema["properties"]["a"]["additionalProperties"],
        json!(false)
    );
    assert_eq!(
        schema["properties"]["c"]["items"]["additionalProperties"],
        json!(false)
    );
    assert_eq!(
        schema["properties"]["d"]["additionalProperties"],
        json!(true)
    );
    assert_eq!(object_schema(&json!({})), json!({"type": "object"}));
}
