//! The credential on an async runtime other than Tokio: azure_core's `AsyncRuntime` installed
//! by the application, here one made of plain threads, and a transport of the application's
//! (canned answers). No Tokio runtime exists in this process: `get_token` is driven by
//! `futures::executor::block_on`.
//!
//! This binary holds a single test because the async runtime is global to the process.

mod common;

use azure_core::{
    Bytes,
    async_runtime::{AbortableTask, AsyncRuntime, SpawnedTask, TaskFuture, set_async_runtime},
    credentials::TokenCredential,
    http::{
        AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport,
        headers::Headers,
    },
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
use common::{CLIENT_ID, CONNECTION_ID, STORAGE, SYSTEM_TOKEN, TENANT, jwt::oidc_jwt};
use futures::channel::oneshot;
use serde_json::json;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

const AUTHORITY: &str = "https://login.example.test";
const OIDC_URI: &str = "https://dev.azure.example/org/_apis/oidctoken";
const ACCESS_TOKEN: &str = "at.no-tokio.Qm9vdHN0cmFwcGVk";

/// An azure_core runtime of plain threads: each task runs on a thread of its own under
/// `futures::executor::block_on`, each sleep is a thread that sleeps and then wakes the sleeper.
#[derive(Default)]
struct Threads {
    slept: AtomicUsize,
}

/// A task running on its thread: done when the thread says so, or when aborted.
struct Task {
    done: oneshot::Receiver<()>,
    aborted: AtomicBool,
}

impl Future for Task {
    type Output = Result<(), Box<dyn std::error::Error + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.aborted.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.done).poll(cx).map(|done| {
            done.map_err(|_| -> Box<dyn std::error::Error + Send> {
                Box::new(std::io::Error::other("the task's thread panicked"))
            })
        })
    }
}

impl AbortableTask for Task {
    fn abort(&self) {
        // A thread cannot be stopped; the task no longer holds anyone up.
        self.aborted.store(true, Ordering::SeqCst);
    }
}

impl AsyncRuntime for Threads {
    fn spawn(&self, f: TaskFuture) -> SpawnedTask {
        let (sender, done) = oneshot::channel();
        std::thread::spawn(move || {
            futures::executor::block_on(f);
            let _ = sender.send(());
        });
        Box::pin(Task {
            done,
            aborted: AtomicBool::new(false),
        })
    }

    fn sleep(&self, duration: azure_core::time::Duration) -> TaskFuture {
        self.slept.fetch_add(1, Ordering::SeqCst);
        let (wake, woken) = oneshot::channel::<()>();
        let duration = std::time::Duration::try_from(duration).unwrap_or_default();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let _ = wake.send(());
        });
        Box::pin(async move {
            let _ = woken.await;
        })
    }

    fn yield_now(&self) -> TaskFuture {
        Box::pin(std::future::ready(()))
    }
}

/// The application's transport: the OIDC endpoint and Entra ID answering 200, counted per
/// endpoint. It checks that no Tokio runtime is running the request.
#[derive(Debug, Default)]
struct Canned {
    oidc: AtomicUsize,
    token: AtomicUsize,
}

#[async_trait::async_trait]
impl HttpClient for Canned {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "a request ran on Tokio"
        );
        let body = match request.url().path() {
            "/org/_apis/oidctoken" => {
                self.oidc.fetch_add(1, Ordering::SeqCst);
                json!({ "oidcToken": oidc_jwt("no-tokio") })
            }
            path if path == format!("/{TENANT}/oauth2/v2.0/token") => {
                self.token.fetch_add(1, Ordering::SeqCst);
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": ACCESS_TOKEN})
            }
            other => panic!("unexpected request to {other}"),
        };
        let mut headers = Headers::new();
        headers.insert("content-type", "application/json");
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::Ok,
            headers,
            Bytes::from(body.to_string()),
        ))
    }
}

#[test]
fn a_token_without_tokio_on_a_runtime_of_threads() {
    let runtime = Arc::new(Threads::default());
    set_async_runtime(runtime.clone()).expect("the first runtime of this process");
    let canned = Arc::new(Canned::default());
    let credential = AzurePipelinesCredential::new(
        TENANT.into(),
        CLIENT_ID.into(),
        CONNECTION_ID,
        SYSTEM_TOKEN,
        Some(AzurePipelinesCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: ClientOptions {
                    transport: Some(Transport::new(canned.clone())),
                    retry: RetryOptions::none(),
                    ..Default::default()
                },
            },
            authority_host: Some(AUTHORITY.into()),
            oidc_request_uri: Some(OIDC_URI.into()),
            ..Default::default()
        }),
    )
    .unwrap();

    let first = futures::executor::block_on(credential.get_token(&[STORAGE], None)).unwrap();
    assert_eq!(first.token.secret(), ACCESS_TOKEN);
    let second = futures::executor::block_on(credential.get_token(&[STORAGE], None)).unwrap();
    assert_eq!(second.token.secret(), ACCESS_TOKEN);
    assert_eq!(second.expires_on, first.expires_on, "a cache hit");

    let requests = (
        canned.oidc.load(Ordering::SeqCst),
        canned.token.load(Ordering::SeqCst),
    );
    assert_eq!(requests, (1, 1), "one OIDC request and one token request");
    assert!(
        runtime.slept.load(Ordering::SeqCst) >= 1,
        "the time limits ran on the installed runtime's timers"
    );
}
