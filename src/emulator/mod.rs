//! A local emulator of the two services `AzurePipelinesCredential` talks to:
//! the Azure DevOps OIDC endpoint and the Microsoft Entra ID token endpoint.
//!
//! [`Emulator::start`] runs a real HTTP/1.1 server on loopback, on two
//! ephemeral ports: one plain `http`, one `https` with a certificate signed by
//! a CA the emulator generates at start ([`Emulator::ca_pem`],
//! [`Emulator::transport`]). Both ports serve both endpoints, and a minimal
//! Key Vault secrets endpoint ([`Emulator::key_vault_url`],
//! [`Control::set_secret`]) that challenges like Key Vault and accepts the
//! emulator's access tokens for `https://vault.azure.net`.
//!
//! The endpoints validate requests and answer failures the way the real
//! services do: 401 / 203 sign-in page / VSS error JSON from Azure DevOps,
//! `AADSTS` error JSON from Entra. The OIDC tokens and access tokens are real
//! JWTs signed by a key the emulator generates at start, and the token endpoint
//! only accepts client assertions the emulator signed, with the issuer,
//! subject and audience it issues.
//!
//! [`Control`] changes the emulator while it runs: latency, injected
//! [`Fault`]s, token lifetimes, `refresh_in`, clock skew, holding requests,
//! and counters of what arrived.
//!
//! # Example
//!
//! ```
//! use azure_pipelines_credential::emulator::{Emulator, Endpoint, Fault, FaultTrigger};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = Emulator::start().await?;
//!
//! // What an Azure Pipelines job would see in its environment.
//! let request_uri = emulator.oidc_request_uri(true);
//! let authority = emulator.authority_host(true);
//! assert!(request_uri.starts_with("https://localhost:"));
//! assert!(authority.starts_with("https://localhost:"));
//!
//! // The next token request fails once with 503 and `Retry-After: 1`.
//! emulator.control().inject_fault(
//!     Endpoint::Token,
//!     Fault::Status { status: 503, retry_after: Some(1) },
//!     FaultTrigger::Count(1),
//! );
//! assert_eq!(emulator.control().counters().token_requests, 0);
//! # Ok(()) }
//! ```

// The emulator plays the services, whose clock is the real one (plus Control's skew); the rule
// that time comes from an injected Clock is the credential's.
#![allow(clippy::disallowed_methods)]

mod control;
mod entra;
mod jwt;
mod keyvault;
mod oidc;
mod server;
mod tls;
mod util;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::jwt::decode_claims;
pub use control::{Control, Counters, Endpoint, Fault, FaultTrigger, Hold};
pub use jwt::OidcClaims;

use server::{Ids, Listeners, Shared};

/// The audience of Azure DevOps OIDC tokens in the public cloud.
pub const OIDC_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The host name of the emulator's Key Vault ([`Emulator::key_vault_url`]). It is under
/// `vault.azure.net` because Key Vault clients check that the vault's host is under the resource
/// of the authentication challenge (`https://vault.azure.net`); the emulator's certificate covers
/// it and [`Emulator::reqwest_client`] resolves it to the emulator.
pub const KEY_VAULT_HOST: &str = "emulator.vault.azure.net";

/// How an [`Emulator`] is set up. Every field has a usable default.
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
            system_access_token: util::random_b64url(32),
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

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops the
/// server and closes every connection.
pub struct Emulator {
    shared: Arc<Shared>,
    ca_pem: String,
    issuer: tls::CertIssuer,
    client: reqwest::Client,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    http_url: url::Url,
    https_url: url::Url,
    // Never sent on: dropping it wakes every connection task so they exit.
    _shutdown: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("http", &self.http_addr)
            .field("https", &self.https_addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts an emulator with [`EmulatorConfig::default`]. Must be called
    /// from within a Tokio runtime, which then runs the server.
    pub async fn start() -> io::Result<Emulator> {
        Emulator::start_with(EmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`. Fails if a port cannot be bound or
    /// key generation fails.
    pub async fn start_with(config: EmulatorConfig) -> io::Result<Emulator> {
        let tls = tls::TlsMaterial::generate()?;
        let keys = jwt::Keys::generate()?;
        let listeners = Listeners::bind(config.http_port, config.https_port).await?;
        let http_addr = listeners.http.local_addr()?;
        let https_addr = listeners.https.local_addr()?;

        let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).map_err(io::Error::other)?;
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            // The emulator is always local: a proxy from the environment
            // (HTTPS_PROXY in CI) must not capture its traffic.
            .no_proxy()
            // `localhost` may resolve to ::1 first, where nothing listens.
            .resolve("localhost", https_addr)
            .resolve(KEY_VAULT_HOST, https_addr)
            // No client-side timeouts: under tokio's paused clock they would
            // fire while a loopback connect is still pending.
            .build()
            .map_err(io::Error::other)?;

        let shared = Arc::new(Shared {
            config,
            ids: Ids {
                organization_id: util::guid(),
                project_id: util::guid(),
                plan_id: util::guid(),
                job_id: util::guid(),
                object_id: util::guid(),
            },
            keys,
            control: Control::new(),
            http_base: format!("http://127.0.0.1:{}", http_addr.port()),
            https_base: format!("https://localhost:{}", https_addr.port()),
        });
        let http_url =
            url::Url::parse(&format!("{}/", shared.http_base)).map_err(io::Error::other)?;
        let https_url =
            url::Url::parse(&format!("{}/", shared.https_base)).map_err(io::Error::other)?;
        let (shutdown, shutdown_rx) = watch::channel(());
        let tasks = server::spawn(listeners, tls.server_config, shared.clone(), shutdown_rx);
        Ok(Emulator {
            shared,
            ca_pem: tls.ca_pem,
            issuer: tls.issuer,
            client,
            http_addr,
            https_addr,
            http_url,
            https_url,
            _shutdown: shutdown,
            tasks,
        })
    }

    /// The configuration the emulator runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn http_url(&self) -> url::Url {
        self.http_url.clone()
    }

    /// `https://localhost:PORT/`.
    pub fn https_url(&self) -> url::Url {
        self.https_url.clone()
    }

    /// The address of the plain HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address of the HTTPS listener.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The value of `SYSTEM_OIDCREQUESTURI` for this emulator, without query:
    /// `{base}/{org}/{projectId}/_apis/distributedtask/hubs/build/plans/{planId}/jobs/{jobId}/oidctoken`.
    pub fn oidc_request_uri(&self, tls: bool) -> String {
        format!("{}{}", self.shared.base(tls), self.shared.oidc_path())
    }

    /// The authority host (`AZURE_AUTHORITY_HOST`), without trailing slash,
    /// e.g. `https://localhost:PORT`.
    pub fn authority_host(&self, tls: bool) -> String {
        self.shared.base(tls).to_owned()
    }

    /// The token endpoint URL for `tenant`.
    pub fn token_endpoint(&self, tls: bool, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.shared.base(tls))
    }

    /// The PEM of the CA that signed the HTTPS certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses, such as
    /// `["127.0.0.1", "localhost"]`) signed by the emulator's CA, and its
    /// private key, both PEM (the key in PKCS#8). Clients that trust the
    /// emulator's CA ([`Emulator::transport`]) then trust another local server
    /// that uses them, such as Azurite started with `--cert` and `--key`.
    ///
    /// Fails only if key generation fails or a name is not a valid DNS name
    /// or IP address.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let emulator = azure_pipelines_credential::emulator::Emulator::start().await?;
    /// let (cert_pem, key_pem) = emulator.issue_server_certificate(&["127.0.0.1", "localhost"])?;
    /// assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    /// assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    /// # Ok(()) }
    /// ```
    pub fn issue_server_certificate(&self, names: &[&str]) -> io::Result<(String, String)> {
        self.issuer.issue(names)
    }

    /// The URL of the emulator's Key Vault, `https://emulator.vault.azure.net:PORT/`
    /// ([`KEY_VAULT_HOST`] on the HTTPS port). Only [`Emulator::reqwest_client`]
    /// (and so [`Emulator::transport`]) resolves that host to the emulator.
    /// Add secrets with [`Control::set_secret`].
    pub fn key_vault_url(&self) -> String {
        format!("https://{KEY_VAULT_HOST}:{}/", self.https_addr.port())
    }

    /// A `reqwest` client that trusts only the emulator's CA and does not
    /// follow redirects.
    pub fn reqwest_client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// An azure_core transport over [`Emulator::reqwest_client`].
    pub fn transport(&self) -> azure_core::http::Transport {
        azure_core::http::Transport::new(Arc::new(self.client.clone()))
    }

    /// Client options with [`Emulator::transport`] and quick retries (10 ms
    /// initial delay, 3 retries), so tests that go through retries stay fast.
    pub fn client_options(&self) -> azure_core::http::ClientOptions {
        use azure_core::http::{ExponentialRetryOptions, RetryOptions};
        use azure_core::time::Duration;
        azure_core::http::ClientOptions {
            transport: Some(self.transport()),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: Duration::milliseconds(10),
                max_retries: 3,
                max_total_elapsed: Duration::seconds(30),
                max_delay: Duration::milliseconds(200),
            }),
            ..Default::default()
        }
    }

    /// Options that point an [`AzurePipelinesCredential`](crate::AzurePipelinesCredential) at
    /// this emulator over https: [`Emulator::client_options`], the authority host and the OIDC
    /// URI. Set further fields with struct update syntax.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use azure_core::credentials::TokenCredential;
    /// use azure_pipelines_credential::emulator::Emulator;
    ///
    /// let emulator = Emulator::start().await?;
    /// let credential = emulator.credential(emulator.credential_options())?;
    /// let token = credential.get_token(&["https://storage.azure.com/.default"], None).await?;
    /// assert_eq!(emulator.control().counters().token_requests, 1);
    /// # let _ = token;
    /// # Ok(()) }
    /// ```
    pub fn credential_options(&self) -> crate::AzurePipelinesCredentialOptions {
        crate::AzurePipelinesCredentialOptions {
            credential_options: azure_identity::ClientAssertionCredentialOptions {
                client_options: self.client_options(),
            },
            authority_host: Some(self.authority_host(true)),
            oidc_request_uri: Some(self.oidc_request_uri(true)),
            ..Default::default()
        }
    }

    /// A credential for this emulator's service connection (tenant, client, connection and
    /// System.AccessToken from [`Emulator::config`]) with `options`.
    pub fn credential(
        &self,
        options: crate::AzurePipelinesCredentialOptions,
    ) -> azure_core::Result<Arc<crate::AzurePipelinesCredential>> {
        let c = self.config();
        crate::AzurePipelinesCredential::new(
            c.tenant_id.clone(),
            c.client_id.clone(),
            &c.service_connection_id,
            c.system_access_token.clone(),
            Some(options),
        )
    }

    /// The emulator's knobs and counters.
    pub fn control(&self) -> &Control {
        &self.shared.control
    }

    /// The issuer of the OIDC tokens: `https://vstoken.dev.azure.com/{organizationId}`.
    pub fn oidc_issuer(&self) -> String {
        self.shared.oidc_issuer()
    }

    /// The subject of the OIDC tokens: `sc://{organization}/{project}/{service_connection_name}`.
    pub fn oidc_subject(&self) -> String {
        self.shared.oidc_subject()
    }

    /// The organization's GUID (part of the OIDC issuer).
    pub fn organization_id(&self) -> &str {
        &self.shared.ids.organization_id
    }

    /// The `oid` (and `sub`) of the access tokens: the service principal's object ID.
    pub fn object_id(&self) -> &str {
        &self.shared.ids.object_id
    }

    /// Mints a valid OIDC token, as the OIDC endpoint would (without counting
    /// it).
    ///
    /// # Panics
    ///
    /// Only if signing fails, which [`Emulator::start`] already ruled out for
    /// this key.
    pub fn issue_oidc_token(&self) -> String {
        self.issue_oidc_token_with(|_| {})
    }

    /// Mints an OIDC token after `f` has changed its claims, e.g. to make it
    /// expired or give it another subject.
    ///
    /// # Panics
    ///
    /// As [`Emulator::issue_oidc_token`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let emulator = azure_pipelines_credential::emulator::Emulator::start().await?;
    /// let expired = emulator.issue_oidc_token_with(|c| {
    ///     c.iat -= 3600;
    ///     c.nbf -= 3600;
    ///     c.exp = c.iat + 600;
    /// });
    /// # assert!(!expired.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn issue_oidc_token_with(&self, f: impl FnOnce(&mut OidcClaims)) -> String {
        let mut claims = self.shared.default_oidc_claims();
        f(&mut claims);
        self.sign(&claims)
    }

    /// Signs arbitrary claims with the emulator's key (for hostile-input
    /// tests: missing or oddly typed claims).
    ///
    /// # Panics
    ///
    /// As [`Emulator::issue_oidc_token`].
    pub fn sign_claims(&self, claims: &serde_json::Value) -> String {
        self.sign(claims)
    }

    fn sign(&self, claims: &impl serde::Serialize) -> String {
        // `start` already signed and verified a token with this key, and the
        // claims are plain JSON, so this can only fail on a broken platform RNG.
        match self.shared.keys.sign(claims) {
            Ok(token) => token,
            Err(e) => panic!("emulator failed to sign a JWT: {e}"),
        }
    }

    /// Returns the claims of `token` if the emulator signed it (an OIDC token
    /// or an access token), `None` otherwise.
    pub fn verify_token(&self, token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.shared.keys.verify(token).ok()
    }

    /// The key ID (`kid`) in the header of every JWT the emulator signs.
    pub fn key_id(&self) -> &str {
        self.shared.keys.kid()
    }

    /// The environment an Azure Pipelines task gives a script using this
    /// service connection, pointing at this emulator. Includes the
    /// `SYSTEM_ACCESSTOKEN` secret.
    pub fn environment(&self, tls: bool) -> Vec<(&'static str, String)> {
        let c = &self.shared.config;
        vec![
            ("SYSTEM_OIDCREQUESTURI", self.oidc_request_uri(tls)),
            ("SYSTEM_ACCESSTOKEN", c.system_access_token.clone()),
            ("AZURESUBSCRIPTION_TENANT_ID", c.tenant_id.clone()),
            ("AZURESUBSCRIPTION_CLIENT_ID", c.client_id.clone()),
            (
                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
                c.service_connection_id.clone(),
            ),
            ("AZURE_AUTHORITY_HOST", self.authority_host(tls)),
        ]
    }

    /// Stops the server and closes every connection (same as dropping it).
    ///
    /// The listeners close as soon as the runtime next runs the stopped
    /// tasks; use [`Emulator::stop`] to wait for that, e.g. before binding
    /// the same fixed port again.
    pub fn shutdown(self) {}

    /// Stops the server like [`Emulator::shutdown`], and returns once both
    /// listening sockets are closed by this process. (A child process being
    /// spawned at that very moment holds a copy of them until it execs.)
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        drop(self);
        for task in tasks {
            task.abort();
            // Resolves only after the task's future, which owns the
            // listener, has been dropped.
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
