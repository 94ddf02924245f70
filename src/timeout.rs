//! Timeouts, so that a hung endpoint never blocks `get_token` forever.
//!
//! Two limits, both on tokio's clock:
//! - **per attempt** ([`AttemptTimeoutPolicy`]): a per-try policy of the azure_core pipeline, so
//!   it sits *inside* the retry policy. An attempt that produces no response headers in time
//!   fails with an [`ErrorKind::Io`] error, which azure_core's retry policy treats like a
//!   dropped connection: it retries it with its usual back-off, up to its own limits.
//! - **per acquisition** ([`within_budget`]): around everything one token acquisition does (the
//!   OIDC fetch, the exchange, every retry and `Retry-After` wait), so that no retry setting can
//!   hold a caller longer than the budget.

use async_trait::async_trait;
use azure_core::{
    error::ErrorKind,
    http::{
        Context, Request,
        policies::{Policy, PolicyResult, RetryPolicyCount},
    },
};
use std::{error::Error as StdError, fmt, future::Future, sync::Arc, time::Duration};

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
) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(format!(
            "{name} is zero, so every request would time out at once. Leave it None for the \
             default ({}) or give a positive duration (Duration::MAX for no limit).",
            seconds(default)
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

/// The per-try policy that bounds each attempt.
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
        match tokio::time::timeout(self.limit, first.send(ctx, request, rest)).await {
            Ok(result) => result,
            Err(_elapsed) => {
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
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(t) = e.downcast_ref::<AttemptTimedOut>() {
            return Some(*t);
        }
        if let Some(inner) = e.downcast_ref::<azure_core::Error>()
            && let Some(t) = inner.downcast_ref::<AttemptTimedOut>()
        {
            return Some(*t);
        }
        current = e.source();
    }
    None
}

/// Runs one token acquisition within `budget`.
///
/// On expiry the acquisition is dropped (cancelling the request in flight) and the error names
/// the budget and `stage()`, the endpoint that was being waited for.
pub(crate) async fn within_budget<T>(
    budget: Duration,
    stage: impl FnOnce() -> &'static str,
    acquisition: impl Future<Output = azure_core::Result<T>>,
) -> azure_core::Result<T> {
    match tokio::time::timeout(budget, acquisition).await {
        Ok(result) => result,
        Err(_elapsed) => Err(crate::error::failed(format!(
            "The token request did not complete within {} (token_timeout): it was still \
             waiting for the {} after every retry that fitted in that time. Check the network \
             and the endpoint's status, or raise AzurePipelinesCredentialOptions::token_timeout \
             if the endpoint is just slow.",
            seconds(budget),
            stage()
        ))),
    }
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
        assert_eq!(configured(None, d, "x"), Ok(d));
        assert_eq!(
            configured(Some(Duration::from_millis(5)), d, "x"),
            Ok(Duration::from_millis(5))
        );
        let e = configured(Some(Duration::ZERO), d, "attempt_timeout").unwrap_err();
        assert!(e.starts_with("attempt_timeout is zero"), "{e}");
        assert!(e.contains("(30 s)"), "{e}");
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
        assert!(attempt_timed_out(&crate::error::failed("other")).is_none());

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
        let ok = within_budget(Duration::from_secs(2), || "x", async { Ok(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        let e = within_budget(
            Duration::from_millis(1500),
            || "Microsoft Entra ID token endpoint",
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("AzurePipelinesCredential authentication failed. The token request did not complete within 1.5 s (token_timeout)"), "{text}");
        assert!(text.contains("Microsoft Entra ID token endpoint"), "{text}");
        assert!(matches!(e.kind(), ErrorKind::Credential));
    }
}
