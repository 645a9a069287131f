//! The app's state behind the commands: the box list, the token store and one pinned
//! client per box. Every method blocks (disk, keyring, network) and is called off the
//! async runtime by [`crate::commands`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oasis_client::{Client, Probe, Response};
use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::boxes::{BoxList, StoredBox, new_id};
use crate::tokens::TokenStore;

/// A box as the front end sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxEntry {
    pub id: String,
    pub name: String,
    /// Normalised base URL.
    pub address: String,
    /// Pinned certificate fingerprint; `null` for plain HTTP on loopback.
    pub fingerprint: Option<String>,
    /// A token for the box is in the token store.
    pub paired: bool,
    /// Where the token is kept: `keyring`, `keyutils` or `memory`.
    pub token_store: &'static str,
}

/// Shared by all commands (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The boxes, written through to `boxes.json`.
    boxes: Mutex<BoxList>,
    /// The tokens, one per box id.
    tokens: TokenStore,
    /// A client per box id, kept so polling reuses its pinned TLS connection.
    clients: Mutex<HashMap<String, Client>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AppState {
    /// Opens the box list in `config_dir`, with tokens in `tokens`.
    pub fn open(config_dir: &Path, tokens: TokenStore) -> Result<AppState, Error> {
        Ok(AppState {
            inner: Arc::new(Shared {
                boxes: Mutex::new(BoxList::open(config_dir)?),
                tokens,
                clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn token_store(&self) -> &TokenStore {
        &self.inner.tokens
    }

    fn entry(&self, b: &StoredBox) -> BoxEntry {
        BoxEntry {
            id: b.id.clone(),
            name: b.name.clone(),
            address: b.address.clone(),
            fingerprint: b.fingerprint.clone(),
            // A store that cannot be read right now shows the box as unpaired rather
            // than hiding the whole list.
            paired: matches!(self.inner.tokens.get(&b.id), Ok(Some(_))),
            token_store: self.inner.tokens.kind().name(),
        }
    }

    pub fn list(&self) -> Vec<BoxEntry> {
        let boxes = lock(&self.inner.boxes).boxes().to_vec();
        boxes.iter().map(|b| self.entry(b)).collect()
    }

    pub fn probe(address: &str) -> Result<Probe, Error> {
        Ok(oasis_client::probe(address)?)
    }

    /// Pairs with the box at `address`, pinned to `fingerprint`, and files it with its
    /// token. `name` names this console in the box's key list (the console's "Name of
    /// this console"); the box is listed under its host name. Pairing the same address
    /// again replaces its token and keeps its id.
    pub fn pair(
        &self,
        address: &str,
        fingerprint: Option<&str>,
        code: &str,
        name: &str,
    ) -> Result<BoxEntry, Error> {
        let client = Client::new(address, fingerprint)?;
        let pinned = client
            .is_tls()
            .then(|| fingerprint.map(oasis_client::normalise_fingerprint))
            .flatten()
            .transpose()?;
        let key_name = match name.trim() {
            "" => default_key_name(),
            n => n.to_string(),
        };
        let paired = client.pair(code, &key_name)?;
        let address = client.address();
        let name = client.host().to_string();
        let mut boxes = lock(&self.inner.boxes);
        let id = boxes
            .boxes()
            .iter()
            .find(|b| b.address == address)
            .map_or_else(new_id, |b| b.id.clone());
        self.inner.tokens.set(&id, &paired.token)?;
        let stored = boxes.upsert(StoredBox {
            id: id.clone(),
            name,
            address,
            fingerprint: pinned,
        });
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                if boxes.get(&id).is_none() {
                    let _ = self.inner.tokens.delete(&id);
                }
                return Err(e);
            }
        };
        drop(boxes);
        lock(&self.inner.clients).insert(stored.id.clone(), client);
        Ok(self.entry(&stored))
    }

    /// Forgets box `id` and its token.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        let mut boxes = lock(&self.inner.boxes);
        if boxes.get(id).is_none() {
            return Err(Error::UnknownBox { id: id.to_string() });
        }
        // The token first: a box left in the list can be removed again, a token left in
        // the keyring with no box would be forgotten there.
        self.inner.tokens.delete(id)?;
        boxes.remove(id)?;
        lock(&self.inner.clients).remove(id);
        Ok(())
    }

    /// Calls the admin API of box `id` with its token.
    pub fn request(
        &self,
        id: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, Error> {
        let stored = lock(&self.inner.boxes)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownBox { id: id.to_string() })?;
        let token = self.inner.tokens.get(id)?;
        let cached = lock(&self.inner.clients).get(id).cloned();
        let client = match cached {
            Some(c) => c,
            None => {
                let c = Client::new(&stored.address, stored.fingerprint.as_deref())?;
                lock(&self.inner.clients).insert(id.to_string(), c.clone());
                c
            }
        };
        Ok(client.request(method, path, body, token.as_deref())?)
    }
}

/// What the daemon calls the key pairing makes when the admin gave no name: this app on
/// this machine.
fn default_key_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this computer".into());
    format!("Oasis Admin on {host}")
}
