//! Knobs, injected faults and counters, shared between the test and the server.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::util;
use crate::wire::{RequestIds, entra_error_json, vss_error_json};

/// An endpoint whose answers [`Control`] can delay, hold and fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// The Azure DevOps OIDC endpoint (`POST .../oidctoken`).
    Oidc,
    /// The Microsoft Entra ID token endpoint (`POST /{tenant}/oauth2/v2.0/token`).
    Token,
    /// The App Service managed identity endpoint (`GET /msi/token`).
    ManagedIdentity,
}

/// How many [`Endpoint`]s there are: the length of the per-endpoint knobs.
const ENDPOINTS: usize = 3;

impl Endpoint {
    fn index(self) -> usize {
        match self {
            Endpoint::Oidc => 0,
            Endpoint::Token => 1,
            Endpoint::ManagedIdentity => 2,
        }
    }
}

/// A failure the emulator produces instead of the normal answer.
///
/// Faults are applied after the request has been counted, held and delayed, and
/// before any validation, like an outage in front of the real service. The
/// exceptions are [`Fault::Trickle`] and [`Fault::TruncatedBody`], which spoil
/// how the endpoint's own answer is delivered, like a failing network between
/// the service and the client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Fault {
    /// An error status. The body is what the real service sends for it: an
    /// Entra error JSON on [`Endpoint::Token`], a VSS error JSON on
    /// [`Endpoint::Oidc`], an App Service error JSON on
    /// [`Endpoint::ManagedIdentity`]. `retry_after` adds a `Retry-After`
    /// header (seconds).
    Status {
        /// HTTP status code, e.g. 429 or 503.
        status: u16,
        /// Value of the `Retry-After` header, in seconds.
        retry_after: Option<u64>,
    },
    /// Never answer. The connection stays open until the client gives up or the
    /// emulator shuts down.
    Hang,
    /// Close the connection without sending any response.
    DropConnection,
    /// `200 OK` with `Content-Type: application/json` and a truncated JSON body.
    MalformedJson,
    /// `203 Non-Authoritative Information` with an HTML sign-in page, which is
    /// what Azure DevOps answers when it does not accept the caller's token.
    Html203,
    /// An arbitrary canned response, for hostile-input tests.
    Body {
        /// HTTP status code.
        status: u16,
        /// `Content-Type` header value. An invalid header value is replaced by
        /// `application/octet-stream`.
        content_type: String,
        /// The response body, sent as is.
        body: Vec<u8>,
    },
    /// The endpoint's own answer, its status and headers at once (with the
    /// full `Content-Length`), then its body `chunk` bytes (at least one) after
    /// each `interval`: a client's timeout on reading the body fires while a
    /// patient client still gets the whole answer.
    Trickle {
        /// Bytes sent after each interval.
        chunk: usize,
        /// Time before each chunk (tokio's clock, so paused-time tests work).
        interval: Duration,
    },
    /// The endpoint's own answer with its full `Content-Length`, but only the
    /// first half of its body; then the connection closes.
    TruncatedBody,
    /// `200 OK` with `Content-Type: application/json` and a body of `bytes`
    /// bytes (a JSON object, when `bytes` is at least 14), generated while it
    /// is sent, so that even gigabytes cost the emulator no memory: for a
    /// client's limit on response sizes.
    HugeBody {
        /// The body's length, sent as `Content-Length`.
        bytes: u64,
    },
}

impl Fault {
    /// A canned Azure DevOps (VSS) error response, e.g. the 400 sent since
    /// 2026-03 when the current stage does not reference the service
    /// connection.
    ///
    /// ```
    /// use azure_pipelines_emulator::Fault;
    /// let fault = Fault::vss_error(
    ///     400,
    ///     "InvalidServiceConnectionReferenceException",
    ///     "There is no explicit reference to service connection 'x' from the current stage.",
    /// );
    /// assert!(matches!(fault, Fault::Body { status: 400, .. }));
    /// ```
    pub fn vss_error(status: u16, type_key: &str, message: &str) -> Fault {
        Fault::Body {
            status,
            content_type: "application/json; charset=utf-8".to_owned(),
            body: vss_error_json(type_key, message).into_bytes(),
        }
    }

    /// A canned Entra ID error response: `error` is the OAuth error
    /// (`invalid_client`, ...), `code` the AADSTS number and `description`
    /// the text after `AADSTS<code>: `.
    ///
    /// ```
    /// use azure_pipelines_emulator::Fault;
    /// let fault = Fault::entra_error(400, "invalid_client", 7000215, "Invalid client secret provided.");
    /// assert!(matches!(fault, Fault::Body { status: 400, .. }));
    /// ```
    pub fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Fault {
        let ids = RequestIds::new(None);
        let now = OffsetDateTime::now_utc();
        Fault::Body {
            status,
            content_type: "application/json; charset=utf-8".to_owned(),
            body: entra_error_json(&ids, now, error, code, description).into_bytes(),
        }
    }
}

/// A failure of the HTTPS listener below HTTP: what a client sees of a
/// connection before its first request. See [`Control::inject_connection_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionFault {
    /// The TLS handshake presents a certificate for the same names, signed by
    /// another CA (generated by the emulator and trusted by nobody), so a
    /// client that trusts only [`Emulator::ca_pem`](crate::Emulator::ca_pem)
    /// fails the handshake.
    UntrustedCertificate,
    /// Accept the TCP connection and never answer the TLS handshake, holding
    /// the connection open until the client gives up or the emulator stops.
    StallHandshake,
}

/// When an injected [`Fault`] (or [`ConnectionFault`]) applies.
#[derive(Clone, Copy, Debug)]
pub enum FaultTrigger {
    /// The next N requests to the endpoint (or connections to the listener).
    Count(u32),
    /// Each request (or connection), with this probability (0.0 to 1.0), until cleared.
    Rate(f64),
}

/// A snapshot of what reached the emulator; see [`Control::counters`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests that reached the OIDC endpoint, including faulted and rejected ones.
    pub oidc_requests: u64,
    /// Requests that reached the token endpoint, including faulted and rejected ones.
    pub token_requests: u64,
    /// OIDC tokens handed out by the OIDC endpoint (not by
    /// [`Emulator::issue_oidc_token`](crate::Emulator::issue_oidc_token)).
    pub oidc_tokens_issued: u64,
    /// Access tokens handed out by the token endpoint.
    pub access_tokens_issued: u64,
    /// Token requests per `scope` form value, exactly as sent.
    pub by_scope: BTreeMap<String, u64>,
    /// Token requests per tenant path segment, exactly as sent.
    pub by_tenant: BTreeMap<String, u64>,
    /// Requests that reached the Key Vault secrets endpoint.
    pub key_vault_requests: u64,
    /// Key Vault requests answered with 401 and a `WWW-Authenticate` challenge
    /// (no bearer token, or one the vault does not accept).
    pub key_vault_challenges: u64,
    /// Requests that reached the managed identity endpoint, including faulted
    /// and rejected ones.
    pub managed_identity_requests: u64,
    /// Access tokens handed out by the managed identity endpoint.
    pub managed_identity_tokens_issued: u64,
    /// TCP connections accepted, on both listeners.
    pub connections: u64,
    /// Connections that got a [`ConnectionFault`] instead of being served.
    pub connection_faults: u64,
}

/// An injected fault and when it applies.
#[derive(Clone, Debug)]
struct Injected<F> {
    fault: F,
    trigger: FaultTrigger,
}

/// Takes the fault that applies now from `list`: [`FaultTrigger::Count`] ones first, in the order
/// they were injected, then the first [`FaultTrigger::Rate`] one whose draw succeeds.
fn take<F: Clone>(list: &mut Vec<Injected<F>>) -> Option<F> {
    if let Some(i) = list
        .iter()
        .position(|e| matches!(e.trigger, FaultTrigger::Count(n) if n > 0))
    {
        let entry = &mut list[i];
        let fault = entry.fault.clone();
        if let FaultTrigger::Count(n) = &mut entry.trigger {
            *n -= 1;
            if *n == 0 {
                list.remove(i);
            }
        }
        return Some(fault);
    }
    list.iter().find_map(|e| match e.trigger {
        FaultTrigger::Rate(p) if util::random_unit() < p => Some(e.fault.clone()),
        _ => None,
    })
}

#[derive(Debug)]
struct Knobs {
    latency: [Duration; ENDPOINTS],
    faults: [Vec<Injected<Fault>>; ENDPOINTS],
    connection_faults: Vec<Injected<ConnectionFault>>,
    access_token_lifetime: Duration,
    oidc_token_lifetime: Duration,
    refresh_in: Option<Duration>,
    clock_skew: i64,
    expires_in_as_string: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: [Duration::ZERO; ENDPOINTS],
            faults: std::array::from_fn(|_| Vec::new()),
            connection_faults: Vec::new(),
            access_token_lifetime: Duration::from_secs(3599),
            oidc_token_lifetime: Duration::from_secs(600),
            refresh_in: None,
            clock_skew: 0,
            expires_in_as_string: false,
        }
    }
}

struct Inner {
    knobs: Mutex<Knobs>,
    counters: Mutex<Counters>,
    // Key Vault secrets by lower-cased name (names are case-insensitive): (name, value).
    secrets: Mutex<BTreeMap<String, (String, String)>>,
    // Number of live `Hold` guards per endpoint; handlers wait for zero.
    holds: [watch::Sender<u32>; ENDPOINTS],
}

/// Knobs and counters of a running emulator.
///
/// Cheap to clone; every clone controls the same emulator, so a test can move
/// one into a task while the emulator keeps serving.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Knobs and counters hold no secrets; they help when a test fails.
        f.debug_struct("Control")
            .field("knobs", &*self.knobs())
            .field("counters", &*self.counters_guard())
            .finish()
    }
}

// A panic in a test thread while holding a lock must not make every later
// request panic too, so poisoned locks are simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Control {
    pub(crate) fn new() -> Control {
        Control {
            inner: Arc::new(Inner {
                knobs: Mutex::new(Knobs::default()),
                counters: Mutex::new(Counters::default()),
                secrets: Mutex::new(BTreeMap::new()),
                holds: std::array::from_fn(|_| watch::Sender::new(0)),
            }),
        }
    }

    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        lock(&self.inner.knobs)
    }

    fn counters_guard(&self) -> MutexGuard<'_, Counters> {
        lock(&self.inner.counters)
    }

    /// Delays every answer of `endpoint` by `d` (tokio's clock, so paused-time
    /// tests work). `Duration::ZERO` removes the delay.
    pub fn set_latency(&self, endpoint: Endpoint, d: Duration) {
        self.knobs().latency[endpoint.index()] = d;
    }

    /// Makes `endpoint` answer with `fault` when `trigger` says so. Several
    /// faults can be queued; [`FaultTrigger::Count`] ones are used up first, in
    /// the order they were injected.
    pub fn inject_fault(&self, endpoint: Endpoint, fault: Fault, trigger: FaultTrigger) {
        if matches!(trigger, FaultTrigger::Count(0)) {
            return;
        }
        self.knobs().faults[endpoint.index()].push(Injected { fault, trigger });
    }

    /// Makes the HTTPS listener treat the connections it accepts from now on
    /// with `fault` when `trigger` says so (counted per connection, not per
    /// request: a client that keeps its connection alive is not affected).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use azure_pipelines_emulator::{ConnectionFault, Emulator, FaultTrigger};
    /// let emulator = Emulator::start().await?;
    /// emulator
    ///     .control()
    ///     .inject_connection_fault(ConnectionFault::UntrustedCertificate, FaultTrigger::Count(1));
    /// let first = emulator.reqwest_client().get(emulator.https_url()).send().await;
    /// assert!(first.is_err());
    /// assert_eq!(emulator.control().counters().connection_faults, 1);
    /// # Ok(()) }
    /// ```
    pub fn inject_connection_fault(&self, fault: ConnectionFault, trigger: FaultTrigger) {
        if matches!(trigger, FaultTrigger::Count(0)) {
            return;
        }
        self.knobs()
            .connection_faults
            .push(Injected { fault, trigger });
    }

    /// Removes every injected fault: those of every endpoint and the
    /// connection faults.
    pub fn clear_faults(&self) {
        let mut knobs = self.knobs();
        for list in &mut knobs.faults {
            list.clear();
        }
        knobs.connection_faults.clear();
    }

    /// Lifetime of the access tokens issued from now on (`expires_in`).
    /// Default 3599 s.
    pub fn set_access_token_lifetime(&self, d: Duration) {
        self.knobs().access_token_lifetime = d;
    }

    /// Lifetime of the OIDC tokens issued from now on (`exp - iat`). Default 600 s.
    pub fn set_oidc_token_lifetime(&self, d: Duration) {
        self.knobs().oidc_token_lifetime = d;
    }

    /// When `Some`, token responses carry `"refresh_in"` with this many seconds.
    pub fn set_refresh_in(&self, d: Option<Duration>) {
        self.knobs().refresh_in = d;
    }

    /// Moves the emulator's clock: it becomes the real clock plus `seconds`.
    /// This affects the `iat`/`nbf`/`exp` it issues and its own expiry checks,
    /// so a test can make a token expired without waiting.
    pub fn set_clock_skew(&self, seconds: i64) {
        self.knobs().clock_skew = seconds;
    }

    /// Sends `expires_in` and `ext_expires_in` as JSON strings (`"3599"`), as
    /// Entra sometimes does.
    pub fn set_expires_in_as_string(&self, yes: bool) {
        self.knobs().expires_in_as_string = yes;
    }

    /// Stores a secret in the emulator's Key Vault (replacing one of the same
    /// name; names are case-insensitive, as in Key Vault).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let emulator = azure_pipelines_emulator::Emulator::start().await?;
    /// emulator.control().set_secret("db-password", "correct horse battery staple");
    /// assert!(emulator.control().remove_secret("DB-PASSWORD"));
    /// # Ok(()) }
    /// ```
    pub fn set_secret(&self, name: &str, value: &str) {
        lock(&self.inner.secrets).insert(
            name.to_ascii_lowercase(),
            (name.to_owned(), value.to_owned()),
        );
    }

    /// Removes a secret from the emulator's Key Vault; false if there was none.
    pub fn remove_secret(&self, name: &str) -> bool {
        lock(&self.inner.secrets)
            .remove(&name.to_ascii_lowercase())
            .is_some()
    }

    /// The stored name and value of secret `name`.
    pub(crate) fn secret(&self, name: &str) -> Option<(String, String)> {
        lock(&self.inner.secrets)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters_guard().clone()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        *self.counters_guard() = Counters::default();
    }

    /// Makes requests to `endpoint` wait (after being counted) until the
    /// returned guard is released or dropped. With several guards, requests
    /// wait for all of them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use azure_pipelines_emulator::{Emulator, Endpoint};
    /// let emulator = Emulator::start().await?;
    /// let hold = emulator.control().hold(Endpoint::Token);
    /// // ... start a token request, check that it has not completed ...
    /// hold.release();
    /// # Ok(()) }
    /// ```
    pub fn hold(&self, endpoint: Endpoint) -> Hold {
        self.inner.holds[endpoint.index()].send_modify(|n| *n += 1);
        Hold {
            control: self.clone(),
            endpoint,
        }
    }

    /// The emulator's clock: the real clock plus the skew set with
    /// [`Control::set_clock_skew`].
    pub fn now(&self) -> OffsetDateTime {
        let skew = self.knobs().clock_skew;
        OffsetDateTime::now_utc()
            .checked_add(time::Duration::seconds(skew))
            .unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// [`Control::now`] as seconds since the Unix epoch.
    pub fn now_unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    pub(crate) fn access_token_lifetime(&self) -> Duration {
        self.knobs().access_token_lifetime
    }

    pub(crate) fn oidc_token_lifetime(&self) -> Duration {
        self.knobs().oidc_token_lifetime
    }

    pub(crate) fn refresh_in(&self) -> Option<Duration> {
        self.knobs().refresh_in
    }

    pub(crate) fn expires_in_as_string(&self) -> bool {
        self.knobs().expires_in_as_string
    }

    pub(crate) fn latency(&self, endpoint: Endpoint) -> Duration {
        self.knobs().latency[endpoint.index()]
    }

    pub(crate) fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        take(&mut self.knobs().faults[endpoint.index()])
    }

    /// Counts an accepted connection, and tells whether (and how) to fault it. Only the HTTPS
    /// listener faults connections.
    pub(crate) fn accept_connection(&self, tls: bool) -> Option<ConnectionFault> {
        let fault = if tls {
            take(&mut self.knobs().connection_faults)
        } else {
            None
        };
        let mut c = self.counters_guard();
        c.connections += 1;
        if fault.is_some() {
            c.connection_faults += 1;
        }
        fault
    }

    pub(crate) async fn wait_hold(&self, endpoint: Endpoint) {
        let mut rx = self.inner.holds[endpoint.index()].subscribe();
        // The sender lives as long as `self`, so an error cannot happen while
        // a request is being served; either way the request may proceed.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn record_oidc_request(&self) {
        self.counters_guard().oidc_requests += 1;
    }

    pub(crate) fn record_token_request(&self, tenant: &str, scope: Option<&str>) {
        let mut c = self.counters_guard();
        c.token_requests += 1;
        *c.by_tenant.entry(tenant.to_owned()).or_default() += 1;
        if let Some(scope) = scope {
            *c.by_scope.entry(scope.to_owned()).or_default() += 1;
        }
    }

    pub(crate) fn record_key_vault_request(&self, challenged: bool) {
        let mut c = self.counters_guard();
        c.key_vault_requests += 1;
        if challenged {
            c.key_vault_challenges += 1;
        }
    }

    pub(crate) fn record_managed_identity_request(&self) {
        self.counters_guard().managed_identity_requests += 1;
    }

    pub(crate) fn record_managed_identity_token_issued(&self) {
        self.counters_guard().managed_identity_tokens_issued += 1;
    }

    pub(crate) fn record_oidc_token_issued(&self) {
        self.counters_guard().oidc_tokens_issued += 1;
    }

    pub(crate) fn record_access_token_issued(&self) {
        self.counters_guard().access_tokens_issued += 1;
    }
}

/// Keeps requests to one endpoint waiting; see [`Control::hold`].
#[must_use = "requests are held only while the guard is alive"]
pub struct Hold {
    control: Control,
    endpoint: Endpoint,
}

impl Hold {
    /// Lets the held requests proceed (same as dropping the guard).
    pub fn release(self) {}

    /// The endpoint this guard holds.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.control.inner.holds[self.endpoint.index()].send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_faults_are_used_up_in_order() {
        let c = Control::new();
        c.inject_fault(Endpoint::Token, Fault::Hang, FaultTrigger::Count(2));
        c.inject_fault(Endpoint::Token, Fault::Html203, FaultTrigger::Count(1));
        c.inject_fault(
            Endpoint::Token,
            Fault::MalformedJson,
            FaultTrigger::Count(0),
        );
        assert!(matches!(c.take_fault(Endpoint::Token), Some(Fault::Hang)));
        assert!(c.take_fault(Endpoint::Oidc).is_none());
        assert!(matches!(c.take_fault(Endpoint::Token), Some(Fault::Hang)));
        assert!(matches!(
            c.take_fault(Endpoint::Token),
            Some(Fault::Html203)
        ));
        assert!(c.take_fault(Endpoint::Token).is_none());
    }

    #[test]
    fn connection_faults_only_on_https_and_cleared_with_the_others() {
        let c = Control::new();
        c.inject_connection_fault(ConnectionFault::StallHandshake, FaultTrigger::Count(1));
        c.inject_connection_fault(
            ConnectionFault::UntrustedCertificate,
            FaultTrigger::Rate(1.0),
        );
        assert_eq!(c.accept_connection(false), None);
        assert_eq!(
            c.accept_connection(true),
            Some(ConnectionFault::StallHandshake)
        );
        assert_eq!(
            c.accept_connection(true),
            Some(ConnectionFault::UntrustedCertificate)
        );
        c.clear_faults();
        assert_eq!(c.accept_connection(true), None);
        let counters = c.counters();
        assert_eq!((counters.connections, counters.connection_faults), (4, 2));
    }

    #[test]
    fn rate_faults() {
        let c = Control::new();
        c.inject_fault(Endpoint::Oidc, Fault::Hang, FaultTrigger::Rate(1.0));
        c.inject_fault(Endpoint::Token, Fault::Hang, FaultTrigger::Rate(0.0));
        for _ in 0..10 {
            assert!(c.take_fault(Endpoint::Oidc).is_some());
            assert!(c.take_fault(Endpoint::Token).is_none());
        }
        c.clear_faults();
        assert!(c.take_fault(Endpoint::Oidc).is_none());
    }

    #[test]
    fn clock_skew_moves_now() {
        let c = Control::new();
        let before = c.now_unix();
        c.set_clock_skew(3600);
        assert!(c.now_unix() >= before + 3600);
    }

    #[tokio::test]
    async fn hold_waits_for_every_guard() {
        let c = Control::new();
        let a = c.hold(Endpoint::Oidc);
        let b = c.hold(Endpoint::Oidc);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait_hold(Endpoint::Oidc).await }
        });
        c.wait_hold(Endpoint::Token).await;
        a.release();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        assert!(waiter.await.is_ok());
    }
}
