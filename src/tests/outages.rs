//! Failures through a token's life: a failed background refresh keeps the valid token (logged,
//! retried after the back-off), an outage does not break a valid cached token, and past the
//! stop time callers get the failure, never the old token.

use super::{FAILED, STORAGE, no_retry, requests, setup};
use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::{Endpoint, Fault, FaultTrigger};
use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration as StdDuration,
};
use time::Duration;
use tracing_subscriber::layer::SubscriberExt as _;

const REFRESH_FAILED: &str = "token refresh failed; the cached token is still valid";

/// The events logged on this thread, each as its fields' text.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut text = String::new();
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                let _ = write!(text, "{}={value:?} ", field.name());
            },
        );
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }
}

impl Events {
    /// Records this thread's events until the guard is dropped.
    fn record() -> (Self, tracing::subscriber::DefaultGuard) {
        let events = Self::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        // Other tests of this binary run on other threads without a subscriber; a callsite they
        // register while this one is being installed can keep a stale "never" interest.
        tracing::callsite::rebuild_interest_cache();
        (events, guard)
    }

    fn count(&self, needle: &str) -> usize {
        let events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        events.iter().filter(|e| e.contains(needle)).count()
    }

    fn any(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// Waits (bounded) until `n` events have `needle`, then lets the tasks that were woken by
    /// the same event run: on a current-thread runtime, `yield_now` puts this task behind
    /// every ready task.
    async fn wait_for(&self, needle: &str, n: usize) -> usize {
        for _ in 0..1000 {
            if self.count(needle) >= n {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        self.count(needle)
    }
}

// The background refresh runs in a spawned task: a current-thread runtime keeps it on this
// thread, where the thread-local subscriber sees its events.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_refresh_keeps_the_valid_token_then_callers_wait_after_the_stop_time() {
    let (events, _guard) = Events::record();
    let (emulator, time, credential) = setup(no_retry).await;
    let control = emulator.control();
    control.set_access_token_lifetime(StdDuration::from_secs(3600));
    control.set_refresh_in(Some(StdDuration::from_secs(600)));
    let first = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(first.refresh_on, Some(time.at(600)));
    assert_eq!(requests(&emulator).1, 1);

    // Entra starts failing; the clock enters the refresh window (refresh at <= +600 s, stop at
    // +3570 s).
    control.inject_fault(
        Endpoint::Token,
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        FaultTrigger::Rate(1.0),
    );
    time.set(1000);

    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, first.token, "served at once while refreshing");
    assert_eq!(events.wait_for(REFRESH_FAILED, 1).await, 1);
    assert_eq!(requests(&emulator).1, 2, "one background refresh");

    // Within the back-off the old token keeps being served and no new attempt starts.
    for _ in 0..5 {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(got.token, first.token);
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(requests(&emulator).1, 2, "no refresh during the back-off");

    // After the back-off the next call tries again, still serving the old token.
    time.set(1031);
    let got = credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(got.token, first.token);
    assert_eq!(events.wait_for(REFRESH_FAILED, 2).await, 2);
    assert_eq!(requests(&emulator).1, 3);

    // Past the stop time (30 s before expiry) the old token is no longer handed out: the caller
    // waits for a new one.
    control.clear_faults();
    control.set_access_token_lifetime(StdDuration::from_secs(3599));
    control.set_refresh_in(None);
    time.set(3580);
    let second = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_ne!(second.token, first.token);
    assert_eq!(second.expires_on, time.at(3580 + 3599));
    assert_eq!(requests(&emulator).1, 4);

    assert!(!events.any(first.token.secret()), "a token in the log");
}

#[tokio::test]
async fn past_the_stop_time_a_failure_is_returned_not_the_old_token() {
    let (emulator, time, credential) = setup(no_retry).await;
    credential.get_token(&[STORAGE], None).await.unwrap();

    emulator.control().inject_fault(
        Endpoint::Token,
        Fault::entra_error(400, "unauthorized_client", 700016, "Application not found."),
        FaultTrigger::Rate(1.0),
    );
    // The emulator's tokens live 3599 s; they are handed out until 30 s before that.
    time.set(3599 - 10);

    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with(FAILED), "{text}");
    assert!(text.contains("was not found in the tenant"), "{text}");
    assert_eq!(requests(&emulator).1, 2);
}

#[tokio::test]
async fn outage_does_not_break_a_valid_cached_token() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let first = credential.get_token(&[STORAGE], None).await.unwrap();
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        emulator.control().inject_fault(
            endpoint,
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            FaultTrigger::Rate(1.0),
        );
    }
    time.advance(Duration::minutes(56));
    for _ in 0..50 {
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token, first.token);
    }
    // Past the stop time the outage shows.
    time.advance(Duration::minutes(4));
    let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
    assert!(error.to_string().starts_with(FAILED), "{error}");
}
