//! `PipelineAwareCredential`'s managed-identity step, for real: with only App Service's
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` set (pointing at the emulator's managed identity
//! endpoint, over HTTPS), the chain falls through from "not in a pipeline" (and "no workload
//! identity") to azure_identity's `ManagedIdentityCredential` and gets the emulator's managed
//! identity token; with the pipeline's variables set too, a new chain uses the pipeline
//! credential and never asks the managed identity endpoint. Both credentials get the chain's
//! `client_options` (the emulator's transport, which trusts its CA): both talk HTTPS.
//!
//! `get_token_info` through the chain: the pipeline credential's `refresh_on` and `token_type`
//! pass through; the managed identity's token has no `refresh_on` and is `Bearer`.
//!
//! This binary holds a single test because it edits the process environment, which
//! azure_identity's `ManagedIdentityCredential` reads itself.

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::{
    ChainMember, ChainedTokenCredential, PipelineAwareCredential, PipelineAwareCredentialOptions,
};
use azure_pipelines_emulator::Emulator;
use common::{
    STORAGE,
    env::{OTHER_CREDENTIAL_VARS, PIPELINE_VARS},
    spans::Recorder,
};
use std::{path::PathBuf, time::Duration};

const TARGET: &str = "azure_pipelines_credential";

/// The persistent cache's folder, which would otherwise come from the machine running the tests.
const AGENT_VARS: [&str; 1] = ["AGENT_TEMPDIRECTORY"];

// SAFETY (of every call below): see the comment in the test on which threads exist.
fn set(name: &str, value: impl AsRef<std::ffi::OsStr>) {
    unsafe { std::env::set_var(name, value) }
}

fn unset(name: &str) {
    unsafe { std::env::remove_var(name) }
}

/// An empty directory, for a `PATH` on which neither `az` nor `azd` is found.
struct EmptyDir(PathBuf);

impl EmptyDir {
    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "azure-pipelines-credential-mi-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (managed identity, OIDC, token) requests that reached the emulator.
fn requests(emulator: &Emulator) -> (u64, u64, u64) {
    let c = emulator.control().counters();
    (
        c.managed_identity_requests,
        c.oidc_requests,
        c.token_requests,
    )
}

/// The chain's decisions, from its events: (credential, message), in order.
fn decisions(spans: &Recorder) -> Vec<(String, String)> {
    spans
        .events_of(TARGET)
        .into_iter()
        .filter(|e| e.get("chain").map(String::as_str) == Some("PipelineAwareCredential"))
        .map(|e| {
            (
                e.get("credential").cloned().unwrap_or_default(),
                e.get("message").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn falls_through_to_the_managed_identity_and_back_to_the_pipeline() {
    let path = EmptyDir::create();
    // SAFETY: the environment is only changed while no other thread can be reading it without
    // std's environment lock:
    // - this is the only test in this binary, and the runtime below is a current-thread one, on
    //   which the emulator's tasks and the credentials' requests run too;
    // - no DNS lookup happens (the emulator's transport resolves `localhost` itself), so no
    //   blocking-pool thread calls getaddrinfo;
    // - no `az` or `azd` is run: the chain stops at the managed identity or the pipeline, and
    //   `PATH` has neither.
    for name in PIPELINE_VARS
        .iter()
        .chain(&OTHER_CREDENTIAL_VARS)
        .chain(&AGENT_VARS)
    {
        unset(name);
    }
    set("PATH", &path.0);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (spans, _thread) = Recorder::install();
        let emulator = Emulator::start().await.unwrap();
        // The pipeline credential's tokens: Entra says to refresh them after 1800 s.
        emulator
            .control()
            .set_refresh_in(Some(Duration::from_secs(1800)));
        let new_chain = || {
            PipelineAwareCredential::new(Some(PipelineAwareCredentialOptions {
                // HTTPS with the emulator's own CA: its transport trusts that CA.
                client_options: emulator.client_options(),
                ..Default::default()
            }))
            .unwrap()
        };

        // 1. App Service: only the managed identity variables.
        set(
            "IDENTITY_ENDPOINT",
            emulator.managed_identity_endpoint(true),
        );
        set("IDENTITY_HEADER", emulator.managed_identity_header());
        let chain = new_chain();
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        let claims = emulator
            .verify_token(token.token.secret())
            .expect("a JWT signed by the emulator");
        assert_eq!(claims["aud"], "https://storage.azure.com");
        assert_eq!(claims["appid"], emulator.config().client_id.as_str());
        assert_eq!(chain.selected(), Some("ManagedIdentityCredential"));
        assert_eq!(requests(&emulator), (1, 0, 0));
        assert_eq!(
            emulator.control().counters().managed_identity_tokens_issued,
            1
        );
        assert_eq!(
            decisions(&spans),
            [
                (
                    "AzurePipelinesCredential".to_owned(),
                    "credential chain: unavailable, trying the next one".to_owned()
                ),
                (
                    "WorkloadIdentityCredential".to_owned(),
                    "credential chain: unavailable, trying the next one".to_owned()
                ),
                (
                    "ManagedIdentityCredential".to_owned(),
                    "credential chain: using this credential from now on".to_owned()
                ),
            ]
        );
        // Another credential's token through get_token_info: no refresh_on, Bearer (from
        // azure_identity's own cache: no new request).
        let info = chain.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(info.token.secret(), token.token.secret());
        assert_eq!(info.expires_on, token.expires_on);
        assert_eq!(
            (info.refresh_on, info.token_type.as_str()),
            (None, "Bearer")
        );
        assert_eq!(requests(&emulator), (1, 0, 0));

        // 2. A pipeline step on the same machine: the pipeline's variables too.
        for (name, value) in emulator.environment(true) {
            set(name, value);
        }
        let chain = new_chain();
        let info = chain.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(chain.selected(), Some("AzurePipelinesCredential"));
        let claims = emulator
            .verify_token(info.token.secret())
            .expect("a JWT signed by the emulator");
        assert_eq!(claims["aud"], "https://storage.azure.com");
        assert_eq!(requests(&emulator), (1, 1, 1));
        assert_eq!(emulator.control().counters().access_tokens_issued, 1);
        // The pipeline credential's refresh_on and token_type, passed through.
        let refresh_on = info
            .refresh_on
            .expect("the pipeline credential's refresh_on");
        assert_eq!(
            info.expires_on - refresh_on,
            time::Duration::seconds(3599 - 1800)
        );
        assert_eq!(info.token_type, "Bearer");
        // And through a chain around it: the same token, from the pipeline credential's cache.
        let outer = ChainedTokenCredential::new([ChainMember::new(chain.clone())]);
        let outer_info = outer.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(outer_info.token.secret(), info.token.secret());
        assert_eq!(
            (outer_info.expires_on, outer_info.refresh_on),
            (info.expires_on, Some(refresh_on))
        );
        assert_eq!(outer.selected(), Some("PipelineAwareCredential"));
        assert_eq!(requests(&emulator), (1, 1, 1));
        let last = decisions(&spans).pop();
        assert_eq!(
            last,
            Some((
                "AzurePipelinesCredential".to_owned(),
                "credential chain: using this credential from now on".to_owned()
            ))
        );
    });
}
