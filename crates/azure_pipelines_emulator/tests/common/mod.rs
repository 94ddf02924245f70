//! What the emulator's tests share: reqwest clients and the requests a correct client sends.
// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::time::Duration;

use azure_pipelines_emulator::{Counters, Emulator};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const STORAGE: &str = "https://storage.azure.com/.default";

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(error, first error code)` of an Entra error body.
    pub fn aadsts(&self) -> (String, u64) {
        let j = self.json();
        let error = j["error"].as_str().unwrap_or_default().to_owned();
        let code = j["error_codes"][0].as_u64().unwrap_or_default();
        let description = j["error_description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        for part in ["\r\nTrace ID: ", "\r\nCorrelation ID: ", "\r\nTimestamp: "] {
            assert!(description.contains(part), "{description}");
        }
        assert_eq!(j["trace_id"].as_str(), self.header("x-ms-request-id"));
        (error, code)
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// A client built from `ca_pem()` alone, as a user of the emulator would.
pub fn https_client(em: &Emulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(em.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", em.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client builds")
}

/// `base` with `query` appended, encoded.
pub fn with_query(base: &str, query: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(base).expect("URL parses");
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url.to_string()
}

pub fn oidc_url(em: &Emulator, tls: bool, query: &[(&str, &str)]) -> String {
    with_query(&em.oidc_request_uri(tls), query)
}

/// The request a correct client sends.
pub fn oidc_request(em: &Emulator, client: &reqwest::Client, tls: bool) -> reqwest::RequestBuilder {
    oidc_request_with(em, client, tls, &em.config().system_access_token)
}

/// The request a correct client sends, with `token` as the bearer.
pub fn oidc_request_with(
    em: &Emulator,
    client: &reqwest::Client,
    tls: bool,
    token: &str,
) -> reqwest::RequestBuilder {
    let id = em.config().service_connection_id.clone();
    client
        .post(oidc_url(
            em,
            tls,
            &[("api-version", "7.1"), ("serviceConnectionId", &id)],
        ))
        .bearer_auth(token)
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .header("Content-Type", "application/json")
        .header("Content-Length", "0")
}

pub fn token_form(em: &Emulator, assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_assertion", assertion.to_owned()),
        ("client_assertion_type", JWT_BEARER.to_owned()),
        ("client_id", em.config().client_id.clone()),
        ("grant_type", "client_credentials".to_owned()),
        ("scope", STORAGE.to_owned()),
    ]
}

pub fn set(form: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<&str>) {
    form.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        form.push((key, v.to_owned()));
    }
}

pub async fn post_token(
    em: &Emulator,
    client: &reqwest::Client,
    tls: bool,
    tenant: &str,
    form: &[(&str, String)],
) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    send(
        client
            .post(em.token_endpoint(tls, tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT has three parts");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Waits (bounded) until the counters satisfy `done`, so that a "has not
/// answered yet" check cannot pass merely because the request was slow to get
/// to the emulator.
pub async fn arrived(em: &Emulator, done: impl Fn(&Counters) -> bool) {
    for _ in 0..2000 {
        if done(&em.control().counters()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the request never reached the emulator: {:?}",
        em.control().counters()
    );
}

/// A client for the plain-http listener.
pub fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        // Skips loading the system's roots, which is slow and useless here.
        .tls_certs_only([])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client builds")
}

/// Polls (bounded) until nothing accepts connections on `addr`. Not a single
/// check: a child process that another test forks at that moment holds a copy
/// of the listening socket until it execs.
pub async fn refused(addr: std::net::SocketAddr) -> bool {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
