//! Getting the token: from the persistent cache file when it has one, with no runtime and no
//! HTTP client; else on a current-thread runtime, with one `get_token_info`, then `close`.

use crate::plan::{Failure, Hint, Plan, Source};
use azure_pipelines_credential::{
    AccessTokenInfo, AzurePipelinesCredential, AzurePipelinesCredentialOptions,
    TokenRequestContext, is_unavailable,
};
use std::sync::Arc;

/// The token, and the tenant the credential was configured with (the JSON output's `tenant`
/// when the token names none).
pub(crate) struct Fetched {
    /// What the credential returned.
    pub(crate) info: AccessTokenInfo,
    /// The service connection's tenant.
    pub(crate) configured_tenant: String,
}

/// Gets one token as `plan` says.
pub(crate) fn fetch_blocking(plan: &Plan) -> Result<Fetched, Failure> {
    let options = AzurePipelinesCredentialOptions {
        additionally_allowed_tenants: plan.tenant.iter().cloned().collect(),
        persistent_cache: plan.persistent_cache.clone(),
        ..Default::default()
    };
    match &plan.source {
        #[cfg(feature = "emulator")]
        Source::Emulator => runtime()?.block_on(emulator::fetch(plan, options)),
        Source::Pipeline {
            tenant_id,
            client_id,
            service_connection_id,
            authority_host,
        } => {
            let options = AzurePipelinesCredentialOptions {
                authority_host: authority_host.clone(),
                ..options
            };
            // The library checks the four inputs (blank counts as missing); the flags stand in
            // for the variables, and SYSTEM_ACCESSTOKEN comes from the environment only.
            let var = |name: &str| match name {
                "AZURESUBSCRIPTION_TENANT_ID" => tenant_id.clone(),
                "AZURESUBSCRIPTION_CLIENT_ID" => client_id.clone(),
                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID" => service_connection_id.clone(),
                _ => std::env::var(name).ok(),
            };
            let credential =
                AzurePipelinesCredential::from_vars(var, Some(options)).map_err(|e| {
                    credential_failure(is_unavailable(&e), e.to_string(), Some(Hint::MissingInputs))
                })?;
            let configured_tenant = tenant_id.clone().unwrap_or_default();
            // Building the credential started nothing: its HTTP client is built on first use.
            // A token from the job's cache file needs no runtime and no HTTP client at all.
            if let Some(info) =
                credential.cached_token_info(&scopes(plan), Some(request(plan).into()))
            {
                return Ok(Fetched {
                    info,
                    configured_tenant,
                });
            }
            runtime()?.block_on(get(
                plan,
                &credential,
                configured_tenant,
                Some(Hint::NotInPipeline),
            ))
        }
    }
}

/// A current-thread runtime: one token needs no more.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("could not start the async runtime: {e}")))
}

fn scopes(plan: &Plan) -> Vec<&str> {
    plan.scopes.iter().map(String::as_str).collect()
}

/// The plan's claims, tenant and CAE.
fn request(plan: &Plan) -> TokenRequestContext {
    TokenRequestContext {
        claims: plan.claims.clone(),
        tenant_id: plan.tenant.clone(),
        enable_cae: plan.cae,
    }
}

/// One `get_token_info` for the plan's scopes and request options, then `close`. `hint` goes
/// under an *unavailable* error.
async fn get(
    plan: &Plan,
    credential: &Arc<AzurePipelinesCredential>,
    configured_tenant: String,
    hint: Option<Hint>,
) -> Result<Fetched, Failure> {
    let info = credential
        .get_token_info(&scopes(plan), Some(request(plan).into()))
        .await;
    credential.close().await;
    let info = info.map_err(|e| credential_failure(is_unavailable(&e), e.to_string(), hint))?;
    Ok(Fetched {
        info,
        configured_tenant,
    })
}

/// The failure for a credential error: the library's message (which names what is missing and
/// how to set it), and for an unavailable one `hint`, the tool's own line, under it.
fn credential_failure(unavailable: bool, message: String, hint: Option<Hint>) -> Failure {
    let message = match hint {
        Some(hint) if unavailable => match hint.line() {
            Some(line) => format!("{message}\n{line}"),
            None => message,
        },
        _ => message,
    };
    Failure::Credential {
        unavailable,
        message,
    }
}

#[cfg(feature = "emulator")]
mod emulator {
    use super::*;
    use azure_pipelines_emulator::{Emulator, EmulatorConfig};

    /// Starts the built-in emulator (https) and gets the token from it, as its service
    /// connection. The emulator stops when this returns.
    pub(super) async fn fetch(
        plan: &Plan,
        options: AzurePipelinesCredentialOptions,
    ) -> Result<Fetched, Failure> {
        let emulator = Emulator::start_with(EmulatorConfig {
            // The emulator must know the requested tenant for a token request there to succeed.
            additional_tenants: plan.tenant.iter().cloned().collect(),
            ..Default::default()
        })
        .await
        .map_err(|e| Failure::Other(format!("could not start the emulator: {e}")))?;
        // The emulator decides the endpoints and the transport (which trusts its CA); the flags
        // keep the rest.
        let mut options = AzurePipelinesCredentialOptions {
            authority_host: Some(emulator.authority_host(true)),
            oidc_request_uri: Some(emulator.oidc_request_uri(true)),
            ..options
        };
        options.credential_options.client_options = emulator.client_options();
        let config = emulator.config();
        let credential = AzurePipelinesCredential::new(
            config.tenant_id.clone(),
            config.client_id.clone(),
            &config.service_connection_id,
            config.system_access_token.clone(),
            Some(options),
        )
        .map_err(|e| credential_failure(is_unavailable(&e), e.to_string(), None))?;
        get(plan, &credential, config.tenant_id.clone(), None).await
    }
}
