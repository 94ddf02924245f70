//! **Not public API.** Thin wrappers over the credential's pure parsers, for the fuzz targets in
//! `fuzz/` and the property tests in `tests/properties.rs`.
//!
//! Compiled only with the `fuzzing` feature and hidden from the docs; anything here may change
//! or disappear in any release. Each function calls the code the credential runs, unchanged,
//! and converts crate-private types to plain ones.

use crate::{AccessTokenInfo, assertion, claims, endpoint, exchange, jwt, tenant};
use azure_core::{credentials::Secret, http::StatusCode};
use time::OffsetDateTime;

/// The OIDC token from a 200 response body of the Azure DevOps OIDC endpoint, or the cause.
pub fn oidc_body(body: &[u8]) -> Result<Secret, String> {
    assertion::parse_oidc_body(body)
}

/// What a non-200 answer (`status`, `body`) of the OIDC endpoint means.
pub fn oidc_failure_cause(status: u16, body: &[u8]) -> String {
    assertion::oidc_failure_cause(StatusCode::from(status), body)
}

/// A successful Entra token response read at `now`, or the cause of refusing it.
pub fn token_response(body: &[u8], now: OffsetDateTime) -> Result<AccessTokenInfo, String> {
    exchange::parse_token_response(body, now)
}

/// An Entra error body as the credential reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntraFailure {
    /// The OAuth `error`.
    pub error: String,
    /// The `error_codes` (AADSTS numbers).
    pub codes: Vec<i64>,
    /// The message the credential builds from it.
    pub cause: String,
}

/// Reads an Entra error `body`, explained for `client_id` and the OIDC token `assertion` (whose
/// claims are quoted for federation mismatches); `None` when the body is not an Entra error.
pub fn entra_failure(body: &[u8], client_id: &str, assertion: &str) -> Option<EntraFailure> {
    let entra = exchange::EntraError::parse(body)?;
    let federation = jwt::FederationClaims::from_token(assertion);
    let cause = exchange::entra_failure_cause(&entra, client_id, &federation);
    Some(EntraFailure {
        error: entra.error,
        codes: entra.codes,
        cause,
    })
}

/// The `claims` value a request with `claims` (and CAE if `enable_cae`) sends.
pub fn request_claims(claims: Option<&str>, enable_cae: bool) -> Result<Option<String>, String> {
    claims::request_claims(claims, enable_cae)
}

/// The `iss`, `sub`, `aud` and `exp` the credential reads from an OIDC token for diagnostics.
pub fn federation_claims(
    token: &str,
) -> (Option<String>, Option<String>, Option<String>, Option<i64>) {
    let c = jwt::FederationClaims::from_token(token);
    (c.iss, c.sub, c.aud, c.exp)
}

/// Checks a tenant ID as the constructor and `TokenRequestContext::tenant_id` do.
pub fn validate_tenant_id(tenant_id: &str) -> Result<(), String> {
    tenant::validate_tenant_id(tenant_id, "tenant ID")
}

/// The tenant a request for `requested` goes to, under the four-rule tenant policy.
pub fn resolve_tenant(
    configured: &str,
    additionally_allowed: &[&str],
    multitenant_disabled: bool,
    requested: Option<&str>,
) -> Result<String, String> {
    let policy = tenant::TenantPolicy {
        configured: configured.to_owned(),
        additionally_allowed: additionally_allowed
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        multitenant_disabled,
    };
    policy.resolve(requested).map(str::to_owned)
}

/// The authority host from the `authority_host` option or `AZURE_AUTHORITY_HOST` (no cloud
/// configuration), as a URL string.
pub fn authority_host(explicit: Option<&str>, env_value: Option<&str>) -> Result<String, String> {
    endpoint::resolve_authority_host(explicit, None, env_value).map(String::from)
}

/// The Entra token endpoint for `tenant` under `authority` (an already resolved host).
pub fn token_endpoint(authority: &str, tenant: &str) -> Option<String> {
    let authority = url::Url::parse(authority).ok()?;
    Some(endpoint::token_endpoint(&authority, tenant).into())
}

/// The URL of the OIDC request from the `oidc_request_uri` option or `SYSTEM_OIDCREQUESTURI`;
/// `Ok(None)` when neither is set.
pub fn oidc_request_url(
    explicit: Option<&str>,
    env_value: Option<&str>,
    service_connection_id: &str,
) -> Result<Option<String>, String> {
    endpoint::oidc_request_url(explicit, env_value, service_connection_id)
        .map(|url| url.map(String::from))
}
