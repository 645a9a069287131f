//! Who may do what: admin tokens and API keys, their roles, the models a key may use, its
//! rate limits and quotas.
//!
//! A token is `oasis-` + 64 hex digits (256 random bits from the OS). It is shown once;
//! sled keeps only its SHA-256, next to a visible prefix (`oasis-1a2b3c4d`) that
//! identifies it in lists and logs. Every key lives in memory too (by hash), so a request
//! costs one hash and one map lookup, and a revocation takes effect on the next request.
//!
//! On first start the daemon makes its local admin credential and writes the token to
//! `DATA_DIR/admin.token` (mode 0600): the CLI on the box reads it, as the docker CLI uses
//! its socket. Until the first other key exists the daemon is open to loopback clients
//! (a fresh install, clearly logged); from then on every request but health, readiness,
//! metrics and the API document needs a token.
//!
//! Limits are checked before a request enters the engine: requests per minute and tokens
//! per minute (sliding sixty-second windows, in memory), tokens per UTC day and month
//! (from the metered totals, which survive restarts).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{SCHEMA, Store, hex, random_hex, unix_now};

/// A key as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRecord {
    pub schema: u32,
    /// `key-` + 8 hex digits.
    pub id: String,
    pub name: String,
    /// The team or person it is for.
    #[serde(default)]
    pub owner: Option<String>,
    pub role: Role,
    /// The token's first characters, to recognise it: `oasis-1a2b3c4d`.
    pub prefix: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// Served names the key may use (absent: all).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Limits,
    /// Seconds since the epoch after which it no longer works.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub revoked_at: Option<u64>,
    pub created_at: u64,
    /// Who made it (a key id, or `bootstrap`).
    pub created_by: String,
}

impl KeyRecord {
    /// A new key for `token` (a fresh id, no limits, no expiry).
    pub fn new(token: &str, name: String, role: Role, created_by: String) -> KeyRecord {
        KeyRecord {
            schema: SCHEMA,
            id: format!("key-{}", random_hex(4)),
            name,
            owner: None,
            role,
            prefix: token_prefix(token),
            hash: token_hash(token),
            models: None,
            limits: Limits::default(),
            expires_at: None,
            revoked_at: None,
            created_at: unix_now(),
            created_by,
        }
    }

    /// The local admin credential made at first start.
    pub fn is_bootstrap(&self) -> bool {
        self.created_by == BOOTSTRAP
    }
}

const BOOTSTRAP: &str = "bootstrap";
/// The admin credential's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A new random token.
pub fn new_token() -> String {
    format!("oasis-{}", random_hex(32))
}

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The part of a token shown in lists: `oasis-` and 8 hex digits.
pub fn token_prefix(token: &str) -> String {
    token.chars().take(14).collect()
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unknown,
    Revoked,
    Expired,
}

/// Which limit a request ran into, and when to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct OverLimit {
    /// `rpm`, `tpm`, `tokens_per_day`, `tokens_per_month`.
    pub limit: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

/// What a key has used and holds reserved: its sliding minute and its day and month
/// (UTC), kept in step with metering.
#[derive(Debug, Default)]
struct Usage {
    /// Request start times in the last minute.
    requests: VecDeque<Instant>,
    /// Tokens in the last minute: (when, reservation id or 0, tokens). A request's
    /// reservation stands here until it is settled to what the request used.
    tokens: VecDeque<(Instant, u64, u64)>,
    day: u32,
    month: u32,
    day_tokens: u64,
    month_tokens: u64,
    /// Tokens reserved by requests in flight, counted against the day and month.
    day_reserved: u64,
    month_reserved: u64,
}

impl Usage {
    fn trim(&mut self, now: Instant) {
        let minute = Duration::from_secs(60);
        while self.requests.front().is_some_and(|t| now - *t >= minute) {
            self.requests.pop_front();
        }
        while self
            .tokens
            .front()
            .is_some_and(|(t, _, _)| now - *t >= minute)
        {
            self.tokens.pop_front();
        }
    }

    /// Starts a new day or month when the calendar has moved on.
    fn roll(&mut self, day: u32, month: u32) {
        if self.day != day {
            self.day = day;
            self.day_tokens = 0;
            self.day_reserved = 0;
        }
        if self.month != month {
            self.month = month;
            self.month_tokens = 0;
            self.month_reserved = 0;
        }
    }
}

/// Tokens a request holds against its key's limits from admission until it ends; settled
/// to what it used by [`Keys::settle`]. Requests admitted together can never spend more
/// than the limits allow, since each one's worst case is counted before it starts.
#[derive(Debug)]
pub struct Reservation {
    key: String,
    id: u64,
    /// The prompt and the most completion tokens it may produce.
    tokens: u64,
    /// The day and month it was counted in.
    day: u32,
    month: u32,
}

impl Reservation {
    /// Most completion tokens the request may produce under its key's limits (its prompt
    /// already counted).
    pub fn completion_cap(&self, prompt_tokens: u64) -> u64 {
        self.tokens.saturating_sub(prompt_tokens)
    }
}

/// The keys, in memory and in sled.
#[derive(Debug)]
pub struct Keys {
    store: Store,
    by_hash: RwLock<HashMap<String, KeyRecord>>,
    /// No key but the local admin credential exists (kept as keys are added: a key is
    /// never deleted, only revoked, so once false it stays false).
    open: std::sync::atomic::AtomicBool,
    /// Per key: minute windows, day and month totals and reservations, under one lock so
    /// that concurrent admissions see each other.
    usage: Mutex<HashMap<String, Usage>>,
    next_reservation: std::sync::atomic::AtomicU64,
}

impl Keys {
    /// Loads the keys and makes the local admin credential if there is none (writing its
    /// token to `DATA_DIR/admin.token`, readable by the owner only).
    pub fn open(store: Store, data_dir: &Path) -> Result<Keys> {
        let mut by_hash = HashMap::new();
        for k in store.keys::<KeyRecord>()? {
            match k {
                Ok(k) => {
                    by_hash.insert(k.hash.clone(), k);
                }
                Err(e) => tracing::error!(error = %e, "skipping a corrupt key record"),
            }
        }
        let open = by_hash.values().all(KeyRecord::is_bootstrap);
        let keys = Keys {
            store,
            open: std::sync::atomic::AtomicBool::new(open),
            by_hash: RwLock::new(by_hash),
            usage: Mutex::new(HashMap::new()),
            next_reservation: std::sync::atomic::AtomicU64::new(1),
        };
        keys.ensure_local_admin(data_dir)?;
        Ok(keys)
    }

    fn ensure_local_admin(&self, data_dir: &Path) -> Result<()> {
        let file = data_dir.join(ADMIN_TOKEN_FILE);
        if let Ok(token) = std::fs::read_to_string(&file)
            && self.check(token.trim()).is_ok()
        {
            return Ok(());
        }
        let token = new_token();
        let record = KeyRecord::new(&token, "local admin".into(), Role::Admin, BOOTSTRAP.into());
        write_secret(&file, &token)?;
        self.insert(record)?;
        tracing::info!(file = %file.display(), "made the local admin credential (readable by this user only)");
        // Earlier local credentials are lost with their file: they stop working.
        for old in self.list() {
            if old.is_bootstrap() && old.revoked_at.is_none() && old.hash != token_hash(&token) {
                self.revoke(&old.id)?;
                tracing::info!(id = %old.id, "revoked the previous local admin credential");
            }
        }
        Ok(())
    }

    /// Stores a key, durably, and makes it usable at once.
    pub fn insert(&self, record: KeyRecord) -> Result<()> {
        self.store.put_key(&record.id, &record)?;
        if !record.is_bootstrap() {
            self.open.store(false, std::sync::atomic::Ordering::Release);
        }
        if let Ok(mut m) = self.by_hash.write() {
            m.insert(record.hash.clone(), record);
        }
        Ok(())
    }

    /// Revokes key `id`; false if there is no such key. Takes effect on the next request.
    pub fn revoke(&self, id: &str) -> Result<Option<KeyRecord>> {
        let Some(mut k) = self.list().into_iter().find(|k| k.id == id) else {
            return Ok(None);
        };
        if k.revoked_at.is_none() {
            k.revoked_at = Some(unix_now());
            self.insert(k.clone())?;
        }
        Ok(Some(k))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut all: Vec<KeyRecord> = self
            .by_hash
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// True while no key but the local admin credential exists: loopback clients may go
    /// without a token.
    pub fn open_mode(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The key a token belongs to, if it is valid now.
    pub fn check(&self, token: &str) -> Result<KeyRecord, Denied> {
        let hash = token_hash(token);
        let m = self.by_hash.read().map_err(|_| Denied::Unknown)?;
        let k = m.get(&hash).ok_or(Denied::Unknown)?;
        if k.revoked_at.is_some() {
            return Err(Denied::Revoked);
        }
        if k.expires_at.is_some_and(|t| unix_now() >= t) {
            return Err(Denied::Expired);
        }
        Ok(k.clone())
    }

    fn lock_usage(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seeds a key's day and month totals (from the metered usage at start).
    pub fn seed_totals(&self, key: &str, day_tokens: u64, month_tokens: u64) {
        let (day, month) = today();
        let mut all = self.lock_usage();
        let u = all.entry(key.to_string()).or_default();
        u.roll(day, month);
        u.day_tokens = day_tokens;
        u.month_tokens = month_tokens;
    }

    /// Checks `key`'s limits for a request of `prompt_tokens` that may produce up to
    /// `max_completion` tokens and, when it may go, counts it: the request in the minute
    /// window, and its prompt plus as many completion tokens as the limits leave room for
    /// (at most `max_completion`, at least `min_completion`) as a [`Reservation`] against
    /// every token limit. The reservation's [`Reservation::completion_cap`] is the most the
    /// request may then produce.
    pub fn admit(
        &self,
        key: &KeyRecord,
        prompt_tokens: u64,
        min_completion: u64,
        max_completion: u64,
    ) -> Result<Reservation, OverLimit> {
        let l = &key.limits;
        let now = Instant::now();
        let (day, month) = today();
        let mut all = self.lock_usage();
        let u = all.entry(key.id.clone()).or_default();
        u.roll(day, month);
        u.trim(now);
        let min_completion = min_completion.max(1);
        // Completion tokens each limit leaves room for after the prompt.
        let mut room = max_completion.max(min_completion);
        if let Some(q) = l.tokens_per_day {
            let held = u.day_tokens + u.day_reserved;
            let left = q.saturating_sub(held).saturating_sub(prompt_tokens);
            if left < min_completion {
                return Err(OverLimit {
                    limit: "tokens_per_day",
                    message: format!(
                        "Key `{}` has used {} of its {q} tokens for today (UTC) and holds {} for requests in flight; this request needs {prompt_tokens} for its prompt and at least {min_completion} to answer",
                        key.name, u.day_tokens, u.day_reserved
                    ),
                    retry_after: if u.day_reserved > 0 {
                        Duration::from_secs(1)
                    } else {
                        until_next_day()
                    },
                });
            }
            room = room.min(left);
        }
        if let Some(q) = l.tokens_per_month {
            let held = u.month_tokens + u.month_reserved;
            let left = q.saturating_sub(held).saturating_sub(prompt_tokens);
            if left < min_completion {
                return Err(OverLimit {
                    limit: "tokens_per_month",
                    message: format!(
                        "Key `{}` has used {} of its {q} tokens for this month (UTC) and holds {} for requests in flight; this request needs {prompt_tokens} for its prompt and at least {min_completion} to answer",
                        key.name, u.month_tokens, u.month_reserved
                    ),
                    retry_after: if u.month_reserved > 0 {
                        Duration::from_secs(1)
                    } else {
                        until_next_day()
                    },
                });
            }
            room = room.min(left);
        }
        let retry = |first: Option<Instant>| {
            first.map_or(Duration::from_secs(1), |t| {
                Duration::from_secs(60).saturating_sub(now - t) + Duration::from_millis(999)
            })
        };
        if let Some(rpm) = l.rpm
            && u.requests.len() as u64 >= rpm
        {
            return Err(OverLimit {
                limit: "rpm",
                message: format!(
                    "Key `{}` made {rpm} requests in the last minute, its limit",
                    key.name
                ),
                retry_after: retry(u.requests.front().copied()),
            });
        }
        if let Some(tpm) = l.tpm {
            let minute_tokens: u64 = u.tokens.iter().map(|(_, _, n)| n).sum();
            let left = tpm
                .saturating_sub(minute_tokens)
                .saturating_sub(prompt_tokens);
            if left < min_completion {
                return Err(OverLimit {
                    limit: "tpm",
                    message: format!(
                        "Key `{}` used or holds {minute_tokens} tokens in the last minute; this request's {prompt_tokens} prompt tokens and at least {min_completion} to answer pass its limit of {tpm}",
                        key.name
                    ),
                    retry_after: retry(u.tokens.front().map(|(t, _, _)| *t)),
                });
            }
            room = room.min(left);
        }
        let id = self
            .next_reservation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tokens = prompt_tokens + room;
        u.requests.push_back(now);
        u.tokens.push_back((now, id, tokens));
        u.day_reserved += tokens;
        u.month_reserved += tokens;
        Ok(Reservation {
            key: key.id.clone(),
            id,
            tokens,
            day,
            month,
        })
    }

    /// Replaces a request's reservation by what it used: the prompt stays in the minute
    /// window where the reservation stood, the completion counts from now, and both go
    /// into the day and month totals.
    pub fn settle(&self, r: &Reservation, prompt_tokens: u64, completion_tokens: u64) {
        let now = Instant::now();
        let (day, month) = today();
        let mut all = self.lock_usage();
        let u = all.entry(r.key.clone()).or_default();
        if u.day == r.day {
            u.day_reserved = u.day_reserved.saturating_sub(r.tokens);
        }
        if u.month == r.month {
            u.month_reserved = u.month_reserved.saturating_sub(r.tokens);
        }
        u.roll(day, month);
        if let Some(slot) = u.tokens.iter_mut().find(|(_, id, _)| *id == r.id) {
            slot.1 = 0;
            slot.2 = prompt_tokens;
        }
        u.tokens.push_back((now, 0, completion_tokens));
        u.day_tokens += prompt_tokens + completion_tokens;
        u.month_tokens += prompt_tokens + completion_tokens;
    }
}

/// Writes `text` to `path` readable and writable by the owner only.
pub fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A one-time pairing code as stored: its hash, when it stops working, failed tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairingCode {
    hash: String,
    expires_at: u64,
    failures: u32,
}

/// Tries a pairing code gets before it is burned.
pub const PAIRING_TRIES: u32 = 5;
/// How long a pairing code works.
pub const PAIRING_TTL_S: u64 = 24 * 3600;
/// The pairing code's file in the data directory.
pub const PAIRING_FILE: &str = "pairing.code";
const PAIRING_KEY: &str = "pairing";

/// Why a pairing attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub enum PairError {
    /// No code is outstanding (used, burned, expired or never made).
    NoCode,
    /// Wrong code; tries left.
    Wrong(u32),
}

impl Keys {
    /// Makes a new one-time pairing code (replacing any other), writes it to
    /// `DATA_DIR/pairing.code` (owner only) and returns it: `XXXX-XXXX-XXXX-XXXX`, 80 bits.
    pub fn new_pairing_code(&self, data_dir: &Path) -> Result<String> {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut raw = [0u8; 16];
        if getrandom::fill(&mut raw).is_err() {
            let h = Sha256::digest(random_hex(16).as_bytes());
            raw.copy_from_slice(&h[..16]);
        }
        let chars: Vec<char> = raw
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
            .collect();
        let code = chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("-");
        let stored = PairingCode {
            hash: token_hash(&code),
            expires_at: unix_now() + PAIRING_TTL_S,
            failures: 0,
        };
        self.store.put_setting(PAIRING_KEY, &Some(stored))?;
        write_secret(&data_dir.join(PAIRING_FILE), &code)?;
        Ok(code)
    }

    /// Whether a pairing code is outstanding.
    pub fn pairing_open(&self) -> bool {
        matches!(
            self.store.get_setting::<Option<PairingCode>>(PAIRING_KEY),
            Ok(Some(Some(p))) if p.expires_at > unix_now()
        )
    }

    /// Uses the pairing code `code` (once): an admin token named `name`.
    pub fn pair(
        &self,
        data_dir: &Path,
        code: &str,
        name: &str,
    ) -> Result<Result<(KeyRecord, String), PairError>> {
        let Some(Some(mut p)) = self.store.get_setting::<Option<PairingCode>>(PAIRING_KEY)? else {
            return Ok(Err(PairError::NoCode));
        };
        if p.expires_at <= unix_now() {
            return Ok(Err(PairError::NoCode));
        }
        let given = code.trim().to_ascii_uppercase();
        if token_hash(&given) != p.hash {
            p.failures += 1;
            let left = PAIRING_TRIES.saturating_sub(p.failures);
            let next = (left > 0).then_some(p);
            self.store.put_setting(PAIRING_KEY, &next)?;
            if left == 0 {
                let _ = std::fs::remove_file(data_dir.join(PAIRING_FILE));
            }
            return Ok(Err(PairError::Wrong(left)));
        }
        self.store.put_setting(PAIRING_KEY, &None::<PairingCode>)?;
        let _ = std::fs::remove_file(data_dir.join(PAIRING_FILE));
        let token = new_token();
        let record = KeyRecord::new(
            &token,
            format!("paired: {name}"),
            Role::Admin,
            "pairing".into(),
        );
        self.insert(record.clone())?;
        Ok(Ok((record, token)))
    }
}

/// The token the CLI on the box uses: `OASIS_TOKEN`, else `DATA_DIR/admin.token` when
/// readable.
pub fn local_token(data_dir: &Path) -> Option<String> {
    if let Ok(t) = std::env::var("OASIS_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    std::fs::read_to_string(admin_token_path(data_dir))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Days since the epoch to a civil (year, month, day), UTC.
pub use appliance_host::civil;
pub use oasis_api::{Limits, Role};

/// `YYYY-MM-DD` of a Unix time, UTC.
pub fn day_of(unix_s: u64) -> String {
    let (y, m, d) = civil((unix_s / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today as (days since the epoch, months since year 0), UTC.
fn today() -> (u32, u32) {
    let now = unix_now();
    let days = now / 86_400;
    let (y, m, _) = civil(days as i64);
    (days as u32, (y * 12 + i64::from(m)) as u32)
}

fn until_next_day() -> Duration {
    Duration::from_secs(86_400 - unix_now() % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(day_of(951_782_400), "2000-02-29");
        assert_eq!(day_of(1_796_169_600), "2026-12-02");
    }

    fn key(limits: Limits) -> KeyRecord {
        KeyRecord {
            schema: SCHEMA,
            id: "key-1".into(),
            name: "team".into(),
            owner: None,
            role: Role::User,
            prefix: "oasis-00".into(),
            hash: "h".into(),
            models: None,
            limits,
            expires_at: None,
            revoked_at: None,
            created_at: 0,
            created_by: "x".into(),
        }
    }

    fn keys() -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let keys = Keys::open(store, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        (dir, keys)
    }

    fn limit_of(r: Result<Reservation, OverLimit>) -> Option<&'static str> {
        r.err().map(|e| e.limit)
    }

    #[test]
    fn limits_admit_exactly_their_counts() {
        let (_dir, keys) = keys();
        let k = key(Limits {
            rpm: Some(3),
            ..Limits::default()
        });
        for _ in 0..3 {
            assert!(keys.admit(&k, 10, 1, 16).is_ok());
        }
        assert_eq!(limit_of(keys.admit(&k, 10, 1, 16)), Some("rpm"));
        // A day's quota: what was used plus the prompt plus one token to answer must fit.
        let mut k = key(Limits {
            tokens_per_day: Some(100),
            ..Limits::default()
        });
        k.id = "key-d".into();
        let r = keys
            .admit(&k, 40, 1, 50)
            .unwrap_or_else(|e| panic!("{e:?}"));
        keys.settle(&r, 40, 50);
        let r = keys.admit(&k, 9, 1, 16).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.completion_cap(9), 1, "capped to what is left");
        keys.settle(&r, 9, 1);
        assert_eq!(limit_of(keys.admit(&k, 1, 1, 1)), Some("tokens_per_day"));
        // Tokens per minute: the prompt counts at admission, the completion when done.
        let mut k = key(Limits {
            tpm: Some(100),
            ..Limits::default()
        });
        k.id = "key-2".into();
        let r = keys
            .admit(&k, 60, 1, 30)
            .unwrap_or_else(|e| panic!("{e:?}"));
        keys.settle(&r, 60, 30);
        let r = keys.admit(&k, 9, 1, 1).unwrap_or_else(|e| panic!("{e:?}"));
        keys.settle(&r, 9, 1);
        let e = keys.admit(&k, 1, 1, 1).err();
        assert_eq!(e.as_ref().map(|e| e.limit), Some("tpm"));
        assert!(e.is_some_and(|e| e.retry_after <= Duration::from_secs(61)));
        // A month's quota counts across days.
        let mut k = key(Limits {
            tokens_per_month: Some(50),
            ..Limits::default()
        });
        k.id = "key-3".into();
        keys.seed_totals(&k.id, 0, 45);
        assert!(keys.admit(&k, 4, 1, 1).is_ok());
        assert_eq!(limit_of(keys.admit(&k, 1, 1, 1)), Some("tokens_per_month"));
    }

    /// Regression (issue 16, finding 2): 32 concurrent requests under `tokens_per_day = 500`
    /// were all admitted and 3,200 tokens metered.
    #[test]
    fn concurrent_admissions_never_overspend() {
        let (_dir, keys) = keys();
        for (limits, name) in [
            (
                Limits {
                    tokens_per_day: Some(500),
                    ..Limits::default()
                },
                "tokens_per_day",
            ),
            (
                Limits {
                    tpm: Some(500),
                    ..Limits::default()
                },
                "tpm",
            ),
        ] {
            let mut k = key(limits);
            k.id = format!("key-{name}");
            let keys = &keys;
            let k = &k;
            let spent: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..32)
                    .map(|_| {
                        s.spawn(move || match keys.admit(k, 30, 1, 70) {
                            Ok(r) => {
                                // Each uses all it may.
                                let used = r.completion_cap(30);
                                assert!((1..=70).contains(&used), "{used}");
                                std::thread::sleep(Duration::from_millis(5));
                                keys.settle(&r, 30, used);
                                30 + used
                            }
                            Err(e) => {
                                assert_eq!(e.limit, name);
                                0
                            }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            assert!(
                spent <= 500,
                "{name}: {spent} tokens spent under a limit of 500"
            );
            assert!(spent >= 400, "{name}: only {spent} of 500 used");
        }
    }

    #[test]
    fn a_settled_request_gives_back_what_it_did_not_use() {
        let (_dir, keys) = keys();
        let k = key(Limits {
            tokens_per_day: Some(100),
            ..Limits::default()
        });
        let r = keys
            .admit(&k, 10, 1, 90)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.completion_cap(10), 90);
        // Everything is held while it runs.
        assert_eq!(limit_of(keys.admit(&k, 1, 1, 1)), Some("tokens_per_day"));
        keys.settle(&r, 10, 5);
        let r = keys
            .admit(&k, 10, 1, 200)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.completion_cap(10), 75);
        drop(r);
    }

    #[test]
    fn tokens_are_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let keys = Keys::open(store.clone(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let admin = local_token(dir.path()).unwrap_or_default();
        assert_eq!(admin.len(), 6 + 64);
        assert_eq!(keys.check(&admin).map(|k| k.role), Ok(Role::Admin));
        assert!(keys.open_mode());
        assert_eq!(keys.check("oasis-nope").err(), Some(Denied::Unknown));
        let id = keys.list()[0].id.clone();
        assert!(keys.revoke(&id).ok().flatten().is_some());
        assert_eq!(keys.check(&admin).err(), Some(Denied::Revoked));
        // Reopened: still revoked, and a new local credential is made.
        drop(keys);
        let keys = Keys::open(store, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let again = local_token(dir.path()).unwrap_or_default();
        assert_ne!(again, admin);
        assert_eq!(keys.check(&admin).err(), Some(Denied::Revoked));
        assert!(keys.check(&again).is_ok());
    }
}
