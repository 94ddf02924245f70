//! Tenant resolution and the URLs built from user input. The input is split at NUL bytes into
//! a configured tenant, a requested tenant, allowed tenants, and URL candidates.
//!
//! A resolved tenant only ever has `[A-Za-z0-9.-]`, is the configured or the requested one,
//! and stays one path segment of the token endpoint; an accepted authority or OIDC URI is
//! https (or http to loopback) without credentials or fragment.
#![no_main]

use azure_pipelines_credential::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fn safe(text: &str) {
    let url = url::Url::parse(text).expect("an accepted URL parses");
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    assert!(
        url.scheme() == "https" || (url.scheme() == "http" && loopback),
        "{text}"
    );
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{text}"
    );
    assert!(url.fragment().is_none(), "{text}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let configured = parts.next().unwrap_or_default();
    let requested = parts.next();
    let url_input = parts.next();
    let allowed: Vec<&str> = parts.collect();

    let _ = f::validate_tenant_id(configured);
    let disabled = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(tenant) = f::resolve_tenant(configured, &allowed, disabled, requested) {
        assert!(tenant == configured || Some(tenant.as_str()) == requested);
        // The configured tenant is checked at construction; a requested one here.
        if tenant != configured {
            assert!(f::validate_tenant_id(&tenant).is_ok(), "{tenant:?}");
        }
        if f::validate_tenant_id(&tenant).is_ok() {
            assert!(
                tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            );
            let endpoint = f::token_endpoint("https://login.microsoftonline.com", &tenant)
                .expect("a valid authority");
            let url = url::Url::parse(&endpoint).expect("a URL");
            let segments: Vec<&str> = url.path_segments().expect("a path").collect();
            assert_eq!(segments, [tenant.as_str(), "oauth2", "v2.0", "token"]);
        }
    }
    if let Some(candidate) = url_input {
        if let Ok(authority) = f::authority_host(Some(candidate), None) {
            safe(&authority);
        }
        if let Ok(Some(uri)) = f::oidc_request_url(Some(candidate), None, configured) {
            safe(&uri);
        }
    }
});
