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
        system::slots,
        system::update,
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
        models::delete_job,
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
        super::embeddings::embeddings,
        openapi_json,
        metrics::metrics,
    ),
    modifiers(&CommonResponses)
)]
pub struct ApiDoc;

/// Adds what every route of a kind can answer, whatever its handler does, so the document
/// states every status the server sends: the bearer key and 401/403 on routes that need
/// one, 400/408/413/415 for a body, 400 for a query, 503 while the audit log cannot be
/// written on admin changes, 429/503/504 on inference.
#[derive(Debug)]
struct CommonResponses;

/// Routes anyone may call.
const OPEN: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin/v1/pair",
];

impl utoipa::Modify for CommonResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityRequirement;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key or admin token: `Authorization: Bearer oasis-...`",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PATCH", item.patch.as_mut()),
                ("DELETE", item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let open = OPEN.contains(&path.as_str());
                let mut add: Vec<(&str, &str)> = Vec::new();
                if !open {
                    op.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    add.push((
                        "401",
                        "No key, or a key that is unknown, revoked or expired",
                    ));
                    add.push(("403", "The key's role may not use this route"));
                }
                if op.request_body.is_some() {
                    add.push(("400", "The body is malformed or a value is out of bounds"));
                    add.push(("408", "The body stopped arriving"));
                    add.push(("413", "The body is larger than the limit"));
                    let octets = op
                        .request_body
                        .as_ref()
                        .is_some_and(|b| b.content.keys().any(|k| k == "application/octet-stream"));
                    if !octets {
                        add.push(("415", "The body is not JSON"));
                    }
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add.push(("400", "A parameter is malformed or out of bounds"));
                }
                let admin_change = path.starts_with("/admin/") && method != "GET";
                if admin_change {
                    add.push(("503", "The audit log cannot be written: admin changes wait"));
                }
                if path == "/admin/v1/pair" {
                    add.push(("429", "Too many pairing attempts from this address"));
                }
                if path.starts_with("/v1/") && method == "POST" {
                    add.push(("429", "A key's limit, or the model's waiting room, is full"));
                    add.push(("503", "The daemon is stopping or the model cannot serve"));
                    add.push(("504", "The request ran past the time limit"));
                }
                for (status, description) in add {
                    if op.responses.responses.contains_key(status) {
                        continue;
                    }
                    op.responses.responses.insert(
                        status.to_string(),
                        utoipa::openapi::RefOr::T(error_response(description)),
                    );
                }
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

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

    /// The document's bounds are the engine's own.
    #[test]
    fn the_documented_bounds_are_the_engines() {
        assert_eq!(oasis_api::openai::MAX_STOPS, engine::sampling::MAX_STOPS);
    }

    /// The console's TypeScript types are generated from this snapshot of `/openapi.json`
    /// in its build (`npm run api-types`), so the console compiles against what the daemon
    /// serves. When the API changes this fails; `OASIS_BLESS=1` rewrites the snapshot.
    #[test]
    fn the_consoles_snapshot_is_the_served_document() {
        let served = serde_json::to_string_pretty(&ApiDoc::openapi()).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../desktop-ui/src/api/openapi.json");
        if std::env::var_os("OASIS_BLESS").is_some() {
            std::fs::write(&path, &served).unwrap();
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            snapshot == served,
            "{} differs from the served /openapi.json: run \
             `OASIS_BLESS=1 cargo test -p appliance-daemon --lib openapi` and rebuild the console",
            path.display()
        );
    }
}
