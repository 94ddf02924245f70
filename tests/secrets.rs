//! No secret ever reaches a log line, an error message (Display or Debug, along the whole
//! source chain) or a `Debug` of the public types.
//!
//! One test: it installs a global subscriber that captures every event at TRACE level (the
//! credential's, azure_core's, reqwest's and hyper's, and `log` records through `tracing-log`),
//! then drives success and failure paths over loopback HTTP and searches everything captured
//! and formatted for the secret values. Only the mock server's own log is left out: it prints
//! the requests it receives, which carry the secrets by design.

use azure_core::{
    credentials::{TokenCredential, TokenRequestOptions},
    error::Error,
    http::{ClientOptions, ExponentialRetryOptions, RetryOptions},
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{
    AzurePipelinesAssertion, AzurePipelinesCredential, AzurePipelinesCredentialOptions,
    TokenRequestContext, clock::ManualClock,
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

    for secret in secrets() {
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
