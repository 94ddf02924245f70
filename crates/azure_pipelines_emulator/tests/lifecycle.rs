//! Starting, running side by side and stopping emulators, and what their types promise.

mod common;

use std::time::Duration;

use azure_pipelines_emulator::{
    ConnectionFault, Control, Counters, Emulator, EmulatorConfig, Endpoint, Fault, FaultTrigger,
    Hold,
};

use common::*;

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
async fn debug_output_has_no_secrets() -> TestResult {
    let em = Emulator::start_with(EmulatorConfig {
        system_access_token: "super-secret-job-token".into(),
        managed_identity_header: "super-secret-identity-header".into(),
        ..Default::default()
    })
    .await?;
    assert_eq!(em.managed_identity_header(), "super-secret-identity-header");
    for debug in [
        format!("{em:?}"),
        format!("{:?}", em.config()),
        format!("{:?}", em.control()),
    ] {
        assert!(!debug.contains("super-secret-job-token"), "{debug}");
        assert!(!debug.contains("super-secret-identity-header"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
    // Two default configurations never share a job token.
    assert_ne!(
        EmulatorConfig::default().system_access_token,
        EmulatorConfig::default().system_access_token
    );
    // Nor an identity header.
    assert_ne!(
        EmulatorConfig::default().managed_identity_header,
        EmulatorConfig::default().managed_identity_header
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
    check::<Control>();
    check::<Hold>();
    check::<EmulatorConfig>();
    check::<Fault>();
    check::<ConnectionFault>();
    check::<Counters>();
}
