//! The two system slots and how the box boots them.
//!
//! The disk holds an EFI system partition (`oasis-esp`, mounted at `/efi`), two system
//! slots (`oasis-a`, `oasis-b`: ext4 holding `live/filesystem.squashfs`, the read-only
//! root) and the data partition (`oasis-data`, `/var/lib/oasis`), found by their GPT
//! partition labels. systemd-boot starts a slot from its entry in `/efi/loader/entries`:
//! `oasis-a.conf` is a slot that booted well; a freshly installed slot gets
//! `oasis-b+3.conf`, systemd-boot counts each try down in the name (`+2-1`, ...), and
//! `systemd-bless-boot` drops the counter once `boot-complete.target` is reached (which
//! needs the daemon ready). An entry with no tries left sorts after the good one, so the
//! box goes back to the previous slot by itself. This module reads and writes those
//! entries, installs a verified bundle into the slot not running, and works out what
//! became of the last update.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::bundle::{self, BundleError, Verified};

/// A system slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The GPT partition label.
    pub fn partlabel(self) -> String {
        format!("oasis-{}", self.name())
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The partition label of the EFI system partition and of the data partition.
pub const ESP_LABEL: &str = "oasis-esp";
pub const DATA_LABEL: &str = "oasis-data";

/// What the kernel command line says about this boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootInfo {
    /// `oasis.slot=a|b`: booted from an installed slot.
    pub slot: Option<Slot>,
    /// `oasis.mode=install`: the installer medium.
    pub install_mode: bool,
}

pub fn parse_cmdline(text: &str) -> BootInfo {
    let mut info = BootInfo::default();
    for word in text.split_whitespace() {
        if let Some(v) = word.strip_prefix("oasis.slot=") {
            info.slot = Slot::parse(v);
        } else if word == "oasis.mode=install" {
            info.install_mode = true;
        }
    }
    info
}

/// This boot, from `/proc/cmdline`.
pub fn boot_info() -> BootInfo {
    parse_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// A boot entry's standing under systemd-boot's boot counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// Booted well (no counter).
    Good,
    /// Being tried: `left` tries remain, `done` were made.
    Trying { left: u32, done: u32 },
    /// No tries left: systemd-boot boots it only when nothing else is there.
    Bad { done: u32 },
}

/// One slot's boot entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub slot: Slot,
    #[serde(flatten)]
    pub state: EntryState,
    /// The entry's `version` (the install generation: newer boots first).
    pub generation: u64,
    pub title: String,
    pub file: String,
    #[serde(skip)]
    pub options: String,
}

/// `oasis-b+2-1.conf` -> (b, Some(2), Some(1)).
pub fn parse_entry_name(name: &str) -> Option<(Slot, Option<u32>, Option<u32>)> {
    let stem = name.strip_suffix(".conf")?.strip_prefix("oasis-")?;
    let (slot, counter) = match stem.split_once('+') {
        Some((s, c)) => (s, Some(c)),
        None => (stem, None),
    };
    let slot = Slot::parse(slot)?;
    match counter {
        None => Some((slot, None, None)),
        Some(c) => {
            let (left, done) = match c.split_once('-') {
                Some((l, d)) => (l.parse().ok()?, Some(d.parse().ok()?)),
                None => (c.parse().ok()?, None),
            };
            Some((slot, Some(left), done))
        }
    }
}

fn entries_dir(esp: &Path) -> PathBuf {
    esp.join("loader/entries")
}

/// The slots' entries on the ESP (other entries are not ours and are left alone).
pub fn read_entries(esp: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let dir = match std::fs::read_dir(entries_dir(esp)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in dir {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((slot, left, done)) = parse_entry_name(&name) else {
            continue;
        };
        let text = std::fs::read_to_string(e.path())?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| {
                    let l = l.trim();
                    let (k, v) = l.split_once(char::is_whitespace)?;
                    (k == key).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let state = match (left, done) {
            (None, _) => EntryState::Good,
            (Some(0), d) => EntryState::Bad {
                done: d.unwrap_or(0),
            },
            (Some(l), d) => EntryState::Trying {
                left: l,
                done: d.unwrap_or(0),
            },
        };
        out.push(Entry {
            slot,
            state,
            generation: field("version").parse().unwrap_or(0),
            title: field("title"),
            options: field("options"),
            file: name,
        });
    }
    out.sort_by_key(|e| (e.slot.name(), e.generation));
    Ok(out)
}

/// The kernel options of `slot`, from another slot's: `oasis.slot=` and the live medium
/// point at `slot`, everything else (console, machine id) is kept.
pub fn options_for(slot: Slot, base: &str) -> String {
    base.split_whitespace()
        .map(|w| {
            if w.starts_with("oasis.slot=") {
                format!("oasis.slot={slot}")
            } else if w.starts_with("live-media=") {
                format!("live-media=/dev/disk/by-partlabel/{}", slot.partlabel())
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `slot`'s entry (replacing any it had): with `tries`, a counted entry
/// (`oasis-b+3.conf`) that must prove itself; without, a good one.
pub fn write_entry(
    esp: &Path,
    slot: Slot,
    tries: Option<u32>,
    generation: u64,
    version: &str,
    options: &str,
) -> std::io::Result<PathBuf> {
    let dir = entries_dir(esp);
    std::fs::create_dir_all(&dir)?;
    for e in read_entries(esp)? {
        if e.slot == slot {
            std::fs::remove_file(dir.join(&e.file))?;
        }
    }
    let name = match tries {
        Some(t) => format!("oasis-{slot}+{t}.conf"),
        None => format!("oasis-{slot}.conf"),
    };
    let text = format!(
        "title Oasis {version} (slot {slot})\nsort-key oasis\nversion {generation}\nlinux /oasis/{slot}/vmlinuz\ninitrd /oasis/{slot}/initrd.img\noptions {options}\n"
    );
    let path = dir.join(name);
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// What a slot holds, kept on the data partition (`system/slot-a.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub version: String,
    pub profile: String,
    pub installed_unix: u64,
}

/// How a new slot is tried: boots it gets, and time per boot for the daemon to be ready
/// (`system/boot.json`, from the answers file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPolicy {
    pub tries: u32,
    pub health_timeout_s: u64,
}

impl Default for BootPolicy {
    fn default() -> Self {
        BootPolicy {
            tries: 3,
            health_timeout_s: 600,
        }
    }
}

/// How the last update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Written to the other slot; the box reboots into it.
    Installed,
    /// The new slot booted and its daemon became ready.
    Succeeded,
    /// The new slot did not become ready within its tries; the old slot runs again.
    RolledBack,
}

/// The last update, kept on the data partition (`system/update.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub version: String,
    pub from: Slot,
    pub to: Slot,
    pub generation: u64,
    pub tries: u32,
    pub state: UpdateState,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    pub detail: String,
}

/// Where the pieces of the installed system are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The mounted EFI system partition.
    pub esp: PathBuf,
    /// Where partitions appear by label (`/dev/disk/by-partlabel`).
    pub partitions: PathBuf,
    /// The system's records on the data partition (`/var/lib/oasis/system`).
    pub state_dir: PathBuf,
}

impl Layout {
    pub fn installed(data_dir: &Path) -> Layout {
        Layout {
            esp: PathBuf::from("/efi"),
            partitions: PathBuf::from("/dev/disk/by-partlabel"),
            state_dir: data_dir.join("system"),
        }
    }

    pub fn record_path(&self) -> PathBuf {
        self.state_dir.join("update.json")
    }

    pub fn load_record(&self) -> Option<UpdateRecord> {
        let text = std::fs::read(self.record_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save_record(&self, r: &UpdateRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.state_dir)?;
        let text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        write_atomic(&self.record_path(), &text)
    }

    /// The boot policy, or the defaults when none was written.
    pub fn policy(&self) -> BootPolicy {
        std::fs::read(self.state_dir.join("boot.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    }

    pub fn save_policy(&self, p: &BootPolicy) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.state_dir)?;
        let text = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        write_atomic(&self.state_dir.join("boot.json"), &text)
    }

    pub fn slot_info(&self, slot: Slot) -> Option<SlotInfo> {
        let text = std::fs::read(self.state_dir.join(format!("slot-{slot}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save_slot_info(&self, slot: Slot, info: &SlotInfo) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.state_dir)?;
        let text = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        write_atomic(&self.state_dir.join(format!("slot-{slot}.json")), &text)
    }
}

/// Puts a system image's root file system into a slot.
pub trait SlotWriter {
    /// Makes `slot` hold `image` (the squashfs) at `live/filesystem.squashfs`, calling
    /// `fill` with the open destination file.
    fn write_root(
        &self,
        layout: &Layout,
        slot: Slot,
        fill: &mut dyn FnMut(&mut std::fs::File) -> Result<(), BundleError>,
    ) -> Result<(), BundleError>;
}

fn run(cmd: &mut Command) -> Result<(), BundleError> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(BundleError::Io(std::io::Error::other(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    Ok(())
}

/// The real slot: a fresh ext4 file system on the partition, mounted for the copy.
#[derive(Debug, Default)]
pub struct PartitionWriter;

impl SlotWriter for PartitionWriter {
    fn write_root(
        &self,
        layout: &Layout,
        slot: Slot,
        fill: &mut dyn FnMut(&mut std::fs::File) -> Result<(), BundleError>,
    ) -> Result<(), BundleError> {
        let dev = layout.partitions.join(slot.partlabel());
        run(Command::new("mkfs.ext4")
            .args(["-F", "-q", "-L"])
            .arg(slot.partlabel())
            .arg(&dev))?;
        let mnt = std::env::temp_dir().join(format!("oasis-slot-{slot}-{}", std::process::id()));
        std::fs::create_dir_all(&mnt)?;
        run(Command::new("mount")
            .args(["-t", "ext4"])
            .arg(&dev)
            .arg(&mnt))?;
        let copied = (|| -> Result<(), BundleError> {
            std::fs::create_dir_all(mnt.join("live"))?;
            let mut f = std::fs::File::create(mnt.join("live/filesystem.squashfs"))?;
            fill(&mut f)?;
            f.sync_all()?;
            Ok(())
        })();
        let unmounted = run(Command::new("umount").arg(&mnt));
        let _ = std::fs::remove_dir(&mnt);
        copied?;
        unmounted
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Installs a verified bundle into the slot not running (`booted`'s other): its root into
/// the slot, its kernel and initrd onto the ESP, then an entry with `tries` boot tries
/// that sorts before the running one. Records the update as installed. Nothing the
/// running slot boots from is touched.
pub fn install(
    bundle_path: &Path,
    v: &Verified,
    layout: &Layout,
    writer: &dyn SlotWriter,
    booted: Slot,
    tries: u32,
) -> Result<UpdateRecord, BundleError> {
    let target = booted.other();
    let entries = read_entries(&layout.esp)?;
    let current = entries.iter().find(|e| e.slot == booted).ok_or_else(|| {
        BundleError::Io(std::io::Error::other(format!(
            "the running slot {booted} has no boot entry on {}",
            layout.esp.display()
        )))
    })?;
    writer.write_root(layout, target, &mut |f| {
        bundle::copy_file(bundle_path, v, "filesystem.squashfs", f)
    })?;
    let kdir = layout.esp.join("oasis").join(target.name());
    std::fs::create_dir_all(&kdir)?;
    for name in ["vmlinuz", "initrd.img"] {
        let tmp = kdir.join(format!("{name}.new"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            bundle::copy_file(bundle_path, v, name, &mut f)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, kdir.join(name))?;
    }
    let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
    let options = options_for(target, &current.options);
    write_entry(
        &layout.esp,
        target,
        Some(tries.max(1)),
        generation,
        &v.manifest.version,
        &options,
    )?;
    layout.save_slot_info(
        target,
        &SlotInfo {
            version: v.manifest.version.clone(),
            profile: v.manifest.profile.clone(),
            installed_unix: now(),
        },
    )?;
    let record = UpdateRecord {
        version: v.manifest.version.clone(),
        from: booted,
        to: target,
        generation,
        tries: tries.max(1),
        state: UpdateState::Installed,
        started_unix: now(),
        finished_unix: None,
        detail: format!(
            "installed into slot {target}; the box boots it next (up to {} tries)",
            tries.max(1)
        ),
    };
    layout.save_record(&record)?;
    Ok(record)
}

/// What became of an update recorded as installed, now that `booted` runs and the
/// daemon is ready: the new slot runs (succeeded), or the old one does again (rolled
/// back, with the new slot's entry state). `None` when there is nothing to settle.
pub fn settle(record: &UpdateRecord, booted: Slot, entries: &[Entry]) -> Option<UpdateRecord> {
    if record.state != UpdateState::Installed {
        return None;
    }
    let mut r = record.clone();
    r.finished_unix = Some(now());
    if booted == record.to {
        r.state = UpdateState::Succeeded;
        r.detail = format!(
            "slot {} runs {} and its daemon is ready",
            record.to, record.version
        );
    } else {
        let how = entries
            .iter()
            .find(|e| e.slot == record.to)
            .map(|e| match e.state {
                EntryState::Bad { done } => format!("{done} boot(s) of slot {} failed", e.slot),
                EntryState::Trying { left, done } => {
                    format!("slot {} failed {done} boot(s) with {left} left", e.slot)
                }
                EntryState::Good => format!("slot {}'s entry is marked good", e.slot),
            })
            .unwrap_or_else(|| format!("slot {} has no boot entry", record.to));
        r.state = UpdateState::RolledBack;
        r.detail = format!(
            "{} did not become ready ({how}); the box went back to slot {} by itself",
            record.version, booted
        );
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot "partition" that is a folder.
    struct DirWriter;

    impl SlotWriter for DirWriter {
        fn write_root(
            &self,
            layout: &Layout,
            slot: Slot,
            fill: &mut dyn FnMut(&mut std::fs::File) -> Result<(), BundleError>,
        ) -> Result<(), BundleError> {
            let d = layout.partitions.join(slot.partlabel()).join("live");
            std::fs::create_dir_all(&d)?;
            let mut f = std::fs::File::create(d.join("filesystem.squashfs"))?;
            fill(&mut f)
        }
    }

    #[test]
    fn the_command_line_names_the_slot() {
        let b = parse_cmdline("BOOT_IMAGE=/x boot=live oasis.slot=b quiet");
        assert_eq!(b.slot, Some(Slot::B));
        assert!(!b.install_mode);
        assert_eq!(parse_cmdline("oasis.slot=c").slot, None);
        assert!(parse_cmdline("boot=live oasis.mode=install").install_mode);
    }

    #[test]
    fn entry_names_carry_the_counters() {
        assert_eq!(
            parse_entry_name("oasis-a.conf"),
            Some((Slot::A, None, None))
        );
        assert_eq!(
            parse_entry_name("oasis-b+3.conf"),
            Some((Slot::B, Some(3), None))
        );
        assert_eq!(
            parse_entry_name("oasis-b+0-3.conf"),
            Some((Slot::B, Some(0), Some(3)))
        );
        for bad in ["debian.conf", "oasis-c.conf", "oasis-a+x.conf", "oasis-a"] {
            assert_eq!(parse_entry_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn options_follow_the_slot() {
        let a = "boot=live live-media=/dev/disk/by-partlabel/oasis-a oasis.slot=a console=ttyS0,115200 systemd.machine_id=0123";
        assert_eq!(
            options_for(Slot::B, a),
            "boot=live live-media=/dev/disk/by-partlabel/oasis-b oasis.slot=b console=ttyS0,115200 systemd.machine_id=0123"
        );
    }

    #[test]
    fn an_update_goes_to_the_other_slot_and_settles_either_way() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout {
            esp: d.path().join("esp"),
            partitions: d.path().join("parts"),
            state_dir: d.path().join("data/system"),
        };
        write_entry(
            &layout.esp,
            Slot::A,
            None,
            1,
            "v1",
            "boot=live live-media=/dev/disk/by-partlabel/oasis-a oasis.slot=a",
        )
        .unwrap();
        // A bundle.
        let img = d.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        for n in crate::bundle::FILES {
            std::fs::write(img.join(n), n.as_bytes()).unwrap();
        }
        let (secret, public) = crate::bundle::generate_key().unwrap();
        let b = d.path().join("u.bundle");
        crate::bundle::create(&img, "v2", "cpu-only", &secret, &b).unwrap();
        let v = crate::bundle::verify(&b, &crate::bundle::verifying_key(&public).unwrap()).unwrap();
        let r = install(&b, &v, &layout, &DirWriter, Slot::A, 3).unwrap();
        assert_eq!((r.from, r.to, r.generation), (Slot::A, Slot::B, 2));
        assert_eq!(layout.load_record().unwrap(), r);
        assert_eq!(
            std::fs::read(layout.partitions.join("oasis-b/live/filesystem.squashfs")).unwrap(),
            b"filesystem.squashfs"
        );
        assert_eq!(
            std::fs::read(layout.esp.join("oasis/b/vmlinuz")).unwrap(),
            b"vmlinuz"
        );
        let entries = read_entries(&layout.esp).unwrap();
        let eb = entries.iter().find(|e| e.slot == Slot::B).unwrap();
        assert_eq!(eb.file, "oasis-b+3.conf");
        assert_eq!(eb.generation, 2);
        assert!(eb.options.contains("oasis.slot=b"), "{}", eb.options);
        assert_eq!(layout.slot_info(Slot::B).unwrap().version, "v2");
        // Booted B: succeeded.
        let ok = settle(&r, Slot::B, &entries).unwrap();
        assert_eq!(ok.state, UpdateState::Succeeded);
        assert!(settle(&ok, Slot::B, &entries).is_none());
        // Back on A with B out of tries: rolled back, and says why.
        std::fs::rename(
            layout.esp.join("loader/entries/oasis-b+3.conf"),
            layout.esp.join("loader/entries/oasis-b+0-3.conf"),
        )
        .unwrap();
        let entries = read_entries(&layout.esp).unwrap();
        let back = settle(&r, Slot::A, &entries).unwrap();
        assert_eq!(back.state, UpdateState::RolledBack);
        assert!(
            back.detail.contains("3 boot(s) of slot b failed"),
            "{}",
            back.detail
        );
        // A running slot without an entry is refused before anything is written.
        let e = install(&b, &v, &layout, &DirWriter, Slot::B, 3);
        assert!(e.is_ok(), "B has an entry now");
        std::fs::remove_dir_all(layout.esp.join("loader")).unwrap();
        assert!(install(&b, &v, &layout, &DirWriter, Slot::A, 3).is_err());
    }
}
