//! `oasis system`: the installed system's slots and updates (`status`, `update FILE`), and
//! the two boot-time helpers of the image: `wait-ready` (marks a slot good, or fails its
//! boot so that systemd-boot goes back) and `banner` (the pairing code and TLS fingerprint
//! on the consoles).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use oasis_api::{BootEntryState, Health, SystemSlots, UpdateAccepted, UpdateState};
use serde::Deserialize as _;
use serde_json::Value;

use super::client::DaemonArgs;

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// The system slots (A/B), the one booted, and the last update's outcome.
    Status(DaemonArgs),
    /// Install a signed update bundle (`oasis-installer bundle`) into the slot not running
    /// and reboot into it; the box goes back by itself if the new slot does not get ready.
    Update {
        /// The bundle.
        file: PathBuf,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Wait until the daemon of this box is ready (run at boot by oasis-healthy.service).
    /// On a boot that systemd-boot counts (a slot on trial), not getting ready in time
    /// exits 1, which reboots the box for its next try; otherwise it only warns.
    WaitReady {
        /// How long to wait [default: the install's `health_timeout_s`].
        #[arg(long, value_name = "SECONDS")]
        timeout_s: Option<u64>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Show how to reach and pair this box (addresses, TLS fingerprint, the one-time
    /// pairing code) on terminals; the code goes to the terminals only, never to the log.
    Banner {
        /// A terminal to write to (repeatable), e.g. /dev/ttyS0 and /dev/tty1.
        #[arg(long = "tty", value_name = "DEVICE")]
        ttys: Vec<PathBuf>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

pub fn system(cmd: &SystemCommand) -> Result<()> {
    match cmd {
        SystemCommand::Status(args) => status(args),
        SystemCommand::Update { file, daemon } => update(file, daemon),
        SystemCommand::WaitReady { timeout_s, daemon } => wait_ready(*timeout_s, daemon),
        SystemCommand::Banner { ttys, daemon } => banner(ttys, daemon),
    }
}

fn status(args: &DaemonArgs) -> Result<()> {
    let (slots, v): (SystemSlots, _) = args.get_as("/admin/v1/system/slots")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", describe(&slots));
    Ok(())
}

/// The summary `oasis system status` prints.
fn describe(v: &SystemSlots) -> String {
    let mut out = String::new();
    if !v.installed {
        out.push_str("not an installed system\n");
    }
    for slot in &v.slots {
        let mark = if slot.booted { "*" } else { " " };
        let version = slot
            .system
            .as_ref()
            .map_or("(empty)", |s| s.version.as_str());
        let state = match slot.entry.as_ref().map(|e| e.state) {
            Some(BootEntryState::Good) => "good".to_string(),
            Some(BootEntryState::Trying { left, done }) => {
                format!("on trial ({left} tries left, {done} made)")
            }
            Some(BootEntryState::Bad { done }) => format!("failed ({done} tries)"),
            None => "no boot entry".to_string(),
        };
        out.push_str(&format!("{mark} slot {}  {version}  {state}\n", slot.slot));
    }
    match &v.last_update {
        Some(u) => out.push_str(&format!(
            "last update: {} ({} -> {}): {}: {}\n",
            u.version,
            u.from,
            u.to,
            update_state(u.state),
            u.detail
        )),
        None => out.push_str("last update: none\n"),
    }
    if let Some(note) = &v.note {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// How an update went, in words.
fn update_state(s: UpdateState) -> &'static str {
    match s {
        UpdateState::Installed => "installed",
        UpdateState::Succeeded => "succeeded",
        UpdateState::RolledBack => "rolled back",
    }
}

fn update(file: &std::path::Path, args: &DaemonArgs) -> Result<()> {
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let path = "/admin/v1/system/update";
    let v = args.send_file(path, file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let a: UpdateAccepted = super::client::read_as(&v, path)?;
    let u = &a.update;
    let when = a.reboot_in_s.map_or_else(
        || "when it is rebooted".to_string(),
        |s| format!("in {s} s"),
    );
    println!(
        "installed {} into slot {}; the box reboots into it {when} and goes back to slot {} if it does not get ready ({} tries)",
        u.version, u.to, u.from, u.tries
    );
    Ok(())
}

/// systemd-boot's variable naming the counted entry of this boot, present only while a
/// slot is on trial.
const BOOT_COUNT_VAR: &str =
    "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// `/readyz` counts as ready on 200, and also on "not ready" with no model configured: a
/// box installed without a model is healthy with nothing to load.
fn is_ready(status: u16, body: &Value) -> bool {
    let health = Health::deserialize(body).ok();
    status == 200
        || (status == 503 && health.is_some_and(|h| h.status == "not_ready" && h.models.is_empty()))
}

fn wait_ready(timeout_s: Option<u64>, args: &DaemonArgs) -> Result<()> {
    let cfg = args.local_config()?;
    let timeout = Duration::from_secs(timeout_s.unwrap_or_else(|| {
        system_image::slots::Layout::installed(&cfg.data_dir)
            .policy()
            .health_timeout_s
    }));
    let started = Instant::now();
    let mut said = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        match args.call("GET", "/readyz", None) {
            Ok((code, body)) if is_ready(code, &body) => {
                println!(
                    "oasis: the daemon is ready after {} s",
                    started.elapsed().as_secs()
                );
                return Ok(());
            }
            Ok((code, body)) => last = format!("/readyz answered {code} {body}"),
            Err(e) => last = format!("{e:#}"),
        }
        if said.elapsed() > Duration::from_secs(30) {
            println!(
                "oasis: waiting for the daemon ({} s of {}): {last}",
                started.elapsed().as_secs(),
                timeout.as_secs()
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let counted = std::path::Path::new(BOOT_COUNT_VAR).exists();
    if counted {
        bail!(
            "the daemon did not get ready in {} s ({last}): this slot's boot failed; the box reboots and systemd-boot counts the try",
            timeout.as_secs()
        );
    }
    println!(
        "oasis: warning: the daemon did not get ready in {} s ({last}); this slot is not on trial, so nothing is rolled back",
        timeout.as_secs()
    );
    Ok(())
}

fn banner(ttys: &[PathBuf], args: &DaemonArgs) -> Result<()> {
    let cfg = args.local_config()?;
    let scheme = if cfg.tls { "https" } else { "http" };
    let port = cfg.listen.port();
    let addrs: Vec<String> = if cfg.listen.ip().is_unspecified() {
        appliance_host::facts::interface_addresses()
            .into_iter()
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect()
    } else {
        vec![cfg.listen.ip().to_string()]
    };
    let mut text = String::from("\r\n==================== Oasis ====================\r\n");
    for a in &addrs {
        text.push_str(&format!(" Console and API: {scheme}://{a}:{port}/\r\n"));
    }
    if addrs.is_empty() {
        text.push_str(" No network address yet (see `ip addr`).\r\n");
    }
    if cfg.tls {
        let cert = cfg
            .tls_cert
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("tls").join("cert.pem"));
        match crate::tls::fingerprint_of_file(&cert) {
            Ok(fp) => text.push_str(&format!(
                " TLS certificate SHA-256 fingerprint:\r\n   {fp}\r\n"
            )),
            Err(e) => text.push_str(&format!(" TLS certificate: {e:#}\r\n")),
        }
    }
    let public = text.clone();
    let code_file = cfg.data_dir.join(crate::auth::PAIRING_FILE);
    match std::fs::read_to_string(&code_file) {
        Ok(code) => text.push_str(&format!(
            " Pairing code: {} (one use, 24 h: enter it in the Oasis desktop app)\r\n",
            code.trim()
        )),
        Err(_) => text.push_str(
            " Paired already: `oasis pair-code` on the box makes a new pairing code.\r\n",
        ),
    }
    text.push_str("===============================================\r\n");
    let mut wrote = 0;
    for tty in ttys {
        let done = std::fs::OpenOptions::new()
            .write(true)
            .open(tty)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match done {
            Ok(()) => wrote += 1,
            Err(e) => eprintln!("oasis: cannot write to {}: {e}", tty.display()),
        }
    }
    // The log gets everything but the code.
    print!("{}", public.replace('\r', ""));
    if ttys.is_empty() {
        return Ok(());
    }
    if wrote == 0 {
        bail!("could not write to any terminal");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_without_a_model_is_ready_and_a_draining_one_is_not() {
        assert!(is_ready(200, &serde_json::json!({"status": "ready"})));
        assert!(is_ready(
            503,
            &serde_json::json!({"status": "not_ready", "models": []})
        ));
        assert!(!is_ready(
            503,
            &serde_json::json!({"status": "draining", "models": []})
        ));
        assert!(!is_ready(502, &Value::Null));
    }

    #[test]
    fn the_status_names_each_slot_and_the_last_update() {
        let slot =
            |name: &str, booted: bool, version: &str, state: BootEntryState| oasis_api::SlotView {
                slot: name.into(),
                booted,
                system: Some(oasis_api::SlotSystem {
                    version: version.into(),
                    profile: "cpu-dev".into(),
                    installed_unix: 0,
                }),
                entry: Some(oasis_api::BootEntry {
                    slot: name.into(),
                    state,
                    generation: 1,
                    title: "Oasis".into(),
                    file: format!("oasis-{name}.conf"),
                }),
            };
        let v = SystemSlots {
            installed: true,
            booted: Some("a".into()),
            slots: vec![
                slot("a", true, "1.0", BootEntryState::Good),
                slot("b", false, "1.1", BootEntryState::Bad { done: 1 }),
            ],
            last_update: Some(oasis_api::UpdateRecord {
                version: "1.1".into(),
                from: "a".into(),
                to: "b".into(),
                generation: 2,
                tries: 3,
                state: UpdateState::RolledBack,
                started_unix: 0,
                finished_unix: None,
                detail: "1.1 did not become ready".into(),
            }),
            boot_policy: oasis_api::BootPolicy {
                tries: 3,
                health_timeout_s: 600,
            },
            update_key: true,
            note: None,
        };
        let text = describe(&v);
        assert!(text.contains("* slot a  1.0  good"), "{text}");
        assert!(text.contains("  slot b  1.1  failed (1 tries)"), "{text}");
        assert!(
            text.contains("last update: 1.1 (a -> b): rolled back: 1.1 did not become ready"),
            "{text}"
        );
        let none = describe(&SystemSlots {
            installed: false,
            booted: None,
            slots: Vec::new(),
            last_update: None,
            note: Some("n".into()),
            ..v
        });
        assert!(none.contains("not an installed system") && none.contains("note: n"));
    }
}
