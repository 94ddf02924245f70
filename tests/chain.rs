//! `PipelineAwareCredential` for real: in a simulated pipeline step (the emulator, over https)
//! it uses `AzurePipelinesCredential`; with the pipeline variables cleared it falls through to
//! `azure_identity`'s `AzureCliCredential`, served by a fake `az` on `PATH`; an authentication
//! failure stops it before `az` runs.
//!
//! This binary holds a single test because it edits the process environment.

mod common;

use azure_core::{credentials::TokenCredential, error::ErrorKind};
use azure_pipelines_credential::{
    PipelineAwareCredential, PipelineAwareCredentialOptions, is_unavailable,
};
use azure_pipelines_emulator::Emulator;
use common::{
    STORAGE, TENANT,
    env::{OTHER_CREDENTIAL_VARS, PIPELINE_VARS},
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

const AZ_TOKEN: &str = "token-from-the-fake-az";

/// A directory with a fake `az` that records each run in `az-calls` and prints what
/// `az account get-access-token --output json` prints. azure_identity runs
/// `/bin/sh -c "cd /bin && az account get-access-token -o json --scope <scope>"`, so `az` is
/// found through `PATH`; the script uses only shell built-ins, so `PATH` can be just this
/// directory.
struct FakeAz {
    dir: PathBuf,
    empty: PathBuf,
}

impl FakeAz {
    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "azure-pipelines-credential-chain-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let empty = dir.join("empty");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let calls = dir.join("az-calls");
        let script = format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$*\" >> '{calls}'\n\
             printf '%s\\n' '{{\"accessToken\": \"{AZ_TOKEN}\", \"expiresOn\": \"2099-01-02 03:04:05.000000\", \"expires_on\": 4070919845, \"subscription\": \"6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\", \"tenant\": \"{TENANT}\", \"tokenType\": \"Bearer\"}}'\n",
            calls = calls.display()
        );
        let az = bin.join("az");
        std::fs::write(&az, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeAz { dir, empty }
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The argument lines of every run so far.
    fn calls(&self) -> Vec<String> {
        match std::fs::read_to_string(self.dir.join("az-calls")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for FakeAz {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// SAFETY (of every call below): see the comment in the test on which threads exist.
fn set(name: &str, value: impl AsRef<std::ffi::OsStr>) {
    unsafe { std::env::set_var(name, value) }
}

fn unset(name: &str) {
    unsafe { std::env::remove_var(name) }
}

fn set_path(dir: &Path) {
    set("PATH", dir);
}

#[test]
fn the_chain_in_a_pipeline_on_a_laptop_and_on_failure() {
    let az = FakeAz::create();
    // SAFETY: the environment is only changed while no other thread can be reading it without
    // std's environment lock:
    // - this is the only test in this binary, and the runtime below is a current-thread one,
    //   on which the emulator's tasks run too;
    // - no DNS lookup happens (the emulator's client resolves `localhost` itself), so no
    //   blocking-pool thread calls getaddrinfo;
    // - the only other threads are those azure_identity's executor spawns to run `az`: each
    //   request awaits the command's output before returning, and the thread touches the
    //   environment only in `Command::spawn`, under the same lock `set_var` takes.
    for name in PIPELINE_VARS.iter().chain(&OTHER_CREDENTIAL_VARS) {
        unset(name);
    }
    set_path(&az.bin());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emulator = Emulator::start().await.unwrap();
        let tenant = emulator.config().tenant_id.clone();
        let options = || PipelineAwareCredentialOptions {
            // The emulator serves https with its own CA: its transport trusts that CA.
            client_options: emulator.client_options(),
            ..Default::default()
        };
        let new_chain = || PipelineAwareCredential::new(Some(options())).unwrap();

        // 1. A pipeline step: AzurePipelinesCredential, through the emulator.
        for (name, value) in emulator.environment(true) {
            set(name, value);
        }
        let chain = new_chain();
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        let claims = emulator
            .verify_token(token.token.secret())
            .expect("a JWT signed by the emulator");
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
        assert_eq!(claims["aud"], "https://storage.azure.com");
        assert_eq!(chain.selected(), Some("AzurePipelinesCredential"));
        let again = chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(again.token.secret(), token.token.secret());
        let counters = emulator.control().counters();
        assert_eq!(
            (
                counters.oidc_requests,
                counters.token_requests,
                counters.access_tokens_issued
            ),
            (1, 1, 1),
            "one exchange, then the credential's cache"
        );
        assert!(az.calls().is_empty(), "az ran: {:?}", az.calls());

        // 2. An authentication failure stops the chain: az is never run.
        set("SYSTEM_ACCESSTOKEN", "not-the-job-access-token-0123456789");
        let chain = new_chain();
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(!is_unavailable(&e), "{text}");
        assert!(matches!(e.kind(), ErrorKind::Credential), "{text}");
        assert!(
            text.starts_with(
                "PipelineAwareCredential authentication failed. AzurePipelinesCredential failed, so the chain stopped there"
            ),
            "{text}"
        );
        assert!(
            text.contains("- AzurePipelinesCredential (failed): AzurePipelinesCredential authentication failed.")
                && text.contains("rejected the System.AccessToken"),
            "{text}"
        );
        assert!(!text.contains("AzureCliCredential"), "{text}");
        assert_eq!(chain.selected(), None);
        let counters = emulator.control().counters();
        assert_eq!((counters.oidc_requests, counters.token_requests), (2, 1));
        assert!(az.calls().is_empty(), "az ran: {:?}", az.calls());

        // 3. AZURE_TOKEN_CREDENTIALS: one credential only, and an invalid value.
        for name in PIPELINE_VARS {
            unset(name);
        }
        set("AZURE_TOKEN_CREDENTIALS", "AzurePipelinesCredential");
        let chain = new_chain();
        assert_eq!(
            chain.credential_names().collect::<Vec<_>>(),
            ["AzurePipelinesCredential"]
        );
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        assert!(is_unavailable(&e), "{e}");
        assert!(
            e.to_string().contains(
                "- AzurePipelinesCredential (unavailable): AzurePipelinesCredential is \
                 unavailable: AZURESUBSCRIPTION_TENANT_ID, AZURESUBSCRIPTION_CLIENT_ID, \
                 AZURESUBSCRIPTION_SERVICE_CONNECTION_ID, SYSTEM_ACCESSTOKEN not set."
            ),
            "{e}"
        );
        set("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential");
        let e = PipelineAwareCredential::new(Some(options())).unwrap_err();
        assert!(
            e.to_string()
                .contains("AZURE_TOKEN_CREDENTIALS is 'EnvironmentCredential', which is not a value it knows"),
            "{e}"
        );
        unset("AZURE_TOKEN_CREDENTIALS");
        assert!(az.calls().is_empty(), "az ran: {:?}", az.calls());

        // 4. A laptop (pipeline variables cleared): falls through to the Azure CLI.
        let chain = new_chain();
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), AZ_TOKEN);
        assert_eq!(token.expires_on.unix_timestamp(), 4_070_919_845);
        assert_eq!(chain.selected(), Some("AzureCliCredential"));
        assert_eq!(
            az.calls(),
            [format!("account get-access-token -o json --scope {STORAGE}")]
        );
        // Remembered: straight to az again (which has no cache of its own).
        chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(az.calls().len(), 2);
        let counters = emulator.control().counters();
        assert_eq!(counters.oidc_requests, 2, "the pipeline was not tried");

        // 5. `dev` skips the pipeline credential even in a pipeline step.
        for (name, value) in emulator.environment(true) {
            set(name, value);
        }
        set("AZURE_TOKEN_CREDENTIALS", "dev");
        let chain = new_chain();
        assert_eq!(
            chain.credential_names().collect::<Vec<_>>(),
            ["AzureCliCredential", "AzureDeveloperCliCredential"]
        );
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), AZ_TOKEN);
        assert_eq!(az.calls().len(), 3);
        assert_eq!(emulator.control().counters().oidc_requests, 2);

        // 6. Nothing installed, nothing configured: unavailable, and why for each credential.
        unset("AZURE_TOKEN_CREDENTIALS");
        for name in PIPELINE_VARS {
            unset(name);
        }
        set_path(&az.empty);
        let chain: Arc<dyn TokenCredential> = new_chain();
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(is_unavailable(&e), "{text}");
        for expected in [
            "- AzurePipelinesCredential (unavailable):",
            "- WorkloadIdentityCredential (unavailable):",
            "- ManagedIdentityCredential (unavailable):",
            "- AzureCliCredential (unavailable): AzureCliCredential authentication failed. az not found on PATH",
            "- AzureDeveloperCliCredential (unavailable): AzureDeveloperCliCredential authentication failed. azd not found on PATH",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(az.calls().len(), 3);
    });
}
