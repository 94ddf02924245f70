//! Outside Azure Pipelines the credential is *unavailable*, not failed: chains use
//! `is_unavailable` to fall through to the next credential.
//!
//! This binary holds a single test because it edits the process environment.

mod common;

use azure_core::{credentials::TokenCredential, error::ErrorKind};
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, is_unavailable,
};
use common::{CLIENT_ID, CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT, UNAVAILABLE, VAULT};
use httpmock::MockServer;

const FROM_ENV_VARS: [&str; 4] = [
    "AZURESUBSCRIPTION_TENANT_ID",
    "AZURESUBSCRIPTION_CLIENT_ID",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "SYSTEM_ACCESSTOKEN",
];

/// Asserts that `error` says the credential is unavailable, and returns its message.
#[track_caller]
fn unavailable(error: &azure_core::Error) -> String {
    let text = error.to_string();
    assert!(matches!(error.kind(), ErrorKind::Credential), "{text}");
    assert!(text.starts_with(UNAVAILABLE), "{text}");
    assert!(is_unavailable(error), "{error:?}");
    text
}

#[test]
fn outside_a_pipeline_the_credential_is_unavailable() {
    // SAFETY: this is the only test in this binary and no other thread has been started by it
    // yet (the runtime and the mock server are created below), so nothing reads or writes the
    // environment concurrently.
    unsafe {
        std::env::remove_var("SYSTEM_OIDCREQUESTURI");
        for name in FROM_ENV_VARS {
            std::env::remove_var(name);
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A mock server as authority host proves that no request is made at all.
        let server = MockServer::start_async().await;
        let anything = server
            .mock_async(|when, then| {
                when.any_request();
                then.status(500);
            })
            .await;
        let build = |oidc_request_uri: Option<&str>| {
            AzurePipelinesCredential::new(
                TENANT.into(),
                CLIENT_ID.into(),
                CONNECTION_ID,
                SYSTEM_TOKEN,
                Some(AzurePipelinesCredentialOptions {
                    authority_host: Some(server.base_url()),
                    oidc_request_uri: oidc_request_uri.map(str::to_owned),
                    ..Default::default()
                }),
            )
            .expect("construction needs no SYSTEM_OIDCREQUESTURI")
        };

        let credential = build(None);
        for _ in 0..2 {
            let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
            let text = unavailable(&error);
            assert!(
                text.contains(
                    "SYSTEM_OIDCREQUESTURI is not set, so this is not running in an Azure Pipelines job"
                ),
                "{text}"
            );
            assert!(text.contains("#not-in-an-azure-pipelines-job"), "{text}");
        }
        let error = credential.get_token_info(&[VAULT], None).await.unwrap_err();
        unavailable(&error);

        // An empty option is the same as no option.
        let error = build(Some("  "))
            .get_token(&[STORAGE], None)
            .await
            .unwrap_err();
        unavailable(&error);

        // from_env names every missing variable and the YAML that sets them.
        let error = AzurePipelinesCredential::from_env(None).unwrap_err();
        let text = unavailable(&error);
        assert!(text.contains(&FROM_ENV_VARS.join(", ")), "{text}");
        assert!(
            text.contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"),
            "{text}"
        );
        assert!(text.contains("#pipeline-variables-missing"), "{text}");

        assert_eq!(anything.calls_async().await, 0);
    });
}
