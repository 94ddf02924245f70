//! Tokens through their lifetimes: served from the cache until their refresh time, refreshed in
//! the background (one refresh, however many callers, CAE still announced) while the old token
//! is served, and the OIDC token reused across scopes until a minute before it expires.

use super::{Events, STORAGE, VAULT, cae, eventually, requests, setup};
use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::Endpoint;
use serde_json::json;
use std::time::Duration as StdDuration;
use time::Duration;

/// Lets the tasks woken meanwhile (a background refresh) run: on a current-thread runtime,
/// `yield_now` puts this task behind every ready task.
async fn let_tasks_run() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_second_identical_call_is_served_from_the_cache() {
    let (emulator, time, credential) = setup(|_| {}).await;

    let first = credential.get_token(&[STORAGE], None).await.unwrap();
    time.advance(Duration::minutes(10));
    let second = credential.get_token(&[STORAGE], None).await.unwrap();
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();

    assert_eq!(second.token.secret(), first.token.secret());
    assert_eq!(second.expires_on, first.expires_on);
    assert_eq!(info.token.secret(), first.token.secret());
    assert_eq!(requests(&emulator), (1, 1));
}

/// Requests (OIDC, token) for a token for one scope, then `later` another scope's.
async fn requests_for_two_scopes(later: Duration) -> (u64, u64) {
    let (emulator, time, credential) = setup(|_| {}).await;
    credential.get_token(&[STORAGE], None).await.unwrap();
    time.advance(later);
    credential.get_token(&[VAULT], None).await.unwrap();
    requests(&emulator)
}

#[tokio::test]
async fn the_oidc_token_is_reused_across_scopes() {
    // The emulator's OIDC tokens live 10 minutes: half of that later it is still good.
    assert_eq!(requests_for_two_scopes(Duration::minutes(5)).await, (1, 2));
}

#[tokio::test]
async fn an_oidc_token_near_its_expiry_is_not_reused() {
    // The OIDC token expires at +600 s; with under a minute left it is fetched anew.
    assert_eq!(
        requests_for_two_scopes(Duration::seconds(560)).await,
        (2, 2)
    );
}

#[tokio::test]
async fn a_background_refresh_replaces_the_token_before_it_expires() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let control = emulator.control();
    control.set_access_token_lifetime(StdDuration::from_secs(3600));
    control.set_refresh_in(Some(StdDuration::from_secs(600)));
    let old = credential.get_token(&[STORAGE], None).await.unwrap();
    control.set_access_token_lifetime(StdDuration::from_secs(3599));
    control.set_refresh_in(None);

    // Before the refresh time: the cache answers, nothing is requested.
    time.set(500);
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, old.token);
    let_tasks_run().await;
    assert_eq!(requests(&emulator), (1, 1));

    // In the refresh window the old token is served at once while one refresh runs.
    time.set(1000);
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, old.token);
    let mut latest = got;
    for _ in 0..1000 {
        if latest.token != old.token {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
        latest = credential.get_token(&[STORAGE], None).await.unwrap();
    }
    assert_ne!(latest.token, old.token, "the refresh landed");
    assert_eq!(latest.expires_on, time.at(1000 + 3599));
    for _ in 0..5 {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token, latest.token);
    }
    // One refresh, however many callers; the OIDC token (10 minutes) was fetched again for it.
    assert_eq!(requests(&emulator), (2, 2));
}

#[tokio::test]
async fn a_background_refresh_of_a_cae_token_still_announces_cp1() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let control = emulator.control();
    control.set_access_token_lifetime(StdDuration::from_secs(3600));
    control.set_refresh_in(Some(StdDuration::from_secs(600)));
    let old = credential.get_token(&[STORAGE], cae()).await.unwrap();

    time.set(1000);
    let got = credential.get_token(&[STORAGE], cae()).await.unwrap();
    assert_eq!(got.token, old.token);
    eventually(|| requests(&emulator).1 >= 2).await;
    let mut refreshed = got;
    for _ in 0..1000 {
        if refreshed.token != old.token {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
        refreshed = credential.get_token(&[STORAGE], cae()).await.unwrap();
    }
    // The emulator echoes the claims each token was requested with.
    let claims = emulator
        .verify_token(refreshed.token.secret())
        .expect("the emulator's token");
    assert_ne!(refreshed.token, old.token, "the refresh landed");
    assert_eq!(
        claims["xms_claims_requested"],
        json!({"access_token": {"xms_cc": {"values": ["CP1"]}}})
    );
    assert_eq!(claims["xms_cc"], json!(["CP1"]));
    assert_eq!(requests(&emulator).1, 2);
}

#[tokio::test]
async fn readers_are_served_while_a_refresh_is_held_open() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let first = credential.get_token(&[STORAGE], None).await.unwrap();

    time.advance(Duration::minutes(55));
    let hold = emulator.control().hold(Endpoint::Token);
    for _ in 0..20 {
        // The refresh is stuck at the emulator; a reader that waited on it would hit the
        // timeout. The timeout is a guard against hanging, not a timing assertion.
        let token = tokio::time::timeout(
            StdDuration::from_secs(10),
            credential.get_token(&[STORAGE], None),
        )
        .await
        .expect("a reader never waits for the refresh")
        .unwrap();
        assert_eq!(token.token, first.token);
    }
    eventually(|| requests(&emulator).1 == 2).await;
    hold.release();
    let mut refreshed = None;
    for _ in 0..500 {
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        if token.token != first.token {
            refreshed = Some(token);
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    assert!(refreshed.is_some(), "the background refresh landed");
    assert_eq!(requests(&emulator).1, 2, "one refresh for 20 readers");
}

#[tokio::test]
async fn after_close_cached_tokens_are_served_and_nothing_reaches_the_network() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let before = credential.get_token(&[STORAGE], None).await.unwrap();

    credential.close().await;

    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(cached.token, before.token);
    for options in [
        None,
        Some(
            crate::TokenRequestContext {
                claims: Some(r#"{"access_token":{}}"#.into()),
                ..Default::default()
            }
            .into(),
        ),
    ] {
        let scope = if options.is_some() { STORAGE } else { VAULT };
        let error = credential.get_token(&[scope], options).await.unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with(super::FAILED), "{text}");
        assert!(text.contains("The credential was closed"), "{text}");
    }

    // In the refresh window (the emulator's tokens live 3599 s) a closed credential starts no
    // background refresh.
    time.set(3300);
    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(cached.token, before.token);
    let_tasks_run().await;

    assert_eq!(requests(&emulator), (1, 1));
}

/// A hit in the refresh window is one `get_token` span with the outcome `hit, refreshing in the
/// background` and no request of its own; the refresh is a `token_refresh` span that records
/// the requests it made.
// A current-thread runtime keeps the spawned refresh on this thread, where the thread-local
// subscriber sees it.
#[tokio::test(flavor = "current_thread")]
async fn a_background_refresh_is_traced_apart_from_the_hit_that_started_it() {
    let (events, _guard) = Events::record();
    let (emulator, time, credential) = setup(|_| {}).await;
    emulator
        .control()
        .set_refresh_in(Some(StdDuration::from_secs(1800)));
    credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(requests(&emulator), (1, 1));

    time.set(1801);
    credential.get_token(&[STORAGE], None).await.unwrap();
    eventually(|| requests(&emulator) == (2, 2)).await;
    let_tasks_run().await;

    let spans = events.spans_text();
    let hits: Vec<&str> = spans
        .lines()
        .filter(|line| line.contains("outcome=\"hit, refreshing in the background\""))
        .collect();
    assert_eq!(hits.len(), 1, "{spans}");
    assert!(
        spans
            .lines()
            .any(|line| line.starts_with("azure_pipelines_credential token_refresh ")),
        "{spans}"
    );
    // The refresh fetched a new OIDC token (the first one had expired) and exchanged it.
    assert!(
        spans.lines().any(|line| line.trim() == "requests=2"),
        "{spans}"
    );
}
