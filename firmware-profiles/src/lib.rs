//! Firmware profiles: one checked TOML file per supported hardware SKU.
//!
//! A profile says which box it is for (GPUs, memory, NVSwitch), what software it must run,
//! which GPU settings to enforce, what interconnect and health to expect, and how the
//! engine should use the box. This crate parses and validates profiles ([`profile`]),
//! matches them against a box's [`inventory`] ([`matching`]), checks a box against one
//! ([`compliance`]), lists the setting changes a profile takes ([`apply`]) and gives the
//! engine plan ([`plan`]). It does no I/O besides reading profile files: the daemon reads
//! the hardware and makes the changes.

pub mod apply;
pub mod compliance;
pub mod inventory;
pub mod matching;
pub mod plan;
pub mod profile;
pub mod version;

use std::path::Path;

pub use compliance::{Check, Report, Verdict};
pub use inventory::{GpuInventory, HostInventory, Inventory};
pub use matching::{Candidate, Selection};
pub use plan::EnginePlan;
pub use profile::Profile;

/// The profiles shipped with Oasis, compiled in so the binary needs no files to find them.
pub const BUILTIN: [(&str, &str); 7] = [
    (
        "hgx-h200-8.toml",
        include_str!("../profiles/hgx-h200-8.toml"),
    ),
    (
        "hgx-h100-8.toml",
        include_str!("../profiles/hgx-h100-8.toml"),
    ),
    ("hgx-h20-8.toml", include_str!("../profiles/hgx-h20-8.toml")),
    ("l40s-4.toml", include_str!("../profiles/l40s-4.toml")),
    ("rtx4090-8.toml", include_str!("../profiles/rtx4090-8.toml")),
    ("h200-1.toml", include_str!("../profiles/h200-1.toml")),
    ("cpu-dev.toml", include_str!("../profiles/cpu-dev.toml")),
];

/// One problem in a profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// The field (`gpu.power_limit_w`), when the problem is about one.
    pub field: String,
    pub message: String,
}

/// What can go wrong with profiles.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile that does not parse or breaks a rule; every problem found is listed.
    #[error("{}", render_errors(origin, errors))]
    Profile {
        origin: String,
        errors: Vec<ProfileError>,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("profile `{id}` is defined twice: in {first} and in {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
    #[error("no profile `{name}`; known profiles: {known}")]
    Unknown { name: String, known: String },
}

fn render_errors(origin: &str, errors: &[ProfileError]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = e.line.map(|l| format!(":{l}")).unwrap_or_default();
            let field = if e.field.is_empty() {
                String::new()
            } else {
                format!(" {}:", e.field)
            };
            format!("{origin}{at}:{field} {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A profile and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profile: Profile,
    /// `builtin:NAME` or the file's path.
    pub origin: String,
}

/// The built-in profiles, parsed and validated.
pub fn builtin() -> Result<Vec<Loaded>, Error> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            let origin = format!("builtin:{name}");
            Profile::parse(text, &origin).map(|profile| Loaded { profile, origin })
        })
        .collect()
}

/// Reads and validates one profile file.
pub fn load_file(path: &Path) -> Result<Loaded, Error> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
        path: origin.clone(),
        message: e.to_string(),
    })?;
    Profile::parse(&text, &origin).map(|profile| Loaded { profile, origin })
}

/// The built-in profiles plus every `*.toml` in `dir` (when given), with ids unique.
pub fn load_all(dir: Option<&Path>) -> Result<Vec<Loaded>, Error> {
    let mut all = builtin()?;
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Read {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            all.push(load_file(&p)?);
        }
    }
    for (i, a) in all.iter().enumerate() {
        if let Some(b) = all[..i].iter().find(|b| b.profile.id == a.profile.id) {
            return Err(Error::Duplicate {
                id: a.profile.id.clone(),
                first: b.origin.clone(),
                second: a.origin.clone(),
            });
        }
    }
    Ok(all)
}

/// `name` as a profile: a path (it names a `.toml` file or holds a `/`) or the id of one
/// of `known`.
pub fn resolve(name: &str, known: &[Loaded]) -> Result<Loaded, Error> {
    if name.ends_with(".toml") || name.contains('/') {
        return load_file(Path::new(name));
    }
    known
        .iter()
        .find(|l| l.profile.id == name)
        .cloned()
        .ok_or_else(|| Error::Unknown {
            name: name.to_string(),
            known: known
                .iter()
                .map(|l| l.profile.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `s` for a count other than one.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// An on/off setting as reports show it.
pub(crate) fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}
