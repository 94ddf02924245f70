//! How an emulator is set up, and the fixed names it answers to.

use std::fmt;

use crate::util;

/// The audience of Azure DevOps OIDC tokens in the public cloud.
pub const OIDC_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The host name of the emulator's Key Vault ([`Emulator::key_vault_url`](crate::Emulator::key_vault_url)). It is under
/// `vault.azure.net` because Key Vault clients check that the vault's host is under the resource
/// of the authentication challenge (`https://vault.azure.net`); the emulator's certificate covers
/// it and [`Emulator::reqwest_client`](crate::Emulator::reqwest_client) resolves it to the emulator.
pub const KEY_VAULT_HOST: &str = "emulator.vault.azure.net";

/// How an [`Emulator`](crate::Emulator) is set up. Every field has a usable default.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The directory (tenant) the application is registered in.
    pub tenant_id: String,
    /// The application (client) ID of the service connection's identity.
    pub client_id: String,
    /// The service connection's ID (what `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID` holds).
    pub service_connection_id: String,
    /// The job's `System.AccessToken`. Random by default.
    pub system_access_token: String,
    /// The secret of the managed identity endpoint: what App Service puts in
    /// `IDENTITY_HEADER` and clients send back as `X-IDENTITY-HEADER`. Random
    /// by default.
    pub managed_identity_header: String,
    /// The Azure DevOps organization name.
    pub organization: String,
    /// The Azure DevOps project name.
    pub project: String,
    /// The service connection's name, part of the OIDC token's subject
    /// (`sc://{organization}/{project}/{service_connection_name}`).
    pub service_connection_name: String,
    /// Further tenants the application exists in: token requests for them
    /// succeed too.
    pub additional_tenants: Vec<String>,
    /// Port of the plain HTTP listener; 0 picks a free one.
    pub http_port: u16,
    /// Port of the HTTPS listener; 0 picks a free one.
    pub https_port: u16,
    /// When true (the default), the OIDC endpoint insists on the
    /// `X-TFS-FedAuthRedirect: Suppress` header a correct client always sends:
    /// without it the answer is 203 with a sign-in page, even with a valid
    /// token. When false it behaves exactly like Azure DevOps, which only uses
    /// the header to turn a sign-in page into a 401.
    ///
    /// Either way, like the real service, a POST without `Content-Length` (or
    /// a chunked body) gets 411 Length Required. reqwest, and so azure_core,
    /// sends no `Content-Length` for an empty body: set `Content-Length: 0`
    /// explicitly.
    pub strict_client_checks: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            client_id: "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95".to_owned(),
            service_connection_id: "9c4e2a7b-1d3f-4b8e-9a6c-5e7f1b2d3c40".to_owned(),
            system_access_token: util::random_b64url::<32>(),
            managed_identity_header: util::guid(),
            organization: "contoso".to_owned(),
            project: "pipelines".to_owned(),
            service_connection_name: "my-azure-connection".to_owned(),
            additional_tenants: Vec::new(),
            http_port: 0,
            https_port: 0,
            strict_client_checks: true,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("service_connection_id", &self.service_connection_id)
            .field("system_access_token", &"<redacted>")
            .field("managed_identity_header", &"<redacted>")
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("service_connection_name", &self.service_connection_name)
            .field("additional_tenants", &self.additional_tenants)
            .field("http_port", &self.http_port)
            .field("https_port", &self.https_port)
            .field("strict_client_checks", &self.strict_client_checks)
            .finish()
    }
}
