//! The Microsoft Entra ID token endpoint and its discovery documents.

use hyper::Method;
use hyper::header::{CACHE_CONTROL, HeaderName, PRAGMA};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::config::OIDC_AUDIENCE;
use crate::jwt::{self, VerifyError};
use crate::state::Shared;
use crate::util;
use crate::wire::{
    RequestIds, Resp, entra_error_json, form_value, json_response, set_header, text_response,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const FIC_DOCS: &str = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// An Entra error answer.
struct EntraError {
    status: u16,
    error: &'static str,
    code: u32,
    description: String,
}

fn err(status: u16, error: &'static str, code: u32, description: impl Into<String>) -> EntraError {
    EntraError {
        status,
        error,
        code,
        description: description.into(),
    }
}

fn missing(parameter: &str) -> EntraError {
    err(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{parameter}'."),
    )
}

fn error_response(shared: &Shared, ids: &RequestIds, e: EntraError) -> Resp {
    json_response(
        e.status,
        entra_error_json(ids, shared.control.now(), e.error, e.code, &e.description),
    )
}

/// The body of an injected [`Fault::Status`](crate::Fault::Status).
pub(crate) fn status_fault_body(status: u16, ids: Option<&RequestIds>) -> String {
    let fresh;
    let ids = match ids {
        Some(ids) => ids,
        None => {
            fresh = RequestIds::new(None);
            &fresh
        }
    };
    let now = OffsetDateTime::now_utc();
    match status {
        429 => entra_error_json(
            ids,
            now,
            "temporarily_unavailable",
            90055,
            "TenantThrottlingError: There are too many incoming requests. This exception is thrown for blocked tenants.",
        ),
        500..=599 => entra_error_json(
            ids,
            now,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        _ => entra_error_json(
            ids,
            now,
            "invalid_request",
            90100,
            &format!("The request failed with status {status}."),
        ),
    }
}

/// Headers the Entra front end puts on token responses.
pub(crate) fn add_entra_headers(resp: &mut Resp, ids: &RequestIds) {
    set_header(resp, CACHE_CONTROL, "no-store, no-cache");
    set_header(resp, PRAGMA, "no-cache");
    set_header(
        resp,
        HeaderName::from_static("x-ms-request-id"),
        &ids.trace_id,
    );
    set_header(
        resp,
        HeaderName::from_static("x-ms-ests-server"),
        "2.1.20000.0 - EMU ProdSlices",
    );
    if ids.echo_client_request_id {
        set_header(
            resp,
            HeaderName::from_static("client-request-id"),
            &ids.correlation_id,
        );
    }
}

pub(crate) fn handle_token(
    shared: &Shared,
    method: &Method,
    tenant: &str,
    form: &[(String, String)],
    ids: &RequestIds,
) -> Resp {
    if method == Method::OPTIONS {
        return text_response(200, "text/plain; charset=utf-8", "");
    }
    match issue(shared, method, tenant, form) {
        Ok(body) => json_response(200, body),
        Err(e) => error_response(shared, ids, e),
    }
}

fn check_tenant<'a>(shared: &'a Shared, tenant: &str) -> Result<&'a str, EntraError> {
    if let Some(t) = shared.known_tenant(tenant) {
        return Ok(t);
    }
    let looks_valid = util::is_guid(tenant)
        || (tenant.contains('.')
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        || ["common", "organizations", "consumers"]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tenant));
    Err(if looks_valid {
        err(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    } else {
        err(
            400,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain."
            ),
        )
    })
}

/// Validates a token request and returns the success body.
fn issue(
    shared: &Shared,
    method: &Method,
    tenant: &str,
    form: &[(String, String)],
) -> Result<String, EntraError> {
    if method != Method::POST {
        return Err(err(
            400,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        ));
    }
    let tenant = check_tenant(shared, tenant)?;
    let get = |k| form_value(form, k);

    match get("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(err(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    match get("client_assertion_type") {
        None if get("client_assertion").is_none() => {
            return Err(err(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        None => return Err(missing("client_assertion_type")),
        Some(JWT_BEARER) => {}
        Some(other) => {
            return Err(err(
                400,
                "invalid_request",
                70002,
                format!(
                    "Error validating credentials. The client_assertion_type '{other}' is not supported; it must be '{JWT_BEARER}'."
                ),
            ));
        }
    }
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    if !client_id.eq_ignore_ascii_case(&shared.config.client_id) {
        return Err(err(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    let assertion = get("client_assertion").ok_or_else(|| {
        err(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    })?;
    check_assertion(shared, client_id, assertion)?;

    let scope = get("scope").ok_or_else(|| missing("scope"))?;
    let resources = check_scopes(scope, tenant)?;

    let claims = match get("claims") {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => Some(map),
            _ => {
                return Err(err(
                    400,
                    "invalid_request",
                    90100,
                    "claims parameter is empty or not valid. The claims value is not valid JSON.",
                ));
            }
        },
    };

    let Some(audience) = resources.first() else {
        return Err(missing("scope"));
    };
    let (access_token, _) =
        mint_access_token(shared, tenant, audience, claims.as_ref()).map_err(|e| {
            tracing::error!(error = %e, "emulator failed to sign an access token");
            err(
                500,
                "server_error",
                90033,
                "A transient error has occurred. Please try again.",
            )
        })?;
    shared.control.record_access_token_issued();

    let lifetime = shared.control.access_token_lifetime().as_secs();
    let mut body = Map::new();
    body.insert("token_type".into(), "Bearer".into());
    if shared.control.expires_in_as_string() {
        body.insert("expires_in".into(), lifetime.to_string().into());
        body.insert("ext_expires_in".into(), lifetime.to_string().into());
    } else {
        body.insert("expires_in".into(), lifetime.into());
        body.insert("ext_expires_in".into(), lifetime.into());
    }
    if let Some(refresh_in) = shared.control.refresh_in() {
        body.insert("refresh_in".into(), refresh_in.as_secs().into());
    }
    body.insert("access_token".into(), access_token.into());
    Ok(Value::Object(body).to_string())
}

fn claim_i64(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn check_assertion(shared: &Shared, client_id: &str, assertion: &str) -> Result<(), EntraError> {
    let malformed = || {
        err(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let claims = jwt::unverified_claims(assertion).ok_or_else(malformed)?;

    // Entra finds the federated identity credentials by issuer first, then
    // validates the token with that issuer's keys, then matches the rest.
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    if iss != shared.oidc_issuer() {
        return Err(err(
            400,
            "invalid_request",
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{iss}'. {FIC_DOCS}"
            ),
        ));
    }
    match shared.keys.verify(assertion) {
        Ok(_) => {}
        Err(VerifyError::Malformed) => return Err(malformed()),
        Err(VerifyError::UnknownKey) => {
            return Err(err(
                401,
                "invalid_client",
                700027,
                format!(
                    "Client assertion contains an invalid signature. [Reason - The key was not found., Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
                ),
            ));
        }
        Err(VerifyError::BadSignature) => {
            return Err(err(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            ));
        }
    }

    let exp = claim_i64(&claims, "exp").ok_or_else(malformed)?;
    let nbf = claim_i64(&claims, "nbf")
        .or_else(|| claim_i64(&claims, "iat"))
        .unwrap_or(i64::MIN);
    let now = shared.control.now();
    let now_unix = now.unix_timestamp();
    if now_unix >= exp || now_unix < nbf {
        let valid_from = if nbf == i64::MIN {
            "(not set)".to_owned()
        } else {
            util::dotnet_timestamp_from_unix(nbf)
        };
        return Err(err(
            400,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {valid_from}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                util::dotnet_timestamp(now),
                util::dotnet_timestamp_from_unix(exp)
            ),
        ));
    }

    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&OIDC_AUDIENCE) {
        return Err(err(
            400,
            "invalid_request",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {FIC_DOCS}",
                audiences.join(",")
            ),
        ));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sub != shared.oidc_subject() {
        return Err(err(
            400,
            "invalid_request",
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{sub}'. {FIC_DOCS}"
            ),
        ));
    }
    Ok(())
}

/// Returns the resource of each scope, in order.
fn check_scopes(scope: &str, tenant: &str) -> Result<Vec<String>, EntraError> {
    let mut resources = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let Some(resource) = s.strip_suffix("/.default") else {
            return Err(err(
                400,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        };
        let is_uri = resource.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                && !rest.is_empty()
        });
        if !(is_uri || util::is_guid(resource)) {
            return Err(err(
                400,
                "invalid_resource",
                500011,
                format!(
                    "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                ),
            ));
        }
        resources.push(resource.to_owned());
    }
    if resources.is_empty() {
        return Err(missing("scope"));
    }
    Ok(resources)
}

/// Whether the `claims` request parameter asks for a CAE-capable token
/// (`access_token.xms_cc.values` contains `CP1`).
fn wants_cae(claims: &Map<String, Value>) -> bool {
    claims
        .get("access_token")
        .and_then(|a| a.get("xms_cc"))
        .and_then(|x| x.get("values"))
        .and_then(Value::as_array)
        .is_some_and(|values| {
            values
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("cp1")))
        })
}

/// An access token for `audience` from `tenant`, as Entra ID issues to the service connection's
/// application (`claims` is the request's `claims` parameter), and its expiry (`exp`).
pub(crate) fn mint_access_token(
    shared: &Shared,
    tenant: &str,
    audience: &str,
    claims: Option<&Map<String, Value>>,
) -> std::io::Result<(String, i64)> {
    let iat = shared.control.now_unix();
    let lifetime =
        i64::try_from(shared.control.access_token_lifetime().as_secs()).unwrap_or(i64::MAX);
    let issuer = format!("https://sts.windows.net/{tenant}/");
    let object_id = &shared.ids.object_id;
    let mut token = Map::new();
    token.insert("aud".into(), audience.into());
    token.insert("iss".into(), issuer.clone().into());
    token.insert("iat".into(), iat.into());
    token.insert("nbf".into(), iat.into());
    let exp = iat.saturating_add(lifetime);
    token.insert("exp".into(), exp.into());
    token.insert("aio".into(), util::random_b64url::<48>().into());
    token.insert("appid".into(), shared.config.client_id.clone().into());
    token.insert("appidacr".into(), "2".into());
    token.insert("idp".into(), issuer.into());
    token.insert("idtyp".into(), "app".into());
    token.insert("oid".into(), object_id.clone().into());
    token.insert(
        "rh".into(),
        format!("1.{}.", util::random_b64url::<40>()).into(),
    );
    token.insert("sub".into(), object_id.clone().into());
    token.insert("tid".into(), tenant.into());
    token.insert("uti".into(), util::random_b64url::<16>().into());
    token.insert("ver".into(), "1.0".into());
    if let Some(claims) = claims {
        if wants_cae(claims) {
            token.insert("xms_cc".into(), json!(["CP1"]));
        }
        token.insert("xms_claims_requested".into(), Value::Object(claims.clone()));
    }
    Ok((shared.keys.sign(&token)?, exp))
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) fn openid_configuration(
    shared: &Shared,
    method: &Method,
    base: &str,
    tenant: &str,
) -> Resp {
    if method != Method::GET {
        return text_response(405, "text/plain; charset=utf-8", "Method Not Allowed");
    }
    let ids = RequestIds::new(None);
    let tid = match check_tenant(shared, tenant) {
        Ok(t) => t,
        Err(e) => return error_response(shared, &ids, e),
    };
    let body = json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("https://login.microsoftonline.com/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "ver"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    });
    json_response(200, body.to_string())
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub(crate) fn jwks(shared: &Shared, method: &Method, tenant: &str) -> Resp {
    if method != Method::GET {
        return text_response(405, "text/plain; charset=utf-8", "Method Not Allowed");
    }
    if let Err(e) = check_tenant(shared, tenant) {
        return error_response(shared, &RequestIds::new(None), e);
    }
    json_response(200, shared.keys.jwks().to_string())
}

/// `GET /common/discovery/instance`, as MSAL asks before the first token.
pub(crate) fn instance_discovery(method: &Method, base: &str) -> Resp {
    if method != Method::GET {
        return text_response(405, "text/plain; charset=utf-8", "Method Not Allowed");
    }
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    let body = json!({
        "tenant_discovery_endpoint": format!("{base}/common/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    });
    json_response(200, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let ok = check_scopes("https://storage.azure.com/.default", "t").ok();
        assert_eq!(ok, Some(vec!["https://storage.azure.com".to_owned()]));
        let arm = check_scopes("https://management.azure.com//.default", "t").ok();
        assert_eq!(arm, Some(vec!["https://management.azure.com/".to_owned()]));
        let guid = check_scopes(
            "72f988bf-86f1-41af-91ab-2d7cd011db47/.default  api://x/.default",
            "t",
        )
        .ok();
        assert_eq!(
            guid,
            Some(vec![
                "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
                "api://x".to_owned()
            ])
        );
        assert!(
            matches!(check_scopes("https://storage.azure.com/user_impersonation", "t"), Err(e) if e.code == 1002012)
        );
        assert!(matches!(check_scopes("storage/.default", "t"), Err(e) if e.code == 500011));
        assert!(matches!(check_scopes("   ", "t"), Err(e) if e.code == 900144));
    }

    #[test]
    fn cae_detection() {
        let parse = |s: &str| match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        assert!(wants_cae(&parse(
            r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#
        )));
        assert!(!wants_cae(&parse(
            r#"{"access_token":{"nbf":{"essential":true}}}"#
        )));
        assert!(!wants_cae(&parse(
            r#"{"access_token":{"xms_cc":{"values":"CP1"}}}"#
        )));
    }
}
