//! `AzurePipelinesCredential` over real HTTP on loopback: one httpmock server plays both the
//! Azure DevOps OIDC endpoint and the Microsoft Entra ID token endpoint.
//!
//! Every test builds its credential with [`Fixture::credential`] (no retries, a
//! [`ManualClock`], the mock as authority host and OIDC endpoint) and asserts request counts
//! with `hits_async`, never timings.

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{TokenCredential, TokenRequestOptions},
    error::{Error, ErrorKind},
    http::{ClientOptions, ExponentialRetryOptions, RetryOptions, StatusCode},
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{
    AccessTokenInfo, AzurePipelinesCredential, AzurePipelinesCredentialOptions,
    TokenRequestContext, clock::ManualClock, is_unavailable,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use httpmock::{HttpMockRequest, Method::POST, Mock, MockServer};
use serde_json::{Value, json};
use std::{
    error::Error as StdError,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use time::{Duration, OffsetDateTime};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "c0ffee00-1111-4222-8333-444455556666";
const THIRD_TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "0b8d8f12-5a3e-4c1e-9f0a-2f4f5e6d7c8b";
const CONNECTION_ID: &str = "3d5c2f6a-8b9e-4f1a-a2b3-c4d5e6f70819";
const SYSTEM_TOKEN: &str = "sysAT.eyJ0ZXN0IjoidHJ1ZSJ9.Zk9xR3pLd1ZtN0hq";
const OIDC_PATH: &str = "/org/proj/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken";
const STORAGE: &str = "https://storage.azure.com/.default";
const VAULT: &str = "https://vault.azure.net/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const E2EID: &str = "9f1c7a52-e2e0-4c4b-9b1e-6d0c1a2b3c4d";
const MSEDGE: &str = "Ref A: 5C1D2E3F4A5B Ref B: AMS231000109023 Ref C: 2026-01-01T00:00:00Z";
const PREFIX: &str = "AzurePipelinesCredential authentication failed. ";
const ISS: &str = "https://vstoken.dev.azure.com/0d3e1f2a-4b5c-4d6e-8f70-8192a3b4c5d6";
const SUB: &str = "sc://org/proj/my-connection";
const AUD: &str = "api://AzureADTokenExchange";
/// 2026-01-01T00:00:00Z: where every test's clock starts.
const START: i64 = 1_767_225_600;

fn at(seconds_after_start: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(START + seconds_after_start).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An unsigned but real-looking OIDC token of the service connection, valid 10 minutes from
/// the start of the test clock; `marker` makes tokens distinct.
fn oidc_jwt(marker: &str) -> String {
    let header =
        json!({"typ": "JWT", "alg": "RS256", "x5t": "kQ2g3dVb0e1f", "kid": "kQ2g3dVb0e1f"});
    let payload = json!({
        "jti": format!("jti-{marker}"),
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "iat": START,
        "nbf": START,
        "exp": START + 600,
    });
    format!(
        "{}.{}.{}",
        b64(&header),
        b64(&payload),
        URL_SAFE_NO_PAD.encode(format!("signature-of-{marker}-Xk29sLq"))
    )
}

fn token_path(tenant: &str) -> String {
    format!("/{tenant}/oauth2/v2.0/token")
}

fn no_retry() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

fn quick_retry() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: Duration::milliseconds(1),
            max_retries: 3,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn context(context: TokenRequestContext) -> Option<TokenRequestOptions<'static>> {
    Some(context.into())
}

fn with_claims(claims: &str) -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        claims: Some(claims.to_owned()),
        ..Default::default()
    })
}

fn with_tenant(tenant: &str) -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        tenant_id: Some(tenant.to_owned()),
        ..Default::default()
    })
}

fn with_cae() -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        enable_cae: true,
        ..Default::default()
    })
}

/// A matcher that accepts the first `n` requests to `path` and then no more (httpmock serves
/// the first created mock that matches, so a later mock takes over afterwards).
fn first_n(path: String, n: usize) -> impl Fn(&HttpMockRequest) -> bool + Send + Sync + 'static {
    let seen = AtomicUsize::new(0);
    move |req| req.uri().path() == path && seen.fetch_add(1, Ordering::SeqCst) < n
}

/// The `claims` form field of a token request, parsed as JSON.
fn claims_of(req: &HttpMockRequest) -> Option<Value> {
    url::form_urlencoded::parse(req.body_ref())
        .find(|(k, _)| k == "claims")
        .and_then(|(_, v)| serde_json::from_str(&v).ok())
}

fn access_token_body(access_token: &str) -> Value {
    json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access_token,
    })
}

fn entra_error(code: i64, error: &str, description: &str) -> Value {
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: 11111111-2222-3333-4444-555555555555\r\nCorrelation ID: 66666666-7777-8888-9999-000000000000\r\nTimestamp: 2026-01-01 00:00:00Z"
        ),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "11111111-2222-3333-4444-555555555555",
        "correlation_id": "66666666-7777-8888-9999-000000000000",
        "error_uri": "https://login.microsoftonline.com/error?code=".to_owned() + &code.to_string(),
    })
}

struct Fixture {
    server: MockServer,
    clock: ManualClock,
}

impl Fixture {
    async fn new() -> Self {
        Self {
            server: MockServer::start_async().await,
            clock: ManualClock::new(at(0)),
        }
    }

    fn options(&self) -> AzurePipelinesCredentialOptions {
        AzurePipelinesCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: no_retry(),
            },
            authority_host: Some(self.server.base_url()),
            oidc_request_uri: Some(self.server.url(OIDC_PATH)),
            clock: Some(Arc::new(self.clock.clone())),
            ..Default::default()
        }
    }

    fn credential(&self) -> Arc<AzurePipelinesCredential> {
        self.credential_with(|_| {})
    }

    fn credential_with(
        &self,
        customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
    ) -> Arc<AzurePipelinesCredential> {
        self.try_credential(CONNECTION_ID, customize).unwrap()
    }

    fn try_credential(
        &self,
        connection_id: &str,
        customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
    ) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
        let mut options = self.options();
        customize(&mut options);
        AzurePipelinesCredential::new(
            TENANT.to_owned(),
            CLIENT_ID.to_owned(),
            connection_id,
            SYSTEM_TOKEN,
            Some(options),
        )
    }

    /// The OIDC endpoint answering `{"oidcToken": token}`.
    async fn oidc_ok(&self, token: &str) -> Mock<'_> {
        let body = json!({ "oidcToken": token });
        self.server
            .mock_async(|when, then| {
                when.method(POST).path(OIDC_PATH);
                then.status(200)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("x-vss-e2eid", E2EID)
                    .header("x-msedge-ref", MSEDGE)
                    .json_body(body);
            })
            .await
    }

    /// The OIDC endpoint answering `status` with `body` and the diagnostic headers.
    async fn oidc_respond(&self, status: u16, content_type: &str, body: &str) -> Mock<'_> {
        self.server
            .mock_async(|when, then| {
                when.method(POST).path(OIDC_PATH);
                then.status(status)
                    .header("content-type", content_type)
                    .header("x-vss-e2eid", E2EID)
                    .header("x-msedge-ref", MSEDGE)
                    .body(body);
            })
            .await
    }

    /// The token endpoint of `tenant` answering `body` with 200.
    async fn token_json(&self, tenant: &str, body: Value) -> Mock<'_> {
        self.token_respond(tenant, 200, body).await
    }

    async fn token_ok(&self, tenant: &str, access_token: &str) -> Mock<'_> {
        self.token_json(tenant, access_token_body(access_token))
            .await
    }

    async fn token_respond(&self, tenant: &str, status: u16, body: Value) -> Mock<'_> {
        self.server
            .mock_async(|when, then| {
                when.method(POST).path(token_path(tenant));
                then.status(status)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("x-ms-request-id", "0a1b2c3d-0000-4000-8000-000000000001")
                    .json_body(body);
            })
            .await
    }
}

/// Checks what every error of the credential has in common and returns its message.
#[track_caller]
fn failure(error: &Error) -> String {
    let text = error.to_string();
    assert!(
        matches!(error.kind(), ErrorKind::Credential),
        "kind {:?}: {text}",
        error.kind()
    );
    assert!(text.starts_with(PREFIX), "{text}");
    assert!(!is_unavailable(error), "{text}");
    text
}

/// The status of the first `HttpResponse` error in the source chain of `error`.
fn http_status(error: &Error) -> Option<StatusCode> {
    let mut current: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = current {
        if let Some(ErrorKind::HttpResponse { status, .. }) =
            e.downcast_ref::<Error>().map(Error::kind)
        {
            return Some(*status);
        }
        current = e.source();
    }
    None
}

/// Every message of the source chain, to check that no secret hides in one.
fn chain_text(error: &Error) -> String {
    let mut text = format!("{error}\n{error:?}");
    let mut current: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = current {
        text.push_str(&format!("\n{e}\n{e:?}"));
        current = e.source();
    }
    text
}

#[track_caller]
fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// The requests on the wire
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oidc_request_is_exactly_what_azure_devops_expects() {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(OIDC_PATH)
                .query_param("api-version", "7.1")
                .query_param("serviceConnectionId", CONNECTION_ID)
                .header("authorization", format!("Bearer {SYSTEM_TOKEN}"))
                .header("x-tfs-fedauthredirect", "Suppress")
                .header("content-length", "0");
            then.status(200)
                .json_body(json!({ "oidcToken": oidc_jwt("exact") }));
        })
        .await;
    let token = f.token_ok(TENANT, "access-exact-oidc").await;
    let credential = f.credential();

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-exact-oidc");
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn oidc_request_keeps_a_query_already_in_the_uri() {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(OIDC_PATH)
                .query_param("foo", "bar")
                .query_param("api-version", "7.1")
                .query_param("serviceConnectionId", CONNECTION_ID)
                .header("authorization", format!("Bearer {SYSTEM_TOKEN}"))
                .header("x-tfs-fedauthredirect", "Suppress")
                .header("content-length", "0");
            then.status(200)
                .json_body(json!({ "oidcToken": oidc_jwt("query") }));
        })
        .await;
    let token = f.token_ok(TENANT, "access-with-query").await;
    let uri = format!("{}?foo=bar", f.server.url(OIDC_PATH));
    let credential = f.credential_with(|o| o.oidc_request_uri = Some(uri));

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-with-query");
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn token_request_form_is_exact() {
    let f = Fixture::new().await;
    let assertion = oidc_jwt("form");
    let oidc = f.oidc_ok(&assertion).await;
    let token = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .header("content-type", "application/x-www-form-urlencoded")
                .form_urlencoded_tuple("client_assertion", assertion.clone())
                .form_urlencoded_tuple("client_assertion_type", ASSERTION_TYPE)
                .form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("grant_type", "client_credentials")
                .form_urlencoded_tuple("scope", format!("{STORAGE} {VAULT}"))
                .form_urlencoded_tuple_missing("claims");
            then.status(200)
                .json_body(access_token_body("access-two-scopes"));
        })
        .await;
    let credential = f.credential();

    let got = credential.get_token(&[STORAGE, VAULT], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-two-scopes");
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn claims_are_sent_only_when_given() {
    let f = Fixture::new().await;
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#;
    let oidc = f.oidc_ok(&oidc_jwt("claims")).await;
    let with = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("claims", claims)
                .form_urlencoded_tuple("scope", STORAGE);
            then.status(200)
                .json_body(access_token_body("access-with-claims"));
        })
        .await;
    let without = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple_missing("claims")
                .form_urlencoded_tuple("scope", STORAGE);
            then.status(200)
                .json_body(access_token_body("access-without-claims"));
        })
        .await;
    let credential = f.credential();

    let plain = credential.get_token(&[STORAGE], None).await.unwrap();
    let challenged = credential
        .get_token(&[STORAGE], with_claims(claims))
        .await
        .unwrap();

    assert_eq!(plain.token.secret(), "access-without-claims");
    assert_eq!(challenged.token.secret(), "access-with-claims");
    assert_eq!(without.calls_async().await, 1);
    assert_eq!(with.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn cae_announces_cp1_merged_into_the_claims() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("cae")).await;
    let cae_only = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("scope", STORAGE)
                .is_true(|req| {
                    claims_of(req) == Some(json!({"access_token": {"xms_cc": {"values": ["CP1"]}}}))
                });
            then.status(200).json_body(access_token_body("access-cae"));
        })
        .await;
    let merged = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("scope", VAULT)
                .is_true(|req| {
                    claims_of(req)
                        == Some(json!({"access_token": {
                            "nbf": {"essential": true, "value": "1767225600"},
                            "xms_cc": {"values": ["CP1"]}
                        }}))
                });
            then.status(200)
                .json_body(access_token_body("access-cae-merged"));
        })
        .await;
    let credential = f.credential();

    let cae = credential.get_token(&[STORAGE], with_cae()).await.unwrap();
    let both = credential
        .get_token(
            &[VAULT],
            context(TokenRequestContext {
                claims: Some(
                    r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#.into(),
                ),
                enable_cae: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();

    assert_eq!(cae.token.secret(), "access-cae");
    assert_eq!(both.token.secret(), "access-cae-merged");
    assert_eq!(cae_only.calls_async().await, 1);
    assert_eq!(merged.calls_async().await, 1);
}

// ---------------------------------------------------------------------------------------------
// Response parsing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_responses_are_interpreted() {
    // (scope, response, expected lifetime s, expected refresh_in s)
    let cases: Vec<(&str, Value, i64, Option<i64>)> = vec![
        (
            "api://string-expiry/.default",
            json!({"token_type": "Bearer", "expires_in": "3599", "access_token": "a1"}),
            3599,
            None,
        ),
        (
            "api://refresh-in/.default",
            json!({"token_type": "Bearer", "expires_in": 3599, "refresh_in": 1800, "access_token": "a2"}),
            3599,
            Some(1800),
        ),
        (
            "api://no-token-type/.default",
            json!({"expires_in": 3600, "access_token": "a3"}),
            3600,
            None,
        ),
        (
            "api://long-lived/.default",
            json!({"token_type": "bearer", "expires_in": 86399, "access_token": "a4"}),
            86399,
            Some(43199),
        ),
    ];
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("parse")).await;
    let mut mocks = Vec::new();
    for (scope, body, _, _) in &cases {
        let body = body.clone();
        mocks.push(
            f.server
                .mock_async(|when, then| {
                    when.method(POST)
                        .path(token_path(TENANT))
                        .form_urlencoded_tuple("scope", *scope);
                    then.status(200).json_body(body);
                })
                .await,
        );
    }
    let credential = f.credential();

    for (i, (scope, body, lifetime, refresh_in)) in cases.iter().enumerate() {
        let info: AccessTokenInfo = credential.get_token_info(&[scope], None).await.unwrap();
        assert_eq!(info.token.secret(), body["access_token"].as_str().unwrap());
        assert_eq!(info.expires_on, at(*lifetime), "{scope}");
        assert_eq!(info.refresh_on, refresh_in.map(at), "{scope}");
        assert_eq!(info.token_type, "Bearer", "{scope}");
        let token = credential.get_token(&[scope], None).await.unwrap();
        assert_eq!(token.token.secret(), info.token.secret());
        assert_eq!(token.expires_on, info.expires_on);
        assert_eq!(mocks[i].calls_async().await, 1, "{scope}");
    }
    assert_eq!(oidc.calls_async().await, 1);
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

#[test]
fn construction_refuses_bad_inputs_and_says_how_to_fix_them() {
    // (tenant, client id, connection id, system token, expected fragments)
    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        (
            "bad/tenant",
            CLIENT_ID,
            CONNECTION_ID,
            SYSTEM_TOKEN,
            &["tenant ID contains the character '/'"],
        ),
        (
            "bad tenant",
            CLIENT_ID,
            CONNECTION_ID,
            SYSTEM_TOKEN,
            &["tenant ID contains the character ' '"],
        ),
        (
            "",
            CLIENT_ID,
            CONNECTION_ID,
            SYSTEM_TOKEN,
            &["tenant ID is empty"],
        ),
        (
            TENANT,
            "",
            CONNECTION_ID,
            SYSTEM_TOKEN,
            &["The client ID is empty", "AZURESUBSCRIPTION_CLIENT_ID"],
        ),
        (
            TENANT,
            " ",
            CONNECTION_ID,
            SYSTEM_TOKEN,
            &["The client ID is empty"],
        ),
        (
            TENANT,
            CLIENT_ID,
            "",
            SYSTEM_TOKEN,
            &[
                "The service connection ID is empty",
                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
            ],
        ),
        (
            TENANT,
            CLIENT_ID,
            CONNECTION_ID,
            "",
            &[
                "The system access token is empty",
                "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            ],
        ),
        (
            TENANT,
            CLIENT_ID,
            CONNECTION_ID,
            "$(System.AccessToken)",
            &[
                "the unexpanded macro $(System.AccessToken)",
                "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            ],
        ),
    ];
    for (tenant, client, connection, token, needles) in cases {
        let error = AzurePipelinesCredential::new(
            (*tenant).to_owned(),
            (*client).to_owned(),
            connection,
            *token,
            Some(AzurePipelinesCredentialOptions {
                oidc_request_uri: Some("https://dev.azure.com/org/proj/oidctoken".into()),
                ..Default::default()
            }),
        )
        .unwrap_err();
        let text = failure(&error);
        assert_contains(&text, needles);
    }
}

#[test]
fn construction_refuses_a_bad_additionally_allowed_tenant() {
    let error = AzurePipelinesCredential::new(
        TENANT.into(),
        CLIENT_ID.into(),
        CONNECTION_ID,
        SYSTEM_TOKEN,
        Some(AzurePipelinesCredentialOptions {
            additionally_allowed_tenants: vec!["*".into(), "a/b".into()],
            ..Default::default()
        }),
    )
    .unwrap_err();
    assert_contains(
        &failure(&error),
        &["tenant ID in additionally_allowed_tenants contains the character '/'"],
    );
}

#[test]
fn construction_needs_no_oidc_uri() {
    // Neither the option nor (possibly) the environment variable: construction must not care.
    let credential = AzurePipelinesCredential::new(
        TENANT.into(),
        CLIENT_ID.into(),
        CONNECTION_ID,
        SYSTEM_TOKEN,
        Some(AzurePipelinesCredentialOptions {
            oidc_request_uri: None,
            ..Default::default()
        }),
    );
    assert!(credential.is_ok(), "{:?}", credential.err());
    let credential = AzurePipelinesCredential::new(
        TENANT.into(),
        CLIENT_ID.into(),
        CONNECTION_ID,
        SYSTEM_TOKEN,
        None,
    );
    assert!(credential.is_ok(), "{:?}", credential.err());
}

// ---------------------------------------------------------------------------------------------
// Authority
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_http_authority_off_loopback_is_refused_at_construction() {
    for host in [
        "http://login.microsoftonline.com",
        "http://localhost.example.com",
    ] {
        let error = AzurePipelinesCredential::new(
            TENANT.into(),
            CLIENT_ID.into(),
            CONNECTION_ID,
            SYSTEM_TOKEN,
            Some(AzurePipelinesCredentialOptions {
                authority_host: Some(host.into()),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert_contains(
            &failure(&error),
            &[
                "The authority host from the authority_host option uses http://",
                "not loopback",
            ],
        );
    }
}

#[tokio::test]
async fn plain_http_oidc_uri_off_loopback_is_refused_before_any_request() {
    let f = Fixture::new().await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.credential_with(|o| {
        o.oidc_request_uri = Some("http://dev.azure.com/org/proj/oidctoken".into());
    });
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_contains(
        &failure(&error),
        &["The oidc_request_uri option uses http://", "not loopback"],
    );
    assert_eq!(token.calls_async().await, 0);
}

#[tokio::test]
async fn authority_with_trailing_slash_or_path_prefix_reaches_the_token_endpoint() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("slash")).await;
    let token = f.token_ok(TENANT, "access-trailing-slash").await;
    let prefixed = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/prefix{}", token_path(TENANT)));
            then.status(200)
                .json_body(access_token_body("access-prefixed"));
        })
        .await;

    let slash = format!("{}/", f.server.base_url());
    let credential = f.credential_with(|o| o.authority_host = Some(slash));
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-trailing-slash");

    let prefix = format!("  {}/prefix/ ", f.server.base_url());
    let credential = f.credential_with(|o| o.authority_host = Some(prefix));
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-prefixed");

    assert_eq!(token.calls_async().await, 1);
    assert_eq!(prefixed.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 2);
}

#[tokio::test]
async fn authority_without_scheme_gets_https() {
    // "127.0.0.1:PORT" becomes https://127.0.0.1:PORT: the TLS handshake with the plain-HTTP
    // mock fails, so no token request is ever served over http.
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("scheme")).await;
    let token = f.token_ok(TENANT, "never-over-http").await;
    let host = format!("127.0.0.1:{}", f.server.port());
    let credential = f.credential_with(|o| o.authority_host = Some(host));

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    assert_contains(
        &failure(&error),
        &["The request to the Microsoft Entra ID token endpoint could not be completed"],
    );
    assert_eq!(token.calls_async().await, 0);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn sovereign_clouds_via_client_options() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("cloud")).await;
    let token = f.token_ok(TENANT, "access-cloud").await;

    // A known cloud alone constructs (its host is never contacted here).
    for cloud in [
        CloudConfiguration::AzureGovernment,
        CloudConfiguration::AzureChina,
        CloudConfiguration::AzurePublic,
    ] {
        let credential = f.try_credential(CONNECTION_ID, |o| {
            o.authority_host = None;
            o.credential_options.client_options.cloud = Some(Arc::new(cloud));
        });
        assert!(credential.is_ok(), "{:?}", credential.err());
    }

    // The explicit authority host wins over the cloud.
    let credential = f.credential_with(|o| {
        o.credential_options.client_options.cloud =
            Some(Arc::new(CloudConfiguration::AzureGovernment));
    });
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-cloud");

    // A custom cloud's authority host is used when no explicit host is given.
    let base = f.server.base_url();
    let credential = f.credential_with(|o| {
        o.authority_host = None;
        let mut custom = CustomConfiguration::default();
        custom.authority_host = base;
        o.credential_options.client_options.cloud = Some(Arc::new(custom.into()));
    });
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-cloud");

    assert_eq!(token.calls_async().await, 2);
    assert_eq!(oidc.calls_async().await, 2);
}

// ---------------------------------------------------------------------------------------------
// Tenant resolution
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_not_allowed_is_refused_before_any_request() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("tenant")).await;
    let home = f.token_ok(TENANT, "home").await;
    let other = f.token_ok(OTHER_TENANT, "other").await;
    let credential = f.credential_with(|o| {
        o.additionally_allowed_tenants = vec![THIRD_TENANT.into()];
    });

    let requests = [
        with_tenant(OTHER_TENANT),
        context(TokenRequestContext {
            tenant_id: Some(OTHER_TENANT.into()),
            claims: Some(r#"{"access_token":{"nbf":{"essential":true}}}"#.into()),
            ..Default::default()
        }),
        context(TokenRequestContext {
            tenant_id: Some(OTHER_TENANT.into()),
            enable_cae: true,
            ..Default::default()
        }),
    ];
    for options in requests {
        let error = credential.get_token(&[STORAGE], options).await.unwrap_err();
        assert_contains(
            &failure(&error),
            &[
                &format!("The requested tenant '{OTHER_TENANT}' is not allowed"),
                &format!(
                    "add \"{OTHER_TENANT}\" to AzurePipelinesCredentialOptions::additionally_allowed_tenants"
                ),
                "add \"*\"",
            ],
        );
        assert_eq!(http_status(&error), None);
    }
    assert_eq!(oidc.calls_async().await, 0);
    assert_eq!(home.calls_async().await, 0);
    assert_eq!(other.calls_async().await, 0);
}

#[tokio::test]
async fn an_allowed_tenant_gets_its_own_token_endpoint() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("allowed")).await;
    let home = f.token_ok(TENANT, "access-home").await;
    let other = f.token_ok(OTHER_TENANT, "access-other").await;
    let credential = f.credential_with(|o| {
        o.additionally_allowed_tenants = vec![THIRD_TENANT.into(), OTHER_TENANT.to_uppercase()];
    });

    let got = credential
        .get_token(&[STORAGE], with_tenant(OTHER_TENANT))
        .await
        .unwrap();
    assert_eq!(got.token.secret(), "access-other");
    // The credential's own tenant, named explicitly, needs no allowance.
    let got = credential
        .get_token(&[STORAGE], with_tenant(TENANT))
        .await
        .unwrap();
    assert_eq!(got.token.secret(), "access-home");

    assert_eq!(other.calls_async().await, 1);
    assert_eq!(home.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn wildcard_allows_any_tenant() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("wildcard")).await;
    let other = f.token_ok(OTHER_TENANT, "access-other").await;
    let third = f.token_ok(THIRD_TENANT, "access-third").await;
    let credential = f.credential_with(|o| o.additionally_allowed_tenants = vec!["*".into()]);

    for (tenant, expected) in [
        (OTHER_TENANT, "access-other"),
        (THIRD_TENANT, "access-third"),
    ] {
        let got = credential
            .get_token(&[STORAGE], with_tenant(tenant))
            .await
            .unwrap();
        assert_eq!(got.token.secret(), expected);
    }
    assert_eq!(other.calls_async().await, 1);
    assert_eq!(third.calls_async().await, 1);
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

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_second_identical_call_is_served_from_the_cache() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("cache")).await;
    let token = f.token_ok(TENANT, "access-cached").await;
    let credential = f.credential();

    let first = credential.get_token(&[STORAGE], None).await.unwrap();
    f.clock.advance(Duration::minutes(10));
    let second = credential.get_token(&[STORAGE], None).await.unwrap();
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();

    assert_eq!(first.token.secret(), "access-cached");
    assert_eq!(second.token.secret(), "access-cached");
    assert_eq!(second.expires_on, first.expires_on);
    assert_eq!(info.token.secret(), "access-cached");
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn a_request_with_claims_always_goes_to_the_network_then_serves_its_key() {
    let f = Fixture::new().await;
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#;
    let oidc = f.oidc_ok(&oidc_jwt("claims-cache")).await;
    let with = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("claims", claims);
            then.status(200)
                .json_body(access_token_body("access-after-challenge"));
        })
        .await;
    let plain = f.token_ok(TENANT, "access-before-challenge").await;
    let credential = f.credential();

    let before = credential.get_token(&[STORAGE], None).await.unwrap();
    let challenged = credential
        .get_token(&[STORAGE], with_claims(claims))
        .await
        .unwrap();
    let again = credential
        .get_token(&[STORAGE], with_claims(claims))
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

#[tokio::test]
async fn claims_that_are_not_json_are_refused_before_any_request() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("bad-claims")).await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.credential();
    let error = credential
        .get_token(&[STORAGE], with_claims("not json"))
        .await
        .unwrap_err();
    assert_contains(&failure(&error), &["The claims are not a JSON object"]);
    assert_eq!(oidc.calls_async().await, 0);
    assert_eq!(token.calls_async().await, 0);
}

#[tokio::test]
async fn the_oidc_token_is_reused_across_scopes() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("reuse")).await;
    let token = f.token_ok(TENANT, "access-any-scope").await;
    let credential = f.credential();

    credential.get_token(&[STORAGE], None).await.unwrap();
    f.clock.advance(Duration::minutes(5));
    credential.get_token(&[VAULT], None).await.unwrap();

    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 2);
}

#[tokio::test]
async fn an_oidc_token_near_its_expiry_is_not_reused() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("expiring")).await;
    let token = f.token_ok(TENANT, "access-any-scope").await;
    let credential = f.credential();

    credential.get_token(&[STORAGE], None).await.unwrap();
    // The OIDC token expires at +600 s; with under a minute left it is fetched anew.
    f.clock.advance(Duration::seconds(560));
    credential.get_token(&[VAULT], None).await.unwrap();

    assert_eq!(oidc.calls_async().await, 2);
    assert_eq!(token.calls_async().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_share_one_exchange() {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            then.status(200)
                .delay(std::time::Duration::from_millis(150))
                .json_body(json!({ "oidcToken": oidc_jwt("flight") }));
        })
        .await;
    let token = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(token_path(TENANT));
            then.status(200)
                .delay(std::time::Duration::from_millis(150))
                .json_body(access_token_body("access-shared"));
        })
        .await;
    let credential = f.credential();

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let credential = credential.clone();
            tokio::spawn(async move { credential.get_token(&[STORAGE], None).await })
        })
        .collect();
    let results = futures::future::join_all(tasks).await;

    for result in results {
        assert_eq!(result.unwrap().unwrap().token.secret(), "access-shared");
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
                .delay(std::time::Duration::from_millis(150));
        })
        .await;
    let credential = f.credential();

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let credential = credential.clone();
            tokio::spawn(async move { credential.get_token(&[STORAGE], None).await })
        })
        .collect();
    for result in futures::future::join_all(tasks).await {
        let error = result.unwrap().unwrap_err();
        assert_contains(&failure(&error), &["rejected the System.AccessToken"]);
        assert_eq!(http_status(&error), Some(StatusCode::Unauthorized));
    }
    assert_eq!(oidc.calls_async().await, 1);
}

/// A writer into a shared buffer, for capturing the credential's log in one test.
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

/// Waits (bounded) until the log has `n` lines with `needle`, then lets the tasks that were
/// woken by the same event (the single-flight's driver) run: on a current-thread runtime,
/// `yield_now` puts this task behind every ready task.
async fn wait_for_log(log: &Captured, needle: &str, n: usize) -> usize {
    for _ in 0..1000 {
        if log.count(needle) >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    log.count(needle)
}

// The background refresh runs in a spawned task: a current-thread runtime keeps it on this
// thread, where the thread-local subscriber below sees its events.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_refresh_keeps_the_valid_token_then_callers_wait_after_the_stop_time() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this binary run on other threads without a subscriber; a callsite they
    // register while this one is being installed can keep a stale "never" interest. Recompute.
    tracing::callsite::rebuild_interest_cache();
    const REFRESH_FAILED: &str = "token refresh failed; the cached token is still valid";

    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("refresh")).await;
    let first = f
        .token_json(
            TENANT,
            json!({"token_type": "Bearer", "expires_in": 3600, "refresh_in": 600, "access_token": "access-1"}),
        )
        .await;
    let credential = f.credential();
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(info.token.secret(), "access-1");
    assert_eq!(info.refresh_on, Some(at(600)));
    assert_eq!(first.calls_async().await, 1);

    // Entra starts failing; the clock enters the refresh window (refresh at <= +600 s, stop at
    // +3570 s).
    first.delete_async().await;
    let failing = f
        .token_respond(
            TENANT,
            500,
            entra_error(50000, "server_error", "There was an error issuing a token."),
        )
        .await;
    f.clock.set(at(1000));

    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(
        got.token.secret(),
        "access-1",
        "served at once while refreshing"
    );
    assert_eq!(wait_for_log(&log, REFRESH_FAILED, 1).await, 1);
    assert_eq!(failing.calls_async().await, 1, "one background refresh");

    // Within the back-off the old token keeps being served and no new attempt starts.
    for _ in 0..5 {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token.secret(), "access-1");
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        failing.calls_async().await,
        1,
        "no refresh during the back-off"
    );

    // After the back-off the next call tries again, still serving the old token.
    f.clock.set(at(1031));
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-1");
    assert_eq!(wait_for_log(&log, REFRESH_FAILED, 2).await, 2);
    assert_eq!(failing.calls_async().await, 2);

    // Past the stop time (30 s before expiry) the old token is no longer handed out: the caller
    // waits for a new one.
    failing.delete_async().await;
    let second = f.token_ok(TENANT, "access-2").await;
    f.clock.set(at(3580));
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(info.token.secret(), "access-2");
    assert_eq!(info.expires_on, at(3580 + 3599));
    assert_eq!(second.calls_async().await, 1);

    let text = log.text();
    assert!(!text.contains("access-1"), "{text}");
}

#[tokio::test]
async fn a_background_refresh_replaces_the_token_before_it_expires() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("background")).await;
    let first = f
        .token_json(
            TENANT,
            json!({"token_type": "Bearer", "expires_in": 3600, "refresh_in": 600, "access_token": "access-old"}),
        )
        .await;
    let credential = f.credential();
    credential.get_token(&[STORAGE], None).await.unwrap();
    first.delete_async().await;
    let second = f.token_ok(TENANT, "access-new").await;

    // Before the refresh time: the cache answers, nothing is requested.
    f.clock.set(at(500));
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-old");
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(second.calls_async().await, 0);

    // In the refresh window the old token is served at once while one refresh runs.
    f.clock.set(at(1000));
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token.secret(), "access-old");
    let mut latest = got;
    for _ in 0..1000 {
        if latest.token.secret() == "access-new" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        latest = credential.get_token(&[STORAGE], None).await.unwrap();
    }
    assert_eq!(latest.token.secret(), "access-new");
    assert_eq!(latest.expires_on, at(1000 + 3599));
    for _ in 0..5 {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token.secret(), "access-new");
    }
    assert_eq!(
        second.calls_async().await,
        1,
        "one refresh, however many callers"
    );
    // The OIDC token (exp +600 s) had to be fetched again for the refresh.
    assert_eq!(oidc.calls_async().await, 2);
}

#[tokio::test]
async fn a_background_refresh_of_a_cae_token_still_announces_cp1() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("cae-refresh")).await;
    let cae = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(token_path(TENANT)).is_true(|req| {
                claims_of(req) == Some(json!({"access_token": {"xms_cc": {"values": ["CP1"]}}}))
            });
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3600, "refresh_in": 600, "access_token": "access-cae"
            }));
        })
        .await;
    let plain = f.token_ok(TENANT, "access-without-cp1").await;
    let credential = f.credential();
    credential.get_token(&[STORAGE], with_cae()).await.unwrap();

    f.clock.set(at(1000));
    let got = credential.get_token(&[STORAGE], with_cae()).await.unwrap();
    assert_eq!(got.token.secret(), "access-cae");
    for _ in 0..1000 {
        if cae.calls_async().await >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(cae.calls_async().await, 2);
    assert_eq!(plain.calls_async().await, 0);
}

#[tokio::test]
async fn past_the_stop_time_a_failure_is_returned_not_the_old_token() {
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("stop")).await;
    let first = f.token_ok(TENANT, "access-old").await;
    let credential = f.credential();
    credential.get_token(&[STORAGE], None).await.unwrap();

    first.delete_async().await;
    let failing = f
        .token_respond(
            TENANT,
            400,
            entra_error(700016, "unauthorized_client", "Application not found."),
        )
        .await;
    f.clock.set(at(3599 - 10));

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_contains(&failure(&error), &["was not found in the tenant"]);
    assert_eq!(failing.calls_async().await, 1);
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: the OIDC endpoint
// ---------------------------------------------------------------------------------------------

/// Runs one request against an OIDC endpoint answering `status`/`body` and checks what every
/// OIDC failure shares: the prefix, the status, the diagnostic headers, no token request.
async fn oidc_failure(
    connection_id: &str,
    status: u16,
    content_type: &str,
    body: &str,
    extra_headers: &[(&str, String)],
) -> (String, Error) {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            let mut then = then
                .status(status)
                .header("content-type", content_type)
                .header("x-vss-e2eid", E2EID)
                .header("x-msedge-ref", MSEDGE)
                .body(body);
            for (name, value) in extra_headers {
                then = then.header(*name, value.clone());
            }
        })
        .await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.try_credential(connection_id, |_| {}).unwrap();

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    let text = failure(&error);
    assert_contains(
        &text,
        &[
            &format!("HTTP {status}"),
            &format!("x-vss-e2eid: {E2EID}"),
            &format!("x-msedge-ref: {MSEDGE}"),
        ],
    );
    assert!(!chain_text(&error).contains(SYSTEM_TOKEN), "{text}");
    if status != 200 {
        assert_eq!(
            http_status(&error),
            Some(StatusCode::from(status)),
            "{text}"
        );
    }
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 0);
    (text, error)
}

#[tokio::test]
async fn oidc_401_says_the_system_access_token_was_rejected() {
    let (text, _) = oidc_failure(CONNECTION_ID, 401, "text/plain", "", &[]).await;
    assert_contains(
        &text,
        &[
            "Azure DevOps rejected the System.AccessToken",
            "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            "HTTP 401 (x-vss-e2eid",
        ],
    );
}

#[tokio::test]
async fn oidc_203_sign_in_page_is_explained() {
    let html = "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>";
    let (text, _) = oidc_failure(CONNECTION_ID, 203, "text/html", html, &[]).await;
    assert_contains(
        &text,
        &[
            "answered with a sign-in page",
            "System.AccessToken was not accepted",
        ],
    );
    assert!(!text.contains("<html>"), "{text}");
}

#[tokio::test]
async fn oidc_302_to_sign_in_is_explained_and_not_followed() {
    let f = Fixture::new().await;
    let sign_in = f
        .server
        .mock_async(|when, then| {
            when.path("/_signin");
            then.status(200).body("<html>sign in</html>");
        })
        .await;
    let location = f.server.url("/_signin?realm=dev.azure.com");
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        302,
        "text/html",
        "",
        &[("location", location)],
    )
    .await;
    assert_contains(&text, &["answered with a sign-in page"]);
    assert_eq!(sign_in.calls_async().await, 0);
}

#[tokio::test]
async fn oidc_200_with_an_html_body_is_explained() {
    let html = "\n  <html><body>Sign in to your account</body></html>";
    let (text, error) = oidc_failure(CONNECTION_ID, 200, "text/html", html, &[]).await;
    assert_contains(
        &text,
        &[
            "The OIDC endpoint answered with an HTML page instead of JSON",
            "HTTP 200 from the OIDC endpoint",
        ],
    );
    assert!(!text.contains("Sign in to your account"), "{text}");
    assert_eq!(http_status(&error), None);
}

#[tokio::test]
async fn oidc_400_vss_error_shows_message_and_type_key() {
    let body = json!({
        "$id": "1",
        "innerException": null,
        "message": format!("No service connection found with identifier {CONNECTION_ID}."),
        "typeName": "Microsoft.TeamFoundation.DistributedTask.WebApi.ServiceEndpointNotFoundException, Microsoft.TeamFoundation.DistributedTask.WebApi",
        "typeKey": "ServiceEndpointNotFoundException",
        "errorCode": 0,
        "eventId": 3000
    })
    .to_string();
    let (text, _) = oidc_failure(CONNECTION_ID, 400, "application/json", &body, &[]).await;
    assert_contains(
        &text,
        &[
            "Azure DevOps refused the OIDC token request",
            &format!("\"No service connection found with identifier {CONNECTION_ID}.\""),
            "[ServiceEndpointNotFoundException]",
            "HTTP 400",
        ],
    );
    assert!(!text.contains("Hint:"), "a GUID gets no hint: {text}");
}

#[tokio::test]
async fn oidc_400_no_explicit_reference_explains_the_stage_rule() {
    let body = json!({
        "$id": "1",
        "innerException": null,
        "message": "There is no explicit reference to service connection my-connection from the current stage.",
        "typeName": "Microsoft.TeamFoundation.DistributedTask.WebApi.InvalidRequestException",
        "typeKey": "InvalidRequestException",
        "errorCode": 0,
        "eventId": 3000
    })
    .to_string();
    let (text, _) = oidc_failure(CONNECTION_ID, 400, "application/json", &body, &[]).await;
    assert_contains(
        &text,
        &[
            "the current stage does not reference the service connection",
            "no explicit reference to service connection my-connection",
            "Reference the connection in the stage or job",
        ],
    );
}

#[tokio::test]
async fn a_connection_id_that_is_not_a_guid_gets_a_hint() {
    let (text, _) = oidc_failure(
        "my-connection",
        400,
        "application/json",
        r#"{"message":"No service connection found with identifier my-connection.","typeKey":"ServiceEndpointNotFoundException"}"#,
        &[],
    )
    .await;
    assert_contains(
        &text,
        &[
            "Hint: the service connection ID 'my-connection' is not a GUID",
            "not its name",
        ],
    );
}

#[tokio::test]
async fn oidc_404_says_the_uri_is_wrong() {
    let (text, _) = oidc_failure(CONNECTION_ID, 404, "text/plain", "Not Found", &[]).await;
    assert_contains(
        &text,
        &[
            "The OIDC endpoint was not found (404)",
            "SYSTEM_OIDCREQUESTURI must be the value the agent set",
        ],
    );
}

#[tokio::test]
async fn oidc_500_names_the_status() {
    let (text, _) = oidc_failure(CONNECTION_ID, 500, "text/plain", "oops", &[]).await;
    assert_contains(
        &text,
        &["The OIDC endpoint answered HTTP 500 Internal Server Error"],
    );
}

#[tokio::test]
async fn oidc_200_without_oidc_token() {
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        200,
        "application/json",
        r#"{"token":"x"}"#,
        &[],
    )
    .await;
    assert_contains(&text, &["The OIDC endpoint's response has no oidcToken"]);
}

#[tokio::test]
async fn oidc_200_with_malformed_json() {
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        200,
        "application/json",
        r#"{"oidcToken":"#,
        &[],
    )
    .await;
    assert_contains(&text, &["The OIDC endpoint's response is not valid JSON"]);
}

#[tokio::test]
async fn oversized_response_bodies_are_refused_unread() {
    let f = Fixture::new().await;
    let huge = format!("{{\"oidcToken\":\"{}\"}}", "A".repeat(1536 * 1024));
    let oidc = f.oidc_respond(200, "application/json", &huge).await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.credential();
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_contains(
        &failure(&error),
        &["The Azure DevOps OIDC endpoint sent a response body larger than 1048576 bytes"],
    );
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 0);
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: Microsoft Entra ID
// ---------------------------------------------------------------------------------------------

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
            then.status(400).json_body(entra_error(
                700024,
                "invalid_client",
                "Client assertion is not within its valid time range.",
            ));
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
        .token_respond(
            TENANT,
            400,
            entra_error(
                700024,
                "invalid_client",
                "Client assertion is not within its valid time range.",
            ),
        )
        .await;
    let credential = f.credential();

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    let text = failure(&error);
    assert_contains(
        &text,
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
async fn federation_mismatches_show_the_oidc_claims_but_never_the_token() {
    for (code, what) in [
        (700211, "issuer"),
        (700212, "audience"),
        (700213, "subject"),
    ] {
        let f = Fixture::new().await;
        let assertion = oidc_jwt(&format!("mismatch-{code}"));
        let oidc = f.oidc_ok(&assertion).await;
        let token = f
            .token_respond(
                TENANT,
                400,
                entra_error(
                    code,
                    "invalid_request",
                    &format!("No matching federated identity record found for presented assertion {what}."),
                ),
            )
            .await;
        let credential = f.credential();

        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

        let text = failure(&error);
        assert_contains(
            &text,
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
        let signature = assertion.rsplit('.').next().unwrap();
        assert!(!everything.contains(signature), "{code}: {everything}");
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
    let mut found = false;
    let mut current: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = current {
        if let Some(ErrorKind::HttpResponse {
            status, error_code, ..
        }) = e.downcast_ref::<Error>().map(Error::kind)
        {
            assert_eq!(*status, StatusCode::BadRequest);
            assert_eq!(error_code.as_deref(), Some("AADSTS70011"));
            found = true;
            break;
        }
        current = e.source();
    }
    assert!(found, "{error:?}");
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
    assert_contains(
        &failure(&error),
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
    ];
    let f = Fixture::new().await;
    f.oidc_ok(&oidc_jwt("malformed")).await;
    for (scope, body, _) in cases {
        let body = body.clone();
        f.server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(token_path(TENANT))
                    .form_urlencoded_tuple("scope", *scope);
                then.status(200).json_body(body);
            })
            .await;
    }
    let credential = f.credential();
    for (scope, _, needle) in cases {
        let error = credential.get_token(&[scope], None).await.unwrap_err();
        let text = failure(&error);
        assert_contains(&text, &[needle, "HTTP 200 from Microsoft Entra ID"]);
        assert!(!chain_text(&error).contains("leaky-access-token"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// close()
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn after_close_cached_tokens_are_served_and_nothing_reaches_the_network() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("close")).await;
    let token = f.token_ok(TENANT, "access-before-close").await;
    let credential = f.credential();
    credential.get_token(&[STORAGE], None).await.unwrap();

    credential.close().await;

    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(cached.token.secret(), "access-before-close");

    let error = credential.get_token(&[VAULT], None).await.unwrap_err();
    assert_contains(&failure(&error), &["closed"]);
    let error = credential
        .get_token(&[STORAGE], with_claims(r#"{"access_token":{}}"#))
        .await
        .unwrap_err();
    assert_contains(&failure(&error), &["closed"]);

    // In the refresh window a closed credential starts no background refresh.
    f.clock.set(at(3300));
    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(cached.token.secret(), "access-before-close");
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }

    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
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
                .delay(std::time::Duration::from_secs(5))
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
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(token.calls_async().await, 1, "the exchange is in flight");

    credential.close().await;

    // Without the cancellation the waiter would get the token once the mock answers.
    let error = waiter.await.unwrap().unwrap_err();
    assert_contains(&failure(&error), &["The credential was closed"]);
}

// ---------------------------------------------------------------------------------------------
// Retries (the user's azure_core retry options apply to both endpoints)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_503_from_entra_is_retried() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("retry-token")).await;
    let unavailable = f
        .server
        .mock_async(|when, then| {
            when.is_true(first_n(token_path(TENANT), 1));
            then.status(503).body("busy");
        })
        .await;
    let token = f.token_ok(TENANT, "access-after-retry").await;
    let credential = f.credential_with(|o| o.credential_options.client_options = quick_retry());

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-after-retry");
    assert_eq!(unavailable.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn a_503_from_the_oidc_endpoint_is_retried() {
    let f = Fixture::new().await;
    let unavailable = f
        .server
        .mock_async(|when, then| {
            when.is_true(first_n(OIDC_PATH.to_owned(), 1));
            then.status(503).body("busy");
        })
        .await;
    let oidc = f.oidc_ok(&oidc_jwt("retry-oidc")).await;
    let token = f.token_ok(TENANT, "access-after-oidc-retry").await;
    let credential = f.credential_with(|o| o.credential_options.client_options = quick_retry());

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-after-oidc-retry");
    assert_eq!(unavailable.calls_async().await, 1);
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn without_retries_a_503_fails_once_with_the_response_as_source() {
    let f = Fixture::new().await;
    let oidc = f
        .oidc_respond(503, "text/plain", "Service Unavailable")
        .await;
    let credential = f.credential();
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_contains(&failure(&error), &["HTTP 503", "x-vss-e2eid"]);
    assert_eq!(http_status(&error), Some(StatusCode::ServiceUnavailable));
    assert_eq!(oidc.calls_async().await, 1);
}
