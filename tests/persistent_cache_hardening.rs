//! The persistent token cache's file checks: a cache or lock file that is a symbolic link, a
//! folder, file or lock file owned by another user, a file swapped while the reader waits for
//! the lock, and a cache path that is not a regular file.
//!
//! Each refusal is a miss with a debug event naming the file and the reason, never an error:
//! the credential gets its token over the network (the emulator counts the requests), and what
//! was refused is left untouched: nothing is read or written through a link, nothing is created
//! in another user's folder.
#![cfg(all(feature = "persistent-cache", unix))]

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::Emulator;
use common::{
    STORAGE,
    emulator::counts,
    persistent::{credential, events},
};
use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    time::Duration,
};

const FILE: &str = "tokens.bin";
/// The user that owns nothing here (`nobody` on most systems).
const OTHER_USER: u32 = 65534;

/// A fresh, empty folder for one test, mode 0700 (removed first if a previous run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apc-hardening-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch folder");
    chmod(&dir, 0o700);
    dir
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A private file (0600) holding `bytes`.
fn private_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("write");
    chmod(path, 0o600);
}

/// The captured lines that name `file`, joined.
fn log_of(file: &Path) -> String {
    events().lines_with(&file.display().to_string()).join("\n")
}

#[track_caller]
fn assert_logged(file: &Path, needles: &[&str]) {
    let log = log_of(file);
    for needle in needles {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
}

/// A token for STORAGE: never an error, whatever the file.
async fn token(emulator: &Emulator, file: &Path) -> String {
    credential(emulator, file)
        .get_token(&[STORAGE], None)
        .await
        .expect("a refused file is a miss, never an error")
        .token
        .secret()
        .to_owned()
}

/// The user this process runs as: the owner of a file it creates.
fn me(dir: &Path) -> u32 {
    let probe = dir.join("whoami");
    fs::write(&probe, b"").unwrap();
    let uid = fs::metadata(&probe).unwrap().uid();
    fs::remove_file(probe).unwrap();
    uid
}

#[tokio::test]
async fn a_cache_file_that_is_a_symbolic_link_is_neither_read_nor_written_through() {
    let emulator = Emulator::start().await.unwrap();
    let dir = scratch("file-link");
    let folder = dir.join("cache");
    fs::create_dir(&folder).unwrap();
    chmod(&folder, 0o700);
    let file = folder.join(FILE);

    // A link to a private file of this user, which would pass every check on its own.
    let target = dir.join("precious.bin");
    private_file(&target, b"not a token cache");
    symlink(&target, &file).unwrap();
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (1, 1), "over the network");
    assert_logged(
        &file,
        &[
            "not reading",
            "not writing",
            "it cannot be opened: it is a symbolic link",
        ],
    );
    assert_eq!(fs::read(&target).unwrap(), b"not a token cache");
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
    assert!(fs::symlink_metadata(&file).unwrap().is_symlink());
    // Never served from the link: the next process goes to the network too.
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator).1, 2);

    // A link to nowhere: nothing is created at its target.
    let ghost = dir.join("ghost.bin");
    fs::remove_file(&file).unwrap();
    symlink(&ghost, &file).unwrap();
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator).1, 3);
    assert!(!ghost.exists(), "a file was created through the link");
    assert!(fs::symlink_metadata(&file).unwrap().is_symlink());
    let _ = fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lock_file_that_is_a_symbolic_link_is_refused() {
    let emulator = Emulator::start().await.unwrap();
    let dir = scratch("lock-link");
    let file = dir.join("cache").join(FILE);
    let lock = dir.join("cache").join(format!("{FILE}.lock"));
    // A valid cache file, written by an earlier process.
    let first = token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (1, 1));
    let cached = fs::read(&file).unwrap();

    let target = dir.join("precious.lock");
    private_file(&target, b"not a lock file");
    fs::remove_file(&lock).unwrap();
    symlink(&target, &lock).unwrap();
    let second = token(&emulator, &file).await;
    assert_ne!(
        second, first,
        "not served from the file behind a linked lock"
    );
    assert_eq!(counts(&emulator), (2, 2));
    assert_logged(
        &file,
        &[
            "not reading",
            "not writing",
            "the lock file cannot be opened: it is a symbolic link",
        ],
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        cached,
        "the cache file was left alone"
    );
    assert_eq!(fs::read(&target).unwrap(), b"not a lock file");

    // A link to nowhere: no lock file is created at its target.
    let ghost = dir.join("ghost.lock");
    fs::remove_file(&lock).unwrap();
    symlink(&ghost, &lock).unwrap();
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator).1, 3);
    assert!(!ghost.exists(), "a lock file was created through the link");
    let _ = fs::remove_dir_all(&dir);
}

/// Only root can give a file to another user: CI runs as root; elsewhere this says why it
/// skips.
#[tokio::test]
async fn what_another_user_owns_is_refused() {
    let dir = scratch("other-user");
    let me = me(&dir);
    if me != 0 {
        println!(
            "skipped: only root can give files to another user (this process runs as user {me})"
        );
        return;
    }
    let chown = |path: &Path, uid: u32| std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    let emulator = Emulator::start().await.unwrap();
    let folder = dir.join("cache");
    let file = folder.join(FILE);
    let lock = folder.join(format!("{FILE}.lock"));
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (1, 1));
    let cached = fs::read(&file).unwrap();

    // The folder (0700, as it should be) belongs to another user.
    chown(&folder, OTHER_USER);
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (2, 2));
    assert_logged(
        &file,
        &[
            "not reading",
            "not writing",
            &format!(
                "refused: its folder is owned by user {OTHER_USER}, not by this process's user 0"
            ),
        ],
    );
    assert_eq!(fs::read(&file).unwrap(), cached);
    chown(&folder, me);

    // The file (0600) belongs to another user: its owner is checked on the open file.
    chown(&file, OTHER_USER);
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (3, 3));
    assert_logged(
        &file,
        &[&format!("refused: the file is owned by user {OTHER_USER}")],
    );
    assert_eq!(fs::read(&file).unwrap(), cached);
    assert_eq!(fs::metadata(&file).unwrap().uid(), OTHER_USER);
    chown(&file, me);

    // The lock file belongs to another user.
    chown(&lock, OTHER_USER);
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (4, 4));
    assert_logged(
        &file,
        &[&format!(
            "refused: the lock file is owned by user {OTHER_USER}"
        )],
    );
    assert_eq!(fs::read(&file).unwrap(), cached);
    chown(&lock, me);

    // An empty folder of another user: nothing is created in it.
    let theirs = dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    chown(&theirs, OTHER_USER);
    let file = theirs.join(FILE);
    token(&emulator, &file).await;
    assert_eq!(counts(&emulator), (5, 5));
    assert_logged(&file, &["not writing", "its folder is owned by user 65534"]);
    assert_eq!(
        fs::read_dir(&theirs).unwrap().count(),
        0,
        "something was created"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The mode and owner are checked on the file as it is read, under the lock: a file swapped in
/// while the reader waited for the lock (the same valid bytes, but open to other users) is
/// refused, not served.
#[tokio::test]
async fn a_file_swapped_while_the_reader_waits_for_the_lock_is_checked_as_it_is_read() {
    let emulator = Emulator::start().await.unwrap();
    let dir = scratch("swapped");
    let folder = dir.join("cache");
    let file = folder.join(FILE);
    let first = token(&emulator, &file).await;
    let bytes = fs::read(&file).unwrap();

    // Another process holds the exclusive lock.
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(folder.join(format!("{FILE}.lock")))
        .unwrap();
    let mut lock = fd_lock::RwLock::new(lock);
    let held = lock.write().unwrap();
    let reads = || {
        events()
            .lines_with(&file.display().to_string())
            .iter()
            .filter(|l| l.contains("persistent token cache: reading"))
            .count()
    };
    assert_eq!(reads(), 1);
    let reader = {
        let credential = credential(&emulator, &file);
        tokio::spawn(async move { credential.get_token(&[STORAGE], None).await })
    };
    // The new process has started reading (it waits for the lock, up to 2 s)...
    for _ in 0..1000 {
        if reads() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(reads(), 2);
    // ... when the file is replaced by a copy that others may read.
    let swapped = folder.join("swapped");
    fs::write(&swapped, &bytes).unwrap();
    chmod(&swapped, 0o644);
    fs::rename(&swapped, &file).unwrap();
    drop(held);

    let second = reader
        .await
        .unwrap()
        .expect("a refused file is a miss, never an error");
    assert_ne!(
        second.token.secret(),
        first,
        "served from a file open to others"
    );
    assert_eq!(counts(&emulator), (2, 2));
    assert_logged(
        &file,
        &[
            "not reading",
            "refused: the file has mode 0644, open to other users",
        ],
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A cache path that is not a regular file (here a named pipe, which a plain open would wait
/// on for a writer) is refused, and the credential does not hang on it.
#[tokio::test]
async fn a_cache_path_that_is_not_a_regular_file_is_refused() {
    let emulator = Emulator::start().await.unwrap();
    let dir = scratch("fifo");
    let folder = dir.join("cache");
    fs::create_dir(&folder).unwrap();
    chmod(&folder, 0o700);
    let file = folder.join(FILE);
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&file)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // A guard against hanging the test run, not a timing assertion.
    let got = tokio::time::timeout(Duration::from_secs(20), token(&emulator, &file)).await;
    assert!(
        got.is_ok(),
        "get_token hangs on a named pipe at the cache path"
    );
    assert_eq!(counts(&emulator), (1, 1));
    assert_logged(&file, &["not reading", "not a regular file"]);
    let _ = fs::remove_dir_all(&dir);
}
