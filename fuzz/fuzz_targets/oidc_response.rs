//! The Azure DevOps OIDC endpoint's answers: a 200 body (`oidcToken`), and what any other
//! status with any body means. Neither may panic; a token that is accepted is never blank.
#![no_main]

use azure_pipelines_credential::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = f::oidc_body(data) {
        assert!(!token.secret().trim().is_empty());
    }
    // The first byte picks a status in 100..=610; the rest is the body.
    let (status, body) = match data.split_first() {
        Some((first, rest)) => (100 + u16::from(*first) * 2, rest),
        None => (500, data),
    };
    assert!(!f::oidc_failure_cause(status, body).is_empty());
});
