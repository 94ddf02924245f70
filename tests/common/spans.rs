//! A tracing layer that keeps every span as it closes (its name, target and final field values)
//! and every event's fields, for tests that assert on the credential's spans.
//!
//! [`Recorder::install`] sets it as the dispatcher of the calling thread only: run the test on a
//! current-thread runtime (`#[tokio::test]`'s default) so that every task the test starts, the
//! credential's request tasks included, runs on that thread. Spans keep the dispatcher they were
//! created in, so a span closes in this recorder whichever thread drops it last.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};
use tracing::{
    Event, Id, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Record},
    subscriber::DefaultGuard,
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// The fields of a span or an event, by name, each formatted as text (strings as they are,
/// numbers in decimal, `?` values with `Debug`).
pub type Fields = BTreeMap<&'static str, String>;

/// A span that has closed.
#[derive(Clone, Debug)]
pub struct ClosedSpan {
    pub name: &'static str,
    pub target: String,
    pub fields: Fields,
    /// How many spans it was said to follow from (`Span::follows_from`).
    pub follows_from: usize,
}

impl ClosedSpan {
    /// The value of `field`, if it was recorded.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// The `outcome` field (empty when none was recorded).
    pub fn outcome(&self) -> &str {
        self.field("outcome").unwrap_or_default()
    }

    /// The `requests` field as a number (`u64::MAX` when it is missing or not a number, so a
    /// comparison with any real count fails).
    pub fn requests(&self) -> u64 {
        self.field("requests")
            .and_then(|r| r.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

#[derive(Default)]
struct Log {
    closed: Vec<ClosedSpan>,
    events: Vec<(String, Fields)>,
}

/// What the layer has seen on this thread's dispatcher; clones share it.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    /// Installs a recorder (which lets everything through, at every level) as the calling
    /// thread's dispatcher, until the guard is dropped.
    pub fn install() -> (Self, DefaultGuard) {
        let recorder = Self::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        (recorder, guard)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every span closed so far, in the order they closed.
    pub fn closed(&self) -> Vec<ClosedSpan> {
        self.log().closed.clone()
    }

    /// The spans named `name` closed so far, in the order they closed.
    pub fn closed_named(&self, name: &str) -> Vec<ClosedSpan> {
        self.log()
            .closed
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Removes and returns the spans closed so far.
    pub fn take_closed(&self) -> Vec<ClosedSpan> {
        std::mem::take(&mut self.log().closed)
    }

    /// Every field value of every span closed and every event recorded so far (with the
    /// event's target and the span's name), one per line: where no secret may ever be.
    pub fn text(&self) -> String {
        let log = self.log();
        let mut text = String::new();
        for span in &log.closed {
            for (name, value) in &span.fields {
                text.push_str(&format!("span {} {name}={value}\n", span.name));
            }
        }
        for (target, fields) in &log.events {
            for (name, value) in fields {
                text.push_str(&format!("event {target} {name}={value}\n"));
            }
        }
        text
    }

    /// How many events were recorded.
    pub fn event_count(&self) -> usize {
        self.log().events.len()
    }

    /// The fields of the events of `target` recorded so far, in order (the text of an event
    /// is its `message` field).
    pub fn events_of(&self, target: &str) -> Vec<Fields> {
        self.log()
            .events
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, fields)| fields.clone())
            .collect()
    }

    /// Waits until at least `count` spans named `name` have closed (a request's task drops its
    /// clone of the span just after the caller got its answer), polling at most 1,000 times,
    /// 1 ms apart, then removes and returns every span closed so far.
    pub async fn take_after(&self, name: &str, count: usize) -> Vec<ClosedSpan> {
        for _ in 0..1000 {
            if self.closed_named(name).len() >= count {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.take_closed()
    }
}

/// Collects fields as text.
struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name(), format!("{value} {value:?}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// A span's fields so far, kept in its extensions until it closes.
struct Open {
    fields: Fields,
    follows_from: usize,
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                fields,
                follows_from: 0,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
        {
            values.record(&mut Collect(&mut open.fields));
        }
    }

    fn on_follows_from(&self, id: &Id, _follows: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
        {
            open.follows_from += 1;
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.log()
            .events
            .push((event.metadata().target().to_owned(), fields));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let open = span.extensions_mut().remove::<Open>();
        let (fields, follows_from) =
            open.map_or_else(Default::default, |o| (o.fields, o.follows_from));
        self.log().closed.push(ClosedSpan {
            name: span.name(),
            target: span.metadata().target().to_owned(),
            fields,
            follows_from,
        });
    }
}
