//! Reliability runs that cross many token lifetimes on the manual clock: callers dropped at
//! random points never poison the cache, and a bounded soak under 30 % injected faults.
//!
//! They assert outcomes and request counts, never elapsed time. Every loop is bounded.

use super::{FAILED, STORAGE, VAULT, setup};
use crate::TokenRequestContext;
use azure_core::{
    credentials::{TokenCredential, TokenRequestOptions},
    error::ErrorKind,
};
use azure_pipelines_emulator::{Endpoint, Fault, FaultTrigger};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

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

fn cae_if(cae: bool) -> Option<TokenRequestOptions<'static>> {
    cae.then(|| {
        TokenRequestContext {
            enable_cae: true,
            ..Default::default()
        }
        .into()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_dropped_at_random_points_never_poison_the_cache() {
    let (emulator, time, credential) = setup(|_| {}).await;
    let control = emulator.control();
    // Latency on both endpoints so that cancellation lands before, during and after requests.
    control.set_latency(Endpoint::Oidc, Duration::from_millis(3));
    control.set_latency(Endpoint::Token, Duration::from_millis(3));
    control.set_access_token_lifetime(Duration::from_secs(600));
    let scopes = [STORAGE, VAULT];
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
            1 => cae_if(true),
            _ => None,
        };
        // Up to 12 ms: the budget of a cold call is about 2 x 3 ms of latency plus TLS.
        let limit = Duration::from_micros(rng.below(12_000));
        calls += 1;
        match tokio::time::timeout(limit, credential.get_token(&[scope], options)).await {
            Ok(result) => {
                let token = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(emulator.verify_token(token.token.secret()).is_some());
                assert!(token.expires_on > time.now());
                completed += 1;
            }
            Err(_) => cancelled += 1,
        }
        // Every 25 rounds the cached tokens move past their stop time; the emulator's clock
        // moves along, so that its OIDC tokens expire on the same timeline.
        if round % 25 == 24 {
            time.advance(time::Duration::seconds(580));
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
            let token = tokio::time::timeout(
                Duration::from_secs(10),
                credential.get_token(&[scope], cae_if(cae)),
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
    messages: Mutex<BTreeMap<String, u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_a_thousand_calls_under_thirty_percent_faults() {
    let (emulator, time, credential) = setup(|o| {
        o.attempt_timeout = Some(Duration::from_secs(5));
        o.token_timeout = Some(Duration::from_secs(20));
    })
    .await;
    let credential = Arc::new(credential);
    let control = emulator.control().clone();
    // Two-minute tokens on a manual clock moved 60 s per batch: a token is in its refresh
    // window one batch after it was issued and past its stop time (108 s) the batch after, so
    // each of the six keys is refreshed in the background at almost every batch, and waits on
    // a hard miss whenever that refresh failed, without sleeping. The emulator's clock moves
    // with the manual clock (its skew), so OIDC tokens expire on the same timeline: one every
    // nine batches.
    control.set_access_token_lifetime(Duration::from_secs(120));
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

    let scopes: [&'static str; 3] = [STORAGE, VAULT, "https://management.azure.com/.default"];
    let soak = Arc::new(Soak::default());
    let barrier = Arc::new(tokio::sync::Barrier::new(SOAK_TASKS));
    let per_batch = SOAK_CALLS / SOAK_BATCHES;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..SOAK_TASKS)
        .map(|task| {
            let (credential, clock, soak, barrier, control) = (
                credential.clone(),
                time.clock.clone(),
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
                        match credential
                            .get_token_info(&[scope], cae_if(call % 4 == 3))
                            .await
                        {
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
                                assert!(text.starts_with(FAILED), "{text}");
                                let first_line = text.lines().next().unwrap_or_default();
                                let shape: String = first_line
                                    .trim_start_matches(FAILED)
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
        let claims = emulator.verify_token(token).expect("the emulator's token");
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
