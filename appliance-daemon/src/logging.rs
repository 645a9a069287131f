//! The daemon's log: `tracing` lines on stderr, one event per line whatever the event
//! carries.
//!
//! Client strings reach the log (file names, model names, paths, user fields): a newline
//! or a terminal escape in one would let a client forge log lines or rewrite an admin's
//! terminal. Every line passes through [`Escaping`], which writes control characters in
//! the line as `\n`, `\r`, `\t` or `\u{1b}`; only the line's own final newline stays.

use std::io::Write;

use crate::config::LogFormat;

/// `text` with control characters written as escapes (`\n`, `\u{1b}`), for messages that
/// quote client text.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
        c => out.push(c),
    }
}

/// A writer that escapes control characters in each line it gets (the formatter writes
/// one whole event at a time), keeping one final newline.
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(b) => (b, true),
            None => (&*text, false),
        };
        let mut out = escape_controls(body);
        if newline {
            out.push('\n');
        }
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Logs to stderr in `format`, at the level `OASIS_LOG` names (default `info`).
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OASIS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours are escapes too: the escaping writer would show them as text.
        .with_ansi(false)
        .with_writer(|| Escaping(std::io::stderr()));
    // A second initialisation (tests) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_string_cannot_forge_a_log_line() {
        let mut out = Vec::new();
        let line = "INFO upload received file=a.gguf\nINFO forged admin login\x1b[2J\n";
        Escaping(&mut out)
            .write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text,
            "INFO upload received file=a.gguf\\nINFO forged admin login\\u{1b}[2J\n"
        );
        assert_eq!(text.lines().count(), 1);
        assert_eq!(escape_controls("a\u{0}b\té"), "a\\u{0}b\\té");
    }
}
