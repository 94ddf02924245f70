//! The emulator's faults the tests inject, the request counts they lead to, and what tests
//! count on the client side: attempts and body bytes ([`Wire`]), and the process's memory.

use azure_core::http::{
    AsyncRawResponse, Context, Request,
    policies::{Policy, PolicyResult},
};
use azure_pipelines_emulator::{Endpoint, Fault};
use futures::StreamExt as _;
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// The two endpoints of the credential, in the order it calls them.
pub const ENDPOINTS: [Endpoint; 2] = [Endpoint::Oidc, Endpoint::Token];

/// The emulator's client options retry 3 times: 4 attempts in all.
pub const ATTEMPTS: u64 = 4;

/// An error status without `Retry-After`.
pub fn status(status: u16) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
    }
}

/// 429 with `Retry-After: seconds`.
pub fn throttled(seconds: u64) -> Fault {
    Fault::Status {
        status: 429,
        retry_after: Some(seconds),
    }
}

/// What azure_core's retry policy retries: throttling, server errors, a dropped connection.
pub fn transient() -> Vec<Fault> {
    vec![
        status(503),
        throttled(0),
        status(500),
        status(502),
        status(504),
        status(408),
        Fault::DropConnection,
    ]
}

/// Faults that, at every attempt, outlast the retries.
pub fn outlasting() -> Vec<Fault> {
    vec![Fault::DropConnection, status(503), throttled(0)]
}

/// Faults that, once, the retries absorb.
pub fn absorbed() -> Vec<Fault> {
    vec![Fault::DropConnection, status(503), Fault::Hang]
}

/// The mix of a soak: throttling, outage, dropped connections and broken bodies.
pub fn mix() -> Vec<Fault> {
    vec![
        status(503),
        throttled(0),
        Fault::DropConnection,
        Fault::MalformedJson,
    ]
}

/// How the credential names `endpoint` in its errors.
pub fn name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Oidc => "Azure DevOps OIDC endpoint",
        Endpoint::Token => "Microsoft Entra ID token endpoint",
        other => unreachable!("the credential does not call {other:?}"),
    }
}

/// Requests (OIDC, token) that one successful acquisition makes when `endpoint` answered
/// `extra` times before it succeeded.
pub fn expected(endpoint: Endpoint, extra: u64) -> (u64, u64) {
    match endpoint {
        Endpoint::Oidc => (1 + extra, 1),
        _ => (1, 1 + extra),
    }
}

/// Requests (OIDC, token) of one acquisition that failed at `endpoint` after `attempts`
/// requests there.
pub fn failed_at(endpoint: Endpoint, attempts: u64) -> (u64, u64) {
    match endpoint {
        Endpoint::Oidc => (attempts, 0),
        _ => (1, attempts),
    }
}

// ---------------------------------------------------------------------------------------------
// Counting on the client side: what never reaches a server
// ---------------------------------------------------------------------------------------------

/// A per-try policy (`client_options.per_try_policies`) that counts, on the client side, each
/// attempt to each endpoint as it starts (before any network I/O: refused connections and
/// failed handshakes count too), and the response body bytes that the transport handed on.
#[derive(Debug, Default)]
pub struct Wire {
    oidc: AtomicU64,
    token: AtomicU64,
    body_bytes: Arc<AtomicU64>,
}

impl Wire {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Attempts (OIDC, token) so far.
    pub fn attempts(&self) -> (u64, u64) {
        (
            self.oidc.load(Ordering::SeqCst),
            self.token.load(Ordering::SeqCst),
        )
    }

    /// Response body bytes read through the pipeline so far, over every attempt.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }
}

// `Context` without its lifetime, as the trait declares it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl Policy for Wire {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let path = request.url().path();
        if path.ends_with("/oidctoken") {
            self.oidc.fetch_add(1, Ordering::SeqCst);
        } else if path.ends_with("/oauth2/v2.0/token") {
            self.token.fetch_add(1, Ordering::SeqCst);
        }
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let (status, headers, body) = response.deconstruct();
        let counted = self.body_bytes.clone();
        let body = body.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counted.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(body)))
    }
}

/// A field of `/proc/self/status` in KiB, such as `VmRSS` (resident memory now) or `VmHWM`
/// (its peak).
pub fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Sets the process's peak resident memory (`VmHWM`) back to its current resident memory
/// (Linux: `echo 5 > /proc/self/clear_refs`); false where that is not allowed, and the peak
/// then keeps counting from the start of the process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
