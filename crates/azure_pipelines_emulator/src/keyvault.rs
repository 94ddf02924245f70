//! A minimal Key Vault secrets endpoint: `GET /secrets/{name}[/{version}]?api-version=...`.
//!
//! Enough of Key Vault to prove that a real `SecretClient` authenticates with the credential: a
//! request without an acceptable bearer token gets the 401 challenge Key Vault sends
//! (`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//! resource="https://vault.azure.net"`), and one with an access token the emulator issued for
//! `https://vault.azure.net` in the vault's tenant gets the secret set with
//! [`Control::set_secret`](crate::Control::set_secret).

use hyper::Method;
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderName};
use serde_json::{Map, Value, json};

use crate::state::Shared;
use crate::wire::{Resp, json_response, set_header};

/// The resource (audience) of Key Vault access tokens in the public cloud.
const RESOURCE: &str = "https://vault.azure.net";
/// Key Vault's application ID, which v1 tokens may carry as audience instead of the URI.
const APP_ID: &str = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093";

/// Answers one request for secret `name` (at `version`, if given).
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    name: &str,
    version: Option<&str>,
) -> Resp {
    if let Err(message) = authenticate(shared, headers) {
        shared.control.record_key_vault_request(true);
        return challenge(shared, &message);
    }
    shared.control.record_key_vault_request(false);
    if method != Method::GET {
        return error(
            405,
            "BadParameter",
            &format!(
                "The emulator's Key Vault serves only GET /secrets/{{name}}; {method} is not supported."
            ),
        );
    }
    let has_api_version = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "api-version" && !v.is_empty())
    });
    if !has_api_version {
        return error(
            400,
            "BadParameter",
            "The request URI contains an invalid or missing api-version.",
        );
    }
    let found = shared
        .control
        .secret(name)
        .map(|(name, value)| (version_of(&name, &value), name, value))
        .filter(|(current, _, _)| version.is_none_or(|v| v.eq_ignore_ascii_case(current)));
    let Some((current, name, value)) = found else {
        return error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        );
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map_or_else(
        || shared.https_base.trim_start_matches("https://").to_owned(),
        str::to_owned,
    );
    let now = shared.control.now_unix();
    let body = json!({
        "value": value,
        "id": format!("https://{host}/secrets/{name}/{current}"),
        "attributes": {
            "enabled": true,
            "created": now,
            "updated": now,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {},
    });
    json_response(200, body.to_string())
}

/// Checks the bearer token the way Key Vault does: signed by the (emulated) Entra ID, for Key
/// Vault, from the vault's tenant, within its lifetime. The error is Key Vault's message.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), String> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "AKV10000: Request is missing a Bearer or PoP token.".to_owned())?;
    let claims = shared.keys.verify(token).map_err(
        |_| "AKV10000: Invalid token: it is malformed or its signature does not verify.",
    )?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let audience = text("aud");
    if ![RESOURCE, "https://vault.azure.net/", APP_ID].contains(&audience) {
        return Err(format!(
            "AKV10022: Invalid audience. Expected {RESOURCE}, found: {audience}."
        ));
    }
    let tenant = &shared.config.tenant_id;
    let issuer = text("iss");
    let accepted = [
        format!("https://sts.windows.net/{tenant}/"),
        format!("https://login.microsoftonline.com/{tenant}/v2.0"),
    ];
    if !accepted.iter().any(|a| a.eq_ignore_ascii_case(issuer)) {
        return Err(format!(
            "AKV10032: Invalid issuer. Expected one of {}, found {issuer}.",
            accepted.join(", ")
        ));
    }
    let now = shared.control.now_unix();
    let seconds = |name: &str| claims.get(name).and_then(Value::as_i64);
    match (seconds("nbf"), seconds("exp")) {
        (_, None) => Err("AKV10000: Invalid token: it has no expiry (exp).".to_owned()),
        (_, Some(exp)) if now >= exp => Err(format!(
            "AKV10000: Invalid token: it expired at {exp} (now {now})."
        )),
        (Some(nbf), _) if now < nbf => Err(format!(
            "AKV10000: Invalid token: it is not valid before {nbf} (now {now})."
        )),
        _ => Ok(()),
    }
}

/// Key Vault's 401: the challenge tells the client which resource to ask a token for.
fn challenge(shared: &Shared, message: &str) -> Resp {
    let mut resp = error(401, "Unauthorized", message);
    set_header(
        &mut resp,
        HeaderName::from_static("www-authenticate"),
        &format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{RESOURCE}\"",
            shared.config.tenant_id
        ),
    );
    resp
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    let mut inner = Map::new();
    inner.insert("code".into(), code.into());
    inner.insert("message".into(), message.into());
    json_response(status, json!({ "error": inner }).to_string())
}

/// A stable 32-hex-digit version for a secret's current value (FNV-1a over name and value), so
/// that a request for the current version by ID finds it.
fn version_of(name: &str, value: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in name.bytes().chain([0]).chain(value.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stable_and_distinct() {
        assert_eq!(version_of("a", "b"), version_of("a", "b"));
        assert_ne!(version_of("a", "b"), version_of("a", "c"));
        assert_ne!(version_of("ab", ""), version_of("a", "b"));
        assert_eq!(version_of("a", "b").len(), 32);
    }
}
