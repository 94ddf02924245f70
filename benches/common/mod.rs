//! What the benchmarks share: the emulator on a runtime, this crate's credential and
//! azure_identity's for its service connection, and the clock read of a hit.

// The emulator credential of the integration tests.
#[path = "../../tests/common/mod.rs"]
mod tests_common;

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    http::ClientOptions,
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::AzurePipelinesCredential;
use azure_pipelines_emulator::{Emulator, EmulatorConfig};
use std::{sync::Arc, time::SystemTime};

pub const SCOPE: &str = "https://storage.azure.com/.default";

pub struct Bench {
    pub runtime: tokio::runtime::Runtime,
    pub emulator: Emulator,
}

impl Bench {
    /// Starts the emulator (HTTPS) on a two-worker runtime.
    pub fn start() -> Self {
        let https_port = free_port();
        // SAFETY: nothing else runs yet (no runtime, no threads), so nothing reads the
        // environment concurrently.
        unsafe {
            std::env::set_var(
                "SYSTEM_OIDCREQUESTURI",
                format!("https://localhost:{https_port}/placeholder"),
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let emulator = runtime
            .block_on(Emulator::start_with(EmulatorConfig {
                https_port,
                ..Default::default()
            }))
            .expect("emulator");
        let uri = emulator.oidc_request_uri(true);
        assert!(uri.starts_with(&format!("https://localhost:{https_port}/")));
        // SAFETY: the runtime's workers only run the emulator's tasks, which never read the
        // environment. azure_identity's credential reads SYSTEM_OIDCREQUESTURI at construction.
        unsafe { std::env::set_var("SYSTEM_OIDCREQUESTURI", uri) };
        Bench { runtime, emulator }
    }

    pub fn ours(&self) -> Arc<AzurePipelinesCredential> {
        tests_common::emulator::credential(&self.emulator)
    }

    pub fn theirs(&self) -> Arc<azure_identity::AzurePipelinesCredential> {
        let e = &self.emulator;
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = e.authority_host(true);
        azure_identity::AzurePipelinesCredential::new(
            e.config().tenant_id.clone(),
            e.config().client_id.clone(),
            &e.config().service_connection_id,
            e.config().system_access_token.clone(),
            Some(azure_identity::AzurePipelinesCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: ClientOptions {
                        cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
                        ..e.client_options()
                    },
                },
            }),
        )
        .expect("azure_identity credential")
    }
}

impl Bench {
    /// `callers` concurrent calls for one scope on `credential`, each a task of the runtime,
    /// all started at once: a cold start when the credential is new.
    pub fn cold_start(&self, credential: Arc<dyn TokenCredential>, callers: usize) {
        self.runtime.block_on(async move {
            let calls = (0..callers).map(|_| {
                let credential = credential.clone();
                tokio::spawn(async move { credential.get_token(&[SCOPE], None).await })
            });
            for call in futures::future::join_all(calls).await {
                call.expect("joined").expect("token");
            }
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The clock read of a cache hit: the system clock, as the credential reads it.
pub fn clock_read() -> SystemTime {
    #[allow(clippy::disallowed_methods)]
    SystemTime::now()
}

/// The least any `TokenCredential` can do per call: the boxed future `async_trait` makes of
/// `get_token` (holding the caller's scopes and options), one clock read and a clone of a
/// stored token. The floor for a credential called through the trait.
pub struct FloorCredential(pub AccessToken);

impl std::fmt::Debug for FloorCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FloorCredential")
    }
}

#[async_trait::async_trait]
impl TokenCredential for FloorCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        std::hint::black_box(clock_read());
        Ok(self.0.clone())
    }
}
