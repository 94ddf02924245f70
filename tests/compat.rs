//! Source compatibility with `azure_identity::AzurePipelinesCredential` 1.0: code written for it
//! compiles unchanged against this crate once the `use` line names `azure_pipelines_credential`.
//!
//! `user_code!` expands the very same body in two modules that differ only in their imports.

mod common;

macro_rules! user_code {
    ($($import:item)*) => {
        $($import)*
        use azure_core::{
            credentials::{AccessToken, TokenCredential},
            http::{ClientOptions, policies::auth::BearerTokenAuthorizationPolicy},
        };
        use std::sync::Arc;

        /// The constructor call as the azure_identity 1.0 documentation writes it.
        // For azure_identity the struct has no other field, so the update is needless there.
        #[allow(clippy::needless_update, dead_code)]
        pub fn build(
            tenant_id: String,
            client_id: String,
            service_connection_id: String,
            system_access_token: String,
        ) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
            AzurePipelinesCredential::new(
                tenant_id,
                client_id,
                &service_connection_id,
                system_access_token,
                Some(AzurePipelinesCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: ClientOptions::default(),
                    },
                    ..Default::default()
                }),
            )
        }

        /// Handed to SDK clients as `Arc<dyn TokenCredential>`.
        #[allow(dead_code)]
        pub fn as_dyn(credential: Arc<AzurePipelinesCredential>) -> Arc<dyn TokenCredential> {
            credential
        }

        /// Used by code generic over `TokenCredential`.
        #[allow(dead_code)]
        pub async fn token_of<C: TokenCredential + ?Sized>(
            credential: &C,
        ) -> azure_core::Result<AccessToken> {
            credential
                .get_token(&["https://management.azure.com/.default"], None)
                .await
        }

        /// Plugged into azure_core's bearer-token policy, as every Azure SDK client does.
        #[allow(dead_code)]
        pub fn policy(credential: Arc<AzurePipelinesCredential>) -> BearerTokenAuthorizationPolicy {
            BearerTokenAuthorizationPolicy::new(
                credential,
                ["https://management.azure.com/.default"],
            )
        }

        /// Everything together, as a user's `main` would do it.
        #[allow(dead_code)]
        pub async fn user_main() -> azure_core::Result<()> {
            let credential = build(
                std::env::var("AZURESUBSCRIPTION_TENANT_ID").unwrap_or_default(),
                std::env::var("AZURESUBSCRIPTION_CLIENT_ID").unwrap_or_default(),
                std::env::var("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID").unwrap_or_default(),
                std::env::var("SYSTEM_ACCESSTOKEN").unwrap_or_default(),
            )?;
            let _policy = policy(credential.clone());
            let shared: Arc<dyn TokenCredential> = as_dyn(credential.clone());
            let _ = token_of(shared.as_ref()).await?;
            let _ = token_of(credential.as_ref()).await?;
            Ok(())
        }
    };
}

mod ours {
    user_code! {
        use azure_identity::ClientAssertionCredentialOptions;
        use azure_pipelines_credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
    }
}

mod theirs {
    user_code! {
        use azure_identity::{
            AzurePipelinesCredential, AzurePipelinesCredentialOptions,
            ClientAssertionCredentialOptions,
        };
    }
}

#[test]
fn the_same_user_code_compiles_against_both_crates() {
    // azure_identity's constructor reads SYSTEM_OIDCREQUESTURI, so it is only type-checked here.
    type Build = fn(
        String,
        String,
        String,
        String,
    )
        -> azure_core::Result<std::sync::Arc<azure_identity::AzurePipelinesCredential>>;
    let _theirs: Build = theirs::build;
    let _theirs_main = theirs::user_main;
    let _ours_main = ours::user_main;

    // This crate's constructor needs no SYSTEM_OIDCREQUESTURI (the option defaults to None).
    let credential = ours::build(
        common::TENANT.into(),
        common::CLIENT_ID.into(),
        common::CONNECTION_ID.into(),
        common::SYSTEM_TOKEN.into(),
    )
    .expect("constructs outside a pipeline");
    let shared = ours::as_dyn(credential.clone());
    assert_eq!(std::sync::Arc::strong_count(&credential), 2);
    drop(shared);
    let _policy = ours::policy(credential);
}
