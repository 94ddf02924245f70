//! Chains with this crate's credential (against the emulator over HTTPS) and with others:
//!
//! - `ChainedTokenCredential::get_token_info` passes `refresh_on` and `token_type` through when
//!   the member that answers is this crate's credential (directly or in a nested chain): the
//!   chain's answer is the credential's own. Another credential's token has no `refresh_on` and
//!   is `Bearer`.
//! - `ChainMember::unavailable_when` lets `azure_identity`'s `AzureCliCredential` (run through a
//!   fake `Executor`, so no `az` is needed) sit in front of the pipeline credential: its "not
//!   logged in" error, declared unavailable, passes the request on; without the declaration, or
//!   for an error the predicate does not match, the chain stops there.
//!
//! `PipelineAwareCredential::get_token_info` reads the process environment, so it is tested in
//! `managed_identity_fallthrough.rs`, whose single test owns its environment.

mod common;

use azure_core::{
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    error::{Error, ErrorKind},
    time::OffsetDateTime,
};
use azure_pipelines_credential::{ChainMember, ChainedTokenCredential, is_unavailable};
use azure_pipelines_emulator::Emulator;
use common::{
    STORAGE,
    emulator::{counts, credential},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

/// A credential of some other crate: a fixed token, or an error of its own wording.
#[derive(Debug)]
struct Other {
    answer: Result<(&'static str, i64), &'static str>,
    calls: AtomicU32,
}

impl Other {
    fn token(token: &'static str, expires_on: i64) -> Arc<Self> {
        Arc::new(Self {
            answer: Ok((token, expires_on)),
            calls: AtomicU32::new(0),
        })
    }

    fn failing(message: &'static str) -> Arc<Self> {
        Arc::new(Self {
            answer: Err(message),
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenCredential for Other {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.answer {
            Ok((token, expires_on)) => Ok(AccessToken::new(
                Secret::new(token),
                OffsetDateTime::from_unix_timestamp(expires_on).unwrap(),
            )),
            Err(message) => Err(Error::with_message(ErrorKind::Credential, message)),
        }
    }
}

#[tokio::test]
async fn chained_token_info_is_the_pipeline_credentials_own() {
    let emulator = Emulator::start().await.unwrap();
    // Entra's refresh_in: the credential's refresh_on is 1800 s after the token was issued.
    emulator
        .control()
        .set_refresh_in(Some(Duration::from_secs(1800)));
    let credential = credential(&emulator);
    let absent = Other::failing("OtherCredential: not configured here");
    let chain = ChainedTokenCredential::new([
        ChainMember::new(absent.clone())
            .unavailable_when(|e| e.to_string().contains("not configured")),
        ChainMember::new(credential.clone()),
    ]);

    // Walked: the first member is unavailable, the pipeline credential answers.
    let walked = chain.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(chain.selected(), Some("AzurePipelinesCredential"));
    // The credential's own answer now is a hit on the token the chain received.
    let own = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(counts(&emulator), (1, 1));
    let refresh_on = own.refresh_on.expect("the credential's refresh_on");
    assert_eq!(
        own.expires_on - refresh_on,
        time::Duration::seconds(3599 - 1800)
    );
    assert_eq!(own.token_type, "Bearer");

    // Remembered, and through a chain in a chain: the same answer each time.
    let remembered = chain.get_token_info(&[STORAGE], None).await.unwrap();
    let outer = ChainedTokenCredential::new([ChainMember::new(chain.clone())]);
    let nested = outer.get_token_info(&[STORAGE], None).await.unwrap();
    for info in [&walked, &remembered, &nested] {
        assert_eq!(info.token.secret(), own.token.secret());
        assert_eq!(
            (info.expires_on, info.refresh_on, info.token_type.as_str()),
            (own.expires_on, Some(refresh_on), "Bearer")
        );
    }
    assert_eq!(outer.selected(), Some("ChainedTokenCredential"));
    assert_eq!(counts(&emulator), (1, 1));
    assert_eq!(
        absent.calls(),
        1,
        "remembered: the first member was asked once"
    );
}

#[tokio::test]
async fn another_credentials_token_info_has_no_refresh_on_and_is_bearer() {
    const EXPIRES_ON: i64 = 4_070_919_845;
    let other = Other::token("token-of-another-credential", EXPIRES_ON);
    let chain = ChainedTokenCredential::new([ChainMember::new(other.clone())]);
    for _ in 0..2 {
        let info = chain.get_token_info(&[STORAGE], None).await.unwrap();
        assert_eq!(info.token.secret(), "token-of-another-credential");
        assert_eq!(info.expires_on.unix_timestamp(), EXPIRES_ON);
        assert_eq!(
            (info.refresh_on, info.token_type.as_str()),
            (None, "Bearer")
        );
    }
    assert_eq!(chain.selected(), Some("Other"));
    assert_eq!(other.calls(), 2);

    // The same through a chain in a chain.
    let outer = ChainedTokenCredential::new([ChainMember::new(chain)]);
    let info = outer.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(
        (info.refresh_on, info.token_type.as_str()),
        (None, "Bearer")
    );
    assert_eq!(info.expires_on.unix_timestamp(), EXPIRES_ON);
}

/// A fake `az` for azure_identity's `AzureCliCredential`, which runs
/// `/bin/sh -c "cd /bin && az account get-access-token ..."` through its `Executor`.
#[cfg(unix)]
mod fake_az {
    use azure_identity::{AzureCliCredential, AzureCliCredentialOptions, Executor};
    use std::{
        ffi::OsStr,
        io,
        os::unix::process::ExitStatusExt as _,
        process::{ExitStatus, Output},
        sync::{Arc, Mutex, PoisonError},
    };

    pub const NOT_LOGGED_IN: &str = "ERROR: Please run 'az login' to setup account.";
    pub const DEVICE_NOT_MANAGED: &str =
        "ERROR: AADSTS530003: Your device is required to be managed to access this resource.";

    /// Answers every run with (exit code, stdout, stderr) and records the command lines.
    #[derive(Debug)]
    pub struct FakeAz {
        answer: (i32, String, String),
        runs: Mutex<Vec<String>>,
    }

    impl FakeAz {
        /// `az` exiting with 1 and `stderr`.
        pub fn failing(stderr: &str) -> Arc<Self> {
            Arc::new(Self {
                answer: (1, String::new(), stderr.to_owned()),
                runs: Mutex::default(),
            })
        }

        /// `az` printing a token, as `az account get-access-token -o json` does.
        pub fn logged_in(token: &str, expires_on: i64) -> Arc<Self> {
            let json = format!(
                r#"{{"accessToken":"{token}","expiresOn":"2099-01-02 03:04:05.000000","expires_on":{expires_on},"subscription":"00000000-0000-0000-0000-000000000000","tenant":"72f988bf-86f1-41af-91ab-2d7cd011db47","tokenType":"Bearer"}}"#
            );
            Arc::new(Self {
                answer: (0, json, String::new()),
                runs: Mutex::default(),
            })
        }

        pub fn runs(&self) -> Vec<String> {
            self.runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }

        /// An `AzureCliCredential` that runs this fake.
        pub fn credential(self: &Arc<Self>) -> Arc<AzureCliCredential> {
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                executor: Some(self.clone()),
                ..Default::default()
            }))
            .expect("AzureCliCredential")
        }
    }

    #[async_trait::async_trait]
    impl Executor for FakeAz {
        async fn run(&self, program: &OsStr, args: &[&OsStr]) -> io::Result<Output> {
            let line: Vec<String> = std::iter::once(program)
                .chain(args.iter().copied())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            self.runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.join(" "));
            let (code, stdout, stderr) = self.answer.clone();
            Ok(Output {
                status: ExitStatus::from_raw(code << 8),
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
            })
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn an_azure_identity_credential_declared_unavailable_passes_the_request_on() {
    use fake_az::{FakeAz, NOT_LOGGED_IN};
    let emulator = Emulator::start().await.unwrap();
    let az = FakeAz::failing(NOT_LOGGED_IN);
    let not_logged_in = |e: &Error| e.to_string().contains("az login");

    let chain = ChainedTokenCredential::new([
        ChainMember::new(az.credential()).unavailable_when(not_logged_in),
        ChainMember::new(credential(&emulator)),
    ]);
    assert_eq!(
        chain.credential_names().collect::<Vec<_>>(),
        ["AzureCliCredential", "AzurePipelinesCredential"]
    );
    let token = chain.get_token(&[STORAGE], None).await.unwrap();
    let claims = emulator
        .verify_token(token.token.secret())
        .expect("a token the emulator signed");
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(chain.selected(), Some("AzurePipelinesCredential"));
    let runs = az.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].contains(&format!(
            "az account get-access-token -o json --scope {STORAGE}"
        )),
        "{runs:?}"
    );
    assert_eq!(counts(&emulator), (1, 1));

    // Remembered: az is not run again.
    chain.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(az.runs().len(), 1);

    // Every member unavailable: the chain is unavailable too, and says why for az.
    let alone = ChainedTokenCredential::new([
        ChainMember::new(az.credential()).unavailable_when(not_logged_in)
    ]);
    let e = alone.get_token(&[STORAGE], None).await.unwrap_err();
    assert!(is_unavailable(&e), "{e}");
    assert!(
        e.to_string()
            .contains("- AzureCliCredential (unavailable): AzureCliCredential authentication failed. ERROR: Please run 'az login'"),
        "{e}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn without_the_declaration_or_for_other_errors_the_chain_stops() {
    use fake_az::{DEVICE_NOT_MANAGED, FakeAz, NOT_LOGGED_IN};
    let emulator = Emulator::start().await.unwrap();
    let not_logged_in = |e: &Error| e.to_string().contains("az login");

    // azure_identity's errors are not unavailable by themselves.
    let az = FakeAz::failing(NOT_LOGGED_IN);
    let strict = ChainedTokenCredential::new([
        ChainMember::new(az.credential()),
        ChainMember::new(credential(&emulator)),
    ]);
    // A refusal the predicate does not match.
    let refusing = FakeAz::failing(DEVICE_NOT_MANAGED);
    let matched_elsewhere = ChainedTokenCredential::new([
        ChainMember::new(refusing.credential()).unavailable_when(not_logged_in),
        ChainMember::new(credential(&emulator)),
    ]);

    for (chain, needle) in [(&strict, "az login"), (&matched_elsewhere, "AADSTS530003")] {
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(!is_unavailable(&e), "{text}");
        assert!(matches!(e.kind(), ErrorKind::Credential), "{text}");
        assert!(
            text.starts_with(
                "ChainedTokenCredential authentication failed. AzureCliCredential failed, so the chain stopped there"
            ),
            "{text}"
        );
        assert!(text.contains("- AzureCliCredential (failed): "), "{text}");
        assert!(text.contains(needle), "{text}");
        assert!(!text.contains("AzurePipelinesCredential"), "{text}");
        assert_eq!(chain.selected(), None);
    }
    assert_eq!((az.runs().len(), refusing.runs().len()), (1, 1));
    assert_eq!(
        counts(&emulator),
        (0, 0),
        "the pipeline credential was never asked"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn azure_cli_token_info_in_a_chain_has_no_refresh_on_and_is_bearer() {
    use fake_az::FakeAz;
    const EXPIRES_ON: i64 = 4_070_919_845;
    let az = FakeAz::logged_in("token-from-the-fake-az", EXPIRES_ON);
    let chain = ChainedTokenCredential::new([ChainMember::new(az.credential())]);
    let info = chain.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(info.token.secret(), "token-from-the-fake-az");
    assert_eq!(info.expires_on.unix_timestamp(), EXPIRES_ON);
    assert_eq!(
        (info.refresh_on, info.token_type.as_str()),
        (None, "Bearer")
    );
    assert_eq!(chain.selected(), Some("AzureCliCredential"));
}
