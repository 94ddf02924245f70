//! Which tenant a token request goes to: the rule every Azure SDK shares.
//!
//! Given the configured tenant D and a requested tenant R:
//! 1. R absent or equal to D: use D.
//! 2. D is `adfs`, or `AZURE_IDENTITY_DISABLE_MULTITENANTAUTH` is set: use D.
//! 3. `"*"` or R is in `additionally_allowed_tenants`: use R.
//! 4. Otherwise refuse, saying how to allow R.
//!
//! The decision is made before any network I/O, also for requests with claims. Every tenant ID
//! the credential meets (its own, the allowed ones, a requested one) is checked here too.

use crate::error::{Failure, Section};

const DISABLE_MULTITENANT_ENV: &str = "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH";

/// Checks that a tenant ID can be placed in a URL path: `[A-Za-z0-9.-]+`.
pub(crate) fn validate_tenant_id(tenant_id: &str, what: &str) -> Result<(), Failure> {
    let refuse = |cause: String| Err(Failure::new(Section::InvalidTenantId, cause));
    if tenant_id.is_empty() {
        return refuse(format!(
            "The {what} is empty. Use the directory (tenant) ID of the service principal, \
             a GUID shown on the service connection's page and in AZURESUBSCRIPTION_TENANT_ID."
        ));
    }
    if let Some(bad) = tenant_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return refuse(format!(
            "The {what} contains the character {bad:?}; tenant IDs contain only letters, digits, \
             '.' and '-'. Use the directory (tenant) ID GUID or a domain such as contoso.onmicrosoft.com."
        ));
    }
    // "." and ".." would be resolved away as path segments, leaving a token URL without the
    // tenant; no domain has an empty label either.
    if tenant_id.split('.').any(str::is_empty) {
        return refuse(format!(
            "The {what} '{tenant_id}' has a leading, trailing or doubled '.'. Use the directory \
             (tenant) ID GUID or a domain such as contoso.onmicrosoft.com."
        ));
    }
    Ok(())
}

/// Whether `AZURE_IDENTITY_DISABLE_MULTITENANTAUTH` turns multi-tenant requests off.
fn multitenant_disabled(env_value: Option<&str>) -> bool {
    env_value.is_some_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true")
    })
}

/// The tenants a credential may use besides its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TenantPolicy {
    configured: String,
    additionally_allowed: Vec<String>,
    multitenant_disabled: bool,
}

impl TenantPolicy {
    /// The rule for a credential of tenant `configured` (trimmed), which may also request
    /// `additionally_allowed` (`"*"` for any), under `AZURE_IDENTITY_DISABLE_MULTITENANTAUTH`.
    pub(crate) fn new(
        configured: &str,
        additionally_allowed: Vec<String>,
    ) -> Result<Self, Failure> {
        let configured = configured.trim();
        validate_tenant_id(configured, "tenant ID")?;
        for allowed in &additionally_allowed {
            if allowed != "*" {
                validate_tenant_id(allowed, "tenant ID in additionally_allowed_tenants")?;
            }
        }
        Ok(Self {
            configured: configured.to_owned(),
            additionally_allowed,
            multitenant_disabled: multitenant_disabled(
                std::env::var(DISABLE_MULTITENANT_ENV).ok().as_deref(),
            ),
        })
    }

    /// The credential's own tenant.
    #[inline]
    pub(crate) fn configured(&self) -> &str {
        &self.configured
    }

    /// The tenant a request for `requested` goes to, or why it may not.
    #[inline]
    pub(crate) fn resolve<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, Failure> {
        let configured = self.configured.as_str();
        let Some(requested) = requested.filter(|r| !r.is_empty()) else {
            return Ok(configured);
        };
        validate_tenant_id(requested, "requested tenant ID")?;
        if requested.eq_ignore_ascii_case(configured) {
            return Ok(configured);
        }
        if configured.eq_ignore_ascii_case("adfs") || self.multitenant_disabled {
            tracing::debug!(
                "requested tenant ignored: multi-tenant authentication is disabled or the tenant is adfs"
            );
            return Ok(configured);
        }
        if self
            .additionally_allowed
            .iter()
            .any(|t| t == "*" || t.eq_ignore_ascii_case(requested))
        {
            return Ok(requested);
        }
        Err(Failure::new(
            Section::TenantNotAllowed,
            format!(
                "The requested tenant '{requested}' is not allowed: this credential is configured for \
             tenant '{configured}'. To allow it, add \"{requested}\" to \
             AzurePipelinesCredentialOptions::additionally_allowed_tenants, or add \"*\" to allow \
             any tenant the application can access."
            ),
        ))
    }

    /// A rule that does not read the environment.
    #[cfg(test)]
    pub(crate) fn for_tests(configured: &str, additionally_allowed: &[&str]) -> Self {
        Self {
            configured: configured.into(),
            additionally_allowed: additionally_allowed.iter().map(|s| s.to_string()).collect(),
            multitenant_disabled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(configured: &str, allowed: &[&str], disabled: bool) -> TenantPolicy {
        TenantPolicy {
            configured: configured.into(),
            additionally_allowed: allowed.iter().map(|s| s.to_string()).collect(),
            multitenant_disabled: disabled,
        }
    }

    #[test]
    fn the_four_rules() {
        let cases: &[(&str, &[&str], bool, Option<&str>, Result<&str, &str>)] = &[
            // 1. absent or equal
            ("home", &[], false, None, Ok("home")),
            ("home", &[], false, Some(""), Ok("home")),
            ("home", &[], false, Some("home"), Ok("home")),
            ("Home", &[], false, Some("HOME"), Ok("Home")),
            // 2. adfs or disabled
            ("adfs", &[], false, Some("other"), Ok("adfs")),
            ("home", &[], true, Some("other"), Ok("home")),
            // 3. allowed
            ("home", &["*"], false, Some("other"), Ok("other")),
            ("home", &["x", "OTHER"], false, Some("other"), Ok("other")),
            // 4. refused
            (
                "home",
                &[],
                false,
                Some("other"),
                Err("additionally_allowed_tenants"),
            ),
            (
                "home",
                &["x"],
                false,
                Some("other"),
                Err("'other' is not allowed"),
            ),
            // a requested tenant must be a tenant, whatever the rule
            ("home", &["*"], false, Some("../x"), Err("character '/'")),
            ("home", &["*"], false, Some("a/b"), Err("character '/'")),
            ("home", &["*"], false, Some("%2F"), Err("character '%'")),
            ("adfs", &[], false, Some("a b"), Err("character ' '")),
        ];
        for (configured, allowed, disabled, requested, expected) in cases {
            let p = policy(configured, allowed, *disabled);
            let got = p.resolve(*requested);
            match (got, expected) {
                (Ok(t), Ok(e)) => assert_eq!(t, *e, "{requested:?}"),
                (Err(f), Err(e)) => assert!(f.text().contains(e), "{requested:?}: {f}"),
                (got, expected) => panic!("{requested:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn tenant_id_validation() {
        for ok in [
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
            "adfs",
            "A-1.z",
        ] {
            assert!(validate_tenant_id(ok, "tenant ID").is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("", "is empty"),
            ("a_b", "'_'"),
            ("a/b", "'/'"),
            ("é", "'é'"),
            ("a\nb", "'\\n'"),
            (".", "leading, trailing or doubled '.'"),
            ("..", "leading, trailing or doubled '.'"),
            (".contoso", "leading, trailing or doubled '.'"),
            ("contoso.", "leading, trailing or doubled '.'"),
            ("a..b", "leading, trailing or doubled '.'"),
        ] {
            let e = validate_tenant_id(bad, "tenant ID").unwrap_err();
            assert!(e.text().contains(needle), "{bad:?}: {e}");
            assert_eq!(e.section(), Section::InvalidTenantId);
        }
    }

    #[test]
    fn multitenant_switch() {
        for (value, expected) in [
            (None, false),
            (Some("1"), true),
            (Some("TRUE"), true),
            (Some("false"), false),
            (Some(""), false),
        ] {
            assert_eq!(multitenant_disabled(value), expected, "{value:?}");
        }
    }

    /// Not a property: tenants made of dots would be resolved away as `.` / `..` path segments.
    #[test]
    fn dot_segments_are_not_tenants() {
        for tenant in [".", "..", "...", ".contoso", "contoso.", "a..b"] {
            assert!(validate_tenant_id(tenant, "tenant ID").is_err(), "{tenant}");
            let resolved = policy("home", &["*"], false)
                .resolve(Some(tenant))
                .map(str::to_owned);
            assert!(resolved.is_err(), "{tenant}");
            assert!(TenantPolicy::new(tenant, Vec::new()).is_err(), "{tenant}");
        }
        assert!(validate_tenant_id("contoso.onmicrosoft.com", "tenant ID").is_ok());
    }

    mod properties {
        use super::*;
        use crate::tests::strategies::config;
        use proptest::prelude::*;

        fn path_safe(tenant: &str) -> bool {
            tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn a_valid_tenant_has_no_path_characters(tenant in "\\PC{0,40}") {
                if validate_tenant_id(&tenant, "tenant ID").is_ok() {
                    prop_assert!(!tenant.is_empty());
                    prop_assert!(path_safe(&tenant), "{tenant:?}");
                    prop_assert!(tenant != "." && tenant != "..", "{tenant:?}");
                }
            }

            #[test]
            fn resolve_only_ever_returns_a_safe_known_tenant(
                configured in "[A-Za-z0-9.-]{1,36}",
                allowed in prop::collection::vec(prop_oneof![Just("*".to_owned()), "\\PC{0,20}"], 0..4),
                disabled in any::<bool>(),
                requested in prop::option::of(prop_oneof![
                    "[A-Za-z0-9.-]{1,36}",
                    "\\PC{0,40}",
                    Just("../x".to_owned()), Just("a/b".to_owned()), Just("%2F".to_owned()),
                    Just("a?b".to_owned()), Just("a#b".to_owned()), Just("a b".to_owned()),
                    Just(".".to_owned()), Just("..".to_owned()),
                ]),
            ) {
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                let rule = policy(&configured, &allowed, disabled);
                match rule.resolve(requested.as_deref()) {
                    Ok(tenant) => {
                        prop_assert!(path_safe(tenant), "{tenant:?}");
                        prop_assert!(
                            tenant == configured || Some(tenant) == requested.as_deref(),
                            "{tenant:?}"
                        );
                        if tenant != configured {
                            prop_assert!(validate_tenant_id(tenant, "tenant ID").is_ok(), "{tenant:?}");
                            prop_assert!(!disabled);
                            prop_assert!(allowed.iter().any(|a| *a == "*" || a.eq_ignore_ascii_case(tenant)));
                        }
                    }
                    Err(e) => prop_assert!(!e.text().is_empty()),
                }
            }
        }
    }
}
