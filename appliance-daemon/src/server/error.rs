//! The one place where failures become HTTP: a status code and OpenAI's error body,
//! `{"error": {"message", "type", "param", "code"}}`, with a message that states the bound
//! and no internals. Real bugs (500) are logged with the request id; the client only sees
//! that id.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use oasis_api::{ErrorBody, ErrorDetail};

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
    /// Seconds after which a retry may succeed (429/503).
    pub retry_after: Option<Duration>,
    /// Answer with `Connection: close`: the request's body was not read to its end, so
    /// the connection cannot carry another request.
    pub close_connection: bool,
}

tokio::task_local! {
    /// The request id of the request being handled (set by the router's outer
    /// middleware), so a 500 can name it wherever it is made.
    pub static REQUEST_ID: String;
}

/// The id of the request this task is handling, or `-` outside one.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_string())
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
            close_connection: false,
        }
    }

    /// 400: the request is malformed or a value is out of bounds.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        Self::invalid(message).with_param(param)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        let p = param.into();
        self.param = (!p.is_empty()).then_some(p);
        self
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// 404 for a model id the daemon does not serve.
    pub fn model_not_found(id: &str, served: &[String]) -> ApiError {
        let list = if served.is_empty() {
            "none".to_string()
        } else {
            served.join(", ")
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{id}` does not exist (served: {list})"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for something the daemon does not have (a GPU index, ...).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    /// 409: the request conflicts with the daemon's state (a name taken, a model in use).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", message).with_code("conflict")
    }

    /// 507: the volume has no room for what was asked.
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INSUFFICIENT_STORAGE, "server_error", message)
            .with_code("insufficient_storage")
    }

    /// 404 for an unknown route.
    pub fn route_not_found(method: &str, path: &str) -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {method} {path}"),
        )
        .with_code("unknown_url")
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} is not allowed on {path}"),
        )
        .with_code("method_not_allowed")
    }

    /// 413: the body is larger than the configured bound.
    /// The rest of the body is not read, so the connection closes after the answer.
    pub fn too_large(limit: usize) -> ApiError {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large");
        e.close_connection = true;
        e
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(got: &str) -> ApiError {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!(
                "The request body must be JSON with `Content-Type: application/json`, got `{got}`"
            ),
        )
        .with_code("unsupported_media_type")
    }

    /// 429 with `Retry-After`: the model's waiting room is full.
    pub fn queue_full(message: impl Into<String>, retry_after: Duration) -> ApiError {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .with_code("queue_full");
        e.retry_after = Some(retry_after);
        e
    }

    /// 503 with `Retry-After`: the daemon is shutting down.
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> ApiError {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .with_code("overloaded");
        e.retry_after = Some(retry_after);
        e
    }

    /// 504: the request ran past the configured timeout.
    pub fn timeout(limit: Duration) -> ApiError {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            format!("The request did not finish within {} s", limit.as_secs()),
        )
        .with_code("timeout")
    }

    /// 408: a request body stopped arriving.
    pub fn body_timeout(idle: Duration) -> ApiError {
        let mut e = Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "The request body sent nothing for {} s, the limit",
                idle.as_secs()
            ),
        )
        .with_code("body_timeout");
        e.close_connection = true;
        e
    }

    /// 500: a bug. The cause is logged with the request id; the client gets the id to
    /// report.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let request_id = current_request_id();
        tracing::error!(request_id, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("Internal error; report request id {request_id}"),
        )
        .with_code("internal_error")
    }

    /// The one mapping of engine errors to HTTP: what the request asked for and the
    /// engine cannot do is the client's (400), an engine that has stopped is 503, and
    /// anything else is a bug (500).
    pub fn engine(e: &engine::EngineError) -> ApiError {
        use engine::ErrorClass;
        match e.class() {
            ErrorClass::Request => ApiError::invalid(e.to_string()).with_code("invalid_request"),
            ErrorClass::Unavailable => {
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    format!("The model cannot serve now: {e}"),
                )
                .with_code("model_unavailable");
                err.retry_after = Some(Duration::from_secs(5));
                err
            }
            ErrorClass::Internal => ApiError::internal(e),
        }
    }

    /// The JSON body, for places that build responses by hand (SSE error events).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.into(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.close_connection {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 16, finding 7): engine errors had no single mapping, so one the
    /// request caused ("the prompt needs N cache blocks") came back as 500.
    #[test]
    fn engine_errors_map_by_whose_fault_they_are() {
        use engine::EngineError;
        let status = |e: EngineError| ApiError::engine(&e).status;
        assert_eq!(
            status(EngineError::InvalidRequest(
                "the prompt needs 9 cache blocks but the pool has 4".into()
            )),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(EngineError::NoTokenizer { model: "m".into() }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(EngineError::Stopped("engine stopped".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(EngineError::KvCacheFull { blocks: 4 }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(EngineError::Internal("ranks disagree".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let e = ApiError::engine(&EngineError::InvalidRequest("bad".into()));
        assert_eq!(e.message, "bad");
        assert!(
            ApiError::engine(&EngineError::Stopped("x".into()))
                .retry_after
                .is_some()
        );
    }

    #[test]
    fn an_internal_error_names_the_request_it_happened_in() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let e =
            rt.block_on(REQUEST_ID.scope("req-42".into(), async { ApiError::internal("boom") }));
        assert!(e.message.contains("req-42"), "{}", e.message);
        assert!(ApiError::internal("boom").message.contains("id -"));
    }
}
