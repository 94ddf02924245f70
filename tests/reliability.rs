//! Reliability against the emulator over HTTPS: timeouts on hung endpoints, retries of
//! transient faults on both endpoints (with exact request counts), a bounded soak under 30 %
//! injected faults, cancellation at random points, and HTTPS enforcement.
//!
//! Tests assert outcomes and request counts, never elapsed time (one test checks a *lower*
//! bound, that `Retry-After` was waited for). Every loop is bounded.

use azure_core::{
    credentials::{TokenCredential, TokenRequestOptions},
    error::ErrorKind,
};
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, TokenRequestContext,
    clock::{Clock, ManualClock},
    emulator::{Counters, Emulator, Endpoint, Fault, FaultTrigger},
    jwt::decode_claims,
};
use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

const STORAGE: &str = "https://storage.azure.com/.default";
const PREFIX: &str = "AzurePipelinesCredential authentication failed.";
const OIDC_NAME: &str = "Azure DevOps OIDC endpoint";
const TOKEN_NAME: &str = "Microsoft Entra ID token endpoint";
/// The emulator's client options retry 3 times: 4 attempts in all.
const ATTEMPTS: u64 = 4;

fn options(emulator: &Emulator) -> AzurePipelinesCredentialOptions {
    emulator.credential_options()
}

fn build(
    emulator: &Emulator,
    options: AzurePipelinesCredentialOptions,
) -> azure_core::Result<Arc<AzurePipelinesCredential>> {
    emulator.credential(options)
}

fn counts(c: &Counters) -> (u64, u64) {
    (c.oidc_requests, c.token_requests)
}

fn name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Oidc => OIDC_NAME,
        Endpoint::Token => TOKEN_NAME,
    }
}

/// Requests (OIDC, token) that one successful acquisition makes when `endpoint` answered
/// `extra` times before it succeeded.
fn expected(endpoint: Endpoint, extra: u64) -> (u64, u64) {
    match endpoint {
        Endpoint::Oidc => (1 + extra, 1),
        Endpoint::Token => (1, 1 + extra),
    }
}

/// Requests (OIDC, token) of one acquisition that failed at `endpoint` after one request.
fn failed_at(endpoint: Endpoint) -> (u64, u64) {
    match endpoint {
        Endpoint::Oidc => (1, 0),
        Endpoint::Token => (1, 1),
    }
}

/// Asserts a clear error: kind Credential, the crate's wording, and `needles`.
fn assert_clear(error: &azure_core::Error, needles: &[&str]) {
    assert!(matches!(error.kind(), ErrorKind::Credential), "{error:?}");
    let text = error.to_string();
    assert!(text.starts_with(PREFIX), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hung_endpoint_times_out_per_attempt_and_each_attempt_is_retried() {
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        let emulator = Emulator::start().await.unwrap();
        let credential = build(
            &emulator,
            AzurePipelinesCredentialOptions {
                // Long enough for a new connection and TLS handshake on a busy machine, so that
                // every attempt reaches the emulator and is counted.
                attempt_timeout: Some(Duration::from_millis(500)),
                token_timeout: Some(Duration::from_secs(20)),
                ..options(&emulator)
            },
        )
        .unwrap();
        emulator
            .control()
            .inject_fault(endpoint, Fault::Hang, FaultTrigger::Rate(1.0));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_clear(
            &error,
            &[
                &format!(
                    "The {} did not answer within 0.5 s (attempt_timeout)",
                    name(endpoint)
                ),
                "4 attempts in all",
                "raise AzurePipelinesCredentialOptions::attempt_timeout",
            ],
        );
        let (oidc, token) = counts(&emulator.control().counters());
        match endpoint {
            Endpoint::Oidc => assert_eq!((oidc, token), (ATTEMPTS, 0)),
            Endpoint::Token => assert_eq!((oidc, token), (1, ATTEMPTS)),
        }

        emulator.control().clear_faults();
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
        // The OIDC token fetched before the token endpoint hung is reused.
        let after = counts(&emulator.control().counters());
        match endpoint {
            Endpoint::Oidc => assert_eq!(after, (ATTEMPTS + 1, 1), "{endpoint:?}"),
            Endpoint::Token => assert_eq!(after, (1, ATTEMPTS + 1), "{endpoint:?}"),
        }
    }
}

#[tokio::test]
async fn the_overall_budget_bounds_an_acquisition_whatever_the_retry_policy() {
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        let emulator = Emulator::start().await.unwrap();
        let credential = build(
            &emulator,
            AzurePipelinesCredentialOptions {
                // Attempts would wait a minute each; the budget ends it first.
                attempt_timeout: Some(Duration::from_secs(60)),
                token_timeout: Some(Duration::from_secs(1)),
                ..options(&emulator)
            },
        )
        .unwrap();
        emulator
            .control()
            .inject_fault(endpoint, Fault::Hang, FaultTrigger::Count(1));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_clear(
            &error,
            &[
                "The token request did not complete within 1 s (token_timeout)",
                &format!("still waiting for the {}", name(endpoint)),
                "raise AzurePipelinesCredentialOptions::token_timeout",
            ],
        );
        assert_eq!(
            counts(&emulator.control().counters()),
            failed_at(endpoint),
            "one attempt, cut short: {endpoint:?}"
        );

        // The shared OIDC fetch runs in its own task, bounded by the same budget; give it the
        // moment it needs to wind down, so the next call starts a fresh one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
        assert_eq!(
            counts(&emulator.control().counters()),
            expected(endpoint, 1),
            "{endpoint:?}"
        );
    }
}

#[tokio::test]
async fn zero_timeouts_are_refused_at_construction() {
    let emulator = Emulator::start().await.unwrap();
    for (options, field) in [
        (
            AzurePipelinesCredentialOptions {
                attempt_timeout: Some(Duration::ZERO),
                ..options(&emulator)
            },
            "attempt_timeout is zero",
        ),
        (
            AzurePipelinesCredentialOptions {
                token_timeout: Some(Duration::ZERO),
                ..options(&emulator)
            },
            "token_timeout is zero",
        ),
    ] {
        let error = build(&emulator, options).unwrap_err();
        assert_clear(&error, &[field]);
    }
    // No limit at all is allowed.
    let credential = build(
        &emulator,
        AzurePipelinesCredentialOptions {
            attempt_timeout: Some(Duration::MAX),
            token_timeout: Some(Duration::MAX),
            ..options(&emulator)
        },
    )
    .unwrap();
    credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(counts(&emulator.control().counters()), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Retries: azure_core's retry policy, on both endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn transient_faults_on_either_endpoint_are_retried_with_exact_counts() {
    let emulator = Emulator::start().await.unwrap();
    let faults = [
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Status {
            status: 429,
            retry_after: Some(0),
        },
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        Fault::Status {
            status: 504,
            retry_after: None,
        },
        Fault::Status {
            status: 408,
            retry_after: None,
        },
        Fault::DropConnection,
    ];
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        for fault in &faults {
            for times in [1u32, 3] {
                emulator.control().reset_counters();
                let credential = build(&emulator, options(&emulator)).unwrap();
                emulator.control().inject_fault(
                    endpoint,
                    fault.clone(),
                    FaultTrigger::Count(times),
                );
                let token = credential
                    .get_token(&[STORAGE], None)
                    .await
                    .unwrap_or_else(|e| panic!("{endpoint:?} {fault:?} x{times}: {e}"));
                assert!(emulator.verify_token(token.token.secret()).is_some());
                assert_eq!(
                    counts(&emulator.control().counters()),
                    expected(endpoint, u64::from(times)),
                    "{endpoint:?} {fault:?} x{times}"
                );
            }
        }
    }
}

#[tokio::test]
async fn retries_give_up_with_a_clear_error_and_the_next_call_recovers() {
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        for fault in [
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::DropConnection,
        ] {
            let emulator = Emulator::start().await.unwrap();
            let credential = build(&emulator, options(&emulator)).unwrap();
            emulator
                .control()
                .inject_fault(endpoint, fault.clone(), FaultTrigger::Rate(1.0));
            let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
            let needle = match (&fault, endpoint) {
                (Fault::DropConnection, _) => {
                    format!(
                        "The request to the {} could not be completed",
                        name(endpoint)
                    )
                }
                (_, Endpoint::Oidc) => {
                    "The OIDC endpoint answered HTTP 503 Service Unavailable, after the retries"
                        .to_owned()
                }
                // Entra's 503 body is an AADSTS error, which the message quotes.
                (_, Endpoint::Token) => "Microsoft Entra ID is temporarily unavailable".to_owned(),
            };
            assert_clear(&error, &[&needle]);
            let (oidc, token) = counts(&emulator.control().counters());
            match endpoint {
                Endpoint::Oidc => assert_eq!((oidc, token), (ATTEMPTS, 0), "{fault:?}"),
                Endpoint::Token => assert_eq!((oidc, token), (1, ATTEMPTS), "{fault:?}"),
            }
            emulator.control().clear_faults();
            credential.get_token(&[STORAGE], None).await.unwrap();
        }
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        let emulator = Emulator::start().await.unwrap();
        let credential = build(&emulator, options(&emulator)).unwrap();
        emulator.control().inject_fault(
            endpoint,
            Fault::Status {
                status: 429,
                retry_after: Some(1),
            },
            FaultTrigger::Count(1),
        );
        let started = tokio::time::Instant::now();
        credential.get_token(&[STORAGE], None).await.unwrap();
        // A lower bound only: the retry cannot have come sooner than the server asked (the
        // policy's own delay is 10 ms).
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{endpoint:?}: retried before Retry-After"
        );
        assert_eq!(
            counts(&emulator.control().counters()),
            expected(endpoint, 1)
        );
    }
}

#[tokio::test]
async fn malformed_json_is_a_clear_error_and_the_next_call_succeeds() {
    for (endpoint, needle) in [
        (
            Endpoint::Oidc,
            "The OIDC endpoint's response is not valid JSON",
        ),
        (Endpoint::Token, "token response is not a JSON object"),
    ] {
        let emulator = Emulator::start().await.unwrap();
        let credential = build(&emulator, options(&emulator)).unwrap();
        emulator
            .control()
            .inject_fault(endpoint, Fault::MalformedJson, FaultTrigger::Count(1));
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_clear(&error, &[needle, "HTTP 200"]);
        // A 200 is not retried by the pipeline: one request.
        assert_eq!(counts(&emulator.control().counters()), failed_at(endpoint));
        let token = credential.get_token(&[STORAGE], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
        assert_eq!(
            counts(&emulator.control().counters()),
            expected(endpoint, 1),
            "{endpoint:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------------

const SOAK_CALLS: usize = 1000;
const SOAK_TASKS: usize = 16;
const SOAK_BATCHES: usize = 40;
/// How far the clocks move between batches.
const SOAK_STEP: i64 = 60;
/// Each of the four fault kinds hits a request with this probability, independently:
/// 1 - (1 - 0.085)^4 = 30 % of requests get a fault.
const FAULT_RATE: f64 = 0.085;

/// What the soak observed; printed and asserted on.
#[derive(Debug, Default)]
struct Soak {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Calls per error message (its first 100 characters: no request IDs).
    messages: Mutex<std::collections::BTreeMap<String, u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_a_thousand_calls_under_thirty_percent_faults() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.control().clone();
    // Two-minute tokens on a manual clock moved 60 s per batch: a token is in its refresh
    // window one batch after it was issued and past its stop time (108 s) the batch after, so
    // each of the six keys is refreshed in the background at almost every batch, and waits on
    // a hard miss whenever that refresh failed, without sleeping. The emulator's clock moves with the manual
    // clock (its skew), so OIDC tokens expire on the same timeline: one every nine batches.
    control.set_access_token_lifetime(Duration::from_secs(120));
    let clock = ManualClock::starting_now();
    let credential = build(
        &emulator,
        AzurePipelinesCredentialOptions {
            clock: Some(Arc::new(clock.clone())),
            attempt_timeout: Some(Duration::from_secs(5)),
            token_timeout: Some(Duration::from_secs(20)),
            ..options(&emulator)
        },
    )
    .unwrap();
    for endpoint in [Endpoint::Oidc, Endpoint::Token] {
        for fault in [
            Fault::Status {
                status: 503,
                retry_after: None,
            },
            Fault::Status {
                status: 429,
                retry_after: Some(1),
            },
            Fault::DropConnection,
            Fault::MalformedJson,
        ] {
            control.inject_fault(endpoint, fault, FaultTrigger::Rate(FAULT_RATE));
        }
    }

    let scopes: [&'static str; 3] = [
        STORAGE,
        "https://vault.azure.net/.default",
        "https://management.azure.com/.default",
    ];
    let soak = Arc::new(Soak::default());
    let barrier = Arc::new(tokio::sync::Barrier::new(SOAK_TASKS));
    let per_batch = SOAK_CALLS / SOAK_BATCHES;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..SOAK_TASKS)
        .map(|task| {
            let (credential, clock, soak, barrier, control) = (
                credential.clone(),
                clock.clone(),
                soak.clone(),
                barrier.clone(),
                control.clone(),
            );
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for batch in 0..SOAK_BATCHES {
                    for k in (task..per_batch).step_by(SOAK_TASKS) {
                        let call = batch * per_batch + k;
                        let scope = scopes[call % scopes.len()];
                        // One call in four asks for a CAE token: cached apart (6 keys in all).
                        let options: Option<TokenRequestOptions<'static>> =
                            (call % 4 == 3).then(|| {
                                TokenRequestContext {
                                    enable_cae: true,
                                    ..Default::default()
                                }
                                .into()
                            });
                        match credential.get_token_info(&[scope], options).await {
                            Ok(info) => {
                                // The clock moves only between batches, so "now" is the
                                // time of return.
                                assert!(
                                    info.expires_on > clock.now(),
                                    "an expired token was returned (call {call})"
                                );
                                tokens.push((scope, info.token.secret().to_owned()));
                                soak.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                assert!(matches!(error.kind(), ErrorKind::Credential));
                                let text = error.to_string();
                                assert!(text.starts_with(PREFIX), "{text}");
                                let first_line = text.lines().next().unwrap_or_default();
                                let shape: String = first_line
                                    .trim_start_matches(PREFIX)
                                    .chars()
                                    .take(100)
                                    .collect();
                                *soak.messages.lock().unwrap().entry(shape).or_default() += 1;
                                soak.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if barrier.wait().await.is_leader() {
                        clock.advance(time::Duration::seconds(SOAK_STEP));
                        control.set_clock_skew(SOAK_STEP * (batch as i64 + 1));
                    }
                    barrier.wait().await;
                }
                tokens
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let counters = control.counters();
    control.clear_faults();

    // Every token handed out was issued by the emulator, for the scope asked.
    let distinct: BTreeSet<&(&str, String)> = tokens.iter().collect();
    for (scope, token) in &distinct {
        assert!(emulator.verify_token(token).is_some(), "not the emulator's");
        let claims = decode_claims(token).unwrap();
        assert_eq!(
            claims["aud"].as_str(),
            Some(scope.trim_end_matches("/.default"))
        );
    }

    let ok = soak.ok.load(Ordering::Relaxed);
    let errors = soak.errors.load(Ordering::Relaxed);
    let requests = counters.oidc_requests + counters.token_requests;
    let exchanges = counters.access_tokens_issued;
    let faulted_oidc = counters.oidc_requests - counters.oidc_tokens_issued;
    let faulted_token = counters.token_requests - counters.access_tokens_issued;
    let ratio = requests as f64 / exchanges.max(1) as f64;
    println!(
        "soak: {SOAK_CALLS} get_token calls from {SOAK_TASKS} tasks in {SOAK_BATCHES} batches, {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "soak: {ok} tokens, {errors} errors, {} distinct tokens",
        distinct.len()
    );
    println!(
        "soak: OIDC requests {} ({} tokens issued, {faulted_oidc} faulted); token requests {} ({exchanges} issued, {faulted_token} faulted)",
        counters.oidc_requests, counters.oidc_tokens_issued, counters.token_requests
    );
    println!(
        "soak: {requests} requests / {exchanges} successful exchanges = {ratio:.2}; {} faulted responses in all",
        faulted_oidc + faulted_token
    );
    for (message, calls) in soak.messages.lock().unwrap().iter() {
        println!("soak: {calls} calls got:{message}");
    }

    assert_eq!(ok + errors, SOAK_CALLS as u64);
    assert!(
        ok > errors,
        "most calls succeed: retries and the cache absorb faults"
    );
    assert!(faulted_oidc + faulted_token > 0, "faults were injected");
    assert!(exchanges > 0);
    assert!(
        ratio < 10.0,
        "request storm: {ratio:.2} requests per exchange"
    );
    assert!(
        requests < SOAK_CALLS as u64,
        "fewer requests than calls: the cache serves most"
    );

    // After the faults stop, every key recovers.
    for scope in scopes {
        let token = credential.get_token(&[scope], None).await.unwrap();
        assert!(emulator.verify_token(token.token.secret()).is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*): the same cancellation points every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_dropped_at_random_points_never_poison_the_cache() {
    let emulator = Emulator::start().await.unwrap();
    let control = emulator.control();
    // Latency on both endpoints so that cancellation lands before, during and after requests.
    control.set_latency(Endpoint::Oidc, Duration::from_millis(3));
    control.set_latency(Endpoint::Token, Duration::from_millis(3));
    control.set_access_token_lifetime(Duration::from_secs(600));
    let clock = ManualClock::starting_now();
    let credential = build(
        &emulator,
        AzurePipelinesCredentialOptions {
            clock: Some(Arc::new(clock.clone())),
            ..options(&emulator)
        },
    )
    .unwrap();
    let scopes = [STORAGE, "https://vault.azure.net/.default"];
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#;
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let (mut calls, mut completed, mut cancelled) = (0u64, 0u64, 0u64);
    for round in 0..300 {
        let scope = scopes[rng.below(2) as usize];
        let options: Option<TokenRequestOptions<'static>> = match rng.below(5) {
            0 => Some(
                TokenRequestContext {
                    claims: Some(claims.to_owned()),
                    ..Default::default()
                }
                .into(),
            ),
            1 => Some(
                TokenRequestContext {
                    enable_cae: true,
                    ..Default::default()
                }
                .into(),
            ),
            _ => None,
        };
        // Up to 12 ms: the budget of a cold call is about 2 x 3 ms of latency plus TLS.
        let limit = Duration::from_micros(rng.below(12_000));
        calls += 1;
        match tokio::time::timeout(limit, credential.get_token(&[scope], options)).await {
            Ok(result) => {
                let token = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(emulator.verify_token(token.token.secret()).is_some());
                assert!(token.expires_on > clock.now());
                completed += 1;
            }
            Err(_) => cancelled += 1,
        }
        // Every 25 rounds the cached tokens move past their stop time; the emulator's clock
        // moves along, so that its OIDC tokens expire on the same timeline.
        if round % 25 == 24 {
            clock.advance(time::Duration::seconds(580));
            control.set_clock_skew(580 * (round / 25 + 1));
        }
    }
    println!("cancellation: {calls} calls, {completed} completed, {cancelled} dropped mid-way");
    assert!(
        cancelled > 0 && completed > 0,
        "both outcomes were exercised"
    );

    // Nothing is wedged: every key answers now, from the cache or the network.
    control.set_latency(Endpoint::Oidc, Duration::ZERO);
    control.set_latency(Endpoint::Token, Duration::ZERO);
    for scope in scopes {
        for cae in [false, true] {
            let options: Option<TokenRequestOptions<'static>> = cae.then(|| {
                TokenRequestContext {
                    enable_cae: true,
                    ..Default::default()
                }
                .into()
            });
            let token = tokio::time::timeout(
                Duration::from_secs(10),
                credential.get_token(&[scope], options),
            )
            .await
            .expect("a later call is never stuck on an abandoned one")
            .unwrap();
            assert!(emulator.verify_token(token.token.secret()).is_some());
        }
    }
    // Sane counts: abandoned requests ran to completion or were cut, never multiplied.
    let counters = control.counters();
    assert!(
        counters.token_requests <= calls + 4,
        "{counters:?} for {calls} calls"
    );
    assert!(
        counters.oidc_requests <= counters.token_requests,
        "{counters:?}"
    );
    println!(
        "cancellation: {} OIDC requests, {} token requests",
        counters.oidc_requests, counters.token_requests
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS enforcement
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn https_is_required_off_loopback_for_the_authority_at_construction() {
    let emulator = Emulator::start().await.unwrap();
    let port = emulator.http_addr().port();
    let cases = [
        (
            format!("http://login.example.com:{port}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://localhost.example.com:{port}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://127.0.0.1.nip.io:{port}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://10.0.0.1:{port}"),
            "uses http:// to a host that is not loopback",
        ),
        ("file:///etc/hosts".to_owned(), "has the scheme `file:`"),
        (
            "ftp://login.example.com".to_owned(),
            "has the scheme `ftp:`",
        ),
        (
            format!("https://user:pass@localhost:{port}"),
            "embeds a user name or password",
        ),
        (format!("https://localhost:{port}#x"), "has a #fragment"),
    ];
    for (authority, needle) in cases {
        let error = build(
            &emulator,
            AzurePipelinesCredentialOptions {
                authority_host: Some(authority.clone()),
                ..options(&emulator)
            },
        )
        .unwrap_err();
        assert_clear(
            &error,
            &["The authority host from the authority_host option", needle],
        );
    }
    // Loopback over http is allowed (local emulators), and works.
    let credential = build(
        &emulator,
        AzurePipelinesCredentialOptions {
            authority_host: Some(emulator.authority_host(false)),
            ..options(&emulator)
        },
    )
    .unwrap();
    credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(counts(&emulator.control().counters()), (1, 1));
}

#[tokio::test]
async fn https_is_required_off_loopback_for_the_oidc_uri_before_any_request() {
    let emulator = Emulator::start().await.unwrap();
    let port = emulator.http_addr().port();
    let path = "/contoso/p/_apis/distributedtask/hubs/build/plans/x/jobs/y/oidctoken";
    let cases = [
        (
            format!("http://dev.azure.example{path}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://localhost.example.com:{port}{path}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://127.0.0.1.nip.io:{port}{path}"),
            "uses http:// to a host that is not loopback",
        ),
        (
            format!("http://[::ffff:10.0.0.1]:{port}{path}"),
            "uses http:// to a host that is not loopback",
        ),
        ("file:///etc/passwd".to_owned(), "has the scheme `file:`"),
        (
            format!("https://user:secret@localhost:{port}{path}"),
            "embeds a user name or password",
        ),
        (
            format!("{}#frag", emulator.oidc_request_uri(true)),
            "has a #fragment",
        ),
        ("not a url".to_owned(), "is not a valid URL"),
    ];
    for (uri, needle) in cases {
        // The OIDC URI is checked when a token is requested, not at construction.
        let credential = build(
            &emulator,
            AzurePipelinesCredentialOptions {
                oidc_request_uri: Some(uri.clone()),
                ..options(&emulator)
            },
        )
        .unwrap();
        let error = credential.get_token(&[STORAGE], None).await.unwrap_err();
        assert_clear(&error, &["The oidc_request_uri option", needle]);
    }
    assert_eq!(
        counts(&emulator.control().counters()),
        (0, 0),
        "nothing was sent"
    );
    // The emulator's plain-http loopback URI is accepted and works.
    let credential = build(
        &emulator,
        AzurePipelinesCredentialOptions {
            oidc_request_uri: Some(emulator.oidc_request_uri(false)),
            ..options(&emulator)
        },
    )
    .unwrap();
    credential.get_token(&[STORAGE], None).await.unwrap();
    assert_eq!(counts(&emulator.control().counters()), (1, 1));
}
