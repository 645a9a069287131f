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
    /// `"system"`, `"user"`, `"assistant"`, or whatever roles the model's template knows.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    /// Holds the compiled template and the Python-compatible functions it may call.
    env: Environment<'static>,
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
        Ok(ChatTemplate { env })
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
        let messages: Vec<Value> = messages
            .iter()
            .map(|message| {
                Value::from(BTreeMap::from([
                    ("role", Value::from(message.role.as_str())),
                    ("content", Value::from(message.content.as_str())),
                ]))
            })
            .collect();
        let context = Value::from(BTreeMap::from([
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(bos_token)),
            ("eos_token", Value::from(eos_token)),
        ]));
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| render_error(&e))?;
        template.render(context).map_err(|e| render_error(&e))
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

    #[test]
    fn chat_message_round_trips_through_json() {
        let message = ChatMessage::new("user", "hé\n");
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(json, r#"{"role":"user","content":"hé\n"}"#);
        assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), message);
    }
}
