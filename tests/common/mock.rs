//! One httpmock server on loopback playing both the Azure DevOps OIDC endpoint and the Microsoft
//! Entra ID token endpoint, and the credential pointed at it.
//!
//! Credentials are built without retries (unless a test asks for them), so request counts are
//! exact; tests assert them with `calls_async`, never timings.

use super::{CLIENT_ID, CONNECTION_ID, SYSTEM_TOKEN, TENANT};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
use httpmock::{HttpMockRequest, Method::POST, Mock, MockServer};
use serde_json::{Value, json};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

pub const OIDC_PATH: &str = "/org/proj/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The diagnostic headers Azure DevOps sends, which errors quote.
pub const E2EID: &str = "9f1c7a52-e2e0-4c4b-9b1e-6d0c1a2b3c4d";
pub const MSEDGE: &str = "Ref A: 5C1D2E3F4A5B Ref B: AMS231000109023 Ref C: 2026-01-01T00:00:00Z";
/// The request ID Entra sends.
pub const REQUEST_ID: &str = "0a1b2c3d-0000-4000-8000-000000000001";

/// `/{tenant}/oauth2/v2.0/token`.
pub fn token_path(tenant: &str) -> String {
    format!("/{tenant}/oauth2/v2.0/token")
}

pub fn no_retry() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

/// Retries after 1 ms, up to `max_retries` times.
pub fn quick_retry(max_retries: u32) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(1),
            max_retries,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A matcher that accepts the first `n` requests to `path` and then no more (httpmock serves
/// the first created mock that matches, so a later mock takes over afterwards).
pub fn first_n(
    path: String,
    n: usize,
) -> impl Fn(&HttpMockRequest) -> bool + Send + Sync + 'static {
    let seen = AtomicUsize::new(0);
    move |req| req.uri().path() == path && seen.fetch_add(1, Ordering::SeqCst) < n
}

/// The `claims` form field of a token request, parsed as JSON.
pub fn claims_of(req: &HttpMockRequest) -> Option<Value> {
    url::form_urlencoded::parse(req.body_ref())
        .find(|(k, _)| k == "claims")
        .and_then(|(_, v)| serde_json::from_str(&v).ok())
}

/// A successful token response: a one-hour token.
pub fn access_token_body(access_token: &str) -> Value {
    json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access_token,
    })
}

/// An Entra error response, as Entra words it.
pub fn entra_error(code: i64, error: &str, description: &str) -> Value {
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: 11111111-2222-3333-4444-555555555555\r\nCorrelation ID: 66666666-7777-8888-9999-000000000000\r\nTimestamp: 2026-01-01 00:00:00Z"
        ),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "11111111-2222-3333-4444-555555555555",
        "correlation_id": "66666666-7777-8888-9999-000000000000",
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
}

/// An Azure DevOps (VSS) error body.
pub fn vss_error(type_key: &str, message: &str) -> String {
    json!({
        "$id": "1",
        "innerException": null,
        "message": message,
        "typeName": format!("Microsoft.TeamFoundation.DistributedTask.WebApi.{type_key}, Microsoft.TeamFoundation.DistributedTask.WebApi"),
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000
    })
    .to_string()
}

pub struct Fixture {
    pub server: MockServer,
}

impl Fixture {
    pub async fn new() -> Self {
        Self {
            server: MockServer::start_async().await,
        }
    }

    /// The mock as authority host and OIDC endpoint, no retries.
    pub fn options(&self) -> AzurePipelinesCredentialOptions {
        AzurePipelinesCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: no_retry(),
            },
            authority_host: Some(self.server.base_url()),
            oidc_request_uri: Some(self.server.url(OIDC_PATH)),
            ..Default::default()
        }
    }

    pub fn credential(&self) -> Arc<AzurePipelinesCredential> {
        self.credential_with(|_| {})
    }

    pub fn credential_with(
        &self,
        customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
    ) -> Arc<AzurePipelinesCredential> {
        self.try_credential(CONNECTION_ID, customize).unwrap()
    }

    pub fn try_credential(
        &self,
        connection_id: &str,
        customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
    ) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
        let mut options = self.options();
        customize(&mut options);
        AzurePipelinesCredential::new(
            TENANT.to_owned(),
            CLIENT_ID.to_owned(),
            connection_id,
            SYSTEM_TOKEN,
            Some(options),
        )
    }

    /// The OIDC endpoint answering `{"oidcToken": token}`.
    pub async fn oidc_ok(&self, token: &str) -> Mock<'_> {
        let body = json!({ "oidcToken": token }).to_string();
        self.oidc_respond(200, "application/json; charset=utf-8", &body)
            .await
    }

    /// The OIDC endpoint answering `status` with `body` and the diagnostic headers.
    pub async fn oidc_respond(&self, status: u16, content_type: &str, body: &str) -> Mock<'_> {
        self.server
            .mock_async(|when, then| {
                when.method(POST).path(OIDC_PATH);
                then.status(status)
                    .header("content-type", content_type)
                    .header("x-vss-e2eid", E2EID)
                    .header("x-msedge-ref", MSEDGE)
                    .body(body);
            })
            .await
    }

    /// The token endpoint of `tenant` answering `body` with 200.
    pub async fn token_json(&self, tenant: &str, body: Value) -> Mock<'_> {
        self.token_respond(tenant, 200, body).await
    }

    pub async fn token_ok(&self, tenant: &str, access_token: &str) -> Mock<'_> {
        self.token_json(tenant, access_token_body(access_token))
            .await
    }

    pub async fn token_respond(&self, tenant: &str, status: u16, body: Value) -> Mock<'_> {
        self.server
            .mock_async(|when, then| {
                when.method(POST).path(token_path(tenant));
                then.status(status)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("x-ms-request-id", REQUEST_ID)
                    .json_body(body);
            })
            .await
    }

    /// The token endpoint of the credential's tenant answering `body` with 200 to requests for
    /// `scope`.
    pub async fn token_for_scope(&self, scope: &str, body: Value) -> Mock<'_> {
        self.server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(token_path(TENANT))
                    .form_urlencoded_tuple("scope", scope);
                then.status(200).json_body(body);
            })
            .await
    }
}
