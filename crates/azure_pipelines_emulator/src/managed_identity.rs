//! The Azure App Service managed identity endpoint (`GET /msi/token`), as azure_identity's
//! `ManagedIdentityCredential` calls it when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set:
//! `?api-version=2019-08-01&resource=...`, the secret in `X-IDENTITY-HEADER`, a user-assigned
//! identity by `client_id`, `object_id` (or its alias `principal_id`) or `mi_res_id`.
//!
//! The managed identity is the service connection's application: the client ID of
//! [`EmulatorConfig::client_id`](crate::EmulatorConfig::client_id) and the object ID of
//! [`Emulator::object_id`](crate::Emulator::object_id), in the configured tenant. A request that
//! names no identity gets it as the system-assigned identity; one that names it by its client or
//! object ID gets it too.

use hyper::Method;
use hyper::header::{ALLOW, HeaderMap};
use serde_json::json;

use crate::entra;
use crate::state::Shared;
use crate::util;
use crate::wire::{Resp, json_response, managed_identity_error_json, query_value, set_header};

/// The API version of `IDENTITY_ENDPOINT` (older ones use other variables and headers).
const API_VERSION: &str = "2019-08-01";
/// Where the secret of `IDENTITY_HEADER` goes.
const SECRET_HEADER: &str = "x-identity-header";
/// What App Service answers when it has no identity for the request.
const NO_IDENTITY: &str = "Unable to load the proper Managed Identity.";

fn error(status: u16, message: &str) -> Resp {
    json_response(status, managed_identity_error_json(status, message))
}

/// The body of an injected [`Fault::Status`](crate::Fault::Status).
pub(crate) fn status_fault_body(status: u16) -> String {
    let message = match status {
        429 => "Too many requests. Retry later.".to_owned(),
        500..=599 => "An unexpected error occurred while fetching the token.".to_owned(),
        _ => format!("The request failed with status {status}."),
    };
    managed_identity_error_json(status, &message)
}

/// Answers one token request.
pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Resp {
    if method != Method::GET {
        let mut resp = error(405, &format!("The {method} method is not supported."));
        set_header(&mut resp, ALLOW, "GET");
        return resp;
    }
    let secret = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !util::ct_eq(secret, shared.config.managed_identity_header.as_bytes()) {
        return error(
            401,
            "The X-IDENTITY-HEADER header is missing or does not hold the value of IDENTITY_HEADER.",
        );
    }
    match query_value(query, "api-version") {
        Some(v) if v == API_VERSION => {}
        Some(v) => {
            return error(
                400,
                &format!("The api-version '{v}' is not supported. Use '{API_VERSION}'."),
            );
        }
        None => return error(400, "The api-version parameter is required."),
    }
    let Some(resource) = query_value(query, "resource").filter(|r| !r.is_empty()) else {
        return error(400, "The resource parameter is required.");
    };
    let named: Vec<(&str, String)> = ["client_id", "object_id", "principal_id", "mi_res_id"]
        .into_iter()
        .filter_map(|k| query_value(query, k).map(|v| (k, v)))
        .collect();
    let ours = match named.as_slice() {
        [] => true,
        [("client_id", id)] => id.eq_ignore_ascii_case(&shared.config.client_id),
        [("object_id" | "principal_id", id)] => id.eq_ignore_ascii_case(&shared.ids.object_id),
        [_] => false,
        _ => {
            return error(
                400,
                "Only one of client_id, object_id, principal_id and mi_res_id may be given.",
            );
        }
    };
    if !ours {
        return error(400, NO_IDENTITY);
    }

    let (token, expires_on) =
        match entra::mint_access_token(shared, &shared.config.tenant_id, &resource, None) {
            Ok(minted) => minted,
            Err(e) => {
                tracing::error!(error = %e, "emulator failed to sign a managed identity token");
                return error(
                    500,
                    "An unexpected error occurred while fetching the token.",
                );
            }
        };
    shared.control.record_managed_identity_token_issued();
    // `expires_on` is a string of Unix seconds, as App Service sends it.
    let body = json!({
        "access_token": token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": shared.config.client_id,
    });
    json_response(200, body.to_string())
}
