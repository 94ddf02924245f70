//! What every error of the credential shares, and where its parts are found.

use super::FAILED;
use azure_core::error::{Error, ErrorKind};
use azure_core::http::StatusCode;
use azure_pipelines_credential::is_unavailable;
use std::{error::Error as StdError, fmt::Write as _};

/// Checks what every failure of the credential has in common (kind `Credential`, worded as a
/// failure, not unavailable) and returns its message.
#[track_caller]
pub fn failure(error: &Error) -> String {
    let text = error.to_string();
    assert!(
        matches!(error.kind(), ErrorKind::Credential),
        "kind {:?}: {text}",
        error.kind()
    );
    assert!(text.starts_with(FAILED), "{text}");
    assert!(!is_unavailable(error), "{text}");
    text
}

/// [`failure`], and the message has every one of `needles`.
#[track_caller]
pub fn assert_failure(error: &Error, needles: &[&str]) {
    assert_contains(&failure(error), needles);
}

#[track_caller]
pub fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// `error` and the errors of its source chain.
fn chain(error: &Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(Some(error as &(dyn StdError + 'static)), |&e| e.source())
}

/// The first `HttpResponse` error among `error` and its sources: its status and error code.
pub fn http_response(error: &Error) -> Option<(StatusCode, Option<String>)> {
    chain(error).find_map(|e| match e.downcast_ref::<Error>()?.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((*status, error_code.clone())),
        _ => None,
    })
}

/// The status of the first `HttpResponse` error in the source chain of `error`.
pub fn http_status(error: &Error) -> Option<StatusCode> {
    http_response(error).map(|(status, _)| status)
}

/// Display and Debug of `error` and of every error of its source chain: where a secret must
/// never be.
pub fn chain_text(error: &Error) -> String {
    let mut text = format!("{error:#?}\n");
    for e in chain(error) {
        writeln!(text, "{e}\n{e:?}").unwrap();
    }
    text
}
