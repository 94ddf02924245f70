//! What goes on the wire and how the answers are read: the OIDC request Azure DevOps expects,
//! the token request form, the token response's timing, and which authority host the token
//! request goes to.

mod common;

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::TokenCredential,
};
use azure_pipelines_credential::AccessTokenInfo;
use azure_pipelines_emulator::Emulator;
use common::{
    CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT, VAULT,
    emulator::{counts, credential},
    errors::assert_failure,
    jwt::oidc_jwt,
    mock::{ASSERTION_TYPE, Fixture, OIDC_PATH, access_token_body, token_path},
};
use httpmock::Method::POST;
use serde_json::{Value, json};
use std::sync::Arc;
use time::Duration;

/// One token through an OIDC endpoint that answers only the request Azure DevOps expects: the
/// API version and connection in the query (after the query the URI already has, `query`), the
/// System.AccessToken as bearer, sign-in redirects suppressed, an empty body.
async fn token_through_the_exact_oidc_request(query: Option<(&str, &str)>) {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            let when = match query {
                Some((name, value)) => when.query_param(name, value),
                None => when,
            };
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
    let uri = match query {
        Some((name, value)) => format!("{}?{name}={value}", f.server.url(OIDC_PATH)),
        None => f.server.url(OIDC_PATH),
    };
    let credential = f.credential_with(|o| o.oidc_request_uri = Some(uri));

    let got = credential.get_token(&[STORAGE], None).await.unwrap();

    assert_eq!(got.token.secret(), "access-exact-oidc");
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 1);
}

#[tokio::test]
async fn oidc_request_is_exactly_what_azure_devops_expects() {
    token_through_the_exact_oidc_request(None).await;
}

#[tokio::test]
async fn oidc_request_keeps_a_query_already_in_the_uri() {
    token_through_the_exact_oidc_request(Some(("foo", "bar"))).await;
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
                .form_urlencoded_tuple("client_id", common::CLIENT_ID)
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
        mocks.push(f.token_for_scope(scope, body.clone()).await);
    }
    let credential = f.credential();

    for (i, (scope, body, lifetime, refresh_in)) in cases.iter().enumerate() {
        // The credential reads the system clock (to the millisecond) between these two reads.
        let before = common::now() - Duration::milliseconds(1);
        let info: AccessTokenInfo = credential.get_token_info(&[scope], None).await.unwrap();
        let after = common::now();
        let lifetime = Duration::seconds(*lifetime);
        assert_eq!(info.token.secret(), body["access_token"].as_str().unwrap());
        assert!(
            before + lifetime <= info.expires_on && info.expires_on <= after + lifetime,
            "{scope}: {} not within {lifetime} of the call",
            info.expires_on
        );
        assert_eq!(
            info.refresh_on.map(|r| info.expires_on - r),
            refresh_in.map(|r| lifetime - Duration::seconds(r)),
            "{scope}"
        );
        assert_eq!(info.token_type, "Bearer", "{scope}");
        let token = credential.get_token(&[scope], None).await.unwrap();
        assert_eq!(token.token.secret(), info.token.secret());
        assert_eq!(token.expires_on, info.expires_on);
        assert_eq!(mocks[i].calls_async().await, 1, "{scope}");
    }
    assert_eq!(oidc.calls_async().await, 1);
}

#[tokio::test]
async fn acquires_a_real_shaped_token_over_https_once() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
    let claims = emulator
        .verify_token(info.token.secret())
        .expect("a JWT signed by the emulator");
    let tenant = &emulator.config().tenant_id;
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["appid"], emulator.config().client_id.as_str());
    assert_eq!(info.token_type, "Bearer");
    assert!(
        info.refresh_on.is_none(),
        "a one-hour token has no refresh_on"
    );

    let again = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(again.token.secret(), info.token.secret());
    assert_eq!(counts(&emulator), (1, 1));
    assert_eq!(
        emulator.control().counters().by_scope.get(STORAGE),
        Some(&1)
    );
}

// ---------------------------------------------------------------------------------------------
// Authority
// ---------------------------------------------------------------------------------------------

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

    assert_failure(
        &error,
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

/// Each request carries an `x-ms-client-request-id`, new per request, as azure_core's pipeline
/// sends it, and the caller's `ClientRequestId` from the context when it set one.
#[tokio::test]
async fn requests_carry_a_client_request_id() {
    use azure_core::credentials::TokenRequestOptions;
    use azure_core::http::{ClientMethodOptions, Context, request::options::ClientRequestId};
    use std::sync::Mutex;

    let f = Fixture::new().await;
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    for path in [OIDC_PATH.to_owned(), token_path(TENANT)] {
        let seen = seen.clone();
        let oidc = path == OIDC_PATH;
        f.server
            .mock_async(|when, then| {
                when.method(POST).path(path.clone()).is_true(move |req| {
                    let id = req
                        .headers_vec()
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("x-ms-client-request-id"))
                        .map(|(_, value)| value.clone())
                        .unwrap_or_default();
                    seen.lock().unwrap().push((path.clone(), id));
                    true
                });
                if oidc {
                    then.status(200)
                        .json_body(json!({ "oidcToken": oidc_jwt("request-id") }));
                } else {
                    then.status(200)
                        .json_body(access_token_body("access-request-id"));
                }
            })
            .await;
    }
    let credential = f.credential();
    credential.get_token(&[STORAGE], None).await.unwrap();
    let caller = TokenRequestOptions {
        method_options: ClientMethodOptions {
            context: Context::new().with_value(ClientRequestId::new("caller-chosen-id".to_owned())),
        },
    };
    credential.get_token(&[VAULT], Some(caller)).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    // httpmock may ask the matcher more than once per request: count distinct requests by id.
    assert!(ids.iter().all(|id| !id.is_empty()), "{seen:?}");
    let generated: std::collections::BTreeSet<&str> = ids
        .iter()
        .copied()
        .filter(|id| *id != "caller-chosen-id")
        .collect();
    assert_eq!(
        generated.len(),
        2,
        "one new id per request of the first call: {seen:?}"
    );
    assert!(
        generated
            .iter()
            .all(|id| id.len() == 36 && id.matches('-').count() == 4),
        "UUIDs: {generated:?}"
    );
    assert!(
        seen.iter()
            .any(|(path, id)| *path == token_path(TENANT) && id == "caller-chosen-id"),
        "the caller's id on its token request: {seen:?}"
    );
}
