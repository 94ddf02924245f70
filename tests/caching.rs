//! The cache and sharing, without moving time: tokens are cached per tenant and CAE mode, a
//! request with claims serves its key afterwards, and concurrent callers share one request (and
//! its error). Lifetimes and refreshes, which need the crate's manual clock, are tested in
//! `src/tests/`.

mod common;

use azure_core::{
    credentials::{AccessToken, TokenCredential},
    http::StatusCode,
};
use azure_pipelines_credential::AzurePipelinesCredential;
use azure_pipelines_emulator::{Emulator, Endpoint};
use common::{
    CHALLENGE_CLAIMS, OTHER_TENANT, STORAGE, TENANT,
    emulator::{counts, credential},
    errors::{assert_failure, http_status},
    jwt::oidc_jwt,
    mock::{E2EID, Fixture, OIDC_PATH, access_token_body, token_path},
    requests::{with_cae, with_claims, with_tenant},
};
use httpmock::Method::POST;
use serde_json::json;
use std::{sync::Arc, time::Duration};

/// `callers` tasks asking `credential` for a storage token at once, and what each got.
async fn at_once(
    callers: usize,
    credential: Arc<AzurePipelinesCredential>,
) -> Vec<azure_core::Result<AccessToken>> {
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let credential = credential.clone();
            tokio::spawn(async move { credential.get_token(&[STORAGE], None).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the caller's task"));
    }
    results
}

#[tokio::test]
async fn cache_entries_are_separate_per_tenant_and_cae_mode() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("keys")).await;
    let home_cae = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple_exists("claims");
            then.status(200).json_body(access_token_body("home-cae"));
        })
        .await;
    let home = f.token_ok(TENANT, "home-plain").await;
    let other = f.token_ok(OTHER_TENANT, "other-plain").await;
    let credential = f.credential_with(|o| o.additionally_allowed_tenants = vec!["*".into()]);

    for _ in 0..3 {
        let plain = credential.get_token(&[STORAGE], None).await.unwrap();
        let cae = credential.get_token(&[STORAGE], with_cae()).await.unwrap();
        let elsewhere = credential
            .get_token(&[STORAGE], with_tenant(OTHER_TENANT))
            .await
            .unwrap();
        assert_eq!(plain.token.secret(), "home-plain");
        assert_eq!(cae.token.secret(), "home-cae");
        assert_eq!(elsewhere.token.secret(), "other-plain");
    }

    assert_eq!(home.calls_async().await, 1);
    assert_eq!(home_cae.calls_async().await, 1);
    assert_eq!(other.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn a_request_with_claims_always_goes_to_the_network_then_serves_its_key() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("claims-cache")).await;
    let with = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("claims", CHALLENGE_CLAIMS);
            then.status(200)
                .json_body(access_token_body("access-after-challenge"));
        })
        .await;
    let plain = f.token_ok(TENANT, "access-before-challenge").await;
    let credential = f.credential();

    let before = credential.get_token(&[STORAGE], None).await.unwrap();
    let challenged = credential
        .get_token(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
        .await
        .unwrap();
    let again = credential
        .get_token(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
        .await
        .unwrap();
    let after = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(before.token.secret(), "access-before-challenge");
    assert_eq!(challenged.token.secret(), "access-after-challenge");
    assert_eq!(again.token.secret(), "access-after-challenge");
    assert_eq!(after.token.secret(), "access-after-challenge");
    assert_eq!(plain.calls_async().await, 1);
    assert_eq!(with.calls_async().await, 2);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_share_one_exchange() {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            then.status(200)
                .delay(Duration::from_millis(150))
                .json_body(json!({ "oidcToken": oidc_jwt("flight") }));
        })
        .await;
    let token = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(token_path(TENANT));
            then.status(200)
                .delay(Duration::from_millis(150))
                .json_body(access_token_body("access-shared"));
        })
        .await;
    for result in at_once(50, f.credential()).await {
        assert_eq!(result.unwrap().token.secret(), "access-shared");
    }
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_error() {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            then.status(401)
                .header("x-vss-e2eid", E2EID)
                .delay(Duration::from_millis(150));
        })
        .await;
    for result in at_once(20, f.credential()).await {
        let error = result.unwrap_err();
        assert_failure(&error, &["rejected the System.AccessToken"]);
        assert_eq!(http_status(&error), Some(StatusCode::Unauthorized));
    }
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn ten_new_scopes_at_once_share_one_oidc_request() {
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_latency(Endpoint::Oidc, Duration::from_millis(20));
    let credential = credential(&emulator);
    let scopes: Vec<String> = (0..10).map(|i| format!("api://app-{i}/.default")).collect();
    let calls = scopes.iter().map(|s| {
        let credential = credential.clone();
        async move { credential.get_token(&[s], None).await }
    });
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.iter().all(Result::is_ok));
    assert_eq!(counts(&emulator), (1, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_make_one_exchange() {
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_latency(Endpoint::Token, Duration::from_millis(20));
    let tokens: Vec<_> = at_once(1000, credential(&emulator))
        .await
        .into_iter()
        .map(|result| result.unwrap().token)
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(counts(&emulator), (1, 1));
}
