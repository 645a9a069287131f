//! The Python-side helpers chat templates expect: `raise_exception`, `strftime_now` and a
//! `tojson` filter that writes what Python's `json.dumps` writes.
//!
//! `transformers` and llama-cpp-python hand these to Jinja2 when they render a chat template;
//! real templates call them (Llama 3.1 prints `strftime_now("%d %b %Y")`, many templates
//! refuse bad role orders with `raise_exception`, tool-calling ones print `tojson`). The
//! workspace builds minijinja without its `json` feature, and its `tojson` would not match
//! Python's spacing anyway, so the filter is written here.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// The message of a template's `raise_exception`, carried as the source of the render error
/// so that it can be told apart from a broken template.
#[derive(Debug)]
pub(crate) struct RaisedException(pub String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(message)`: fails the render with `message`.
pub(crate) fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: the current UTC time formatted like Python's `strftime` (the common
/// directives; an unknown one is copied as is).
pub(crate) fn strftime_now(format: &str) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    format_utc(seconds, format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats `unix_seconds` (UTC) with a `strftime` format.
fn format_utc(unix_seconds: u64, format: &str) -> String {
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    // Civil-from-days (H. Hinnant), for days since 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year_march = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_march = (5 * day_of_year_march + 2) / 153;
    let day = day_of_year_march - (153 * month_march + 2) / 5 + 1;
    let month = if month_march < 10 {
        month_march + 3
    } else {
        month_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let weekday = ((days + 3) % 7) as usize; // 1970-01-01 was a Thursday; 0 = Monday.
    let month_name = MONTHS[(month - 1) as usize];
    let weekday_name = WEEKDAYS[weekday];
    let is_leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = cumulative[(month - 1) as usize] + day + u64::from(is_leap && month > 2);
    let hour12 = if hour.is_multiple_of(12) {
        12
    } else {
        hour % 12
    };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Writing to a String cannot fail.
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year % 100),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:>2}"),
            Some('-') if chars.clone().next() == Some('d') => {
                chars.next();
                write!(out, "{day}")
            }
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{hour12:02}"),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => out.write_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('B') => out.write_str(month_name),
            Some('b') | Some('h') => out.write_str(&month_name[..3]),
            Some('A') => out.write_str(weekday_name),
            Some('a') => out.write_str(&weekday_name[..3]),
            Some('%') => out.write_str("%"),
            Some(other) => write!(out, "%{other}"),
            None => out.write_str("%"),
        };
    }
    out
}

/// `value | tojson(indent=None, sort_keys=False, ensure_ascii=False)`, as `transformers`
/// defines it: Python's `json.dumps` output, `", "` / `": "` separators without indent.
pub(crate) fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(out)
}

struct JsonStyle {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(
    value: &Value,
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => match value.as_i64() {
            Some(int) => out.push_str(&int.to_string()),
            None => out.push_str(&python_float(f64::try_from(value.clone())?)),
        },
        ValueKind::String | ValueKind::Plain | ValueKind::Bytes => {
            write_json_string(&value.to_string(), style.ensure_ascii, out);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, style, depth, ('[', ']'), &items, |item, out| {
                write_json(item, style, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.as_str() {
                    Some(text) => text.to_owned(),
                    None => {
                        let mut text = String::new();
                        write_json(&key, style, depth, &mut text)?;
                        text
                    }
                };
                entries.push((key, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                style,
                depth,
                ('{', '}'),
                &entries,
                |(key, item), out| {
                    write_json_string(key, style.ensure_ascii, out);
                    out.push_str(": ");
                    write_json(item, style, depth + 1, out)
                },
            )?;
        }
        ValueKind::Invalid => {
            return Err(Error::new(
                ErrorKind::BadSerialization,
                "tojson got an invalid value",
            ));
        }
        _ => write_json_string(&value.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

/// Writes `[a, b]` / `{...}`, or the indented form with one item per line.
fn write_container<T>(
    out: &mut String,
    style: &JsonStyle,
    depth: usize,
    (open, close): (char, char),
    items: &[T],
    mut write_item: impl FnMut(&T, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (index, item) in items.iter().enumerate() {
        match style.indent {
            Some(width) => {
                out.push_str(if index == 0 { "\n" } else { ",\n" });
                out.push_str(&" ".repeat(width * (depth + 1)));
            }
            None if index > 0 => out.push_str(", "),
            None => {}
        }
        write_item(item, out)?;
    }
    if let Some(width) = style.indent {
        out.push('\n');
        out.push_str(&" ".repeat(width * depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_string(text: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr` of a float as `json.dumps` writes it.
fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let text = format!("{value:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Environment;

    #[test]
    fn formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(format_utc(t, "%Y-%m-%d %H:%M:%S"), "2024-02-29 13:05:09");
        assert_eq!(format_utc(t, "%d %b %Y"), "29 Feb 2024");
        assert_eq!(
            format_utc(t, "%A %B %-d, %I %p %j %%"),
            "Thursday February 29, 01 PM 060 %"
        );
        assert_eq!(format_utc(0, "%a %d %b %Y"), "Thu 01 Jan 1970");
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d %a"), "2000-02-29 Tue");
    }

    fn render(source: &str) -> String {
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
        env.render_str(source, ()).unwrap()
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        assert_eq!(
            render(r#"{{ {"a": [1, 2.5, none, true], "é": "x\"\n"} | tojson }}"#),
            r#"{"a": [1, 2.5, null, true], "é": "x\"\n"}"#
        );
        assert_eq!(
            render("{{ [] | tojson }}{{ {} | tojson(indent=2) }}"),
            "[]{}"
        );
        assert_eq!(
            render(r#"{{ {"b": 1, "a": [1]} | tojson(indent=2, sort_keys=true) }}"#),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": 1\n}"
        );
        assert_eq!(
            render(r#"{{ "é😀" | tojson(ensure_ascii=true) }}"#),
            r#""\u00e9\ud83d\ude00""#
        );
        assert_eq!(python_float(1e20), "1e+20");
        assert_eq!(python_float(1.0), "1.0");
    }
}
