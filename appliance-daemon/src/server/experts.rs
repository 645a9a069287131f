//! The expert-parallel engine's admin view: per-layer, per-expert token counts and the
//! placement (`GET /admin/v1/engine/experts`), and a rebalance on request
//! (`POST /admin/v1/engine/rebalance`).

use std::sync::atomic::Ordering;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::catalog::ServedModel;
use super::error::ApiError;
use super::extract::JsonBody;

/// One MoE model's experts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelExperts {
    pub id: String,
    pub ranks: usize,
    /// Physical expert slots per rank (0 with one rank: every expert is local).
    pub slots_per_rank: usize,
    /// Per MoE-capable layer: the logical expert of each physical slot (empty with one
    /// rank).
    pub placement: Vec<Vec<usize>>,
    /// Per layer, per expert: tokens routed since start.
    pub expert_tokens: Vec<Vec<u64>>,
    /// Per layer, per expert: tokens routed in the recent window (what a rebalance uses).
    pub window_tokens: Vec<Vec<u64>>,
    /// (token, expert) pairs each rank computed since start.
    pub rank_pairs: Vec<u64>,
    /// Max over mean of `rank_pairs`.
    pub imbalance: f64,
    /// Per layer: max over mean rank load of the window's tokens under the current
    /// placement.
    pub placement_balance: Vec<f64>,
    pub rebalances: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpertsReport {
    pub models: Vec<ModelExperts>,
}

fn describe(m: &ServedModel) -> Option<ModelExperts> {
    let expert_tokens = m.model.expert_tokens()?;
    let ep = m.worker.ep.as_ref();
    let placement = ep.map(|e| e.placement());
    let window_tokens = ep.map(|e| e.window_loads()).unwrap_or_default();
    Some(ModelExperts {
        id: m.name.clone(),
        ranks: m.worker.ranks,
        slots_per_rank: placement.as_ref().map_or(0, |p| p.slots_per_rank),
        placement: placement
            .as_ref()
            .map(|p| p.phy2log.clone())
            .unwrap_or_default(),
        placement_balance: placement
            .as_ref()
            .map(|p| p.balance(&window_tokens))
            .unwrap_or_default(),
        expert_tokens,
        window_tokens,
        rank_pairs: ep
            .map(|e| {
                e.rank_pairs
                    .iter()
                    .map(|a| a.load(Ordering::Relaxed))
                    .collect()
            })
            .unwrap_or_default(),
        imbalance: ep.map_or(1.0, |e| e.imbalance()),
        rebalances: ep.map_or(0, |e| e.rebalances.load(Ordering::Relaxed)),
    })
}

/// Token counts per expert and the current placement of every MoE model.
#[utoipa::path(get, path = "/admin/v1/engine/experts", responses((status = 200, body = ExpertsReport)))]
pub async fn experts(State(st): State<AppState>) -> Json<ExpertsReport> {
    Json(ExpertsReport {
        models: st
            .catalog
            .deployments()
            .iter()
            .filter_map(|m| describe(m))
            .collect(),
    })
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebalanceRequest {
    /// The model; may be left out when one model runs expert-parallel.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub model: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RebalanceReport {
    pub model: String,
    /// Per layer, max over mean rank load of the window's tokens: current placement.
    pub before: Vec<f64>,
    /// The same under the new placement, installed at the next step boundary.
    pub after: Vec<f64>,
    /// Routed (token, expert) pairs the window holds.
    pub window_tokens: u64,
}

/// Recomputes the expert placement with EPLB from the recent loads; the running engine
/// switches to it at its next step boundary.
#[utoipa::path(post, path = "/admin/v1/engine/rebalance", request_body = RebalanceRequest,
    responses((status = 200, body = RebalanceReport), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn rebalance(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<super::auth::Principal>,
    JsonBody(req): JsonBody<RebalanceRequest>,
) -> Result<Json<RebalanceReport>, ApiError> {
    let what = serde_json::json!({ "model": req.model });
    let r = rebalance_model(&st, &req);
    let what = match &r {
        Ok(Json(rep)) => {
            serde_json::json!({ "model": rep.model, "window_tokens": rep.window_tokens,
            "max_imbalance_before": rep.before.iter().copied().fold(0.0, f64::max),
            "max_imbalance_after": rep.after.iter().copied().fold(0.0, f64::max) })
        }
        Err(_) => what,
    };
    super::auth::audited(&st, Some(&who), "engine.rebalance", what, r)
}

fn rebalance_model(
    st: &AppState,
    req: &RebalanceRequest,
) -> Result<Json<RebalanceReport>, ApiError> {
    let parallel: Vec<Arc<ServedModel>> = st
        .catalog
        .deployments()
        .into_iter()
        .filter(|m| m.worker.ep.is_some())
        .collect();
    let m: &ServedModel = match &req.model {
        Some(id) => match parallel
            .iter()
            .find(|m| m.name == *id || m.deployment.aliases.contains(id))
        {
            Some(m) => m,
            None => return Err(ApiError::model_not_found(id, &st.catalog.served_ids())),
        },
        None if parallel.len() == 1 => &parallel[0],
        // Nothing or several to choose from: the daemon's state decides, not the body.
        None => {
            return Err(ApiError::conflict(format!(
                "name the model: {} models run expert-parallel",
                parallel.len()
            ))
            .with_param("model"));
        }
    };
    let Some(ep) = &m.worker.ep else {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "`{}` does not run expert-parallel (start the daemon with --ranks 2 or more)",
                m.name
            ),
        ));
    };
    let n_group = m.model.hf().map_or(1, |h| h.cfg.moe.n_group());
    let report = ep
        .rebalance(n_group)
        .map_err(|e| ApiError::conflict(format!("cannot rebalance `{}`: {e}", m.name)))?;
    tracing::info!(model = %m.name, before = ?report.before, after = ?report.after, "expert rebalance proposed");
    Ok(Json(RebalanceReport {
        model: m.name.clone(),
        before: report.before,
        after: report.after,
        window_tokens: report.tokens,
    }))
}
