//! The web console: the built front end (`desktop-ui/dist`) served at `/`, the same app the
//! desktop client runs, talking to the admin API on the same origin.
//!
//! Static files only, read from the configured folder on each request (they are small and
//! the page cache holds them). Any GET that is not an API path is looked up there; API
//! paths and misses keep the JSON 404 of the rest of the API.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::routes;

/// The console's content security policy: its own scripts only, no eval, no inline script;
/// inline styles for the chart library; API calls to the same origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; \
                   object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'";

/// Whether `path` belongs to the console rather than the API (used by the auth layer: the
/// console's files are public, its data comes from the authorised API).
pub fn is_console_path(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && !path.starts_with("/v1/")
        && !path.starts_with("/admin/")
        && path != "/v1"
        && path != "/admin"
}

/// The fallback route: a console file for GET/HEAD outside the API, else the API's 404.
pub async fn serve(State(st): State<AppState>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if !is_console_path(&method, path) {
        return routes::not_found(method, uri).await.into_response();
    }
    let Some(dir) = st.config.console_dir.as_deref() else {
        if path == "/" || path == "/index.html" {
            return console_missing();
        }
        return routes::not_found(method, uri).await.into_response();
    };
    let Some(file) = resolve(dir, path) else {
        return routes::not_found(method, uri).await.into_response();
    };
    let read = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || std::fs::read(file)).await
    };
    let read = read.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match read {
        Ok(bytes) => file_response(&file, bytes, method == Method::HEAD),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            routes::not_found(method, uri).await.into_response()
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read a console file");
            let mut err = ApiError::invalid(format!(
                "cannot read the console file {}: {e}",
                file.display()
            ))
            .with_code("console_unreadable");
            err.status = StatusCode::INTERNAL_SERVER_ERROR;
            err.into_response()
        }
    }
}

/// The file under `dir` that `path` names: `/` is `index.html`; anything that could leave
/// the folder (`..`, encoded characters, backslashes) or names a folder is refused.
fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if rel.contains(['%', '\\', '\0']) || rel.ends_with('/') {
        return None;
    }
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = dir.join(rel);
    file.is_file().then_some(file)
}

fn file_response(file: &Path, bytes: Vec<u8>, head: bool) -> Response {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let is_index = file.file_name().is_some_and(|n| n == "index.html");
    // Vite names built assets by their content hash: they never change under one name.
    let cache = if is_index || !file.components().any(|c| c.as_os_str() == "assets") {
        "no-cache"
    } else {
        "public, max-age=31536000, immutable"
    };
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(ext)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    security_headers(h);
    resp
}

fn security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn content_type(ext: &str) -> &'static str {
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `/` on a daemon installed without its console: an error that says how to get one.
fn console_missing() -> Response {
    let e = ApiError::not_found(
        "The web console is not installed on this box: build it with `npm ci && npm run build` \
         in desktop-ui/, or point `console_dir` (--console-dir) at a built console",
    )
    .with_code("console_not_installed");
    e.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_files_inside_the_folder_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>").unwrap();
        std::fs::write(dir.path().join("assets/app-1a2b.js"), "x").unwrap();
        let d = dir.path();
        assert_eq!(resolve(d, "/"), Some(d.join("index.html")));
        assert_eq!(
            resolve(d, "/assets/app-1a2b.js"),
            Some(d.join("assets/app-1a2b.js"))
        );
        for bad in [
            "/../secret",
            "/assets/../../etc/passwd",
            "/assets/%2e%2e/x",
            "/assets/",
            "/assets",
            "/a\\b",
            "/missing.js",
        ] {
            assert_eq!(resolve(d, bad), None, "{bad}");
        }
    }

    #[test]
    fn api_paths_never_reach_the_console() {
        assert!(is_console_path(&Method::GET, "/"));
        assert!(is_console_path(&Method::HEAD, "/assets/x.js"));
        assert!(!is_console_path(&Method::POST, "/"));
        assert!(!is_console_path(&Method::GET, "/admin/v1/nothing"));
        assert!(!is_console_path(&Method::GET, "/v1/nothing"));
    }
}
