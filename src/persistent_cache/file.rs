//! The cache file on disk: private permissions, locking, atomic replacement.
//!
//! Readers take a shared lock and writers an exclusive one on a lock file beside the cache file
//! (`fd-lock`), waiting at most [`LOCK_WAIT`]. A writer reads the current bytes, computes the new
//! ones, writes a temporary file in the same folder, fsyncs it, renames it over the cache file
//! and fsyncs the folder: a reader sees the old file or the new one, never a mix, and a crash
//! loses at most the entry being written.
//!
//! What is refused, neither read nor written: a file or folder owned by another user, or that
//! other users may read or write, and a cache or lock file that is not a regular file. The file
//! is opened with `O_NOFOLLOW`, and its owner, mode and type are checked on the open descriptor
//! (`fstat`), so nothing can be swapped in between the check and the read.

use fd_lock::RwLock;
use std::{
    fs::{self, File, Metadata, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use zeroize::Zeroizing;

/// Files larger than this are not read: the cache holds at most a few hundred kilobytes, so a
/// larger file is garbage, and reading it whole would waste memory.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// How long a process waits for another one's lock before going without the file.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(5);

/// The cache file and its lock file, `<file>.lock`.
#[derive(Debug)]
pub(super) struct CacheFile {
    path: PathBuf,
    lock_path: PathBuf,
}

impl CacheFile {
    pub(super) fn new(path: PathBuf) -> Self {
        let mut lock_name = path.file_name().unwrap_or_default().to_owned();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        Self { path, lock_path }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub(super) fn lock_path(&self) -> &Path {
        &self.lock_path
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
    pub(super) fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let folder = self.folder()?;
        match fs::metadata(folder) {
            Ok(meta) => check_private(&meta, "folder", true)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("its folder cannot be read: {e}")),
        }
        if !self.path.exists() {
            return Ok(None);
        }
        with_lock(&self.lock_path, false, || self.read_unlocked())?
    }

    /// Replaces the file's bytes with `update(current bytes)` under the exclusive lock.
    pub(super) fn update(
        &self,
        update: impl FnOnce(Option<Zeroizing<Vec<u8>>>) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        let folder = self.folder()?;
        create_private_folder(folder)?;
        let meta = fs::metadata(folder).map_err(|e| format!("its folder cannot be read: {e}"))?;
        check_private(&meta, "folder", true)?;
        with_lock(&self.lock_path, true, || {
            let bytes = update(self.read_unlocked()?)?;
            replace(folder, &self.path, &bytes)
        })?
    }

    /// The file's bytes (the caller holds a lock); `None` when there is no file.
    fn read_unlocked(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        let file = match open_nofollow(OpenOptions::new().read(true), &self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("it cannot be opened: {e}")),
        };
        // Checked on the open descriptor, not the path, which may be replaced at any time.
        let meta = file
            .metadata()
            .map_err(|e| format!("it cannot be inspected: {e}"))?;
        check_private(&meta, "file", false)?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("it cannot be read: {e}"))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("it is larger than {MAX_FILE_BYTES} bytes"));
        }
        Ok(Some(bytes))
    }
}

/// Opens `path` with `options`, failing (ELOOP) when its last component is a symbolic link.
///
/// Without blocking: opening a named pipe put in the file's place would otherwise wait for a
/// writer forever; it is then refused as "not a regular file" by the check on the descriptor.
/// (On a regular file `O_NONBLOCK` changes nothing.)
fn open_nofollow(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    options
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32);
    options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            io::Error::new(e.kind(), "it is a symbolic link")
        } else {
            e
        }
    })
}

/// Creates `folder` (and missing parents) with mode 0700.
fn create_private_folder(folder: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| format!("its folder cannot be created: {e}"))
}

/// Refuses what [`refusal`] refuses, for this process's effective user.
fn check_private(meta: &Metadata, what: &str, folder: bool) -> Result<(), String> {
    let kind = if meta.is_dir() {
        Kind::Folder
    } else if meta.file_type().is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    let me = rustix::process::geteuid().as_raw();
    match refusal(kind, meta.uid(), meta.mode() & 0o777, me, what, folder) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Folder,
    File,
    Other,
}

/// Why a file (or, with `folder`, a folder) of `kind`, owned by `owner` with permission bits
/// `mode`, may not be used by user `me`: not the kind expected (a symbolic link or device could
/// point anywhere), another user's, or open to other users.
fn refusal(kind: Kind, owner: u32, mode: u32, me: u32, what: &str, folder: bool) -> Option<String> {
    let (subject, wanted) = if folder {
        (format!("its {what}"), "0700")
    } else {
        (format!("the {what}"), "0600")
    };
    if folder && kind != Kind::Folder {
        return Some(format!("{subject} is not a folder"));
    }
    if !folder && kind != Kind::File {
        return Some(format!("{subject} is not a regular file"));
    }
    if owner != me {
        return Some(format!(
            "refused: {subject} is owned by user {owner}, not by this process's user {me}"
        ));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "refused: {subject} has mode {mode:04o}, open to other users; it must be {wanted}"
        ));
    }
    None
}

/// Runs `work` while holding the lock file's shared (`exclusive = false`) or exclusive lock,
/// waiting at most [`LOCK_WAIT`] for it.
fn with_lock<R>(lock_path: &Path, exclusive: bool, work: impl FnOnce() -> R) -> Result<R, String> {
    let file = open_nofollow(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
        lock_path,
    )
    .map_err(|e| format!("the lock file cannot be opened: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("the lock file cannot be inspected: {e}"))?;
    check_private(&meta, "lock file", false)?;
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
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
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

    #[test]
    fn who_and_what_may_be_used() {
        const ME: u32 = 1000;
        // (kind, owner, mode, folder, refused because)
        let cases: &[(Kind, u32, u32, bool, Option<&str>)] = &[
            (Kind::File, ME, 0o600, false, None),
            (Kind::File, ME, 0o400, false, None),
            (Kind::Folder, ME, 0o700, true, None),
            (
                Kind::File,
                ME,
                0o640,
                false,
                Some("mode 0640, open to other users"),
            ),
            (Kind::File, ME, 0o606, false, Some("mode 0606")),
            (Kind::Folder, ME, 0o777, true, Some("mode 0777")),
            (Kind::Folder, ME, 0o750, true, Some("it must be 0700")),
            (
                Kind::File,
                0,
                0o600,
                false,
                Some("owned by user 0, not by this process's user 1000"),
            ),
            (
                Kind::Folder,
                1001,
                0o700,
                true,
                Some("its folder is owned by user 1001"),
            ),
            (Kind::Other, ME, 0o600, false, Some("not a regular file")),
            (Kind::Folder, ME, 0o700, false, Some("not a regular file")),
            (Kind::File, ME, 0o700, true, Some("not a folder")),
        ];
        for (kind, owner, mode, folder, expected) in cases {
            let what = if *folder { "folder" } else { "file" };
            let got = refusal(*kind, *owner, *mode, ME, what, *folder);
            match (got, expected) {
                (None, None) => {}
                (Some(why), Some(needle)) => assert!(why.contains(needle), "{why}"),
                (got, _) => panic!("{kind:?} {owner} {mode:o} {folder}: {got:?}"),
            }
        }
    }
}
