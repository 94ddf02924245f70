//! Where the file lives, and what the credential calls on a miss: the file first, then the
//! network, then the file again.

use super::{
    PersistentCacheOptions,
    file::CacheFile,
    format::{Contents, Entry, EntryKey, Owner},
    seal::Keys,
};
use crate::{AccessTokenInfo, clock::Clock, error::Failure, request::Key};
use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
};

const TARGET: &str = "azure_pipelines_credential";
/// The agent's per-job temp folder, wiped after the job.
pub(crate) const AGENT_TEMPDIRECTORY_ENV: &str = "AGENT_TEMPDIRECTORY";
/// The folder, under `AGENT_TEMPDIRECTORY`, of the default cache file.
const DEFAULT_FOLDER: &str = "azure-pipelines-credential";
const DEFAULT_FILE: &str = "tokens.bin";

/// Where the cache file lives: the given path, else the default under `AGENT_TEMPDIRECTORY`.
fn resolve_path(
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

/// The persistent cache of one credential.
pub(crate) struct PersistentCache {
    store: Arc<Store>,
}

impl fmt::Debug for PersistentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentCache")
            .field("path", &self.store.file.path())
            .field("max_entries", &self.store.max_entries)
            .finish_non_exhaustive()
    }
}

struct Store {
    file: CacheFile,
    keys: Keys,
    owner: Owner,
    max_entries: usize,
    clock: Clock,
}

impl PersistentCache {
    /// The cache for a credential, or `None` (with a debug event) when it has no location.
    pub(crate) fn new(
        options: &PersistentCacheOptions,
        agent_temp_directory: Option<&str>,
        system_access_token: &str,
        client_id: &str,
        authority: &str,
        clock: Clock,
    ) -> Option<Self> {
        let Some(path) = resolve_path(options, agent_temp_directory) else {
            tracing::debug!(
                target: TARGET,
                "persistent token cache: off, as no path was given and AGENT_TEMPDIRECTORY is not set"
            );
            return None;
        };
        Some(Self {
            store: Arc::new(Store {
                file: CacheFile::new(path),
                keys: Keys::derive(system_access_token),
                owner: Owner {
                    authority: authority.into(),
                    client: client_id.into(),
                },
                max_entries: options.max_entries.max(1),
                clock,
            }),
        })
    }

    /// A token for `key` from the file, else from `network` (then written to the file).
    ///
    /// The in-memory cache calls this only when it has no usable token, so the file is never
    /// touched on a hit; requests with claims do not come here. A file that cannot be used
    /// costs a debug event, never an error.
    pub(crate) async fn through(
        &self,
        key: &Arc<Key>,
        network: impl Future<Output = Result<AccessTokenInfo, Arc<Failure>>>,
    ) -> Result<AccessTokenInfo, Arc<Failure>> {
        let (store, lookup) = (self.store.clone(), key.clone());
        if let Some(Some(info)) = blocking(move || store.load(&lookup)).await {
            return Ok(info);
        }
        let info = network.await?;
        let entry = Entry::new(
            EntryKey {
                owner: self.store.owner.clone(),
                request: key.clone(),
            },
            &info,
        );
        let store = self.store.clone();
        // Awaited, so that a short-lived process does not exit before its token is saved;
        // the write continues even if this future is dropped.
        blocking(move || store.save(entry)).await;
        Ok(info)
    }

    /// The fresh token for `key` in the file, read in the calling thread.
    pub(crate) fn load(&self, key: &Key) -> Option<AccessTokenInfo> {
        self.store.load(key)
    }

    #[cfg(test)]
    pub(super) fn file(&self) -> &CacheFile {
        &self.store.file
    }
}

/// Runs blocking file work on a thread of its own, whatever async runtime is in use; `None`
/// when no thread could be started or the work panicked (the file is then simply not used).
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (sender, receiver) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("azure-pipelines-credential-cache-file".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .ok()?;
    receiver.await.ok()
}

impl Store {
    /// The fresh token for `key` in the file, if any.
    fn load(&self, key: &Key) -> Option<AccessTokenInfo> {
        let path = self.file.path().display();
        tracing::debug!(target: TARGET, "persistent token cache: reading {path}");
        match self.file.read() {
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
                let found = contents.find(&self.owner, key, self.clock.now());
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
        let path = self.file.path().display();
        let written = self.file.update(|current| {
            let mut contents = match current {
                Some(bytes) => match self.keys.open(&bytes).and_then(|p| Contents::decode(&p)) {
                    Ok(contents) => contents,
                    Err(why) => {
                        tracing::debug!(target: TARGET, "persistent token cache: replacing {path}: {why}");
                        Contents::default()
                    }
                },
                None => Contents::default(),
            };
            contents.insert(entry, self.clock.now(), self.max_entries);
            self.keys.seal(&contents.encode()?)
        });
        match written {
            Ok(()) => {
                tracing::debug!(target: TARGET, "persistent token cache: saved a token to {path}")
            }
            Err(why) => {
                tracing::debug!(target: TARGET, "persistent token cache: not writing {path}: {why}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_location_and_its_lock_file() {
        let cache = PersistentCache::new(
            &PersistentCacheOptions::default(),
            Some("/agent/_temp"),
            "system-token",
            "client",
            "https://login.microsoftonline.com/",
            Clock::default(),
        )
        .unwrap();
        assert_eq!(
            cache.file().path(),
            Path::new("/agent/_temp/azure-pipelines-credential/tokens.bin")
        );
        assert_eq!(
            cache.file().lock_path(),
            Path::new("/agent/_temp/azure-pipelines-credential/tokens.bin.lock")
        );
        assert!(
            PersistentCache::new(
                &PersistentCacheOptions::default(),
                None,
                "system-token",
                "client",
                "https://login.microsoftonline.com/",
                Clock::default(),
            )
            .is_none()
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
