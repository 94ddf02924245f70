//! The emulator's faults the tests inject, and the request counts they lead to.

use azure_pipelines_emulator::{Endpoint, Fault};

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
