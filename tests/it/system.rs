//! `oasis system` and its routes on a box that was not installed from the Oasis ISO (a
//! development box, this one): the slots say so, an update is refused with 409 before
//! its body is used, only an admin may send one, and every attempt is audited. The
//! installed case (slots, updates, rollback) runs in QEMU: tests/installer.

use serde_json::{Value, json};
use tests::daemon::{Daemon, Launch, raw_request};
use tests::{oasis_with_env, stdout_ok};

use crate::security::{admin_token, req};

#[test]
fn a_box_not_installed_from_the_image_says_so_and_refuses_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::launch(&data, &[], &Launch::default());
    let admin = admin_token(&data);
    let r = req(
        &d,
        "GET",
        "/admin/v1/system/slots",
        Some(&admin),
        &Value::Null,
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["installed"], false, "{v}");
    assert!(v["booted"].is_null() && v["slots"] == json!([]), "{v}");
    assert!(
        v["note"]
            .as_str()
            .unwrap()
            .contains("installed from the Oasis ISO"),
        "{v}"
    );
    // An update: refused as a conflict, with the body (a megabyte of it) read and dropped.
    let body = vec![0x5au8; 1 << 20];
    let auth = format!("Bearer {admin}");
    let headers = [
        ("Content-Type", "application/octet-stream"),
        ("Authorization", auth.as_str()),
    ];
    let r = raw_request(&d.addr, "POST", "/admin/v1/system/update", &headers, &body);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not run from an installed Oasis system")
    );
    assert!(
        !data.join("system/incoming").exists()
            || std::fs::read_dir(data.join("system/incoming"))
                .unwrap()
                .next()
                .is_none(),
        "a refused update left its body behind"
    );
    // A user key may not send one.
    let r = req(
        &d,
        "POST",
        "/admin/v1/keys",
        Some(&admin),
        &json!({"name": "team", "role": "user"}),
    );
    let user = r.json()["key"].as_str().unwrap().to_string();
    let auth = format!("Bearer {user}");
    let headers = [
        ("Content-Type", "application/octet-stream"),
        ("Authorization", auth.as_str()),
    ];
    let r = raw_request(&d.addr, "POST", "/admin/v1/system/update", &headers, b"x");
    assert_eq!(r.status, 403);
    // The CLI says the same, and the refused update is in the audit log.
    let url = format!("http://{}", d.addr);
    let env = [("OASIS_URL", url.as_str()), ("OASIS_TOKEN", admin.as_str())];
    let out = oasis_with_env(&["system", "status"], &env);
    let text = stdout_ok(&out);
    assert!(text.contains("not an installed system"), "{text}");
    assert!(text.contains("last update: none"), "{text}");
    let bundle = tmp.path().join("update.oasis");
    std::fs::write(&bundle, b"not a bundle").unwrap();
    let out = oasis_with_env(&["system", "update", bundle.to_str().unwrap()], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(HTTP 409)"), "{err}");
    let r = req(&d, "GET", "/admin/v1/audit", Some(&admin), &Value::Null);
    let entries = r.json()["data"].clone();
    let updates: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "system.update")
        .collect();
    assert_eq!(updates.len(), 2, "{entries}");
    assert!(
        updates[0]["detail"]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("refused (409)"),
        "{entries}"
    );
}
