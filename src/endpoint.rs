//! Which URLs the credential may talk to: the Entra authority host and the pipeline's OIDC URI.
//!
//! One rule for both: HTTPS, except plain HTTP to a loopback host (`localhost`, `127.0.0.0/8`,
//! `[::1]`) for local emulators and tests. The System.AccessToken and the OIDC token never
//! travel in clear text off the machine. Loopback is judged from the URL alone; names are never
//! resolved, so `localhost.example.com` is not loopback.

use azure_core::cloud::CloudConfiguration;
use std::net::IpAddr;
use url::{Host, Url};

pub(crate) const AZURE_AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";
pub(crate) const OIDC_REQUEST_URI_ENV: &str = "SYSTEM_OIDCREQUESTURI";
const AZURE_PUBLIC_CLOUD: &str = "https://login.microsoftonline.com";
const AZURE_GOVERNMENT: &str = "https://login.microsoftonline.us";
const AZURE_CHINA: &str = "https://login.chinacloudapi.cn";
const OIDC_API_VERSION: &str = "7.1";

/// Picks the authority host: the explicit option, else the cloud configuration, else
/// `AZURE_AUTHORITY_HOST`, else the public cloud.
pub(crate) fn resolve_authority_host(
    explicit: Option<&str>,
    cloud: Option<&CloudConfiguration>,
    env_value: Option<&str>,
) -> Result<Url, String> {
    let (raw, origin) = if let Some(host) = explicit.filter(|h| !h.trim().is_empty()) {
        (host.to_owned(), "the authority_host option")
    } else if let Some(cloud) = cloud {
        let host = match cloud {
            CloudConfiguration::AzurePublic => AZURE_PUBLIC_CLOUD.to_owned(),
            CloudConfiguration::AzureGovernment => AZURE_GOVERNMENT.to_owned(),
            CloudConfiguration::AzureChina => AZURE_CHINA.to_owned(),
            CloudConfiguration::Custom(custom) => custom.authority_host.clone(),
            other => {
                return Err(format!(
                    "The cloud configuration {other:?} is not known to this version. \
                     Set authority_host in AzurePipelinesCredentialOptions instead."
                ));
            }
        };
        (host, "client_options.cloud")
    } else if let Some(host) = env_value.filter(|h| !h.trim().is_empty()) {
        (host.to_owned(), AZURE_AUTHORITY_HOST_ENV)
    } else {
        (AZURE_PUBLIC_CLOUD.to_owned(), "the default")
    };
    let trimmed = raw.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| {
        format!(
            "The authority host from {origin} is not a valid URL ({e}). \
             Use a host such as https://login.microsoftonline.com."
        )
    })?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    check_transport(&url, &format!("The authority host from {origin}"))?;
    if url.query().is_some() {
        return Err(format!(
            "The authority host from {origin} has a query string. Use just the scheme and host, \
             such as https://login.microsoftonline.com."
        ));
    }
    Ok(url)
}

/// The Entra token endpoint for `tenant`: `{authority}/{tenant}/oauth2/v2.0/token`.
///
/// `tenant` must already be validated (no path characters).
pub(crate) fn token_endpoint(authority: &Url, tenant: &str) -> Url {
    let mut url = authority.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
    }
    url
}

/// The URL of the OIDC request: `{uri}?api-version=7.1&serviceConnectionId={id}`.
///
/// `explicit` is the `oidc_request_uri` option; without it `env_value` is the value of
/// `SYSTEM_OIDCREQUESTURI`. `Ok(None)` means neither is set: not running in Azure Pipelines.
pub(crate) fn oidc_request_url(
    explicit: Option<&str>,
    env_value: Option<&str>,
    service_connection_id: &str,
) -> Result<Option<Url>, String> {
    let (raw, origin) = match (explicit, env_value) {
        (Some(uri), _) => (uri, "The oidc_request_uri option"),
        (None, Some(uri)) => (uri, OIDC_REQUEST_URI_ENV),
        (None, None) => return Ok(None),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let mut url = Url::parse(raw).map_err(|e| {
        format!(
            "{origin} is not a valid URL ({e}). In a pipeline the agent sets \
             SYSTEM_OIDCREQUESTURI; do not override it by hand."
        )
    })?;
    check_transport(&url, origin)?;
    url.query_pairs_mut()
        .append_pair("api-version", OIDC_API_VERSION)
        .append_pair("serviceConnectionId", service_connection_id);
    Ok(Some(url))
}

/// The rule shared by both endpoints: https, or http to loopback; no credentials or fragment.
fn check_transport(url: &Url, what: &str) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        "http" => {
            return Err(format!(
                "{what} uses http:// to a host that is not loopback. Use https:// so that \
                 tokens never cross the network in clear text (http:// is only allowed for \
                 localhost, 127.0.0.0/8 and [::1])."
            ));
        }
        other => {
            return Err(format!(
                "{what} has the scheme `{other}:`. Only https:// URLs are supported \
                 (and http:// for loopback hosts)."
            ));
        }
    }
    if url.host().is_none() {
        return Err(format!(
            "{what} has no host. Use a URL such as https://host/path."
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} embeds a user name or password. Remove them from the URL: the credential \
             authenticates with the System.AccessToken."
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{what} has a #fragment. Remove it."));
    }
    Ok(())
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::cloud::CustomConfiguration;

    #[test]
    fn authority_host_precedence_and_normalisation() {
        let custom: CloudConfiguration = {
            let mut c = CustomConfiguration::default();
            c.authority_host = "https://login.example.test".into();
            c.into()
        };
        let cases: &[(
            Option<&str>,
            Option<&CloudConfiguration>,
            Option<&str>,
            &str,
        )] = &[
            (None, None, None, "https://login.microsoftonline.com/"),
            (
                None,
                None,
                Some("login.microsoftonline.us"),
                "https://login.microsoftonline.us/",
            ),
            (
                None,
                None,
                Some("  https://login.chinacloudapi.cn/ "),
                "https://login.chinacloudapi.cn/",
            ),
            (
                None,
                Some(&CloudConfiguration::AzureGovernment),
                Some("https://ignored"),
                "https://login.microsoftonline.us/",
            ),
            (
                None,
                Some(&CloudConfiguration::AzureChina),
                None,
                "https://login.chinacloudapi.cn/",
            ),
            (None, Some(&custom), None, "https://login.example.test/"),
            (
                Some("http://127.0.0.1:8080/"),
                Some(&custom),
                Some("x"),
                "http://127.0.0.1:8080/",
            ),
            (
                Some("http://localhost:1"),
                None,
                None,
                "http://localhost:1/",
            ),
            (Some("http://[::1]:1"), None, None, "http://[::1]:1/"),
            (
                Some("https://host/prefix/"),
                None,
                None,
                "https://host/prefix",
            ),
            (
                Some(""),
                None,
                Some("login.microsoftonline.us"),
                "https://login.microsoftonline.us/",
            ),
        ];
        for (explicit, cloud, env, expected) in cases {
            let url = resolve_authority_host(*explicit, *cloud, *env)
                .unwrap_or_else(|e| panic!("{explicit:?} {env:?}: {e}"));
            assert_eq!(url.as_str(), *expected, "{explicit:?} {env:?}");
        }
    }

    #[test]
    fn authority_host_refusals_say_why() {
        let cases: &[(&str, &str)] = &[
            ("http://login.microsoftonline.com", "not loopback"),
            ("http://localhost.example.com", "not loopback"),
            ("http://127.0.0.1.nip.io", "not loopback"),
            ("file:///etc/passwd", "scheme `file:`"),
            ("ftp://host", "scheme `ftp:`"),
            ("https://user:pw@host", "user name or password"),
            ("https://host/#frag", "#fragment"),
            ("https://host/?q=1", "query string"),
            ("https://", "not a valid URL"),
        ];
        for (input, expected) in cases {
            let e = resolve_authority_host(Some(input), None, None).unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
            assert!(!e.contains("pw@"), "{input}: {e}");
        }
    }

    #[test]
    fn token_endpoint_appends_tenant_path() {
        let cases = [
            (
                "https://login.microsoftonline.com/",
                "t1",
                "https://login.microsoftonline.com/t1/oauth2/v2.0/token",
            ),
            (
                "https://host/prefix",
                "t1",
                "https://host/prefix/t1/oauth2/v2.0/token",
            ),
            (
                "http://127.0.0.1:9/",
                "a.b-c",
                "http://127.0.0.1:9/a.b-c/oauth2/v2.0/token",
            ),
        ];
        for (authority, tenant, expected) in cases {
            let url = token_endpoint(&Url::parse(authority).unwrap(), tenant);
            assert_eq!(url.as_str(), expected);
        }
    }

    #[test]
    fn oidc_url_appends_encoded_query() {
        let cases: &[(Option<&str>, Option<&str>, &str, Option<&str>)] = &[
            (None, None, "c", None),
            (None, Some(" "), "c", None),
            (
                None,
                Some("https://dev.azure.com/o/p/_apis/x/oidctoken"),
                "c",
                Some(
                    "https://dev.azure.com/o/p/_apis/x/oidctoken?api-version=7.1&serviceConnectionId=c",
                ),
            ),
            (
                Some("https://dev.azure.com/o/oidctoken?a=b"),
                Some("https://ignored"),
                "a b&c",
                Some(
                    "https://dev.azure.com/o/oidctoken?a=b&api-version=7.1&serviceConnectionId=a+b%26c",
                ),
            ),
            (
                Some("http://127.0.0.1:5/oidctoken"),
                None,
                "c",
                Some("http://127.0.0.1:5/oidctoken?api-version=7.1&serviceConnectionId=c"),
            ),
        ];
        for (explicit, env, id, expected) in cases {
            let url = oidc_request_url(*explicit, *env, id).unwrap();
            assert_eq!(url.as_ref().map(Url::as_str), *expected);
        }
    }

    #[test]
    fn oidc_url_refusals_say_why() {
        let cases: &[(&str, &str)] = &[
            ("http://dev.azure.com/x", "not loopback"),
            (
                "https://user:secret@dev.azure.com/x",
                "user name or password",
            ),
            ("https://dev.azure.com/x#f", "#fragment"),
            ("file:///tmp/x", "scheme `file:`"),
            ("not a url", "not a valid URL"),
        ];
        for (input, expected) in cases {
            let e = oidc_request_url(Some(input), None, "c").unwrap_err();
            assert!(e.contains(expected), "{input}: {e}");
            assert!(!e.contains("secret"), "{input}: {e}");
        }
    }

    /// Not a property: the loopback aliases that look local but are not, spelled out.
    #[test]
    fn loopback_lookalikes_are_refused() {
        for host in [
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://localhost.",
            "http://0x7f.example",
            "http://[::ffff:10.0.0.1]",
        ] {
            assert!(
                resolve_authority_host(Some(host), None, None).is_err(),
                "{host}"
            );
            assert!(
                oidc_request_url(Some(&format!("{host}/x")), None, "c").is_err(),
                "{host}"
            );
        }
        for host in [
            "http://localhost:1",
            "http://127.0.0.2",
            "http://[::1]:8080",
        ] {
            assert!(
                resolve_authority_host(Some(host), None, None).is_ok(),
                "{host}"
            );
        }
    }

    mod properties {
        use super::*;
        use crate::{fuzzing::assert_safe, tests::strategies::config};
        use proptest::prelude::*;

        /// Text a user might give as a URL, and text that only looks like one.
        fn url_like() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,60}",
                "(https?|ftp|file)://[a-z0-9.@:\\[\\]-]{0,30}(/[a-z]{0,5})?(\\?[a-z=]{0,5})?(#[a-z]{0,3})?",
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn the_token_endpoint_keeps_the_tenant_in_one_segment(tenant in "[A-Za-z0-9.-]{1,36}") {
                let authority = Url::parse("https://login.microsoftonline.com/").unwrap();
                let url = token_endpoint(&authority, &tenant);
                let segments: Vec<&str> = url.path_segments().unwrap().collect();
                if crate::tenant::validate_tenant_id(&tenant, "tenant ID").is_ok() {
                    prop_assert_eq!(segments, vec![tenant.as_str(), "oauth2", "v2.0", "token"]);
                }
            }

            #[test]
            fn an_accepted_authority_never_sends_tokens_in_clear(
                explicit in prop::option::of(url_like()),
                env in prop::option::of("\\PC{0,60}"),
            ) {
                if let Ok(authority) = resolve_authority_host(explicit.as_deref(), None, env.as_deref()) {
                    assert_safe(&authority);
                    prop_assert!(authority.query().is_none(), "{authority}");
                }
            }

            #[test]
            fn an_accepted_oidc_uri_never_sends_tokens_in_clear(
                explicit in prop::option::of(url_like()),
                env in prop::option::of("\\PC{0,60}"),
                connection in "\\PC{0,40}",
            ) {
                match oidc_request_url(explicit.as_deref(), env.as_deref(), &connection) {
                    Ok(Some(url)) => {
                        assert_safe(&url);
                        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
                        prop_assert!(pairs.contains(&("api-version".into(), "7.1".into())), "{url}");
                        prop_assert!(pairs.contains(&("serviceConnectionId".into(), connection.clone())), "{url}");
                    }
                    Ok(None) => prop_assert!(
                        explicit.as_deref().map_or(env.as_deref().is_none_or(|e| e.trim().is_empty()), |e| e.trim().is_empty())
                    ),
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }
}
