//! Behaviour of the emulator itself, over real HTTP and HTTPS.
#![cfg(feature = "emulator")]

use std::time::Duration;

use azure_pipelines_credential::emulator::{
    Counters, Emulator, EmulatorConfig, Endpoint, Fault, FaultTrigger, OIDC_AUDIENCE, decode_claims,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const STORAGE: &str = "https://storage.azure.com/.default";

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `(error, first error code)` of an Entra error body.
    fn aadsts(&self) -> (String, u64) {
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

async fn send(rb: reqwest::RequestBuilder) -> Reply {
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
fn https_client(em: &Emulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(em.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", em.https_addr())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client builds")
}

fn oidc_url(em: &Emulator, tls: bool, query: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&em.oidc_request_uri(tls)).expect("OIDC URI parses");
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url.to_string()
}

/// The request a correct client sends.
fn oidc_request(em: &Emulator, client: &reqwest::Client, tls: bool) -> reqwest::RequestBuilder {
    oidc_request_with(em, client, tls, &em.config().system_access_token)
}

/// The request a correct client sends, with `token` as the bearer.
fn oidc_request_with(
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

fn token_form(em: &Emulator, assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_assertion", assertion.to_owned()),
        ("client_assertion_type", JWT_BEARER.to_owned()),
        ("client_id", em.config().client_id.clone()),
        ("grant_type", "client_credentials".to_owned()),
        ("scope", STORAGE.to_owned()),
    ]
}

fn set(form: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<&str>) {
    form.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        form.push((key, v.to_owned()));
    }
}

async fn post_token(
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

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT has three parts");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Waits (bounded) until the counters satisfy `done`, so that a "has not
/// answered yet" check cannot pass merely because the request was slow to get
/// to the emulator.
async fn arrived(em: &Emulator, done: impl Fn(&Counters) -> bool) {
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
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        // Skips loading the system's roots, which is slow and useless here.
        .tls_certs_only([])
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn oidc_token_over_https() -> TestResult {
    let em = Emulator::start().await?;
    let reply = send(oidc_request(&em, &https_client(&em), true)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert!(reply.header("x-vss-e2eid").is_some());
    assert!(
        reply
            .header("x-msedge-ref")
            .is_some_and(|r| r.starts_with("Ref A: "))
    );

    let token = reply.json()["oidcToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], em.key_id());
    let claims = jwt_part(&token, 1);
    assert!(
        claims["iss"]
            .as_str()
            .is_some_and(|i| i.starts_with("https://vstoken.dev.azure.com/"))
    );
    assert_eq!(claims["iss"], em.oidc_issuer());
    assert_eq!(
        claims["iss"],
        format!("https://vstoken.dev.azure.com/{}", em.organization_id())
    );
    assert_eq!(claims["sub"], "sc://contoso/pipelines/my-azure-connection");
    assert_eq!(claims["sub"], em.oidc_subject());
    assert_eq!(claims["aud"], OIDC_AUDIENCE);
    let (iat, nbf, exp) = (
        claims["iat"].as_i64(),
        claims["nbf"].as_i64(),
        claims["exp"].as_i64(),
    );
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(600));
    assert_eq!(nbf, iat);
    assert!(claims["jti"].is_string());
    assert!(em.verify_token(&token).is_some());

    let c = em.control().counters();
    assert_eq!(
        (c.oidc_requests, c.oidc_tokens_issued, c.token_requests),
        (1, 1, 0)
    );
    Ok(())
}

#[tokio::test]
async fn oidc_request_uri_has_the_real_shape() -> TestResult {
    let em = Emulator::start().await?;
    for tls in [false, true] {
        let uri = url::Url::parse(&em.oidc_request_uri(tls))?;
        assert_eq!(uri.query(), None);
        let segments: Vec<&str> = uri.path_segments().map(|s| s.collect()).unwrap_or_default();
        assert_eq!(segments.len(), 11, "{uri}");
        assert_eq!(segments[0], "contoso");
        assert_eq!(
            &segments[2..7],
            ["_apis", "distributedtask", "hubs", "build", "plans"]
        );
        assert_eq!(segments[8], "jobs");
        assert_eq!(segments[10], "oidctoken");
        let base = em.authority_host(tls);
        assert!(!base.ends_with('/'));
        assert!(uri.as_str().starts_with(&base));
    }
    assert_eq!(em.http_url().scheme(), "http");
    assert_eq!(em.http_url().host_str(), Some("127.0.0.1"));
    assert_eq!(em.https_url().host_str(), Some("localhost"));
    assert_eq!(em.https_url().port(), Some(em.https_addr().port()));
    Ok(())
}

#[tokio::test]
async fn oidc_rejects_a_bad_bearer_with_401() -> TestResult {
    let em = Emulator::start().await?;
    let reply = send(oidc_request_with(&em, &plain(), false, "not-the-token")).await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|w| w.starts_with("Bearer"))
    );
    assert!(reply.header("x-vss-e2eid").is_some());
    assert_eq!(reply.json()["typeKey"], "UnauthorizedRequestException");

    // No Authorization header at all.
    let id = em.config().service_connection_id.clone();
    let reply = send(
        plain()
            .post(oidc_url(
                &em,
                false,
                &[("api-version", "7.1"), ("serviceConnectionId", &id)],
            ))
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(em.control().counters().oidc_tokens_issued, 0);
    assert_eq!(em.control().counters().oidc_requests, 2);
    Ok(())
}

#[tokio::test]
async fn oidc_answers_203_sign_in_page_without_the_suppress_header() -> TestResult {
    let em = Emulator::start().await?;
    let id = em.config().service_connection_id.clone();
    let url = oidc_url(
        &em,
        false,
        &[("api-version", "7.1"), ("serviceConnectionId", &id)],
    );
    let reply = send(
        plain()
            .post(&url)
            .bearer_auth("wrong")
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 203);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(reply.body.contains("<html"));
    assert!(reply.header("x-vss-e2eid").is_some());

    // Strict by default: even a valid token needs the header.
    let reply = send(
        plain()
            .post(&url)
            .bearer_auth(&em.config().system_access_token)
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 203);
    Ok(())
}

#[tokio::test]
async fn lenient_mode_behaves_like_azure_devops() -> TestResult {
    let em = Emulator::start_with(EmulatorConfig {
        strict_client_checks: false,
        ..Default::default()
    })
    .await?;
    let id = em.config().service_connection_id.clone();
    let url = oidc_url(
        &em,
        false,
        &[("api-version", "7.1"), ("serviceConnectionId", &id)],
    );
    let valid = send(
        plain()
            .post(&url)
            .bearer_auth(&em.config().system_access_token)
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(valid.status, 200, "{}", valid.body);
    let invalid = send(
        plain()
            .post(&url)
            .bearer_auth("wrong")
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(invalid.status, 203);
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!(":{}", em.config().system_access_token));
    let reply = send(
        plain()
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn oidc_requires_content_length() -> TestResult {
    let em = Emulator::start().await?;
    let url = url::Url::parse(&em.oidc_request_uri(false))?;
    let request = format!(
        "POST {}?api-version=7.1&serviceConnectionId={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nX-TFS-FedAuthRedirect: Suppress\r\nConnection: close\r\n\r\n",
        url.path(),
        em.config().service_connection_id,
        em.http_addr(),
        em.config().system_access_token
    );
    let mut stream = tokio::net::TcpStream::connect(em.http_addr()).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    assert!(response.starts_with("HTTP/1.1 411"), "{response}");
    Ok(())
}

#[tokio::test]
async fn oidc_unknown_service_connection_is_a_vss_400() -> TestResult {
    let em = Emulator::start().await?;
    let unknown = "00000000-1111-2222-3333-444444444444";
    let reply = send(
        plain()
            .post(oidc_url(
                &em,
                false,
                &[("api-version", "7.1"), ("serviceConnectionId", unknown)],
            ))
            .bearer_auth(&em.config().system_access_token)
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 400);
    let j = reply.json();
    assert_eq!(j["typeKey"], "ServiceEndpointNotFoundException");
    assert_eq!(j["$id"], "1");
    assert_eq!(j["eventId"], 3000);
    assert!(
        j["typeName"]
            .as_str()
            .is_some_and(|t| t.contains("DistributedTask"))
    );
    assert!(j["message"].as_str().is_some_and(|m| m.contains(unknown)));
    assert!(reply.header("x-vss-e2eid").is_some());

    // GUIDs compare case-insensitively.
    let upper = em.config().service_connection_id.to_uppercase();
    let reply = send(
        plain()
            .post(oidc_url(
                &em,
                false,
                &[("api-version", "7.1"), ("serviceConnectionId", &upper)],
            ))
            .bearer_auth(&em.config().system_access_token)
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("Content-Length", "0"),
    )
    .await;
    assert_eq!(reply.status, 200);
    Ok(())
}

#[tokio::test]
async fn oidc_checks_api_version_and_connection_parameter() -> TestResult {
    let em = Emulator::start().await?;
    let id = em.config().service_connection_id.clone();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("serviceConnectionId", &id)],
            "VssVersionNotSpecifiedException",
        ),
        (
            &[("api-version", "7.0"), ("serviceConnectionId", &id)],
            "VssVersionOutOfRangeException",
        ),
        (&[("api-version", "7.1")], "ArgumentNullException"),
    ];
    for (query, type_key) in cases {
        let reply = send(
            plain()
                .post(oidc_url(&em, false, query))
                .bearer_auth(&em.config().system_access_token)
                .header("X-TFS-FedAuthRedirect", "Suppress")
                .header("Content-Length", "0"),
        )
        .await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.json()["typeKey"], type_key, "{query:?}");
    }
    Ok(())
}

#[tokio::test]
async fn oidc_rejects_other_methods_and_paths() -> TestResult {
    let em = Emulator::start().await?;
    let reply = send(plain().get(em.oidc_request_uri(false))).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(em.control().counters().oidc_requests, 1);

    let other_job = em.oidc_request_uri(false).replace("/jobs/", "/jobs/0");
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 200);
    let reply = send(plain().post(other_job).header("Content-Length", "0")).await;
    assert_eq!(reply.status, 404);
    let reply = send(plain().get(format!("{}nothing/here", em.http_url()))).await;
    assert_eq!(reply.status, 404);
    Ok(())
}

#[tokio::test]
async fn token_exchange_over_https() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    let oidc = send(oidc_request(&em, &client, true)).await.json();
    let assertion = oidc["oidcToken"].as_str().unwrap_or_default().to_owned();
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &client, true, &tenant, &token_form(&em, &assertion)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store, no-cache"));
    let j = reply.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3599);
    assert_eq!(j["ext_expires_in"], 3599);
    assert!(j.get("refresh_in").is_none());
    let token = j["access_token"].as_str().unwrap_or_default();
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["appid"], em.config().client_id);
    assert_eq!(claims["oid"], em.object_id());
    assert_eq!(claims["sub"], em.object_id());
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(3599)
    );
    assert!(claims.get("xms_cc").is_none());
    assert!(em.verify_token(token).is_some());

    // Every token is a different string.
    let again = post_token(&em, &client, true, &tenant, &token_form(&em, &assertion)).await;
    assert_ne!(again.json()["access_token"], j["access_token"]);
    assert_eq!(em.control().counters().access_tokens_issued, 2);
    Ok(())
}

#[tokio::test]
async fn token_rejects_a_forged_assertion() -> TestResult {
    let em = Emulator::start().await?;
    let token = em.issue_oidc_token();
    let dot = token.rfind('.').unwrap_or(0);
    let mut signature = URL_SAFE_NO_PAD.decode(&token[dot + 1..])?;
    signature[7] ^= 0x55;
    let forged = format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(signature));
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &forged)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700027));

    // Signed by another emulator: a different issuer (organization) as well.
    let other = Emulator::start().await?;
    let foreign = other.issue_oidc_token();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &foreign)).await;
    assert_eq!(reply.aadsts().1, 700211);

    // Signed by another key but claiming this emulator's issuer.
    let impostor = other.issue_oidc_token_with(|c| c.iss = em.oidc_issuer());
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &impostor)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700027));

    // Unsigned ("alg": "none").
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&jwt_part(&token, 1))?);
    let unsigned = format!("{header}.{claims}.");
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &unsigned)).await;
    assert_eq!(reply.status, 401);

    for garbage in ["abc", "a.b.c", "....", "eyJhbGciOiJub25lIn0.eyJ9.x"] {
        let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, garbage)).await;
        assert_eq!(reply.status, 400, "{garbage}");
        assert_eq!(
            reply.aadsts(),
            ("invalid_request".to_owned(), 50027),
            "{garbage}"
        );
    }
    assert_eq!(em.control().counters().access_tokens_issued, 0);
    Ok(())
}

#[tokio::test]
async fn token_rejects_an_expired_assertion() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let expired = em.issue_oidc_token_with(|c| {
        c.iat -= 3600;
        c.nbf -= 3600;
        c.exp = c.iat + 600;
    });
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &expired)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700024));
    assert!(reply.json()["error_description"].as_str().is_some_and(|d| {
        d.contains("Client assertion is not within its valid time range. Current time: ")
    }));

    // Or: a fresh token from the endpoint, then the emulator's clock moves on.
    let fresh = send(oidc_request(&em, &plain(), false)).await.json();
    let fresh = fresh["oidcToken"].as_str().unwrap_or_default().to_owned();
    let ok = post_token(&em, &plain(), false, &tenant, &token_form(&em, &fresh)).await;
    assert_eq!(ok.status, 200);
    em.control().set_clock_skew(601);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &fresh)).await;
    assert_eq!(reply.aadsts().1, 700024);

    // Not yet valid counts as outside the time range too.
    em.control().set_clock_skew(0);
    let future = em.issue_oidc_token_with(|c| {
        c.nbf += 3600;
        c.exp += 3600;
    });
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &future)).await;
    assert_eq!(reply.aadsts().1, 700024);
    Ok(())
}

#[tokio::test]
async fn clock_skew_moves_issued_times() -> TestResult {
    let em = Emulator::start().await?;
    let real = jwt_part(&em.issue_oidc_token(), 1)["iat"]
        .as_i64()
        .unwrap_or_default();
    em.control().set_clock_skew(-7200);
    let skewed = send(oidc_request(&em, &plain(), false)).await.json();
    let claims = jwt_part(skewed["oidcToken"].as_str().unwrap_or_default(), 1);
    let iat = claims["iat"].as_i64().unwrap_or_default();
    assert!(
        iat <= real - 7200 + 5 && iat >= real - 7200 - 5,
        "{iat} vs {real}"
    );
    // Its own tokens stay valid on its own clock.
    let assertion = skewed["oidcToken"].as_str().unwrap_or_default();
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, assertion)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // `expires_in` is relative and unaffected by the skew.
    assert_eq!(reply.json()["expires_in"], 3599);
    Ok(())
}

#[tokio::test]
async fn token_reports_issuer_audience_and_subject_mismatches() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    type Tweak = fn(&mut azure_pipelines_credential::emulator::OidcClaims);
    let cases: [(Tweak, u64, &str); 3] = [
        (
            |c| c.iss = "https://vstoken.dev.azure.com/00000000-0000-0000-0000-000000000000".into(),
            700211,
            "issuer",
        ),
        (
            |c| c.aud = "api://AzureADTokenExchangeUSGov".into(),
            700212,
            "audience",
        ),
        (
            |c| c.sub = "sc://contoso/pipelines/another-connection".into(),
            700213,
            "subject",
        ),
    ];
    for (tweak, code, word) in cases {
        let assertion = em.issue_oidc_token_with(tweak);
        let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &assertion)).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.aadsts(), ("invalid_request".to_owned(), code));
        let description = reply.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            description.contains(&format!(
                "No matching federated identity record found for presented assertion {word} '"
            )),
            "{description}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn token_checks_tenant() -> TestResult {
    let extra = "11111111-2222-3333-4444-555555555555".to_owned();
    let em = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec![extra.clone()],
        ..Default::default()
    })
    .await?;
    let form = token_form(&em, &em.issue_oidc_token());

    let unknown = "99999999-9999-9999-9999-999999999999";
    let reply = post_token(&em, &plain(), false, unknown, &form).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("invalid_request".to_owned(), 90002));
    assert!(reply.body.contains(unknown));

    let reply = post_token(&em, &plain(), false, "not a tenant", &form).await;
    assert_eq!(reply.aadsts().1, 900023);

    let reply = post_token(&em, &plain(), false, &extra.to_uppercase(), &form).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(claims["tid"], extra);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{extra}/"));
    Ok(())
}

#[tokio::test]
async fn token_checks_client_id_grant_and_assertion_type() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let good = token_form(&em, &em.issue_oidc_token());

    let mut form = good.clone();
    set(
        &mut form,
        "client_id",
        Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("unauthorized_client".to_owned(), 700016));
    assert!(reply.body.contains("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"));

    let mut form = good.clone();
    set(&mut form, "grant_type", None);
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts(), ("invalid_request".to_owned(), 900144));
    assert!(reply.body.contains("'grant_type'"));

    let mut form = good.clone();
    set(&mut form, "grant_type", Some("password"));
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts(), ("unsupported_grant_type".to_owned(), 70003));

    let mut form = good.clone();
    set(
        &mut form,
        "client_assertion_type",
        Some("urn:something:else"),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts().1, 70002);

    let mut form = good.clone();
    set(&mut form, "client_assertion_type", None);
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts().1, 900144);

    let mut form = good.clone();
    set(&mut form, "client_assertion", None);
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 7000218));

    // Not form-encoded: Entra sees no parameters at all.
    let reply = send(
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(reply.aadsts().1, 900144);

    let reply = send(plain().get(em.token_endpoint(false, &tenant))).await;
    assert_eq!(reply.aadsts().1, 900561);
    Ok(())
}

#[tokio::test]
async fn token_checks_scope() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let good = token_form(&em, &em.issue_oidc_token());

    let mut form = good.clone();
    set(
        &mut form,
        "scope",
        Some("https://storage.azure.com/user_impersonation"),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("invalid_scope".to_owned(), 1002012));

    let mut form = good.clone();
    set(&mut form, "scope", None);
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts().1, 900144);

    let mut form = good.clone();
    set(&mut form, "scope", Some("storage/.default"));
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.aadsts().1, 500011);

    for (scope, aud) in [
        ("api://my-app/.default", "api://my-app"),
        (
            "https://management.azure.com//.default",
            "https://management.azure.com/",
        ),
        (
            "d4f0c4a2-6c1e-4a3b-9f6e-2b7d8c9e0f11/.default",
            "d4f0c4a2-6c1e-4a3b-9f6e-2b7d8c9e0f11",
        ),
    ] {
        let mut form = good.clone();
        set(&mut form, "scope", Some(scope));
        let reply = post_token(&em, &plain(), false, &tenant, &form).await;
        assert_eq!(reply.status, 200, "{scope}: {}", reply.body);
        let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
        assert_eq!(claims["aud"], aud);
    }
    Ok(())
}

#[tokio::test]
async fn token_checks_claims_and_supports_cae() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let good = token_form(&em, &em.issue_oidc_token());

    for bad in ["{not json", "[1,2]", "\"text\""] {
        let mut form = good.clone();
        set(&mut form, "claims", Some(bad));
        let reply = post_token(&em, &plain(), false, &tenant, &form).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.aadsts().0, "invalid_request");
    }

    let cae = json!({"access_token": {"xms_cc": {"values": ["CP1"]}}});
    let mut form = good.clone();
    set(&mut form, "claims", Some(&cae.to_string()));
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(claims["xms_cc"], json!(["CP1"]));
    assert_eq!(claims["xms_claims_requested"], cae);

    let challenge = json!({"access_token": {"nbf": {"essential": true, "value": "1700000000"}}});
    let mut form = good.clone();
    set(&mut form, "claims", Some(&challenge.to_string()));
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert!(claims.get("xms_cc").is_none());
    assert_eq!(claims["xms_claims_requested"], challenge);
    Ok(())
}

#[tokio::test]
async fn token_lifetime_knobs() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());

    em.control().set_refresh_in(Some(Duration::from_secs(1800)));
    em.control()
        .set_access_token_lifetime(Duration::from_secs(120));
    let j = post_token(&em, &plain(), false, &tenant, &form)
        .await
        .json();
    assert_eq!(j["refresh_in"], 1800);
    assert_eq!(j["expires_in"], 120);
    let claims = jwt_part(j["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(120)
    );

    em.control().set_refresh_in(None);
    em.control().set_expires_in_as_string(true);
    let j = post_token(&em, &plain(), false, &tenant, &form)
        .await
        .json();
    assert!(j.get("refresh_in").is_none());
    assert_eq!(j["expires_in"], "120");
    assert_eq!(j["ext_expires_in"], "120");

    em.control()
        .set_oidc_token_lifetime(Duration::from_secs(60));
    let oidc = send(oidc_request(&em, &plain(), false)).await.json();
    let claims = jwt_part(oidc["oidcToken"].as_str().unwrap_or_default(), 1);
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(60)
    );
    Ok(())
}

#[tokio::test]
async fn counters_per_endpoint_scope_and_tenant() -> TestResult {
    let extra = "11111111-2222-3333-4444-555555555555".to_owned();
    let em = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec![extra.clone()],
        ..Default::default()
    })
    .await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());
    let mut other_scope = form.clone();
    set(
        &mut other_scope,
        "scope",
        Some("https://vault.azure.net/.default"),
    );

    send(oidc_request(&em, &plain(), false)).await;
    send(oidc_request_with(&em, &plain(), false, "bad")).await;
    post_token(&em, &plain(), false, &tenant, &form).await;
    post_token(&em, &plain(), false, &tenant, &form).await;
    post_token(&em, &plain(), false, &extra, &other_scope).await;
    // Rejected requests count too.
    post_token(&em, &plain(), false, "unknown.example", &form).await;

    let c = em.control().counters();
    assert_eq!(c.oidc_requests, 2);
    assert_eq!(c.oidc_tokens_issued, 1);
    assert_eq!(c.token_requests, 4);
    assert_eq!(c.access_tokens_issued, 3);
    assert_eq!(c.by_scope.get(STORAGE), Some(&3));
    assert_eq!(c.by_scope.get("https://vault.azure.net/.default"), Some(&1));
    assert_eq!(c.by_tenant.get(&tenant), Some(&2));
    assert_eq!(c.by_tenant.get(&extra), Some(&1));
    assert_eq!(c.by_tenant.get("unknown.example"), Some(&1));

    em.control().reset_counters();
    assert_eq!(em.control().counters(), Counters::default());
    Ok(())
}

#[tokio::test]
async fn status_fault_with_retry_after_then_success() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());
    let control = em.control();
    control.inject_fault(
        Endpoint::Token,
        Fault::Status {
            status: 503,
            retry_after: Some(7),
        },
        FaultTrigger::Count(1),
    );
    control.inject_fault(
        Endpoint::Oidc,
        Fault::Status {
            status: 429,
            retry_after: Some(3),
        },
        FaultTrigger::Count(1),
    );

    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(reply.aadsts().0, "temporarily_unavailable");
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 200);

    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert!(reply.header("x-vss-e2eid").is_some());
    assert!(reply.json()["typeKey"].is_string());
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 200);

    let c = control.counters();
    assert_eq!(
        (
            c.oidc_requests,
            c.token_requests,
            c.oidc_tokens_issued,
            c.access_tokens_issued
        ),
        (2, 2, 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn drop_connection_is_a_connection_error() -> TestResult {
    let em = Emulator::start().await?;
    for (tls, client) in [(false, plain()), (true, https_client(&em))] {
        em.control().inject_fault(
            Endpoint::Oidc,
            Fault::DropConnection,
            FaultTrigger::Count(1),
        );
        let result = oidc_request(&em, &client, tls).send().await;
        let error = result.expect_err("the connection was dropped");
        assert!(!error.is_status(), "{error}");
        // The next request, on a new connection, is served.
        let reply = send(oidc_request(&em, &client, tls)).await;
        assert_eq!(reply.status, 200);
    }
    Ok(())
}

#[tokio::test]
async fn malformed_json_html_and_canned_faults() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());
    let control = em.control();

    control.inject_fault(
        Endpoint::Token,
        Fault::MalformedJson,
        FaultTrigger::Count(1),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert!(serde_json::from_str::<Value>(&reply.body).is_err());

    control.inject_fault(Endpoint::Oidc, Fault::MalformedJson, FaultTrigger::Count(1));
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 200);
    assert!(serde_json::from_str::<Value>(&reply.body).is_err());

    control.inject_fault(Endpoint::Oidc, Fault::Html203, FaultTrigger::Count(1));
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 203);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );

    let canned = Fault::Body {
        status: 418,
        content_type: "x/y".into(),
        body: vec![0, 159, 146, 150],
    };
    control.inject_fault(Endpoint::Token, canned, FaultTrigger::Count(1));
    let resp = plain()
        .post(em.token_endpoint(false, &tenant))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 418);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("x/y")
    );
    assert_eq!(resp.bytes().await?.as_ref(), [0, 159, 146, 150]);

    control.inject_fault(
        Endpoint::Token,
        Fault::entra_error(
            400,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        ),
        FaultTrigger::Count(1),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &form).await;
    assert_eq!(reply.json()["error_codes"][0], 7000215);

    control.inject_fault(
        Endpoint::Oidc,
        Fault::vss_error(
            400,
            "InvalidServiceConnectionReferenceException",
            "There is no explicit reference to service connection.",
        ),
        FaultTrigger::Count(1),
    );
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(
        reply.json()["typeKey"],
        "InvalidServiceConnectionReferenceException"
    );

    // Everything is back to normal once the faults are used up.
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);
    assert_eq!(
        post_token(&em, &plain(), false, &tenant, &form)
            .await
            .status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn rate_faults_until_cleared() -> TestResult {
    let em = Emulator::start().await?;
    em.control().inject_fault(
        Endpoint::Oidc,
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        FaultTrigger::Rate(1.0),
    );
    for _ in 0..3 {
        let reply = send(oidc_request(&em, &plain(), false)).await;
        assert_eq!(reply.status, 500);
        assert!(reply.header("retry-after").is_none());
    }
    em.control().clear_faults();
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);
    Ok(())
}

#[tokio::test]
async fn hang_never_answers() -> TestResult {
    let em = Emulator::start().await?;
    em.control()
        .inject_fault(Endpoint::Oidc, Fault::Hang, FaultTrigger::Count(1));
    let client = plain();
    let mut hung = tokio::spawn(oidc_request(&em, &client, false).send());
    arrived(&em, |c| c.oidc_requests == 1).await;
    let answered = tokio::time::timeout(Duration::from_millis(100), &mut hung).await;
    assert!(answered.is_err(), "a hung request answered");
    hung.abort();
    assert_eq!(send(oidc_request(&em, &client, false)).await.status, 200);
    Ok(())
}

#[tokio::test]
async fn latency_delays_the_answer() -> TestResult {
    let em = Emulator::start().await?;
    let client = plain();
    em.control()
        .set_latency(Endpoint::Oidc, Duration::from_secs(3600));
    let mut delayed = tokio::spawn(oidc_request(&em, &client, false).send());
    arrived(&em, |c| c.oidc_requests == 1).await;
    let answered = tokio::time::timeout(Duration::from_millis(100), &mut delayed).await;
    assert!(answered.is_err(), "a delayed request answered");
    delayed.abort();
    // Latency is per endpoint.
    let form = token_form(&em, &em.issue_oidc_token());
    let tenant = em.config().tenant_id.clone();
    assert_eq!(
        post_token(&em, &client, false, &tenant, &form).await.status,
        200
    );

    em.control()
        .set_latency(Endpoint::Oidc, Duration::from_millis(20));
    assert_eq!(send(oidc_request(&em, &client, false)).await.status, 200);
    Ok(())
}

#[tokio::test]
async fn hold_keeps_requests_waiting_until_released() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());
    let hold = em.control().hold(Endpoint::Token);

    let url = em.token_endpoint(false, &tenant);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let mut held = tokio::spawn(
        plain()
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send(),
    );
    arrived(&em, |c| c.token_requests == 1).await;
    // It arrived, and is waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut held)
            .await
            .is_err()
    );
    assert_eq!(em.control().counters().access_tokens_issued, 0);
    // The other endpoint is not held.
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);

    hold.release();
    let resp = held.await??;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(em.control().counters().access_tokens_issued, 1);
    Ok(())
}

#[tokio::test]
async fn hostile_requests_get_error_responses() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let huge = vec![b'a'; 2 << 20];
    let reply = send(
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(huge),
    )
    .await;
    assert_eq!(reply.status, 413);

    let reply = send(
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'=', b'&', b'%', b'z']),
    )
    .await;
    assert_eq!(reply.status, 400);

    let weird = json!({"iss": em.oidc_issuer(), "exp": "soon", "aud": OIDC_AUDIENCE, "sub": em.oidc_subject()});
    let token = em.sign_claims(&weird);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &token)).await;
    assert_eq!(reply.aadsts().1, 50027);

    let list_aud = json!({"iss": em.oidc_issuer(), "exp": i64::MAX, "aud": [OIDC_AUDIENCE], "sub": em.oidc_subject()});
    let token = em.sign_claims(&list_aud);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &token)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The server is still healthy.
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);
    Ok(())
}

#[tokio::test]
async fn azure_core_transport_reaches_the_emulator() -> TestResult {
    use azure_core::http::{HttpClient as _, Method, Request};
    let em = Emulator::start().await?;
    let mut url = azure_core::http::Url::parse(&em.oidc_request_uri(true))?;
    url.query_pairs_mut()
        .append_pair("api-version", "7.1")
        .append_pair("serviceConnectionId", &em.config().service_connection_id);
    let mut request = Request::new(url, Method::Post);
    request.insert_header(
        "authorization",
        format!("Bearer {}", em.config().system_access_token),
    );
    request.insert_header("x-tfs-fedauthredirect", "Suppress");
    request.set_body(Vec::<u8>::new());
    // azure_core (through reqwest) sends no length for an empty body, which
    // the real service refuses, as azure_identity found: it must be explicit.
    let response = em.reqwest_client().execute_request(&request).await?;
    assert_eq!(u16::from(response.status()), 411);
    request.insert_header("content-length", "0");
    let response = em.reqwest_client().execute_request(&request).await?;
    assert_eq!(u16::from(response.status()), 200);

    let options = em.client_options();
    assert!(options.transport.is_some());
    Ok(())
}

#[tokio::test]
async fn discovery_documents() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    let tenant = em.config().tenant_id.clone();
    let config = send(client.get(format!(
        "{}{tenant}/v2.0/.well-known/openid-configuration",
        em.https_url()
    )))
    .await;
    assert_eq!(config.status, 200);
    assert_eq!(
        config.json()["token_endpoint"],
        em.token_endpoint(true, &tenant)
    );
    let jwks_uri = config.json()["jwks_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jwks = send(client.get(jwks_uri)).await.json();
    assert_eq!(jwks["keys"][0]["kid"], em.key_id());
    let instance = send(client.get(format!(
        "{}common/discovery/instance?api-version=1.1",
        em.https_url()
    )))
    .await;
    assert_eq!(instance.status, 200);
    // Discovery is not the token endpoint.
    assert_eq!(em.control().counters().token_requests, 0);
    Ok(())
}

#[tokio::test]
async fn debug_output_has_no_secrets() -> TestResult {
    let em = Emulator::start_with(EmulatorConfig {
        system_access_token: "super-secret-job-token".into(),
        ..Default::default()
    })
    .await?;
    for debug in [
        format!("{em:?}"),
        format!("{:?}", em.config()),
        format!("{:?}", em.control()),
    ] {
        assert!(!debug.contains("super-secret-job-token"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
    // Two default configurations never share a job token.
    assert_ne!(
        EmulatorConfig::default().system_access_token,
        EmulatorConfig::default().system_access_token
    );
    Ok(())
}

#[tokio::test]
async fn emulators_are_independent() -> TestResult {
    let a = Emulator::start().await?;
    let b = Emulator::start().await?;
    assert_ne!(a.http_addr(), b.http_addr());
    assert_ne!(a.oidc_issuer(), b.oidc_issuer());
    assert_ne!(a.ca_pem(), b.ca_pem());
    // A client trusting A's CA does not trust B.
    let result = oidc_request(&b, &https_client(&a), true).send().await;
    assert!(result.is_err());
    a.control().set_clock_skew(100_000);
    assert!(b.control().now_unix() < a.control().now_unix());
    Ok(())
}

/// Polls (bounded) until nothing accepts connections on `addr`. Not a single
/// check: a child process that another test forks at that moment holds a copy
/// of the listening socket until it execs.
async fn refused(addr: std::net::SocketAddr) -> bool {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_closes_the_listeners() -> TestResult {
    let em = Emulator::start().await?;
    let (http, https) = (em.http_addr(), em.https_addr());
    em.control()
        .inject_fault(Endpoint::Oidc, Fault::Hang, FaultTrigger::Count(1));
    let client = plain();
    let hung = tokio::spawn(oidc_request(&em, &client, false).send());
    arrived(&em, |c| c.oidc_requests == 1).await;
    em.stop().await;
    // The hung request's connection is closed too.
    assert!(hung.await?.is_err());
    assert!(refused(http).await, "the http listener is still open");
    assert!(refused(https).await, "the https listener is still open");

    // Dropping stops it too.
    let em = Emulator::start().await?;
    let addr = em.http_addr();
    em.shutdown();
    assert!(refused(addr).await, "the listener is still open");
    Ok(())
}

#[tokio::test]
async fn fixed_ports_can_be_reused_after_stop() -> TestResult {
    let first = Emulator::start().await?;
    let config = EmulatorConfig {
        http_port: first.http_addr().port(),
        https_port: first.https_addr().port(),
        ..Default::default()
    };
    first.stop().await;
    // Retried briefly for the same reason as in `refused`.
    let mut second = Emulator::start_with(config.clone()).await;
    for _ in 0..100 {
        match &second {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                second = Emulator::start_with(config.clone()).await;
            }
            _ => break,
        }
    }
    let second = second?;
    assert_eq!(second.http_addr().port(), config.http_port);
    assert_eq!(second.https_addr().port(), config.https_port);
    assert_eq!(
        send(oidc_request(&second, &plain(), false)).await.status,
        200
    );
    let reply = send(oidc_request(&second, &https_client(&second), true)).await;
    assert_eq!(reply.status, 200);
    Ok(())
}

#[tokio::test]
async fn decode_claims_helper() -> TestResult {
    let em = Emulator::start().await?;
    let claims = decode_claims(&em.issue_oidc_token()).unwrap_or_default();
    assert_eq!(claims.get("aud"), Some(&Value::from(OIDC_AUDIENCE)));
    assert!(decode_claims("nope").is_none());
    Ok(())
}

#[tokio::test]
async fn concurrent_requests() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    let tasks: Vec<_> = (0..16)
        .map(|_| tokio::spawn(oidc_request(&em, &client, true).send()))
        .collect();
    for task in tasks {
        assert_eq!(task.await??.status().as_u16(), 200);
    }
    assert_eq!(em.control().counters().oidc_tokens_issued, 16);
    Ok(())
}

#[test]
fn standalone_binary_prints_a_usable_environment() -> TestResult {
    use std::io::BufRead as _;
    let exe = env!("CARGO_BIN_EXE_azure-pipelines-emulator");
    let ca = std::env::temp_dir().join(format!("emulator-test-ca-{}.pem", std::process::id()));
    let mut child = std::process::Command::new(exe)
        .args(["--tenant-id", "tenant-from-cli", "--ca-out"])
        .arg(&ca)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut exports = std::collections::BTreeMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("# Serving") {
            break;
        }
        if let Some((name, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            exports.insert(name.to_owned(), value.trim_matches('\'').to_owned());
        }
    }
    let checked = (|| -> TestResult {
        assert_eq!(
            exports
                .get("AZURESUBSCRIPTION_TENANT_ID")
                .map(String::as_str),
            Some("tenant-from-cli")
        );
        for name in [
            "SYSTEM_OIDCREQUESTURI",
            "SYSTEM_ACCESSTOKEN",
            "AZURESUBSCRIPTION_CLIENT_ID",
            "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
            "AZURE_AUTHORITY_HOST",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        ] {
            assert!(
                exports.contains_key(name),
                "{name} missing from {exports:?}"
            );
        }
        let pem = std::fs::read_to_string(&ca)?;
        assert!(pem.contains("BEGIN CERTIFICATE"));
        let uri = exports
            .get("SYSTEM_OIDCREQUESTURI")
            .cloned()
            .unwrap_or_default();
        let token = exports
            .get("SYSTEM_ACCESSTOKEN")
            .cloned()
            .unwrap_or_default();
        let id = exports
            .get("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID")
            .cloned()
            .unwrap_or_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let status = rt.block_on(async {
            let port = url::Url::parse(&uri)?.port().ok_or("no port")?;
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())?])
                .resolve(
                    "localhost",
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                )
                .no_proxy()
                .build()?;
            let resp = client
                .post(format!("{uri}?api-version=7.1&serviceConnectionId={id}"))
                .bearer_auth(token)
                .header("X-TFS-FedAuthRedirect", "Suppress")
                .header("Content-Length", "0")
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(resp.status().as_u16())
        })?;
        assert_eq!(status, 200);
        Ok(())
    })();
    // Our own child, stopped by its handle.
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&ca);
    checked
}

#[tokio::test(start_paused = true)]
async fn works_under_tokio_paused_time() -> TestResult {
    let em = Emulator::start().await?;
    // With the clock paused, tokio jumps over the latency once everything waits.
    em.control()
        .set_latency(Endpoint::Oidc, Duration::from_secs(600));
    let reply = send(oidc_request(&em, &em.reqwest_client(), true)).await;
    assert_eq!(reply.status, 200);
    let assertion = reply.json()["oidcToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(
        &em,
        &em.reqwest_client(),
        true,
        &tenant,
        &token_form(&em, &assertion),
    )
    .await;
    assert_eq!(reply.status, 200);
    Ok(())
}

#[test]
fn public_types_are_thread_safe() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Emulator>();
    check::<azure_pipelines_credential::emulator::Control>();
    check::<azure_pipelines_credential::emulator::Hold>();
    check::<EmulatorConfig>();
    check::<Fault>();
    check::<Counters>();
}
