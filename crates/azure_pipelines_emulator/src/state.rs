//! What every request handler reads: the configuration, the identifiers fixed at start, the
//! signing key and the knobs.

use crate::config::{EmulatorConfig, OIDC_AUDIENCE};
use crate::control::Control;
use crate::jwt::{Keys, OidcClaims};
use crate::util;

/// Identifiers fixed for the life of one emulator.
pub(crate) struct Ids {
    pub(crate) organization_id: String,
    pub(crate) project_id: String,
    pub(crate) plan_id: String,
    pub(crate) job_id: String,
    pub(crate) object_id: String,
}

/// Everything the request handlers need.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) ids: Ids,
    pub(crate) keys: Keys,
    pub(crate) control: Control,
    pub(crate) http_base: String,
    pub(crate) https_base: String,
}

impl Shared {
    pub(crate) fn base(&self, tls: bool) -> &str {
        if tls {
            &self.https_base
        } else {
            &self.http_base
        }
    }

    pub(crate) fn oidc_issuer(&self) -> String {
        format!("https://vstoken.dev.azure.com/{}", self.ids.organization_id)
    }

    pub(crate) fn oidc_subject(&self) -> String {
        format!(
            "sc://{}/{}/{}",
            self.config.organization, self.config.project, self.config.service_connection_name
        )
    }

    pub(crate) fn oidc_path(&self) -> String {
        format!(
            "/{}/{}/_apis/distributedtask/hubs/build/plans/{}/jobs/{}/oidctoken",
            self.config.organization, self.ids.project_id, self.ids.plan_id, self.ids.job_id
        )
    }

    pub(crate) fn default_oidc_claims(&self) -> OidcClaims {
        let iat = self.control.now_unix();
        let lifetime =
            i64::try_from(self.control.oidc_token_lifetime().as_secs()).unwrap_or(i64::MAX);
        OidcClaims {
            iss: self.oidc_issuer(),
            sub: self.oidc_subject(),
            aud: OIDC_AUDIENCE.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(lifetime),
            jti: util::guid(),
            extra: serde_json::Map::new(),
        }
    }

    /// Whether `tenant` is one the application exists in.
    pub(crate) fn known_tenant(&self, tenant: &str) -> Option<&str> {
        std::iter::once(&self.config.tenant_id)
            .chain(&self.config.additional_tenants)
            .find(|t| t.eq_ignore_ascii_case(tenant))
            .map(String::as_str)
    }
}
