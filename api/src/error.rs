//! OpenAI's error envelope, which every route answers a failure with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// OpenAI's error envelope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, in OpenAI's fields.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// Stable class: `invalid_request_error`, `not_found_error`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Stable machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
}
