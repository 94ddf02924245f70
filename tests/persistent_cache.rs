//! The persistent token cache, in process: a new credential (as a new process) is served from
//! the file; the in-memory cache stays in front of it; every bad file is refused or ignored
//! while authentication goes on; no secret is in the file in clear text. The credential's debug
//! events are captured with a global subscriber; each test uses its own folder and looks only at
//! the events that name its own file.
//!
//! Processes sharing the file are tested with the CLI, in its crate; a token near its refresh
//! time, which needs the credential's clock, in `src/tests/`.
#![cfg(all(feature = "persistent-cache", unix))]

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::AzurePipelinesCredential;
use azure_pipelines_emulator::{Emulator, EmulatorConfig};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{
    CHALLENGE_CLAIMS, STORAGE, VAULT,
    emulator::counts,
    persistent::{credential, events},
    requests::{with_cae, with_claims},
};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

const FILE: &str = "tokens.bin";

/// A fresh, empty folder for one test (under the system temp folder; removed first if a previous
/// run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apc-persistent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The captured lines that name `file`.
fn log_of(file: &Path) -> Vec<String> {
    events().lines_with(&file.display().to_string())
}

fn reads_of(file: &Path) -> usize {
    log_of(file)
        .iter()
        .filter(|l| l.contains("persistent token cache: reading"))
        .count()
}

async fn token(credential: &AzurePipelinesCredential) -> String {
    credential
        .get_token(&[STORAGE], None)
        .await
        .expect("authentication works")
        .token
        .secret()
        .to_owned()
}

#[tokio::test]
async fn a_new_credential_is_served_from_the_file() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("in-process").join("cache").join(FILE);
    let first = token(&credential(&emulator, &file)).await;
    let second = token(&credential(&emulator, &file)).await;
    assert_eq!(first, second);
    assert_eq!(counts(&emulator), (1, 1));
    let log = log_of(&file).join("\n");
    assert!(log.contains("saved a token"), "{log}");
    assert!(log.contains("hit in"), "{log}");
}

#[tokio::test]
async fn the_in_memory_cache_stays_the_hot_path() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("hot-path").join("cache").join(FILE);
    let credential = credential(&emulator, &file);
    let first = token(&credential).await;
    assert_eq!(reads_of(&file), 1, "read once, on the miss");
    // Whatever happens to the file now, hits neither read nor write it.
    std::fs::remove_file(&file).unwrap();
    for _ in 0..100 {
        assert_eq!(token(&credential).await, first);
    }
    assert_eq!(reads_of(&file), 1);
    assert!(!file.exists(), "nothing written on a hit");
    assert_eq!(counts(&emulator), (1, 1));
}

#[tokio::test]
async fn claims_bypass_the_file_and_cae_is_keyed_apart() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("claims").join("cache").join(FILE);
    token(&credential(&emulator, &file)).await;
    let reads = reads_of(&file);

    credential(&emulator, &file)
        .get_token(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
        .await
        .unwrap();
    assert_eq!(counts(&emulator).1, 2, "claims go to Entra");
    assert_eq!(reads_of(&file), reads, "without reading the file");

    let first = credential(&emulator, &file)
        .get_token(&[STORAGE], with_cae())
        .await
        .unwrap();
    assert_eq!(counts(&emulator).1, 3, "a CAE token is not the plain one");
    let second = credential(&emulator, &file)
        .get_token(&[STORAGE], with_cae())
        .await
        .unwrap();
    assert_eq!(second.token.secret(), first.token.secret());
    assert_eq!(counts(&emulator).1, 3, "the CAE token came from the file");
}

/// Fills the cache file with a token, breaks it with `damage`, and checks that a new credential
/// still authenticates (over the network), that the debug log says `why`, and whether the file
/// was rewritten (then a third credential is served from it).
async fn survives(name: &str, damage: impl FnOnce(&Path), why: &str, rewritten: bool) {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch(name).join("cache").join(FILE);
    let first = token(&credential(&emulator, &file)).await;
    damage(&file);
    let damaged = std::fs::read(&file).ok();

    let second = token(&credential(&emulator, &file)).await;
    assert_ne!(second, first, "{name}: a new token, from the network");
    assert_eq!(counts(&emulator), (2, 2), "{name}");
    let log = log_of(&file).join("\n");
    assert!(log.contains(why), "{name}: the log lacks {why:?}:\n{log}");

    if rewritten {
        let third = token(&credential(&emulator, &file)).await;
        assert_eq!(
            third, second,
            "{name}: the file was replaced by a valid one"
        );
        assert_eq!(counts(&emulator), (2, 2), "{name}");
    } else {
        assert_eq!(std::fs::read(&file).ok(), damaged, "{name}: left alone");
    }
}

fn edit(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(file).unwrap();
    change(&mut bytes);
    // Rewritten in place, so the file keeps its mode.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .unwrap();
    out.write_all(&bytes).unwrap();
}

#[tokio::test]
async fn a_truncated_file_is_ignored() {
    survives(
        "truncated",
        |f| edit(f, |b| b.truncate(b.len() / 2)),
        "failed authentication",
        true,
    )
    .await;
    survives(
        "truncated-header",
        |f| edit(f, |b| b.truncate(10)),
        "truncated",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_tampered_byte_is_detected() {
    survives(
        "tampered",
        |f| edit(f, |b| *b.last_mut().unwrap() ^= 0x40),
        "failed authentication (tampered or corrupted)",
        true,
    )
    .await;
    survives(
        "tampered-middle",
        |f| {
            edit(f, |b| {
                let middle = b.len() / 2;
                b[middle] ^= 1;
            })
        },
        "failed authentication (tampered or corrupted)",
        true,
    )
    .await;
}

#[tokio::test]
async fn another_version_and_garbage_are_ignored() {
    survives(
        "version",
        |f| edit(f, |b| b[6] = 2),
        "format version 2 is not supported",
        true,
    )
    .await;
    survives(
        "garbage",
        |f| {
            edit(f, |b| {
                b.iter_mut().for_each(|x| *x = x.wrapping_mul(31) ^ 0x5a)
            })
        },
        "not a token cache file",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_file_sealed_with_another_system_access_token_is_ignored() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("other-key").join("cache").join(FILE);
    // Another job (another System.AccessToken) left a file at the same place.
    let other_job = Emulator::start_with(EmulatorConfig::default())
        .await
        .unwrap();
    assert_ne!(
        other_job.config().system_access_token,
        emulator.config().system_access_token
    );
    let theirs = token(&credential(&other_job, &file)).await;

    let ours = token(&credential(&emulator, &file)).await;
    assert_ne!(ours, theirs);
    assert_eq!(counts(&emulator), (1, 1), "authenticated over the network");
    let log = log_of(&file).join("\n");
    assert!(
        log.contains("sealed with another System.AccessToken"),
        "{log}"
    );
    // The file is now ours: theirs can no longer read it, we can.
    assert_eq!(token(&credential(&emulator, &file)).await, ours);
    assert_eq!(counts(&emulator), (1, 1));
}

#[cfg(unix)]
#[tokio::test]
async fn loose_permissions_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    survives(
        "loose-file",
        |f| chmod(f, 0o644),
        "refused: the file has mode 0644",
        false,
    )
    .await;
    survives(
        "loose-folder",
        |f| chmod(f.parent().unwrap(), 0o755),
        "refused: its folder has mode 0755",
        false,
    )
    .await;

    // A folder of others (/tmp-like) is refused before anything is created in it.
    let emulator = Emulator::start().await.unwrap();
    let shared = scratch("shared-folder");
    chmod(&shared, 0o777);
    let file = shared.join(FILE);
    token(&credential(&emulator, &file)).await;
    assert!(!file.exists());
    let log = log_of(&file).join("\n");
    assert!(log.contains("refused: its folder has mode 0777"), "{log}");
}

#[tokio::test]
async fn no_secret_is_in_the_file_in_clear_text() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("secrets").join("cache").join(FILE);
    let credential = credential(&emulator, &file);
    let access = token(&credential).await;
    let cae = credential.get_token(&[VAULT], with_cae()).await.unwrap();
    let raw = std::fs::read(&file).unwrap();
    let system = emulator.config().system_access_token.clone();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, secret) in [
        ("access token", access.as_str()),
        ("CAE access token", cae.token.secret()),
        ("System.AccessToken", system.as_str()),
    ] {
        needles.push((what.to_owned(), secret.as_bytes().to_vec()));
        needles.push((
            format!("{what}, base64"),
            STANDARD.encode(secret).into_bytes(),
        ));
        needles.push((
            format!("{what}, base64url"),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ));
        // Every part of a JWT (its signature is what makes it usable), and a 16-byte slice.
        for (i, part) in secret.split('.').enumerate() {
            needles.push((format!("{what}, part {i}"), part.as_bytes().to_vec()));
        }
        let middle = secret.len() / 2;
        needles.push((
            format!("{what}, 16 bytes"),
            secret.as_bytes()[middle - 8..middle + 8].to_vec(),
        ));
    }
    for (what, needle) in &needles {
        assert!(
            needle.len() >= 8 && !raw.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{what} is in the file"
        );
    }
    for word in ["Bearer", "storage.azure.com", "vault", "tenant", "expires"] {
        assert!(
            !raw.windows(word.len()).any(|w| w == word.as_bytes()),
            "{word} is in the file: the entries are not sealed"
        );
    }
}
