//! Tauri's build step (configuration, capabilities, the app's command permissions), and a
//! stand-in front end while `../dist` is not built yet, so `cargo check`, `clippy` and the
//! command tests work on a machine without Node. The stand-in page says how to build the
//! real one; `scripts/test` builds it before cargo runs, and the window test refuses to run
//! without it.

use std::path::{Path, PathBuf};

/// The app's commands: each gets an `allow-...` permission, granted in
/// `capabilities/default.json`.
const COMMANDS: &[&str] = &[
    "boxes_list",
    "box_probe",
    "box_pair",
    "box_remove",
    "api_request",
];

const PLACEHOLDER: &str = "<!doctype html>\n<meta charset=\"utf-8\">\n<meta name=\"oasis-placeholder\" content=\"front end not built\">\n<title>Oasis Admin</title>\n<p>The front end is not built: run <code>npm ci &amp;&amp; npm run build</code> in desktop-ui, then rebuild the app.</p>\n";

fn main() {
    // Rebuild when the front end is built or rebuilt (a missing path reruns every time,
    // which is what is wanted until it exists).
    println!("cargo:rerun-if-changed=../dist");
    if !Path::new("../dist/index.html").is_file() {
        let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
        let stand_in = out_dir.join("placeholder-dist");
        if let Err(e) = std::fs::create_dir_all(&stand_in)
            .and_then(|()| std::fs::write(stand_in.join("index.html"), PLACEHOLDER))
        {
            panic!(
                "cannot write the placeholder front end in {}: {e}",
                stand_in.display()
            );
        }
        // `generate_context!` reads TAURI_CONFIG as a patch over tauri.conf.json.
        let path = stand_in.display().to_string();
        println!("cargo:rustc-env=TAURI_CONFIG={{\"build\":{{\"frontendDist\":{path:?}}}}}");
        println!(
            "cargo:warning=desktop-ui/dist is not built: the app embeds a placeholder page (run `npm ci && npm run build` in desktop-ui)"
        );
    }
    let attributes = tauri_build::Attributes::new()
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attributes) {
        panic!("tauri build step failed: {e:#}");
    }
}
