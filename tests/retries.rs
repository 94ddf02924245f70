//! The user's azure_core retry options apply to both endpoints: transient faults are retried
//! with exact request counts, faults that outlast the retries end in a clear error, and the
//! next call recovers.

mod common;

use azure_core::{credentials::TokenCredential, http::StatusCode};
use azure_pipelines_emulator::{Emulator, Endpoint, Fault, FaultTrigger};
use common::{
    STORAGE, TENANT,
    emulator::{counts, credential},
    errors::{assert_failure, http_status},
    faults::{ATTEMPTS, ENDPOINTS, expected, failed_at, name, status, throttled, transient},
    jwt::oidc_jwt,
    mock::{Fixture, OIDC_PATH, first_n, quick_retry, token_path},
};
use std::time::{Duration, Instant};

/// One token with 3 quick retries, while the first request to `path` is answered 503: one
/// request of each kind succeeds, after the one refused.
async fn token_after_one_503(path: String) {
    let f = Fixture::new().await;
    // Created first: httpmock serves the first mock that matches.
    let unavailable = f
        .server
        .mock_async(|when, then| {
            when.is_true(first_n(path, 1));
            then.status(503).body("busy");
        })
        .await;
    let oidc = f.oidc_ok(&oidc_jwt("retry")).await;
    let token = f.token_ok(TENANT, "access-after-retry").await;
    let credential = f.credential_with(|o| o.credential_options.client_options = quick_retry(3));

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-after-retry");
    assert_eq!(unavailable.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn a_503_from_entra_is_retried() {
    token_after_one_503(token_path(TENANT)).await;
}

#[tokio::test]
async fn a_503_from_the_oidc_endpoint_is_retried() {
    token_after_one_503(OIDC_PATH.to_owned()).await;
}

#[tokio::test]
async fn without_retries_a_503_fails_once_with_the_response_as_source() {
    let f = Fixture::new().await;
    let oidc = f
        .oidc_respond(503, "text/plain", "Service Unavailable")
        .await;
    let credential = f.credential();
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_failure(&error, &["HTTP 503", "x-vss-e2eid"]);
    assert_eq!(http_status(&error), Some(StatusCode::ServiceUnavailable));
    assert_eq!(oidc.calls_async().await, 1);
}

// ---------------------------------------------------------------------------------------------
// Against the emulator over HTTPS, with its client options (3 quick retries)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn transient_faults_on_either_endpoint_are_retried_with_exact_counts() {
    let emulator = Emulator::start().await.unwrap();
    for endpoint in ENDPOINTS {
        for fault in transient() {
            for times in [1u32, 3] {
                emulator.control().reset_counters();
                let credential = credential(&emulator);
                emulator.control().inject_fault(
                    endpoint,
                    fault.clone(),
                    FaultTrigger::Count(times),
                );
                let token = credential
                    .get_token(&[STORAGE], None)
                    .await
                    .unwrap_or_else(|e| panic!("{endpoint:?} {fault:?} x{times}: {e}"));
                assert!(emulator.verify_token(token.token.secret()).is_some());
                assert_eq!(
                    counts(&emulator),
                    expected(endpoint, u64::from(times)),
                    "{endpoint:?} {fault:?} x{times}"
                );
            }
        }
    }
}

#[tokio::test]
async fn retries_give_up_with_a_clear_error_and_the_next_call_recovers() {
    for endpoint in ENDPOINTS {
        for fault in [status(503), Fault::DropConnection] {
            let emulator = Emulator::start().await.unwrap();
            let credential = credential(&emulator);
            emulator
                .control()
                .inject_fault(endpoint, fault.clone(), FaultTrigger::Rate(1.0));
            let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
            let needle = match (&fault, endpoint) {
                (Fault::DropConnection, _) => {
                    format!(
                        "The request to the {} could not be completed",
                        name(endpoint)
                    )
                }
                (_, Endpoint::Oidc) => {
                    "The OIDC endpoint answered HTTP 503 Service Unavailable, after the retries"
                        .to_owned()
                }
                // Entra's 503 body is an AADSTS error, which the message quotes.
                _ => "Microsoft Entra ID is temporarily unavailable".to_owned(),
            };
            assert_failure(&error, &[&needle]);
            assert_eq!(
                counts(&emulator),
                failed_at(endpoint, ATTEMPTS),
                "{fault:?}"
            );
            emulator.control().clear_faults();
            credential.get_token(&[STORAGE], None).await.unwrap();
        }
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    for endpoint in ENDPOINTS {
        let emulator = Emulator::start().await.unwrap();
        let credential = credential(&emulator);
        emulator
            .control()
            .inject_fault(endpoint, throttled(1), FaultTrigger::Count(1));
        let started = Instant::now();
        credential.get_token(&[STORAGE], None).await.unwrap();
        // A lower bound only: the retry cannot have come sooner than the server asked (the
        // policy's own delay is 10 ms).
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{endpoint:?}: retried before Retry-After"
        );
        assert_eq!(counts(&emulator), expected(endpoint, 1));
    }
}

#[tokio::test]
async fn malformed_json_is_a_clear_error_and_the_next_call_succeeds() {
    for (endpoint, needle) in [
        (
            Endpoint::Oidc,
            "The OIDC endpoint's response is not valid JSON",
        ),
        (Endpoint::Token, "token response is not a JSON object"),
    ] {
        let emulator = Emulator::start().await.unwrap();
        let credential = credential(&emulator);
        emulator
            .control()
            .inject_fault(endpoint, Fault::MalformedJson, FaultTrigger::Count(1));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_failure(&error, &[needle, "HTTP 200"]);
        // A 200 is not retried by the pipeline: one request.
        assert_eq!(counts(&emulator), failed_at(endpoint, 1));
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
        assert_eq!(counts(&emulator), expected(endpoint, 1), "{endpoint:?}");
    }
}
