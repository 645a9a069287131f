//! The machine's disks, as the kernel lists them under `/sys/block`, and the choice of
//! the install disk from the answers.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::answers::{DiskSelect, glob_match};

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// `/dev/vda`.
    pub dev: PathBuf,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    /// Names under `/dev/disk/by-id` that point at it.
    pub by_id: Vec<String>,
    pub removable: bool,
    pub read_only: bool,
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The disks under `sys_block` (`/sys/block`), with their by-id names from `by_id_dir`
/// (`/dev/disk/by-id`). Loop, RAM, optical and device-mapper devices are not disks here.
pub fn list(sys_block: &Path, by_id_dir: &Path, dev: &Path) -> std::io::Result<Vec<Disk>> {
    let mut links: Vec<(String, String)> = Vec::new();
    if let Ok(d) = std::fs::read_dir(by_id_dir) {
        for e in d.flatten() {
            if let Ok(target) = std::fs::read_link(e.path())
                && let Some(t) = target.file_name()
            {
                links.push((
                    e.file_name().to_string_lossy().into_owned(),
                    t.to_string_lossy().into_owned(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(sys_block)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "sr", "dm-", "zram", "md", "nbd", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let base = e.path();
        let sectors: u64 = read_trim(&base.join("size")).parse().unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let mut by_id: Vec<String> = links
            .iter()
            .filter(|(_, t)| *t == name)
            .map(|(l, _)| l.clone())
            .collect();
        by_id.sort();
        out.push(Disk {
            dev: dev.join(&name),
            size_bytes: sectors * 512,
            model: read_trim(&base.join("device/model")),
            serial: {
                let s = read_trim(&base.join("device/serial"));
                if s.is_empty() {
                    read_trim(&base.join("serial"))
                } else {
                    s
                }
            },
            by_id,
            removable: read_trim(&base.join("removable")) == "1",
            read_only: read_trim(&base.join("ro")) == "1",
        });
    }
    out.sort_by(|a, b| a.dev.cmp(&b.dev));
    Ok(out)
}

/// This machine's disks.
pub fn list_here() -> std::io::Result<Vec<Disk>> {
    list(
        Path::new("/sys/block"),
        Path::new("/dev/disk/by-id"),
        Path::new("/dev"),
    )
}

/// Whether `d` meets every criterion given.
pub fn matches(sel: &DiskSelect, d: &Disk) -> bool {
    sel.min_size.is_none_or(|m| d.size_bytes >= m)
        && sel.max_size.is_none_or(|m| d.size_bytes <= m)
        && sel.model.as_ref().is_none_or(|g| glob_match(g, &d.model))
        && sel.serial.as_ref().is_none_or(|g| glob_match(g, &d.serial))
        && sel
            .by_id
            .as_ref()
            .is_none_or(|g| d.by_id.iter().any(|n| glob_match(g, n)))
}

fn describe(d: &Disk) -> String {
    format!(
        "{} ({:.1} GB, model `{}`, serial `{}`)",
        d.dev.display(),
        d.size_bytes as f64 / 1e9,
        d.model,
        d.serial
    )
}

/// The one disk the answers select, leaving out `exclude` (the installer's own medium)
/// and read-only disks; an error that lists the disks otherwise.
pub fn choose<'a>(
    sel: &DiskSelect,
    disks: &'a [Disk],
    exclude: &[PathBuf],
    needed: u64,
) -> Result<&'a Disk, String> {
    let candidates: Vec<&Disk> = disks
        .iter()
        .filter(|d| !exclude.contains(&d.dev) && !d.read_only)
        .collect();
    let hits: Vec<&Disk> = candidates
        .iter()
        .copied()
        .filter(|d| matches(sel, d))
        .collect();
    let list = |v: &[&Disk]| v.iter().map(|d| describe(d)).collect::<Vec<_>>().join("; ");
    match hits.as_slice() {
        [one] if one.size_bytes < needed => Err(format!(
            "{} is too small: the layout needs {:.1} GB",
            describe(one),
            needed as f64 / 1e9
        )),
        [one] => Ok(one),
        [] => Err(format!(
            "no disk matches [disk]; the disks are: {}",
            if candidates.is_empty() {
                "none".to_string()
            } else {
                list(&candidates)
            }
        )),
        many => Err(format!(
            "{} disks match [disk], it must be one (add model, serial, by_id or a size): {}",
            many.len(),
            list(many)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, name: &str, sectors: u64, model: &str, serial: &str) {
        let d = root.join("sys").join(name);
        std::fs::create_dir_all(d.join("device")).unwrap();
        std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
        std::fs::write(d.join("device/model"), format!("{model}  \n")).unwrap();
        std::fs::write(d.join("device/serial"), serial).unwrap();
        std::fs::write(d.join("ro"), "0").unwrap();
        std::fs::write(d.join("removable"), "0").unwrap();
    }

    #[test]
    fn disks_are_listed_and_chosen_by_the_answers() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), "vda", 16 << 21, "", "oasis-target");
        fake(t.path(), "sda", 64 << 21, "QEMU HARDDISK", "QM0001");
        fake(t.path(), "loop0", 100, "", "");
        fake(t.path(), "sr0", 100, "QEMU DVD-ROM", "");
        let by_id = t.path().join("by-id");
        std::fs::create_dir_all(&by_id).unwrap();
        std::os::unix::fs::symlink("../../vda", by_id.join("virtio-oasis-target")).unwrap();
        let disks = list(&t.path().join("sys"), &by_id, Path::new("/dev")).unwrap();
        assert_eq!(disks.len(), 2, "{disks:?}");
        assert_eq!(disks[1].by_id, vec!["virtio-oasis-target".to_string()]);
        assert_eq!(disks[0].model, "QEMU HARDDISK");
        let by = |s: DiskSelect| choose(&s, &disks, &[], 1 << 30).map(|d| d.dev.clone());
        assert_eq!(
            by(DiskSelect {
                by_id: Some("virtio-*".into()),
                ..Default::default()
            }),
            Ok("/dev/vda".into())
        );
        assert_eq!(
            by(DiskSelect {
                min_size: Some(20 << 30),
                ..Default::default()
            }),
            Ok("/dev/sda".into())
        );
        let e = by(DiskSelect::default()).unwrap_err();
        assert!(e.contains("2 disks match"), "{e}");
        let e = by(DiskSelect {
            model: Some("SAMSUNG*".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("no disk matches") && e.contains("/dev/sda"),
            "{e}"
        );
        // The installer's own medium is never a candidate.
        let only = choose(
            &DiskSelect::default(),
            &disks,
            &["/dev/sda".into()],
            1 << 30,
        )
        .unwrap();
        assert_eq!(only.dev, PathBuf::from("/dev/vda"));
        let e = choose(
            &DiskSelect::default(),
            &disks,
            &["/dev/sda".into()],
            1 << 40,
        )
        .unwrap_err();
        assert!(e.contains("too small"), "{e}");
    }
}
