//! Reasoning: models that think in `<think>...</think>` before they answer (DeepSeek-R1,
//! Qwen3). The answer's thinking goes to `reasoning_content` and the rest to `content`;
//! [`ReasoningParser`] splits the output as it arrives. A template whose generation prompt
//! already opens the thinking (DeepSeek-R1's ends in `<think>\n`) makes the output begin
//! inside it. Constraints (structured output, forced tool calls) apply after the thinking:
//! [`crate::grammar::GrammarSpec::AfterThinking`].

/// Opens the thinking.
pub const THINK_OPEN: &str = "<think>";
/// Ends the thinking.
pub const THINK_CLOSE: &str = "</think>";

/// Whether a model with this chat template thinks in `<think>` tags.
pub fn thinks(template: Option<&str>) -> bool {
    template.is_some_and(|t| t.contains(THINK_OPEN) && t.contains(THINK_CLOSE))
}

/// Whether a rendered prompt ending in `tail` leaves the model inside its thinking (the
/// generation prompt opened it).
pub fn prompt_opens_thinking(tail: &str) -> bool {
    let t = tail.trim_end();
    match t.rfind(THINK_OPEN) {
        Some(open) => {
            !t[open..].contains(THINK_CLOSE) && t[open + THINK_OPEN.len()..].trim().is_empty()
        }
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first text: thinking may open.
    Start,
    Thinking,
    Answer,
}

/// Splits output into thinking and answer as it arrives; token by token or all at once
/// gives the same split.
#[derive(Debug)]
pub struct ReasoningParser {
    state: State,
    buf: String,
    /// The answer has begun (the blank lines after `</think>` are dropped until it does).
    answering: bool,
}

/// A piece of output, split.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

impl ReasoningParser {
    /// `opened`: the prompt left the model inside its thinking.
    pub fn new(opened: bool) -> ReasoningParser {
        ReasoningParser {
            state: if opened {
                State::Thinking
            } else {
                State::Start
            },
            buf: String::new(),
            answering: false,
        }
    }

    /// Feeds output text.
    pub fn push(&mut self, text: &str) -> Split {
        self.buf.push_str(text);
        self.run(false)
    }

    /// The output has ended: what was held back (an unclosed thinking stays thinking).
    pub fn finish(&mut self) -> Split {
        self.run(true)
    }

    fn run(&mut self, finishing: bool) -> Split {
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.buf.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                        self.buf = rest.to_string();
                        self.state = State::Thinking;
                        continue;
                    }
                    if !finishing && THINK_OPEN.starts_with(trimmed) {
                        return out;
                    }
                    self.state = State::Answer;
                    self.answering = true;
                }
                State::Thinking => {
                    if let Some(at) = self.buf.find(THINK_CLOSE) {
                        out.reasoning.push_str(&self.buf[..at]);
                        self.buf = self.buf[at + THINK_CLOSE.len()..].to_string();
                        self.state = State::Answer;
                        continue;
                    }
                    let keep = if finishing {
                        0
                    } else {
                        crate::tools::partial_suffix(&self.buf, THINK_CLOSE)
                    };
                    let send = self.buf.len() - keep;
                    out.reasoning.push_str(&self.buf[..send]);
                    self.buf.drain(..send);
                    return out;
                }
                State::Answer => {
                    if !self.answering {
                        let trimmed = self.buf.trim_start();
                        if trimmed.is_empty() {
                            self.buf.clear();
                            return out;
                        }
                        self.buf = trimmed.to_string();
                        self.answering = true;
                    }
                    out.content.push_str(&self.buf);
                    self.buf.clear();
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(opened: bool, text: &str) -> Split {
        let mut whole = ReasoningParser::new(opened);
        let mut a = whole.push(text);
        let b = whole.finish();
        a.reasoning.push_str(&b.reasoning);
        a.content.push_str(&b.content);
        for n in [1, 2, 5] {
            let mut p = ReasoningParser::new(opened);
            let mut got = Split::default();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(n) {
                let s = p.push(&piece.iter().collect::<String>());
                got.reasoning.push_str(&s.reasoning);
                got.content.push_str(&s.content);
            }
            let s = p.finish();
            got.reasoning.push_str(&s.reasoning);
            got.content.push_str(&s.content);
            assert_eq!(got, a, "pieces of {n}: {text:?}");
        }
        a
    }

    #[test]
    fn thinking_and_answer_are_split_exactly() {
        let s = split(false, "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.");
        assert_eq!(s.reasoning, "\nLet me see: 2+2.\n");
        assert_eq!(s.content, "It is 4.");
        // Opened by the prompt (DeepSeek-R1).
        let s = split(true, "Hmm </thin k> é.</think>Answer <think>kept</think>");
        assert_eq!(s.reasoning, "Hmm </thin k> é.");
        assert_eq!(s.content, "Answer <think>kept</think>");
        // No thinking at all; thinking never closed.
        assert_eq!(split(false, "Just text").content, "Just text");
        assert_eq!(split(false, "  <thin").content, "  <thin");
        let s = split(true, "still thinking </thi");
        assert_eq!(
            (s.reasoning.as_str(), s.content.as_str()),
            ("still thinking </thi", "")
        );
    }

    #[test]
    fn templates_and_prompts_that_think() {
        assert!(thinks(Some("{{ '<think>' }}...{{ '</think>' }}")));
        assert!(!thinks(Some("<|im_start|>")));
        assert!(!thinks(None));
        assert!(prompt_opens_thinking("<|Assistant|><think>\n"));
        assert!(!prompt_opens_thinking("<think>\n\n</think>\n\n"));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
    }
}
