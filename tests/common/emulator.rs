//! The credential of the emulator's service connection, over HTTPS (trusting the emulator's CA
//! through its transport), with the emulator's quick retries.

use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
use azure_pipelines_emulator::Emulator;
use std::{sync::Arc, time::Duration};

/// The emulator as authority host and OIDC endpoint, over HTTPS, with its client options.
pub fn options(emulator: &Emulator) -> AzurePipelinesCredentialOptions {
    AzurePipelinesCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: emulator.client_options(),
        },
        authority_host: Some(emulator.authority_host(true)),
        oidc_request_uri: Some(emulator.oidc_request_uri(true)),
        ..Default::default()
    }
}

/// The credential of the emulator's service connection in `tenant_id`, with `options`.
pub fn try_credential_in(
    emulator: &Emulator,
    tenant_id: &str,
    options: AzurePipelinesCredentialOptions,
) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
    let c = emulator.config();
    AzurePipelinesCredential::new(
        tenant_id.to_owned(),
        c.client_id.clone(),
        &c.service_connection_id,
        c.system_access_token.clone(),
        Some(options),
    )
}

pub fn try_credential(
    emulator: &Emulator,
    options: AzurePipelinesCredentialOptions,
) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
    try_credential_in(emulator, &emulator.config().tenant_id, options)
}

pub fn credential_with(
    emulator: &Emulator,
    options: AzurePipelinesCredentialOptions,
) -> Arc<AzurePipelinesCredential> {
    try_credential(emulator, options).expect("credential")
}

pub fn credential(emulator: &Emulator) -> Arc<AzurePipelinesCredential> {
    credential_with(emulator, options(emulator))
}

/// The credential whose HTTP attempts may each take `attempt`, and its acquisitions `budget`.
pub fn with_timeouts(
    emulator: &Emulator,
    attempt: Duration,
    budget: Duration,
) -> Arc<AzurePipelinesCredential> {
    credential_with(
        emulator,
        AzurePipelinesCredentialOptions {
            attempt_timeout: Some(attempt),
            token_timeout: Some(budget),
            ..options(emulator)
        },
    )
}

/// Requests that reached the emulator: (OIDC, token).
pub fn counts(emulator: &Emulator) -> (u64, u64) {
    let c = emulator.control().counters();
    (c.oidc_requests, c.token_requests)
}
