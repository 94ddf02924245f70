//! `ChainedTokenCredential`: credentials tried in order, falling through only on *unavailable*.

mod pipeline_aware;

pub use pipeline_aware::{PipelineAwareCredential, PipelineAwareCredentialOptions};

use crate::error::Unavailable;
use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::{Error, ErrorKind},
};
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

const CHAIN_NAME: &str = "ChainedTokenCredential";
const TROUBLESHOOT: &str = "To troubleshoot, visit https://aka.ms/azsdk/rust/identity/troubleshoot";
/// No credential has provided a token yet.
const NONE_SELECTED: usize = usize::MAX;

/// Tries credentials in order and uses the first that provides a token.
///
/// - A credential whose error is *unavailable* ([`is_unavailable`](crate::is_unavailable): it
///   cannot work in this environment, such as `AzurePipelinesCredential` outside a pipeline)
///   passes the request on to the next one.
/// - Any other error is an authentication failure: the chain stops there and returns it, because
///   trying the next credential would hide a real problem (a rejected `System.AccessToken`, a
///   federation mismatch) behind a token for another identity.
/// - The error lists what each credential tried said: its type name and message. When every
///   credential was unavailable the chain's error is itself unavailable, so chains nest.
///
/// The chain remembers the credential that provided the first token and later requests go
/// straight to it. If that credential later fails, its error is returned as is: the chain does not
/// fall back to the others (as `azure_identity`'s `DeveloperToolsCredential` and the other Azure
/// SDKs' `DefaultAzureCredential`), so one process keeps one identity.
///
/// ```no_run
/// use azure_core::credentials::TokenCredential;
/// use azure_identity::AzureCliCredential;
/// use azure_pipelines_credential::{AzurePipelinesCredential, ChainedTokenCredential, is_unavailable};
/// use std::sync::Arc;
///
/// # async fn example() -> azure_core::Result<()> {
/// let mut credentials: Vec<Arc<dyn TokenCredential>> = Vec::new();
/// match AzurePipelinesCredential::from_env(None) {
///     Ok(credential) => credentials.push(credential),
///     Err(e) if is_unavailable(&e) => {} // not in a pipeline step
///     Err(e) => return Err(e),
/// }
/// credentials.push(AzureCliCredential::new(None)?);
/// let chain = ChainedTokenCredential::new(credentials);
/// let token = chain.get_token(&["https://storage.azure.com/.default"], None).await?;
/// println!("token from {:?}", chain.selected());
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct ChainedTokenCredential {
    name: &'static str,
    members: Vec<Member>,
    selected: AtomicUsize,
}

struct Member {
    /// The credential's type name, taken from its `Debug` output once, at construction.
    name: String,
    credential: Arc<dyn TokenCredential>,
}

impl ChainedTokenCredential {
    /// Creates a chain that tries `credentials` in order.
    ///
    /// An empty chain is valid; its requests fail as *unavailable*.
    pub fn new(credentials: Vec<Arc<dyn TokenCredential>>) -> Arc<Self> {
        Arc::new(Self::named(CHAIN_NAME, credentials))
    }

    /// A chain whose errors and `Debug` output carry `name` (for chains built by this crate).
    pub(crate) fn named(name: &'static str, credentials: Vec<Arc<dyn TokenCredential>>) -> Self {
        let members = credentials
            .into_iter()
            .map(|credential| Member {
                name: type_name(credential.as_ref()),
                credential,
            })
            .collect();
        Self {
            name,
            members,
            selected: AtomicUsize::new(NONE_SELECTED),
        }
    }

    /// The type name of the credential that provided the first token, which every later request
    /// goes to; `None` until one has.
    pub fn selected(&self) -> Option<&str> {
        self.members
            .get(self.selected.load(Ordering::Acquire))
            .map(|m| m.name.as_str())
    }

    /// The type names of the credentials, in the order they are tried.
    pub fn credential_names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    async fn walk(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let mut unavailable: Vec<(&str, String)> = Vec::new();
        for (index, member) in self.members.iter().enumerate() {
            match member.credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    // The first success wins; a concurrent first request that succeeded with
                    // another member does not move the chain to a second identity.
                    let _ = self.selected.compare_exchange(
                        NONE_SELECTED,
                        index,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    tracing::info!(
                        target: "azure_pipelines_credential",
                        chain = self.name,
                        credential = member.name.as_str(),
                        "credential chain: using this credential from now on"
                    );
                    return Ok(token);
                }
                Err(error) if crate::is_unavailable(&error) => {
                    tracing::debug!(
                        target: "azure_pipelines_credential",
                        chain = self.name,
                        credential = member.name.as_str(),
                        "credential chain: unavailable, trying the next one"
                    );
                    unavailable.push((&member.name, error.to_string()));
                }
                Err(error) => return Err(self.stopped(&unavailable, &member.name, error)),
            }
        }
        Err(self.all_unavailable(&unavailable))
    }

    /// The error when `name` failed: what came before, then the failure, whose error stays the
    /// source (so its HTTP response remains reachable).
    fn stopped(&self, unavailable: &[(&str, String)], name: &str, error: Error) -> Error {
        let mut message = format!(
            "{} authentication failed. {name} failed, so the chain stopped there (only a \
             credential that is unavailable in this environment passes the request on):",
            self.name
        );
        for (previous, text) in unavailable {
            push_item(&mut message, previous, "unavailable", text);
        }
        push_item(&mut message, name, "failed", &error.to_string());
        message.push('\n');
        message.push_str(TROUBLESHOOT);
        Error::with_error(ErrorKind::Credential, error, message)
    }

    fn all_unavailable(&self, unavailable: &[(&str, String)]) -> Error {
        let mut message = if unavailable.is_empty() {
            format!(
                "{} authentication failed. The chain has no credentials.",
                self.name
            )
        } else {
            format!(
                "{} authentication failed. No credential in the chain is available in this \
                 environment:",
                self.name
            )
        };
        for (name, text) in unavailable {
            push_item(&mut message, name, "unavailable", text);
        }
        message.push('\n');
        message.push_str(TROUBLESHOOT);
        // Unavailable itself, so that a chain inside another chain passes the request on too.
        Error::with_error(ErrorKind::Credential, Unavailable, message)
    }
}

/// Appends `- name (outcome): text`, with the text's further lines indented under it.
fn push_item(message: &mut String, name: &str, outcome: &str, text: &str) {
    message.push_str(&format!("\n- {name} ({outcome}): "));
    let mut lines = text.lines();
    if let Some(first) = lines.next() {
        message.push_str(first);
    }
    for line in lines {
        message.push_str("\n    ");
        message.push_str(line);
    }
}

/// `AzureCliCredential` from `azure_identity::azure_cli_credential::AzureCliCredential { .. }`:
/// the last path segment of what `Debug` prints before any field, generic or space.
fn type_name(credential: &dyn TokenCredential) -> String {
    let debug = format!("{credential:?}");
    let head = debug
        .split(|c: char| matches!(c, '{' | '(' | '<' | '[') || c.is_whitespace())
        .next()
        .unwrap_or_default();
    let name = head.rsplit("::").next().unwrap_or_default();
    if name.is_empty() {
        "credential".to_owned()
    } else {
        name.to_owned()
    }
}

impl fmt::Debug for ChainedTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.name)
            .field("credentials", &self.credential_names().collect::<Vec<_>>())
            .field("selected", &self.selected())
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ChainedTokenCredential {
    /// Requests a token from the remembered credential, or walks the chain; see the type's
    /// documentation.
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(member) = self.members.get(self.selected.load(Ordering::Acquire)) {
            return member.credential.get_token(scopes, options).await;
        }
        self.walk(scopes, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error;
    use azure_core::{credentials::Secret, time::OffsetDateTime};
    use std::sync::atomic::AtomicU32;

    /// What a scripted credential answers.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Answer {
        Token,
        Unavailable,
        Failure,
    }

    #[derive(Debug)]
    struct Scripted {
        id: &'static str,
        answers: std::sync::Mutex<Vec<Answer>>,
        calls: AtomicU32,
    }

    impl Scripted {
        /// Answers in order; the last answer repeats.
        fn new(id: &'static str, answers: &[Answer]) -> Arc<Self> {
            Arc::new(Self {
                id,
                answers: std::sync::Mutex::new(answers.iter().rev().copied().collect()),
                calls: AtomicU32::new(0),
            })
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for Scripted {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = {
                let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                if answers.len() > 1 {
                    answers.pop()
                } else {
                    answers.last().copied()
                }
            };
            match answer {
                Some(Answer::Token) => Ok(AccessToken::new(
                    Secret::new(format!("token-of-{}", self.id)),
                    OffsetDateTime::UNIX_EPOCH,
                )),
                Some(Answer::Unavailable) => {
                    Err(error::unavailable(format!("{} is not here.", self.id)))
                }
                Some(Answer::Failure) | None => Err(Error::with_message(
                    ErrorKind::Credential,
                    format!("{} was rejected.\nsecond line", self.id),
                )),
            }
        }
    }

    fn as_dyn(credentials: &[&Arc<Scripted>]) -> Vec<Arc<dyn TokenCredential>> {
        credentials
            .iter()
            .map(|c| (*c).clone() as Arc<dyn TokenCredential>)
            .collect()
    }

    async fn token(chain: &ChainedTokenCredential) -> azure_core::Result<String> {
        chain
            .get_token(&["https://storage.azure.com/.default"], None)
            .await
            .map(|t| t.token.secret().to_owned())
    }

    #[tokio::test]
    async fn falls_through_unavailable_and_remembers_the_winner() {
        use Answer::*;
        let a = Scripted::new("a", &[Unavailable]);
        let b = Scripted::new("b", &[Token]);
        let c = Scripted::new("c", &[Token]);
        let chain = ChainedTokenCredential::new(as_dyn(&[&a, &b, &c]));
        assert_eq!(chain.selected(), None);
        assert_eq!(token(&chain).await.unwrap(), "token-of-b");
        assert_eq!(chain.selected(), Some("Scripted"));
        for _ in 0..3 {
            assert_eq!(token(&chain).await.unwrap(), "token-of-b");
        }
        // Later requests went straight to b.
        assert_eq!((a.calls(), b.calls(), c.calls()), (1, 4, 0));
    }

    #[tokio::test]
    async fn a_failure_stops_the_chain_and_keeps_its_source() {
        use Answer::*;
        let a = Scripted::new("a", &[Unavailable]);
        let b = Scripted::new("b", &[Failure]);
        let c = Scripted::new("c", &[Token]);
        let chain = ChainedTokenCredential::new(as_dyn(&[&a, &b, &c]));
        let e = token(&chain).await.unwrap_err();
        assert!(!crate::is_unavailable(&e), "{e}");
        assert!(matches!(e.kind(), ErrorKind::Credential));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "ChainedTokenCredential authentication failed. Scripted failed, so the chain stopped there"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n- Scripted (unavailable): AzurePipelinesCredential authentication failed. a is not here."),
            "{text}"
        );
        assert!(
            text.contains("\n- Scripted (failed): b was rejected.\n    second line\n"),
            "{text}"
        );
        assert!(text.ends_with(TROUBLESHOOT), "{text}");
        assert!(!text.contains("token-of"), "{text}");
        // The failure is the source.
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("b was rejected.\nsecond line"));
        assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 0));
        // Nothing was remembered: the next request walks again.
        assert_eq!(chain.selected(), None);
        token(&chain).await.unwrap_err();
        assert_eq!((a.calls(), b.calls(), c.calls()), (2, 2, 0));
    }

    #[tokio::test]
    async fn all_unavailable_is_unavailable_so_chains_nest() {
        use Answer::*;
        let a = Scripted::new("a", &[Unavailable]);
        let b = Scripted::new("b", &[Unavailable]);
        let inner = ChainedTokenCredential::new(as_dyn(&[&a, &b]));
        let e = token(&inner).await.unwrap_err();
        assert!(crate::is_unavailable(&e), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "ChainedTokenCredential authentication failed. No credential in the chain is available in this environment:\n- Scripted (unavailable): "
            ),
            "{text}"
        );
        assert_eq!(text.matches("(unavailable)").count(), 2, "{text}");
        assert!(text.contains("b is not here."), "{text}");

        let c = Scripted::new("c", &[Token]);
        let outer =
            ChainedTokenCredential::new(vec![inner.clone() as Arc<dyn TokenCredential>, c.clone()]);
        assert_eq!(token(&outer).await.unwrap(), "token-of-c");
        assert_eq!(outer.selected(), Some("Scripted"));
        assert_eq!(
            outer.credential_names().collect::<Vec<_>>(),
            ["ChainedTokenCredential", "Scripted"]
        );
    }

    #[tokio::test]
    async fn the_remembered_credential_does_not_fall_back() {
        use Answer::*;
        let a = Scripted::new("a", &[Token, Failure]);
        let b = Scripted::new("b", &[Token]);
        let chain = ChainedTokenCredential::new(as_dyn(&[&a, &b]));
        assert_eq!(token(&chain).await.unwrap(), "token-of-a");
        // a's later failure comes back unchanged, and b is never asked.
        let e = token(&chain).await.unwrap_err();
        assert_eq!(e.to_string(), "a was rejected.\nsecond line");
        assert_eq!((a.calls(), b.calls()), (2, 0));
    }

    #[tokio::test]
    async fn an_empty_chain_is_unavailable() {
        let chain = ChainedTokenCredential::new(Vec::new());
        let e = token(&chain).await.unwrap_err();
        assert!(crate::is_unavailable(&e));
        assert!(
            e.to_string().contains("The chain has no credentials."),
            "{e}"
        );
    }

    #[test]
    fn type_names_come_from_debug() {
        #[derive(Debug)]
        struct Tuple(#[allow(dead_code)] u8);
        struct Custom;
        impl fmt::Debug for Custom {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("some::path::Custom<T> { secret: .. }")
            }
        }
        struct Blank;
        impl fmt::Debug for Blank {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Ok(())
            }
        }
        #[async_trait::async_trait]
        impl TokenCredential for Tuple {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                Err(error::unavailable("x"))
            }
        }
        #[async_trait::async_trait]
        impl TokenCredential for Custom {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                Err(error::unavailable("x"))
            }
        }
        #[async_trait::async_trait]
        impl TokenCredential for Blank {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                Err(error::unavailable("x"))
            }
        }
        assert_eq!(type_name(&Tuple(1)), "Tuple");
        assert_eq!(type_name(&Custom), "Custom");
        assert_eq!(type_name(&Blank), "credential");
        let chain = ChainedTokenCredential::new(vec![Arc::new(Tuple(1)), Arc::new(Custom)]);
        assert_eq!(
            format!("{chain:?}"),
            r#"ChainedTokenCredential { credentials: ["Tuple", "Custom"], selected: None }"#
        );
    }
}
