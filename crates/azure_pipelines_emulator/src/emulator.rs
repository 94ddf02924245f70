//! The running emulator: what a test starts, asks for URLs and tokens, and stops.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{EmulatorConfig, KEY_VAULT_HOST};
use crate::control::Control;
use crate::jwt::{Keys, OidcClaims};
use crate::server::{self, Listeners};
use crate::state::{Ids, Shared};
use crate::tls::{CertIssuer, TlsMaterial};
use crate::util;

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops the
/// server and closes every connection.
pub struct Emulator {
    shared: Arc<Shared>,
    ca_pem: String,
    issuer: CertIssuer,
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
        // The Key Vault host is there so that Key Vault clients, which check that the vault's host
        // is under the challenge's resource host, can talk to the emulator's vault.
        let tls = TlsMaterial::generate(&["localhost", "127.0.0.1", KEY_VAULT_HOST])?;
        let keys = Keys::generate()?;
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
        let tasks = server::spawn(listeners, &tls, shared.clone(), shutdown_rx);
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

    /// The App Service managed identity endpoint (`IDENTITY_ENDPOINT`):
    /// `{base}/msi/token`, e.g. `https://localhost:PORT/msi/token`.
    ///
    /// With it in `IDENTITY_ENDPOINT` and [`Emulator::managed_identity_header`]
    /// in `IDENTITY_HEADER`, azure_identity's `ManagedIdentityCredential` gets
    /// its tokens from the emulator: access tokens for the requested resource,
    /// signed like those of the token endpoint, for the service connection's
    /// application in the configured tenant.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emulator = azure_pipelines_emulator::Emulator::start().await?;
    /// let endpoint = emulator.managed_identity_endpoint(true);
    /// let response = emulator
    ///     .reqwest_client()
    ///     .get(format!("{endpoint}?api-version=2019-08-01&resource=https://vault.azure.net"))
    ///     .header("X-IDENTITY-HEADER", emulator.managed_identity_header())
    ///     .send()
    ///     .await?;
    /// assert_eq!(response.status(), 200);
    /// assert_eq!(emulator.control().counters().managed_identity_tokens_issued, 1);
    /// # Ok(()) }
    /// ```
    pub fn managed_identity_endpoint(&self, tls: bool) -> String {
        format!("{}/msi/token", self.shared.base(tls))
    }

    /// The secret of the managed identity endpoint (`IDENTITY_HEADER`):
    /// [`EmulatorConfig::managed_identity_header`].
    pub fn managed_identity_header(&self) -> &str {
        &self.shared.config.managed_identity_header
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
    /// # let emulator = azure_pipelines_emulator::Emulator::start().await?;
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
    /// # let emulator = azure_pipelines_emulator::Emulator::start().await?;
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
