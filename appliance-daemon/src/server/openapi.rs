//! The OpenAPI 3 document served at `/openapi.json`, generated from the handlers' and
//! types' annotations so it cannot drift from what the server does; a test checks its
//! paths against [`super::ROUTES`].

use axum::Json;
use utoipa::OpenApi;

use super::{
    auth, completions, deployments, experts, fit, metrics, models, routes, storage, system,
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Oasis",
        description = "The Oasis appliance daemon: an OpenAI-compatible inference API and the daemon's own status."
    ),
    paths(
        routes::healthz,
        routes::readyz,
        routes::list_models,
        routes::get_model,
        routes::status,
        system::system,
        system::gpus,
        system::alerts,
        system::silence_alert,
        system::unsilence_alert,
        system::profile,
        fit::model_fit,
        storage::storage,
        models::list,
        models::show,
        models::remove,
        models::import,
        models::upload,
        models::jobs,
        models::job,
        models::cancel_job,
        models::job_events,
        auth::pair,
        auth::pairing_code,
        auth::create_key,
        auth::list_keys,
        auth::revoke_key,
        auth::usage,
        auth::audit_log,
        deployments::list,
        deployments::create,
        deployments::show,
        deployments::change,
        deployments::remove,
        system::gpu_history,
        system::stream,
        experts::experts,
        experts::rebalance,
        completions::chat_completions,
        completions::completions,
        openapi_json,
        metrics::metrics,
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_exactly_the_routes_served() {
        let doc = ApiDoc::openapi();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ];
            for (m, present) in ops {
                if present {
                    documented.push((m.to_string(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = super::super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        let schemas = &doc.components.as_ref().unwrap().schemas;
        for name in [
            "ChatCompletionRequest",
            "ChatCompletion",
            "CompletionRequest",
            "ErrorBody",
            "ModelList",
        ] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
    }
}
