//! Failures through a token's life: a failed background refresh keeps the valid token (logged,
//! retried after the back-off, and never with a secret in the log or the error), an outage does
//! not break a valid cached token, and past the stop time callers get the failure, never the
//! old token.

use super::{Events, FAILED, STORAGE, no_retry, requests, setup};
use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::{Emulator, Endpoint, Fault, FaultTrigger};
use serde_json::json;
use std::{error::Error as StdError, fmt::Write as _, time::Duration as StdDuration};
use time::Duration;

const REFRESH_FAILED: &str = "token refresh failed; the cached token is still valid";

// The background refresh runs in a spawned task: a current-thread runtime keeps it on this
// thread, where the thread-local subscriber sees its events.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_refresh_keeps_the_valid_token_then_callers_wait_after_the_stop_time() {
    let (events, _guard) = Events::record();
    let (emulator, time, credential) = setup(no_retry).await;
    let control = emulator.control();
    control.set_access_token_lifetime(StdDuration::from_secs(3600));
    control.set_refresh_in(Some(StdDuration::from_secs(600)));
    let first = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(first.refresh_on, Some(time.at(600)));
    assert_eq!(requests(&emulator).1, 1);

    // Entra starts failing; the clock enters the refresh window (refresh at <= +600 s, stop at
    // +3570 s).
    control.inject_fault(
        Endpoint::Token,
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        FaultTrigger::Rate(1.0),
    );
    time.set(1000);

    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, first.token, "served at once while refreshing");
    assert_eq!(events.wait_for(REFRESH_FAILED, 1).await, 1);
    assert_eq!(requests(&emulator).1, 2, "one background refresh");

    // Within the back-off the old token keeps being served and no new attempt starts.
    for _ in 0..5 {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token, first.token);
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(requests(&emulator).1, 2, "no refresh during the back-off");

    // After the back-off the next call tries again, still serving the old token.
    time.set(1031);
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, first.token);
    assert_eq!(events.wait_for(REFRESH_FAILED, 2).await, 2);
    assert_eq!(requests(&emulator).1, 3);

    // Past the stop time (30 s before expiry) the old token is no longer handed out: the caller
    // waits for a new one.
    control.clear_faults();
    control.set_access_token_lifetime(StdDuration::from_secs(3599));
    control.set_refresh_in(None);
    time.set(3580);
    let second = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_ne!(second.token, first.token);
    assert_eq!(second.expires_on, time.at(3580 + 3599));
    assert_eq!(requests(&emulator).1, 4);

    assert!(!events.any(first.token.secret()), "a token in the log");
}

#[tokio::test]
async fn past_the_stop_time_a_failure_is_returned_not_the_old_token() {
    let (emulator, time, credential) = setup(no_retry).await;
    credential.get_token(&[STORAGE], None).await.unwrap();

    emulator.control().inject_fault(
        Endpoint::Token,
        Fault::entra_error(400, "unauthorized_client", 700016, "Application not found."),
        FaultTrigger::Rate(1.0),
    );
    // The emulator's tokens live 3599 s; they are handed out until 30 s before that.
    time.set(3599 - 10);

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with(FAILED), "{text}");
    assert!(text.contains("was not found in the tenant"), "{text}");
    assert_eq!(requests(&emulator).1, 2);
}

#[tokio::test]
async fn outage_does_not_break_a_valid_cached_token() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let first = credential.get_token(&[STORAGE], None).await.unwrap();
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        emulator.control().inject_fault(
            endpoint,
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            FaultTrigger::Rate(1.0),
        );
    }
    time.advance(Duration::minutes(56));
    for _ in 0..50 {
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token, first.token);
    }
    // Past the stop time the outage shows.
    time.advance(Duration::minutes(4));
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert!(error.to_string().starts_with(FAILED), "{error}");
}

/// `Display`, `Debug` and `{:#?}` of `error` and of every error of its source chain.
fn error_text(error: &azure_core::Error) -> String {
    let mut text = format!("{error}\n{error:?}\n{error:#?}\n");
    let mut source = error.source();
    while let Some(e) = source {
        let _ = writeln!(text, "{e}\n{e:?}");
        source = e.source();
    }
    text
}

/// Every token-shaped word of `text` (three base64url parts) that the emulator signed: the
/// OIDC tokens and access tokens it handed out, whatever their values.
fn emulator_jwts_in(emulator: &Emulator, text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .filter(|word| word.len() > 40 && word.matches('.').count() == 2)
        .filter(|word| emulator.verify_token(word).is_some())
        .map(str::to_owned)
        .collect()
}

/// Runs of 43 or more base64url characters with both cases in them: a 256-bit secret, an
/// ES256 signature (86) or any part of a JWT would be one (random base64url lacks either case
/// with a chance under 1e-9). What the credential writes has none: GUIDs are 36 characters,
/// URLs and scopes break at their punctuation, names such as this test's are lower case.
fn long_base64url_runs(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        .filter(|word| word.len() >= 43)
        .filter(|word| {
            word.chars().any(|c| c.is_ascii_uppercase())
                && word.chars().any(|c| c.is_ascii_lowercase())
        })
        .collect()
}

/// The signature of a compact JWT.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// A background refresh that fails logs a warning with its cause, keeps the valid token, and
/// neither the warning, nor any other event or span of that path, nor the errors the same
/// failures give at a hard miss hold a secret: the System.AccessToken, an OIDC token (the
/// client assertion), an access token, or a signature of one. Broken responses that hold
/// tokens (signed by the emulator, like the real ones) are among the failures.
///
/// On the manual clock: the refresh window and each back-off are crossed without waiting.
#[tokio::test(flavor = "current_thread")]
async fn failed_refreshes_log_their_cause_and_no_secret() {
    let (events, _guard) = Events::record();
    let (emulator, time, credential) = setup(no_retry).await;
    let control = emulator.control();
    control.set_access_token_lifetime(StdDuration::from_secs(3600));
    control.set_refresh_in(Some(StdDuration::from_secs(600)));
    let first = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(requests(&emulator), (1, 1));

    let planted_access = emulator.sign_claims(&json!({
        "aud": "https://storage.azure.com",
        "tid": emulator.config().tenant_id,
        "planted": "access token in a broken response",
    }));
    let planted_oidc = emulator.issue_oidc_token();
    let body = |status: u16, value: serde_json::Value| Fault::Body {
        status,
        content_type: "application/json; charset=utf-8".to_owned(),
        body: value.to_string().into_bytes(),
    };
    // Each failure, and what its warning (and error) says.
    let failures = [
        (
            Endpoint::Token,
            Fault::entra_error(500, "server_error", 50000, "The service is busy."),
            "Microsoft Entra ID refused the token request",
        ),
        (
            Endpoint::Token,
            body(
                200,
                json!({"access_token": planted_access, "expires_in": "soon", "token_type": planted_access}),
            ),
            "token_type is not Bearer",
        ),
        (
            Endpoint::Token,
            body(
                200,
                json!({"access_token": format!("{planted_access}\n##vso[task.setvariable variable=PATH]x"), "expires_in": 3599}),
            ),
            "access_token contains characters outside a token's alphabet",
        ),
        (
            Endpoint::Oidc,
            body(200, json!({"oidcToken": 5, "x": planted_oidc})),
            "non-string oidcToken",
        ),
        (
            Endpoint::Oidc,
            body(
                200,
                json!({"oidcToken": format!("{planted_oidc} {planted_oidc}")}),
            ),
            "oidcToken contains characters outside a token's alphabet",
        ),
        (
            Endpoint::Oidc,
            Fault::Status {
                status: 401,
                retry_after: None,
            },
            "Azure DevOps rejected the System.AccessToken",
        ),
    ];

    // In the refresh window (refresh at +540..600 s, stop at +3570 s), one failed refresh per
    // back-off. The emulator's OIDC tokens live 10 minutes of real time, so each refresh
    // fetches a new one first (the credential's clock is past their reuse time).
    time.set(1000);
    for (n, (endpoint, fault, _)) in failures.iter().enumerate() {
        control.inject_fault(*endpoint, fault.clone(), FaultTrigger::Count(1));
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token, first.token, "served while refreshing");
        assert_eq!(events.wait_for(REFRESH_FAILED, n + 1).await, n + 1);
        time.advance(Duration::seconds(31));
    }
    // Three refreshes failed at Entra (an OIDC request and an exchange each), three at the
    // OIDC endpoint.
    assert_eq!(requests(&emulator), (7, 4));
    let log = events.text_of("azure_pipelines_credential");
    for (_, _, cause) in &failures {
        assert!(
            log.lines()
                .any(|line| line.contains(REFRESH_FAILED) && line.contains(cause)),
            "no warning with {cause:?} in:\n{log}"
        );
    }

    // Past the stop time the same failures reach the caller.
    time.set(3580);
    let mut errors = String::new();
    for (endpoint, fault, cause) in &failures {
        control.inject_fault(*endpoint, fault.clone(), FaultTrigger::Count(1));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with(FAILED), "{text}");
        assert!(text.contains(cause), "{text}");
        errors.push_str(&error_text(&error));
    }
    assert_eq!(requests(&emulator), (13, 7));
    let last = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_ne!(last.token, first.token);

    let spans = events.spans_text();
    for needle in [
        "azure_pipelines_credential token_refresh",
        "outcome=\"hit, refreshing in the background\"",
    ] {
        assert!(
            spans.contains(needle),
            "no {needle:?} in the spans:\n{spans}"
        );
    }
    // Everything the credential and its HTTP stack logged (not the emulator's own log: it
    // is the server), every span's fields, every error.
    let everything = [
        events.text_of("azure"),
        events.text_of("reqwest"),
        events.text_of("hyper"),
        events.text_of("rustls"),
        spans.clone(),
        errors.clone(),
    ]
    .join("\n");
    let everything = everything
        .lines()
        .filter(|line| !line.starts_with("azure_pipelines_emulator"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(everything.contains(REFRESH_FAILED));
    let system = emulator.config().system_access_token.clone();
    let mut secrets = vec![system.as_str()];
    for token in [
        first.token.secret(),
        last.token.secret(),
        planted_access.as_str(),
        planted_oidc.as_str(),
    ] {
        secrets.extend([token, signature(token)]);
    }
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "a secret in the log, a span or an error:\n{everything}"
        );
    }
    // The scans find what they look for: a self-check.
    let planted = format!("Bearer {planted_oidc}, and {}.", signature(&planted_access));
    assert_eq!(
        emulator_jwts_in(&emulator, &planted),
        std::slice::from_ref(&planted_oidc)
    );
    assert_eq!(long_base64url_runs(&planted).len(), 4, "{planted}");
    let leaked = emulator_jwts_in(&emulator, &everything);
    assert!(leaked.is_empty(), "tokens the emulator signed: {leaked:?}");
    // The credential's own words: no run that could be a secret or a signature at all.
    let own = [log.as_str(), spans.as_str(), errors.as_str()].join("\n");
    let runs = long_base64url_runs(&own);
    assert!(runs.is_empty(), "secret-like runs: {runs:?}");
}
