//! Metering: `GET /admin/v1/usage`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One row: a day, a key and a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Requests that ended in an error or a disconnect.
    pub failed: u64,
    /// Sum of end-to-end latencies, milliseconds.
    pub latency_ms: u64,
}

impl Counts {
    /// The sum of two rows.
    pub fn plus(mut self, o: &Counts) -> Counts {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.failed += o.failed;
        self.latency_ms += o.latency_ms;
        self
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// The key id, the model or the day.
    pub group: String,
    /// The key's name when grouping by key.
    pub name: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub group_by: GroupBy,
    pub from: String,
    pub to: String,
    pub data: Vec<UsageRow>,
}

/// What usage rows are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The API key (rows name the key).
    Key,
    /// The served model.
    Model,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "key" => Some(GroupBy::Key),
            "model" => Some(GroupBy::Model),
            "day" => Some(GroupBy::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }
}
