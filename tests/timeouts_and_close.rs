//! Nothing holds a caller forever: a hung endpoint times out per attempt (each attempt retried),
//! the overall budget bounds an acquisition whatever the retry policy, and `close` cancels a
//! request in flight while cached tokens are still served.

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::AzurePipelinesCredential;
use azure_pipelines_emulator::{Emulator, Endpoint, Fault, FaultTrigger};
use common::{
    STORAGE, TENANT,
    emulator::{counts, credential, with_timeouts},
    errors::assert_failure,
    faults::{ATTEMPTS, ENDPOINTS, expected, failed_at, name},
    jwt::oidc_jwt,
    mock::{Fixture, access_token_body, token_path},
};
use httpmock::Method::POST;
use std::{sync::Arc, time::Duration};

#[tokio::test]
async fn a_hung_endpoint_times_out_per_attempt_and_each_attempt_is_retried() {
    for endpoint in ENDPOINTS {
        let emulator = Emulator::start().await.unwrap();
        // Attempts long enough for a new connection and TLS handshake on a busy machine, so
        // that every attempt reaches the emulator and is counted.
        let attempt = Duration::from_millis(500);
        let credential = with_timeouts(&emulator, attempt, Duration::from_secs(20));
        emulator
            .control()
            .inject_fault(endpoint, Fault::Hang, FaultTrigger::Rate(1.0));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_failure(
            &error,
            &[
                &format!(
                    "The {} did not answer within 0.5 s (attempt_timeout)",
                    name(endpoint)
                ),
                "4 attempts in all",
                "raise AzurePipelinesCredentialOptions::attempt_timeout",
            ],
        );
        assert_eq!(counts(&emulator), failed_at(endpoint, ATTEMPTS));

        emulator.control().clear_faults();
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
        // The OIDC token fetched before the token endpoint hung is reused.
        assert_eq!(
            counts(&emulator),
            expected(endpoint, ATTEMPTS),
            "{endpoint:?}"
        );
    }
}

/// A credential whose acquisitions may take 1 s, though each attempt could wait a minute, and
/// `endpoint` hanging once.
async fn hung_once_with_a_budget(endpoint: Endpoint) -> (Emulator, Arc<AzurePipelinesCredential>) {
    let emulator = Emulator::start().await.unwrap();
    // Attempts would wait a minute each; the budget ends it first.
    let credential = with_timeouts(&emulator, Duration::from_secs(60), Duration::from_secs(1));
    emulator
        .control()
        .inject_fault(endpoint, Fault::Hang, FaultTrigger::Count(1));
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_failure(
        &error,
        &[
            "The token request did not complete within 1 s (token_timeout)",
            &format!("still waiting for the {}", name(endpoint)),
            "raise AzurePipelinesCredentialOptions::token_timeout",
        ],
    );
    assert_eq!(
        counts(&emulator),
        failed_at(endpoint, 1),
        "one attempt, cut short: {endpoint:?}"
    );
    (emulator, credential)
}

/// After the budget ran out, the next call makes a fresh request and succeeds.
async fn the_next_call_recovers(
    emulator: &Emulator,
    credential: &AzurePipelinesCredential,
    endpoint: Endpoint,
) {
    // No pause: the abandoned OIDC fetch was cancelled with the acquisition that waited for it.
    let token = credential.get_token(&[STORAGE], None).await.unwrap();
    assert!(emulator.verify_token(token.token.secret()).is_some());
    assert_eq!(counts(emulator), expected(endpoint, 1), "{endpoint:?}");
}

#[tokio::test]
async fn the_overall_budget_bounds_an_acquisition_whatever_the_retry_policy() {
    for endpoint in ENDPOINTS {
        let (emulator, credential) = hung_once_with_a_budget(endpoint).await;
        the_next_call_recovers(&emulator, &credential, endpoint).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_cancels_a_request_in_flight() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("in-flight")).await;
    let token = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(token_path(TENANT));
            then.status(200)
                .delay(Duration::from_secs(5))
                .json_body(access_token_body("access-too-late"));
        })
        .await;
    let credential = f.credential();
    let waiter = {
        let credential = credential.clone();
        tokio::spawn(async move { credential.get_token(&[STORAGE], None).await })
    };
    for _ in 0..1000 {
        if token.calls_async().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(token.calls_async().await, 1, "the exchange is in flight");

    credential.close().await;

    // Without the cancellation the waiter would get the token once the mock answers.
    let error = waiter.await.unwrap().unwrap_err();
    assert_failure(&error, &["The credential was closed", "#credential-closed"]);
}

#[tokio::test]
async fn close_serves_cached_tokens_and_refuses_the_network() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    credential.close().await;
    let again = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(again.token.secret(), cached.token.secret());
    let error = credential
        .get_token(&["api://other/.default"], None)
        .await
        .unwrap_err();
    assert_failure(&error, &["closed"]);
    assert_eq!(counts(&emulator), (1, 1));
}
