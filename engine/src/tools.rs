//! Tool calling: how each model family writes function calls, and the three things the
//! server needs from that: the prompt (tools and earlier calls rendered the way the model
//! was trained on), a grammar that forces valid calls (`tool_choice` `required` or a named
//! function: the arguments match the function's JSON schema), and a parser that turns the
//! output back into calls, incrementally, so a stream carries the arguments as they are
//! written.
//!
//! Families, told apart by the chat template's text:
//! - Hermes / Qwen: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block
//!   per call. Also the format of templates that know nothing of tools (SmolLM2): the tools
//!   are then described in the system message as Qwen2.5's template does, earlier calls
//!   written as `<tool_call>` blocks and results as `<tool_response>` blocks.
//! - Llama 3: the answer is `{"name": ..., "parameters": {...}}` (after `<|python_tag|>` or
//!   not), calls separated by `;`.
//! - Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
//! - DeepSeek-V3/R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n` +
//!   "```json\nARGS\n```" + `<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`.

use serde_json::{Value, json};

use crate::grammar::GrammarSpec;
use crate::tokenizer::{ChatMessage, Tokenizer};

/// How a model family writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
    DeepSeek,
}

/// A model's tool-call syntax: the family, and whether its template renders tools itself
/// (else they are written into the system message, Hermes style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSyntax {
    pub format: ToolFormat,
    pub native: bool,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON schema (an object schema).
    pub parameters: Value,
}

impl ToolDef {
    /// OpenAI's layout: `{"type": "function", "function": {name, description, parameters}}`.
    pub fn to_json(&self) -> Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), Value::from(self.name.as_str()));
        if let Some(d) = &self.description {
            function.insert("description".into(), Value::from(d.as_str()));
        }
        function.insert("parameters".into(), self.parameters.clone());
        json!({"type": "function", "function": Value::Object(function)})
    }
}

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";
const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolSyntax {
    /// The syntax of the model whose chat template is `template` (Hermes, not native, when
    /// the template shows no tool syntax or there is none).
    pub fn of_template(template: Option<&str>) -> ToolSyntax {
        let Some(t) = template else {
            return ToolSyntax {
                format: ToolFormat::Hermes,
                native: false,
            };
        };
        let format = if t.contains("tool▁calls▁begin") {
            Some(ToolFormat::DeepSeek)
        } else if t.contains(MISTRAL_CALLS) {
            Some(ToolFormat::Mistral)
        } else if t.contains(HERMES_OPEN) {
            Some(ToolFormat::Hermes)
        } else if t.contains(PYTHON_TAG) || t.contains("ipython") {
            Some(ToolFormat::Llama3)
        } else {
            None
        };
        match format {
            Some(format) if t.contains("tools") => ToolSyntax {
                format,
                native: true,
            },
            _ => ToolSyntax {
                format: ToolFormat::Hermes,
                native: false,
            },
        }
    }

    /// The syntax of `tokenizer`'s model.
    pub fn of(tokenizer: &Tokenizer) -> ToolSyntax {
        ToolSyntax::of_template(tokenizer.chat_template().map(|t| t.source()))
    }

    /// The conversation as the template gets it, and the tools to hand the template (a
    /// native template renders `tools` and the messages' `tool_calls` itself; otherwise the
    /// tools go into the system message and calls and results into the text). `tools` may
    /// be empty (a conversation with earlier calls, tools not offered now).
    pub fn prepare(
        &self,
        messages: Vec<ChatMessage>,
        tools: &[ToolDef],
    ) -> (Vec<ChatMessage>, Option<Value>) {
        let listed =
            (!tools.is_empty()).then(|| Value::Array(tools.iter().map(ToolDef::to_json).collect()));
        if self.native {
            return (messages, listed);
        }
        let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
        if let Some(list) = &listed {
            let mut text = String::from(
                "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>",
            );
            for t in list.as_array().into_iter().flatten() {
                text.push('\n');
                text.push_str(&t.to_string());
            }
            text.push_str("\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
            match messages.first() {
                Some(m) if m.role == "system" => {
                    out.push(ChatMessage::new(
                        "system",
                        format!("{}\n\n{text}", m.content),
                    ));
                }
                _ => out.push(ChatMessage::new("system", text)),
            }
        }
        let skip =
            usize::from(listed.is_some() && messages.first().is_some_and(|m| m.role == "system"));
        for m in messages.into_iter().skip(skip) {
            match m.role.as_str() {
                "assistant" if !m.tool_calls.is_empty() => {
                    let mut text = m.content.clone();
                    for c in &m.tool_calls {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        let call =
                            json!({"name": c.name, "arguments": arguments_value(&c.arguments)});
                        text.push_str(&format!("{HERMES_OPEN}\n{call}\n{HERMES_CLOSE}"));
                    }
                    out.push(ChatMessage::new("assistant", text));
                }
                "tool" => {
                    let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
                    // Consecutive results share one user turn, as Qwen's template writes them.
                    match out.last_mut() {
                        Some(last)
                            if last.role == "user"
                                && last.content.ends_with("</tool_response>") =>
                        {
                            last.content.push('\n');
                            last.content.push_str(&block);
                        }
                        _ => out.push(ChatMessage::new("user", block)),
                    }
                }
                _ => out.push(ChatMessage::new(m.role, m.content)),
            }
        }
        (out, None)
    }

    /// A Lark grammar whose every sentence is one call (or, with `parallel`, one or more) of
    /// one of `tools`, written in this family's syntax with the arguments matching the
    /// function's schema. `tokenizer` tells which markers are special tokens.
    pub fn grammar(&self, tools: &[ToolDef], parallel: bool, tokenizer: &Tokenizer) -> GrammarSpec {
        let lit = |text: &str| literal(tokenizer, text);
        let args_key = match self.format {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        };
        let mut rules = Vec::new();
        let mut alternatives = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let schema = crate::grammar::with_json_options(&object_schema(&t.parameters));
            rules.push(format!("args{i}: %json {schema}"));
            let call = match self.format {
                ToolFormat::DeepSeek => format!(
                    "{} {} {} {} args{i} {} {}",
                    lit(DS_CALL_BEGIN),
                    lit("function"),
                    lit(DS_SEP),
                    quote(&format!("{}\n```json\n", t.name)),
                    quote("\n```"),
                    lit(DS_CALL_END)
                ),
                _ => format!(
                    "{} args{i} \"}}\"",
                    quote(&format!("{{\"name\": \"{}\", \"{args_key}\": ", t.name))
                ),
            };
            rules.push(format!("call{i}: {call}"));
            alternatives.push(format!("call{i}"));
        }
        let call = format!("call: {}", alternatives.join(" | "));
        let start = match (self.format, parallel) {
            (ToolFormat::Hermes, false) => format!(
                "start: {} call {}",
                quote(&format!("{HERMES_OPEN}\n")),
                quote(&format!("\n{HERMES_CLOSE}"))
            ),
            (ToolFormat::Hermes, true) => format!(
                "start: block (\"\\n\" block)*\nblock: {} call {}",
                quote(&format!("{HERMES_OPEN}\n")),
                quote(&format!("\n{HERMES_CLOSE}"))
            ),
            (ToolFormat::Mistral, false) => {
                format!("start: {} \"[\" call \"]\"", lit(MISTRAL_CALLS))
            }
            (ToolFormat::Mistral, true) => {
                format!(
                    "start: {} \"[\" call (\", \" call)* \"]\"",
                    lit(MISTRAL_CALLS)
                )
            }
            (ToolFormat::Llama3, false) => "start: call".to_string(),
            (ToolFormat::Llama3, true) => "start: call (\"; \" call)*".to_string(),
            (ToolFormat::DeepSeek, false) => {
                format!("start: {} call {}", lit(DS_CALLS_BEGIN), lit(DS_CALLS_END))
            }
            (ToolFormat::DeepSeek, true) => {
                format!("start: {} call+ {}", lit(DS_CALLS_BEGIN), lit(DS_CALLS_END))
            }
        };
        let mut grammar = vec![start, call];
        grammar.extend(rules);
        GrammarSpec::Lark(grammar.join("\n"))
    }
}

/// `parameters` as an object schema (`{}` or absent: any object), with every object that
/// lists its properties closed to others unless it says otherwise (as OpenAI's strict
/// function calling reads a schema): a forced call then holds exactly the declared
/// arguments.
fn object_schema(parameters: &Value) -> Value {
    let mut schema = match parameters {
        Value::Object(o) if !o.is_empty() => parameters.clone(),
        _ => json!({"type": "object"}),
    };
    close_objects(&mut schema, 0);
    schema
}

fn close_objects(schema: &mut Value, depth: usize) {
    // Deeper than any sane schema: leave it as it is rather than recurse without end.
    if depth > 64 {
        return;
    }
    let Value::Object(o) = schema else {
        return;
    };
    if o.contains_key("properties") && !o.contains_key("additionalProperties") {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in o.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(children) = value {
                    for child in children.values_mut() {
                        close_objects(child, depth + 1);
                    }
                }
            }
            "items" | "additionalProperties" | "not" => close_objects(value, depth + 1),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(children) = value {
                    for child in children {
                        close_objects(child, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The arguments as a JSON value when they parse, else as the string they are.
fn arguments_value(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::from(arguments))
}

/// A Lark string literal.
fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// `text` in a Lark grammar: `<[id]>` when it is one special token of `tokenizer` (a string
/// literal could never match it), else a string literal.
fn literal(tokenizer: &Tokenizer, text: &str) -> String {
    if let Ok(ids) = tokenizer.encode(text, true)
        && let [id] = ids[..]
        && tokenizer.is_control(id)
    {
        return format!("<[{id}]>");
    }
    quote(text)
}

/// What the parser found in a piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Answer text (not a call).
    Text(String),
    /// Call `index` (from 0) of function `name` begins.
    Call { index: usize, name: String },
    /// More of call `index`'s arguments (JSON text).
    Arguments { index: usize, delta: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answer text, watching for the start of calls.
    Text,
    /// Between calls.
    Between,
    /// Inside a call.
    Call,
    /// After the last call allowed: the rest is dropped.
    Closed,
}

/// Turns a model's output into text and calls as it arrives. Feeding a whole answer at once
/// or token by token gives the same events, joined.
#[derive(Debug)]
pub struct ToolParser {
    format: ToolFormat,
    mode: Mode,
    /// Input not yet consumed.
    buf: String,
    /// Text of the call being read (after its opening marker).
    raw: String,
    /// The opening marker of the calls (given back as text if no call follows).
    opened: String,
    /// Whether the current call's name has been announced, and how many bytes of its
    /// arguments were sent.
    announced: bool,
    sent: usize,
    calls: usize,
    max_calls: Option<usize>,
    /// Output so far held only whitespace (a Llama 3 call must come first).
    at_start: bool,
}

/// How far a call's text has been read.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    /// The call ends before this byte of its text (the rest follows it).
    end: Option<usize>,
    /// The function's name, once complete.
    name: Option<String>,
    /// The arguments' text so far, and whether it is complete.
    args: Option<(usize, usize, bool)>,
    /// The arguments are a JSON string (sent decoded, once complete).
    args_is_string: bool,
    /// Not a call at all.
    invalid: bool,
}

impl ToolParser {
    /// A parser for `format`; `max_calls` (e.g. 1 when parallel calls are off) ends the
    /// parse after that many calls, dropping the rest.
    pub fn new(format: ToolFormat, max_calls: Option<usize>) -> ToolParser {
        ToolParser {
            format,
            mode: Mode::Text,
            buf: String::new(),
            raw: String::new(),
            opened: String::new(),
            announced: false,
            sent: 0,
            calls: 0,
            max_calls,
            at_start: true,
        }
    }

    /// Calls begun so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds output text; returns what it completes.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out, false) {}
        out
    }

    /// The output has ended: what was held back.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut out = Vec::new();
        while self.step(&mut out, true) {}
        match self.mode {
            Mode::Call => {
                let raw = std::mem::take(&mut self.raw);
                let scan = self.scan(&raw);
                if self.announced {
                    self.send_args(&raw, &scan, true, &mut out);
                } else {
                    let text = format!("{}{raw}", std::mem::take(&mut self.opened));
                    push_text(&mut out, text);
                }
                self.mode = Mode::Text;
            }
            Mode::Closed => self.buf.clear(),
            Mode::Text | Mode::Between => {
                let rest = std::mem::take(&mut self.buf);
                push_text(&mut out, rest);
            }
        }
        out
    }

    /// One step of the parse; false when it needs more input.
    fn step(&mut self, out: &mut Vec<ToolEvent>, finishing: bool) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        match self.mode {
            Mode::Closed => {
                self.buf.clear();
                false
            }
            Mode::Text => self.step_text(out, finishing),
            Mode::Between => self.step_between(finishing),
            Mode::Call => {
                let more = std::mem::take(&mut self.buf);
                self.raw.push_str(&more);
                let raw = std::mem::take(&mut self.raw);
                let scan = self.scan(&raw);
                if scan.invalid {
                    push_text(out, format!("{}{raw}", std::mem::take(&mut self.opened)));
                    self.mode = Mode::Text;
                    self.at_start = false;
                    return true;
                }
                if !self.announced
                    && let Some(name) = &scan.name
                {
                    out.push(ToolEvent::Call {
                        index: self.calls,
                        name: name.clone(),
                    });
                    self.announced = true;
                }
                match scan.end {
                    Some(end) => {
                        if self.announced {
                            self.send_args(&raw, &scan, true, out);
                        } else {
                            push_text(out, format!("{}{}", self.opened, &raw[..end]));
                        }
                        self.buf = raw[end..].to_string();
                        self.opened.clear();
                        self.mode = if self.max_calls.is_some_and(|m| self.calls >= m) {
                            Mode::Closed
                        } else {
                            Mode::Between
                        };
                        true
                    }
                    None => {
                        if self.announced {
                            self.send_args(&raw, &scan, false, out);
                        }
                        self.raw = raw;
                        false
                    }
                }
            }
        }
    }

    /// Sends the arguments not yet sent; `done` closes the call.
    fn send_args(&mut self, raw: &str, scan: &Scan, done: bool, out: &mut Vec<ToolEvent>) {
        let index = self.calls;
        if let Some((start, end, complete)) = scan.args {
            if scan.args_is_string {
                if complete && self.sent == 0 {
                    let text: String = serde_json::from_str(&raw[start..end]).unwrap_or_default();
                    self.sent = end - start;
                    if !text.is_empty() {
                        out.push(ToolEvent::Arguments { index, delta: text });
                    }
                }
            } else if end - start > self.sent {
                let delta = raw[start + self.sent..end].to_string();
                self.sent = end - start;
                out.push(ToolEvent::Arguments { index, delta });
            }
        } else if done {
            out.push(ToolEvent::Arguments {
                index,
                delta: "{}".into(),
            });
        }
        if done {
            self.calls += 1;
            self.announced = false;
            self.sent = 0;
        }
    }

    fn step_text(&mut self, out: &mut Vec<ToolEvent>, finishing: bool) -> bool {
        if self.format == ToolFormat::Llama3 {
            if !self.at_start {
                push_text(out, std::mem::take(&mut self.buf));
                return false;
            }
            let trimmed = self.buf.trim_start();
            if trimmed.is_empty() {
                return false;
            }
            if trimmed.starts_with('{') {
                self.buf = trimmed.to_string();
                self.at_start = false;
                self.mode = Mode::Call;
                return true;
            }
            if let Some(rest) = trimmed.strip_prefix(PYTHON_TAG) {
                self.opened = self.buf[..self.buf.len() - rest.len()].to_string();
                self.buf = rest.trim_start().to_string();
                self.at_start = false;
                self.mode = Mode::Call;
                return true;
            }
            if PYTHON_TAG.starts_with(trimmed) && !finishing {
                return false;
            }
            self.at_start = false;
            return true;
        }
        let marker = match self.format {
            ToolFormat::Hermes => HERMES_OPEN,
            ToolFormat::Mistral => MISTRAL_CALLS,
            ToolFormat::DeepSeek => DS_CALLS_BEGIN,
            ToolFormat::Llama3 => PYTHON_TAG,
        };
        if let Some(at) = self.buf.find(marker) {
            let before = self.buf[..at].to_string();
            push_text(out, before);
            self.opened = marker.to_string();
            self.buf = self.buf[at + marker.len()..].to_string();
            self.mode = match self.format {
                ToolFormat::Hermes => Mode::Call,
                _ => Mode::Between,
            };
            self.at_start = false;
            return true;
        }
        let keep = if finishing {
            0
        } else {
            partial_suffix(&self.buf, marker)
        };
        let send = self.buf.len() - keep;
        if send > 0 {
            let text = self.buf[..send].to_string();
            self.buf.drain(..send);
            if !text.trim().is_empty() {
                self.at_start = false;
            }
            push_text(out, text);
        }
        false
    }

    fn step_between(&mut self, finishing: bool) -> bool {
        let trimmed = self.buf.trim_start();
        if trimmed.is_empty() {
            return false;
        }
        let expect: &[&str] = match self.format {
            ToolFormat::Hermes => &[HERMES_OPEN],
            ToolFormat::Mistral => &["[", ",", "]", "{"],
            ToolFormat::Llama3 => &[";", "{"],
            ToolFormat::DeepSeek => &[DS_CALL_BEGIN, DS_CALLS_END],
        };
        for m in expect {
            if let Some(rest) = trimmed.strip_prefix(m) {
                let rest = rest.to_string();
                match *m {
                    "{" => {
                        // The object is the call's own text.
                        self.buf = trimmed.to_string();
                        self.mode = Mode::Call;
                    }
                    "[" | "," | ";" => self.buf = rest,
                    "]" | DS_CALLS_END => {
                        self.buf = rest;
                        self.mode = Mode::Text;
                    }
                    _ => {
                        self.opened = (*m).to_string();
                        self.buf = rest;
                        self.mode = Mode::Call;
                    }
                }
                return true;
            }
            if m.starts_with(trimmed) && !finishing {
                return false;
            }
        }
        // Anything else ends the calls: it is answer text.
        self.mode = Mode::Text;
        true
    }

    fn scan(&self, raw: &str) -> Scan {
        match self.format {
            ToolFormat::DeepSeek => scan_deepseek(raw),
            ToolFormat::Hermes => {
                let mut scan = scan_object(raw.trim_start());
                let lead = raw.len() - raw.trim_start().len();
                shift(&mut scan, lead);
                // Then `</tool_call>` (a missing one is tolerated).
                if let Some(end) = scan.end {
                    let after = &raw[end..];
                    let t = after.trim_start();
                    if let Some(rest) = t.strip_prefix(HERMES_CLOSE) {
                        scan.end = Some(raw.len() - rest.len());
                    } else if HERMES_CLOSE.starts_with(t) {
                        // Nothing yet, or the closing tag arriving.
                        scan.end = None;
                    }
                }
                scan
            }
            ToolFormat::Mistral | ToolFormat::Llama3 => {
                let mut scan = scan_object(raw.trim_start());
                shift(&mut scan, raw.len() - raw.trim_start().len());
                scan
            }
        }
    }
}

fn push_text(out: &mut Vec<ToolEvent>, text: String) {
    if text.is_empty() {
        return;
    }
    if let Some(ToolEvent::Text(t)) = out.last_mut() {
        t.push_str(&text);
    } else {
        out.push(ToolEvent::Text(text));
    }
}

fn shift(scan: &mut Scan, by: usize) {
    scan.end = scan.end.map(|e| e + by);
    scan.args = scan.args.map(|(s, e, c)| (s + by, e + by, c));
}

/// The length of the longest end of `text` that begins `marker` (held back: the marker may
/// be arriving), on a character boundary.
pub(crate) fn partial_suffix(text: &str, marker: &str) -> usize {
    let max = marker.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && marker.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

/// Reads a JSON object `{"name": ..., "arguments" | "parameters": ...}` as far as it goes.
fn scan_object(raw: &str) -> Scan {
    let b = raw.as_bytes();
    let mut scan = Scan::default();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    if b.is_empty() {
        return scan;
    }
    if b[0] != b'{' {
        scan.invalid = true;
        return scan;
    }
    i += 1;
    loop {
        ws(&mut i);
        if i >= b.len() {
            return scan;
        }
        match b[i] {
            b'}' => {
                scan.end = Some(i + 1);
                return scan;
            }
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => {
                scan.invalid = true;
                return scan;
            }
        }
        let Some(key_end) = string_end(b, i) else {
            return scan;
        };
        let key: String = serde_json::from_str(&raw[i..key_end]).unwrap_or_default();
        i = key_end;
        ws(&mut i);
        if i >= b.len() {
            return scan;
        }
        if b[i] != b':' {
            scan.invalid = true;
            return scan;
        }
        i += 1;
        ws(&mut i);
        if i >= b.len() {
            return scan;
        }
        let start = i;
        let end = value_end(b, i);
        let is_args = key == "arguments" || key == "parameters";
        match end {
            Some(end) => {
                if key == "name" {
                    scan.name = serde_json::from_str::<String>(&raw[start..end]).ok();
                    if scan.name.is_none() {
                        scan.invalid = true;
                        return scan;
                    }
                } else if is_args {
                    scan.args = Some((start, end, true));
                    scan.args_is_string = b[start] == b'"';
                }
                i = end;
            }
            None => {
                if is_args {
                    scan.args = Some((start, b.len(), false));
                    scan.args_is_string = b[start] == b'"';
                }
                return scan;
            }
        }
    }
}

/// The end of the JSON string starting at `b[i]` (a `"`), if it is complete.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end of the JSON value starting at `b[i]`, if it is complete (a number or literal is
/// complete once a character that cannot continue it follows).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let j = i + b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())?;
            Some(j)
        }
    }
}

/// Reads a DeepSeek call (after `<｜tool▁call▁begin｜>`): `TYPE<｜tool▁sep｜>NAME\n```json\n`
/// ARGS "\n```" `<｜tool▁call▁end｜>`.
fn scan_deepseek(raw: &str) -> Scan {
    let mut scan = Scan::default();
    let Some(sep) = raw.find(DS_SEP) else {
        return scan;
    };
    let after = sep + DS_SEP.len();
    let Some(nl) = raw[after..].find('\n') else {
        return scan;
    };
    scan.name = Some(raw[after..after + nl].trim().to_string());
    let body = after + nl + 1;
    let fence = "```json";
    let rest = &raw[body..];
    let Some(open) = rest.find(fence) else {
        if !fence.starts_with(rest.trim_start()) && !rest.trim_start().is_empty() {
            scan.invalid = true;
        }
        return scan;
    };
    let mut start = body + open + fence.len();
    if raw[start..].starts_with('\n') {
        start += 1;
    } else if raw.len() == start {
        return scan;
    }
    match raw[start..].find("\n```") {
        Some(close) => {
            scan.args = Some((start, start + close, true));
            let tail = &raw[start + close + 4..];
            if let Some(at) = tail.find(DS_CALL_END) {
                scan.end = Some(raw.len() - tail.len() + at + DS_CALL_END.len());
            }
        }
        None => {
            let keep = partial_suffix(&raw[start..], "\n```");
            scan.args = Some((start, raw.len() - keep, false));
        }
    }
    scan
}

/// A whole answer's text and calls, parsed at once.
pub fn parse_whole(
    format: ToolFormat,
    max_calls: Option<usize>,
    text: &str,
) -> (String, Vec<(String, String)>) {
    let mut parser = ToolParser::new(format, max_calls);
    let mut events = parser.push(text);
    events.extend(parser.finish());
    collect(events)
}

/// The text and `(name, arguments)` calls that `events` add up to.
pub fn collect(events: Vec<ToolEvent>) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for e in events {
        match e {
            ToolEvent::Text(t) => text.push_str(&t),
            ToolEvent::Call { name, .. } => calls.push((name, String::new())),
            ToolEvent::Arguments { index, delta } => {
                if let Some(c) = calls.get_mut(index) {
                    c.1.push_str(&delta);
                }
            }
        }
    }
    (text, calls)
}

#[cfg(test)]
mod tests;
