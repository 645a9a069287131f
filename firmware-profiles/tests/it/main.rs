//! The firmware-profiles crate against its fixtures: the built-in profiles, a directory of
//! bad profiles with their exact errors, and written inventories of each supported SKU
//! (`tests/fixtures/inventories/`, see its README).

mod apply;
mod compliance;
mod matching;
mod parse;

use std::path::PathBuf;

use firmware_profiles::{Inventory, Loaded};

/// `firmware-profiles/tests/NAME`.
pub fn here(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// A written inventory from the workspace's fixtures.
pub fn inventory(name: &str) -> Inventory {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/inventories")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Inventory::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn builtin() -> Vec<Loaded> {
    firmware_profiles::builtin().unwrap_or_else(|e| panic!("{e}"))
}

pub fn profile(id: &str) -> firmware_profiles::Profile {
    firmware_profiles::resolve(id, &builtin())
        .unwrap_or_else(|e| panic!("{e}"))
        .profile
}
