//! The JSON body extractor: content type, size, UTF-8 and shape checked in that order,
//! each failure an OpenAI error naming what is wrong (and, for a bad field, which one).

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A request body parsed as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match content_type.as_deref() {
            Some(ct) if is_json(ct) => {}
            Some(ct) => return Err(ApiError::unsupported_media_type(ct)),
            None => return Err(ApiError::unsupported_media_type("none")),
        }
        let bytes = read_body(
            req.into_body(),
            state.config.max_body_bytes,
            state.config.idle_timeout,
        )
        .await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Reads a whole body of at most `limit` bytes; 413 beyond it, 408 when it sends nothing
/// for `idle` (a client that trickles a body cannot hold a connection for ever).
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    idle: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => return Ok(out.into()),
            Ok(Some(Err(e))) => {
                // The length layer's own refusal, or a body cut short.
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                {
                    return Err(ApiError::too_large(limit));
                }
                let mut err = ApiError::invalid(format!("the request body was cut short: {e}"));
                err.close_connection = true;
                return Err(err);
            }
            Err(_) => return Err(ApiError::body_timeout(idle)),
        };
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
}

/// JSON does not tell `2.0` from `2`, and JSON Schema counts both as integers: numbers
/// with no fractional part (within i64) become integers, so `"max_tokens": 64.0` is read
/// as 64. Floats fields take integers as they are.
fn integral_floats_to_ints(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f >= i64::MIN as f64
                && f < i64::MAX as f64
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_ints),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_ints),
        _ => {}
    }
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses a JSON body into `T`, with errors that name the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; send a JSON object",
        ));
    }
    let mut raw: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}")))?;
    if !raw.is_object() {
        // serde would read a struct from a list of its fields in order.
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    integral_floats_to_ints(&mut raw);
    let value: T = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if let Some(field) = missing_field(&msg) {
            let full = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return ApiError::invalid_param(full.clone(), format!("`{full}` is required"));
        }
        if path == "." {
            ApiError::invalid(format!("the request body does not match the schema: {msg}"))
        } else {
            ApiError::invalid_param(path.clone(), format!("`{path}`: {msg}"))
        }
    })?;
    Ok(value)
}

/// `x` from serde's "missing field `x`" message.
fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::openai::ChatCompletionRequest;

    fn err(body: &str) -> ApiError {
        parse::<ChatCompletionRequest>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"model": "m"}"#);
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert_eq!(e.message, "`messages` is required");
        let e = err(r#"{"model": "m", "messages": [], "temperature": "hot"}"#);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = err(r#"{"model": "m", "messages": [{"content": "x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = err(r#"{"model": "m", "#);
        assert!(
            e.message.starts_with("the request body is not valid JSON"),
            "{}",
            e.message
        );
        let e = parse::<ChatCompletionRequest>(b"{\"model\": \"\xff\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
