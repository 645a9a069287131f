//! The firmware profile the daemon runs under: `GET /admin/v1/profile`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Which profile the box runs under, how it was picked, every profile's fit, the engine
/// settings in force and where each came from, the changes made at start, and the
/// compliance report, checked again at the request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileAnswer {
    /// `off`, `check`, `apply` or `refuse`.
    pub policy: String,
    /// Where the selected profile came from (`builtin:hgx-h200-8.toml` or a path).
    pub origin: Option<String>,
    /// The selected profile as its file says it (absent: none matches this box).
    pub profile: Option<ProfileInfo>,
    /// How it was picked, or why none was, in a sentence.
    pub how: String,
    /// Every known profile's fit.
    pub candidates: Vec<ProfileCandidate>,
    /// The compliance report: checked again at this request when the box could be read,
    /// else the one from start.
    pub report: Option<ComplianceReport>,
    /// The report at start, when `report` is a fresh one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_at_start: Option<ComplianceReport>,
    /// The plan the profile gives on this box: ranks, KV cache, batch limits, precision.
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
    /// The engine settings in force, each with where it came from.
    pub engine: Vec<EngineSetting>,
    /// The setting changes made (or listed, for a recorded inventory) under `apply`.
    #[schema(value_type = Vec<Object>)]
    pub applied: Vec<Value>,
    /// Settings the profile pins that the GPUs cannot take.
    pub apply_problems: Vec<String>,
    /// The box as read: GPUs, driver, host (read again at this request when it could be).
    #[schema(value_type = Object)]
    pub inventory: Value,
    /// When the report was checked, ms since the Unix epoch.
    pub checked_at_ms: u64,
}

/// A firmware profile: its identity, and every other field of its file as written
/// (`match`, `software`, `gpu`, `topology`, `host`, ...).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileInfo {
    /// Short stable name (`hgx-h200-8`): what `--profile` and the API use.
    pub id: String,
    /// What a person calls the box.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One profile's fit to this box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileCandidate {
    pub id: String,
    pub name: String,
    pub matched: bool,
    /// Why it does not match (empty when it does).
    pub reasons: Vec<String>,
}

/// A box checked against one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComplianceReport {
    pub profile: String,
    pub profile_name: String,
    /// Where the inventory came from.
    pub source: String,
    /// The worst of the checks' verdicts.
    pub verdict: Verdict,
    pub checks: Vec<ComplianceCheck>,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComplianceCheck {
    /// Stable name (`gpu.ecc`) for scripts and the UI.
    pub id: String,
    pub expected: String,
    pub found: String,
    pub verdict: Verdict,
    /// What to do, for a warning or failure.
    pub remedy: Option<String>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One engine setting in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EngineSetting {
    pub key: String,
    /// A number, a string or null.
    pub value: Value,
    /// Where it came from: `flag or OASIS_* variable`, `config file`, `profile ID` or
    /// `built-in default`.
    pub source: String,
    /// Why, when the source alone does not say.
    pub note: Option<String>,
}
