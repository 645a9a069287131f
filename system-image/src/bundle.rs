//! Update bundles: a system image with a signed manifest.
//!
//! A bundle is an uncompressed tar (the image inside is compressed already) whose first
//! member is `manifest.json`, its second `manifest.sig` (the ed25519 signature of the
//! manifest's bytes, in hex), followed by exactly the files the manifest lists, each with
//! its size and SHA-256. [`verify`] checks all of it, the signature first, reading every
//! byte once, and writes nothing; only a [`Verified`] bundle can be installed, and the
//! installer hashes each file again as it copies it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The manifest's `format`.
pub const FORMAT: &str = "oasis.bundle/v1";
/// The files of a system image, in the order a bundle holds them.
pub const FILES: [&str; 3] = ["vmlinuz", "initrd.img", "filesystem.squashfs"];
/// Largest manifest accepted (it lists three files).
const MANIFEST_MAX: u64 = 64 << 10;

/// Why a bundle is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle cannot be read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an update bundle: {0}")]
    Format(String),
    #[error("the bundle's signature does not match this system's update key")]
    Signature,
    #[error("{name}: {detail}")]
    Digest { name: String, detail: String },
    #[error("the update key is invalid: {0}")]
    Key(String),
}

/// One file of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// What a bundle says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The system version, e.g. `2026.12.04-1`.
    pub version: String,
    pub created_unix: u64,
    /// The firmware profile the image was built for (`cpu-only`, `hgx-h200-8`, ...).
    pub profile: String,
    pub files: Vec<FileEntry>,
}

/// A bundle whose signature and digests were checked: where each file's bytes are.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// (name, offset of its bytes in the bundle file, length, sha256).
    pub files: Vec<(String, u64, u64, String)>,
}

impl Verified {
    pub fn file(&self, name: &str) -> Option<(u64, u64, &str)> {
        self.files
            .iter()
            .find(|f| f.0 == name)
            .map(|f| (f.1, f.2, f.3.as_str()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new signing key: (secret seed, public key), both hex.
pub fn generate_key() -> Result<(String, String), BundleError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| BundleError::Key(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((hex(&seed), hex(key.verifying_key().as_bytes())))
}

/// The public key of a hex secret seed.
pub fn public_of(secret_hex: &str) -> Result<String, BundleError> {
    Ok(hex(signing_key(secret_hex)?.verifying_key().as_bytes()))
}

fn signing_key(secret_hex: &str) -> Result<SigningKey, BundleError> {
    let seed: [u8; 32] = unhex(secret_hex)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| BundleError::Key("a secret key is 64 hex digits".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a hex public key.
pub fn verifying_key(public_hex: &str) -> Result<VerifyingKey, BundleError> {
    let bytes: [u8; 32] = unhex(public_hex)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| BundleError::Key("a public key is 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| BundleError::Key(e.to_string()))
}

/// SHA-256 of everything `r` yields, and its length.
pub fn sha256_of(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// Writes a bundle of the image in `dir` (its [`FILES`]) to `out`, signed with
/// `secret_hex`; returns its manifest.
pub fn create(
    dir: &Path,
    version: &str,
    profile: &str,
    secret_hex: &str,
    out: &Path,
) -> Result<Manifest, BundleError> {
    let key = signing_key(secret_hex)?;
    let mut files = Vec::new();
    for name in FILES {
        let f = std::fs::File::open(dir.join(name))?;
        let (sha256, bytes) = sha256_of(f)?;
        files.push(FileEntry {
            name: name.into(),
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: version.into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        profile: profile.into(),
        files,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Format(e.to_string()))?;
    let sig = hex(&key.sign(&text).to_bytes());
    let tmp = out.with_extension("partial");
    {
        let file = std::fs::File::create(&tmp)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let mut put = |name: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data)
        };
        put("manifest.json", &text)?;
        put("manifest.sig", sig.as_bytes())?;
        for name in FILES {
            let path = dir.join(name);
            let mut f = std::fs::File::open(&path)?;
            let mut h = tar::Header::new_gnu();
            h.set_size(f.metadata()?.len());
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, &mut f)?;
        }
        tar.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(manifest)
}

fn read_small(entry: &mut impl Read, size: u64, what: &str) -> Result<Vec<u8>, BundleError> {
    if size > MANIFEST_MAX {
        return Err(BundleError::Format(format!("{what} is {size} bytes")));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.take(MANIFEST_MAX).read_to_end(&mut v)?;
    Ok(v)
}

/// Checks the bundle at `path` against `key`: the manifest's signature, its format, and
/// every file's presence, size and SHA-256 (nothing missing, nothing extra). Writes
/// nothing.
pub fn verify(path: &Path, key: &VerifyingKey) -> Result<Verified, BundleError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(BundleError::Format("not a regular file".into()));
    }
    let mut archive = tar::Archive::new(file);
    let mut entries = archive
        .entries()
        .map_err(|e| BundleError::Format(e.to_string()))?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, std::fs::File>, BundleError> {
        let e = entries
            .next()
            .ok_or_else(|| BundleError::Format(format!("{want} is missing")))?
            .map_err(|e| BundleError::Format(e.to_string()))?;
        let name = e.path().map_err(|e| BundleError::Format(e.to_string()))?;
        if name.to_str() != Some(want) {
            return Err(BundleError::Format(format!(
                "expected {want}, found {}",
                name.display()
            )));
        }
        Ok(e)
    };
    let mut m = next("manifest.json")?;
    let size = m.size();
    let text = read_small(&mut m, size, "manifest.json")?;
    drop(m);
    let mut s = next("manifest.sig")?;
    let size = s.size();
    let sig_hex = read_small(&mut s, size, "manifest.sig")?;
    drop(s);
    let sig_bytes: [u8; 64] = std::str::from_utf8(&sig_hex)
        .ok()
        .and_then(unhex)
        .and_then(|v| v.try_into().ok())
        .ok_or(BundleError::Signature)?;
    key.verify(&text, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| BundleError::Signature)?;
    // Signed by us from here on; still checked field by field.
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| BundleError::Format(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Format(format!(
            "format `{}`, this system reads `{FORMAT}`",
            manifest.format
        )));
    }
    let mut names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    let mut want = FILES.to_vec();
    want.sort_unstable();
    if names != want {
        return Err(BundleError::Format(format!(
            "the manifest lists {names:?}, a system image is {want:?}"
        )));
    }
    let mut files: Vec<(String, u64, u64, String)> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| BundleError::Format(e.to_string()))?;
        let name = e
            .path()
            .map_err(|e| BundleError::Format(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let Some(entry) = manifest.files.iter().find(|f| f.name == name) else {
            return Err(BundleError::Format(format!(
                "`{name}` is not in the manifest"
            )));
        };
        if files.iter().any(|(n, ..)| *n == name) {
            return Err(BundleError::Format(format!("`{name}` appears twice")));
        }
        let offset = e.raw_file_position();
        let (sha, bytes) = sha256_of(e)?;
        if bytes != entry.bytes {
            return Err(BundleError::Digest {
                name,
                detail: format!("{bytes} bytes, the manifest says {}", entry.bytes),
            });
        }
        if sha != entry.sha256 {
            return Err(BundleError::Digest {
                name,
                detail: format!("SHA-256 {sha}, the manifest says {}", entry.sha256),
            });
        }
        files.push((name, offset, bytes, sha));
    }
    if files.len() != FILES.len() {
        let missing: Vec<&str> = FILES
            .iter()
            .copied()
            .filter(|n| !files.iter().any(|(f, ..)| f == n))
            .collect();
        return Err(BundleError::Format(format!("missing {missing:?}")));
    }
    Ok(Verified { manifest, files })
}

/// Copies one verified file out of the bundle into `dst`, hashing it again on the way;
/// a bundle changed since [`verify`] fails here.
pub fn copy_file(
    bundle: &Path,
    v: &Verified,
    name: &str,
    dst: &mut impl std::io::Write,
) -> Result<(), BundleError> {
    let (offset, len, sha) = v
        .file(name)
        .ok_or_else(|| BundleError::Format(format!("`{name}` is not in the bundle")))?;
    let mut f = std::fs::File::open(bundle)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let k = f.read(&mut buf[..(left.min(1 << 20)) as usize])?;
        if k == 0 {
            return Err(BundleError::Digest {
                name: name.into(),
                detail: "the bundle ended early".into(),
            });
        }
        h.update(&buf[..k]);
        dst.write_all(&buf[..k])?;
        left -= k as u64;
    }
    let got = hex(&h.finalize());
    if got != sha {
        return Err(BundleError::Digest {
            name: name.into(),
            detail: "changed since it was verified".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path) {
        for (i, n) in FILES.iter().enumerate() {
            std::fs::write(dir.join(n), vec![i as u8 + 1; 1000 + i * 777]).unwrap();
        }
    }

    fn made() -> (tempfile::TempDir, std::path::PathBuf, String, String) {
        let d = tempfile::tempdir().unwrap();
        image(d.path());
        let (secret, public) = generate_key().unwrap();
        let out = d.path().join("b.oasisbundle");
        create(d.path(), "2026.12.04-1", "cpu-only", &secret, &out).unwrap();
        (d, out, secret, public)
    }

    #[test]
    fn a_signed_bundle_verifies_and_its_files_copy_out() {
        let (d, out, secret, public) = made();
        assert_eq!(public_of(&secret).unwrap(), public);
        let v = verify(&out, &verifying_key(&public).unwrap()).unwrap();
        assert_eq!(v.manifest.version, "2026.12.04-1");
        for n in FILES {
            let mut got = Vec::new();
            copy_file(&out, &v, n, &mut got).unwrap();
            assert_eq!(got, std::fs::read(d.path().join(n)).unwrap());
        }
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let (_d, out, _, _) = made();
        let (_, other) = generate_key().unwrap();
        let e = verify(&out, &verifying_key(&other).unwrap()).unwrap_err();
        assert!(matches!(e, BundleError::Signature), "{e}");
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let (_d, out, _, public) = made();
        let key = verifying_key(&public).unwrap();
        let good = std::fs::read(&out).unwrap();
        let v = verify(&out, &key).unwrap();
        // In the manifest, in its signature, in each file.
        let mut spots = vec![600usize, 1024 + 520];
        for n in FILES {
            let (off, len, _) = v.file(n).unwrap();
            spots.push((off + len / 2) as usize);
        }
        for at in spots {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&out, &bad).unwrap();
            let e = verify(&out, &key).unwrap_err();
            assert!(
                matches!(
                    e,
                    BundleError::Signature | BundleError::Digest { .. } | BundleError::Format(_)
                ),
                "{at}: {e}"
            );
        }
        // Truncated, empty, not a tar.
        for bad in [&good[..good.len() / 2], &[][..], &b"hello"[..]] {
            std::fs::write(&out, bad).unwrap();
            assert!(verify(&out, &key).is_err());
        }
    }

    #[test]
    fn a_file_changed_after_verification_fails_the_copy() {
        let (_d, out, _, public) = made();
        let v = verify(&out, &verifying_key(&public).unwrap()).unwrap();
        let mut bytes = std::fs::read(&out).unwrap();
        let (off, _, _) = v.file("filesystem.squashfs").unwrap();
        bytes[off as usize + 3] ^= 1;
        std::fs::write(&out, &bytes).unwrap();
        let mut sink = Vec::new();
        let e = copy_file(&out, &v, "filesystem.squashfs", &mut sink).unwrap_err();
        assert!(matches!(e, BundleError::Digest { .. }), "{e}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(verifying_key("zz").is_err());
        assert!(signing_key(&"0".repeat(63)).is_err());
    }
}
