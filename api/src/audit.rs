//! The audit log: `GET /admin/v1/audit`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::status::WriteHealth;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditReport {
    /// Whether the hash chain holds, and if not, where it breaks.
    pub chain_ok: bool,
    pub chain_error: Option<String>,
    pub entries_total: u64,
    /// Whether the daemon's entries are reaching the log (a chain that holds says nothing
    /// of entries that could not be written).
    pub write: WriteHealth,
    /// The newest entries, oldest first.
    pub data: Vec<AuditEntry>,
}

/// One line of the audit log, as written: `seq`, the previous line's `hash` (`prev`) and
/// its own, chaining every entry to the ones before it. Every field reads with a default,
/// so a damaged line still shows (the chain check says where it breaks); the daemon's
/// answer holds every field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct AuditEntry {
    #[schema(required = true)]
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    #[schema(required = true)]
    pub ts_ms: u64,
    /// Who acted: a key (`key-1a2b3c4d (ops team)`), `anonymous (loopback)`,
    /// `oasis profile apply (uid 0)`, `oasis serve (profile_policy = apply)`.
    #[schema(required = true)]
    pub actor: String,
    /// What was done, dotted: `profile.apply`, `key.create`, `model.import`.
    #[schema(required = true)]
    pub action: String,
    #[schema(required = true)]
    pub detail: AuditDetail,
    /// SHA-256 of the previous line's hash and this line, hex.
    #[schema(required = true)]
    pub hash: String,
    /// The previous line's `hash` (zeros for the first).
    #[schema(required = true)]
    pub prev: String,
}

/// What an entry says of the action. Actions through the API carry `from`, `outcome` and
/// `what`; entries written on the box (`profile.apply`) carry their own fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AuditDetail {
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `ok`, or what refused it: `refused (422): ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The action's subject and arguments (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<Value>,
    /// Any other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}
