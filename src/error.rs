//! How the credential words and classifies its errors.
//!
//! Every error is an [`azure_core::Error`] of kind [`ErrorKind::Credential`] whose message starts
//! with `AzurePipelinesCredential authentication failed.` and ends with a troubleshooting link.
//! Errors that mean "this credential cannot work here" carry an [`Unavailable`] marker in their
//! source chain, which [`is_unavailable`] looks for. No message ever contains a secret: callers
//! pass only causes and fixes, never token values.

use azure_core::error::{Error, ErrorKind};
use std::{error::Error as StdError, fmt, sync::Arc};

pub(crate) const CREDENTIAL_NAME: &str = "AzurePipelinesCredential";
const TROUBLESHOOT: &str =
    "To troubleshoot, visit https://aka.ms/azsdk/rust/identity/troubleshoot#apc";

/// Marks an error as "this credential is not usable in this environment".
#[derive(Debug)]
pub(crate) struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("credential unavailable")
    }
}

impl StdError for Unavailable {}

fn wording(cause: &str) -> String {
    format!("{CREDENTIAL_NAME} authentication failed. {cause}\n{TROUBLESHOOT}")
}

/// The credential cannot work in this environment (not in a pipeline, inputs missing).
pub(crate) fn unavailable(cause: impl AsRef<str>) -> Error {
    Error::with_error(ErrorKind::Credential, Unavailable, wording(cause.as_ref()))
}

/// Authentication was attempted, or refused before any request, for the given cause.
pub(crate) fn failed(cause: impl AsRef<str>) -> Error {
    Error::with_message(ErrorKind::Credential, wording(cause.as_ref()))
}

/// Like [`failed`], keeping `source` (for example the HTTP response) reachable.
pub(crate) fn failed_with(cause: impl AsRef<str>, source: Error) -> Error {
    Error::with_error(ErrorKind::Credential, source, wording(cause.as_ref()))
}

pub(crate) fn closed() -> Error {
    failed(
        "The credential was closed: it no longer makes network requests. \
         Create a new credential to acquire tokens.",
    )
}

/// An error shared by every caller that waited on the same request.
///
/// `azure_core::Error` is not `Clone`; each waiter gets its own `Error` whose source is the
/// one shared original, so the HTTP response and the [`Unavailable`] marker stay reachable.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(pub(crate) Arc<Error>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.0.as_ref())
    }
}

impl SharedError {
    pub(crate) fn to_error(&self) -> Error {
        Error::with_error(self.0.kind().clone(), self.clone(), self.0.to_string())
    }
}

/// Whether `error` means the credential cannot work in this environment, as opposed to an
/// authentication failure.
///
/// True when the pipeline's OIDC endpoint is unknown (`SYSTEM_OIDCREQUESTURI` unset: not
/// running in Azure Pipelines) or when `from_env` found inputs missing. Credential chains use it
/// to fall through to the next credential; any other error should stop the chain.
///
/// ```
/// use azure_pipelines_credential::{AzurePipelinesCredential, is_unavailable};
///
/// // Outside a pipeline the AZURESUBSCRIPTION_* variables are not set.
/// # if std::env::var_os("AZURESUBSCRIPTION_TENANT_ID").is_none() {
/// let error = AzurePipelinesCredential::from_env(None).unwrap_err();
/// assert!(is_unavailable(&error));
/// # }
/// ```
pub fn is_unavailable(error: &Error) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<Unavailable>() {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<Error>()
            && inner.downcast_ref::<Unavailable>().is_some()
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_names_the_credential_and_links_troubleshooting() {
        let e = failed("Something broke. Fix it.");
        assert!(matches!(e.kind(), ErrorKind::Credential));
        let text = e.to_string();
        assert!(text.starts_with(
            "AzurePipelinesCredential authentication failed. Something broke. Fix it."
        ));
        assert!(text.ends_with("#apc"));
    }

    #[test]
    fn unavailable_is_detected_through_sharing_and_wrapping() {
        let cases: Vec<(Error, bool)> = vec![
            (unavailable("no pipeline"), true),
            (failed("rejected"), false),
            (
                SharedError(Arc::new(unavailable("no pipeline"))).to_error(),
                true,
            ),
            (SharedError(Arc::new(failed("rejected"))).to_error(), false),
            (failed_with("outer", unavailable("inner")), true),
            (Error::with_message(ErrorKind::Io, "io"), false),
        ];
        for (error, expected) in cases {
            assert_eq!(is_unavailable(&error), expected, "{error}");
        }
    }

    #[test]
    fn shared_error_keeps_message_and_kind() {
        let shared = SharedError(Arc::new(failed("boom")));
        let e = shared.to_error();
        assert_eq!(e.to_string(), shared.0.to_string());
        assert!(matches!(e.kind(), ErrorKind::Credential));
    }
}
