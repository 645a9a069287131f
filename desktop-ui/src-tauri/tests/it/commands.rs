//! The commands as the front end calls them (`invoke(cmd, args)`), through Tauri's IPC and
//! ACL on the mock runtime, against a real `oasis serve --tls on`.

use std::path::Path;

use desktop_ui::{AppState, Settings, TokenStoreKind, run_app};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tauri::Manager as _;
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};
use tests::daemon::Daemon;

/// The app on the mock runtime with its state in `config_dir`, and its main window.
pub(crate) fn start_app(
    config_dir: &Path,
    tokens: Option<TokenStoreKind>,
) -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
    let settings = Settings {
        config_dir: Some(config_dir.to_path_buf()),
        token_store: tokens,
    };
    let app = run_app(mock_builder(), settings).unwrap();
    let window = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    (app, window)
}

/// Where the app's own pages are served from (the ACL's "local" origin).
#[cfg(windows)]
const APP_URL: &str = "http://tauri.localhost";
#[cfg(not(windows))]
const APP_URL: &str = "tauri://localhost";

/// `invoke(cmd, args)`: the resolved value, or the rejection.
pub(crate) fn invoke(
    window: &WebviewWindow<MockRuntime>,
    cmd: &str,
    args: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        window,
        InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: APP_URL.parse().unwrap(),
            body: tauri::ipc::InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|body| body.deserialize::<Value>().unwrap())
}

fn rejection(r: Result<Value, Value>) -> String {
    match r {
        Ok(v) => panic!("expected a rejection, got {v}"),
        Err(Value::String(s)) => s,
        Err(other) => other.to_string(),
    }
}

pub(crate) fn cert_fingerprint(data_dir: &Path) -> String {
    let der = CertificateDer::from_pem_file(data_dir.join("tls/cert.pem")).unwrap();
    oasis_client::fingerprint(der.as_ref())
}

pub(crate) fn pairing_code(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("pairing.code"))
        .unwrap()
        .trim()
        .to_string()
}

/// The whole life of a box: probe, a refused pairing with the wrong fingerprint, pairing,
/// calls with the kept token, the list surviving a restart, removal with its token.
#[test]
fn a_box_is_probed_paired_used_and_removed() {
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &["--tls", "on"]);
    let config = tempfile::tempdir().unwrap();
    // The token store this machine offers (keyutils in CI): the real fallback chain.
    let (app, window) = start_app(config.path(), None);
    let store = app.state::<AppState>().token_store().kind();

    assert_eq!(invoke(&window, "boxes_list", json!({})), Ok(json!([])));

    let probe = invoke(&window, "box_probe", json!({ "address": daemon.addr })).unwrap();
    let fingerprint = cert_fingerprint(data.path());
    assert_eq!(probe["address"], daemon.url.as_str());
    assert_eq!(probe["tls"], true);
    assert_eq!(probe["fingerprint"], fingerprint.as_str());
    assert_eq!(probe["healthy"], true);
    assert_eq!(probe["error"], Value::Null);

    let code = pairing_code(data.path());
    let wrong = oasis_client::fingerprint(b"not the box's certificate");
    let err = rejection(invoke(
        &window,
        "box_pair",
        json!({ "address": daemon.addr, "fingerprint": wrong, "code": code, "name": "lab" }),
    ));
    assert!(err.starts_with("certificate fingerprint changed"), "{err}");
    assert_eq!(invoke(&window, "boxes_list", json!({})), Ok(json!([])));

    let entry = invoke(
        &window,
        "box_pair",
        json!({ "address": daemon.addr, "fingerprint": fingerprint, "code": code, "name": "lab" }),
    )
    .unwrap();
    let id = entry["id"].as_str().unwrap().to_string();
    assert_eq!(
        entry,
        json!({
            "id": id, "name": "127.0.0.1", "address": daemon.url, "fingerprint": fingerprint,
            "paired": true, "token_store": store.name(),
        })
    );
    assert_eq!(
        invoke(&window, "boxes_list", json!({})),
        Ok(json!([entry.clone()]))
    );

    // The token is in the token store, never in the box list on disk.
    let token = app
        .state::<AppState>()
        .token_store()
        .get(&id)
        .unwrap()
        .unwrap();
    assert!(token.starts_with("oasis-"));
    let file = std::fs::read_to_string(config.path().join("boxes.json")).unwrap();
    assert!(
        file.contains(&fingerprint) && !file.contains(&token),
        "{file}"
    );

    let keys = invoke(
        &window,
        "api_request",
        json!({ "boxId": id, "method": "GET", "path": "/admin/v1/keys", "body": null }),
    )
    .unwrap();
    assert_eq!(keys["status"], 200, "{keys}");
    // `name` names this console in the box's key list.
    assert!(keys["body"].to_string().contains("paired: lab"), "{keys}");

    // An error status is an answer the console shows, not a rejection.
    let missing = invoke(
        &window,
        "api_request",
        json!({ "boxId": id, "method": "GET", "path": "/admin/v1/models/no-such-model", "body": null }),
    )
    .unwrap();
    assert_eq!(missing["status"], 404, "{missing}");
    assert!(missing["body"]["error"]["message"].is_string(), "{missing}");

    // A restarted app finds the box and (from a lasting store) its token.
    drop(window);
    drop(app);
    if store != TokenStoreKind::Memory {
        let (_app2, window2) = start_app(config.path(), Some(store));
        assert_eq!(
            invoke(&window2, "boxes_list", json!({})),
            Ok(json!([entry.clone()]))
        );
        let status = invoke(
            &window2,
            "api_request",
            json!({ "boxId": id, "method": "GET", "path": "/admin/v1/status", "body": null }),
        )
        .unwrap();
        assert_eq!(status["status"], 200, "{status}");
    }

    let (app, window) = start_app(config.path(), Some(store));
    if store == TokenStoreKind::Memory {
        app.state::<AppState>()
            .token_store()
            .set(&id, &token)
            .unwrap();
    }
    assert_eq!(
        invoke(&window, "box_remove", json!({ "id": id })),
        Ok(Value::Null)
    );
    assert_eq!(invoke(&window, "boxes_list", json!({})), Ok(json!([])));
    assert_eq!(
        app.state::<AppState>().token_store().get(&id).unwrap(),
        None
    );
    let err = rejection(invoke(&window, "box_remove", json!({ "id": id })));
    assert!(err.contains("no box"), "{err}");
    let err = rejection(invoke(
        &window,
        "api_request",
        json!({ "boxId": id, "method": "GET", "path": "/healthz", "body": null }),
    ));
    assert!(err.contains("no box"), "{err}");
}

/// A box whose certificate changes after pairing (or an impostor at its address) is
/// refused on every call.
#[test]
fn a_changed_certificate_is_refused_after_pairing() {
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &["--tls", "on"]);
    let config = tempfile::tempdir().unwrap();
    let (app, window) = start_app(config.path(), Some(TokenStoreKind::Memory));
    let fingerprint = cert_fingerprint(data.path());
    let entry = invoke(
        &window,
        "box_pair",
        json!({ "address": daemon.url, "fingerprint": fingerprint,
                "code": pairing_code(data.path()), "name": "" }),
    )
    .unwrap();
    assert_eq!(entry["name"], "127.0.0.1", "a box is listed under its host");
    assert_eq!(entry["token_store"], "memory");
    let id = entry["id"].as_str().unwrap().to_string();
    let token = app
        .state::<AppState>()
        .token_store()
        .get(&id)
        .unwrap()
        .unwrap();
    drop(window);
    drop(app);

    // Pin another fingerprint in the stored list, as if the box's certificate changed.
    let path = config.path().join("boxes.json");
    let other = oasis_client::fingerprint(b"another certificate");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&fingerprint, &other);
    std::fs::write(&path, text).unwrap();

    let (app, window) = start_app(config.path(), Some(TokenStoreKind::Memory));
    app.state::<AppState>()
        .token_store()
        .set(&id, &token)
        .unwrap();
    let err = rejection(invoke(
        &window,
        "api_request",
        json!({ "boxId": id, "method": "GET", "path": "/admin/v1/keys", "body": null }),
    ));
    assert_eq!(
        err.split(';').next().unwrap(),
        format!("certificate fingerprint changed: expected {other}, got {fingerprint}")
    );
}

/// Only the windows the capability names may call the commands.
#[test]
fn other_windows_get_no_commands() {
    let config = tempfile::tempdir().unwrap();
    let (app, main) = start_app(config.path(), Some(TokenStoreKind::Memory));
    assert_eq!(invoke(&main, "boxes_list", json!({})), Ok(json!([])));
    let other = WebviewWindowBuilder::new(&app, "other", Default::default())
        .build()
        .unwrap();
    let err = rejection(invoke(&other, "boxes_list", json!({})));
    assert!(err.contains("not allowed"), "{err}");
}

/// Bad input is refused with a message naming it.
#[test]
fn bad_input_is_refused_with_a_message() {
    let config = tempfile::tempdir().unwrap();
    let (_app, window) = start_app(config.path(), Some(TokenStoreKind::Memory));
    let err = rejection(invoke(
        &window,
        "box_probe",
        json!({ "address": "http://10.1.2.3" }),
    ));
    assert!(
        err.contains("plain http://") && err.contains("10.1.2.3"),
        "{err}"
    );
    let err = rejection(invoke(
        &window,
        "box_pair",
        json!({ "address": "10.1.2.3", "fingerprint": null, "code": "X", "name": "n" }),
    ));
    assert!(err.contains("fingerprint must be confirmed"), "{err}");
    let probe = invoke(
        &window,
        "box_probe",
        json!({ "address": "https://127.0.0.1:1" }),
    )
    .unwrap();
    assert_eq!(probe["healthy"], false);
    assert!(
        probe["error"].as_str().unwrap().contains("refused"),
        "{probe}"
    );
}
