//! The persistent token cache through time: a token near its refresh time is not served from the
//! file to a new process (a new credential), which gets a fresh one from the network.

use super::{STORAGE, Timeline, credential, requests};
use crate::PersistentCacheOptions;
use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::Emulator;
use time::Duration;

#[tokio::test]
async fn tokens_near_their_refresh_time_are_not_served_from_the_file() {
    let emulator = Emulator::start().await.unwrap();
    let folder = std::env::temp_dir().join(format!("apc-unit-refresh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    let file = folder.join("cache").join("tokens.bin");
    let time = Timeline::new();
    // A new credential each time: a new process, with an empty in-memory cache.
    let process = |time: &Timeline| {
        credential(&emulator, time, |o| {
            o.persistent_cache = Some(PersistentCacheOptions {
                path: Some(file.clone()),
                ..Default::default()
            });
        })
    };
    let first = process(&time).get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(requests(&emulator), (1, 1));

    // A process that starts soon after is served from the file.
    time.advance(Duration::minutes(1));
    let served = process(&time).get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(served.token, first.token);
    assert_eq!(requests(&emulator), (1, 1), "served from the file");

    // One that starts 55 minutes later (by the credential's clock) finds the token too close to
    // its refresh time to be served, and gets a new one from the network.
    time.advance(Duration::minutes(54));
    let later = process(&time).get_token(&[STORAGE], None).await.unwrap();
    assert_ne!(later.token, first.token);
    assert_eq!(requests(&emulator).1, 2);
    let _ = std::fs::remove_dir_all(&folder);
}
