//! What the endpoints and the faults share about HTTP: building responses, reading forms, and
//! the error bodies of Azure DevOps and Entra ID.

use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::body::Body;
use crate::util;

/// A response of the emulator.
pub(crate) type Resp = Response<Body>;

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Appends a header; a value that is not a valid header value is left out.
pub(crate) fn set_header(resp: &mut Resp, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut().append(name, value);
    }
}

/// A response with `body` as `content_type`. An invalid content type is replaced by
/// `application/octet-stream`.
pub(crate) fn response(status: u16, content_type: &str, body: Body) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status_code(status);
    let value = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(CONTENT_TYPE, value);
    resp
}

pub(crate) fn text_response(status: u16, content_type: &str, body: impl Into<String>) -> Resp {
    response(status, content_type, Body::full(body.into()))
}

pub(crate) fn json_response(status: u16, body: String) -> Resp {
    text_response(status, "application/json; charset=utf-8", body)
}

/// Whether the request's body is `application/x-www-form-urlencoded`.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first non-empty value of `key`; Entra treats an empty value as missing.
pub(crate) fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The value of query parameter `key` (compared without case, as ASP.NET does).
pub(crate) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

/// The `{"$id":"1",...}` error body of Azure DevOps REST APIs.
pub(crate) fn vss_error_json(type_key: &str, message: &str) -> String {
    json!({
        "$id": "1",
        "innerException": null,
        "message": message,
        "typeName": vss_type_name(type_key),
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000,
    })
    .to_string()
}

fn vss_type_name(type_key: &str) -> String {
    let (namespace, assembly) = match type_key {
        "ServiceEndpointNotFoundException"
        | "TaskOrchestrationPlanNotFoundException"
        | "InvalidServiceConnectionReferenceException" => (
            "Microsoft.TeamFoundation.DistributedTask.WebApi",
            "Microsoft.TeamFoundation.DistributedTask.WebApi",
        ),
        "UnauthorizedRequestException" | "RequestBlockedException" => (
            "Microsoft.TeamFoundation.Framework.Server",
            "Microsoft.TeamFoundation.Framework.Server",
        ),
        "ArgumentNullException" | "ArgumentException" => ("System", "mscorlib"),
        _ => (
            "Microsoft.VisualStudio.Services.WebApi",
            "Microsoft.VisualStudio.Services.WebApi",
        ),
    };
    format!("{namespace}.{type_key}, {assembly}")
}

/// The trace and correlation IDs of one token request; they appear both in the
/// error body and in the response headers, as with the real service.
pub(crate) struct RequestIds {
    pub(crate) trace_id: String,
    pub(crate) correlation_id: String,
    pub(crate) echo_client_request_id: bool,
}

impl RequestIds {
    /// Entra uses the caller's `client-request-id` as the correlation ID when
    /// it is a GUID.
    pub(crate) fn new(client_request_id: Option<&str>) -> RequestIds {
        match client_request_id.filter(|c| util::is_guid(c)) {
            Some(c) => RequestIds {
                trace_id: util::guid(),
                correlation_id: c.to_owned(),
                echo_client_request_id: true,
            },
            None => RequestIds {
                trace_id: util::guid(),
                correlation_id: util::guid(),
                echo_client_request_id: false,
            },
        }
    }
}

/// The JSON body of an Entra error.
pub(crate) fn entra_error_json(
    ids: &RequestIds,
    now: OffsetDateTime,
    error: &str,
    code: u32,
    description: &str,
) -> String {
    let timestamp = util::entra_timestamp(now);
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {timestamp}",
            ids.trace_id, ids.correlation_id
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": ids.trace_id,
        "correlation_id": ids.correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
    .to_string()
}

/// The JSON body of an App Service managed identity error.
pub(crate) fn managed_identity_error_json(status: u16, message: &str) -> String {
    json!({
        "statusCode": status,
        "message": message,
        "correlationId": util::guid(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let vss: serde_json::Value =
            serde_json::from_str(&vss_error_json("ServiceEndpointNotFoundException", "gone"))
                .unwrap_or_default();
        assert_eq!(
            vss["typeName"],
            "Microsoft.TeamFoundation.DistributedTask.WebApi.ServiceEndpointNotFoundException, Microsoft.TeamFoundation.DistributedTask.WebApi"
        );
        let ids = RequestIds::new(Some("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(ids.echo_client_request_id);
        assert!(!RequestIds::new(Some("not-a-guid")).echo_client_request_id);
        let entra: serde_json::Value = serde_json::from_str(&entra_error_json(
            &ids,
            OffsetDateTime::UNIX_EPOCH,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        ))
        .unwrap_or_default();
        assert_eq!(entra["correlation_id"], ids.correlation_id);
        assert_eq!(entra["error_codes"][0], 7000215);
    }

    #[test]
    fn forms_and_queries() {
        let form = parse_form(b"a=1&b=&a=2&c=x%20y");
        assert_eq!(form_value(&form, "a"), Some("1"));
        assert_eq!(form_value(&form, "b"), None);
        assert_eq!(form_value(&form, "c"), Some("x y"));
        assert_eq!(
            query_value(Some("Api-Version=7.1"), "api-version").as_deref(),
            Some("7.1")
        );
        assert_eq!(query_value(None, "api-version"), None);
    }
}
