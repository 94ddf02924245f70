//! The Azure DevOps OIDC endpoint (`POST .../oidctoken`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::Method;
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, HeaderName, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::http::request::Parts;

use crate::state::Shared;
use crate::util;
use crate::wire::{Resp, json_response, query_value, set_header, text_response, vss_error_json};

/// What Azure DevOps serves instead of a 401 when the caller's token is not
/// accepted and `X-TFS-FedAuthRedirect: Suppress` is missing.
pub(crate) const SIGN_IN_PAGE: &str = "<!DOCTYPE html>\r\n<html lang=\"en-US\">\r\n<head>\r\n<meta charset=\"utf-8\" />\r\n<title>Azure DevOps Services | Sign In</title>\r\n</head>\r\n<body>\r\n<div id=\"signin\">\r\n<h1>Sign in to Azure DevOps</h1>\r\n<p>You need to sign in to access this resource.</p>\r\n<a href=\"https://app.vssps.visualstudio.com/_signin?realm=dev.azure.com&amp;reply_to=https%3A%2F%2Fdev.azure.com%2F\">Sign in</a>\r\n</div>\r\n</body>\r\n</html>\r\n";

/// The body of an injected [`Fault::Status`](crate::Fault::Status).
pub(crate) fn status_fault_body(status: u16) -> String {
    let activity = util::guid();
    match status {
        429 => vss_error_json(
            "RequestBlockedException",
            &format!(
                "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource 'ATCPU' in namespace 'User'. Activity Id: {activity}."
            ),
        ),
        500..=599 => vss_error_json(
            "VssServiceException",
            &format!("TF400898: An Internal Error Occurred. Activity Id: {activity}."),
        ),
        _ => vss_error_json(
            "VssServiceException",
            &format!("The request failed with status {status}. Activity Id: {activity}."),
        ),
    }
}

/// Headers the Azure DevOps front end puts on every response.
pub(crate) fn add_vss_headers(resp: &mut Resp) {
    let e2eid = util::guid();
    let now = time::OffsetDateTime::now_utc();
    let edge_ref = format!(
        "Ref A: {} Ref B: EMU01EDGE0000 Ref C: {}",
        util::random_hex_upper::<16>(),
        util::rfc3339_seconds(now)
    );
    set_header(resp, HeaderName::from_static("x-vss-e2eid"), &e2eid);
    set_header(resp, HeaderName::from_static("x-msedge-ref"), &edge_ref);
    set_header(resp, HeaderName::from_static("activityid"), &util::guid());
    set_header(
        resp,
        HeaderName::from_static("x-tfs-processid"),
        &util::guid(),
    );
    set_header(
        resp,
        HeaderName::from_static("x-content-type-options"),
        "nosniff",
    );
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn authorized(shared: &Shared, parts: &Parts) -> bool {
    let Some((scheme, credential)) =
        header(parts, AUTHORIZATION.as_str()).and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let expected = shared.config.system_access_token.as_bytes();
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        util::ct_eq(credential.as_bytes(), expected)
    } else if scheme.eq_ignore_ascii_case("basic") {
        // Azure DevOps also takes the job token as the password of basic auth.
        STANDARD
            .decode(credential)
            .ok()
            .and_then(|d| {
                d.iter()
                    .position(|&b| b == b':')
                    .map(|i| d[i + 1..].to_vec())
            })
            .is_some_and(|password| util::ct_eq(&password, expected))
    } else {
        false
    }
}

fn sign_in_page() -> Resp {
    text_response(203, "text/html; charset=utf-8", SIGN_IN_PAGE)
}

pub(crate) fn handle(shared: &Shared, parts: &Parts) -> Resp {
    if parts.method != Method::POST {
        let mut resp = json_response(
            405,
            serde_json::json!({
                "message": format!(
                    "The requested resource does not support http method '{}'.",
                    parts.method
                )
            })
            .to_string(),
        );
        set_header(&mut resp, ALLOW, "POST");
        return resp;
    }
    // IIS in front of Azure DevOps refuses a POST without a length; reqwest
    // (hence azure_core) sends none for an empty body unless told to.
    if !parts.headers.contains_key(CONTENT_LENGTH) && !parts.headers.contains_key(TRANSFER_ENCODING)
    {
        return text_response(
            411,
            "text/html; charset=us-ascii",
            "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n<HTML><HEAD><TITLE>Length Required</TITLE>\r\n<META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n<BODY><h2>Length Required</h2>\r\n<hr><p>HTTP Error 411. The request must be chunked or have a content length.</p>\r\n</BODY></HTML>\r\n",
        );
    }
    let strict = shared.config.strict_client_checks;
    let suppress = header(parts, "x-tfs-fedauthredirect")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("suppress"));
    if strict && !suppress {
        return sign_in_page();
    }
    if !authorized(shared, parts) {
        if !suppress {
            return sign_in_page();
        }
        let mut resp = json_response(
            401,
            vss_error_json(
                "UnauthorizedRequestException",
                "TF400813: Resource not available for anonymous access. Client authentication required.",
            ),
        );
        set_header(
            &mut resp,
            WWW_AUTHENTICATE,
            "Bearer authorization_uri=https://login.microsoftonline.com/common",
        );
        set_header(
            &mut resp,
            WWW_AUTHENTICATE,
            "Basic realm=\"https://tfsprodcus3.visualstudio.com/\"",
        );
        set_header(&mut resp, WWW_AUTHENTICATE, "TFS-Federated");
        return resp;
    }
    match query_value(parts.uri.query(), "api-version") {
        None => {
            return json_response(
                400,
                vss_error_json(
                    "VssVersionNotSpecifiedException",
                    "No api-version was supplied for the \"POST\" request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0').",
                ),
            );
        }
        Some(v) if v == "7.1" => {}
        Some(v) => {
            return json_response(
                400,
                vss_error_json(
                    "VssVersionOutOfRangeException",
                    &format!(
                        "The requested REST API version of {v} is not supported for this resource. The supported REST API version for this resource is 7.1."
                    ),
                ),
            );
        }
    }
    let connection = match query_value(parts.uri.query(), "serviceConnectionId") {
        Some(c) if !c.is_empty() => c,
        _ => {
            return json_response(
                400,
                vss_error_json(
                    "ArgumentNullException",
                    "Value cannot be null.\r\nParameter name: serviceConnectionId",
                ),
            );
        }
    };
    if !connection.eq_ignore_ascii_case(&shared.config.service_connection_id) {
        return json_response(
            400,
            vss_error_json(
                "ServiceEndpointNotFoundException",
                &format!("No service connection found with identifier {connection}."),
            ),
        );
    }
    let token = match shared.keys.sign(&shared.default_oidc_claims()) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "emulator failed to sign an OIDC token");
            return json_response(
                500,
                vss_error_json(
                    "VssServiceException",
                    "TF400898: An Internal Error Occurred.",
                ),
            );
        }
    };
    shared.control.record_oidc_token_issued();
    json_response(200, serde_json::json!({ "oidcToken": token }).to_string())
}
