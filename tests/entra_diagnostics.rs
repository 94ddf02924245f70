//! What Microsoft Entra ID's refusals mean, said in the error: the AADSTS700024 retry with a
//! fresh OIDC token, federation mismatches with the token's claims (never the token), Entra's
//! codes, description and IDs, and token responses that cannot be used.

mod common;

use azure_core::{credentials::TokenCredential, http::StatusCode};
use azure_pipelines_emulator::Emulator;
use common::{
    CLIENT_ID, STORAGE, TENANT, VAULT,
    emulator::{counts, credential},
    errors::{assert_contains, assert_failure, chain_text, failure, http_response, http_status},
    jwt::{AUD, ISS, SUB, claims, oidc_jwt, signature},
    mock::{Fixture, OIDC_PATH, access_token_body, entra_error, first_n, token_path},
};
use httpmock::Method::POST;
use serde_json::{Value, json};

const EXPIRED: &str = "Client assertion is not within its valid time range.";

#[tokio::test]
async fn aadsts700024_fetches_a_fresh_oidc_token_and_retries_once() {
    let f = Fixture::new().await;
    let stale = oidc_jwt("stale");
    let fresh = oidc_jwt("fresh");
    let first_oidc = f
        .server
        .mock_async(|when, then| {
            when.is_true(first_n(OIDC_PATH.to_owned(), 1));
            then.status(200).json_body(json!({ "oidcToken": stale }));
        })
        .await;
    let second_oidc = f.oidc_ok(&fresh).await;
    let expired = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("client_assertion", stale.clone());
            then.status(400)
                .json_body(entra_error(700024, "invalid_client", EXPIRED));
        })
        .await;
    let accepted = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("client_assertion", fresh.clone());
            then.status(200)
                .json_body(access_token_body("access-after-700024"));
        })
        .await;
    let credential = f.credential();

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-after-700024");
    assert_eq!(
        first_oidc.calls_async().await + second_oidc.calls_async().await,
        2
    );
    assert_eq!(expired.calls_async().await, 1);
    assert_eq!(accepted.calls_async().await, 1);
}

#[tokio::test]
async fn aadsts700024_that_persists_fails_after_exactly_one_retry() {
    let f = Fixture::new().await;
    let assertion = oidc_jwt("always-stale");
    let oidc = f.oidc_ok(&assertion).await;
    let token = f
        .token_respond(TENANT, 400, entra_error(700024, "invalid_client", EXPIRED))
        .await;
    let credential = f.credential();

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    assert_failure(
        &error,
        &[
            "not within its valid time range, even after a new one was fetched",
            "Check this machine's clock",
            "codes: AADSTS700024",
        ],
    );
    assert_eq!(http_status(&error), Some(StatusCode::BadRequest));
    assert!(!chain_text(&error).contains(&assertion));
    assert_eq!(oidc.calls_async().await, 2);
    assert_eq!(token.calls_async().await, 2);
}

#[tokio::test]
async fn expired_assertion_is_fetched_anew_and_the_exchange_retried_once() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    credential.get_token(&[STORAGE], None).await.unwrap();
    // Entra's clock runs past the held OIDC token's expiry; ours still trusts it.
    emulator.control().set_clock_skew(700);
    let token = credential.get_token(&[VAULT], None).await.unwrap();
    assert!(emulator.verify_token(token.token.secret()).is_some());
    let (oidc, exchanges) = counts(&emulator);
    assert_eq!(oidc, 2, "a fresh OIDC token after AADSTS700024");
    assert_eq!(exchanges, 3, "one failed exchange, retried once");
}

#[tokio::test]
async fn federation_mismatches_show_the_oidc_claims_but_never_the_token() {
    for (code, what) in [
        (700211, "issuer"),
        (700212, "audience"),
        (700213, "subject"),
    ] {
        let f = Fixture::new().await;
        let assertion = oidc_jwt(&format!("mismatch-{code}"));
        let oidc = f.oidc_ok(&assertion).await;
        let description =
            format!("No matching federated identity record found for presented assertion {what}.");
        let token = f
            .token_respond(
                TENANT,
                400,
                entra_error(code, "invalid_request", &description),
            )
            .await;
        let credential = f.credential();

        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

        // The claims the error quotes are the token's own.
        let quoted = claims(&assertion).expect("a JWT");
        assert_eq!(
            (&quoted["iss"], &quoted["sub"], &quoted["aud"]),
            (&json!(ISS), &json!(SUB), &json!(AUD))
        );
        assert_failure(
            &error,
            &[
                &format!(
                    "No federated identity credential of the app '{CLIENT_ID}' matches the OIDC token's {what}"
                ),
                &format!("issuer '{ISS}'"),
                &format!("subject '{SUB}'"),
                &format!("audience '{AUD}'"),
                &format!("AADSTS{code}"),
            ],
        );
        assert_eq!(http_status(&error), Some(StatusCode::BadRequest), "{code}");
        let everything = chain_text(&error);
        assert!(!everything.contains(&assertion), "{code}: {everything}");
        assert!(
            !everything.contains(signature(&assertion)),
            "{code}: {everything}"
        );
        assert_eq!(oidc.calls_async().await, 1, "{code}: no retry");
        assert_eq!(token.calls_async().await, 1, "{code}: no retry");
    }
}

#[tokio::test]
async fn other_entra_errors_show_error_codes_description_and_ids() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("other-error")).await;
    let token = f
        .token_respond(
            TENANT,
            400,
            entra_error(
                70011,
                "invalid_scope",
                "The provided request must include a 'scope' input parameter.",
            ),
        )
        .await;
    let credential = f.credential();

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    let text = failure(&error);
    assert_contains(
        &text,
        &[
            "Microsoft Entra ID refused the token request.",
            "Entra ID said: \"AADSTS70011: The provided request must include a 'scope' input parameter.\"",
            "error: invalid_scope",
            "codes: AADSTS70011",
            "trace ID: 11111111-2222-3333-4444-555555555555",
            "correlation ID: 66666666-7777-8888-9999-000000000000",
        ],
    );
    assert!(
        !text.contains("Timestamp: 2026"),
        "only the first line: {text}"
    );
    assert_eq!(
        http_response(&error),
        Some((StatusCode::BadRequest, Some("AADSTS70011".to_owned()))),
        "{error:?}"
    );
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn entra_answers_that_are_not_entra_errors_name_the_authority() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("not-entra")).await;
    let token = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(token_path(TENANT));
            then.status(502).body("<html>Bad Gateway</html>");
        })
        .await;
    let credential = f.credential();
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_failure(
        &error,
        &[
            "Microsoft Entra ID answered HTTP 502 Bad Gateway",
            "Check the authority host",
        ],
    );
    assert_eq!(http_status(&error), Some(StatusCode::BadGateway));
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn malformed_token_responses_are_refused_without_echoing_them() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "api://bad-expiry/.default",
            json!({"access_token": "leaky-access-token-1", "expires_in": "soon"}),
            "expires_in that is not a number",
        ),
        (
            "api://no-token/.default",
            json!({"expires_in": 3599}),
            "has no access_token",
        ),
        (
            "api://pop/.default",
            json!({"access_token": "leaky-access-token-2", "expires_in": 3599, "token_type": "pop"}),
            "token_type is not Bearer",
        ),
        (
            "api://expired/.default",
            json!({"access_token": "leaky-access-token-3", "expires_in": 0}),
            "already expired",
        ),
        (
            "api://alphabet/.default",
            json!({"access_token": "leaky-access-token-4\r\nX-Injected: 1", "expires_in": 3599}),
            "outside a token's alphabet",
        ),
    ];
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("malformed")).await;
    for (scope, body, _) in cases {
        f.token_for_scope(scope, body.clone()).await;
    }
    let credential = f.credential();
    for (scope, _, needle) in cases {
        let error = credential.get_token(&[scope], None).await.unwrap_err();
        let text = failure(&error);
        assert_contains(&text, &[needle, "HTTP 200 from Microsoft Entra ID"]);
        assert!(!chain_text(&error).contains("leaky-access-token"), "{text}");
    }
}
