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
//! # Modules
//!
//! - `seal`: the key derived from the System.AccessToken, and the sealed envelope.
//! - `format`: the entries inside, and which of them may be served.
//! - `file`: private permissions, locking and atomic replacement on disk.
//! - `adapter`: where the file lives, and what the credential calls on a miss.
//! - here: the options.
//!
//! Anything unreadable (a wrong key, a truncated or tampered file, another version, garbage) is
//! a miss with a `tracing` debug event, never an error: authentication goes on over the network.

#[cfg(all(feature = "persistent-cache", unix))]
mod adapter;
#[cfg(all(feature = "persistent-cache", unix))]
mod file;
#[cfg(all(feature = "persistent-cache", unix))]
mod format;
#[cfg(all(feature = "persistent-cache", unix))]
mod seal;

use std::path::PathBuf;

const DEFAULT_MAX_ENTRIES: usize = 64;

/// Options of the opt-in persistent token cache, shared by the processes of one pipeline job;
/// see [`AzurePipelinesCredentialOptions::persistent_cache`](crate::AzurePipelinesCredentialOptions::persistent_cache).
///
/// The cache needs the crate's `persistent-cache` feature, and Unix: its file checks (owner,
/// mode, no symbolic links) exist only there so far. Elsewhere, or without the feature, a
/// credential given these options refuses to build, with an error that says why.
///
/// ```
/// use azure_pipelines_credential::{AzurePipelinesCredentialOptions, PersistentCacheOptions};
///
/// let options = AzurePipelinesCredentialOptions {
///     // The file goes to $AGENT_TEMPDIRECTORY/azure-pipelines-credential/tokens.bin.
///     persistent_cache: Some(PersistentCacheOptions::default()),
///     ..Default::default()
/// };
/// assert!(options.persistent_cache.is_some());
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

#[cfg(all(feature = "persistent-cache", unix))]
pub(crate) use adapter::{AGENT_TEMPDIRECTORY_ENV, PersistentCache};
