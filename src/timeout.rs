//! Timeouts, so that a hung endpoint never blocks `get_token` forever.
//!
//! Two limits, both on the clock of azure_core's async runtime (the one its retry policy sleeps
//! on), so they work on whatever runtime the application installed:
//! - **per attempt** ([`AttemptTimeoutPolicy`]): a per-try policy of the azure_core pipeline, so
//!   it sits *inside* the retry policy. An attempt that produces no response headers in time
//!   fails with an [`ErrorKind::Io`] error, which azure_core's retry policy treats like a
//!   dropped connection: it retries it with its usual back-off, up to its own limits.
//! - **per acquisition** ([`budget`]): around everything one token acquisition does (the OIDC
//!   fetch, the exchange, every retry and `Retry-After` wait), so that no retry setting can hold
//!   a caller longer than `token_timeout`.

use crate::error::{Failure, Section};
use async_trait::async_trait;
use azure_core::{
    async_runtime::get_async_runtime,
    error::ErrorKind,
    http::{
        Context, Request,
        policies::{Policy, PolicyResult, RetryPolicyCount},
    },
};
use futures::future::{Either, select};
use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

/// The default of `attempt_timeout`: how long one HTTP attempt may wait for response headers.
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of `token_timeout`: the budget of one whole token acquisition.
pub(crate) const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks a configured timeout and applies its default.
///
/// Zero is refused: it would fail every request without sending it, which is never what was
/// meant.
pub(crate) fn configured(
    value: Option<Duration>,
    default: Duration,
    name: &str,
) -> Result<Duration, Failure> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(Failure::new(
            Section::ZeroTimeout,
            format!(
                "{name} is zero, so every request would time out at once. Leave it None for the \
                 default ({}) or give a positive duration (Duration::MAX for no limit).",
                seconds(default)
            ),
        )),
        Some(d) => Ok(d),
    }
}

/// `30 s`, `0.2 s`: a duration as people read it in an error message.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{} s", text.trim_end_matches('0'))
    }
}

/// The limit ran out before the work finished.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// Runs `work`, giving up after `limit` on azure_core's async runtime clock. A limit too large for
/// that clock (such as `Duration::MAX`) means no limit.
pub(crate) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    let Ok(limit) = azure_core::time::Duration::try_from(limit) else {
        return Ok(work.await);
    };
    match select(pin!(work), get_async_runtime().sleep(limit)).await {
        Either::Left((done, _)) => Ok(done),
        Either::Right(((), _)) => Err(Elapsed),
    }
}

/// Runs one token acquisition within `limit` (`token_timeout`).
///
/// On expiry the acquisition is dropped (cancelling the request in flight) and the failure names
/// the limit and `stage()`, the endpoint that was being waited for, asked while the acquisition
/// is still there to tell.
pub(crate) async fn budget<T>(
    limit: Duration,
    stage: impl FnOnce() -> &'static str,
    acquisition: impl Future<Output = Result<T, Arc<Failure>>>,
) -> Result<T, Arc<Failure>> {
    let Ok(clock_limit) = azure_core::time::Duration::try_from(limit) else {
        return acquisition.await;
    };
    let acquisition = pin!(acquisition);
    match select(acquisition, get_async_runtime().sleep(clock_limit)).await {
        Either::Left((done, _)) => done,
        Either::Right(((), _still_waiting)) => Err(Arc::new(Failure::new(
            Section::TokenTimeout,
            format!(
                "The token request did not complete within {} (token_timeout): it was still \
                 waiting for the {} after every retry that fitted in that time. Check the network \
                 and the endpoint's status, or raise AzurePipelinesCredentialOptions::token_timeout \
                 if the endpoint is just slow.",
                seconds(limit),
                stage()
            ),
        ))),
    }
}

/// The attempts an acquisition made, counted by [`AttemptTimeoutPolicy`] when the request's
/// context holds one: what its tracing span reports as `requests`.
#[derive(Debug, Default)]
pub(crate) struct Attempts(AtomicU32);

impl Attempts {
    pub(crate) fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The per-try policy that bounds each attempt (and counts it).
#[derive(Debug)]
pub(crate) struct AttemptTimeoutPolicy {
    limit: Duration,
}

impl AttemptTimeoutPolicy {
    pub(crate) fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self { limit })
    }
}

// `Context` is written without its lifetime because the trait is; naming it (`Context<'_>`)
// makes async_trait's expansion disagree with the trait's signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl Policy for AttemptTimeoutPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // The pipeline always ends with the transport policy; an empty tail would be a bug in
        // how the pipeline was built, reported rather than panicked on.
        let Some((first, rest)) = next.split_first() else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "the attempt-timeout policy has no policy after it",
            ));
        };
        if let Some(attempts) = ctx.value::<Attempts>() {
            attempts.0.fetch_add(1, Ordering::Relaxed);
        }
        match within(self.limit, first.send(ctx, request, rest)).await {
            Ok(result) => result,
            Err(Elapsed) => {
                let timed_out = AttemptTimedOut {
                    limit: self.limit,
                    attempt: ctx.value::<RetryPolicyCount>().map_or(0, |c| **c) + 1,
                };
                tracing::debug!(target: "azure_pipelines_credential", "{timed_out}");
                let message = timed_out.to_string();
                // `Io`, like a connection that stopped answering: the retry policy retries it.
                Err(azure_core::Error::with_error(
                    ErrorKind::Io,
                    timed_out,
                    message,
                ))
            }
        }
    }
}

/// The source of an attempt's timeout error; found again in the chain to word the final error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptTimedOut {
    pub(crate) limit: Duration,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub(crate) attempt: u32,
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt {} got no response within {} (attempt_timeout)",
            self.attempt,
            seconds(self.limit)
        )
    }
}

impl StdError for AttemptTimedOut {}

/// The [`AttemptTimedOut`] in `error`'s source chain, if any.
pub(crate) fn attempt_timed_out(error: &azure_core::Error) -> Option<AttemptTimedOut> {
    std::iter::successors(Some(error as &(dyn StdError + 'static)), |&e| e.source())
        .find_map(|e| e.downcast_ref::<AttemptTimedOut>().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{AsyncRawResponse, Method, StatusCode, headers::Headers};

    #[test]
    fn durations_read_well() {
        for (d, text) in [
            (Duration::from_secs(30), "30 s"),
            (Duration::from_millis(200), "0.2 s"),
            (Duration::from_millis(1500), "1.5 s"),
            (Duration::from_millis(1), "0.001 s"),
            (Duration::ZERO, "0 s"),
        ] {
            assert_eq!(seconds(d), text);
        }
    }

    #[test]
    fn configured_values() {
        let d = Duration::from_secs(30);
        assert_eq!(configured(None, d, "x").unwrap(), d);
        assert_eq!(
            configured(Some(Duration::from_millis(5)), d, "x").unwrap(),
            Duration::from_millis(5)
        );
        let e = configured(Some(Duration::ZERO), d, "attempt_timeout").unwrap_err();
        assert!(e.text().starts_with("attempt_timeout is zero"), "{e}");
        assert!(e.text().contains("(30 s)"), "{e}");
        assert_eq!(e.section(), Section::ZeroTimeout);
    }

    /// A policy that answers after `delay`.
    #[derive(Debug)]
    struct Slow(Duration);

    #[allow(elided_lifetimes_in_paths)]
    #[async_trait]
    impl Policy for Slow {
        async fn send(&self, _: &Context, _: &mut Request, _: &[Arc<dyn Policy>]) -> PolicyResult {
            tokio::time::sleep(self.0).await;
            Ok(AsyncRawResponse::from_bytes(
                StatusCode::Ok,
                Headers::new(),
                "",
            ))
        }
    }

    async fn run(policy: &AttemptTimeoutPolicy, next: Duration) -> PolicyResult {
        let mut request = Request::new(
            azure_core::http::Url::parse("https://example.test/").unwrap(),
            Method::Post,
        );
        let next: Vec<Arc<dyn Policy>> = vec![Arc::new(Slow(next))];
        policy.send(&Context::new(), &mut request, &next).await
    }

    #[tokio::test]
    async fn attempts_are_counted_when_the_context_asks() {
        let policy = AttemptTimeoutPolicy::new(Duration::from_secs(1));
        let ctx = Context::new().with_value(Attempts::default());
        let next: Vec<Arc<dyn Policy>> = vec![Arc::new(Slow(Duration::ZERO))];
        for _ in 0..3 {
            let mut request = Request::new(
                azure_core::http::Url::parse("https://example.test/").unwrap(),
                Method::Post,
            );
            policy.send(&ctx, &mut request, &next).await.unwrap();
        }
        assert_eq!(ctx.value::<Attempts>().map(Attempts::count), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_becomes_a_retriable_io_error() {
        let policy = AttemptTimeoutPolicy::new(Duration::from_secs(1));
        let ok = run(&policy, Duration::from_millis(999)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::Ok);

        let error = run(&policy, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error.kind(), ErrorKind::Io), "{error:?}");
        let t = attempt_timed_out(&error).expect("marker in the chain");
        assert_eq!((t.limit, t.attempt), (Duration::from_secs(1), 1));
        assert_eq!(
            error.to_string(),
            "attempt 1 got no response within 1 s (attempt_timeout)"
        );
        // Found through the retry policy's wrapping too.
        let wrapped = error.with_context("retry policy expired");
        assert!(attempt_timed_out(&wrapped).is_some());
        assert!(attempt_timed_out(&azure_core::Error::with_message(ErrorKind::Io, "x")).is_none());

        let empty: Vec<Arc<dyn Policy>> = Vec::new();
        let mut request = Request::new(
            azure_core::http::Url::parse("https://example.test/").unwrap(),
            Method::Post,
        );
        assert!(
            policy
                .send(&Context::new(), &mut request, &empty)
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_names_itself_and_the_stage() {
        let ok = budget(Duration::from_secs(2), || "x", async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        let e = budget(
            Duration::from_millis(1500),
            || "Microsoft Entra ID token endpoint",
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.section(), Section::TokenTimeout);
        assert!(
            e.text()
                .starts_with("The token request did not complete within 1.5 s (token_timeout)"),
            "{e}"
        );
        assert!(
            e.text().contains("Microsoft Entra ID token endpoint"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_for_durations_the_clock_cannot_hold() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
            5
        };
        assert_eq!(within(Duration::MAX, slow).await.unwrap(), 5);
    }
}
