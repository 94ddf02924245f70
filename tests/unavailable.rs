//! Outside Azure Pipelines the credential is *unavailable*, not failed: chains use
//! `is_unavailable` to fall through to the next credential.
//!
//! This binary holds a single test because it edits the process environment.

use azure_core::{credentials::TokenCredential, error::ErrorKind};
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, is_unavailable,
};
use httpmock::MockServer;

const PREFIX: &str = "AzurePipelinesCredential authentication failed. ";
const FROM_ENV_VARS: [&str; 4] = [
    "AZURESUBSCRIPTION_TENANT_ID",
    "AZURESUBSCRIPTION_CLIENT_ID",
    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "SYSTEM_ACCESSTOKEN",
];

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

        let credential = AzurePipelinesCredential::new(
            "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            "0b8d8f12-5a3e-4c1e-9f0a-2f4f5e6d7c8b".into(),
            "3d5c2f6a-8b9e-4f1a-a2b3-c4d5e6f70819",
            "sysAT-unavailable-test-0x5f3759df",
            Some(AzurePipelinesCredentialOptions {
                authority_host: Some(server.base_url()),
                oidc_request_uri: None,
                ..Default::default()
            }),
        )
        .expect("construction needs no SYSTEM_OIDCREQUESTURI");

        for _ in 0..2 {
            let error = credential
                .get_token(&["https://storage.azure.com/.default"], None)
                .await
                .unwrap_err();
            let text = error.to_string();
            assert!(matches!(error.kind(), ErrorKind::Credential), "{text}");
            assert!(text.starts_with(PREFIX), "{text}");
            assert!(
                text.contains(
                    "SYSTEM_OIDCREQUESTURI is not set: this is not running in an Azure Pipelines job"
                ),
                "{text}"
            );
            assert!(is_unavailable(&error), "{error:?}");
        }
        let error = credential
            .get_token_info(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap_err();
        assert!(is_unavailable(&error), "{error:?}");

        // An empty option is the same as no option.
        let credential = AzurePipelinesCredential::new(
            "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            "0b8d8f12-5a3e-4c1e-9f0a-2f4f5e6d7c8b".into(),
            "3d5c2f6a-8b9e-4f1a-a2b3-c4d5e6f70819",
            "sysAT-unavailable-test-0x5f3759df",
            Some(AzurePipelinesCredentialOptions {
                authority_host: Some(server.base_url()),
                oidc_request_uri: Some("  ".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        let error = credential
            .get_token(&["https://storage.azure.com/.default"], None)
            .await
            .unwrap_err();
        assert!(is_unavailable(&error), "{error:?}");

        // from_env names every missing variable and the YAML that sets them.
        let error = AzurePipelinesCredential::from_env(None).unwrap_err();
        let text = error.to_string();
        assert!(is_unavailable(&error), "{text}");
        assert!(matches!(error.kind(), ErrorKind::Credential), "{text}");
        assert!(text.starts_with(PREFIX), "{text}");
        assert!(text.contains(&FROM_ENV_VARS.join(", ")), "{text}");
        assert!(
            text.contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"),
            "{text}"
        );

        assert_eq!(anything.calls_async().await, 0);
    });
}
