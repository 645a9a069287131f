//! The installer end to end, in QEMU (TCG: no KVM assumed; OVMF for UEFI), with the
//! serial console read by the test. One scenario, in order, because each step starts
//! from the box the previous one left:
//!
//! 1. `oasis-installer build-system` (mmdebstrap, a Debian 12 image with this build's
//!    `oasis`), `build-iso` with SmolLM2 and an answers file; the ISO boots on a BIOS
//!    machine too.
//! 2. The ISO on a USB stick, a second stick with a bad answers file: the install stops
//!    with every problem on the console, and the disk is not touched (not one block of the
//!    sparse disk file allocated).
//! 3. The unattended install onto an empty disk; the box powers off.
//! 4. First boot of the installed disk: the pairing code and TLS fingerprint on the
//!    serial console, the fingerprint the one the box serves, `/readyz` and a chat through
//!    a forwarded port (curl, and the official `openai` client trusting only the pinned
//!    certificate), pairing with the code; a key, some usage; the web console.
//! 5. Update bundles that must be refused before anything is written: signed by another
//!    key, and altered after signing.
//! 6. Update A -> B with a signed bundle (`oasis system update` from the host, through
//!    the admin API, trusting the box's certificate):
//!    the box reboots into B, which is marked good; keys, usage, models and the audit
//!    log are all still there.
//! 7. A broken update (its `oasis` fails): the box boots it once, the boot fails, and it
//!    goes back to B by itself; `GET /admin/v1/system/slots`, `oasis system status` and
//!    the audit log report the rollback.
//!
//! Needs root, mmdebstrap, squashfs-tools, grub-mkrescue, xorriso, mtools, dosfstools,
//! qemu-system-x86 and OVMF (scripts/setup-host installs them) and a Debian mirror.
//! Without them it says what is missing and passes, unless `OASIS_REQUIRE_INSTALLER=1`
//! (scripts/test sets it), which makes a missing tool a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// A boot under TCG takes two to three minutes here; CI machines may be slower.
const BOOT: Duration = Duration::from_secs(900);

const ANSWERS: &str = r#"# The test box: an 8 GB virtual disk found by its serial; DHCP from QEMU.
[disk]
serial = "oasis-e2e-*"
slot_size = "1G"

[system]
hostname = "oasis-e2e"
timezone = "Europe/Paris"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop"]
after_install = "poweroff"

[network]
mode = "dhcp"

[oasis]
profile = "cpu-dev"
listen = "0.0.0.0:8443"

[boot]
tries = 1
health_timeout_s = 600
"#;

const BAD_ANSWERS: &str = r#"[disk]
serial = "oasis-e2e-*"
slot_size = "10M"

[system]
hostname = "-not a name-"
timezone = "Mars/Olympus"

[oasis]
listen = "everywhere"
"#;

fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mksquashfs", "squashfs-tools"),
        ("unsquashfs", "squashfs-tools"),
        ("grub-mkrescue", "grub-common"),
        ("xorriso", "xorriso"),
        ("mformat", "mtools"),
        ("mcopy", "mtools"),
        ("mkfs.vfat", "dosfstools"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("strip", "binutils"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} ({pkg})"));
        }
    }
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).is_file() {
            missing.push(format!("{f} (ovmf)"));
        }
    }
    if appliance_daemon::paths::euid() != Some(0) {
        missing.push("root (mmdebstrap and the install's loop mounts)".into());
    }
    missing
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A QEMU machine writing its serial console to a file.
struct Vm {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Vm {
    fn start(dir: &Path, name: &str, disk: &Path, extra: &[String], port: u16) -> Vm {
        let vars = dir.join("vars.fd");
        if !vars.exists() {
            std::fs::copy(OVMF_VARS, &vars).unwrap();
        }
        let log = dir.join(format!("{name}.serial.log"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "3072",
            "-display",
            "none",
            "-no-user-config",
            "-nodefaults",
            "-drive",
            &format!("if=none,id=d0,format=raw,file={}", disk.display()),
            "-device",
            "virtio-blk-pci,drive=d0,serial=oasis-e2e-disk",
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8443"),
            "-device",
            "virtio-net-pci,netdev=n0",
            "-device",
            "virtio-rng-pci",
            "-serial",
            &format!("file:{}", log.display()),
        ]);
        // UEFI (OVMF, with the variables the install wrote), or the machine's BIOS.
        if !name.starts_with("bios-") {
            cmd.arg("-drive")
                .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        cmd.args(extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu: {e}"));
        eprintln!("[{name}] qemu started (serial: {})", log.display());
        Vm {
            child,
            log,
            name: name.into(),
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows `what` after `from` bytes; returns where it ends.
    fn wait_for(&mut self, what: &str, from: usize, timeout: Duration) -> usize {
        let t = Instant::now();
        loop {
            let c = self.console();
            if let Some(i) = c.get(from..).and_then(|tail| tail.find(what)) {
                eprintln!("[{}] {what:?} after {:?}", self.name, t.elapsed());
                return from + i + what.len();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "[{}] qemu ended ({st}) before {what:?}; console tail:\n{}",
                    self.name,
                    tail(&c)
                );
            }
            assert!(
                t.elapsed() < timeout,
                "[{}] no {what:?} in {timeout:?}; console tail:\n{}",
                self.name,
                tail(&c)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Waits for the machine to power off.
    fn wait_exit(&mut self, timeout: Duration) {
        let t = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("[{}] powered off after {:?}", self.name, t.elapsed());
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "[{}] still running after {timeout:?}; console tail:\n{}",
                self.name,
                tail(&self.console())
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `curl` against the box's forwarded port: (status, body as JSON or a string). `body` is
/// a JSON value, or a file sent as it is.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut args: Vec<String> = Vec::new();
    if let Some(b) = body {
        args.extend(["-H".into(), "content-type: application/json".into()]);
        args.extend(["--data-binary".into(), b.to_string()]);
    }
    curl(port, method, path, token, &args)
}

fn curl(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[String],
) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sk",
        "--max-time",
        "900",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    cmd.args(extra);
    cmd.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (code, v)
}

/// Posts a file as an update bundle.
fn upload(port: u16, token: &str, file: &Path) -> (u16, Value) {
    let extra = [
        "-H".to_string(),
        "content-type: application/octet-stream".to_string(),
        "--data-binary".to_string(),
        format!("@{}", file.display()),
    ];
    curl(port, "POST", "/admin/v1/system/update", Some(token), &extra)
}

/// A chat completion that must answer with some text.
fn chat_ok(port: u16, token: &str, body: &Value) {
    let (st, answer) = http(
        port,
        "POST",
        "/v1/chat/completions",
        Some(token),
        Some(body),
    );
    assert_eq!(st, 200, "{answer}");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
}

/// Polls `/readyz` until it answers 200.
fn wait_ready(vm: &mut Vm, port: u16, timeout: Duration) {
    let t = Instant::now();
    loop {
        let (code, _) = http(port, "GET", "/readyz", None, None);
        if code == 200 {
            eprintln!("[{}] /readyz 200 after {:?}", vm.name, t.elapsed());
            return;
        }
        if let Ok(Some(st)) = vm.child.try_wait() {
            panic!("qemu ended ({st}); console:\n{}", tail(&vm.console()));
        }
        assert!(
            t.elapsed() < timeout,
            "/readyz not 200 in {timeout:?}; console:\n{}",
            tail(&vm.console())
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The certificate the box serves, saved as PEM at `pem`, and its fingerprint as
/// `openssl x509 -fingerprint -sha256` prints it.
fn served_cert(port: u16, pem: &Path) -> String {
    sh(Command::new("sh").args([
        "-c",
        &format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 > {}",
            pem.display()
        ),
    ]));
    let fp = sh(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem));
    fp.trim()
        .split_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_default()
}

/// A chat completion through the official `openai` client, over HTTPS that trusts only
/// the pinned certificate `pem`.
fn openai_chat(port: u16, pem: &Path, key: &str, model: &str) -> String {
    let script = format!(
        r#"
import httpx, openai
c = openai.OpenAI(base_url="https://127.0.0.1:{port}/v1", api_key="{key}",
                  http_client=httpx.Client(verify="{pem}", timeout=600))
r = c.chat.completions.create(model="{model}", max_tokens=4, temperature=0,
                              messages=[{{"role": "user", "content": "Say hello."}}])
assert r.choices[0].message.content, r
print(r.choices[0].message.content)
"#,
        pem = pem.display()
    );
    sh(Command::new(tests::test_python()).arg("-c").arg(script))
}

/// A copy of the system image `src` with its root file system changed by `edit`, with its
/// own version: how the test makes a second release (and a broken one) quickly.
fn remaster(src: &Path, dst: &Path, version: &str, edit: impl FnOnce(&Path)) {
    let root = dst.with_extension("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(dst).unwrap();
    sh(Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&root)
        .arg(src.join("filesystem.squashfs")));
    let sysjson = root.join("usr/share/oasis/system.json");
    let mut sys: Value = serde_json::from_slice(&std::fs::read(&sysjson).unwrap()).unwrap();
    sys["version"] = json!(version);
    std::fs::write(&sysjson, sys.to_string()).unwrap();
    edit(&root);
    sh(Command::new("mksquashfs")
        .arg(&root)
        .arg(dst.join("filesystem.squashfs"))
        .args(["-noappend", "-quiet", "-comp", "zstd"]));
    std::fs::remove_dir_all(&root).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut build: Value =
        serde_json::from_slice(&std::fs::read(src.join("build.json")).unwrap()).unwrap();
    build["version"] = json!(version);
    std::fs::write(dst.join("build.json"), build.to_string()).unwrap();
}

#[test]
fn install_first_boot_update_and_rollback_in_qemu() {
    let missing = missing_tools();
    if !missing.is_empty() {
        let msg = format!("the installer test needs: {}", missing.join(", "));
        assert!(
            std::env::var_os("OASIS_REQUIRE_INSTALLER").is_none(),
            "{msg} (OASIS_REQUIRE_INSTALLER is set)"
        );
        eprintln!("skipped: {msg}");
        return;
    }
    let started = Instant::now();
    // OASIS_INSTALLER_WORKDIR keeps the work (image, keys, disks, consoles) in a folder
    // that outlives the test, and reuses an image and keys built there before: for
    // looking at a failure, and for iterating on the later steps.
    let tmp = tempfile::Builder::new()
        .prefix("oasis-installer-e2e-")
        .tempdir()
        .unwrap();
    let kept = std::env::var_os("OASIS_INSTALLER_WORKDIR").map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let oasis = tests::oasis_bin();
    let installer = tests::build_bin("installer", "oasis-installer");
    // Stripped copies: the image carries them.
    let (s_oasis, s_installer) = (dir.join("oasis"), dir.join("oasis-installer"));
    sh(Command::new("strip").arg("-o").arg(&s_oasis).arg(oasis));
    sh(Command::new("strip")
        .arg("-o")
        .arg(&s_installer)
        .arg(&installer));
    for k in ["key", "other-key"] {
        if !dir.join(k).join("update-key.pub").exists() {
            sh(Command::new(&s_installer)
                .args(["keygen", "--out"])
                .arg(dir.join(k)));
        }
    }
    let cache = std::env::var_os("OASIS_DEB_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/oasis/debs")
        },
        PathBuf::from,
    );

    // 1. The image and the ISO.
    let t = Instant::now();
    let sys1 = dir.join("sys-1.0");
    if kept.is_none() || !sys1.join("build.json").exists() {
        let mut build = Command::new(&s_installer);
        build
            .args(["build-system", "--system-version", "1.0", "--out"])
            .arg(&sys1)
            .arg("--oasis")
            .arg(&s_oasis)
            .arg("--update-key")
            .arg(dir.join("key/update-key.pub"))
            .arg("--cache")
            .arg(&cache);
        // The web console, when the front end was built (scripts/test builds it first).
        let console = tests::workspace_root().join("desktop-ui/dist");
        if console.join("index.html").is_file() {
            build.arg("--console").arg(&console);
        }
        if let Ok(m) = std::env::var("OASIS_DEBIAN_MIRROR") {
            build.args(["--mirror", &m]);
        }
        sh(&mut build);
    }
    let build_s = t.elapsed().as_secs_f64();
    let has_console = sh(Command::new("unsquashfs")
        .arg("-l")
        .arg(sys1.join("filesystem.squashfs"))
        .arg("usr/share/oasis/console/index.html"))
    .contains("index.html");
    let answers = dir.join("answers.toml");
    std::fs::write(&answers, ANSWERS).unwrap();
    sh(Command::new(&s_installer)
        .arg("check-answers")
        .arg(&answers));
    let iso = dir.join("oasis.iso");
    let t = Instant::now();
    sh(Command::new(&s_installer)
        .args(["build-iso", "--out"])
        .arg(&iso)
        .arg("--system")
        .arg(&sys1)
        .arg("--model")
        .arg(tests::model_path())
        .arg("--answers")
        .arg(&answers));
    let iso_s = t.elapsed().as_secs_f64();
    let iso_mb = std::fs::metadata(&iso).unwrap().len() as f64 / 1e6;
    eprintln!("image built in {build_s:.0} s, ISO ({iso_mb:.0} MB) in {iso_s:.1} s");

    let disk = dir.join("disk.raw");
    let _ = std::fs::remove_file(dir.join("vars.fd"));
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let cd = |iso: &Path| -> Vec<String> {
        vec![
            "-drive".into(),
            format!(
                "if=none,id=cd,format=raw,readonly=on,file={}",
                iso.display()
            ),
            "-device".into(),
            "ide-cd,drive=cd,bootindex=0".into(),
        ]
    };

    // The ISO also boots on a BIOS machine: GRUB starts the installer's kernel.
    {
        // No disk worth the name: it is stopped long before the install would start.
        let scratch = dir.join("bios-scratch.raw");
        std::fs::File::create(&scratch)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut vm = Vm::start(dir, "bios-iso", &scratch, &cd(&iso), 18443);
        vm.wait_for("Command line: BOOT_IMAGE=/live/vmlinuz", 0, BOOT);
        vm.stop();
    }

    // 2. A bad answers file on an answers stick: the problems on the console, the disk
    // untouched.
    let stick = dir.join("answers-stick.img");
    std::fs::File::create(&stick)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    sh(Command::new("mkfs.vfat")
        .args(["-n", "OASIS-ANS"])
        .arg(&stick));
    let bad = dir.join("bad-answers.toml");
    std::fs::write(&bad, BAD_ANSWERS).unwrap();
    sh(Command::new("mcopy")
        .arg("-i")
        .arg(&stick)
        .arg(&bad)
        .arg("::answers.toml"));
    // The disk is a sparse file: not a block of it is allocated until something writes.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap());
    assert_eq!(blocks(&disk), 0);
    {
        // The ISO written to a USB stick this time (a hybrid image), the answers on a
        // second stick.
        let extra: Vec<String> = vec![
            "-device".into(),
            "qemu-xhci,id=xhci".into(),
            "-drive".into(),
            format!(
                "if=none,id=usb,format=raw,readonly=on,file={}",
                iso.display()
            ),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=usb,bootindex=0".into(),
            "-drive".into(),
            format!("if=none,id=st,format=raw,file={}", stick.display()),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=st".into(),
        ];
        let mut vm = Vm::start(dir, "bad-answers", &disk, &extra, 18443);
        let at = vm.wait_for("problem(s); nothing was written to any disk", 0, BOOT);
        vm.wait_for("OASIS INSTALL STOPPED", at, Duration::from_secs(60));
        let c = vm.console();
        for needle in [
            "answers from the OASIS-ANS stick",
            "line 3: disk.slot_size",
            "line 6: system.hostname",
            "line 7: system.timezone",
            "line 10: oasis.listen",
        ] {
            assert!(c.contains(needle), "{needle} not named:\n{}", tail(&c));
        }
        vm.stop();
    }
    assert_eq!(
        blocks(&disk),
        0,
        "the bad answers file got something written to the disk"
    );

    // 3. The unattended install.
    let t = Instant::now();
    {
        let mut vm = Vm::start(dir, "install", &disk, &cd(&iso), 18443);
        let at = vm.wait_for("Oasis is installed on /dev/vda (slot a)", 0, BOOT);
        vm.wait_for(
            "Installation complete; poweroff",
            at,
            Duration::from_secs(60),
        );
        vm.wait_exit(Duration::from_secs(300));
    }
    let install_s = t.elapsed().as_secs_f64();

    // 4. First boot.
    let port = 18443;
    let t = Instant::now();
    let mut vm = Vm::start(dir, "boot-a", &disk, &[], port);
    let at = vm.wait_for("Pairing code: ", 0, BOOT);
    let console = vm.console();
    let code: String = console[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let fp_at = console
        .find("TLS certificate SHA-256 fingerprint:")
        .expect("fingerprint on the console");
    let fingerprint: String = console[fp_at..]
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    wait_ready(&mut vm, port, BOOT);
    let first_boot_s = t.elapsed().as_secs_f64();
    let pem = dir.join("served.pem");
    assert_eq!(
        served_cert(port, &pem),
        fingerprint,
        "the console's fingerprint is not the served certificate's"
    );
    let (code_status, paired) = http(
        port,
        "POST",
        "/admin/v1/pair",
        None,
        Some(&json!({"code": code, "name": "e2e-admin"})),
    );
    assert_eq!(code_status, 201, "{paired}");
    assert_eq!(paired["tls_fingerprint"], json!(fingerprint), "{paired}");
    let admin = paired["key"].as_str().expect("an admin key").to_string();
    let (st, key) = http(
        port,
        "POST",
        "/admin/v1/keys",
        Some(&admin),
        Some(&json!({"name": "team-é", "role": "user"})),
    );
    assert_eq!(st, 201, "{key}");
    let user = key["key"].as_str().unwrap().to_string();
    let (_, models) = http(port, "GET", "/v1/models", Some(&user), None);
    let model = models["data"][0]["id"]
        .as_str()
        .expect("a served model")
        .to_string();
    let chat = json!({"model": model, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}]});
    chat_ok(port, &user, &chat);
    let said = openai_chat(port, &pem, &user, &model);
    eprintln!("[boot-a] the openai client got {said:?}");
    if has_console {
        let (st, page) = http(port, "GET", "/", None, None);
        assert_eq!(st, 200, "{page}");
        assert!(
            page.as_str()
                .is_some_and(|p| p.to_lowercase().contains("<html")),
            "{page}"
        );
    }
    let (_, slots) = http(port, "GET", "/admin/v1/system/slots", Some(&admin), None);
    assert_eq!(slots["booted"], "a", "{slots}");
    assert_eq!(slots["slots"][0]["entry"]["state"], "good", "{slots}");
    assert_eq!(slots["slots"][0]["system"]["version"], "1.0", "{slots}");
    // Metering is written behind the answers: wait for the chat's tokens.
    let t2 = Instant::now();
    let usage_before = loop {
        let (_, u) = http(port, "GET", "/admin/v1/usage", Some(&admin), None);
        if u["data"].as_array().is_some_and(|d| !d.is_empty())
            || t2.elapsed() > Duration::from_secs(60)
        {
            break u;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let (_, models_before) = http(port, "GET", "/admin/v1/models", Some(&admin), None);

    // 5. Bundles refused before anything is written.
    let sys2 = dir.join("sys-2.0");
    remaster(&sys1, &sys2, "2.0", |root| {
        std::fs::write(root.join("etc/oasis-release-2.0"), "2.0\n").unwrap();
    });
    let bundle = |sys: &Path, key: &str, name: &str| -> PathBuf {
        let out = dir.join(name);
        sh(Command::new(&s_installer)
            .args(["bundle", "--system"])
            .arg(sys)
            .arg("--key")
            .arg(dir.join(key).join("update-key.secret"))
            .arg("--out")
            .arg(&out));
        out
    };
    let good = bundle(&sys2, "key", "update-2.0.oasis");
    let foreign = bundle(&sys2, "other-key", "foreign.oasis");
    let (st, e) = upload(port, &admin, &foreign);
    assert_eq!(st, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("signature"),
        "{e}"
    );
    // One byte changed inside the squashfs (after the signed manifest).
    let altered = dir.join("altered.oasis");
    std::fs::copy(&good, &altered).unwrap();
    {
        use std::io::{Seek as _, SeekFrom};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&altered)
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(b"\xff\x00\xff").unwrap();
    }
    let (st, e) = upload(port, &admin, &altered);
    assert_eq!(st, 400, "{e}");
    let (st, e) = upload(port, &user, &good);
    assert_eq!(st, 403, "{e}");
    for f in [&foreign, &altered] {
        std::fs::remove_file(f).unwrap();
    }
    let (_, slots) = http(port, "GET", "/admin/v1/system/slots", Some(&admin), None);
    assert!(
        slots["slots"][1]["entry"].is_null(),
        "a refused bundle wrote slot b: {slots}"
    );
    assert!(slots["last_update"].is_null(), "{slots}");

    // 6. A -> B, as an admin does it from a laptop: `oasis system update` through the
    // admin API, trusting the box's certificate.
    let t = Instant::now();
    let url = format!("https://127.0.0.1:{port}");
    let out = Command::new(oasis)
        .args(["system", "update"])
        .arg(&good)
        .args(["--url", &url, "--token", &admin, "--json", "--cacert"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oasis system update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(accepted["update"]["to"], "b", "{accepted}");
    let mark = vm.console().len();
    let at = vm.wait_for("reboot: Restarting system", mark, BOOT);
    vm.wait_for("Console and API: ", at, BOOT);
    wait_ready(&mut vm, port, BOOT);
    let update_s = t.elapsed().as_secs_f64();
    let (_, slots) = http(port, "GET", "/admin/v1/system/slots", Some(&admin), None);
    assert_eq!(slots["booted"], "b", "{slots}");
    assert_eq!(slots["last_update"]["state"], "succeeded", "{slots}");
    assert_eq!(slots["slots"][1]["system"]["version"], "2.0", "{slots}");
    // Marked good by systemd-bless-boot once the daemon was ready (it may trail /readyz).
    let t2 = Instant::now();
    loop {
        let (_, s) = http(port, "GET", "/admin/v1/system/slots", Some(&admin), None);
        if s["slots"][1]["entry"]["state"] == "good" {
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(300),
            "slot b never marked good: {s}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    // Nothing of the data partition was lost: keys, usage, models, the certificate.
    openai_chat(port, &pem, &user, &model);
    // The first chat's tokens were metered before the update and are still counted.
    let tokens = |u: &Value| -> u64 {
        u["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["group"] == key["id"])
            .map(|r| r["total_tokens"].as_u64().unwrap_or(0))
            .sum()
    };
    let t2 = Instant::now();
    let usage_after = loop {
        let (_, u) = http(port, "GET", "/admin/v1/usage", Some(&admin), None);
        if tokens(&u) > tokens(&usage_before) || t2.elapsed() > Duration::from_secs(60) {
            break u;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(tokens(&usage_before) > 0, "{usage_before}");
    assert!(
        tokens(&usage_after) > tokens(&usage_before),
        "usage lost: {usage_before} -> {usage_after}"
    );
    let (_, models_after) = http(port, "GET", "/admin/v1/models", Some(&admin), None);
    assert_eq!(models_after, models_before);

    // 7. A broken update: its daemon cannot start; the box goes back to B by itself.
    let sys3 = dir.join("sys-3.0-broken");
    remaster(&sys2, &sys3, "3.0-broken", |root| {
        std::fs::write(
            root.join("usr/bin/oasis"),
            "#!/bin/sh\necho 'broken on purpose' >&2\nexit 1\n",
        )
        .unwrap();
    });
    let broken = bundle(&sys3, "key", "update-3.0.oasis");
    let t = Instant::now();
    let (st, accepted) = upload(port, &admin, &broken);
    assert_eq!(st, 202, "{accepted}");
    assert_eq!(accepted["update"]["to"], "a", "{accepted}");
    let mark = vm.console().len();
    let at = vm.wait_for("reboot: Restarting system", mark, BOOT);
    // Slot a's boot fails, and the box reboots into b.
    let at = vm.wait_for("reboot: Restarting system", at, BOOT);
    vm.wait_for("Console and API: ", at, BOOT);
    wait_ready(&mut vm, port, BOOT);
    let rollback_s = t.elapsed().as_secs_f64();
    let (_, slots) = http(port, "GET", "/admin/v1/system/slots", Some(&admin), None);
    assert_eq!(slots["booted"], "b", "{slots}");
    assert_eq!(slots["last_update"]["state"], "rolled_back", "{slots}");
    assert_eq!(slots["last_update"]["version"], "3.0-broken", "{slots}");
    assert_eq!(slots["slots"][0]["entry"]["state"], "bad", "{slots}");
    let out = Command::new(oasis)
        .args([
            "system", "status", "--url", &url, "--token", &admin, "--cacert",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("last update: 3.0-broken (b -> a): rolled back"),
        "{said}"
    );
    let (_, audit) = http(port, "GET", "/admin/v1/audit?limit=200", Some(&admin), None);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "system.update",
        "system.update.succeeded",
        "system.update.rolled_back",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    vm.stop();
    eprintln!(
        "figures (TCG): image {build_s:.0} s, ISO {iso_mb:.0} MB in {iso_s:.1} s, install {install_s:.0} s, first boot to ready {first_boot_s:.0} s, update to ready {update_s:.0} s, broken update to rolled back and ready {rollback_s:.0} s, all {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
