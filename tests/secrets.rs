//! No secret ever reaches a log line, an error message (Display or Debug, along the whole
//! source chain) or a `Debug` of the public types.
//!
//! One test: it installs a global subscriber that captures every event at TRACE level (the
//! credential's, azure_core's, reqwest's and hyper's, and `log` records through `tracing-log`),
//! then drives success and failure paths over loopback HTTP and searches everything captured
//! and formatted for the secret values. Only the mock server's own log is left out: it prints
//! the requests it receives, which carry the secrets by design.
//!
//! The failure paths of `tests/reliability.rs` run here too, against the emulator over HTTPS:
//! hung endpoints (per-attempt timeouts and the overall budget), dropped connections, 503 and
//! 429 past the retries, malformed 200s, a sign-in page, faults the retries absorb, and a
//! soak-like mix of rate faults with callers dropped at random points.

use azure_core::{
    credentials::{TokenCredential, TokenRequestOptions},
    error::Error,
    http::{ClientOptions, ExponentialRetryOptions, RetryOptions},
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{
    AzurePipelinesAssertion, AzurePipelinesAssertionOptions, AzurePipelinesCredential,
    AzurePipelinesCredentialOptions, TokenRequestContext,
    clock::ManualClock,
    emulator::{Emulator, Endpoint, Fault, FaultTrigger},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use httpmock::{HttpMockRequest, Method::POST, MockServer};
use serde_json::{Value, json};
use std::{
    error::Error as StdError,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use time::{Duration, OffsetDateTime};
use tracing_subscriber::{EnvFilter, util::SubscriberInitExt as _};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0b8d8f12-5a3e-4c1e-9f0a-2f4f5e6d7c8b";
const CONNECTION_ID: &str = "3d5c2f6a-8b9e-4f1a-a2b3-c4d5e6f70819";
const OIDC_PATH: &str = "/org/proj/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken";
const STORAGE: &str = "https://storage.azure.com/.default";
const VAULT: &str = "https://vault.azure.net/.default";
const START: i64 = 1_767_225_600;

/// The job's System.AccessToken.
const SYSTEM_TOKEN: &str = "q7Zk2mW4vB8nL1pR6tY3cF0hJ5dGxN9sQeUa";
/// Signatures of the OIDC tokens: the part of a JWT that makes it usable.
const OIDC_SIGNATURES: [&str; 3] = [
    "Xr4Tq9LmZ2vW7bN1cK8pJ3hF6dS0gA5y",
    "Pk2Vn8Wq5Lr1Zt7Xm4Bc9Hj3Gf6Ds0Ya",
    "Hd6Ys1Kq8Vm3Zr5Wn9Lt2Pb7Xc4Jf0Ga",
];
/// Access tokens Entra hands out in the scenarios.
const ACCESS_TOKENS: [&str; 6] = [
    "at0.Mz9Qx4Wv7Tb2Nk6Lp1Rj8Hc3Fd5Gs0Ya",
    "at1.Vb3Nm8Qz1Wx6Tk4Lr9Pj2Hc7Fd0Gs5Ya",
    "at2.Kp5Zr2Wm9Qx4Tb7Ln1Vj6Hc3Fd8Gs0Ya",
    "at3.Tx8Qm1Zk5Wr3Vb6Np9Lj4Hc2Fd7Gs0Ya",
    "at4.Wz6Kq3Mx8Vr1Tb5Lp2Nj9Hc4Fd0Gs7Ya",
    "at5.Rb1Qk7Zm4Wx9Tv2Ln6Pj3Hc8Fd5Gs0Ya",
];

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(START + seconds).unwrap()
}

fn oidc_token(n: usize) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "kQ2g3dVb0e1f"});
    let payload = json!({
        "jti": format!("a0b1c2d3-{n}"),
        "iss": "https://vstoken.dev.azure.com/0d3e1f2a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "sub": "sc://org/proj/my-connection",
        "aud": "api://AzureADTokenExchange",
        "iat": START,
        "nbf": START,
        "exp": START + 600,
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        OIDC_SIGNATURES[n]
    )
}

fn secrets() -> Vec<String> {
    let mut all = vec![SYSTEM_TOKEN.to_owned()];
    all.extend(OIDC_SIGNATURES.iter().map(|s| (*s).to_owned()));
    all.extend((0..OIDC_SIGNATURES.len()).map(oidc_token));
    all.extend(ACCESS_TOKENS.iter().map(|s| (*s).to_owned()));
    all
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn options(server: &MockServer, clock: &ManualClock) -> AzurePipelinesCredentialOptions {
    let client_options = ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: Duration::milliseconds(1),
            max_retries: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    AzurePipelinesCredentialOptions {
        credential_options: ClientAssertionCredentialOptions { client_options },
        authority_host: Some(server.base_url()),
        oidc_request_uri: Some(server.url(OIDC_PATH)),
        clock: Some(Arc::new(clock.clone())),
        additionally_allowed_tenants: vec!["*".into()],
        ..Default::default()
    }
}

fn build(server: &MockServer, clock: &ManualClock) -> Arc<AzurePipelinesCredential> {
    AzurePipelinesCredential::new(
        TENANT.into(),
        CLIENT_ID.into(),
        CONNECTION_ID,
        SYSTEM_TOKEN,
        Some(options(server, clock)),
    )
    .unwrap()
}

async fn oidc_answers(server: &MockServer, status: u16, body: String) {
    server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            then.status(status)
                .header("content-type", "application/json")
                .header("x-vss-e2eid", "9f1c7a52-e2e0-4c4b-9b1e-6d0c1a2b3c4d")
                .header("x-msedge-ref", "Ref A: 5C1D2E3F4A5B")
                .body(body);
        })
        .await;
}

async fn oidc_ok(server: &MockServer, n: usize) {
    oidc_answers(
        server,
        200,
        json!({ "oidcToken": oidc_token(n) }).to_string(),
    )
    .await;
}

async fn token_answers(server: &MockServer, status: u16, body: Value) {
    server
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"));
            then.status(status)
                .header("content-type", "application/json")
                .json_body(body);
        })
        .await;
}

fn granted(access_token: &str) -> Value {
    json!({"token_type": "Bearer", "expires_in": 3599, "refresh_in": 1800, "access_token": access_token})
}

fn entra_error(code: i64, error: &str) -> Value {
    json!({
        "error": error,
        "error_description": format!("AADSTS{code}: Something went wrong.\r\nTrace ID: 1111\r\nCorrelation ID: 2222"),
        "error_codes": [code],
        "trace_id": "11111111-2222-3333-4444-555555555555",
        "correlation_id": "66666666-7777-8888-9999-000000000000",
    })
}

/// `{error}`, `{error:?}` and the same for every error of its source chain.
fn format_chain(error: &Error, out: &mut String) {
    writeln!(out, "{error}\n{error:?}\n{error:#?}").unwrap();
    let mut current: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = current {
        writeln!(out, "{e}\n{e:?}").unwrap();
        current = e.source();
    }
}

fn claims() -> Option<TokenRequestOptions<'static>> {
    Some(
        TokenRequestContext {
            claims: Some(
                r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#.into(),
            ),
            ..Default::default()
        }
        .into(),
    )
}

fn cae() -> Option<TokenRequestOptions<'static>> {
    Some(
        TokenRequestContext {
            enable_cae: true,
            ..Default::default()
        }
        .into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace,httpmock=off"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .try_init()
        .expect("the only subscriber of this test binary");

    let clock = ManualClock::new(at(0));
    let mut formatted = String::new();
    let mut errors: Vec<Error> = Vec::new();

    // Success, cache hit, claims and CAE.
    {
        let server = MockServer::start_async().await;
        oidc_ok(&server, 0).await;
        server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(format!("/{TENANT}/oauth2/v2.0/token"))
                    .form_urlencoded_tuple_exists("claims")
                    .form_urlencoded_tuple("scope", VAULT);
                then.status(200).json_body(granted(ACCESS_TOKENS[2]));
            })
            .await;
        server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(format!("/{TENANT}/oauth2/v2.0/token"))
                    .form_urlencoded_tuple_exists("claims");
                then.status(200).json_body(granted(ACCESS_TOKENS[1]));
            })
            .await;
        token_answers(&server, 200, granted(ACCESS_TOKENS[0])).await;
        let credential = build(&server, &clock);

        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), ACCESS_TOKENS[0]);
        let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(info.token.secret(), ACCESS_TOKENS[0]);
        let challenged = credential.get_token(&[STORAGE], claims()).await.unwrap();
        assert_eq!(challenged.token.secret(), ACCESS_TOKENS[1]);
        let cae_token = credential.get_token_info(&[VAULT], cae()).await.unwrap();
        assert_eq!(cae_token.token.secret(), ACCESS_TOKENS[2]);

        // A background refresh that fails is logged as a warning with its error.
        server.reset_async().await;
        oidc_ok(&server, 0).await;
        token_answers(&server, 500, entra_error(50000, "server_error")).await;
        clock.set(at(2000));
        let still = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(
            still.token.secret(),
            ACCESS_TOKENS[1],
            "the claims token now serves the key"
        );
        for _ in 0..1000 {
            if String::from_utf8_lossy(&log.0.lock().unwrap()).contains("token refresh failed") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        clock.set(at(0));

        writeln!(
            formatted,
            "{credential:?}\n{credential:#?}\n{token:?}\n{token:#?}\n{info:?}\n{info:#?}\n{challenged:?}\n{cae_token:?}\n{still:?}"
        )
        .unwrap();
        credential.close().await;
        writeln!(formatted, "{credential:?}").unwrap();
    }

    // The OIDC endpoint refuses: 401, then a VSS error.
    for (status, body) in [
        (401, String::new()),
        (
            400,
            json!({
                "$id": "1",
                "innerException": null,
                "message": format!("No service connection found with identifier {CONNECTION_ID}."),
                "typeName": "Microsoft.TeamFoundation.DistributedTask.WebApi.ServiceEndpointNotFoundException",
                "typeKey": "ServiceEndpointNotFoundException",
                "errorCode": 0,
                "eventId": 3000
            })
            .to_string(),
        ),
    ] {
        let server = MockServer::start_async().await;
        oidc_answers(&server, status, body).await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
    }

    // Entra refuses: federation mismatch, and a generic error.
    for (code, error) in [(700213, "invalid_request"), (70011, "invalid_scope")] {
        let server = MockServer::start_async().await;
        oidc_ok(&server, 0).await;
        token_answers(&server, 400, entra_error(code, error)).await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
    }

    // AADSTS700024: a second OIDC token, and an exchange retried with it.
    {
        let server = MockServer::start_async().await;
        let seen = AtomicUsize::new(0);
        server
            .mock_async(|when, then| {
                when.is_true(move |req: &HttpMockRequest| {
                    req.uri().path() == OIDC_PATH && seen.fetch_add(1, Ordering::SeqCst) < 1
                });
                then.status(200)
                    .json_body(json!({ "oidcToken": oidc_token(1) }));
            })
            .await;
        oidc_ok(&server, 2).await;
        server
            .mock_async(|when, then| {
                when.method(POST)
                    .form_urlencoded_tuple("client_assertion", oidc_token(1));
                then.status(400)
                    .json_body(entra_error(700024, "invalid_client"));
            })
            .await;
        token_answers(&server, 200, granted(ACCESS_TOKENS[3])).await;
        let credential = build(&server, &clock);
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), ACCESS_TOKENS[3]);

        // The same, persisting.
        let server = MockServer::start_async().await;
        oidc_ok(&server, 1).await;
        token_answers(&server, 400, entra_error(700024, "invalid_client")).await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
    }

    // Malformed bodies that hold the secrets.
    {
        let server = MockServer::start_async().await;
        oidc_ok(&server, 0).await;
        token_answers(
            &server,
            200,
            json!({"access_token": ACCESS_TOKENS[4], "expires_in": "soon", "token_type": ACCESS_TOKENS[4]}),
        )
        .await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());

        let server = MockServer::start_async().await;
        oidc_ok(&server, 0).await;
        token_answers(
            &server,
            200,
            json!({"access_token": ACCESS_TOKENS[5], "expires_in": 3599, "token_type": ACCESS_TOKENS[5]}),
        )
        .await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());

        let server = MockServer::start_async().await;
        oidc_answers(
            &server,
            200,
            json!({"oidcToken": 5, "x": oidc_token(2)}).to_string(),
        )
        .await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());

        let server = MockServer::start_async().await;
        oidc_answers(
            &server,
            200,
            format!("{{\"oidcToken\":\"{}\"", oidc_token(2)),
        )
        .await;
        let credential = build(&server, &clock);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
    }

    assert_eq!(errors.len(), 9);
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
    let options = options(&MockServer::start_async().await, &clock);
    let context = TokenRequestContext {
        claims: Some("{}".into()),
        tenant_id: Some(TENANT.into()),
        enable_cae: true,
    };
    let assertion = AzurePipelinesAssertion::new(CONNECTION_ID, SYSTEM_TOKEN, None).unwrap();
    writeln!(
        formatted,
        "{options:?}\n{options:#?}\n{context:?}\n{assertion:?}\n{assertion:#?}"
    )
    .unwrap();

    let captured = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(!captured.is_empty(), "nothing was logged");
    for expected in [
        "OIDC token fetched",
        "access token exchanged",
        "token cache: miss",
        "token cache: hit",
        "token cache: refreshing in the background",
        "token refresh failed",
        "OIDC token expired at Entra ID; fetching a new one",
        "attempt 1 got no response within 0.1 s (attempt_timeout)",
    ] {
        assert!(
            captured.contains(expected),
            "no {expected:?} in the log:\n{captured}"
        );
    }
    // The formatting above really formatted the errors.
    assert!(formatted.contains("AADSTS700213"), "{formatted}");
    assert!(
        formatted.contains("rejected the System.AccessToken"),
        "{formatted}"
    );

    // The formatting above really formatted the new failure paths.
    for needle in [
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
        if let Some(i) = captured.find(&secret) {
            let start = captured[..i].rfind('\n').map_or(0, |n| n + 1);
            let end = captured[i..].find('\n').map_or(captured.len(), |n| i + n);
            panic!(
                "secret {secret:?} in the log, line:\n{}",
                &captured[start..end]
            );
        }
        if let Some(i) = formatted.find(&secret) {
            let start = formatted[..i].rfind('\n').map_or(0, |n| n + 1);
            let end = formatted[i..].find('\n').map_or(formatted.len(), |n| i + n);
            panic!(
                "secret {secret:?} in formatted output, line:\n{}",
                &formatted[start..end]
            );
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

/// A token and, separately, its signature: the part that makes it usable.
fn and_signature(token: &str) -> [String; 2] {
    let signature = token.rsplit('.').next().unwrap_or(token);
    [token.to_owned(), signature.to_owned()]
}

fn emulator_credential(
    emulator: &Emulator,
    clock: &ManualClock,
    attempt_timeout: std::time::Duration,
    token_timeout: std::time::Duration,
) -> Arc<AzurePipelinesCredential> {
    let c = emulator.config();
    AzurePipelinesCredential::new(
        c.tenant_id.clone(),
        c.client_id.clone(),
        &c.service_connection_id,
        c.system_access_token.clone(),
        Some(AzurePipelinesCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: emulator.client_options(),
            },
            authority_host: Some(emulator.authority_host(true)),
            oidc_request_uri: Some(emulator.oidc_request_uri(true)),
            clock: Some(Arc::new(clock.clone())),
            attempt_timeout: Some(attempt_timeout),
            token_timeout: Some(token_timeout),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// Drives the failure paths of the reliability tests with the log captured; returns the
/// errors and adds every secret handed out to `secrets`.
async fn faults_against_the_emulator(emulator: &Emulator, secrets: &mut Vec<String>) -> Vec<Error> {
    use std::time::Duration as StdDuration;
    let control = emulator.control();
    let clock = ManualClock::starting_now();
    let quick = |attempt_ms: u64, budget_ms: u64| {
        emulator_credential(
            emulator,
            &clock,
            StdDuration::from_millis(attempt_ms),
            StdDuration::from_millis(budget_ms),
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

    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
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
        control.clear_faults();
        // Let the shared OIDC fetch cut by the budget wind down before the next credential.
        tokio::time::sleep(StdDuration::from_millis(100)).await;

        // Faults that outlast the retries, and a malformed 200.
        for fault in [
            Fault::DropConnection,
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::Status {
                status: 429,
                retry_after: Some(0),
            },
        ] {
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
        let credential = quick(5_000, 20_000);
        errors.push(credential.get_token(&[STORAGE], None).await.unwrap_err());
        // ... and the next call succeeds.
        let token = credential.get_token_info(&[STORAGE], None).await.unwrap();
        secrets.extend(and_signature(token.token.secret()));

        // Faults the retries absorb.
        for fault in [
            Fault::DropConnection,
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::Hang,
        ] {
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
    // dropped at random points, and short tokens on a moving clock.
    control.set_access_token_lifetime(StdDuration::from_secs(120));
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        for fault in [
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::Status {
                status: 429,
                retry_after: Some(0),
            },
            Fault::DropConnection,
            Fault::MalformedJson,
        ] {
            control.inject_fault(endpoint, fault, FaultTrigger::Rate(0.085));
        }
    }
    let credential = quick(2_000, 10_000);
    let outcomes: Vec<_> = (0..4u64)
        .map(|task| {
            let (credential, clock) = (credential.clone(), clock.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for call in 0..25u64 {
                    let scope = [STORAGE, VAULT][(call % 2) as usize];
                    let limit = StdDuration::from_millis((task * 7 + call * 3) % 20 + 1);
                    match tokio::time::timeout(limit, credential.get_token_info(&[scope], None))
                        .await
                    {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(_dropped) => {}
                    }
                    if call % 5 == 4 {
                        clock.advance(Duration::seconds(30));
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
