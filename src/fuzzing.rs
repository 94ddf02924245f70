//! **Not public API.** The fuzz targets of `fuzz/`, whole: each function is the body of the
//! target of the same name (the parsers it drives and the properties it asserts), so that a
//! target is one line and its corpus can be replayed by `cargo test` on a stable toolchain.
//!
//! Compiled only with `--cfg fuzzing` (cargo-fuzz sets it) and in the crate's own tests; hidden
//! from the docs. Anything here may change or disappear in any release. Each function panics
//! when a property does not hold, which is what the fuzzer looks for.

use crate::{
    assertion, endpoint,
    error::Section,
    exchange,
    jwt::{self, FederationClaims},
    request, tenant, token,
};
use azure_core::http::StatusCode;
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use url::{Host, Url};

/// The signature part of the assertion handed to the Entra error explainer.
const SIGNATURE: &str = "c2lnbmF0dXJlLW9mLXRoZS1vaWRjLXRva2Vu";

/// The Azure DevOps OIDC endpoint's answers: a 200 body (`oidcToken`), and what any other status
/// with any body means. Neither may panic; a token that is accepted is one bearer token.
pub fn oidc_response(data: &[u8]) {
    if let Ok(token) = assertion::parse_oidc_body(data) {
        assert!(!token.secret().trim().is_empty());
        assert!(token::is_token_text(token.secret()));
    }
    // The first byte picks a status in 100..=610; the rest is the body.
    let (status, body) = match data.split_first() {
        Some((first, rest)) => (100 + u16::from(*first) * 2, rest),
        None => (500, data),
    };
    let (_, cause) = assertion::oidc_failure_cause(StatusCode::from(status), body);
    assert!(!cause.is_empty());
}

/// Microsoft Entra ID's answers: a token response and an error response. Neither may panic; an
/// accepted token is one Bearer token valid now, for at most seven days, with a refresh time
/// inside its lifetime; an error's explanation never quotes the assertion's signature.
pub fn entra_response(data: &[u8]) {
    let now = OffsetDateTime::from_unix_timestamp(1_767_225_600).expect("a valid time");
    if let Ok(info) = exchange::parse_token_response(data, now) {
        assert!(token::is_token_text(info.token.secret()));
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
    if let Some(entra) = exchange::EntraError::parse(data) {
        let federation = FederationClaims::from_token(&assertion);
        let (_, cause) = exchange::entra_failure_cause(&entra, "client-id", &federation);
        assert!(!cause.contains(SIGNATURE));
        assert!(cause.contains(&format!("error: {}", entra.error)));
    }
}

/// The `claims` parameter: any text either is refused or becomes claims to send; with CAE the
/// result is a JSON object announcing CP1, and merging again keeps it so.
pub fn claims_merge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(sent)) = request::claims_param(Some(text), false) {
        assert_eq!(sent, text.trim());
    }
    match request::claims_param(Some(text), true) {
        Ok(Some(merged)) => {
            let value: Value = serde_json::from_str(&merged).expect("merged claims are JSON");
            let values = value["access_token"]["xms_cc"]["values"]
                .as_array()
                .expect("xms_cc.values is an array");
            // At least once: CP1 is added when missing, and duplicates the caller sent are kept.
            assert!(values.iter().any(|v| v == "CP1"));
            // Merging again keeps the claims and still announces CP1. (Not compared value for
            // value: numbers beyond i64/u64 pass through f64, and serde_json's float parsing
            // may move their last digit on each round; found by this target.)
            let again = request::claims_param(Some(&merged), true)
                .expect("merged claims are accepted")
                .expect("and kept");
            let again: Value = serde_json::from_str(&again).expect("JSON");
            let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&again), keys(&value));
            assert_eq!(
                again["access_token"]["xms_cc"],
                value["access_token"]["xms_cc"]
            );
        }
        Ok(None) => panic!("CAE always sends claims"),
        Err(e) => assert_eq!(e.section(), Section::InvalidClaims, "{e}"),
    }
}

/// Decoding a JWT's claims without verifying it: never panics, and whatever `iss`, `sub`, `aud`
/// and `exp` the credential reads are the ones in the payload.
pub fn jwt_claims(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let federation = FederationClaims::from_token(&text);
    match jwt::decode_claims(&text) {
        None => assert_eq!(federation, FederationClaims::default()),
        Some(claims) => {
            for (name, read) in [
                ("iss", &federation.iss),
                ("sub", &federation.sub),
                ("aud", &federation.aud),
            ] {
                if let Some(Value::String(s)) = claims.get(name) {
                    assert_eq!(read.as_deref(), Some(s.as_str()), "{name}");
                }
            }
            assert_eq!(federation.exp, claims.get("exp").and_then(Value::as_i64));
        }
    }
}

/// Tenant resolution and the URLs built from user input. The input is split at NUL bytes into
/// a configured tenant, a requested tenant, a URL candidate, and allowed tenants.
///
/// A credential is built only for a valid configured tenant; a resolved tenant only ever has
/// `[A-Za-z0-9.-]`, is the configured or the requested one, and stays one path segment of the
/// token endpoint; an accepted authority or OIDC URI is https (or http to loopback) without
/// credentials or fragment.
pub fn tenant_resolution(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let configured = parts.next().unwrap_or_default();
    let requested = parts.next();
    let url_input = parts.next();
    let allowed: Vec<String> = parts.map(str::to_owned).collect();

    match tenant::TenantPolicy::new(configured, allowed) {
        Err(e) => assert_eq!(e.section(), Section::InvalidTenantId, "{e}"),
        Ok(policy) => {
            let configured = policy.configured();
            assert!(tenant::validate_tenant_id(configured, "tenant ID").is_ok());
            if let Ok(tenant) = policy.resolve(requested) {
                assert!(tenant == configured || Some(tenant) == requested);
                assert!(tenant::validate_tenant_id(tenant, "tenant ID").is_ok());
                assert!(
                    tenant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                );
                let authority = Url::parse("https://login.microsoftonline.com").expect("a URL");
                let url = endpoint::token_endpoint(&authority, tenant);
                let segments: Vec<&str> = url.path_segments().expect("a path").collect();
                assert_eq!(segments, [tenant, "oauth2", "v2.0", "token"]);
            }
        }
    }
    if let Some(candidate) = url_input {
        if let Ok(authority) = endpoint::resolve_authority_host(Some(candidate), None, None) {
            assert_safe(&authority);
        }
        if let Ok(Some(uri)) = endpoint::oidc_request_url(Some(candidate), None, configured) {
            assert_safe(&uri);
        }
    }
}

/// The rule both endpoints share, checked on a URL the credential accepted: https, or http to
/// loopback; a host; no credentials or fragment.
pub(crate) fn assert_safe(url: &Url) {
    let loopback = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    assert!(
        url.scheme() == "https" || (url.scheme() == "http" && loopback),
        "{url}"
    );
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    assert!(url.fragment().is_none(), "{url}");
    assert!(url.host().is_some(), "{url}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{panic, path::Path};

    /// Every fuzz target, by the name of its binary and of its corpus folder.
    const TARGETS: [(&str, fn(&[u8])); 5] = [
        ("oidc_response", oidc_response),
        ("entra_response", entra_response),
        ("claims_merge", claims_merge),
        ("jwt_claims", jwt_claims),
        ("tenant_resolution", tenant_resolution),
    ];

    fn fuzz_folder() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz"))
    }

    #[test]
    fn every_seed_of_the_corpus_replays_through_its_target() {
        for (name, target) in TARGETS {
            let folder = fuzz_folder().join("corpus").join(name);
            let seeds: Vec<_> = std::fs::read_dir(&folder)
                .unwrap_or_else(|e| panic!("no corpus folder {}: {e}", folder.display()))
                .map(|entry| entry.expect("a corpus entry").path())
                .collect();
            assert!(
                !seeds.is_empty(),
                "the corpus folder {} is empty",
                folder.display()
            );
            target(&[]);
            for seed in seeds {
                let data = std::fs::read(&seed).expect("a readable seed");
                let replayed = panic::catch_unwind(|| target(&data));
                assert!(replayed.is_ok(), "{name} failed on {}", seed.display());
            }
        }
    }

    #[test]
    fn every_target_is_one_call_and_every_corpus_has_a_target() {
        for (name, _) in TARGETS {
            let path = fuzz_folder()
                .join("fuzz_targets")
                .join(format!("{name}.rs"));
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no fuzz target {}: {e}", path.display()));
            assert!(
                source.contains(&format!("fuzzing::{name}(data)")),
                "{} does not call fuzzing::{name}",
                path.display()
            );
        }
        let corpus = std::fs::read_dir(fuzz_folder().join("corpus")).expect("fuzz/corpus");
        for entry in corpus {
            let name = entry.expect("a corpus folder").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(target, _)| *target == name),
                "fuzz/corpus/{name} has no target"
            );
        }
    }
}
