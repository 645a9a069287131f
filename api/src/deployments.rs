//! Served names: `/admin/v1/deployments`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /admin/v1/deployments`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// The catalog id of the model to serve.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub model: String,
    /// The served name [default: the model's id].
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: Option<String>,
    /// Other names that reach it.
    #[serde(default)]
    #[schema(inline, value_type = Vec<DeploymentName>)]
    pub aliases: Vec<String>,
    /// Engine ranks (expert parallelism) [default: the daemon's].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    pub ranks: Option<usize>,
    /// Context limit per sequence [default: the daemon's].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub context_length: Option<usize>,
    /// Sequences batched at once [default: the daemon's].
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    pub max_sequences: Option<usize>,
    /// Prompt-lookup speculative decoding for requests that do not set `prompt_lookup`:
    /// draft tokens verified per step (0: off) [default: off].
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16)]
    pub prompt_lookup: Option<usize>,
}

/// A served name: letters, digits, `.`, `_` and `-`, starting with a letter or digit.
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
pub struct DeploymentName(pub String);

/// `PATCH /admin/v1/deployments/{name}`: the fields to change.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDeployment {
    /// Serve this catalog model instead (a new version under the same name).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub model: Option<String>,
    #[serde(default)]
    #[schema(inline, value_type = Option<Vec<DeploymentName>>)]
    pub aliases: Option<Vec<String>>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    pub ranks: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub context_length: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    pub max_sequences: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16)]
    pub prompt_lookup: Option<usize>,
}

/// A deployment and how it is doing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentView {
    pub name: String,
    pub aliases: Vec<String>,
    /// The catalog model served.
    pub model: String,
    /// `ready` or `unavailable`.
    pub state: String,
    /// Why an unavailable deployment could not be loaded.
    pub error: Option<String>,
    /// The settings asked for (absent: the daemon's).
    pub ranks: Option<usize>,
    pub context_length: Option<usize>,
    pub max_sequences: Option<usize>,
    pub prompt_lookup: Option<usize>,
    /// What the engine runs with (ready deployments).
    pub engine: Option<EngineSettings>,
    /// Bumped by each change that reloaded the model.
    pub generation: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EngineSettings {
    pub ranks: usize,
    pub context_length: usize,
    pub kv_cache_bytes: usize,
    pub running: usize,
    pub waiting: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    pub data: Vec<DeploymentView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Undeployed {
    pub undeployed: String,
    pub model: String,
}
