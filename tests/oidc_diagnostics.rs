//! What each failure of the Azure DevOps OIDC endpoint means, said in the error: the cause and
//! its fix, the status and Azure DevOps' diagnostic headers, never the System.AccessToken, and
//! no token request.

mod common;

use azure_core::{credentials::TokenCredential, error::Error, http::StatusCode};
use common::{
    CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT,
    errors::{assert_contains, assert_failure, chain_text, failure, http_status},
    mock::{E2EID, Fixture, MSEDGE, OIDC_PATH, vss_error},
};
use httpmock::Method::POST;

/// Runs one request against an OIDC endpoint answering `status`/`body` and checks what every
/// OIDC failure shares: the wording, the status, the diagnostic headers, no token request.
async fn oidc_failure(
    connection_id: &str,
    status: u16,
    content_type: &str,
    body: &str,
    extra_headers: &[(&str, String)],
) -> (String, Error) {
    let f = Fixture::new().await;
    let oidc = f
        .server
        .mock_async(|when, then| {
            when.method(POST).path(OIDC_PATH);
            let mut then = then
                .status(status)
                .header("content-type", content_type)
                .header("x-vss-e2eid", E2EID)
                .header("x-msedge-ref", MSEDGE)
                .body(body);
            for (name, value) in extra_headers {
                then = then.header(*name, value.clone());
            }
        })
        .await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.try_credential(connection_id, |_| {}).unwrap();

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();

    let text = failure(&error);
    assert_contains(
        &text,
        &[
            &format!("HTTP {status}"),
            &format!("x-vss-e2eid: {E2EID}"),
            &format!("x-msedge-ref: {MSEDGE}"),
        ],
    );
    assert!(!chain_text(&error).contains(SYSTEM_TOKEN), "{text}");
    if status != 200 {
        assert_eq!(
            http_status(&error),
            Some(StatusCode::from(status)),
            "{text}"
        );
    }
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 0);
    (text, error)
}

#[tokio::test]
async fn oidc_401_says_the_system_access_token_was_rejected() {
    let (text, _) = oidc_failure(CONNECTION_ID, 401, "text/plain", "", &[]).await;
    assert_contains(
        &text,
        &[
            "Azure DevOps rejected the System.AccessToken",
            "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            "HTTP 401 (x-vss-e2eid",
            "#systemaccesstoken-rejected-401",
        ],
    );
}

#[tokio::test]
async fn oidc_203_sign_in_page_is_explained() {
    let html = "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>";
    let (text, _) = oidc_failure(CONNECTION_ID, 203, "text/html", html, &[]).await;
    assert_contains(
        &text,
        &[
            "answered with a sign-in page",
            "System.AccessToken was not accepted",
        ],
    );
    assert!(!text.contains("<html>"), "{text}");
}

#[tokio::test]
async fn oidc_302_to_sign_in_is_explained_and_not_followed() {
    let f = Fixture::new().await;
    let sign_in = f
        .server
        .mock_async(|when, then| {
            when.path("/_signin");
            then.status(200).body("<html>sign in</html>");
        })
        .await;
    let location = f.server.url("/_signin?realm=dev.azure.com");
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        302,
        "text/html",
        "",
        &[("location", location)],
    )
    .await;
    assert_contains(&text, &["answered with a sign-in page"]);
    assert_eq!(sign_in.calls_async().await, 0);
}

#[tokio::test]
async fn oidc_200_with_an_html_body_is_explained() {
    let html = "\n  <html><body>Sign in to your account</body></html>";
    let (text, error) = oidc_failure(CONNECTION_ID, 200, "text/html", html, &[]).await;
    assert_contains(
        &text,
        &[
            "The OIDC endpoint answered with an HTML page instead of JSON",
            "HTTP 200 from the OIDC endpoint",
        ],
    );
    assert!(!text.contains("Sign in to your account"), "{text}");
    assert_eq!(http_status(&error), None);
}

#[tokio::test]
async fn oidc_400_vss_error_shows_message_and_type_key() {
    let body = vss_error(
        "ServiceEndpointNotFoundException",
        &format!("No service connection found with identifier {CONNECTION_ID}."),
    );
    let (text, _) = oidc_failure(CONNECTION_ID, 400, "application/json", &body, &[]).await;
    assert_contains(
        &text,
        &[
            "Azure DevOps refused the OIDC token request",
            &format!("\"No service connection found with identifier {CONNECTION_ID}.\""),
            "[ServiceEndpointNotFoundException]",
            "HTTP 400",
        ],
    );
    assert!(!text.contains("Hint:"), "a GUID gets no hint: {text}");
}

#[tokio::test]
async fn oidc_400_no_explicit_reference_explains_the_stage_rule() {
    let body = vss_error(
        "InvalidRequestException",
        "There is no explicit reference to service connection my-connection from the current stage.",
    );
    let (text, _) = oidc_failure(CONNECTION_ID, 400, "application/json", &body, &[]).await;
    assert_contains(
        &text,
        &[
            "the current stage does not reference the service connection",
            "no explicit reference to service connection my-connection",
            "Reference the connection in the stage or job",
        ],
    );
}

#[tokio::test]
async fn a_connection_id_that_is_not_a_guid_gets_a_hint() {
    let (text, _) = oidc_failure(
        "my-connection",
        400,
        "application/json",
        r#"{"message":"No service connection found with identifier my-connection.","typeKey":"ServiceEndpointNotFoundException"}"#,
        &[],
    )
    .await;
    assert_contains(
        &text,
        &[
            "Hint: the service connection ID 'my-connection' is not a GUID",
            "not its name",
        ],
    );
}

#[tokio::test]
async fn oidc_404_says_the_uri_is_wrong() {
    let (text, _) = oidc_failure(CONNECTION_ID, 404, "text/plain", "Not Found", &[]).await;
    assert_contains(
        &text,
        &[
            "The OIDC endpoint was not found (404)",
            "SYSTEM_OIDCREQUESTURI must be the value the agent set",
        ],
    );
}

#[tokio::test]
async fn oidc_500_names_the_status() {
    let (text, _) = oidc_failure(CONNECTION_ID, 500, "text/plain", "oops", &[]).await;
    assert_contains(
        &text,
        &["The OIDC endpoint answered HTTP 500 Internal Server Error"],
    );
}

#[tokio::test]
async fn oidc_200_without_oidc_token() {
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        200,
        "application/json",
        r#"{"token":"x"}"#,
        &[],
    )
    .await;
    assert_contains(&text, &["The OIDC endpoint's response has no oidcToken"]);
}

#[tokio::test]
async fn oidc_200_with_malformed_json() {
    let (text, _) = oidc_failure(
        CONNECTION_ID,
        200,
        "application/json",
        r#"{"oidcToken":"#,
        &[],
    )
    .await;
    assert_contains(&text, &["The OIDC endpoint's response is not valid JSON"]);
}

#[tokio::test]
async fn oidc_200_with_a_token_outside_the_token_alphabet_is_refused() {
    let body = r#"{"oidcToken":"a.b\n##vso[task.setvariable variable=PATH]x"}"#;
    let (text, _) = oidc_failure(CONNECTION_ID, 200, "application/json", body, &[]).await;
    assert_contains(&text, &["outside a token's alphabet"]);
    assert!(!text.contains("##vso"), "{text}");
}

#[tokio::test]
async fn oversized_response_bodies_are_refused_unread() {
    let f = Fixture::new().await;
    let huge = format!("{{\"oidcToken\":\"{}\"}}", "A".repeat(1536 * 1024));
    let oidc = f.oidc_respond(200, "application/json", &huge).await;
    let token = f.token_ok(TENANT, "never").await;
    let credential = f.credential();
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert_failure(
        &error,
        &["The Azure DevOps OIDC endpoint sent a response body larger than 1048576 bytes"],
    );
    assert_eq!(oidc.calls_async().await, 1);
    assert_eq!(token.calls_async().await, 0);
}
