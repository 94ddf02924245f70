//! No secret ever reaches a log line, an error message (Display or Debug, along the whole
//! source chain, in the credential's own wording and a chain's) or a `Debug` of the public types.
//!
//! One test: it installs a global subscriber that captures every event at TRACE level (the
//! credential's, azure_core's, reqwest's and hyper's) and every span as it closes, with its
//! fields, then drives success and failure paths over loopback HTTP and searches everything
//! captured and formatted for the secret values: the System.AccessToken, the OIDC tokens (the
//! client assertions) and the access tokens. Only the mock server's own log is left out: it
//! prints the requests it receives, which carry the secrets by design.
//!
//! A background refresh that fails, and its warning, are checked on the manual clock in
//! `src/tests/outages.rs` (`failed_refreshes_log_their_cause_and_no_secret`), without waiting.
//! The failure paths of the reliability tests run here, against the emulator over HTTPS: hung
//! endpoints (per-attempt timeouts and the overall budget), dropped connections, 503 and 429
//! past the retries, malformed 200s, a sign-in page, faults the retries absorb, and a soak-like
//! mix of rate faults with callers dropped at random points.

mod common;

use azure_core::{credentials::TokenCredential, error::Error};
use azure_pipelines_credential::{
    AzurePipelinesAssertion, AzurePipelinesAssertionOptions, AzurePipelinesCredential, ChainMember,
    ChainedTokenCredential, PersistentCacheOptions, TokenRequestContext,
};
use azure_pipelines_emulator::{Emulator, Endpoint, Fault, FaultTrigger};
use common::{
    CHALLENGE_CLAIMS, CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT, VAULT,
    capture::Captured,
    emulator::with_timeouts,
    errors::chain_text,
    faults::{ENDPOINTS, absorbed, mix, outlasting},
    jwt::{and_signature, oidc_jwt},
    mock::{Fixture, OIDC_PATH, entra_error, first_n, quick_retry, token_path, vss_error},
    requests::{with_cae, with_claims},
};
use httpmock::Method::POST;
use serde_json::{Value, json};
use std::{fmt::Write as _, sync::Arc, time::Duration};

/// Access tokens Entra hands out in the scenarios.
const ACCESS_TOKENS: [&str; 6] = [
    "at0.Mz9Qx4Wv7Tb2Nk6Lp1Rj8Hc3Fd5Gs0Ya",
    "at1.Vb3Nm8Qz1Wx6Tk4Lr9Pj2Hc7Fd0Gs5Ya",
    "at2.Kp5Zr2Wm9Qx4Tb7Ln1Vj6Hc3Fd8Gs0Ya",
    "at3.Tx8Qm1Zk5Wr3Vb6Np9Lj4Hc2Fd7Gs0Ya",
    "at4.Wz6Kq3Mx8Vr1Tb5Lp2Nj9Hc4Fd0Gs7Ya",
    "at5.Rb1Qk7Zm4Wx9Tv2Ln6Pj3Hc8Fd5Gs0Ya",
];

/// The OIDC token `n` of the httpmock scenarios.
fn oidc_token(n: usize) -> String {
    oidc_jwt(&format!("secret-oidc-{n}"))
}

/// A token granted for an hour; Entra says to refresh it after `refresh_in` seconds.
fn granted(access_token: &str, refresh_in: u64) -> Value {
    json!({"token_type": "Bearer", "expires_in": 3599, "refresh_in": refresh_in, "access_token": access_token})
}

/// The secrets of the httpmock scenarios.
fn secrets() -> Vec<String> {
    let mut all = vec![SYSTEM_TOKEN.to_owned()];
    all.extend((0..3).flat_map(|n| and_signature(&oidc_token(n))));
    all.extend(ACCESS_TOKENS.iter().map(|s| (*s).to_owned()));
    all
}

/// `{error}`, `{error:?}` and the same for every error of its source chain.
fn format_chain(error: &Error, out: &mut String) {
    writeln!(out, "{error}\n{}", chain_text(error)).unwrap();
}

/// The credential of `f`'s mock, with one quick retry and any tenant allowed.
fn build(f: &Fixture) -> Arc<AzurePipelinesCredential> {
    f.credential_with(|o| {
        o.credential_options.client_options = quick_retry(1);
        o.additionally_allowed_tenants = vec!["*".into()];
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let log = Captured::install("trace,httpmock=off").expect("the only subscriber of this binary");
    let mut formatted = String::new();
    let mut errors: Vec<Error> = Vec::new();

    // Success, cache hit, claims and CAE.
    {
        let f = Fixture::new().await;
        f.oidc_ok(&oidc_token(0)).await;
        f.server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(token_path(TENANT))
                    .form_urlencoded_tuple_exists("claims")
                    .form_urlencoded_tuple("scope", VAULT);
                then.status(200).json_body(granted(ACCESS_TOKENS[2], 1800));
            })
            .await;
        // The token that answers the challenge.
        f.server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(token_path(TENANT))
                    .form_urlencoded_tuple_exists("claims");
                then.status(200).json_body(granted(ACCESS_TOKENS[1], 1800));
            })
            .await;
        f.token_json(TENANT, granted(ACCESS_TOKENS[0], 1800)).await;
        let credential = build(&f);

        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), ACCESS_TOKENS[0]);
        let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(info.token.secret(), ACCESS_TOKENS[0]);
        let challenged = credential
            .get_token_info(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
            .await
            .unwrap();
        assert_eq!(challenged.token.secret(), ACCESS_TOKENS[1]);
        let cae_token = credential
            .get_token_info(&[VAULT], with_cae())
            .await
            .unwrap();
        assert_eq!(cae_token.token.secret(), ACCESS_TOKENS[2]);

        let still = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(
            still.token.secret(),
            ACCESS_TOKENS[1],
            "the claims token now serves the key"
        );

        writeln!(
            formatted,
            "{credential:?}\n{credential:#?}\n{token:?}\n{token:#?}\n{info:?}\n{info:#?}\n{challenged:?}\n{cae_token:?}\n{still:?}"
        )
        .unwrap();
        credential.close().await;
        writeln!(formatted, "{credential:?}").unwrap();
    }

    // The OIDC endpoint refuses: 401, then a VSS error; the 401 also through a chain.
    for (status, body) in [
        (401, String::new()),
        (
            400,
            vss_error(
                "ServiceEndpointNotFoundException",
                &format!("No service connection found with identifier {CONNECTION_ID}."),
            ),
        ),
    ] {
        let f = Fixture::new().await;
        f.oidc_respond(status, "application/json", &body).await;
        let credential = build(&f);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
        let chain = ChainedTokenCredential::new([ChainMember::new(credential)]);
        errors.push(chain.get_token(&[STORAGE], None).await.unwrap_err());
        writeln!(formatted, "{chain:?}").unwrap();
    }

    // Entra refuses: federation mismatch, and a generic error.
    for (code, error) in [(700213, "invalid_request"), (70011, "invalid_scope")] {
        let f = Fixture::new().await;
        f.oidc_ok(&oidc_token(0)).await;
        f.token_respond(
            TENANT,
            400,
            entra_error(code, error, "Something went wrong."),
        )
        .await;
        errors.push(build(&f).get_token(&[STORAGE], None).await.unwrap_err());
    }

    // AADSTS700024: a second OIDC token, and an exchange retried with it.
    {
        let f = Fixture::new().await;
        f.server
            .mock_async(|when, then| {
                when.is_true(first_n(OIDC_PATH.to_owned(), 1));
                then.status(200)
                    .json_body(json!({ "oidcToken": oidc_token(1) }));
            })
            .await;
        f.oidc_ok(&oidc_token(2)).await;
        f.server
            .mock_async(|when, then| {
                when.method(POST)
                    .form_urlencoded_tuple("client_assertion", oidc_token(1));
                then.status(400)
                    .json_body(entra_error(700024, "invalid_client", "Expired."));
            })
            .await;
        f.token_json(TENANT, granted(ACCESS_TOKENS[3], 1800)).await;
        let token = build(&f).get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), ACCESS_TOKENS[3]);

        // The same, persisting.
        let f = Fixture::new().await;
        f.oidc_ok(&oidc_token(1)).await;
        f.token_respond(
            TENANT,
            400,
            entra_error(700024, "invalid_client", "Expired."),
        )
        .await;
        errors.push(build(&f).get_token(&[STORAGE], None).await.unwrap_err());
    }

    // Malformed bodies that hold the secrets.
    for (oidc, token) in [
        (
            None,
            Some(
                json!({"access_token": ACCESS_TOKENS[4], "expires_in": "soon", "token_type": ACCESS_TOKENS[4]}),
            ),
        ),
        (
            None,
            Some(
                json!({"access_token": ACCESS_TOKENS[5], "expires_in": 3599, "token_type": ACCESS_TOKENS[5]}),
            ),
        ),
        (
            None,
            Some(
                json!({"access_token": format!("{}\n##vso[x]", ACCESS_TOKENS[5]), "expires_in": 3599}),
            ),
        ),
        (
            Some(json!({"oidcToken": 5, "x": oidc_token(2)}).to_string()),
            None,
        ),
        (Some(format!("{{\"oidcToken\":\"{}\"", oidc_token(2))), None),
        (
            Some(json!({"oidcToken": format!("{} {}", oidc_token(2), oidc_token(2))}).to_string()),
            None,
        ),
    ] {
        let f = Fixture::new().await;
        match oidc {
            Some(body) => f.oidc_respond(200, "application/json", &body).await,
            None => f.oidc_ok(&oidc_token(0)).await,
        };
        if let Some(body) = token {
            f.token_json(TENANT, body).await;
        }
        errors.push(build(&f).get_token(&[STORAGE], None).await.unwrap_err());
    }

    assert_eq!(errors.len(), 13);
    for error in &errors {
        format_chain(error, &mut formatted);
    }

    // Faults, timeouts, cancellation and a soak-like mix, against the emulator over HTTPS. Its
    // secrets are random per run: they are collected as they are handed out, and every JWT the
    // emulator signed is looked for too (see `emulator_jwts_in`).
    let emulator = Emulator::start().await.unwrap();
    let mut emulator_secrets = vec![emulator.config().system_access_token.clone()];
    let fault_errors = faults_against_the_emulator(&emulator, &mut emulator_secrets).await;
    assert!(fault_errors.len() >= 13, "{}", fault_errors.len());
    for error in &fault_errors {
        format_chain(error, &mut formatted);
    }

    // Debug of the other public types.
    let options = Fixture::new().await.options();
    let context = TokenRequestContext {
        claims: Some("{}".into()),
        tenant_id: Some(TENANT.into()),
        enable_cae: true,
    };
    let assertion = AzurePipelinesAssertion::new(CONNECTION_ID, SYSTEM_TOKEN, None).unwrap();
    let persistent = PersistentCacheOptions::default();
    writeln!(
        formatted,
        "{options:?}\n{options:#?}\n{context:?}\n{assertion:?}\n{assertion:#?}\n{persistent:?}"
    )
    .unwrap();

    let captured = log.text();
    assert!(!captured.is_empty(), "nothing was logged");
    for expected in [
        "OIDC token fetched",
        "access token exchanged",
        "outcome=\"miss\"",
        "outcome=\"hit\"",
        "outcome=\"request with claims\"",
        "OIDC token expired at Entra ID; fetching a new one",
        "attempt 1 got no response within 0.1 s (attempt_timeout)",
    ] {
        assert!(
            captured.contains(expected),
            "no {expected:?} in the log:\n{captured}"
        );
    }
    // The formatting above really formatted the errors, in the credential's and the chain's
    // wording.
    for needle in [
        "AADSTS700213",
        "rejected the System.AccessToken",
        "ChainedTokenCredential authentication failed. AzurePipelinesCredential failed",
        "outside a token's alphabet",
        "did not answer within 0.1 s (attempt_timeout); 4 attempts in all",
        "did not complete within 0.2 s (token_timeout)",
        "could not be completed",
        "HTTP 503",
        "is not valid JSON",
    ] {
        assert!(formatted.contains(needle), "no {needle:?} in {formatted}");
    }
    // The buffers that held a secret and that the crate owns are zeroed when released. (A
    // request body the transport still shared at that moment would be left alone: best
    // effort, so only the positive case is asserted.)
    for body in [
        "OIDC response body",
        "token request body",
        "token response body",
    ] {
        let released = format!("{body} released zeroed=true");
        assert!(captured.contains(&released), "no {released:?} in the log");
    }
    // The scan finds a token it should: a self-check.
    let planted = format!("Bearer {}, ok", emulator.issue_oidc_token());
    assert_eq!(emulator_jwts_in(&emulator, &planted).len(), 1);
    for (what, text) in [("the log", &captured), ("formatted output", &formatted)] {
        let leaked = emulator_jwts_in(&emulator, text);
        assert!(
            leaked.is_empty(),
            "a JWT the emulator signed is in {what}: {leaked:?}"
        );
    }

    for secret in secrets().into_iter().chain(emulator_secrets) {
        for (what, text) in [("the log", &captured), ("formatted output", &formatted)] {
            if let Some(i) = text.find(&secret) {
                let start = text[..i].rfind('\n').map_or(0, |n| n + 1);
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                panic!("secret {secret:?} in {what}, line:\n{}", &text[start..end]);
            }
        }
    }
}

/// Every token-shaped word of `text` (three base64url parts) that the emulator signed.
fn emulator_jwts_in(emulator: &Emulator, text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|word| word.len() > 40 && word.matches('.').count() == 2)
        .filter(|word| emulator.verify_token(word).is_some())
        .map(str::to_owned)
        .collect()
}

/// Drives the failure paths of the reliability tests with the log captured; returns the
/// errors and adds every secret handed out to `secrets`.
async fn faults_against_the_emulator(emulator: &Emulator, secrets: &mut Vec<String>) -> Vec<Error> {
    let control = emulator.control();
    let quick = |attempt_ms, budget_ms| {
        with_timeouts(
            emulator,
            Duration::from_millis(attempt_ms),
            Duration::from_millis(budget_ms),
        )
    };
    let mut errors = Vec::new();
    // An OIDC token of this emulator, through the public assertion provider.
    let assertion = AzurePipelinesAssertion::new(
        &emulator.config().service_connection_id,
        emulator.config().system_access_token.clone(),
        Some(AzurePipelinesAssertionOptions {
            client_options: emulator.client_options(),
            oidc_request_uri: Some(emulator.oidc_request_uri(true)),
            ..Default::default()
        }),
    )
    .unwrap();
    secrets.extend(and_signature(
        assertion.oidc_token().await.unwrap().secret(),
    ));

    for endpoint in ENDPOINTS {
        // A hung endpoint: each attempt times out, then the budget.
        control.inject_fault(endpoint, Fault::Hang, FaultTrigger::Rate(1.0));
        errors.push(
            quick(100, 20_000)
                .get_token(&[STORAGE], None)
                .await
                .unwrap_err(),
        );
        errors.push(
            quick(60_000, 200)
                .get_token(&[STORAGE], None)
                .await
                .unwrap_err(),
        );
        // No pause: the shared OIDC fetch cut by the budget was cancelled with its last waiter.
        control.clear_faults();

        // Faults that outlast the retries, and a malformed 200.
        for fault in outlasting() {
            control.inject_fault(endpoint, fault, FaultTrigger::Rate(1.0));
            errors.push(
                quick(5_000, 20_000)
                    .get_token(&[STORAGE], None)
                    .await
                    .unwrap_err(),
            );
            control.clear_faults();
        }
        control.inject_fault(endpoint, Fault::MalformedJson, FaultTrigger::Count(1));
        errors.push(
            quick(5_000, 20_000)
                .get_token(&[STORAGE], None)
                .await
                .unwrap_err(),
        );
        // ... and then a token. (That the same credential recovers is tests/retries.rs's.)
        let token = quick(5_000, 20_000)
            .get_token_info(&[STORAGE], None)
            .await
            .unwrap();
        secrets.extend(and_signature(token.token.secret()));

        // Faults the retries absorb.
        for fault in absorbed() {
            control.inject_fault(endpoint, fault, FaultTrigger::Count(1));
            // The attempt after the hang must get through, on a busy machine too.
            let token = quick(1_000, 20_000)
                .get_token(&[VAULT], None)
                .await
                .unwrap();
            secrets.extend(and_signature(token.token.secret()));
        }
    }
    control.inject_fault(Endpoint::Oidc, Fault::Html203, FaultTrigger::Count(1));
    errors.push(
        quick(5_000, 20_000)
            .get_token(&[STORAGE], None)
            .await
            .unwrap_err(),
    );

    // A soak-like mix: 4 tasks x 25 calls under rate faults on both endpoints, with callers
    // dropped at random points, and two-second tokens on the real clock (each is refreshed in
    // the background after about a second, and no longer handed out after 1.8 s), while the
    // tasks pause a little every fifth call.
    control.set_access_token_lifetime(Duration::from_secs(2));
    for endpoint in ENDPOINTS {
        for fault in mix() {
            control.inject_fault(endpoint, fault, FaultTrigger::Rate(0.085));
        }
    }
    let credential = quick(2_000, 10_000);
    let outcomes: Vec<_> = (0..4u64)
        .map(|task| {
            let credential = credential.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for call in 0..25u64 {
                    let scope = [STORAGE, VAULT][(call % 2) as usize];
                    let limit = Duration::from_millis((task * 7 + call * 3) % 20 + 1);
                    match tokio::time::timeout(limit, credential.get_token_info(&[scope], None))
                        .await
                    {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(_dropped) => {}
                    }
                    if call % 5 == 4 {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                }
                outcomes
            })
        })
        .collect();
    for task in outcomes {
        for outcome in task.await.unwrap() {
            match outcome {
                Ok(token) => secrets.extend(and_signature(token.token.secret())),
                Err(error) => errors.push(error),
            }
        }
    }
    control.clear_faults();
    let token = credential.get_token_info(&[STORAGE], None).await.unwrap();
    secrets.extend(and_signature(token.token.secret()));
    errors
}
