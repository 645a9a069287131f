//! The unattended install, run by `oasis-install.service` on the installer medium: check
//! the answers, choose the disk, partition it (ESP, slot A, slot B, data), put the system
//! into slot A and systemd-boot onto the ESP, write the box's configuration onto the data
//! partition, and reboot or power off. Nothing is written before the answers and the
//! disk choice have passed every check.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use system_image::slots::{self, Layout, Slot, SlotInfo};

use crate::answers::{self, Answers};
use crate::disks;
use crate::files;

/// Where live-boot mounts the installer medium.
pub const MEDIUM: &str = "/run/live/medium";
const MIB: u64 = 1 << 20;
pub const ESP_SIZE: u64 = 512 * MIB;
/// The smallest data partition an install accepts when it takes the rest of the disk.
pub const MIN_DATA: u64 = 4 << 30;

/// Says something on every console: the service's output (the serial console) and the
/// first virtual terminal.
pub fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
    if let Ok(mut t) = std::fs::OpenOptions::new().write(true).open("/dev/tty1") {
        let _ = writeln!(t, "{line}");
    }
}

/// The partition device `n` of `disk` (`/dev/vda` -> `/dev/vda2`, `/dev/nvme0n1` ->
/// `/dev/nvme0n1p2`).
pub fn partition(disk: &Path, n: u32) -> PathBuf {
    let s = disk.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// sfdisk's input for the layout.
pub fn sfdisk_script(a: &Answers) -> String {
    const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let mib = |b: u64| b / MIB;
    let data = match a.data_size {
        Some(d) => format!("size={}MiB, ", mib(d)),
        None => String::new(),
    };
    format!(
        "label: gpt\n\
         size={}MiB, type={ESP}, name=\"{}\"\n\
         size={}MiB, type={LINUX}, name=\"oasis-a\"\n\
         size={}MiB, type={LINUX}, name=\"oasis-b\"\n\
         {data}type={LINUX}, name=\"{}\"\n",
        mib(ESP_SIZE),
        slots::ESP_LABEL,
        mib(a.slot_size),
        mib(a.slot_size),
        slots::DATA_LABEL
    )
}

/// Bytes the layout needs.
pub fn needed(a: &Answers) -> u64 {
    ESP_SIZE + 2 * a.slot_size + a.data_size.unwrap_or(MIN_DATA) + 2 * MIB
}

/// The kernel options of an installed slot.
pub fn slot_options(slot: Slot, machine_id: &str) -> String {
    format!(
        "boot=live live-media=/dev/disk/by-partlabel/{} oasis.slot={slot} systemd.unit=oasis.target systemd.machine_id={machine_id} console=tty0 console=ttyS0,115200 panic=10",
        slot.partlabel()
    )
}

/// The daemon's configuration for the installed box.
pub fn daemon_config(a: &Answers, model: Option<&str>, gpu: bool) -> Result<String> {
    let cfg = appliance_host::config_file::FileConfig {
        listen: Some(a.listen.clone()),
        models: model.map(|m| vec![PathBuf::from("/var/lib/oasis/models").join(m)]),
        tls: Some(a.tls.clone()),
        allow_plain_http: a.allow_plain_http.then_some(true),
        profile: a.profile.clone(),
        profile_policy: Some(if gpu { "apply" } else { "warn" }.into()),
        ..Default::default()
    };
    let text = toml::to_string(&cfg)?;
    // The daemon must read what we write.
    appliance_host::config_file::FileConfig::parse(&text)?;
    Ok(format!(
        "# Written by oasis-installer; the daemon's settings (README: configuration).\n{text}"
    ))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The file system label of a stick (or any partition) whose `answers.toml` is used in
/// place of the medium's: one ISO for every box, each box's answers on a small stick.
pub const ANSWERS_LABEL: &str = "OASIS-ANS";

/// The answers' text, where it came from, and the disk of an answers stick (never a
/// target).
fn read_answers(medium: &Path) -> Result<(String, String, Option<PathBuf>)> {
    let stick = Path::new("/dev/disk/by-label").join(ANSWERS_LABEL);
    if stick.exists() {
        let mnt = PathBuf::from("/run/oasis-answers");
        std::fs::create_dir_all(&mnt)?;
        run(Command::new("mount")
            .args(["-o", "ro"])
            .arg(&stick)
            .arg(&mnt))?;
        let path = mnt.join("answers.toml");
        let text = std::fs::read_to_string(&path);
        let _ = run(Command::new("umount").arg(&mnt));
        let text = text.with_context(|| {
            format!("the {ANSWERS_LABEL} stick holds no readable answers.toml; nothing was written")
        })?;
        let disk = std::fs::canonicalize(&stick)
            .ok()
            .and_then(|p| whole_disk(&p));
        return Ok((text, format!("the {ANSWERS_LABEL} stick"), disk));
    }
    let path = medium.join("oasis/answers.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no answers file at {} and no {ANSWERS_LABEL} stick (build the ISO with --answers); nothing was written",
            path.display()
        )
    })?;
    Ok((text, path.display().to_string(), None))
}

/// The whole disk behind the installer medium, so that it is never chosen.
fn medium_disk() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let dev = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(MEDIUM))?
        .split_whitespace()
        .next()?
        .to_string();
    whole_disk(Path::new(&dev))
}

/// `/dev/sdb1` -> `/dev/sdb`; a whole disk stays itself.
fn whole_disk(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_string_lossy().into_owned();
    // A partition's sysfs entry sits under its disk's.
    let sys = std::fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?.file_name()?.to_string_lossy().into_owned()
    } else {
        name
    };
    Some(PathBuf::from("/dev").join(disk))
}

/// Other disks that already carry Oasis partitions (their labels would be ambiguous).
fn other_oasis_disks(target: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(d) = std::fs::read_dir("/dev/disk/by-partlabel") else {
        return out;
    };
    for e in d.flatten() {
        let label = e.file_name().to_string_lossy().into_owned();
        if !label.starts_with("oasis-") {
            continue;
        }
        if let Ok(p) = std::fs::canonicalize(e.path()) {
            let ps = p.display().to_string();
            if !ps.starts_with(&target.display().to_string()) {
                out.push(format!("{label} on {ps}"));
            }
        }
    }
    out
}

fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `oasis-installer install`: the whole install. Returns after the disk is written; the
/// caller reboots or powers off.
pub fn install(medium: &Path) -> Result<Answers> {
    let (text, from, stick) = read_answers(medium)?;
    say(&format!("Oasis installer: answers from {from}"));
    let a = match answers::check(&text) {
        Ok(a) => a,
        Err(problems) => {
            say(&format!(
                "The answers file has {} problem(s); nothing was written to any disk:",
                problems.len()
            ));
            for p in &problems {
                say(&format!("  answers.toml {p}"));
            }
            bail!("the answers file was refused");
        }
    };
    let all = disks::list_here().context("cannot list the disks")?;
    let exclude: Vec<PathBuf> = medium_disk().into_iter().chain(stick).collect();
    let disk = disks::choose(&a.disk, &all, &exclude, needed(&a))
        .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?
        .clone();
    let others = other_oasis_disks(&disk.dev);
    if !others.is_empty() {
        bail!(
            "another disk already holds an Oasis system ({}); wipe it or remove it first; nothing was written",
            others.join(", ")
        );
    }
    let gpu = match &a.profile {
        Some(p) => crate::image::profile_needs_gpu(p)?,
        None => false,
    };
    let model = std::fs::read_dir(medium.join("oasis/models"))
        .ok()
        .and_then(|d| d.flatten().map(|e| e.file_name()).next())
        .map(|n| n.to_string_lossy().into_owned());
    let config = daemon_config(&a, model.as_deref(), gpu)?;
    say(&format!(
        "Installing Oasis on {} ({:.1} GB, model `{}`, serial `{}`): ESP, two {:.1} GB system slots, data",
        disk.dev.display(),
        disk.size_bytes as f64 / 1e9,
        disk.model,
        disk.serial,
        a.slot_size as f64 / 1e9
    ));

    // From here on the disk is written.
    let dev = &disk.dev;
    run(Command::new("wipefs").arg("--all").arg(dev))?;
    let mut sf = Command::new("sfdisk");
    sf.args(["--quiet", "--wipe", "always"]).arg(dev);
    let mut child = sf
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run sfdisk")?;
    child
        .stdin
        .take()
        .context("sfdisk's input")?
        .write_all(sfdisk_script(&a).as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "sfdisk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let _ = run(Command::new("partprobe").arg(dev));
    run(Command::new("udevadm").args(["settle", "--timeout=30"]))?;
    let (p_esp, p_a, p_b, p_data) = (
        partition(dev, 1),
        partition(dev, 2),
        partition(dev, 3),
        partition(dev, 4),
    );
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "OASIS-ESP"])
        .arg(&p_esp))?;
    for (p, label) in [
        (&p_a, "oasis-a"),
        (&p_b, "oasis-b"),
        (&p_data, "oasis-data"),
    ] {
        run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-L", label])
            .arg(p))?;
    }
    let mnt = PathBuf::from("/run/oasis-install");
    let (m_esp, m_a, m_data) = (mnt.join("esp"), mnt.join("a"), mnt.join("data"));
    for (p, m) in [(&p_esp, &m_esp), (&p_a, &m_a), (&p_data, &m_data)] {
        std::fs::create_dir_all(m)?;
        run(Command::new("mount").arg(p).arg(m))?;
    }
    let result = write_system(
        &a,
        medium,
        [&m_esp, &m_a, &m_data],
        &DataFiles {
            config: &config,
            model: model.as_deref(),
            answers: &text,
        },
    );
    let _ = run(&mut Command::new("sync"));
    for m in [&m_esp, &m_a, &m_data] {
        let _ = run(Command::new("umount").arg(m));
    }
    result?;
    say(&format!(
        "Oasis is installed on {} (slot a); remove the installation medium.",
        disk.dev.display()
    ));
    Ok(a)
}

/// What the data partition gets: the daemon's configuration, the model's file name on
/// the medium, the answers as read.
struct DataFiles<'a> {
    config: &'a str,
    model: Option<&'a str>,
    answers: &'a str,
}

fn write_system(a: &Answers, medium: &Path, mounts: [&Path; 3], files: &DataFiles) -> Result<()> {
    let [esp, slot_a, data] = mounts;
    let DataFiles {
        config,
        model,
        answers: answers_text,
    } = *files;
    // Slot A: the image this medium booted.
    say("Copying the system into slot a...");
    std::fs::create_dir_all(slot_a.join("live"))?;
    std::fs::copy(
        medium.join("live/filesystem.squashfs"),
        slot_a.join("live/filesystem.squashfs"),
    )?;
    // The ESP: systemd-boot, the slot's kernel and its entry.
    say("Installing systemd-boot...");
    // systemd-boot at the removable-media path too (EFI/BOOT/BOOTX64.EFI), so the disk
    // boots in any UEFI machine; a boot entry in the firmware when bootctl can name the
    // partition.
    let bootctl = |relaxed: bool| {
        let mut c = Command::new("bootctl");
        c.arg("install")
            .arg(format!("--esp-path={}", esp.display()));
        if relaxed {
            c.env("SYSTEMD_RELAX_ESP_CHECKS", "1").arg("--no-variables");
        }
        c
    };
    if !Path::new("/sys/firmware/efi").exists() {
        say(
            "note: this machine started the installer in BIOS mode; the installed system boots with UEFI only",
        );
        run(&mut bootctl(true))?;
    } else if let Err(e) = run(&mut bootctl(false)) {
        say(&format!(
            "note: no firmware boot entry ({e:#}); the disk boots by the removable-media path"
        ));
        run(&mut bootctl(true))?;
    }
    std::fs::write(esp.join("loader/loader.conf"), files::LOADER_CONF)?;
    let kdir = esp.join("oasis/a");
    std::fs::create_dir_all(&kdir)?;
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(medium.join("live").join(f), kdir.join(f))?;
    }
    let machine_id = random_hex(16)?;
    let build: serde_json::Value = std::fs::read(medium.join("oasis/build.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let version = build["version"].as_str().unwrap_or("unknown").to_string();
    let profile = build["profile"].as_str().unwrap_or("cpu-dev").to_string();
    slots::write_entry(
        esp,
        Slot::A,
        None,
        1,
        &version,
        &slot_options(Slot::A, &machine_id),
    )?;
    // The data partition: configuration, model, keys, records.
    say("Writing the data partition...");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir_all(data.join("models"))?;
    std::fs::create_dir_all(data.join("system/ssh"))?;
    std::fs::write(data.join("oasis.toml"), config)?;
    if let Some(m) = model {
        say(&format!("Copying the model {m}..."));
        std::fs::copy(
            medium.join("oasis/models").join(m),
            data.join("models").join(m),
        )?;
    }
    std::fs::write(data.join("system/answers.toml"), answers_text)?;
    let mut keys = a.ssh_keys.join("\n");
    keys.push('\n');
    std::fs::write(data.join("system/ssh/authorized_keys"), keys)?;
    std::fs::set_permissions(
        data.join("system/ssh/authorized_keys"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let layout = Layout {
        esp: esp.to_path_buf(),
        partitions: PathBuf::from("/dev/disk/by-partlabel"),
        state_dir: data.join("system"),
    };
    layout.save_policy(&slots::BootPolicy {
        tries: a.tries,
        health_timeout_s: a.health_timeout_s,
    })?;
    layout.save_slot_info(
        Slot::A,
        &SlotInfo {
            version,
            profile,
            installed_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_as_the_kernel_names_them() {
        assert_eq!(
            partition(Path::new("/dev/vda"), 2),
            PathBuf::from("/dev/vda2")
        );
        assert_eq!(
            partition(Path::new("/dev/nvme0n1"), 4),
            PathBuf::from("/dev/nvme0n1p4")
        );
    }

    #[test]
    fn the_layout_and_the_configuration_follow_the_answers() {
        let a = answers::check(
            "[disk]\nslot_size = \"2G\"\ndata_size = \"10G\"\n[oasis]\nlisten = \"0.0.0.0:8443\"\n",
        )
        .unwrap();
        let s = sfdisk_script(&a);
        assert!(s.contains("size=512MiB, type=C12A7328"), "{s}");
        assert!(
            s.contains("size=2048MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"oasis-b\""),
            "{s}"
        );
        assert!(
            s.contains(
                "size=10240MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"oasis-data\""
            ),
            "{s}"
        );
        assert_eq!(needed(&a), (512 << 20) + (4 << 30) + (10 << 30) + (2 << 20));
        let cfg = daemon_config(&a, Some("m.gguf"), false).unwrap();
        let parsed = appliance_host::config_file::FileConfig::parse(&cfg).unwrap();
        assert_eq!(parsed.listen.as_deref(), Some("0.0.0.0:8443"));
        assert_eq!(
            parsed.models,
            Some(vec![PathBuf::from("/var/lib/oasis/models/m.gguf")])
        );
        assert_eq!(parsed.profile_policy.as_deref(), Some("warn"));
        let o = slot_options(Slot::A, "00ff");
        assert_eq!(
            system_image::slots::options_for(Slot::B, &o),
            slot_options(Slot::B, "00ff")
        );
    }
}
