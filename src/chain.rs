//! `ChainedTokenCredential`: credentials tried in order, falling through only on *unavailable*.

mod pipeline_aware;

pub use pipeline_aware::{PipelineAwareCredential, PipelineAwareCredentialOptions};

use crate::{
    AccessTokenInfo, AzurePipelinesCredential,
    error::{Failure, Section},
};
use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::Error,
};
use std::{
    any::Any,
    borrow::Cow,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

const CHAIN_NAME: &str = "ChainedTokenCredential";
/// No credential has provided a token yet.
const NONE_SELECTED: usize = usize::MAX;

type Predicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// The credentials that know more about a token than `AccessToken` carries: this crate's.
#[async_trait::async_trait]
pub(crate) trait TokenInfoSource: Send + Sync {
    async fn token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo>;
}

/// The [`TokenInfoSource`] behind `credential`, when it is one of this crate's credentials.
fn info_source<C: TokenCredential + 'static>(
    credential: &Arc<C>,
) -> Option<Arc<dyn TokenInfoSource>> {
    let any: Arc<dyn Any + Send + Sync> = credential.clone();
    any.downcast::<AzurePipelinesCredential>()
        .map(|c| c as Arc<dyn TokenInfoSource>)
        .or_else(|any| any.downcast::<ChainedTokenCredential>().map(|c| c as _))
        .or_else(|any| any.downcast::<PipelineAwareCredential>().map(|c| c as _))
        .ok()
}

/// A credential in a [`ChainedTokenCredential`]: the credential, the name the chain reports it
/// by, and which of its errors mean "unavailable here".
///
/// A chain passes a request on to the next member only when a member is *unavailable*: its error
/// satisfies [`is_unavailable`](crate::is_unavailable) (this crate's credentials say so
/// themselves), or the predicate given to [`unavailable_when`](Self::unavailable_when). That
/// lets any credential, `azure_identity`'s among them, sit anywhere in a chain.
///
/// ```
/// use azure_identity::AzureCliCredential;
/// use azure_pipelines_credential::{AzurePipelinesCredential, ChainMember, ChainedTokenCredential};
///
/// fn main() -> azure_core::Result<()> {
///     // Built from explicit values here so that it works anywhere; in a pipeline step,
///     // `AzurePipelinesCredential::from_env(None)?`.
///     let pipeline = AzurePipelinesCredential::new(
///         "72f988bf-86f1-41af-91ab-2d7cd011db47".to_string(),
///         "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95".to_string(),
///         "9c4e2a7b-1d3f-4b8e-9a6c-5e7f1b2d3c40",
///         "the job's System.AccessToken",
///         None,
///     )?;
///     let chain = ChainedTokenCredential::new([
///         ChainMember::new(pipeline),
///         // `az` not installed or not logged in: try the next credential.
///         ChainMember::new(AzureCliCredential::new(None)?)
///             .unavailable_when(|e| e.to_string().contains("az login")),
///     ]);
///     assert_eq!(
///         chain.credential_names().collect::<Vec<_>>(),
///         ["AzurePipelinesCredential", "AzureCliCredential"]
///     );
///     Ok(())
/// }
/// ```
pub struct ChainMember {
    name: Cow<'static, str>,
    credential: Arc<dyn TokenCredential>,
    info: Option<Arc<dyn TokenInfoSource>>,
    unavailable_when: Option<Predicate>,
}

impl ChainMember {
    /// A member named after its type, such as `AzureCliCredential` for
    /// `Arc<azure_identity::AzureCliCredential>`.
    ///
    /// When it is one of this crate's credentials, the chain's `get_token_info` passes its
    /// `refresh_on` and `token_type` through.
    pub fn new<C: TokenCredential + 'static>(credential: Arc<C>) -> Self {
        Self {
            name: short_type_name::<C>().into(),
            info: info_source(&credential),
            credential,
            unavailable_when: None,
        }
    }

    /// A member with a name of your choice, for a credential known only as
    /// `Arc<dyn TokenCredential>`.
    pub fn named(name: impl Into<Cow<'static, str>>, credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            name: name.into(),
            credential,
            info: None,
            unavailable_when: None,
        }
    }

    /// Declares that the errors for which `predicate` is true mean "unavailable here" (the chain
    /// moves on), besides those [`is_unavailable`](crate::is_unavailable) recognises.
    pub fn unavailable_when(
        mut self,
        predicate: impl Fn(&Error) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.unavailable_when = Some(Arc::new(predicate));
        self
    }

    /// The name the chain reports this member by.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn is_unavailable(&self, error: &Error) -> bool {
        crate::is_unavailable(error) || self.unavailable_when.as_ref().is_some_and(|p| p(error))
    }

    /// The token with what the credential knows of its timing: `refresh_on` and `token_type`
    /// from this crate's credentials, `None` and `Bearer` from others.
    async fn token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        match &self.info {
            Some(info) => info.token_info(scopes, options).await,
            None => {
                let token = self.credential.get_token(scopes, options).await?;
                Ok(AccessTokenInfo {
                    token: token.token,
                    expires_on: token.expires_on,
                    refresh_on: None,
                    token_type: "Bearer".to_owned(),
                })
            }
        }
    }
}

impl<C: TokenCredential + 'static> From<Arc<C>> for ChainMember {
    fn from(credential: Arc<C>) -> Self {
        Self::new(credential)
    }
}

impl fmt::Debug for ChainMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainMember")
            .field("name", &self.name)
            .field("unavailable_when", &self.unavailable_when.is_some())
            .finish_non_exhaustive()
    }
}

/// `AzureCliCredential` for `azure_identity::azure_cli_credential::AzureCliCredential`; the
/// generic arguments of a generic type are left out.
fn short_type_name<C: ?Sized>() -> &'static str {
    let path = std::any::type_name::<C>();
    let path = path.split('<').next().unwrap_or(path);
    path.rsplit("::").next().unwrap_or(path)
}

/// Tries credentials in order and uses the first that provides a token.
///
/// - A member whose error means *unavailable* (see [`ChainMember`]: it cannot work in this
///   environment, such as `AzurePipelinesCredential` outside a pipeline) passes the request on
///   to the next one.
/// - Any other error is an authentication failure: the chain stops there and returns it, because
///   trying the next credential would hide a real problem (a rejected `System.AccessToken`, a
///   federation mismatch) behind a token for another identity.
/// - The error lists what each member said. When every member was unavailable the chain's error
///   is itself unavailable, so chains nest.
///
/// The chain remembers the member that provided the first token and later requests go straight
/// to it. If that member later fails, its error is returned as is: the chain does not fall back
/// to the others (as `azure_identity`'s `DeveloperToolsCredential` and the other Azure SDKs'
/// `DefaultAzureCredential`), so one process keeps one identity.
///
/// ```no_run
/// use azure_core::credentials::TokenCredential;
/// use azure_identity::ManagedIdentityCredential;
/// use azure_pipelines_credential::{AzurePipelinesCredential, ChainMember, ChainedTokenCredential};
///
/// #[tokio::main]
/// async fn main() -> azure_core::Result<()> {
///     let chain = ChainedTokenCredential::new([
///         ChainMember::new(AzurePipelinesCredential::from_env(None)?),
///         ChainMember::new(ManagedIdentityCredential::new(None)?),
///     ]);
///     let token = chain.get_token(&["https://storage.azure.com/.default"], None).await?;
///     println!("token from {:?}, expires {}", chain.selected(), token.expires_on);
///     Ok(())
/// }
/// ```
pub struct ChainedTokenCredential {
    name: &'static str,
    members: Vec<ChainMember>,
    selected: AtomicUsize,
}

impl ChainedTokenCredential {
    /// Creates a chain that tries `members` in order.
    ///
    /// An empty chain is valid; its requests fail as *unavailable*.
    pub fn new(members: impl IntoIterator<Item = ChainMember>) -> Arc<Self> {
        Arc::new(Self::named(CHAIN_NAME, members.into_iter().collect()))
    }

    /// A chain whose errors and `Debug` output carry `name` (for chains built by this crate).
    pub(crate) fn named(name: &'static str, members: Vec<ChainMember>) -> Self {
        Self {
            name,
            members,
            selected: AtomicUsize::new(NONE_SELECTED),
        }
    }

    /// The name of the member that provided the first token, which every later request goes
    /// to; `None` until one has.
    pub fn selected(&self) -> Option<&str> {
        self.members
            .get(self.selected.load(Ordering::Acquire))
            .map(ChainMember::name)
    }

    /// The names of the members, in the order they are tried.
    pub fn credential_names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(ChainMember::name)
    }

    /// Requests a token for `scopes` with its expiry, refresh time and type: the remembered
    /// member's, or the first available member's (see the type's documentation). `refresh_on`
    /// and `token_type` come from members that are this crate's credentials; other members'
    /// tokens have no `refresh_on` and the type `Bearer`.
    pub async fn get_token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        if let Some(member) = self.members.get(self.selected.load(Ordering::Acquire)) {
            return member.token_info(scopes, options).await;
        }
        self.walk(|member| member.token_info(scopes, options.clone()))
            .await
    }

    /// Tries each member with `call` until one succeeds or one fails.
    async fn walk<'a, T, F>(&'a self, call: impl Fn(&'a ChainMember) -> F) -> azure_core::Result<T>
    where
        F: Future<Output = azure_core::Result<T>>,
    {
        let mut unavailable: Vec<(&str, String)> = Vec::new();
        for (index, member) in self.members.iter().enumerate() {
            match call(member).await {
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
                        credential = member.name(),
                        "credential chain: using this credential from now on"
                    );
                    return Ok(token);
                }
                Err(error) if member.is_unavailable(&error) => {
                    tracing::debug!(
                        target: "azure_pipelines_credential",
                        chain = self.name,
                        credential = member.name(),
                        "credential chain: unavailable, trying the next one"
                    );
                    unavailable.push((member.name(), error.to_string()));
                }
                Err(error) => return Err(self.stopped(&unavailable, member.name(), error)),
            }
        }
        Err(self.all_unavailable(&unavailable))
    }

    /// The error when `name` failed: what came before, then the failure, whose error stays the
    /// source (so its HTTP response remains reachable).
    fn stopped(&self, unavailable: &[(&str, String)], name: &str, error: Error) -> Error {
        let mut message = format!(
            "{name} failed, so the chain stopped there (only a credential that is unavailable in \
             this environment passes the request on):"
        );
        for (previous, text) in unavailable {
            push_item(&mut message, previous, "unavailable", text);
        }
        push_item(&mut message, name, "failed", &error.to_string());
        Failure::new(Section::ChainStopped, message)
            .with_source(error)
            .into_error(self.name)
    }

    fn all_unavailable(&self, unavailable: &[(&str, String)]) -> Error {
        let mut message = if unavailable.is_empty() {
            "The chain has no credentials.".to_owned()
        } else {
            "No credential in the chain is available in this environment:".to_owned()
        };
        for (name, text) in unavailable {
            push_item(&mut message, name, "unavailable", text);
        }
        // Unavailable itself, so that a chain inside another chain passes the request on too.
        Failure::new(Section::ChainUnavailable, message).into_error(self.name)
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
    /// Requests a token from the remembered member, or walks the chain; see the type's
    /// documentation.
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(member) = self.members.get(self.selected.load(Ordering::Acquire)) {
            return member.credential.get_token(scopes, options).await;
        }
        self.walk(|member| member.credential.get_token(scopes, options.clone()))
            .await
    }
}

#[async_trait::async_trait]
impl TokenInfoSource for ChainedTokenCredential {
    async fn token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        self.get_token_info(scopes, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::{credentials::Secret, error::ErrorKind, time::OffsetDateTime};
    use std::sync::atomic::AtomicU32;

    /// What a scripted credential answers.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Answer {
        Token,
        Unavailable,
        Refused,
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
                Some(Answer::Unavailable) => Err(Failure::new(
                    Section::NotInPipeline,
                    format!("{} is not here.", self.id),
                )
                .into_error("AzurePipelinesCredential")),
                Some(Answer::Refused) | None => Err(Error::with_message(
                    ErrorKind::Credential,
                    format!("{} was rejected.\nsecond line", self.id),
                )),
            }
        }
    }

    fn members(credentials: &[&Arc<Scripted>]) -> Vec<ChainMember> {
        credentials
            .iter()
            .map(|c| ChainMember::new((*c).clone()))
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
        let chain = ChainedTokenCredential::new(members(&[&a, &b, &c]));
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
        let b = Scripted::new("b", &[Refused]);
        let c = Scripted::new("c", &[Token]);
        let chain = ChainedTokenCredential::new(members(&[&a, &b, &c]));
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
            text.contains("\n- Scripted (unavailable): AzurePipelinesCredential is unavailable: a is not here.\n    To troubleshoot, visit "),
            "{text}"
        );
        assert!(
            text.contains("\n- Scripted (failed): b was rejected.\n    second line\n"),
            "{text}"
        );
        assert!(
            text.ends_with("#a-credential-in-the-chain-failed"),
            "{text}"
        );
        assert_eq!(text.matches("authentication failed").count(), 1, "{text}");
        assert!(!text.contains("token-of"), "{text}");
        // The failure is the source.
        let failure = crate::error::failure_of(&e).expect("the chain's failure");
        let source = std::error::Error::source(failure).map(ToString::to_string);
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
        let inner = ChainedTokenCredential::new(members(&[&a, &b]));
        let e = token(&inner).await.unwrap_err();
        assert!(crate::is_unavailable(&e), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "ChainedTokenCredential is unavailable: No credential in the chain is available in this environment:\n- Scripted (unavailable): "
            ),
            "{text}"
        );
        assert_eq!(text.matches("(unavailable)").count(), 2, "{text}");
        assert!(text.contains("b is not here."), "{text}");

        let c = Scripted::new("c", &[Token]);
        let outer = ChainedTokenCredential::new([
            ChainMember::new(inner.clone()),
            ChainMember::new(c.clone()),
        ]);
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
        let a = Scripted::new("a", &[Token, Refused]);
        let b = Scripted::new("b", &[Token]);
        let chain = ChainedTokenCredential::new(members(&[&a, &b]));
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
    fn member_names_come_from_types_or_are_given() {
        mod nested {
            #[derive(Debug)]
            pub(super) struct Generic<T>(pub(super) T);
        }
        assert_eq!(short_type_name::<Scripted>(), "Scripted");
        assert_eq!(short_type_name::<nested::Generic<Scripted>>(), "Generic");
        assert_eq!(
            short_type_name::<azure_identity::AzureCliCredential>(),
            "AzureCliCredential"
        );
        let a = Scripted::new("a", &[Answer::Token]);
        let chain = ChainedTokenCredential::new([
            ChainMember::new(a.clone()),
            ChainMember::named("Mine", a as Arc<dyn TokenCredential>),
        ]);
        assert_eq!(
            format!("{chain:?}"),
            r#"ChainedTokenCredential { credentials: ["Scripted", "Mine"], selected: None }"#
        );
    }

    #[tokio::test]
    async fn a_member_declares_which_errors_mean_unavailable() {
        use Answer::*;
        let a = Scripted::new("a", &[Refused]);
        let b = Scripted::new("b", &[Token]);
        let chain = ChainedTokenCredential::new([
            ChainMember::new(a.clone()).unavailable_when(|e| e.to_string().contains("rejected")),
            ChainMember::new(b.clone()),
        ]);
        assert_eq!(token(&chain).await.unwrap(), "token-of-b");
        let strict = ChainedTokenCredential::new([
            ChainMember::new(a.clone()).unavailable_when(|e| e.to_string().contains("absent")),
            ChainMember::new(b.clone()),
        ]);
        assert!(token(&strict).await.is_err());
        assert_eq!((a.calls(), b.calls()), (2, 1));
    }

    #[tokio::test]
    async fn token_info_passes_through_from_this_crates_credentials_only() {
        use Answer::*;
        let pipeline = AzurePipelinesCredential::new(
            "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            "client".into(),
            "connection",
            "system-token",
            None,
        )
        .unwrap();
        assert!(info_source(&pipeline).is_some());
        let inner = ChainedTokenCredential::new([ChainMember::new(pipeline)]);
        assert!(info_source(&inner).is_some());
        let scripted = Scripted::new("a", &[Token]);
        assert!(info_source(&scripted).is_none());

        let chain = ChainedTokenCredential::new([ChainMember::new(scripted)]);
        let info = chain
            .get_token_info(&["https://storage.azure.com/.default"], None)
            .await
            .unwrap();
        assert_eq!(info.token.secret(), "token-of-a");
        assert_eq!(
            (info.refresh_on, info.token_type.as_str()),
            (None, "Bearer")
        );
    }
}
