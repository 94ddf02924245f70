//! Injected faults, latency, holds and counters.

mod common;

use std::time::Duration;

use azure_pipelines_emulator::{Counters, Emulator, EmulatorConfig, Endpoint, Fault, FaultTrigger};
use serde_json::Value;

use common::*;

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
async fn trickle_delivers_the_real_answer_slowly() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());
    let trickle = Fault::Trickle {
        chunk: 64,
        interval: Duration::from_millis(50),
    };
    em.control()
        .inject_fault(Endpoint::Token, trickle.clone(), FaultTrigger::Count(2));

    // The head arrives at once; a client that times out on the body gives up.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let request = || {
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.clone())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), request().send()).await??;
    assert_eq!(response.status().as_u16(), 200);
    let length = response.content_length().unwrap_or_default();
    assert!(length > 500, "{length}");
    let read = tokio::time::timeout(Duration::from_millis(100), response.bytes()).await;
    assert!(read.is_err(), "the trickled body arrived in 100 ms");

    // A patient client gets all of it, and it is a valid answer.
    let started = tokio::time::Instant::now();
    let reply = send(request()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len() as u64, length);
    assert!(
        em.verify_token(reply.json()["access_token"].as_str().unwrap_or_default())
            .is_some()
    );
    // At least one interval per chunk.
    let chunks = u32::try_from(length.div_ceil(64))?;
    assert!(started.elapsed() >= Duration::from_millis(50) * chunks);

    // The OIDC endpoint's answer trickles with its headers intact.
    em.control()
        .inject_fault(Endpoint::Oidc, trickle, FaultTrigger::Count(1));
    let reply = send(oidc_request(&em, &plain(), false)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-vss-e2eid").is_some());
    assert!(reply.json()["oidcToken"].is_string());
    Ok(())
}

#[tokio::test]
async fn truncated_body_announces_more_than_it_sends() -> TestResult {
    let em = Emulator::start().await?;
    for (tls, client) in [(false, plain()), (true, https_client(&em))] {
        em.control()
            .inject_fault(Endpoint::Oidc, Fault::TruncatedBody, FaultTrigger::Count(1));
        let response = oidc_request(&em, &client, tls).send().await?;
        assert_eq!(response.status().as_u16(), 200);
        let length = response.content_length().unwrap_or_default();
        assert!(length > 100, "{length}");
        let error = response.bytes().await.expect_err("the whole body arrived");
        assert!(error.is_body() || error.is_decode(), "{error:?}");
        // The next request, on a new connection, is served in full.
        let reply = send(oidc_request(&em, &client, tls)).await;
        assert_eq!(reply.status, 200);
        assert!(reply.json()["oidcToken"].is_string());
    }
    assert_eq!(em.control().counters().oidc_tokens_issued, 4);
    Ok(())
}

#[tokio::test]
async fn huge_body_streams_without_end() -> TestResult {
    const HUNDRED_MB: u64 = 100 << 20;
    let em = Emulator::start().await?;
    em.control().inject_fault(
        Endpoint::Token,
        Fault::HugeBody { bytes: HUNDRED_MB },
        FaultTrigger::Count(1),
    );
    let tenant = em.config().tenant_id.clone();
    let mut response = plain()
        .post(em.token_endpoint(false, &tenant))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(response.content_length(), Some(HUNDRED_MB));
    // Read and counted, never held.
    let mut received = 0u64;
    let mut first = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if first.len() < 16 {
            first.extend_from_slice(&chunk[..chunk.len().min(16)]);
        }
        received += chunk.len() as u64;
    }
    assert_eq!(received, HUNDRED_MB);
    assert!(first.starts_with(b"{\"padding\":\""), "{first:?}");

    // A small one is the whole JSON document.
    em.control().inject_fault(
        Endpoint::Token,
        Fault::HugeBody { bytes: 20 },
        FaultTrigger::Count(1),
    );
    let reply = post_token(&em, &plain(), false, &tenant, &[]).await;
    assert_eq!(reply.body, "{\"padding\":\"xxxxxx\"}");
    Ok(())
}
