//! Tests that move the credential's clock, which is crate-private: token lifetimes, background
//! refreshes, outages through a token's life, and the reliability runs that cross many
//! lifetimes. Each builds the credential with [`AzurePipelinesCredential::build`] on a manual
//! [`Clock`] against the emulator (over HTTPS, trusting its CA), whose counters give exact
//! request counts. The emulator's own clock is the real one (plus a skew a test may set): the
//! OIDC tokens it issues expire on the real timeline.
//!
//! Also here: the property-test strategies shared by the `tests` modules of the parsers.

mod lifetimes;
mod outages;
#[cfg(all(feature = "persistent-cache", unix))]
mod persistent_cache;
mod reliability;
mod runtimes;
pub(crate) mod strategies;

use crate::{AzurePipelinesCredential, AzurePipelinesCredentialOptions, clock::Clock};
use azure_core::{
    credentials::{Secret, TokenRequestOptions},
    http::RetryOptions,
};
use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_emulator::Emulator;
use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration as StdDuration,
};
use time::{Duration, OffsetDateTime};
use tracing_subscriber::layer::SubscriberExt as _;

const STORAGE: &str = "https://storage.azure.com/.default";
const VAULT: &str = "https://vault.azure.net/.default";
/// How every failed acquisition's error starts.
const FAILED: &str = "AzurePipelinesCredential authentication failed. ";

/// A manual clock, started at the current whole second, and times relative to that start.
struct Timeline {
    clock: Clock,
    start: OffsetDateTime,
}

impl Timeline {
    fn new() -> Self {
        // The only real time the tests read: where the manual clock starts, near the emulator's.
        #[allow(clippy::disallowed_methods)]
        let now = OffsetDateTime::now_utc();
        let start = now.replace_nanosecond(0).unwrap_or(now);
        Self {
            clock: Clock::manual(start),
            start,
        }
    }

    /// `seconds` after the start.
    fn at(&self, seconds: i64) -> OffsetDateTime {
        self.start + Duration::seconds(seconds)
    }

    /// Sets the clock to `seconds` after the start.
    fn set(&self, seconds: i64) {
        self.clock.set(self.at(seconds));
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// The credential of the emulator's service connection on `time`'s clock, with the emulator's
/// client options (3 quick retries) unless `customize` changes them.
fn credential(
    emulator: &Emulator,
    time: &Timeline,
    customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
) -> AzurePipelinesCredential {
    let mut options = AzurePipelinesCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: emulator.client_options(),
        },
        authority_host: Some(emulator.authority_host(true)),
        oidc_request_uri: Some(emulator.oidc_request_uri(true)),
        ..Default::default()
    };
    customize(&mut options);
    let c = emulator.config();
    let token = Secret::new(c.system_access_token.clone());
    AzurePipelinesCredential::build(
        &c.tenant_id,
        c.client_id.clone(),
        &c.service_connection_id,
        token,
        options,
        time.clock.clone(),
    )
    .expect("credential")
}

/// An emulator, a manual clock started now, and the emulator's credential on that clock (see
/// [`credential`]).
async fn setup(
    customize: impl FnOnce(&mut AzurePipelinesCredentialOptions),
) -> (Emulator, Timeline, AzurePipelinesCredential) {
    let emulator = Emulator::start().await.expect("the emulator starts");
    let time = Timeline::new();
    let credential = credential(&emulator, &time, customize);
    (emulator, time, credential)
}

/// For [`credential`]: no retries, so that every failed attempt is one request.
fn no_retry(options: &mut AzurePipelinesCredentialOptions) {
    options.credential_options.client_options.retry = RetryOptions::none();
}

/// Requests that reached the emulator: (OIDC, token).
fn requests(emulator: &Emulator) -> (u64, u64) {
    let c = emulator.control().counters();
    (c.oidc_requests, c.token_requests)
}

fn cae() -> Option<TokenRequestOptions<'static>> {
    Some(
        crate::TokenRequestContext {
            enable_cae: true,
            ..Default::default()
        }
        .into(),
    )
}

/// Polls `done` while background tasks run; bounded, and never a timing assertion.
async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

/// The events logged on this thread, each as its fields' text, and (apart) the fields of the
/// spans opened on it, each as `target span field=value ...`.
#[derive(Clone, Default)]
pub(super) struct Events {
    events: Arc<Mutex<Vec<(String, String)>>>,
    spans: Arc<Mutex<Vec<String>>>,
}

/// `name=value ` for each field recorded.
fn fields_text(record: impl FnOnce(&mut dyn tracing::field::Visit)) -> String {
    let mut text = String::new();
    record(
        &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let _ = write!(text, "{}={value:?} ", field.name());
        },
    );
    text
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let text = fields_text(|visit| event.record(visit));
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((event.metadata().target().to_owned(), text));
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = attrs.metadata();
        let text = fields_text(|visit| attrs.record(visit));
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{} {} {text}", meta.target(), meta.name()));
    }

    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let text = fields_text(|visit| values.record(visit));
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }
}

impl Events {
    /// Records this thread's events until the guard is dropped.
    pub(super) fn record() -> (Self, tracing::subscriber::DefaultGuard) {
        let events = Self::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        // Other tests of this binary run on other threads without a subscriber; a callsite they
        // register while this one is being installed can keep a stale "never" interest.
        tracing::callsite::rebuild_interest_cache();
        (events, guard)
    }

    pub(super) fn count(&self, needle: &str) -> usize {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.iter().filter(|(_, e)| e.contains(needle)).count()
    }

    /// The text of every event whose target starts with `target`, one per line.
    pub(super) fn text_of(&self, target: &str) -> String {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: Vec<&str> = events
            .iter()
            .filter(|(t, _)| t.starts_with(target))
            .map(|(_, text)| text.as_str())
            .collect();
        lines.join("\n")
    }

    /// The fields of every span opened on this thread (with their later values), one per line.
    pub(super) fn spans_text(&self) -> String {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    pub(super) fn any(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// Waits (bounded) until `n` events have `needle`, then lets the tasks that were woken by
    /// the same event run: on a current-thread runtime, `yield_now` puts this task behind
    /// every ready task.
    pub(super) async fn wait_for(&self, needle: &str, n: usize) -> usize {
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
