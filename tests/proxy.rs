//! Proxies from the environment, with the library's default transport (no
//! `client_options.transport`).
//!
//! A proxy from `HTTP_PROXY` must never see a request to a loopback endpoint: over plain http
//! it would read the System.AccessToken and the OIDC token in clear text. Requests to other
//! hosts keep azure_core's behaviour, which this test documents: `HTTPS_PROXY` is honoured (a
//! `CONNECT host:443` tunnel) and so is `NO_PROXY`.
//!
//! The environment is process-wide, so this binary has one test, which sets it before it
//! starts any thread, once: the proxy variables point at a fake proxy (a listener on loopback
//! that records every connection and its request head, and answers 502), and `NO_PROXY` names
//! one host, `direct.example.invalid`, and no loopback address, so that nothing but the
//! library's own rule keeps loopback requests away from the proxy.
#![cfg(feature = "reqwest")]

mod common;

use azure_core::{
    credentials::TokenCredential,
    http::{ClientOptions, RetryOptions},
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::AzurePipelinesCredentialOptions;
use azure_pipelines_emulator::Emulator;
use common::{
    STORAGE,
    emulator::{counts, credential_with},
    errors::assert_failure,
};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The host that `NO_PROXY` names.
const DIRECT: &str = "direct.example.invalid";
/// A host that goes through the proxy.
const PROXIED: &str = "login.example.invalid";

/// What reached the fake proxy: the head of each connection's request (up to its blank line,
/// at most 8 KiB), in the order they came.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn heads(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn first_lines(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Serves the fake proxy on `listener`: records each connection's request head, answers 502.
async fn fake_proxy(listener: tokio::net::TcpListener, seen: Seen) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = stream
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Options with the library's default transport and no retries (one attempt per request).
fn default_transport(
    authority_host: String,
    oidc_request_uri: String,
) -> AzurePipelinesCredentialOptions {
    AzurePipelinesCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                ..Default::default()
            },
        },
        authority_host: Some(authority_host),
        oidc_request_uri: Some(oidc_request_uri),
        ..Default::default()
    }
}

#[test]
fn loopback_never_goes_through_a_proxy_and_other_hosts_follow_the_environment() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("the fake proxy's port");
    listener.set_nonblocking(true).unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    // SAFETY: this binary's only test sets the environment here, before it starts any thread
    // (the runtime is built below) and before anything reads these variables; it is not changed
    // again.
    unsafe {
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            std::env::set_var(name, &proxy);
        }
        for name in ["NO_PROXY", "no_proxy"] {
            std::env::set_var(name, DIRECT);
        }
        for name in ["ALL_PROXY", "all_proxy", "AZURE_AUTHORITY_HOST"] {
            std::env::remove_var(name);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let seen = Seen::default();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(fake_proxy(listener, seen.clone()));
        let emulator = Emulator::start().await.unwrap();
        let system_access_token = emulator.config().system_access_token.clone();
        let oidc = emulator.oidc_request_uri(false);
        let authority = emulator.authority_host(false);
        assert!(oidc.starts_with("http://127.0.0.1:"), "{oidc}");

        // Plain http to 127.0.0.1: a token, and nothing reaches the proxy (before the fix, the
        // OIDC request went to the proxy, System.AccessToken and all).
        let credential = credential_with(
            &emulator,
            default_transport(authority.clone(), oidc.clone()),
        );
        let token = credential
            .get_token(&[STORAGE], None)
            .await
            .unwrap_or_else(|e| panic!("{e}\nthe proxy saw: {:?}", seen.first_lines()));
        assert!(emulator.verify_token(token.token.secret()).is_some());
        assert_eq!(counts(&emulator), (1, 1));
        assert_eq!(
            seen.heads(),
            Vec::<String>::new(),
            "loopback went through the proxy"
        );

        // `localhost` is loopback too: the same, by name.
        let by_name = |url: &str| url.replacen("127.0.0.1", "localhost", 1);
        let credential = credential_with(
            &emulator,
            default_transport(by_name(&authority), by_name(&oidc)),
        );
        let token = credential
            .get_token(&[STORAGE], None)
            .await
            .unwrap_or_else(|e| panic!("{e}\nthe proxy saw: {:?}", seen.first_lines()));
        assert!(emulator.verify_token(token.token.secret()).is_some());
        assert_eq!(counts(&emulator), (2, 2));
        assert_eq!(
            seen.heads(),
            Vec::<String>::new(),
            "localhost went through the proxy"
        );

        // https to another host: through the proxy from HTTPS_PROXY, as a CONNECT tunnel (the
        // OIDC request, to loopback, still goes direct). The proxy refuses with 502.
        let credential = credential_with(
            &emulator,
            default_transport(format!("https://{PROXIED}"), oidc.clone()),
        );
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_failure(
            &error,
            &[
                "The request to the Microsoft Entra ID token endpoint could not be completed",
                &format!("https://{PROXIED}/"),
                "TROUBLESHOOTING.md#network-error",
            ],
        );
        assert_eq!(counts(&emulator), (3, 2));
        assert_eq!(
            seen.first_lines(),
            [format!("CONNECT {PROXIED}:443 HTTP/1.1")],
            "one tunnel, to the host's https port"
        );
        // Only the tunnel's head reached the proxy: the request itself (and its assertion)
        // would travel inside TLS, end to end.
        let heads = seen.heads().join("\n");
        assert!(!heads.contains(&system_access_token), "{heads}");
        assert!(!heads.contains("client_assertion"), "{heads}");

        // https to the host NO_PROXY names: not through the proxy (it goes direct, and fails
        // there, since the name does not resolve).
        let credential = credential_with(
            &emulator,
            default_transport(format!("https://{DIRECT}"), oidc.clone()),
        );
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_failure(
            &error,
            &[
                "The request to the Microsoft Entra ID token endpoint could not be completed",
                &format!("https://{DIRECT}/"),
                "dns error",
            ],
        );
        assert_eq!(counts(&emulator), (4, 2));
        assert_eq!(
            seen.heads().len(),
            1,
            "NO_PROXY's host went through the proxy"
        );
    });
}
