//! The HTTPS listener's certificates, the certificates the emulator issues to other servers, and
//! the faults below HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use azure_pipelines_emulator::{ConnectionFault, Emulator, FaultTrigger};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::*;

/// A reqwest client that trusts only the emulator's CA, with a short timeout of its own.
fn impatient(em: &Emulator) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(em.ca_pem().as_bytes()).expect("CA PEM parses");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", em.https_addr())
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn untrusted_certificate_fails_the_handshake() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    em.control().inject_connection_fault(
        ConnectionFault::UntrustedCertificate,
        FaultTrigger::Count(1),
    );
    let error = oidc_request(&em, &client, true)
        .send()
        .await
        .expect_err("the impostor's certificate was trusted");
    assert!(error.is_connect(), "{error:?}");
    // The handshake failed, so no request reached an endpoint.
    assert_eq!(em.control().counters().oidc_requests, 0);

    // The next connection is served.
    assert_eq!(send(oidc_request(&em, &client, true)).await.status, 200);
    let c = em.control().counters();
    assert_eq!((c.connections, c.connection_faults), (2, 1));
    Ok(())
}

#[tokio::test]
async fn the_impostor_presents_the_same_names_under_another_ca() -> TestResult {
    let em = Emulator::start().await?;
    em.control().inject_connection_fault(
        ConnectionFault::UntrustedCertificate,
        FaultTrigger::Count(1),
    );
    // A client that checks nothing sees the certificate the impostor sends.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(em.ca_pem().as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(em.https_addr()).await?;
    let error = connector
        .connect("localhost".try_into()?, tcp)
        .await
        .expect_err("the impostor's certificate was trusted");
    assert!(
        error.to_string().to_lowercase().contains("issuer"),
        "not a trust failure: {error}"
    );
    Ok(())
}

#[tokio::test]
async fn rate_and_clear_connection_faults() -> TestResult {
    let em = Emulator::start().await?;
    em.control().inject_connection_fault(
        ConnectionFault::UntrustedCertificate,
        FaultTrigger::Rate(1.0),
    );
    for _ in 0..3 {
        // A new client each time: a new connection each time.
        assert!(
            oidc_request(&em, &https_client(&em), true)
                .send()
                .await
                .is_err()
        );
    }
    // The plain listener has no TLS to fault.
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);
    em.control().clear_faults();
    assert_eq!(
        send(oidc_request(&em, &https_client(&em), true))
            .await
            .status,
        200
    );
    let c = em.control().counters();
    assert_eq!((c.connections, c.connection_faults), (5, 3));
    Ok(())
}

#[tokio::test]
async fn stalled_handshake_never_completes() -> TestResult {
    let em = Emulator::start().await?;
    em.control()
        .inject_connection_fault(ConnectionFault::StallHandshake, FaultTrigger::Count(1));
    let started = tokio::time::Instant::now();
    let error = oidc_request(&em, &impatient(&em), true)
        .send()
        .await
        .expect_err("a stalled handshake completed");
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let c = em.control().counters();
    assert_eq!(
        (c.connections, c.connection_faults, c.oidc_requests),
        (1, 1, 0)
    );

    // The connection stays open, unanswered, until the emulator stops.
    em.control()
        .inject_connection_fault(ConnectionFault::StallHandshake, FaultTrigger::Count(1));
    let mut tcp = tokio::net::TcpStream::connect(em.https_addr()).await?;
    tcp.write_all(b"\x16\x03\x01\x00\x05hello").await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
    assert!(read.is_err(), "the stalled connection answered: {read:?}");
    em.stop().await;
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await?;
    // Closed (end of stream) or reset: either way, not answered.
    assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
    Ok(())
}

#[tokio::test]
async fn issued_certificates_are_trusted_by_the_emulators_clients() -> TestResult {
    let em = Emulator::start().await?;
    let (cert_pem, key_pem) = em.issue_server_certificate(&["127.0.0.1", "localhost"])?;
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    // Another local server, with the issued certificate.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?,
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut request = [0u8; 1024];
        let _ = tls.read(&mut request).await?;
        tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await?;
        tls.shutdown().await
    });
    let response = em
        .reqwest_client()
        .get(format!("https://127.0.0.1:{}/", addr.port()))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    server.await??;
    assert!(em.issue_server_certificate(&["bücher.example"]).is_err());
    Ok(())
}
