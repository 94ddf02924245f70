//! Which tenant a token request goes to: the rule every Azure SDK shares.
//!
//! Given the configured tenant D and a requested tenant R:
//! 1. R absent or equal to D: use D.
//! 2. D is `adfs`, or `AZURE_IDENTITY_DISABLE_MULTITENANTAUTH` is set: use D.
//! 3. `"*"` or R is in `additionally_allowed_tenants`: use R.
//! 4. Otherwise refuse, saying how to allow R.
//!
//! The decision is made before any network I/O, also for requests with claims.

pub(crate) const DISABLE_MULTITENANT_ENV: &str = "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH";

/// Checks that a tenant ID can be placed in a URL path: `[A-Za-z0-9.-]+`.
pub(crate) fn validate_tenant_id(tenant_id: &str, what: &str) -> Result<(), String> {
    if tenant_id.is_empty() {
        return Err(format!(
            "The {what} is empty. Use the directory (tenant) ID of the service principal, \
             a GUID shown on the service connection's page and in AZURESUBSCRIPTION_TENANT_ID."
        ));
    }
    if let Some(bad) = tenant_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "The {what} contains the character {bad:?}; tenant IDs contain only letters, digits, \
             '.' and '-'. Use the directory (tenant) ID GUID or a domain such as contoso.onmicrosoft.com."
        ));
    }
    // "." and ".." would be resolved away as path segments, leaving a token URL without the
    // tenant; no domain has an empty label either.
    if tenant_id.split('.').any(str::is_empty) {
        return Err(format!(
            "The {what} '{tenant_id}' has a leading, trailing or doubled '.'. Use the directory \
             (tenant) ID GUID or a domain such as contoso.onmicrosoft.com."
        ));
    }
    Ok(())
}

/// Whether `AZURE_IDENTITY_DISABLE_MULTITENANTAUTH` turns multi-tenant requests off.
pub(crate) fn multitenant_disabled(env_value: Option<&str>) -> bool {
    env_value.is_some_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true")
    })
}

/// The tenants a credential may use besides its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TenantPolicy {
    pub(crate) configured: String,
    pub(crate) additionally_allowed: Vec<String>,
    pub(crate) multitenant_disabled: bool,
}

impl TenantPolicy {
    /// The tenant a request for `requested` goes to, or why it may not.
    pub(crate) fn resolve<'a>(&'a self, requested: Option<&'a str>) -> Result<&'a str, String> {
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
        Err(format!(
            "The requested tenant '{requested}' is not allowed: this credential is configured for \
             tenant '{configured}'. To allow it, add \"{requested}\" to \
             AzurePipelinesCredentialOptions::additionally_allowed_tenants, or add \"*\" to allow \
             any tenant the application can access."
        ))
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
                (Err(msg), Err(e)) => assert!(msg.contains(e), "{requested:?}: {msg}"),
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
            assert!(e.contains(needle), "{bad:?}: {e}");
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
}
