//! The client against the real daemon (`oasis serve --tls on`): fingerprint pinning,
//! pairing, authorised calls and the errors an admin sees.

// Test helpers: a failed unwrap is a failed test, with the value that broke it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use oasis_client::{Client, Error, fingerprint, probe};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tests::daemon::Daemon;

/// A daemon serving TLS with its own certificate, in a fresh data directory.
fn tls_daemon(dir: &Path) -> Daemon {
    Daemon::start(dir, &["--tls", "on"])
}

/// The fingerprint of the certificate the daemon made, read from its data directory.
fn cert_fingerprint(dir: &Path) -> String {
    let der = CertificateDer::from_pem_file(dir.join("tls/cert.pem")).unwrap();
    fingerprint(der.as_ref())
}

fn pairing_code(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("pairing.code"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn probe_learns_the_fingerprint_without_trusting_it() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = tls_daemon(tmp.path());
    assert!(daemon.url.starts_with("https://"), "{}", daemon.url);
    // No scheme: https is tried first.
    let p = probe(&daemon.addr).unwrap();
    assert_eq!(p.address, daemon.url);
    assert!(p.tls);
    assert_eq!(
        p.fingerprint.as_deref(),
        Some(cert_fingerprint(tmp.path()).as_str())
    );
    assert!(p.healthy, "{p:?}");
    assert_eq!(p.error, None);
}

#[test]
fn only_the_pinned_certificate_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = tls_daemon(tmp.path());
    let right = cert_fingerprint(tmp.path());

    let client = Client::new(&daemon.url, Some(&right.to_lowercase())).unwrap();
    let r = client.request("GET", "/healthz", None, None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");

    let wrong = fingerprint(b"some other certificate");
    let client = Client::new(&daemon.url, Some(&wrong)).unwrap();
    let err = client.request("GET", "/healthz", None, None).unwrap_err();
    match &err {
        Error::FingerprintChanged { expected, got } => {
            assert_eq!(expected, &wrong);
            assert_eq!(got, &right);
        }
        other => panic!("expected a fingerprint error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "certificate fingerprint changed: expected {wrong}, got {right}"
        )),
        "{err}"
    );
    // Pairing is refused the same way: the code never leaves this machine.
    let err = client
        .pair(&pairing_code(tmp.path()), "laptop")
        .unwrap_err();
    assert!(matches!(err, Error::FingerprintChanged { .. }), "{err}");

    // https without a fingerprint is refused before connecting.
    let err = Client::new(&daemon.url, None).unwrap_err();
    assert!(matches!(err, Error::MissingFingerprint { .. }), "{err}");
}

#[test]
fn pairing_returns_a_token_that_authorises_admin_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = tls_daemon(tmp.path());
    let client = Client::new(&daemon.addr, Some(&cert_fingerprint(tmp.path()))).unwrap();

    let err = client.pair("0000-0000-0000-0000", "laptop").unwrap_err();
    match &err {
        Error::PairingRefused { status, message } => {
            assert_eq!(*status, 401, "{message}");
            assert!(message.contains("tries left"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let paired = client.pair(&pairing_code(tmp.path()), "laptop").unwrap();
    assert!(paired.token.starts_with("oasis-"), "{}", paired.token);

    let r = client
        .request("GET", "/admin/v1/keys", None, Some(&paired.token))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.body.to_string();
    assert!(text.contains(&paired.key_id), "{text}");
    assert!(text.contains("paired: laptop"), "{text}");

    // With a key made, anonymous loopback access is over.
    let r = client.request("GET", "/admin/v1/keys", None, None).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!oasis_client::error_message(&r.body).is_empty());

    // A JSON body goes through, and an error status is an answer, not an error.
    let r = client
        .request(
            "POST",
            "/admin/v1/keys",
            Some(&serde_json::json!({"name": "ci", "role": "no-such-role"})),
            Some(&paired.token),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);

    // The code works once.
    let err = client.pair(&paired.token, "again").unwrap_err();
    assert!(matches!(err, Error::PairingRefused { .. }), "{err}");
}

#[test]
fn plain_http_is_used_on_loopback_only() {
    let tmp = tempfile::tempdir().unwrap();
    // On loopback the daemon serves plain HTTP by default.
    let daemon = Daemon::start(tmp.path(), &[]);
    assert!(daemon.url.starts_with("http://"), "{}", daemon.url);
    let p = probe(&daemon.addr).unwrap();
    assert_eq!(p.address, daemon.url, "{p:?}");
    assert!(!p.tls);
    assert_eq!(p.fingerprint, None);
    assert!(p.healthy, "{p:?}");

    let client = Client::new(&daemon.url, None).unwrap();
    let r = client.request("GET", "/admin/v1/keys", None, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn unreachable_boxes_are_named_in_the_error() {
    // Port 1 on loopback: nothing listens there.
    let p = probe("https://127.0.0.1:1").unwrap();
    assert!(!p.healthy);
    let error = p.error.unwrap();
    assert!(
        error.contains("127.0.0.1:1") && error.contains("refused"),
        "{error}"
    );

    let client = Client::new("http://127.0.0.1:1", None).unwrap();
    let err = client.request("GET", "/healthz", None, None).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");

    let err = probe("http://192.168.1.5:8080").unwrap_err();
    assert!(matches!(err, Error::PlainHttpNotLoopback { .. }), "{err}");
}

#[test]
fn bad_requests_are_refused_before_sending() {
    let client = Client::new("http://127.0.0.1:1", None).unwrap();
    let err = client.request("TRACE", "/healthz", None, None).unwrap_err();
    assert!(matches!(err, Error::InvalidMethod { .. }), "{err}");
    let err = client.request("GET", "healthz", None, None).unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    let err = client
        .request("GET", "/healthz", Some(&serde_json::json!({})), None)
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedBody { .. }), "{err}");
}
