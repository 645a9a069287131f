//! `GET /admin/v1/models/{id}/fit`: a served model's fit estimate on this box under the
//! profile selected at start (the same estimate `oasis model fit` gives offline).

use axum::Json;
use axum::extract::{Path, Query, State};
use engine::fit::Footprint;
pub use oasis_api::FitAnswer;

use super::AppState;
use super::error::ApiError;

/// The sequence length to size for.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FitQuery {
    /// Tokens per sequence, prompt and output [default: 4096].
    #[param(minimum = 1, maximum = 10_000_000)]
    pub context: Option<u64>,
}

#[utoipa::path(get, path = "/admin/v1/models/{id}/fit", params(("id" = String, Path), FitQuery),
    responses((status = 200, body = FitAnswer), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn model_fit(
    State(st): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<FitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FitAnswer>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad fit query: {e}")))?;
    let context = q.context.unwrap_or(4096);
    if !(1..=10_000_000).contains(&context) {
        return Err(ApiError::invalid_param(
            "context",
            format!("`context` must be between 1 and 10000000 tokens, got {context}"),
        ));
    }
    if let Some(m) = st.catalog.embedder(&id) {
        return Err(not_applicable(&id, &m.record));
    }
    let (name, footprint) = match st.model(&id) {
        Ok(served) => (served.name.clone(), Footprint::of_model(&served.model)),
        // A catalog model not deployed: sized from its files (mapped, not read whole).
        Err(not_served) => {
            let record = st
                .store
                .get_model(&id)
                .map_err(|e| ApiError::internal(format!("{e:#}")))?
                .ok_or(not_served)?;
            if super::catalog::is_embedding(&record) {
                return Err(not_applicable(&id, &record));
            }
            let path = record.path.clone();
            let loaded = tokio::task::spawn_blocking(move || engine::Model::load(&path))
                .await
                .map_err(ApiError::internal)?;
            let model = loaded.map_err(|e| {
                let mut err = ApiError::invalid(format!(
                    "cannot open `{id}` ({}) to size it: {e:#}",
                    record.path.display()
                ));
                err.status = axum::http::StatusCode::CONFLICT;
                err
            })?;
            (record.id, Footprint::of_model(&model))
        }
    };
    let p = &st.profile;
    let Some(profile) = &p.selection.profile else {
        let mut e = ApiError::invalid(
            "no firmware profile matches this box: name one with `--profile` to size models",
        );
        e.status = axum::http::StatusCode::CONFLICT;
        return Err(e);
    };
    let plan = firmware_profiles::plan::plan(profile, &p.inventory);
    let report = crate::fit::estimate(&footprint, &p.inventory, &plan, context);
    Ok(Json(FitAnswer {
        model: name,
        profile: profile.id.clone(),
        footprint: crate::fit::footprint_view(&footprint),
        fit: report,
    }))
}

/// The fit of an embedding model: a 409 that says why there is none.
fn not_applicable(id: &str, r: &crate::store::ModelRecord) -> ApiError {
    let mut e = ApiError::invalid(format!(
        "`{id}` is an embedding model ({:.0} MB of weights): it runs on the CPU beside the chat models, and the fit estimate sizes chat models on the GPUs",
        r.size_bytes as f64 / 1e6
    ))
    .with_code("not_applicable");
    e.status = axum::http::StatusCode::CONFLICT;
    e
}
