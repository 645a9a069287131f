//! API keys (`/admin/v1/keys`) and pairing the desktop app (`/admin/v1/pair`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inference only.
    User,
    /// The admin API, read-only.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// Limits of one key (absent: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Tokens per UTC month.
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
}

/// `POST /admin/v1/keys`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 128 characters (spaces around it are dropped unless nothing else is left).
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 256)]
    pub owner: Option<String>,
    /// `user` (inference, the default), `viewer` (read-only admin) or `admin`.
    #[serde(default)]
    #[schema(pattern = "^(user|viewer|admin)$")]
    pub role: Option<String>,
    /// Served names it may use [default: all].
    #[serde(default)]
    #[schema(max_items = 1024)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000u64)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000u64)]
    pub tpm: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000u64)]
    pub tokens_per_day: Option<u64>,
    /// Tokens per UTC month.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000u64)]
    pub tokens_per_month: Option<u64>,
    /// Seconds since the epoch after which it stops working (a time past gives a key that
    /// is already expired), at most the end of year 9999.
    #[serde(default)]
    #[schema(maximum = 253_402_300_799u64)]
    pub expires_at: Option<u64>,
}

/// A key as listed (never its token or hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub role: Role,
    pub prefix: String,
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub created_at: u64,
    pub created_by: String,
    /// Only in the answer that created it: the token, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only in the pairing answer over HTTPS: the SHA-256 fingerprint of the certificate
    /// the daemon serves, for the client to compare with the one it pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyView>,
}

/// `POST /admin/v1/pair`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    /// The one-time code the daemon printed (`XXXX-XXXX-XXXX-XXXX`).
    pub code: String,
    /// What is pairing (the admin's machine), for the key's name (its first 64
    /// characters are kept).
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PairingCode {
    pub code: String,
    pub expires_in_s: u64,
    /// SHA-256 of the TLS certificate clients should pin (absent without TLS).
    pub tls_fingerprint: Option<String>,
}
