//! `azure_security_keyvault_secrets::SecretClient` with `AzurePipelinesCredential`, against the
//! emulator's Key Vault secrets endpoint over https.
//!
//! How the client asks for tokens (azure_security_keyvault_secrets 1.0, and 1.1.0-beta.1 is the
//! same): its first request goes out without a token and without a body; the vault's 401
//! carries `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//! resource="https://vault.azure.net"`, from which it takes the scope
//! (`https://vault.azure.net/.default`, or the challenge's `scope` when present). By default it
//! refuses a challenge whose resource host is not a parent of the vault's host (the vault must
//! be under `vault.azure.net`). It ignores the challenge's tenant: `get_token` gets no tenant in
//! its options, so the credential's own tenant is used and `additionally_allowed_tenants` is
//! never involved. The scope is kept for the client's life; the token is cached by azure_core's
//! bearer policy.

mod common;

use azure_core::{
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    http::StatusCode,
};
use azure_pipelines_credential::AzurePipelinesCredential;
use azure_pipelines_emulator::{Emulator, EmulatorConfig};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use common::{
    STORAGE, VAULT,
    emulator::{options, try_credential_in},
    errors::http_response,
};
use std::sync::Arc;

/// The emulator's service connection, as a credential of `tenant_id`.
fn credential(emulator: &Emulator, tenant_id: &str) -> Arc<AzurePipelinesCredential> {
    try_credential_in(emulator, tenant_id, options(emulator)).unwrap()
}

fn secret_client(emulator: &Emulator, credential: Arc<dyn TokenCredential>) -> SecretClient {
    // Default options but the transport: the challenge's resource check stays on, which works
    // because the emulator's vault is `emulator.vault.azure.net` (its transport resolves it).
    SecretClient::new(
        &emulator.key_vault_url(),
        credential,
        Some(SecretClientOptions {
            client_options: emulator.client_options(),
            ..Default::default()
        }),
    )
    .unwrap()
}

#[tokio::test]
async fn secret_client_gets_a_secret_after_the_challenge() {
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_secret("db-password", "correct horse battery staple");
    let tenant = emulator.config().tenant_id.clone();
    let client = secret_client(&emulator, credential(&emulator, &tenant));

    let secret = client
        .get_secret("db-password", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        secret.value.as_deref(),
        Some("correct horse battery staple")
    );
    let id = secret.id.unwrap_or_default();
    assert!(
        id.starts_with("https://emulator.vault.azure.net:") && id.contains("/secrets/db-password/"),
        "{id}"
    );

    // The unauthenticated probe, its challenge, the authorized retry; one token, for the
    // challenge's resource.
    let counters = emulator.control().counters();
    assert_eq!(
        (counters.key_vault_requests, counters.key_vault_challenges),
        (2, 1)
    );
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 1));
    assert_eq!(counters.by_scope.get(VAULT), Some(&1));
    assert_eq!(counters.by_tenant.get(&tenant), Some(&1));

    // Later requests carry the token straight away.
    client.get_secret("DB-PASSWORD", None).await.unwrap();
    let e = client.get_secret("missing", None).await.unwrap_err();
    assert_eq!(
        http_response(&e),
        Some((StatusCode::NotFound, Some("SecretNotFound".to_owned())))
    );
    assert!(
        e.to_string()
            .contains("A secret with (name/id) missing was not found"),
        "{e}"
    );
    let counters = emulator.control().counters();
    assert_eq!(
        (counters.key_vault_requests, counters.key_vault_challenges),
        (4, 1)
    );
    assert_eq!(counters.token_requests, 1);
}

/// Hands out a token of another scope, whatever it is asked for.
#[derive(Debug)]
struct WrongScope(Arc<AzurePipelinesCredential>);

#[async_trait::async_trait]
impl TokenCredential for WrongScope {
    async fn get_token(
        &self,
        _: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.0.get_token(&[STORAGE], options).await
    }
}

#[tokio::test]
async fn the_vault_refuses_tokens_for_another_audience_or_tenant() {
    let other_tenant = "5b2d8c3e-9f4a-4e1b-8c7d-0a1b2c3d4e5f";
    let emulator = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec![other_tenant.to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    emulator.control().set_secret("s", "v");
    let tenant = emulator.config().tenant_id.clone();

    // A storage token: after the challenge the client retries once with it, and gives up.
    let client = secret_client(
        &emulator,
        Arc::new(WrongScope(credential(&emulator, &tenant))),
    );
    let e = client.get_secret("s", None).await.unwrap_err();
    assert_eq!(
        http_response(&e),
        Some((StatusCode::Unauthorized, Some("Unauthorized".to_owned())))
    );
    assert!(
        e.to_string().contains(
            "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://storage.azure.com."
        ),
        "{e}"
    );

    // The client does not pass the challenge's tenant on: a credential of another tenant gets
    // a token from its own tenant, which the vault refuses.
    let client = secret_client(&emulator, credential(&emulator, other_tenant));
    let e = client.get_secret("s", None).await.unwrap_err();
    assert!(e.to_string().contains("AKV10032: Invalid issuer."), "{e}");
    assert_eq!(
        emulator.control().counters().by_tenant.get(other_tenant),
        Some(&1)
    );
}

#[tokio::test]
async fn no_token_gets_the_challenge_key_vault_sends() {
    let emulator = Emulator::start().await.unwrap();
    let response = emulator
        .reqwest_client()
        .get(format!(
            "{}secrets/s?api-version=2025-07-01",
            emulator.key_vault_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            emulator.config().tenant_id
        )
    );
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(
        body["error"]["message"],
        "AKV10000: Request is missing a Bearer or PoP token."
    );

    // An expired token for the vault is refused too.
    let now = emulator.control().now_unix();
    let expired = emulator.sign_claims(&serde_json::json!({
        "aud": "https://vault.azure.net",
        "iss": format!("https://sts.windows.net/{}/", emulator.config().tenant_id),
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
    }));
    let response = emulator
        .reqwest_client()
        .get(format!(
            "{}secrets/s?api-version=2025-07-01",
            emulator.key_vault_url()
        ))
        .bearer_auth(Secret::new(expired).secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{body}"
    );
    assert_eq!(emulator.control().counters().key_vault_challenges, 2);
}
