//! The list of boxes the admin added, kept as JSON in the app's config directory
//! (`boxes.json`). It holds addresses and pinned fingerprints only: tokens live in the
//! token store ([`crate::tokens`]) and are never written here. Writes go to a temporary
//! file that is then renamed over the old one, so a crash leaves the old list or the new
//! one, never half of either.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The file's name in the config directory.
pub const FILE_NAME: &str = "boxes.json";
/// The file format's version, bumped when a change needs a migration.
const FORMAT_VERSION: u32 = 1;
/// Most boxes one list holds (a bound, not a product limit: a fleet console would page).
pub const MAX_BOXES: usize = 256;

/// One box as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBox {
    /// Stable id the front end refers to the box by (`box-` and 16 hex digits).
    pub id: String,
    /// What the admin called it.
    pub name: String,
    /// Normalised base URL (`https://host:port`).
    pub address: String,
    /// Pinned SHA-256 certificate fingerprint; `None` for plain HTTP on loopback.
    pub fingerprint: Option<String>,
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct BoxFile {
    version: u32,
    boxes: Vec<StoredBox>,
}

/// The box list and the file behind it.
#[derive(Debug)]
pub struct BoxList {
    path: PathBuf,
    boxes: Vec<StoredBox>,
}

impl BoxList {
    /// Reads `DIR/boxes.json` (an absent file is an empty list).
    pub fn open(dir: &Path) -> Result<BoxList, Error> {
        let path = dir.join(FILE_NAME);
        let boxes = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: BoxFile = serde_json::from_slice(&bytes).map_err(|e| Error::BoxFile {
                    path: path.clone(),
                    message: format!("not a box list: {e}"),
                })?;
                if file.version != FORMAT_VERSION {
                    return Err(Error::BoxFile {
                        path,
                        message: format!(
                            "format version {} is not {FORMAT_VERSION} (written by another version of the app)",
                            file.version
                        ),
                    });
                }
                file.boxes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::BoxFile {
                    path,
                    message: e.to_string(),
                });
            }
        };
        Ok(BoxList { path, boxes })
    }

    pub fn boxes(&self) -> &[StoredBox] {
        &self.boxes
    }

    pub fn get(&self, id: &str) -> Option<&StoredBox> {
        self.boxes.iter().find(|b| b.id == id)
    }

    /// Adds `b`, or replaces the box with the same address (pairing again keeps its id).
    /// Returns the stored entry.
    pub fn upsert(&mut self, mut b: StoredBox) -> Result<StoredBox, Error> {
        let mut next = self.boxes.clone();
        if let Some(old) = next.iter_mut().find(|o| o.address == b.address) {
            b.id = old.id.clone();
            *old = b.clone();
        } else {
            if next.len() >= MAX_BOXES {
                return Err(Error::TooManyBoxes { max: MAX_BOXES });
            }
            next.push(b.clone());
        }
        self.save(next)?;
        Ok(b)
    }

    /// Removes box `id`; false when there is none.
    pub fn remove(&mut self, id: &str) -> Result<bool, Error> {
        let next: Vec<StoredBox> = self.boxes.iter().filter(|b| b.id != id).cloned().collect();
        if next.len() == self.boxes.len() {
            return Ok(false);
        }
        self.save(next)?;
        Ok(true)
    }

    /// Writes `boxes` and, once they are on disk, makes them the list.
    fn save(&mut self, boxes: Vec<StoredBox>) -> Result<(), Error> {
        let fail = |message: String| Error::BoxFile {
            path: self.path.clone(),
            message,
        };
        let file = BoxFile {
            version: FORMAT_VERSION,
            boxes,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| fail(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| fail(format!("cannot write: {e}")))?;
        self.boxes = file.boxes;
        Ok(())
    }
}

/// A fresh box id: `box-` and 16 random hex digits.
pub fn new_id() -> String {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        // No OS randomness: time and process id still make ids unique on this machine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw = (nanos as u64 ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes();
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("box-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(address: &str) -> StoredBox {
        StoredBox {
            id: new_id(),
            name: "lab".into(),
            address: address.into(),
            fingerprint: Some("AB".into()),
        }
    }

    #[test]
    fn list_survives_reopening_and_replaces_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = BoxList::open(dir.path()).unwrap();
        assert!(list.boxes().is_empty());
        let a = list.upsert(stored("https://10.0.0.1:8080")).unwrap();
        let again = list.upsert(stored("https://10.0.0.1:8080")).unwrap();
        assert_eq!(a.id, again.id, "pairing again keeps the id");
        list.upsert(stored("https://10.0.0.2:8080")).unwrap();

        let reopened = BoxList::open(dir.path()).unwrap();
        assert_eq!(reopened.boxes(), list.boxes());
        assert_eq!(reopened.boxes().len(), 2);
        assert!(!dir.path().join("boxes.json.tmp").exists());

        let mut list = reopened;
        assert!(list.remove(&a.id).unwrap());
        assert!(!list.remove(&a.id).unwrap());
        assert_eq!(BoxList::open(dir.path()).unwrap().boxes().len(), 1);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let err = BoxList::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("boxes.json") && err.contains("not a box list"),
            "{err}"
        );
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 4 + 16);
    }
}
