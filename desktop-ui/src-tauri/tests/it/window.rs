//! The real app in a real X display (Xvfb): its window appears with the bundled console
//! in it, and a screenshot of it is kept in `target/desktop-screenshots/`. The helpers
//! (Xvfb, the app process, screenshots) serve `overview.rs` too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `desktop-ui/dist`, which the app embeds when built.
fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// `target/` of this build.
fn target_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{name}` is missing: install the Debian packages xvfb, xauth, x11-utils and imagemagick"
    );
}

/// Starts Xvfb on a display number it picks itself and reports once it accepts clients
/// (`-displayfd`). Picking a number here by looking for free lock files raced between
/// tests running at once: the loser's Xvfb exited, the winner's socket looked like its
/// own, and its display vanished when the other test ended.
pub(crate) fn start_xvfb() -> (Killed, String) {
    let child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1440x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut xvfb = Killed(child);
    let stdout = xvfb.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("Xvfb reported no display within 30 s"));
    let n: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Xvfb did not start: it reported {line:?}"));
    assert!(
        xvfb.0.try_wait().unwrap().is_none(),
        "Xvfb exited after reporting :{n}"
    );
    (xvfb, format!(":{n}"))
}

/// Unique colours in an image (ImageMagick's `%k`).
fn colours(png: &Path) -> u64 {
    let out = Command::new("identify")
        .args(["-format", "%k"])
        .arg(png)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The app's front end has been built into `dist/` (not the placeholder page), and the X
/// tools the window tests use are installed.
pub(crate) fn check_prerequisites() {
    let index = dist_dir().join("index.html");
    let built =
        std::fs::read_to_string(&index).is_ok_and(|html| !html.contains("oasis-placeholder"));
    assert!(
        built,
        "{} is missing: run `npm ci && npm run build` in desktop-ui, then run this test again",
        index.display()
    );
    for name in ["Xvfb", "xwininfo", "import", "identify"] {
        tool(name);
    }
}

/// The real app binary on `display`, its state in `config_dir`, its tokens in
/// `token_store`, its output in `log_path`.
pub(crate) fn spawn_app(
    display: &str,
    config_dir: &Path,
    token_store: &str,
    log_path: &Path,
) -> Killed {
    let log = std::fs::File::create(log_path).unwrap();
    let app = Command::new(env!("CARGO_BIN_EXE_desktop-ui"))
        .env("DISPLAY", display)
        .env("OASIS_ADMIN_CONFIG_DIR", config_dir)
        .env("OASIS_ADMIN_TOKEN_STORE", token_store)
        // The C locale of servers and CI: WebKitGTK turns it into the language tag `C`,
        // which JavaScript's Intl rejects; the console must start anyway
        // (src/locale-guard.ts).
        .env("LANG", "C.UTF-8")
        .env_remove("LANGUAGE")
        .env_remove("LC_ALL")
        // No GPU, no session bus, no accessibility bus under Xvfb.
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("NO_AT_BRIDGE", "1")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Killed(app)
}

/// Waits (up to 90 s) for the "Oasis Admin" window on `display`.
pub(crate) fn wait_for_window(display: &str, app: &mut Killed, app_log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let tree = Command::new("xwininfo")
            .args(["-root", "-tree", "-display", display])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&tree.stdout).contains("\"Oasis Admin\"") {
            return;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!(
                "the app exited ({status}) before its window appeared:\n{}",
                app_log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no \"Oasis Admin\" window after 90 s:\n{}",
            app_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A screenshot of the whole `display` into `png`; its number of unique colours.
pub(crate) fn screenshot(display: &str, png: &Path) -> u64 {
    let status = Command::new("import")
        .args(["-display", display, "-window", "root"])
        .arg(format!("png:{}", png.display()))
        .status()
        .unwrap();
    assert!(status.success(), "import failed");
    colours(png)
}

/// The screenshot `kept` (with `colours` unique colours) shows a drawn window, not a blank
/// one, and the app is still running.
pub(crate) fn assert_drawn_and_running(
    colours: u64,
    kept: &Path,
    app: &mut Killed,
    app_log: &dyn Fn() -> String,
) {
    assert!(
        colours >= 64,
        "the window is (nearly) blank: {colours} colours in {}; app log:\n{}",
        kept.display(),
        app_log()
    );
    assert!(
        app.0.try_wait().unwrap().is_none(),
        "the app exited:\n{}",
        app_log()
    );
}

/// Copies `shot` to `target/desktop-screenshots/NAME` and returns where.
pub(crate) fn keep_screenshot(shot: &Path, name: &str) -> PathBuf {
    let kept = target_dir().join("desktop-screenshots");
    std::fs::create_dir_all(&kept).unwrap();
    let kept = kept.join(name);
    std::fs::copy(shot, &kept).unwrap();
    kept
}

#[test]
fn the_app_opens_its_window_under_xvfb() {
    check_prerequisites();
    let (_xvfb, display) = start_xvfb();
    let config = tempfile::tempdir().unwrap();
    let log_path = config.path().join("app.log");
    let mut app = spawn_app(&display, config.path(), "memory", &log_path);
    let app_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for_window(&display, &mut app, &app_log);

    // The console renders: wait until the screen holds a real picture, not a blank window.
    let shot = config.path().join("window.png");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last;
    loop {
        last = screenshot(&display, &shot);
        if last >= 64 {
            // One more second for late paints (fonts, charts), then the final picture.
            std::thread::sleep(Duration::from_secs(1));
            last = screenshot(&display, &shot);
            break;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited ({status}):\n{}", app_log());
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let kept = keep_screenshot(&shot, "tauri-window.png");
    assert_drawn_and_running(last, &kept, &mut app, &app_log);
}
