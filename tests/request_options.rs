//! The per-request options: claims from a challenge, another tenant, CAE. What each sends to
//! Entra, and what is refused before any request.

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::{AzurePipelinesCredentialOptions, TokenRequestContext};
use azure_pipelines_emulator::{Emulator, EmulatorConfig};
use common::{
    CHALLENGE_CLAIMS, OTHER_TENANT, STORAGE, TENANT, THIRD_TENANT, VAULT,
    emulator::{credential_with, options},
    errors::{assert_failure, http_status},
    jwt::oidc_jwt,
    mock::{Fixture, access_token_body, claims_of, token_path},
    requests::{context, with_cae, with_claims, with_tenant},
};
use httpmock::Method::POST;
use serde_json::json;

#[tokio::test]
async fn claims_are_sent_only_when_given() {
    let f = Fixture::new().await;
    let oidc = f.oidc_ok(&oidc_jwt("claims")).await;
    let with = f
        .server
        .mock_async(|when, then| {
            when.method(POST)
                .path(token_path(TENANT))
                .form_urlencoded_tuple("claims", CHALLENGE_CLAIMS)
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
        .get_token(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
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
                claims: Some(CHALLENGE_CLAIMS.into()),
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
    assert_failure(&error, &["The claims are not a JSON object"]);
    assert_eq!(oidc.calls_async().await, 0);
    assert_eq!(token.calls_async().await, 0);
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
        assert_failure(
            &error,
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

// ---------------------------------------------------------------------------------------------
// Against the emulator, which reflects what it was asked for in the tokens it signs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cae_claims_and_other_tenants_reach_entra() {
    let other = "11111111-2222-3333-4444-555555555555".to_string();
    let emulator = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec![other.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let credential = credential_with(
        &emulator,
        AzurePipelinesCredentialOptions {
            additionally_allowed_tenants: vec![other.clone()],
            ..options(&emulator)
        },
    );
    let claims = |token: &str| {
        emulator
            .verify_token(token)
            .expect("signed by the emulator")
    };

    let cae = credential
        .get_token_info(&[STORAGE], with_cae())
        .await
        .unwrap();
    assert_eq!(claims(cae.token.secret())["xms_cc"], json!(["CP1"]));

    let plain = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_ne!(
        plain.token.secret(),
        cae.token.secret(),
        "CAE tokens are cached apart"
    );
    assert!(claims(plain.token.secret()).get("xms_cc").is_none());

    let elsewhere = credential
        .get_token(&[STORAGE], with_tenant(&other))
        .await
        .unwrap();
    assert_eq!(claims(elsewhere.token.secret())["tid"], other.as_str());
    assert_eq!(
        emulator.control().counters().by_tenant.get(&other),
        Some(&1)
    );

    let challenge = r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#;
    for _ in 0..2 {
        credential
            .get_token(&[STORAGE], with_claims(challenge))
            .await
            .unwrap();
    }
    assert_eq!(
        emulator.control().counters().token_requests,
        5,
        "claims always go to Entra"
    );
}
