//! Chat templates: the model's Jinja template (`tokenizer.chat_template`) turning a list of
//! messages into the prompt text.
//!
//! Templates are written for Python's Jinja2 as Hugging Face `transformers` and
//! llama-cpp-python run it, so the environment here imitates that one: `trim_blocks` and
//! `lstrip_blocks` on, undefined values lenient (print as nothing, iterate as empty, falsy),
//! Python string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...) through
//! minijinja-contrib's pycompat, and the globals `raise_exception` and `strftime_now` plus a
//! `tojson` filter in Python's `json.dumps` format.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

use super::error::{Result, TokenizerError};
use super::template_functions::{RaisedException, raise_exception, strftime_now, tojson};

/// The name the one template is stored under in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"`, `"tool"`, or whatever roles the model's template
    /// knows.
    pub role: String,
    /// The message text.
    pub content: String,
    /// The functions an assistant message called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The message as templates see it: `role`, `content`, and where present `tool_calls`
    /// (Hugging Face's layout: `{id, type: "function", function: {name, arguments}}` with
    /// the arguments as an object when they are one) and `tool_call_id`.
    fn template_value(&self) -> Value {
        let mut map = BTreeMap::from([
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(self.content.as_str())),
        ]);
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .iter()
                .map(|c| {
                    let arguments = match serde_json::from_str::<serde_json::Value>(&c.arguments) {
                        Ok(v @ serde_json::Value::Object(_)) => json_value(&v),
                        _ => Value::from(c.arguments.as_str()),
                    };
                    let function = Value::from_pairs([
                        ("name", Value::from(c.name.as_str())),
                        ("arguments", arguments),
                    ]);
                    Value::from_pairs([
                        ("id", Value::from(c.id.as_str())),
                        ("type", Value::from("function")),
                        ("function", function),
                    ])
                })
                .collect();
            map.insert("tool_calls", Value::from(calls));
        }
        if let Some(id) = &self.tool_call_id {
            map.insert("tool_call_id", Value::from(id.as_str()));
        }
        Value::from(map)
    }
}

/// One function call of an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_...`), which the `tool` message answering it repeats.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    /// Holds the compiled template and the Python-compatible functions it may call.
    env: Environment<'static>,
    /// The template's text (what it knows of tools and thinking is read from it).
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`. A syntax error is reported with its line.
    pub fn new(source: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| syntax_error(&e))?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| syntax_error(&e))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation. `add_generation_prompt` asks the template to open the
    /// assistant's turn; `bos_token` / `eos_token` are the texts the template may insert
    /// (the vocabulary's BOS and EOS token texts, or empty).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt, bos_token, eos_token)
    }

    /// [`ChatTemplate::render`] with `tools` (a list of `{"type": "function", "function":
    /// {...}}`, as Hugging Face's `apply_chat_template(tools=...)` passes them) for a template
    /// that renders them itself.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let messages: Vec<Value> = messages.iter().map(ChatMessage::template_value).collect();
        let mut context = BTreeMap::from([
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(bos_token)),
            ("eos_token", Value::from(eos_token)),
        ]);
        if let Some(tools) = tools {
            context.insert("tools", json_value(tools));
        }
        let context = Value::from(context);
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        template.render(context).map_err(|e| render_error(&e))
    }
}

/// A JSON value as a template value.
fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(a.iter().map(json_value).collect::<Vec<_>>()),
        // In the object's own order, as Python's dicts keep it.
        J::Object(o) => Value::from_pairs(o.iter().map(|(k, v)| (k.clone(), json_value(v)))),
    }
}

fn syntax_error(error: &minijinja::Error) -> TokenizerError {
    TokenizerError::TemplateSyntax {
        line: error.line().unwrap_or(0),
        message: error.detail().unwrap_or("invalid template").to_owned(),
    }
}

/// Maps a render failure, telling a deliberate `raise_exception` apart from a broken template.
fn render_error(error: &minijinja::Error) -> TokenizerError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(raised) = current.downcast_ref::<RaisedException>() {
            return TokenizerError::TemplateException {
                message: raised.0.clone(),
            };
        }
        source = current.source();
    }
    TokenizerError::TemplateRender {
        line: error.line().unwrap_or(0),
        message: match error.detail() {
            Some(detail) => format!("{}: {detail}", error.kind()),
            None => error.kind().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_template_with_default_system_prompt() {
        let template = ChatTemplate::new(SMOLLM2).unwrap();
        let text = template
            .render(
                &[ChatMessage::new("user", "Hi")],
                true,
                "<|im_start|>",
                "<|im_end|>",
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn syntax_error_reports_its_line() {
        let err =
            ChatTemplate::new("line one\n{% for m in messages %}\n{{ m.content }\n").unwrap_err();
        match err {
            TokenizerError::TemplateSyntax { line, .. } => assert_eq!(line, 3),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn raise_exception_fails_render_with_its_message() {
        let template = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok",
        )
        .unwrap();
        let err = template
            .render(&[ChatMessage::new("assistant", "x")], false, "", "")
            .unwrap_err();
        match err {
            TokenizerError::TemplateException { message } => {
                assert_eq!(message, "Conversation must start with a user message");
            }
            other => panic!("expected TemplateException, got {other:?}"),
        }
        let ok = template
            .render(&[ChatMessage::new("user", "x")], false, "", "")
            .unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn python_methods_blocks_trimming_and_lenient_undefined() {
        let source = "{% for m in messages %}\n  {% if m.content.strip().startswith('Hi') %}\n[{{ m.role.upper() }}:{{ m.content.strip() }}{{ tools }}]\n  {% endif %}\n{% endfor %}\n{% if tools is not defined %}none{% endif %}";
        let template = ChatTemplate::new(source).unwrap();
        let text = template
            .render(
                &[
                    ChatMessage::new("user", "  Hi there "),
                    ChatMessage::new("user", "no"),
                ],
                false,
                "",
                "",
            )
            .unwrap();
        assert_eq!(text, "[USER:Hi there]\nnone");
    }

    #[test]
    fn bos_eos_and_strftime_now_are_available() {
        let template =
            ChatTemplate::new("{{ bos_token }}{{ strftime_now('%Y') | length }}{{ eos_token }}")
                .unwrap();
        assert_eq!(
            template.render(&[], false, "<s>", "</s>").unwrap(),
            "<s>4</s>"
        );
    }

    #[test]
    fn undefined_attribute_access_fails_like_jinja2() {
        let template = ChatTemplate::new("{{ nothing.field }}").unwrap();
        let err = template.render(&[], false, "", "").unwrap_err();
        assert!(
            matches!(err, TokenizerError::TemplateRender { line: 1, .. }),
            "{err:?}"
        );
    }

    /// Qwen2.5's template renders tools, calls and results exactly as Python's jinja2 does
    /// for transformers (tests/fixtures/templates).
    #[test]
    fn tools_and_calls_render_as_transformers_renders_them() {
        let template = ChatTemplate::new(include_str!(
            "../../../tests/fixtures/templates/qwen2.5-instruct.jinja"
        ))
        .unwrap();
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now, in °C", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]);
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Zürich", "unit": "c"}"#.into(),
        });
        let result = |t: &str| {
            let mut m = ChatMessage::new("tool", t);
            m.tool_call_id = Some("call_1".into());
            m
        };
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Weather in Zürich?"),
            call,
            result(r#"{"t": 3}"#),
            result(r#"{"t": 4}"#),
        ];
        let text = template
            .render_with_tools(&messages, Some(&tools), true, "", "<|im_end|>")
            .unwrap();
        assert_eq!(
            text,
            include_str!("../../../tests/fixtures/templates/qwen2.5-instruct.tools.expected")
        );
    }

    #[test]
    fn chat_message_round_trips_through_json() {
        let message = ChatMessage::new("user", "hé\n");
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(json, r#"{"role":"user","content":"hé\n"}"#);
        assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), message);
    }
}
