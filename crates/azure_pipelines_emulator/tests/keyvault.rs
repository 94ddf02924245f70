//! The emulated Key Vault secrets endpoint: its challenge, its checks of bearer tokens, and its
//! secrets.

mod common;

use azure_pipelines_emulator::{Emulator, EmulatorConfig, KEY_VAULT_HOST};
use serde_json::{Value, json};

use common::*;

const VAULT: &str = "https://vault.azure.net";

/// An access token from the emulator's token endpoint, for `scope`, in `tenant`.
async fn access_token(em: &Emulator, tenant: &str, scope: &str) -> String {
    let mut form = token_form(em, &em.issue_oidc_token());
    set(&mut form, "scope", Some(scope));
    let reply = post_token(em, &plain(), false, tenant, &form).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn get_secret(em: &Emulator, path: &str) -> reqwest::RequestBuilder {
    em.reqwest_client().get(format!(
        "{}secrets/{path}?api-version=7.5",
        em.key_vault_url()
    ))
}

/// Checks Key Vault's 401 challenge and returns its error message.
fn challenged(reply: &Reply, tenant: &str) -> String {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{tenant}\", resource=\"{VAULT}\""
            )
            .as_str()
        )
    );
    let j = reply.json();
    assert_eq!(j["error"]["code"], "Unauthorized");
    j["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn serves_secrets_to_tokens_for_the_vault() -> TestResult {
    let em = Emulator::start().await?;
    assert!(
        em.key_vault_url()
            .starts_with(&format!("https://{KEY_VAULT_HOST}:"))
    );
    em.control().set_secret("DB-Password", "hunter2");
    let tenant = em.config().tenant_id.clone();
    let token = access_token(&em, &tenant, "https://vault.azure.net/.default").await;

    let reply = send(get_secret(&em, "db-password").bearer_auth(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let j = reply.json();
    assert_eq!(j["value"], "hunter2");
    assert_eq!(j["attributes"]["enabled"], true);
    // The stored name, under the vault's host, with the current version.
    let id = j["id"].as_str().unwrap_or_default().to_owned();
    let prefix = format!(
        "https://{KEY_VAULT_HOST}:{}/secrets/DB-Password/",
        em.https_addr().port()
    );
    let version = id.strip_prefix(&prefix).ok_or(id.clone())?;
    assert_eq!(version.len(), 32, "{id}");

    // By version, and as SecretClient asks for the latest one (empty version).
    for path in [format!("db-password/{version}"), "db-password/".to_owned()] {
        let reply = send(get_secret(&em, &path).bearer_auth(&token)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    let reply =
        send(get_secret(&em, "db-password/00000000000000000000000000000000").bearer_auth(&token))
            .await;
    assert_eq!(reply.status, 404);

    // A new value is a new version.
    em.control().set_secret("db-password", "correct horse");
    let reply = send(get_secret(&em, "db-password").bearer_auth(&token)).await;
    assert_eq!(reply.json()["value"], "correct horse");
    assert_ne!(reply.json()["id"], Value::from(id));

    let c = em.control().counters();
    assert_eq!((c.key_vault_requests, c.key_vault_challenges), (5, 0));
    Ok(())
}

#[tokio::test]
async fn challenges_requests_without_an_acceptable_token() -> TestResult {
    let em = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec!["11111111-2222-3333-4444-555555555555".into()],
        ..Default::default()
    })
    .await?;
    em.control().set_secret("s", "v");
    let tenant = em.config().tenant_id.clone();

    let message = challenged(&send(get_secret(&em, "s")).await, &tenant);
    assert!(message.starts_with("AKV10000"), "{message}");

    let storage = access_token(&em, &tenant, STORAGE).await;
    let message = challenged(
        &send(get_secret(&em, "s").bearer_auth(storage)).await,
        &tenant,
    );
    assert!(message.starts_with("AKV10022"), "{message}");

    let other_tenant = access_token(
        &em,
        "11111111-2222-3333-4444-555555555555",
        "https://vault.azure.net/.default",
    )
    .await;
    let message = challenged(
        &send(get_secret(&em, "s").bearer_auth(other_tenant)).await,
        &tenant,
    );
    assert!(message.starts_with("AKV10032"), "{message}");

    // Signed by the emulator but expired.
    let expired = em.sign_claims(&json!({
        "aud": VAULT,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "nbf": em.control().now_unix() - 7200,
        "exp": em.control().now_unix() - 3600,
    }));
    let message = challenged(
        &send(get_secret(&em, "s").bearer_auth(expired)).await,
        &tenant,
    );
    assert!(message.contains("expired"), "{message}");

    // Not signed by the emulator.
    let other = Emulator::start().await?;
    let foreign = access_token(
        &other,
        &other.config().tenant_id,
        "https://vault.azure.net/.default",
    )
    .await;
    challenged(
        &send(get_secret(&em, "s").bearer_auth(foreign)).await,
        &tenant,
    );

    let c = em.control().counters();
    assert_eq!((c.key_vault_requests, c.key_vault_challenges), (5, 5));
    Ok(())
}

#[tokio::test]
async fn unknown_secrets_methods_and_missing_api_version() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let token = access_token(&em, &tenant, "https://vault.azure.net/.default").await;
    em.control().set_secret("s", "v");

    let reply = send(get_secret(&em, "nothing").bearer_auth(&token)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "SecretNotFound");

    let reply = send(
        em.reqwest_client()
            .get(format!("{}secrets/s", em.key_vault_url()))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "BadParameter");

    let reply = send(
        em.reqwest_client()
            .put(format!("{}secrets/s?api-version=7.5", em.key_vault_url()))
            .bearer_auth(&token)
            .body("{}"),
    )
    .await;
    assert_eq!(reply.status, 405);

    assert!(em.control().remove_secret("S"));
    assert!(!em.control().remove_secret("s"));
    let reply = send(get_secret(&em, "s").bearer_auth(&token)).await;
    assert_eq!(reply.status, 404);
    Ok(())
}
