//! azure_identity's `ManagedIdentityCredential` gets its tokens from the emulator.
//!
//! It reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process environment, which is
//! shared by every test of a file: so this file has one test.

use azure_core::credentials::TokenCredential as _;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_pipelines_emulator::Emulator;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn managed_identity_credential_gets_tokens_from_the_emulator() -> TestResult {
    let em = Emulator::start().await?;
    // SAFETY: this file has one test, so no other thread of this process reads or writes the
    // environment meanwhile.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", em.managed_identity_endpoint(true));
        std::env::set_var("IDENTITY_HEADER", em.managed_identity_header());
    }

    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        client_options: em.client_options(),
        ..Default::default()
    }))?;
    let token = credential
        .get_token(&["https://vault.azure.net/.default"], None)
        .await?;
    let claims = em
        .verify_token(token.token.secret())
        .ok_or("not signed by the emulator")?;
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(claims["exp"], token.expires_on.unix_timestamp());
    // The credential caches it.
    credential
        .get_token(&["https://vault.azure.net/.default"], None)
        .await?;
    assert_eq!(em.control().counters().managed_identity_tokens_issued, 1);

    // A user-assigned identity, by the client ID the emulator knows, and by one it does not.
    let user_assigned = |id: &str| {
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ClientId(id.to_owned())),
            client_options: em.client_options(),
        }))
    };
    let known = user_assigned(&em.config().client_id)?;
    known
        .get_token(&["https://storage.azure.com/.default"], None)
        .await?;
    let unknown = user_assigned("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")?;
    let error = unknown
        .get_token(&["https://storage.azure.com/.default"], None)
        .await
        .err()
        .ok_or("an unknown identity got a token")?;
    // azure_identity's words for App Service's 400.
    assert!(
        error
            .to_string()
            .contains("The requested identity has not been assigned to this resource"),
        "{error}"
    );

    // With the wrong secret in the environment, the endpoint refuses.
    // SAFETY: as above.
    unsafe {
        std::env::set_var("IDENTITY_HEADER", "not-the-secret");
    }
    let error = credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .err()
        .ok_or("a wrong secret got a token")?;
    assert!(error.to_string().contains("X-IDENTITY-HEADER"), "{error}");

    let c = em.control().counters();
    assert_eq!(
        (
            c.managed_identity_requests,
            c.managed_identity_tokens_issued
        ),
        (4, 2)
    );
    Ok(())
}
