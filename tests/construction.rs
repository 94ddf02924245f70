//! Building the credential: every input and option is checked when it is built (or, for the
//! OIDC request URI, which may come from the environment, before any request), and each
//! refusal names the input and how to fix it.

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
use azure_pipelines_emulator::Emulator;
use common::{
    CLIENT_ID, CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT,
    emulator::{counts, credential_with, options, try_credential},
    errors::assert_failure,
    mock::Fixture,
};
use std::time::Duration;

/// `new` with the given inputs and options, expected to fail.
fn refused(
    tenant: &str,
    client: &str,
    connection: &str,
    token: &str,
    options: AzurePipelinesCredentialOptions,
) -> azure_core::Error {
    AzurePipelinesCredential::new(
        tenant.to_owned(),
        client.to_owned(),
        connection,
        token.to_owned(),
        Some(options),
    )
    .unwrap_err()
}

/// A credential with `options` gets a token from the emulator, with one request to each endpoint.
async fn one_token(emulator: &Emulator, options: AzurePipelinesCredentialOptions) {
    let credential = credential_with(emulator, options);
    credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(counts(emulator), (1, 1));
}

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
        let options = AzurePipelinesCredentialOptions {
            oidc_request_uri: Some("https://dev.azure.com/org/proj/oidctoken".into()),
            ..Default::default()
        };
        let error = refused(tenant, client, connection, token, options);
        assert_failure(&error, needles);
    }
}

#[test]
fn construction_refuses_a_bad_additionally_allowed_tenant() {
    let options = AzurePipelinesCredentialOptions {
        additionally_allowed_tenants: vec!["*".into(), "a/b".into()],
        ..Default::default()
    };
    let error = refused(TENANT, CLIENT_ID, CONNECTION_ID, SYSTEM_TOKEN, options);
    assert_failure(
        &error,
        &["tenant ID in additionally_allowed_tenants contains the character '/'"],
    );
}

#[test]
fn construction_needs_no_oidc_uri() {
    // Neither the option nor (possibly) the environment variable: construction must not care.
    for options in [
        Some(AzurePipelinesCredentialOptions {
            oidc_request_uri: None,
            ..Default::default()
        }),
        None,
    ] {
        let credential = AzurePipelinesCredential::new(
            TENANT.into(),
            CLIENT_ID.into(),
            CONNECTION_ID,
            SYSTEM_TOKEN,
            options,
        );
        assert!(credential.is_ok(), "{:?}", credential.err());
    }
}

#[test]
fn plain_http_authority_off_loopback_is_refused_at_construction() {
    for host in [
        "http://login.microsoftonline.com",
        "http://localhost.example.com",
    ] {
        let options = AzurePipelinesCredentialOptions {
            authority_host: Some(host.into()),
            ..Default::default()
        };
        let error = refused(TENANT, CLIENT_ID, CONNECTION_ID, SYSTEM_TOKEN, options);
        assert_failure(
            &error,
            &[
                "The authority host from the authority_host option uses http://",
                "not loopback",
            ],
        );
    }
}

#[cfg(not(feature = "persistent-cache"))]
#[test]
fn the_persistent_cache_is_refused_without_its_feature() {
    let options = AzurePipelinesCredentialOptions {
        persistent_cache: Some(azure_pipelines_credential::PersistentCacheOptions::default()),
        ..Default::default()
    };
    let error = refused(TENANT, CLIENT_ID, CONNECTION_ID, SYSTEM_TOKEN, options);
    assert_failure(
        &error,
        &[
            "needs the crate's persistent-cache feature",
            "#persistent-cache-feature-not-enabled",
        ],
    );
}

#[tokio::test]
async fn zero_timeouts_are_refused_at_construction() {
    let emulator = Emulator::start().await.unwrap();
    for (options, field) in [
        (
            AzurePipelinesCredentialOptions {
                attempt_timeout: Some(Duration::ZERO),
                ..options(&emulator)
            },
            "attempt_timeout is zero",
        ),
        (
            AzurePipelinesCredentialOptions {
                token_timeout: Some(Duration::ZERO),
                ..options(&emulator)
            },
            "token_timeout is zero",
        ),
    ] {
        let error = try_credential(&emulator, options).unwrap_err();
        assert_failure(&error, &[field]);
    }
    // No limit at all is allowed.
    let unlimited = AzurePipelinesCredentialOptions {
        attempt_timeout: Some(Duration::MAX),
        token_timeout: Some(Duration::MAX),
        ..options(&emulator)
    };
    one_token(&emulator, unlimited).await;
}

#[tokio::test]
async fn https_is_required_off_loopback_for_the_authority_at_construction() {
    let emulator = Emulator::start().await.unwrap();
    let port = emulator.http_addr().port();
    let not_loopback = "uses http:// to a host that is not loopback";
    let cases = [
        (format!("http://login.example.com:{port}"), not_loopback),
        (format!("http://localhost.example.com:{port}"), not_loopback),
        (format!("http://127.0.0.1.nip.io:{port}"), not_loopback),
        (format!("http://10.0.0.1:{port}"), not_loopback),
        ("file:///etc/hosts".to_owned(), "has the scheme `file:`"),
        (
            "ftp://login.example.com".to_owned(),
            "has the scheme `ftp:`",
        ),
        (
            format!("https://user:pass@localhost:{port}"),
            "embeds a user name or password",
        ),
        (format!("https://localhost:{port}#x"), "has a #fragment"),
    ];
    for (authority, needle) in cases {
        let error = try_credential(
            &emulator,
            AzurePipelinesCredentialOptions {
                authority_host: Some(authority.clone()),
                ..options(&emulator)
            },
        )
        .unwrap_err();
        assert_failure(
            &error,
            &["The authority host from the authority_host option", needle],
        );
    }
    // Loopback over http is allowed (local emulators), and works.
    let http = AzurePipelinesCredentialOptions {
        authority_host: Some(emulator.authority_host(false)),
        ..options(&emulator)
    };
    one_token(&emulator, http).await;
}

#[tokio::test]
async fn https_is_required_off_loopback_for_the_oidc_uri_before_any_request() {
    let emulator = Emulator::start().await.unwrap();
    let port = emulator.http_addr().port();
    let path = "/contoso/p/_apis/distributedtask/hubs/build/plans/x/jobs/y/oidctoken";
    let not_loopback = "uses http:// to a host that is not loopback";
    let cases = [
        (format!("http://dev.azure.example{path}"), not_loopback),
        (
            format!("http://localhost.example.com:{port}{path}"),
            not_loopback,
        ),
        (
            format!("http://127.0.0.1.nip.io:{port}{path}"),
            not_loopback,
        ),
        (
            format!("http://[::ffff:10.0.0.1]:{port}{path}"),
            not_loopback,
        ),
        ("file:///etc/passwd".to_owned(), "has the scheme `file:`"),
        (
            format!("https://user:secret@localhost:{port}{path}"),
            "embeds a user name or password",
        ),
        (
            format!("{}#frag", emulator.oidc_request_uri(true)),
            "has a #fragment",
        ),
        ("not a url".to_owned(), "is not a valid URL"),
    ];
    for (uri, needle) in cases {
        // The OIDC URI is checked when a token is requested, not at construction.
        let credential = credential_with(
            &emulator,
            AzurePipelinesCredentialOptions {
                oidc_request_uri: Some(uri.clone()),
                ..options(&emulator)
            },
        );
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_failure(&error, &["The oidc_request_uri option", needle]);
    }
    assert_eq!(counts(&emulator), (0, 0), "nothing was sent");
    // The emulator's plain-http loopback URI is accepted and works.
    let http = AzurePipelinesCredentialOptions {
        oidc_request_uri: Some(emulator.oidc_request_uri(false)),
        ..options(&emulator)
    };
    one_token(&emulator, http).await;
}

#[tokio::test]
async fn plain_http_oidc_uri_off_loopback_is_refused_before_any_request() {
    let f = Fixture::new().await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.credential_with(|o| {
        o.oidc_request_uri = Some("http://dev.azure.com/org/proj/oidctoken".into());
    });
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_failure(
        &error,
        &["The oidc_request_uri option uses http://", "not loopback"],
    );
    assert_eq!(token.calls_async().await, 0);
}
