//! How the crate words and classifies its errors.
//!
//! Inside the crate an error is a [`Failure`]: a cause and its fix, the section of
//! TROUBLESHOOTING.md that explains it, and the error it came from (such as the HTTP response).
//! It is worded for the user exactly once, at the public boundary ([`Failure::into_error`]):
//! `<Name> authentication failed. <cause>` or `<Name> is unavailable: <cause>`, then the link to
//! the section. So messages never stack, whoever wraps whom. No message ever contains a secret:
//! causes name what went wrong and how to fix it, never token values.

use azure_core::error::{Error, ErrorKind};
use std::{error::Error as StdError, fmt, sync::Arc};

/// Where the crate's troubleshooting guide lives; each error links one of its sections.
pub(crate) const TROUBLESHOOTING: &str = concat!(
    env!("CARGO_PKG_REPOSITORY"),
    "/blob/main/TROUBLESHOOTING.md"
);

macro_rules! sections {
    ($($(#[$doc:meta])* $name:ident = $anchor:literal,)*) => {
        /// A section of TROUBLESHOOTING.md: one per error the crate can raise.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Section {
            $($(#[$doc])* $name,)*
        }

        impl Section {
            /// Every section, for the test that checks each one exists in the guide.
            #[cfg(test)]
            pub(crate) const ALL: &[Section] = &[$(Section::$name,)*];

            /// The section's anchor in TROUBLESHOOTING.md (GitHub's slug of its heading).
            pub(crate) fn anchor(self) -> &'static str {
                match self {
                    $(Section::$name => $anchor,)*
                }
            }
        }
    };
}

sections! {
    /// `SYSTEM_OIDCREQUESTURI` is not set: not an Azure Pipelines job.
    NotInPipeline = "not-in-an-azure-pipelines-job",
    /// `from_env` found variables missing.
    MissingVariables = "pipeline-variables-missing",
    /// An empty or unusable tenant ID, in the constructor, the options or a request.
    InvalidTenantId = "invalid-tenant-id",
    /// An empty client ID.
    EmptyClientId = "empty-client-id",
    /// An empty service connection ID.
    EmptyServiceConnectionId = "empty-service-connection-id",
    /// The System.AccessToken is empty or the unexpanded macro.
    SystemAccessTokenMissing = "systemaccesstoken-missing-or-unexpanded",
    /// An authority host that is not an https URL (or loopback http).
    InvalidAuthorityHost = "invalid-authority-host",
    /// An OIDC request URI that is not an https URL (or loopback http).
    InvalidOidcRequestUri = "invalid-oidc-request-uri",
    /// A timeout option of zero.
    ZeroTimeout = "zero-timeout",
    /// `persistent_cache` set without the `persistent-cache` feature (raised only in builds
    /// without it).
    #[cfg_attr(feature = "persistent-cache", allow(dead_code))]
    PersistentCacheFeature = "persistent-cache-feature-not-enabled",
    /// `persistent_cache` set on a platform without its file checks (raised only there).
    #[cfg_attr(any(unix, not(feature = "persistent-cache")), allow(dead_code))]
    PersistentCacheUnsupported = "persistent-cache-not-supported-on-this-platform",
    /// No scope, an empty one, or one with whitespace or control characters.
    InvalidScope = "invalid-scope",
    /// A requested tenant that `additionally_allowed_tenants` does not allow.
    TenantNotAllowed = "requested-tenant-not-allowed",
    /// Claims that are not a JSON object.
    InvalidClaims = "invalid-claims",
    /// Azure DevOps answered 401 to the System.AccessToken.
    SystemAccessTokenRejected = "systemaccesstoken-rejected-401",
    /// Azure DevOps answered with a sign-in page (203, a redirect, HTML).
    SignInPage = "sign-in-page-instead-of-a-token",
    /// The OIDC endpoint answered 404.
    OidcEndpointNotFound = "oidc-endpoint-not-found-404",
    /// Azure DevOps refused the request for the service connection (a VSS error).
    ServiceConnectionRefused = "service-connection-refused",
    /// The current stage does not reference the service connection.
    StageDoesNotReferenceConnection = "stage-does-not-reference-the-service-connection",
    /// Azure DevOps answered 429 or 5xx after every retry.
    AzureDevOpsUnavailable = "azure-devops-overloaded-or-failing",
    /// Any other status from the OIDC endpoint.
    OidcHttpError = "oidc-endpoint-http-error",
    /// A 200 from the OIDC endpoint that holds no usable token.
    InvalidOidcResponse = "invalid-oidc-response",
    /// No federated identity credential matches the OIDC token (AADSTS700211/700212/700213).
    FederationMismatch = "federated-credential-mismatch-aadsts700211-700212-700213",
    /// The OIDC token expired at Entra even after a fresh one (AADSTS700024).
    AssertionExpired = "assertion-outside-its-valid-time-range-aadsts700024",
    /// Entra is temporarily unavailable after every retry.
    EntraUnavailable = "microsoft-entra-id-temporarily-unavailable",
    /// The application is not in the tenant (AADSTS700016).
    ApplicationNotFound = "application-not-found-aadsts700016",
    /// The tenant does not exist (AADSTS90002).
    TenantNotFound = "tenant-not-found-aadsts90002",
    /// Entra did not take the OIDC token as a client assertion (AADSTS50027, AADSTS7000215).
    AssertionNotAccepted = "assertion-not-accepted-aadsts50027-7000215",
    /// Any other error from Entra.
    EntraError = "other-microsoft-entra-id-errors",
    /// A 200 from Entra that holds no usable token.
    InvalidTokenResponse = "invalid-token-response",
    /// An attempt got no response within `attempt_timeout`.
    AttemptTimeout = "attempt-timeout",
    /// The acquisition did not finish within `token_timeout`.
    TokenTimeout = "token-timeout",
    /// The request could not be sent or its response not read (connection, TLS).
    NetworkError = "network-error",
    /// A response body over the size limit.
    ResponseTooLarge = "response-too-large",
    /// `close()` was called.
    Closed = "credential-closed",
    /// Nothing to run the request on: no async runtime.
    NoAsyncRuntime = "no-async-runtime",
    /// A chain in which no credential is available.
    ChainUnavailable = "no-credential-in-the-chain-is-available",
    /// A chain member failed, so the chain stopped.
    ChainStopped = "a-credential-in-the-chain-failed",
    /// `AZURE_TOKEN_CREDENTIALS` has a value the chain does not know.
    InvalidTokenCredentialsSelector = "invalid-azure_token_credentials",
    /// Workload identity is not configured here.
    WorkloadIdentityUnavailable = "workload-identity-unavailable",
    /// No managed identity endpoint is configured here.
    ManagedIdentityUnavailable = "managed-identity-unavailable",
    /// Another credential of a chain raised an error that says nothing of this crate.
    OtherCredential = "errors-of-other-credentials",
}

impl Section {
    /// Whether an error of this section means "this credential cannot work here" (a chain
    /// moves on) rather than an authentication failure (a chain stops).
    fn unavailable(self) -> bool {
        matches!(
            self,
            Section::NotInPipeline
                | Section::MissingVariables
                | Section::ChainUnavailable
                | Section::WorkloadIdentityUnavailable
                | Section::ManagedIdentityUnavailable
        )
    }

    /// The section's address.
    pub(crate) fn link(self) -> String {
        format!("{TROUBLESHOOTING}#{}", self.anchor())
    }
}

/// An error inside the crate: what went wrong and how to fix it, not yet worded for the user.
#[derive(Debug)]
pub(crate) struct Failure {
    section: Section,
    cause: String,
    source: Option<Error>,
}

impl Failure {
    /// A failure explained in `section`, for `cause` (a sentence or two with the fix).
    pub(crate) fn new(section: Section, cause: impl Into<String>) -> Self {
        Self {
            section,
            cause: cause.into(),
            source: None,
        }
    }

    /// Keeps `source` (an HTTP response, a transport error) reachable from the final error.
    pub(crate) fn with_source(mut self, source: Error) -> Self {
        self.source = Some(source);
        self
    }

    pub(crate) fn closed() -> Self {
        Self::new(
            Section::Closed,
            "The credential was closed: it no longer makes network requests. Create a new \
             credential to acquire tokens.",
        )
    }

    pub(crate) fn section(&self) -> Section {
        self.section
    }

    #[cfg(test)]
    pub(crate) fn text(&self) -> &str {
        &self.cause
    }

    /// The error a user sees from `credential` (such as `AzurePipelinesCredential`): worded
    /// once, linking the section, keeping this failure (and its source) as the source.
    pub(crate) fn into_error(self, credential: &str) -> Error {
        Arc::new(self).to_error(credential)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// A failure shared by every caller that waited on the same request.
#[derive(Debug, Clone)]
pub(crate) struct Shared(pub(crate) Arc<Failure>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Shared {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Wording at the boundary, for owned and shared failures alike.
pub(crate) trait ToError {
    /// The error a user sees from `credential`.
    fn to_error(self, credential: &str) -> Error;
}

impl ToError for Arc<Failure> {
    fn to_error(self, credential: &str) -> Error {
        let verdict = if self.section.unavailable() {
            format!("{credential} is unavailable: ")
        } else {
            format!("{credential} authentication failed. ")
        };
        let message = format!(
            "{verdict}{}\nTo troubleshoot, visit {}",
            self.cause,
            self.section.link()
        );
        Error::with_error(ErrorKind::Credential, Shared(self), message)
    }
}

/// The [`Failure`] behind `error`, if this crate raised it.
pub(crate) fn failure_of(error: &Error) -> Option<&Failure> {
    sources(error).find_map(|e| {
        e.downcast_ref::<Shared>()
            .map(|s| s.0.as_ref())
            .or_else(|| e.downcast_ref::<Failure>())
    })
}

/// `error` and its sources. (`azure_core::Error::source` is the error it wraps.)
fn sources(error: &Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(Some(error as &(dyn StdError + 'static)), |&e| e.source())
}

/// Whether `error` means the credential cannot work in this environment, as opposed to an
/// authentication failure.
///
/// True when the pipeline's OIDC endpoint is unknown (`SYSTEM_OIDCREQUESTURI` unset: not
/// running in Azure Pipelines), when `from_env` found inputs missing, and for errors a
/// [`ChainMember`](crate::ChainMember) declares unavailable. Credential chains use it to fall
/// through to the next credential; any other error should stop the chain.
///
/// ```
/// use azure_pipelines_credential::{AzurePipelinesCredential, is_unavailable};
///
/// // Outside a pipeline the AZURESUBSCRIPTION_* variables are not set.
/// if std::env::var_os("AZURESUBSCRIPTION_TENANT_ID").is_none() {
///     let error = AzurePipelinesCredential::from_env(None).unwrap_err();
///     assert!(is_unavailable(&error));
/// }
/// ```
pub fn is_unavailable(error: &Error) -> bool {
    failure_of(error).is_some_and(|f| f.section.unavailable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worded_once_with_the_verdict_and_the_section_link() {
        let cases = [
            (
                Failure::new(Section::InvalidScope, "No scope. Pass one."),
                "AzurePipelinesCredential authentication failed. No scope. Pass one.\n\
                 To troubleshoot, visit ",
                "#invalid-scope",
            ),
            (
                Failure::new(Section::NotInPipeline, "SYSTEM_OIDCREQUESTURI is not set."),
                "AzurePipelinesCredential is unavailable: SYSTEM_OIDCREQUESTURI is not set.\n",
                "#not-in-an-azure-pipelines-job",
            ),
        ];
        for (failure, start, end) in cases {
            let e = failure.into_error("AzurePipelinesCredential");
            let text = e.to_string();
            assert!(text.starts_with(start), "{text}");
            assert!(text.ends_with(end), "{text}");
            assert!(text.contains("/TROUBLESHOOTING.md#"), "{text}");
            assert!(matches!(e.kind(), ErrorKind::Credential));
            assert_eq!(
                text.matches("authentication failed").count(),
                start.matches("authentication failed").count()
            );
        }
    }

    #[test]
    fn unavailable_is_found_through_sharing_and_wrapping() {
        let shared = Arc::new(Failure::new(Section::MissingVariables, "missing"));
        let cases: Vec<(Error, bool)> = vec![
            (
                Failure::new(Section::NotInPipeline, "x").into_error("C"),
                true,
            ),
            (Failure::new(Section::Closed, "x").into_error("C"), false),
            (shared.clone().to_error("C"), true),
            (shared.to_error("C").with_context("outer"), true),
            (Error::with_message(ErrorKind::Io, "io"), false),
        ];
        for (error, expected) in cases {
            assert_eq!(is_unavailable(&error), expected, "{error}");
        }
    }

    #[test]
    fn the_failure_and_its_source_stay_reachable() {
        let http = Error::with_message(ErrorKind::Io, "connection reset");
        let e = Failure::new(Section::NetworkError, "It broke.")
            .with_source(http)
            .into_error("C");
        let failure = failure_of(&e).expect("the failure in the chain");
        assert_eq!(failure.section(), Section::NetworkError);
        assert_eq!(failure.text(), "It broke.");
        let source = StdError::source(failure).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("connection reset"));
    }

    /// GitHub's anchor of a Markdown heading.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    #[test]
    fn every_section_is_a_heading_of_the_troubleshooting_guide() {
        let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/TROUBLESHOOTING.md");
        let text = std::fs::read_to_string(guide).expect("TROUBLESHOOTING.md beside Cargo.toml");
        let anchors: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .map(|heading| slug(heading.trim_start_matches('#')))
            .collect();
        for section in Section::ALL {
            assert!(
                anchors.iter().any(|a| a == section.anchor()),
                "TROUBLESHOOTING.md has no heading for {section:?} (#{})",
                section.anchor()
            );
        }
        assert!(TROUBLESHOOTING.ends_with("/blob/main/TROUBLESHOOTING.md"));
        assert_eq!(
            slug("System.AccessToken rejected (401)"),
            "systemaccesstoken-rejected-401"
        );
        assert_eq!(
            slug("Invalid `AZURE_TOKEN_CREDENTIALS`"),
            "invalid-azure_token_credentials"
        );
    }

    #[test]
    fn anchors_are_distinct_slugs() {
        let mut anchors: Vec<&str> = Section::ALL.iter().map(|s| s.anchor()).collect();
        for anchor in &anchors {
            assert!(
                anchor
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
                "{anchor}"
            );
        }
        anchors.sort_unstable();
        let count = anchors.len();
        anchors.dedup();
        assert_eq!(anchors.len(), count, "two sections share an anchor");
    }
}
