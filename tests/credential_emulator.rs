//! The credential against the built-in emulator over HTTPS (trusting its CA): the protocol end
//! to end, request counts, sharing of OIDC tokens across scopes, the AADSTS700024 retry, and a
//! refresh that never blocks readers.

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, TokenRequestContext,
    clock::ManualClock,
    emulator::{Emulator, EmulatorConfig, Endpoint, Fault, FaultTrigger},
    jwt::decode_claims,
};
use std::{sync::Arc, time::Duration};

const STORAGE: &str = "https://storage.azure.com/.default";

fn options(emulator: &Emulator) -> AzurePipelinesCredentialOptions {
    emulator.credential_options()
}

fn credential_with(
    emulator: &Emulator,
    options: AzurePipelinesCredentialOptions,
) -> Arc<AzurePipelinesCredential> {
    emulator.credential(options).expect("credential")
}

fn credential(emulator: &Emulator) -> Arc<AzurePipelinesCredential> {
    credential_with(emulator, options(emulator))
}

/// Polls `done` while letting background tasks run; bounded, and never a timing assertion.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn acquires_a_real_shaped_token_over_https_once() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
    let claims = decode_claims(info.token.secret()).expect("a JWT");
    let tenant = &emulator.config().tenant_id;
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["appid"], emulator.config().client_id.as_str());
    assert_eq!(info.token_type, "Bearer");
    assert!(
        info.refresh_on.is_none(),
        "a one-hour token has no refresh_on"
    );
    assert!(
        emulator.verify_token(info.token.secret()).is_some(),
        "signed by the emulator"
    );

    let again = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(again.token.secret(), info.token.secret());
    let counters = emulator.control().counters();
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 1));
    assert_eq!(counters.by_scope.get(STORAGE), Some(&1));
}

#[tokio::test]
async fn ten_new_scopes_at_once_share_one_oidc_request() {
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_latency(Endpoint::Oidc, Duration::from_millis(20));
    let credential = credential(&emulator);
    let scopes: Vec<String> = (0..10).map(|i| format!("api://app-{i}/.default")).collect();
    let calls = scopes.iter().map(|s| {
        let credential = credential.clone();
        let s = s.clone();
        async move { credential.get_token(&[&s], None).await }
    });
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.iter().all(Result::is_ok));
    let counters = emulator.control().counters();
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_make_one_exchange() {
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_latency(Endpoint::Token, Duration::from_millis(20));
    let credential = credential(&emulator);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let credential = credential.clone();
            tokio::spawn(async move {
                credential
                    .get_token(&[STORAGE], None)
                    .await
                    .map(|t| t.token)
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap().unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    let counters = emulator.control().counters();
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 1));
}

#[tokio::test]
async fn expired_assertion_is_fetched_anew_and_the_exchange_retried_once() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    credential.get_token(&[STORAGE], None).await.unwrap();
    // Entra's clock runs past the held OIDC token's expiry; ours still trusts it.
    emulator.control().set_clock_skew(700);
    let token = credential
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
        .unwrap();
    assert!(!token.token.secret().is_empty());
    let counters = emulator.control().counters();
    assert_eq!(
        counters.oidc_requests, 2,
        "a fresh OIDC token after AADSTS700024"
    );
    assert_eq!(
        counters.token_requests, 3,
        "one failed exchange, retried once"
    );
}

#[tokio::test]
async fn readers_are_served_while_a_refresh_is_held_open() {
    let emulator = Emulator::start().await.unwrap();
    let clock = ManualClock::starting_now();
    let credential = credential_with(
        &emulator,
        AzurePipelinesCredentialOptions {
            clock: Some(Arc::new(clock.clone())),
            ..options(&emulator)
        },
    );
    let first = credential.get_token(&[STORAGE], None).await.unwrap();

    clock.advance(time::Duration::minutes(55));
    let hold = emulator.control().hold(Endpoint::Token);
    for _ in 0..20 {
        // The refresh is stuck at the emulator; a reader that waited on it would hit the
        // timeout. The timeout is a guard against hanging, not a timing assertion.
        let token = tokio::time::timeout(
            Duration::from_secs(10),
            credential.get_token(&[STORAGE], None),
        )
        .await
        .expect("a reader never waits for the refresh")
        .unwrap();
        assert_eq!(token.token.secret(), first.token.secret());
    }
    eventually(|| emulator.control().counters().token_requests == 2).await;
    hold.release();
    let mut refreshed = None;
    for _ in 0..500 {
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        if token.token.secret() != first.token.secret() {
            refreshed = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed.is_some(), "the background refresh landed");
    assert_eq!(
        emulator.control().counters().token_requests,
        2,
        "one refresh for 20 readers"
    );
}

#[tokio::test]
async fn outage_does_not_break_a_valid_cached_token() {
    let emulator = Emulator::start().await.unwrap();
    let clock = ManualClock::starting_now();
    let credential = credential_with(
        &emulator,
        AzurePipelinesCredentialOptions {
            clock: Some(Arc::new(clock.clone())),
            ..options(&emulator)
        },
    );
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
    clock.advance(time::Duration::minutes(56));
    for _ in 0..50 {
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), first.token.secret());
    }
    // Past the stop time the outage shows.
    clock.advance(time::Duration::minutes(4));
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("AzurePipelinesCredential authentication failed.")
    );
}

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
    let cae = credential
        .get_token_info(
            &[STORAGE],
            Some(
                TokenRequestContext {
                    enable_cae: true,
                    ..Default::default()
                }
                .into(),
            ),
        )
        .await
        .unwrap();
    let claims = decode_claims(cae.token.secret()).unwrap();
    assert_eq!(claims["xms_cc"], serde_json::json!(["CP1"]));

    let plain = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_ne!(
        plain.token.secret(),
        cae.token.secret(),
        "CAE tokens are cached apart"
    );
    assert!(
        decode_claims(plain.token.secret())
            .unwrap()
            .get("xms_cc")
            .is_none()
    );

    let elsewhere = credential
        .get_token(
            &[STORAGE],
            Some(
                TokenRequestContext {
                    tenant_id: Some(other.clone()),
                    ..Default::default()
                }
                .into(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        decode_claims(elsewhere.token.secret()).unwrap()["tid"],
        other.as_str()
    );
    assert_eq!(
        emulator.control().counters().by_tenant.get(&other),
        Some(&1)
    );

    let with_claims = TokenRequestContext {
        claims: Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#.into()),
        ..Default::default()
    };
    credential
        .get_token(&[STORAGE], Some(with_claims.clone().into()))
        .await
        .unwrap();
    credential
        .get_token(&[STORAGE], Some(with_claims.into()))
        .await
        .unwrap();
    assert_eq!(
        emulator.control().counters().token_requests,
        5,
        "claims always go to Entra"
    );
}

#[tokio::test]
async fn close_serves_cached_tokens_and_refuses_the_network() {
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    let cached = credential.get_token(&[STORAGE], None).await.unwrap();
    credential.close().await;
    let again = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(again.token.secret(), cached.token.secret());
    let error = credential
        .get_token(&["api://other/.default"], None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("closed"), "{error}");
    let counters = emulator.control().counters();
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 1));
}
