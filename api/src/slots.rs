//! The installed system's A/B slots and updates: `GET /admin/v1/system/slots`,
//! `POST /admin/v1/system/update` (the `system-image` crate's records, as the API shows
//! them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One slot as `GET /admin/v1/system/slots` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlotView {
    /// `a` or `b`.
    pub slot: String,
    pub booted: bool,
    /// What the slot holds (absent for a slot never written).
    pub system: Option<SlotSystem>,
    /// Its boot entry: `good`, `trying` (with `left` and `done`) or `bad`.
    pub entry: Option<BootEntry>,
}

/// `GET /admin/v1/system/slots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemSlots {
    /// Booted from an installed slot (else: a development box; updates do not apply).
    pub installed: bool,
    /// The slot running now.
    pub booted: Option<String>,
    pub slots: Vec<SlotView>,
    /// The last update and what came of it.
    pub last_update: Option<UpdateRecord>,
    /// Tries a new slot gets, and how long its daemon has to get ready.
    pub boot_policy: BootPolicy,
    /// Whether the image holds an update key (without one it accepts no bundle).
    pub update_key: bool,
    /// Why this box takes no update, when it takes none.
    pub note: Option<String>,
}

/// What an accepted update answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateAccepted {
    /// The update as recorded: version, from and to slot, tries.
    pub update: UpdateRecord,
    /// Seconds until the box reboots into the new slot (null: it does not by itself).
    pub reboot_in_s: Option<u64>,
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlotSystem {
    pub version: String,
    /// The firmware profile it was installed with.
    pub profile: String,
    pub installed_unix: u64,
}

/// A slot's boot entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BootEntry {
    /// `a` or `b`.
    pub slot: String,
    #[serde(flatten)]
    pub state: BootEntryState,
    /// The entry's `version` (the install generation: newer boots first).
    pub generation: u64,
    pub title: String,
    pub file: String,
}

/// A boot entry's standing under systemd-boot's boot counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BootEntryState {
    /// Booted well (no counter).
    Good,
    /// Being tried: `left` tries remain, `done` were made.
    Trying { left: u32, done: u32 },
    /// No tries left.
    Bad { done: u32 },
}

/// How a new slot is tried: boots it gets, and time per boot for the daemon to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BootPolicy {
    pub tries: u32,
    pub health_timeout_s: u64,
}

/// An update as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateRecord {
    pub version: String,
    /// The slot it was installed from (`a` or `b`).
    pub from: String,
    /// The slot it was written to.
    pub to: String,
    pub generation: u64,
    pub tries: u32,
    pub state: UpdateState,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    pub detail: String,
}

/// How an update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Written to the other slot; the box reboots into it.
    Installed,
    /// The new slot booted and its daemon became ready.
    Succeeded,
    /// The new slot did not become ready within its tries; the old slot runs again.
    RolledBack,
}
