//! The appliance's system images, shared by the installer (`oasis-installer`) and the
//! daemon (`oasis system update`): [`bundle`] (signed update bundles: make, verify, copy
//! out) and [`slots`] (the A/B slots, their systemd-boot entries with boot counting, an
//! update's installation and its outcome).

pub mod bundle;
pub mod slots;
