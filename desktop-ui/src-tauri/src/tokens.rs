//! Where the admin tokens live: the OS keyring, never the box list on disk. On Linux that
//! is the freedesktop Secret Service (GNOME Keyring, KWallet) when one runs; without one
//! (a bare X session, Xvfb in CI) the kernel's keyutils keyring; and if the kernel refuses
//! that too (some containers filter the keyctl calls), memory, so the app still works for
//! the session and says so in every box's `token_store`.
//!
//! keyutils is used directly rather than through `keyring`'s backend: that backend links
//! every key into the kernel's persistent keyring, and asking for that keyring gives a
//! process without a session keyring a new, private one (so the next process cannot find
//! the token), and fails outright in containers with user namespaces. Here a token lives
//! in the session keyring: the login session's (until logout), or the user's session
//! keyring for a process started outside one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The keyring service name the tokens are filed under (the app's identifier).
pub const SERVICE: &str = "com.oasis.admin";

/// The kind of store, as named in `BoxEntry.token_store` and `OASIS_ADMIN_TOKEN_STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStoreKind {
    /// The platform's keyring: Secret Service on Linux, Keychain on macOS, Credential
    /// Manager on Windows.
    Keyring,
    /// The Linux kernel's key retention service (session and persistent keyrings).
    Keyutils,
    /// This process's memory: tokens are gone when the app quits.
    Memory,
}

impl TokenStoreKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenStoreKind::Keyring => "keyring",
            TokenStoreKind::Keyutils => "keyutils",
            TokenStoreKind::Memory => "memory",
        }
    }

    pub fn parse(name: &str) -> Option<TokenStoreKind> {
        match name.trim() {
            "keyring" => Some(TokenStoreKind::Keyring),
            "keyutils" => Some(TokenStoreKind::Keyutils),
            "memory" => Some(TokenStoreKind::Memory),
            _ => None,
        }
    }
}

/// A token store failed.
#[derive(Debug, thiserror::Error)]
#[error("the {store} token store failed to {op} the token of box {box_id}: {message}")]
pub struct TokenError {
    pub store: &'static str,
    pub op: &'static str,
    pub box_id: String,
    pub message: String,
}

/// The tokens, one per box id.
#[derive(Debug)]
pub struct TokenStore {
    kind: TokenStoreKind,
    /// The tokens when `kind` is `Memory`.
    memory: Mutex<HashMap<String, String>>,
}

impl TokenStore {
    /// The first store that works here: keyring, then keyutils, then memory.
    pub fn detect() -> TokenStore {
        let kind = [TokenStoreKind::Keyring, TokenStoreKind::Keyutils]
            .into_iter()
            .find(|k| works(*k))
            .unwrap_or(TokenStoreKind::Memory);
        TokenStore::new(kind)
    }

    /// A store of the given kind, without checking that it works.
    pub fn new(kind: TokenStoreKind) -> TokenStore {
        TokenStore {
            kind,
            memory: Mutex::new(HashMap::new()),
        }
    }

    pub fn kind(&self) -> TokenStoreKind {
        self.kind
    }

    pub fn set(&self, box_id: &str, token: &str) -> Result<(), TokenError> {
        match self.kind {
            TokenStoreKind::Memory => {
                self.memory().insert(box_id.to_string(), token.to_string());
                Ok(())
            }
            #[cfg(target_os = "linux")]
            TokenStoreKind::Keyutils => {
                keyutils::set(box_id, token).map_err(|e| self.error("store", box_id, e))
            }
            _ => entry(box_id)
                .and_then(|e| e.set_password(token))
                .map_err(|e| self.error("store", box_id, e)),
        }
    }

    /// The token of `box_id`, if one is stored.
    pub fn get(&self, box_id: &str) -> Result<Option<String>, TokenError> {
        match self.kind {
            TokenStoreKind::Memory => Ok(self.memory().get(box_id).cloned()),
            #[cfg(target_os = "linux")]
            TokenStoreKind::Keyutils => {
                keyutils::get(box_id).map_err(|e| self.error("read", box_id, e))
            }
            _ => match entry(box_id).and_then(|e| e.get_password()) {
                Ok(t) => Ok(Some(t)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(self.error("read", box_id, e)),
            },
        }
    }

    /// Forgets the token of `box_id` (none stored is fine).
    pub fn delete(&self, box_id: &str) -> Result<(), TokenError> {
        match self.kind {
            TokenStoreKind::Memory => {
                self.memory().remove(box_id);
                Ok(())
            }
            #[cfg(target_os = "linux")]
            TokenStoreKind::Keyutils => {
                keyutils::delete(box_id).map_err(|e| self.error("delete", box_id, e))
            }
            _ => match entry(box_id).and_then(|e| e.delete_credential()) {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(self.error("delete", box_id, e)),
            },
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, op: &'static str, box_id: &str, e: impl std::fmt::Display) -> TokenError {
        TokenError {
            store: self.kind.name(),
            op,
            box_id: box_id.to_string(),
            message: e.to_string(),
        }
    }
}

/// Whether a store of `kind` can keep a token here: write, read back and delete a probe.
fn works(kind: TokenStoreKind) -> bool {
    if kind == TokenStoreKind::Keyring && !session_bus_known() {
        // Without a session bus address libdbus would try to start a bus of its own
        // (X11 autolaunch): there is no Secret Service to find that way.
        return false;
    }
    let store = TokenStore::new(kind);
    let probe = format!("probe-{}", std::process::id());
    let ok = store.set(&probe, "probe").is_ok()
        && matches!(store.get(&probe), Ok(Some(t)) if t == "probe");
    let _ = store.delete(&probe);
    ok
}

/// Whether a D-Bus session bus is advertised (the Secret Service lives on it).
fn session_bus_known() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty())
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| std::path::Path::new(&d).join("bus").exists())
}

/// The platform keyring's entry of `box_id`: on Linux the Secret Service.
#[cfg(target_os = "linux")]
fn entry(box_id: &str) -> keyring::Result<keyring::Entry> {
    let credential = keyring::secret_service::SsCredential::new_with_target(None, SERVICE, box_id)?;
    Ok(keyring::Entry::new_with_credential(Box::new(credential)))
}

/// The platform keyring's entry of `box_id`: Keychain, Credential Manager.
#[cfg(not(target_os = "linux"))]
fn entry(box_id: &str) -> keyring::Result<keyring::Entry> {
    keyring::Entry::new(SERVICE, box_id)
}

/// Tokens in the kernel's key retention service, as `user` keys described
/// `com.oasis.admin:BOX_ID` in the session keyring.
#[cfg(target_os = "linux")]
mod keyutils {
    use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};

    fn description(box_id: &str) -> String {
        format!("{}:{box_id}", super::SERVICE)
    }

    /// The session keyring (the user's session keyring when the process has none; never
    /// a new one, which would die with the process).
    fn session() -> Result<KeyRing, KeyError> {
        KeyRing::from_special_id(KeyRingIdentifier::Session, false)
    }

    fn gone(e: &KeyError) -> bool {
        matches!(
            e,
            KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired
        )
    }

    pub(super) fn set(box_id: &str, token: &str) -> Result<(), KeyError> {
        session()?.add_key(&description(box_id), token)?;
        Ok(())
    }

    pub(super) fn get(box_id: &str) -> Result<Option<String>, KeyError> {
        let key = match session()?.search(&description(box_id)) {
            Ok(k) => k,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match key.read_to_vec() {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) fn delete(box_id: &str) -> Result<(), KeyError> {
        match session()?.search(&description(box_id)) {
            Ok(key) => match key.invalidate() {
                Ok(()) => Ok(()),
                Err(e) if gone(&e) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_and_forgets() {
        let s = TokenStore::new(TokenStoreKind::Memory);
        assert_eq!(s.get("b1").unwrap(), None);
        s.set("b1", "oasis-x").unwrap();
        assert_eq!(s.get("b1").unwrap().as_deref(), Some("oasis-x"));
        s.delete("b1").unwrap();
        s.delete("b1").unwrap();
        assert_eq!(s.get("b1").unwrap(), None);
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in [
            TokenStoreKind::Keyring,
            TokenStoreKind::Keyutils,
            TokenStoreKind::Memory,
        ] {
            assert_eq!(TokenStoreKind::parse(k.name()), Some(k));
        }
        assert_eq!(TokenStoreKind::parse("plaintext"), None);
    }

    /// Whatever `detect` picks here must really keep a token (CI has no Secret Service:
    /// this is where the keyutils fallback is exercised).
    #[test]
    fn the_detected_store_keeps_a_token() {
        let s = TokenStore::detect();
        let id = format!("test-{}", std::process::id());
        s.set(&id, "oasis-test-token").unwrap();
        assert_eq!(s.get(&id).unwrap().as_deref(), Some("oasis-test-token"));
        s.delete(&id).unwrap();
        assert_eq!(s.get(&id).unwrap(), None);
        eprintln!("token store here: {}", s.kind().name());
    }
}
