//! Observability, against the emulator over HTTPS:
//!
//! - **Spans.** Each `get_token` or `get_token_info` call is one `get_token` span (target
//!   `azure_pipelines_credential`) whose fields, as it closes, say which credential, scopes and
//!   tenant, the outcome (`miss`, `hit`, `joined a request in flight`, `request with claims`, or
//!   the failure's troubleshooting anchor) and how many HTTP requests (attempts, retries
//!   included) the call made; the counts are checked against the emulator's counters. No span or
//!   event field holds a secret.
//! - **Context forwarding.** The caller's `method_options.context` reaches the HTTP pipeline of
//!   the requests its call starts (seen by a per-call and a per-try policy of the caller's
//!   `client_options`); a request shared by several callers carries the context of the caller
//!   that started it.
//!
//! Each test records the spans of its own thread (a current-thread runtime, on which the
//! credential's request tasks and the emulator run too), so tests do not see each other's spans.
//!
//! Not here: the `hit, refreshing in the background` outcome and the `token_refresh` span. A
//! token reaches its refresh window only as time passes (Entra's `refresh_in` is at least a
//! second, and the credential reads the system clock), and these tests do not wait on the real
//! clock; that case belongs with the crate's manual-clock tests in `src/tests/`.

mod common;

use async_trait::async_trait;
use azure_core::{
    credentials::{TokenCredential, TokenRequestOptions},
    http::{
        Context, Request,
        policies::{Policy, PolicyResult},
    },
};
use azure_pipelines_credential::{AzurePipelinesCredential, TokenRequestContext, is_unavailable};
use azure_pipelines_emulator::{Emulator, Endpoint, FaultTrigger};
use common::{
    CHALLENGE_CLAIMS, OTHER_TENANT, STORAGE, TENANT, VAULT,
    emulator::{counts, credential, credential_with, options},
    faults::status,
    requests::{with_claims, with_tenant},
    spans::{ClosedSpan, Recorder},
};
use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

const TARGET: &str = "azure_pipelines_credential";
const SPAN: &str = "get_token";
const MANAGEMENT: &str = "https://management.azure.com/.default";

/// The spans closed after `calls` calls: exactly `calls` of them are the credential's, and all
/// of those are `get_token` spans (no `token_refresh`, nothing else of the credential's).
async fn spans_of(spans: &Recorder, calls: usize) -> Vec<ClosedSpan> {
    let ours: Vec<ClosedSpan> = spans
        .take_after(SPAN, calls)
        .await
        .into_iter()
        .filter(|s| s.target == TARGET)
        .collect();
    let names: Vec<&str> = ours.iter().map(|s| s.name).collect();
    assert_eq!(names, vec![SPAN; calls], "{ours:#?}");
    ours
}

/// The one span of one call.
async fn span_of(spans: &Recorder) -> ClosedSpan {
    spans_of(spans, 1).await.remove(0)
}

#[track_caller]
fn assert_span(span: &ClosedSpan, outcome: &str, requests: u64) {
    assert_eq!(
        (span.outcome(), span.requests()),
        (outcome, requests),
        "{span:#?}"
    );
}

/// The compact JWTs in `text` that `emulator` signed: its OIDC tokens and access tokens.
fn emulator_jwts_in(emulator: &Emulator, text: &str) -> usize {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .filter(|word| word.len() > 40 && word.matches('.').count() == 2)
        .filter(|word| emulator.verify_token(word).is_some())
        .count()
}

/// No span or event field recorded so far holds the job's System.AccessToken, any of `others`
/// or the signature of one that is a JWT, or any JWT the emulator signed (every OIDC token and
/// access token it handed out). The failure messages never print the captured text, which would
/// hold the secret.
#[track_caller]
fn assert_no_secret(spans: &Recorder, emulator: &Emulator, others: &[&str]) {
    let text = spans.text();
    assert!(
        text.contains("access token exchanged"),
        "the credential's events were not recorded"
    );
    let system = emulator.config().system_access_token.as_str();
    let signatures = others
        .iter()
        .filter(|s| s.matches('.').count() == 2)
        .filter_map(|s| s.rsplit('.').next());
    for (i, secret) in std::iter::once(system)
        .chain(others.iter().copied())
        .chain(signatures)
        .enumerate()
    {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret),
            "secret #{i} reached a span or event field"
        );
    }
    assert_eq!(
        emulator_jwts_in(emulator, &text),
        0,
        "a token the emulator signed reached a span or event field"
    );
}

/// Polls `done` while the emulator and the credential's tasks run; bounded (1,000 polls, 5 ms
/// apart), and never a timing assertion.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the condition was not reached");
}

#[tokio::test]
async fn a_miss_then_hits_one_span_each_with_its_requests() {
    let (spans, _thread) = Recorder::install();
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);

    let first = credential.get_token(&[STORAGE], None).await.unwrap();
    let miss = span_of(&spans).await;
    assert_eq!(counts(&emulator), (1, 1));
    assert_span(&miss, "miss", 2);
    let fields: Vec<&str> = miss.fields.keys().copied().collect();
    assert_eq!(
        fields,
        ["credential", "outcome", "requests", "scopes", "tenant"]
    );
    assert_eq!(miss.field("credential"), Some("AzurePipelinesCredential"));
    assert_eq!(
        miss.field("scopes"),
        Some(format!("{:?}", [STORAGE]).as_str())
    );
    assert_eq!(miss.field("tenant"), Some(TENANT));

    // A hit, through get_token and through get_token_info: a span each, no request.
    let again = credential.get_token(&[STORAGE], None).await.unwrap();
    let info = credential.get_token_info(&[STORAGE], None).await.unwrap();
    assert_eq!(again.token.secret(), first.token.secret());
    assert_eq!(info.token.secret(), first.token.secret());
    for hit in spans_of(&spans, 2).await {
        assert_span(&hit, "hit", 0);
        assert_eq!(hit.field("tenant"), Some(TENANT));
    }
    assert_eq!(counts(&emulator), (1, 1));

    // Another scope: the OIDC token is reused, so one request.
    let vault = credential.get_token_info(&[VAULT], None).await.unwrap();
    let miss = span_of(&spans).await;
    assert_span(&miss, "miss", 1);
    assert_eq!(
        miss.field("scopes"),
        Some(format!("{:?}", [VAULT]).as_str())
    );
    assert_eq!(counts(&emulator), (1, 2));

    // The secret check can fail: it finds the token when it is there.
    assert_eq!(
        emulator_jwts_in(&emulator, &format!("token={};", first.token.secret())),
        1
    );
    assert_no_secret(
        &spans,
        &emulator,
        &[first.token.secret(), vault.token.secret()],
    );
}

#[tokio::test]
async fn concurrent_callers_of_a_cold_key_one_miss_and_the_others_joined() {
    const CALLERS: usize = 4;
    let (spans, _thread) = Recorder::install();
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);

    let hold = emulator.control().hold(Endpoint::Oidc);
    let called = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (credential, called) = (credential.clone(), called.clone());
            tokio::spawn(async move {
                // The call starts or joins the request before its first await, so in the same
                // turn as this count.
                called.fetch_add(1, Ordering::SeqCst);
                credential.get_token(&[STORAGE], None).await
            })
        })
        .collect();
    until(|| {
        called.load(Ordering::SeqCst) == CALLERS && emulator.control().counters().oidc_requests == 1
    })
    .await;
    hold.release();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap().token.secret().to_owned());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every caller got the one token");
    assert_eq!(counts(&emulator), (1, 1));

    let mut closed = spans_of(&spans, CALLERS).await;
    closed.sort_by(|a, b| a.outcome().cmp(b.outcome()));
    let outcomes: Vec<(&str, u64)> = closed.iter().map(|s| (s.outcome(), s.requests())).collect();
    assert_eq!(
        outcomes,
        [
            ("joined a request in flight", 0),
            ("joined a request in flight", 0),
            ("joined a request in flight", 0),
            ("miss", 2),
        ]
    );
    assert_no_secret(&spans, &emulator, &[&tokens[0]]);
}

#[tokio::test]
async fn claims_refused_tenants_failures_and_retries_have_their_outcome() {
    let (spans, _thread) = Recorder::install();
    let emulator = Emulator::start().await.unwrap();
    let credential = credential(&emulator);
    let mut handed_out = Vec::new();

    handed_out.push(credential.get_token(&[STORAGE], None).await.unwrap());
    assert_span(&span_of(&spans).await, "miss", 2);

    // Claims: always to Entra ID (the OIDC token is reused).
    handed_out.push(
        credential
            .get_token(&[STORAGE], with_claims(CHALLENGE_CLAIMS))
            .await
            .unwrap(),
    );
    let claims = span_of(&spans).await;
    assert_span(&claims, "request with claims", 1);
    assert_eq!(claims.field("tenant"), Some(TENANT));
    assert_eq!(counts(&emulator), (1, 2));

    // A tenant that is not allowed: refused before any request, the span's outcome is the
    // error's troubleshooting anchor. The tenant was not resolved, so the span names none.
    let refused = credential
        .get_token(&[STORAGE], with_tenant(OTHER_TENANT))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("#requested-tenant-not-allowed"),
        "{refused}"
    );
    let span = span_of(&spans).await;
    assert_span(&span, "requested-tenant-not-allowed", 0);
    assert_eq!(span.field("tenant"), None, "{span:#?}");
    assert_eq!(counts(&emulator), (1, 2));

    // One 503 from the token endpoint, absorbed by a retry: three attempts in all.
    emulator
        .control()
        .inject_fault(Endpoint::Token, status(503), FaultTrigger::Count(1));
    let fresh = credential_with(&emulator, options(&emulator));
    handed_out.push(fresh.get_token(&[MANAGEMENT], None).await.unwrap());
    assert_span(&span_of(&spans).await, "miss", 3);
    assert_eq!(counts(&emulator), (2, 4));

    // A failure after a request: a System.AccessToken that Azure DevOps rejects (401, not
    // retried). The outcome is the failure's anchor, the request is counted.
    let wrong = "Zm9yZ2VkLXN5c3RlbS1hY2Nlc3MtdG9rZW4tMDEyMzQ1Njc4OQ";
    let config = emulator.config();
    let rejected = AzurePipelinesCredential::new(
        config.tenant_id.clone(),
        config.client_id.clone(),
        &config.service_connection_id,
        wrong,
        Some(options(&emulator)),
    )
    .unwrap();
    let e = rejected.get_token(&[STORAGE], None).await.unwrap_err();
    assert!(!is_unavailable(&e), "{e}");
    assert!(
        e.to_string().contains("#systemaccesstoken-rejected-401"),
        "{e}"
    );
    assert_span(&span_of(&spans).await, "systemaccesstoken-rejected-401", 1);
    assert_eq!(counts(&emulator), (3, 4));

    let mut secrets: Vec<&str> = handed_out.iter().map(|t| t.token.secret()).collect();
    secrets.push(wrong);
    assert_no_secret(&spans, &emulator, &secrets);
}

/// A value of the caller's, put in the context of its call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marker(&'static str);

/// A pipeline policy that records, for each request it sees, the endpoint (`oidc` or `token`)
/// and the [`Marker`] in the request's context.
#[derive(Debug, Default)]
struct SeenMarkers(Mutex<Vec<(&'static str, Option<&'static str>)>>);

impl SeenMarkers {
    fn take(&self) -> Vec<(&'static str, Option<&'static str>)> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

// `Context` without its lifetime, as the trait writes it (see src/timeout.rs).
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl Policy for SeenMarkers {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let path = request.url().path();
        let endpoint = if path.ends_with("/oidctoken") {
            "oidc"
        } else if path.ends_with("/oauth2/v2.0/token") {
            "token"
        } else {
            "other"
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((endpoint, ctx.value::<Marker>().map(|m| m.0)));
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The emulator's credential with `per_call` and `per_try` in its client options.
fn seen_by(
    emulator: &Emulator,
    per_call: &Arc<SeenMarkers>,
    per_try: &Arc<SeenMarkers>,
) -> Arc<AzurePipelinesCredential> {
    let mut options = options(emulator);
    let client = &mut options.credential_options.client_options;
    client.per_call_policies.push(per_call.clone());
    client.per_try_policies.push(per_try.clone());
    credential_with(emulator, options)
}

/// Options whose context holds `Marker(marker)`.
fn marked(marker: &'static str) -> Option<TokenRequestOptions<'static>> {
    let mut options = TokenRequestOptions::default();
    options.method_options.context = Context::new().with_value(Marker(marker));
    Some(options)
}

#[tokio::test]
async fn the_callers_context_reaches_the_requests_its_call_starts() {
    let emulator = Emulator::start().await.unwrap();
    let (per_call, per_try) = (Arc::default(), Arc::default());
    let credential = seen_by(&emulator, &per_call, &per_try);

    // A miss: the OIDC request and the token exchange.
    credential
        .get_token(&[STORAGE], marked("call-1"))
        .await
        .unwrap();
    let both = [("oidc", Some("call-1")), ("token", Some("call-1"))];
    assert_eq!(per_call.take(), both);
    assert_eq!(per_try.take(), both);

    // A hit starts no request.
    credential
        .get_token(&[STORAGE], marked("call-2"))
        .await
        .unwrap();
    assert_eq!((per_call.take(), per_try.take()), (vec![], vec![]));
    assert_eq!(counts(&emulator), (1, 1));

    // With a TokenRequestContext in the same context: claims go to Entra ID, with the marker.
    let mut options: TokenRequestOptions<'static> = TokenRequestContext {
        claims: Some(CHALLENGE_CLAIMS.to_owned()),
        ..Default::default()
    }
    .into();
    options.method_options.context = options.method_options.context.with_value(Marker("call-3"));
    credential
        .get_token_info(&[STORAGE], Some(options))
        .await
        .unwrap();
    assert_eq!(per_call.take(), [("token", Some("call-3"))]);
    assert_eq!(per_try.take(), [("token", Some("call-3"))]);
    assert_eq!(counts(&emulator), (1, 2));

    // A retried request: one call through the per-call policy, each attempt through the
    // per-try policy, all with the caller's marker.
    emulator
        .control()
        .inject_fault(Endpoint::Token, status(503), FaultTrigger::Count(1));
    credential
        .get_token(&[VAULT], marked("call-4"))
        .await
        .unwrap();
    assert_eq!(per_call.take(), [("token", Some("call-4"))]);
    assert_eq!(
        per_try.take(),
        [("token", Some("call-4")), ("token", Some("call-4"))]
    );
    assert_eq!(counts(&emulator), (1, 4));

    // Without a context, nothing of another call's leaks in.
    credential.get_token(&[MANAGEMENT], None).await.unwrap();
    assert_eq!(per_try.take(), [("token", None)]);
}

#[tokio::test]
async fn a_shared_request_carries_the_context_of_the_caller_that_started_it() {
    let (spans, _thread) = Recorder::install();
    let emulator = Emulator::start().await.unwrap();
    let (per_call, per_try) = (Arc::default(), Arc::default());
    let credential = seen_by(&emulator, &per_call, &per_try);

    // `first` starts the request for a cold key and is held at the OIDC endpoint; `second`, for
    // the same key, joins it; `third`, for another key, starts its own exchange, which needs the
    // OIDC token that `first`'s request is fetching.
    let hold = emulator.control().hold(Endpoint::Oidc);
    let called = Arc::new(AtomicUsize::new(0));
    let call = |scope: &'static str, marker: &'static str| {
        let (credential, called) = (credential.clone(), called.clone());
        tokio::spawn(async move {
            called.fetch_add(1, Ordering::SeqCst);
            credential.get_token(&[scope], marked(marker)).await
        })
    };
    let first = call(STORAGE, "first");
    until(|| emulator.control().counters().oidc_requests == 1).await;
    let second = call(STORAGE, "second");
    let third = call(VAULT, "third");
    until(|| called.load(Ordering::SeqCst) == 3).await;
    // Let `third`'s request task run up to its wait for the OIDC token. (Were it later, it would
    // reuse the token that `first`'s request fetched: either way, no OIDC request of its own.)
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    hold.release();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    assert_eq!(first.token.secret(), second.token.secret());
    assert_eq!(counts(&emulator), (1, 2));

    // `second` joined: its span says so, and no request carried its context.
    let mut closed = spans_of(&spans, 3).await;
    closed.sort_by(|a, b| (a.outcome(), a.requests()).cmp(&(b.outcome(), b.requests())));
    let outcomes: Vec<(&str, u64)> = closed.iter().map(|s| (s.outcome(), s.requests())).collect();
    assert_eq!(
        outcomes,
        [("joined a request in flight", 0), ("miss", 1), ("miss", 2)]
    );
    for seen in [per_call.take(), per_try.take()] {
        let mut seen = seen;
        seen.sort();
        assert_eq!(
            seen,
            [
                ("oidc", Some("first")),
                ("token", Some("first")),
                ("token", Some("third")),
            ]
        );
    }
}
