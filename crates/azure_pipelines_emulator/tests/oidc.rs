//! The emulated Azure DevOps OIDC endpoint, over real HTTP and HTTPS.

mod common;

use azure_pipelines_emulator::{Emulator, EmulatorConfig, OIDC_AUDIENCE};
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::*;

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
