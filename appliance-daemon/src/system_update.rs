//! The installed system: which slot this box booted, what each slot holds, and signed
//! updates into the other slot (`system-image` does the work; this is the daemon's view).
//!
//! An update is verified against the key baked into the image, written to the slot not
//! running, and given a boot entry with a try counter; the box then reboots into it.
//! systemd-boot counts the tries, `oasis-healthy.service` (`oasis system wait-ready`) marks
//! the slot good once the daemon is ready, and a slot that never gets there is abandoned
//! for the previous one. At start the daemon settles the last update's record by the slot
//! it runs from: the new one (succeeded) or the old one (rolled back).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oasis_api::{BootEntry, BootEntryState, SlotSystem};
pub use oasis_api::{SlotView, SystemSlots};
use system_image::bundle::{self, BundleError};
use system_image::slots::{
    self, BootInfo, Entry, EntryState, Layout, PartitionWriter, Slot, UpdateRecord, UpdateState,
};

/// Where an installed image keeps the public half of its update key.
pub const UPDATE_KEY: &str = "/usr/share/oasis/update-key.pub";

/// What this box runs from, and the lock one update at a time holds.
#[derive(Debug)]
pub struct SystemImage {
    pub boot: BootInfo,
    pub layout: Layout,
    pub key_path: PathBuf,
    busy: Mutex<()>,
}

/// Why an update was refused or failed.
#[derive(Debug)]
pub enum UpdateError {
    /// Not an installed box, no key, another update running.
    Conflict(String),
    /// The bundle: unsigned, signed by another key, altered, not a bundle.
    Bundle(String),
    /// Writing the slot or its boot entry.
    Failed(String),
}

impl SystemImage {
    /// This boot, read from `/proc/cmdline`, with the installed layout.
    pub fn detect(data_dir: &Path) -> SystemImage {
        SystemImage {
            boot: slots::boot_info(),
            layout: Layout::installed(data_dir),
            key_path: PathBuf::from(UPDATE_KEY),
            busy: Mutex::new(()),
        }
    }

    fn not_installed(&self) -> Option<String> {
        if self.boot.slot.is_some() {
            return None;
        }
        Some(
            "this daemon does not run from an installed Oasis system (no oasis.slot= on the kernel command line): system updates apply to boxes installed from the Oasis ISO"
                .into(),
        )
    }

    pub fn status(&self) -> SystemSlots {
        let entries = slots::read_entries(&self.layout.esp).unwrap_or_default();
        let installed = self.boot.slot.is_some();
        let views = if installed {
            [Slot::A, Slot::B]
                .into_iter()
                .map(|s| SlotView {
                    slot: s.name().into(),
                    booted: self.boot.slot == Some(s),
                    system: self.layout.slot_info(s).map(|i| SlotSystem {
                        version: i.version,
                        profile: i.profile,
                        installed_unix: i.installed_unix,
                    }),
                    entry: entries.iter().find(|e| e.slot == s).map(entry_view),
                })
                .collect()
        } else {
            Vec::new()
        };
        let update_key = self.key_path.is_file();
        let note = self.not_installed().or_else(|| {
            (!update_key).then(|| {
                format!(
                    "no update key at {}: this image was built without --update-key and accepts no bundle",
                    self.key_path.display()
                )
            })
        });
        SystemSlots {
            installed,
            booted: self.boot.slot.map(|s| s.name().to_string()),
            slots: views,
            last_update: self.layout.load_record().as_ref().map(record_view),
            boot_policy: {
                let p = self.layout.policy();
                oasis_api::BootPolicy {
                    tries: p.tries,
                    health_timeout_s: p.health_timeout_s,
                }
            },
            update_key,
            note,
        }
    }

    /// The slot running now, or why an update cannot start (before its body is read).
    pub fn check_update(&self) -> Result<Slot, UpdateError> {
        let Some(booted) = self.boot.slot else {
            return Err(UpdateError::Conflict(
                self.not_installed().unwrap_or_default(),
            ));
        };
        if !self.key_path.is_file() {
            return Err(UpdateError::Conflict(format!(
                "no update key at {}: this image was built without --update-key and accepts no bundle",
                self.key_path.display()
            )));
        }
        Ok(booted)
    }

    /// Where an incoming bundle is written while it is checked.
    pub fn incoming_dir(&self) -> PathBuf {
        self.layout.state_dir.join("incoming")
    }

    /// Verifies the bundle at `path` and installs it into the slot not running. One at
    /// a time: a second caller gets a conflict.
    pub fn install(&self, path: &Path) -> Result<UpdateRecord, UpdateError> {
        let booted = self.check_update()?;
        let Ok(_held) = self.busy.try_lock() else {
            return Err(UpdateError::Conflict(
                "another system update is being installed".into(),
            ));
        };
        let key_text = std::fs::read_to_string(&self.key_path).map_err(|e| {
            UpdateError::Conflict(format!("cannot read {}: {e}", self.key_path.display()))
        })?;
        let key = bundle::verifying_key(key_text.trim()).map_err(|e| {
            UpdateError::Conflict(format!(
                "the update key {} is broken: {e}",
                self.key_path.display()
            ))
        })?;
        let verified = bundle::verify(path, &key).map_err(|e| match e {
            BundleError::Io(e) => UpdateError::Failed(format!("reading the bundle: {e}")),
            other => UpdateError::Bundle(other.to_string()),
        })?;
        if let Some(last) = self.layout.load_record()
            && last.state == slots::UpdateState::Installed
            && last.to != booted
        {
            tracing::info!(version = %last.version, slot = %last.to, "an update not yet booted is replaced");
        }
        let tries = self.layout.policy().tries;
        slots::install(
            path,
            &verified,
            &self.layout,
            &PartitionWriter,
            booted,
            tries,
        )
        .map_err(|e| UpdateError::Failed(e.to_string()))
    }

    /// At start: settles an installed update by the slot this boot runs from, saving the
    /// outcome; returns it when it changed.
    pub fn settle(&self) -> Option<UpdateRecord> {
        let booted = self.boot.slot?;
        let record = self.layout.load_record()?;
        let entries = slots::read_entries(&self.layout.esp).unwrap_or_default();
        let settled = slots::settle(&record, booted, &entries)?;
        if let Err(e) = self.layout.save_record(&settled) {
            tracing::error!(error = %e, "cannot save the update's outcome");
        }
        Some(settled)
    }
}

/// A boot entry as the API shows it.
fn entry_view(e: &Entry) -> BootEntry {
    BootEntry {
        slot: e.slot.name().into(),
        state: match e.state {
            EntryState::Good => BootEntryState::Good,
            EntryState::Trying { left, done } => BootEntryState::Trying { left, done },
            EntryState::Bad { done } => BootEntryState::Bad { done },
        },
        generation: e.generation,
        title: e.title.clone(),
        file: e.file.clone(),
    }
}

/// An update record as the API shows it.
pub fn record_view(r: &UpdateRecord) -> oasis_api::UpdateRecord {
    oasis_api::UpdateRecord {
        version: r.version.clone(),
        from: r.from.name().into(),
        to: r.to.name().into(),
        generation: r.generation,
        tries: r.tries,
        state: match r.state {
            UpdateState::Installed => oasis_api::UpdateState::Installed,
            UpdateState::Succeeded => oasis_api::UpdateState::Succeeded,
            UpdateState::RolledBack => oasis_api::UpdateState::RolledBack,
        },
        started_unix: r.started_unix,
        finished_unix: r.finished_unix,
        detail: r.detail.clone(),
    }
}
