//! The Azure DevOps OIDC endpoint's answers: a 200 body (`oidcToken`), and what any other
//! status with any body means. See `azure_pipelines_credential::fuzzing::oidc_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| azure_pipelines_credential::fuzzing::oidc_response(data));
