//! Microsoft Entra ID's answers: a token response and an error response. Neither may panic; an
//! accepted token is a Bearer token valid now, for at most seven days, with a refresh time
//! inside its lifetime; an error's explanation never quotes the assertion's signature.
#![no_main]

use azure_pipelines_credential::fuzzing as f;
use libfuzzer_sys::fuzz_target;
use time::{Duration, OffsetDateTime};

/// The signature part of the assertion handed to the error explainer.
const SIGNATURE: &str = "c2lnbmF0dXJlLW9mLXRoZS1vaWRjLXRva2Vu";

fuzz_target!(|data: &[u8]| {
    let now = OffsetDateTime::from_unix_timestamp(1_767_225_600).expect("a valid time");
    if let Ok(info) = f::token_response(data, now) {
        assert!(!info.token.secret().trim().is_empty());
        assert_eq!(info.token_type, "Bearer");
        assert!(info.expires_on > now);
        assert!(info.expires_on <= now + Duration::days(7));
        if let Some(refresh_on) = info.refresh_on {
            assert!(refresh_on > now && refresh_on < info.expires_on);
        }
    }
    // {"iss":"https://vstoken.dev.azure.com/o","sub":"sc://o/p/c","aud":"api://AzureADTokenExchange"}
    let assertion = format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3ZzdG9rZW4uZGV2LmF6dXJlLmNvbS9vIiwic3ViIjoic2M6Ly9vL3AvYyIsImF1ZCI6ImFwaTovL0F6dXJlQURUb2tlbkV4Y2hhbmdlIn0.{SIGNATURE}"
    );
    if let Some(failure) = f::entra_failure(data, "client-id", &assertion) {
        assert!(!failure.cause.contains(SIGNATURE));
        assert!(failure.cause.contains(&format!("error: {}", failure.error)));
    }
});
