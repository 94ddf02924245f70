//! The persistent token cache: an encrypted file that the processes of one pipeline job share,
//! so that each short-lived process (a CLI call per script line, a test binary, a build tool) does
//! not pay an OIDC round trip and a Microsoft Entra exchange of its own.
//!
//! # Threat model
//!
//! - It protects tokens at rest against other processes and users on the agent machine that do
//!   not have the job's `System.AccessToken`: the file is sealed with ChaCha20-Poly1305 under a
//!   key derived (HKDF-SHA256) from that token, which only the job's own steps receive and which
//!   dies with the job. Without it, the file can be neither read nor forged; self-hosted agents
//!   that run jobs of several pipelines (or keep files between jobs) are the main reason for the
//!   encryption.
//! - It does not protect against code running in the same job: that code has the
//!   `System.AccessToken` and could request the tokens itself.
//! - The file lives in the agent's per-job temp folder (`AGENT_TEMPDIRECTORY`), which the agent
//!   wipes after the job; it is created with mode 0600 in a folder with mode 0700, and a file or
//!   folder that others may read or write (on Unix) is refused, never read nor written.
//!
//! # Format
//!
//! `magic (6) | version (1) | key id (16) | nonce (12) | ciphertext + tag`. The key id is a
//! second HKDF output of the same token (so a file sealed under another token is recognised as
//! such without trying); the nonce is random per seal; the associated data is the magic, the
//! version and the key id. The plaintext is JSON: the entries, keyed like the in-memory cache
//! (scopes, tenant, CAE) plus the authority and client, holding the access token, its expiry,
//! refresh time and type. Neither the OIDC token nor the `System.AccessToken` is ever stored.
//!
//! Anything unreadable (a wrong key, a truncated or tampered file, another version, garbage) is
//! a miss with a `tracing` debug event, never an error: authentication goes on over the network.
//!
//! # Concurrency
//!
//! Readers take a shared lock and writers an exclusive one on a lock file beside the cache file
//! (`fd-lock`), waiting at most [`LOCK_WAIT`]. A writer reads the current entries, drops those
//! too close to expiry to be served, inserts its own, keeps at most `max_entries` (dropping the soonest to expire),
//! writes a temporary file in the same folder, fsyncs it, renames it over the cache file and
//! fsyncs the folder: a reader sees the old file or the new one, never a mix, and a crash loses at
//! most the entry being written.

use crate::{AccessTokenInfo, claims, clock::Clock, exchange::TokenRequest};
use azure_core::credentials::Secret;
use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use fd_lock::RwLock;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::{
    fmt,
    fs::{self, File, Metadata, OpenOptions},
    future::Future,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration as StdDuration, Instant},
};
use time::{Duration, OffsetDateTime};
use zeroize::{Zeroize, Zeroizing};

const TARGET: &str = "azure_pipelines_credential";

/// The agent's per-job temp folder, wiped after the job.
pub(crate) const AGENT_TEMPDIRECTORY_ENV: &str = "AGENT_TEMPDIRECTORY";
/// The folder, under `AGENT_TEMPDIRECTORY`, of the default cache file.
const DEFAULT_FOLDER: &str = "azure-pipelines-credential";
const DEFAULT_FILE: &str = "tokens.bin";
const DEFAULT_MAX_ENTRIES: usize = 64;

const MAGIC: &[u8; 6] = b"AZPTKC";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN;
/// A fixed, versioned salt and context: a new format version derives new keys.
const HKDF_SALT: &[u8] = b"azure_pipelines_credential persistent cache v1";
const HKDF_KEY_INFO: &[u8] = b"azure_pipelines_credential persistent cache v1 encryption key";
const HKDF_KEY_ID_INFO: &[u8] = b"azure_pipelines_credential persistent cache v1 key id";
/// Files larger than this are not read: the cache holds at most a few hundred kilobytes, so a
/// larger file is garbage, and reading it whole would waste memory.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// How long a process waits for another one's lock before going without the file.
pub(crate) const LOCK_WAIT: StdDuration = StdDuration::from_secs(2);
const LOCK_POLL: StdDuration = StdDuration::from_millis(5);
/// A token in the file is served (and kept) only while it has more than this left, and more than
/// [`REFRESH_MARGIN`] before its `refresh_on`. The in-memory cache refreshes 6 minutes before
/// expiry (or at `refresh_on`), up to a minute earlier by its jitter: a token served with less
/// would enter that refresh window at once, and every hit would start another refresh that reads
/// the same token from the file again. The two extra minutes keep it clear of the jitter.
const MIN_LIFETIME_LEFT: Duration = Duration::minutes(8);
const REFRESH_MARGIN: Duration = Duration::minutes(2);

/// Options of the opt-in persistent token cache, shared by the processes of one pipeline job;
/// see [`AzurePipelinesCredentialOptions::persistent_cache`](crate::AzurePipelinesCredentialOptions::persistent_cache).
///
/// ```
/// use azure_pipelines_credential::{AzurePipelinesCredentialOptions, PersistentCacheOptions};
///
/// let options = AzurePipelinesCredentialOptions {
///     // The file goes to $AGENT_TEMPDIRECTORY/azure-pipelines-credential/tokens.bin.
///     persistent_cache: Some(PersistentCacheOptions::default()),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistentCacheOptions {
    /// The cache file. When `None`: `$AGENT_TEMPDIRECTORY/azure-pipelines-credential/tokens.bin`,
    /// in the agent's per-job temp folder, which the agent wipes after the job; when
    /// `AGENT_TEMPDIRECTORY` is not set either (not in a pipeline), the cache is off (a debug
    /// event says so).
    ///
    /// The file's folder is created with mode 0700 when missing, and must not be readable or
    /// writable by others (on Unix): a shared folder such as `/tmp` is refused. The lock file
    /// `<file>.lock` and temporary files are created beside the file.
    pub path: Option<PathBuf>,
    /// The most tokens kept in the file (default 64; 0 counts as 1). Each write drops the tokens
    /// too close to expiry to be served, and then, above this number, the soonest to expire.
    /// (A file over 8 MiB, some two thousand tokens, is not read.)
    pub max_entries: usize,
}

impl Default for PersistentCacheOptions {
    fn default() -> Self {
        Self {
            path: None,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Where the cache file lives: the given path, else the default under `AGENT_TEMPDIRECTORY`.
pub(crate) fn resolve_path(
    options: &PersistentCacheOptions,
    agent_temp_directory: Option<&str>,
) -> Option<PathBuf> {
    match (&options.path, agent_temp_directory.map(str::trim)) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(temp)) if !temp.is_empty() => {
            Some(Path::new(temp).join(DEFAULT_FOLDER).join(DEFAULT_FILE))
        }
        (None, _) => None,
    }
}

/// The key and its public identifier, both derived from the `System.AccessToken`.
struct Keys {
    key: Zeroizing<[u8; 32]>,
    id: [u8; KEY_ID_LEN],
}

impl Keys {
    /// HKDF-SHA256 over the token, with a fixed versioned salt, and one `info` per output so the
    /// key id (stored in clear) says nothing about the key.
    ///
    /// The key is bound to the job (its token) only, not to the client or tenant: those are not
    /// secret, so binding them would keep nothing from anyone who has the token, while two
    /// service connections of one job could no longer share the file. Entries are keyed by
    /// client and tenant instead.
    fn derive(system_access_token: &str) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), system_access_token.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; KEY_ID_LEN];
        // Both lengths are far below HKDF-SHA256's limit (255 * 32 bytes), so neither fails.
        hkdf.expand(HKDF_KEY_INFO, key.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hkdf.expand(HKDF_KEY_ID_INFO, &mut id)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        Self { key, id }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        header[MAGIC.len() + 1..].copy_from_slice(&self.id);
        header
    }

    /// The file's bytes for `plaintext`, under a fresh random nonce.
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| format!("no random nonce from the operating system: {e}"))?;
        let header = self.header();
        let cipher = ChaCha20Poly1305::new((&*self.key).into());
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &header,
                },
            )
            .map_err(|_| "the cache could not be encrypted".to_owned())?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a file's bytes, or why it cannot be read.
    fn open(&self, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unreadable> {
        if bytes.len() < MAGIC.len() + 1 {
            return Err(if MAGIC.starts_with(bytes) {
                Unreadable::Truncated
            } else {
                Unreadable::Garbage
            });
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(Unreadable::Garbage);
        }
        if bytes[MAGIC.len()] != VERSION {
            return Err(Unreadable::Version(bytes[MAGIC.len()]));
        }
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(Unreadable::Truncated);
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        if header[MAGIC.len() + 1..] != self.id {
            return Err(Unreadable::OtherKey);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| Unreadable::Truncated)?;
        let cipher = ChaCha20Poly1305::new((&*self.key).into());
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map(Zeroizing::new)
            // The tag covers the whole ciphertext and header: a cut, a flipped byte or a foreign
            // key id all end here.
            .map_err(|_| Unreadable::Tampered)
    }
}

/// Why a cache file was not used; worded for debug logs.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    Garbage,
    Truncated,
    Version(u8),
    OtherKey,
    Tampered,
    Contents,
    TooLarge,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Garbage => f.write_str("not a token cache file (unknown header)"),
            Self::Truncated => f.write_str("truncated"),
            Self::Version(v) => {
                write!(f, "format version {v} is not supported (this is {VERSION})")
            }
            Self::OtherKey => f.write_str(
                "sealed with another System.AccessToken (another job, or another agent run)",
            ),
            Self::Tampered => f.write_str("failed authentication (tampered or corrupted)"),
            Self::Contents => f.write_str("decrypted, but its contents are not understood"),
            Self::TooLarge => write!(f, "larger than {MAX_FILE_BYTES} bytes"),
        }
    }
}

/// What identifies a token in the file: the in-memory cache's key (scopes, tenant, CAE) plus what
/// is fixed per credential there (the authority and the client), since the file is shared by
/// every credential of the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EntryKey {
    authority: String,
    client: String,
    tenant: String,
    scopes: Vec<String>,
    cae: bool,
}

/// One token in the file. Times are Unix seconds.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: EntryKey,
    access_token: String,
    expires_on: i64,
    refresh_on: Option<i64>,
    token_type: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

impl Entry {
    fn new(key: EntryKey, info: &AccessTokenInfo) -> Self {
        Self {
            key,
            access_token: info.token.secret().to_owned(),
            expires_on: info.expires_on.unix_timestamp(),
            refresh_on: info.refresh_on.map(OffsetDateTime::unix_timestamp),
            token_type: info.token_type.clone(),
        }
    }

    fn info(&self) -> Option<AccessTokenInfo> {
        Some(AccessTokenInfo {
            token: Secret::new(self.access_token.clone()),
            expires_on: OffsetDateTime::from_unix_timestamp(self.expires_on).ok()?,
            refresh_on: match self.refresh_on {
                Some(at) => Some(OffsetDateTime::from_unix_timestamp(at).ok()?),
                None => None,
            },
            token_type: self.token_type.clone(),
        })
    }

    /// Whether the token may be handed out at `now`: it is not due for a refresh by the
    /// in-memory cache for a while (see [`MIN_LIFETIME_LEFT`]).
    fn fresh(&self, now: OffsetDateTime) -> bool {
        self.info().is_some_and(|info| {
            !info.token.secret().is_empty()
                && info.expires_on - now > MIN_LIFETIME_LEFT
                && info.refresh_on.is_none_or(|r| r - now > REFRESH_MARGIN)
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Contents {
    entries: Vec<Entry>,
}

impl Contents {
    fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        serde_json::to_vec(self)
            .map(Zeroizing::new)
            .map_err(|e| format!("the entries could not be encoded: {e}"))
    }

    fn decode(plaintext: &[u8]) -> Result<Self, Unreadable> {
        serde_json::from_slice(plaintext).map_err(|_| Unreadable::Contents)
    }

    /// Adds `entry`, unless the file already has a token for its key that lives longer (another
    /// process got one meanwhile); drops the entries that can no longer be served (see
    /// [`Entry::fresh`]), and keeps at most `max` (the soonest to expire go first).
    fn insert(&mut self, entry: Entry, now: OffsetDateTime, max: usize) {
        self.entries.retain(|e| e.fresh(now));
        if !entry.fresh(now) {
            return;
        }
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(existing) if existing.expires_on >= entry.expires_on => {}
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
        if self.entries.len() > max {
            self.entries
                .sort_unstable_by_key(|e| std::cmp::Reverse(e.expires_on));
            self.entries.truncate(max);
        }
    }
}

/// The persistent cache of one credential.
pub(crate) struct PersistentCache {
    store: Arc<Store>,
    /// The claims a CAE request carries when the caller passed none: such a request is keyed
    /// with `cae = true`; any other claims bypass the file.
    cae_claims: Option<String>,
}

impl fmt::Debug for PersistentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentCache")
            .field("path", &self.store.path)
            .field("max_entries", &self.store.max_entries)
            .finish_non_exhaustive()
    }
}

struct Store {
    path: PathBuf,
    lock_path: PathBuf,
    keys: Keys,
    authority: String,
    client_id: String,
    max_entries: usize,
    clock: Arc<dyn Clock>,
}

impl PersistentCache {
    /// The cache for a credential, or `None` (with a debug event) when it has no location.
    pub(crate) fn new(
        options: &PersistentCacheOptions,
        agent_temp_directory: Option<&str>,
        system_access_token: &str,
        client_id: &str,
        authority: &str,
        clock: Arc<dyn Clock>,
    ) -> Option<Self> {
        let Some(path) = resolve_path(options, agent_temp_directory) else {
            tracing::debug!(
                target: TARGET,
                "persistent token cache: off, as no path was given and AGENT_TEMPDIRECTORY is not set"
            );
            return None;
        };
        let mut lock_name = path.file_name().unwrap_or_default().to_owned();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        Some(Self {
            store: Arc::new(Store {
                path,
                lock_path,
                keys: Keys::derive(system_access_token),
                authority: authority.to_owned(),
                client_id: client_id.to_owned(),
                max_entries: options.max_entries.max(1),
                clock,
            }),
            cae_claims: claims::request_claims(None, true).ok().flatten(),
        })
    }

    /// A token for `request` from the file, else from `network` (then written to the file).
    ///
    /// The in-memory cache calls this only when it has no usable token, so the file is never
    /// touched on a hit. Requests with claims go to the network and leave the file alone. A file
    /// that cannot be used costs a debug event, never an error.
    pub(crate) async fn through(
        &self,
        request: &TokenRequest,
        network: impl Future<Output = azure_core::Result<AccessTokenInfo>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        let Some(key) = self.key_of(request) else {
            return network.await;
        };
        let store = self.store.clone();
        let lookup_key = key.clone();
        if let Some(Some(info)) = blocking(move || store.load(&lookup_key)).await {
            return Ok(info);
        }
        let info = network.await?;
        let entry = Entry::new(key, &info);
        let store = self.store.clone();
        // Awaited, so that a short-lived process does not exit before its token is saved; the
        // write continues even if this future is dropped.
        blocking(move || store.save(entry)).await;
        Ok(info)
    }

    fn key_of(&self, request: &TokenRequest) -> Option<EntryKey> {
        let cae = match request.claims.as_deref() {
            None => false,
            Some(claims) if Some(claims) == self.cae_claims.as_deref() => true,
            Some(_) => return None,
        };
        Some(EntryKey {
            authority: self.store.authority.clone(),
            client: self.store.client_id.clone(),
            tenant: request.tenant.clone(),
            scopes: request.scopes.clone(),
            cae,
        })
    }
}

/// Runs blocking file work off the async threads; `None` without a Tokio runtime or when the
/// work panicked (the file is then simply not used).
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    runtime.spawn_blocking(work).await.ok()
}

impl Store {
    /// The fresh token for `key` in the file, if any.
    fn load(&self, key: &EntryKey) -> Option<AccessTokenInfo> {
        let path = self.path.display();
        tracing::debug!(target: TARGET, "persistent token cache: reading {path}");
        match self.read_locked() {
            Ok(None) => {
                tracing::debug!(target: TARGET, "persistent token cache: miss, no file at {path}");
                None
            }
            Ok(Some(bytes)) => {
                let contents = match self.keys.open(&bytes).and_then(|p| Contents::decode(&p)) {
                    Ok(contents) => contents,
                    Err(why) => {
                        tracing::debug!(target: TARGET, "persistent token cache: ignoring {path}: {why}");
                        return None;
                    }
                };
                let now = self.clock.now();
                let found = contents
                    .entries
                    .iter()
                    .find(|e| e.key == *key && e.fresh(now))
                    .and_then(Entry::info);
                match found {
                    Some(_) => {
                        tracing::debug!(target: TARGET, "persistent token cache: hit in {path}")
                    }
                    None => {
                        tracing::debug!(target: TARGET, "persistent token cache: miss, no fresh token for this key in {path}")
                    }
                }
                found
            }
            Err(why) => {
                tracing::debug!(target: TARGET, "persistent token cache: not reading {path}: {why}");
                None
            }
        }
    }

    /// Adds `entry` to the file (read, merge, replace atomically, under the exclusive lock).
    fn save(&self, entry: Entry) {
        let path = self.path.display();
        match self.write_locked(entry) {
            Ok(()) => {
                tracing::debug!(target: TARGET, "persistent token cache: saved a token to {path}")
            }
            Err(why) => {
                tracing::debug!(target: TARGET, "persistent token cache: not writing {path}: {why}")
            }
        }
    }

    /// The folder of the file; `.` for a bare file name.
    fn folder(&self) -> Result<&Path, String> {
        match self.path.parent() {
            Some(folder) if folder.as_os_str().is_empty() => Ok(Path::new(".")),
            Some(folder) => Ok(folder),
            None => Err("the path names no file".to_owned()),
        }
    }

    /// The file's bytes under a shared lock; `None` when there is no file.
    fn read_locked(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let folder = self.folder()?;
        match fs::metadata(folder) {
            Ok(meta) => check_private(&meta, "folder", true)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("its folder cannot be read: {e}")),
        }
        match fs::symlink_metadata(&self.path) {
            Ok(meta) => check_private(&meta, "file", false)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("it cannot be read: {e}")),
        }
        with_lock(&self.lock_path, false, || self.read_file())?
    }

    /// The file's bytes (the caller holds a lock); `None` when there is no file.
    fn read_file(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("it cannot be opened: {e}")),
        };
        // Checked again on the open file: the path may have been replaced since.
        let meta = file
            .metadata()
            .map_err(|e| format!("it cannot be inspected: {e}"))?;
        check_private(&meta, "file", false)?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("it cannot be read: {e}"))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(Unreadable::TooLarge.to_string());
        }
        Ok(Some(bytes))
    }

    fn write_locked(&self, entry: Entry) -> Result<(), String> {
        let folder = self.folder()?;
        create_private_folder(folder)?;
        let meta = fs::metadata(folder).map_err(|e| format!("its folder cannot be read: {e}"))?;
        check_private(&meta, "folder", true)?;
        match fs::symlink_metadata(&self.path) {
            Ok(meta) => check_private(&meta, "file", false)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("it cannot be inspected: {e}")),
        }
        with_lock(&self.lock_path, true, || {
            let mut contents = match self.read_file() {
                Ok(Some(bytes)) => {
                    match self.keys.open(&bytes).and_then(|p| Contents::decode(&p)) {
                        Ok(contents) => contents,
                        Err(why) => {
                            tracing::debug!(
                                target: TARGET,
                                "persistent token cache: replacing {}: {why}",
                                self.path.display()
                            );
                            Contents::default()
                        }
                    }
                }
                Ok(None) => Contents::default(),
                Err(why) => return Err(why),
            };
            contents.insert(entry, self.clock.now(), self.max_entries);
            let sealed = self.keys.seal(&contents.encode()?)?;
            replace(folder, &self.path, &sealed)
        })?
    }
}

/// Creates `folder` (and missing parents) with mode 0700 where the platform has modes.
fn create_private_folder(folder: &Path) -> Result<(), String> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(folder)
        .map_err(|e| format!("its folder cannot be created: {e}"))
}

/// Refuses a file or folder that other users may read or write (Unix), or a file that is not a
/// regular file (a symbolic link could point anywhere).
fn check_private(meta: &Metadata, what: &str, folder: bool) -> Result<(), String> {
    if folder && !meta.is_dir() {
        return Err(format!("its {what} is not a folder"));
    }
    if !folder && !meta.file_type().is_file() {
        return Err(format!("the {what} is not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        let (subject, wanted) = if folder {
            (format!("its {what}"), "0700")
        } else {
            (format!("the {what}"), "0600")
        };
        if mode & 0o077 != 0 {
            return Err(format!(
                "refused: {subject} has mode {mode:04o}, open to other users; it must be {wanted}"
            ));
        }
    }
    Ok(())
}

/// Runs `work` while holding the lock file's shared (`exclusive = false`) or exclusive lock,
/// waiting at most [`LOCK_WAIT`] for it.
fn with_lock<R>(lock_path: &Path, exclusive: bool, work: impl FnOnce() -> R) -> Result<R, String> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(lock_path)
        .map_err(|e| format!("the lock file cannot be opened: {e}"))?;
    let mut lock = RwLock::new(file);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut work = Some(work);
    loop {
        // The guard lives only inside this block, so the loop can try again after a miss.
        let attempt = if exclusive {
            lock.try_write().map(|_guard| work.take().map(|w| w()))
        } else {
            lock.try_read().map(|_guard| work.take().map(|w| w()))
        };
        match attempt {
            Ok(Some(result)) => return Ok(result),
            // Cannot happen: the loop returns as soon as the work has run once.
            Ok(None) => return Err("the locked work ran twice".to_owned()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(format!(
                    "another process held the lock for over {} s",
                    LOCK_WAIT.as_secs()
                ));
            }
            Err(e) => return Err(format!("the lock file cannot be locked: {e}")),
        }
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file (mode 0600) in the same folder,
/// fsync, rename over, fsync of the folder. The temporary file is removed on failure.
fn replace(folder: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix)
        .map_err(|e| format!("no random name for a temporary file: {e}"))?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        u64::from_le_bytes(suffix)
    ));
    let temp = path.with_file_name(name);
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(format!("it cannot be replaced: {e}"));
    }
    // The rename is durable only once the folder is synced. Folders cannot be opened as files on
    // every platform; the file itself is complete either way.
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    fn key(scope: &str) -> EntryKey {
        EntryKey {
            authority: "https://login.microsoftonline.com/".into(),
            client: "client".into(),
            tenant: "tenant".into(),
            scopes: vec![scope.into()],
            cae: false,
        }
    }

    fn entry(scope: &str, expires_in: i64) -> Entry {
        Entry::new(
            key(scope),
            &AccessTokenInfo {
                token: Secret::new(format!("token-{scope}")),
                expires_on: at(expires_in),
                refresh_on: None,
                token_type: "Bearer".into(),
            },
        )
    }

    #[test]
    fn key_derivation_is_deterministic_and_bound_to_the_token() {
        let a = Keys::derive("system-token-a");
        let again = Keys::derive("system-token-a");
        let b = Keys::derive("system-token-b");
        assert_eq!(*a.key, *again.key);
        assert_eq!(a.id, again.id);
        assert_ne!(*a.key, *b.key);
        assert_ne!(a.id, b.id);
        // The key id is a separate output: it does not reveal the key.
        assert_ne!(&a.key[..KEY_ID_LEN], &a.id[..]);
    }

    #[test]
    fn seal_and_open_round_trip_with_a_fresh_nonce() {
        let keys = Keys::derive("system-token");
        let one = keys.seal(b"plaintext").unwrap();
        let two = keys.seal(b"plaintext").unwrap();
        assert_ne!(one, two, "a random nonce per seal");
        assert_eq!(&one[..MAGIC.len()], MAGIC);
        assert_eq!(one[MAGIC.len()], VERSION);
        assert_eq!(
            one.len(),
            HEADER_LEN + NONCE_LEN + b"plaintext".len() + TAG_LEN
        );
        assert_eq!(keys.open(&one).unwrap().as_slice(), b"plaintext");
        assert_eq!(keys.open(&two).unwrap().as_slice(), b"plaintext");
    }

    #[test]
    fn unreadable_files_say_why() {
        let keys = Keys::derive("system-token");
        let sealed = keys.seal(b"{\"entries\":[]}").unwrap();
        let flip = |i: usize| {
            let mut bytes = sealed.clone();
            bytes[i] ^= 1;
            bytes
        };
        let cases: Vec<(Vec<u8>, Unreadable)> = vec![
            (Vec::new(), Unreadable::Truncated),
            (MAGIC[..3].to_vec(), Unreadable::Truncated),
            (b"hello world, not a cache".to_vec(), Unreadable::Garbage),
            (sealed[..HEADER_LEN + 5].to_vec(), Unreadable::Truncated),
            (sealed[..sealed.len() - 1].to_vec(), Unreadable::Tampered),
            (flip(MAGIC.len()), Unreadable::Version(VERSION ^ 1)),
            (flip(MAGIC.len() + 1), Unreadable::OtherKey),
            (flip(HEADER_LEN), Unreadable::Tampered),
            (flip(sealed.len() - 1), Unreadable::Tampered),
            (flip(HEADER_LEN + NONCE_LEN + 2), Unreadable::Tampered),
            (
                Keys::derive("other").seal(b"{}").unwrap(),
                Unreadable::OtherKey,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                keys.open(&bytes).err(),
                Some(expected),
                "{} bytes",
                bytes.len()
            );
        }
        let not_json = keys.seal(b"not json").unwrap();
        let opened = keys.open(&not_json).unwrap();
        assert!(matches!(
            Contents::decode(&opened),
            Err(Unreadable::Contents)
        ));
    }

    #[test]
    fn contents_round_trip_and_hold_no_clear_token() {
        let mut contents = Contents::default();
        contents.insert(entry("a", 3600), at(0), 8);
        let plaintext = contents.encode().unwrap();
        let decoded = Contents::decode(&plaintext).unwrap();
        assert_eq!(decoded.entries.len(), 1);
        let info = decoded.entries[0].info().unwrap();
        assert_eq!(info.token.secret(), "token-a");
        assert_eq!(info.expires_on, at(3600));
        assert_eq!(info.token_type, "Bearer");
        let sealed = Keys::derive("t").seal(&plaintext).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"token-a"));
    }

    #[test]
    fn insert_drops_expired_keeps_the_longest_and_caps() {
        let now = at(0);
        let mut contents = Contents::default();
        contents.insert(entry("expired", -10), at(-3600), 8);
        contents.insert(entry("a", 3600), now, 8);
        assert_eq!(contents.entries.len(), 1, "the expired entry went");
        contents.insert(entry("short", 300), now, 8);
        assert_eq!(
            contents.entries.len(),
            1,
            "a token too short to serve is not kept"
        );
        // A shorter-lived token for the same key does not replace a longer-lived one.
        contents.insert(entry("a", 1800), now, 8);
        assert_eq!(contents.entries[0].expires_on, at(3600).unix_timestamp());
        contents.insert(entry("a", 7200), now, 8);
        assert_eq!(contents.entries.len(), 1);
        assert_eq!(contents.entries[0].expires_on, at(7200).unix_timestamp());
        for (i, scope) in ["b", "c", "d"].iter().enumerate() {
            contents.insert(entry(scope, 600 * (i as i64 + 1)), now, 3);
        }
        let mut kept: Vec<&str> = contents
            .entries
            .iter()
            .map(|e| e.key.scopes[0].as_str())
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, ["a", "c", "d"], "the soonest to expire went");
    }

    #[test]
    fn only_fresh_tokens_are_served() {
        let e = entry("a", 3600);
        // A one-hour token is refreshed 6 minutes before expiry; the file serves it until two
        // minutes before that.
        assert!(e.fresh(at(0)));
        assert!(e.fresh(at(3600 - 8 * 60 - 1)));
        assert!(!e.fresh(at(3600 - 8 * 60)));
        assert!(!e.fresh(at(3600)));
        // Entra's refresh_on (or half-life for long tokens) counts too.
        let mut long = entry("b", 86_400);
        long.refresh_on = Some(at(43_200).unix_timestamp());
        assert!(long.fresh(at(43_200 - 121)));
        assert!(!long.fresh(at(43_200 - 120)));
    }

    #[test]
    fn keys_follow_the_in_memory_cache_and_claims_bypass() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at(0)));
        let cache = PersistentCache::new(
            &PersistentCacheOptions::default(),
            Some("/agent/_temp"),
            "system-token",
            "client",
            "https://login.microsoftonline.com/",
            clock,
        )
        .unwrap();
        assert_eq!(
            cache.store.path,
            Path::new("/agent/_temp/azure-pipelines-credential/tokens.bin")
        );
        assert_eq!(
            cache.store.lock_path,
            Path::new("/agent/_temp/azure-pipelines-credential/tokens.bin.lock")
        );
        let request = |claims: Option<String>| TokenRequest {
            tenant: "tenant".into(),
            scopes: vec!["a".into(), "b".into()],
            claims,
        };
        let plain = cache.key_of(&request(None)).unwrap();
        assert_eq!(
            (
                plain.tenant.as_str(),
                plain.scopes.len(),
                plain.cae,
                plain.client.as_str()
            ),
            ("tenant", 2, false, "client")
        );
        let cae = cache
            .key_of(&request(claims::request_claims(None, true).unwrap()))
            .unwrap();
        assert!(cae.cae);
        assert_ne!(plain, cae);
        let challenge =
            claims::request_claims(Some(r#"{"access_token":{"nbf":{"essential":true}}}"#), true)
                .unwrap();
        assert!(
            cache.key_of(&request(challenge)).is_none(),
            "claims bypass the file"
        );
    }

    #[test]
    fn location() {
        let defaults = PersistentCacheOptions::default();
        assert_eq!(defaults.max_entries, 64);
        assert_eq!(resolve_path(&defaults, None), None);
        assert_eq!(resolve_path(&defaults, Some("  ")), None);
        assert_eq!(
            resolve_path(&defaults, Some("/a/_temp")),
            Some(PathBuf::from(
                "/a/_temp/azure-pipelines-credential/tokens.bin"
            ))
        );
        let given = PersistentCacheOptions {
            path: Some("/x/cache.bin".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve_path(&given, Some("/a/_temp")),
            Some(PathBuf::from("/x/cache.bin"))
        );
    }
}
