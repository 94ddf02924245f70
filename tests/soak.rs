//! Sustained load with refreshes, under faults: 64 tasks ask for tokens for 10 scopes (each
//! plain and CAE: 20 cache keys) for about a minute of real time, while both endpoints of the
//! emulator fail 30 % of their requests (503, 429 with `Retry-After: 1`, dropped connections,
//! malformed 200s, and hangs that only `attempt_timeout` ends), and access tokens live five
//! seconds, so that background refreshes and hard misses happen all the time.
//!
//! It passes on behaviour, not speed:
//! - no expired token is ever handed out, and every token is one the emulator signed for the
//!   scope asked (and with the CAE capability when asked);
//! - no call takes longer than `token_timeout` and a small slack: a caller held past its budget
//!   is a bug, however busy the machine;
//! - every error is the credential's, worded as such, with its troubleshooting link;
//! - resident memory is flat: the median of the last quarter's samples is within 30 MB of the
//!   first quarter's;
//! - every key recovers once the faults stop.
//!
//! It prints the figures that RELIABILITY.md reports (calls, outcomes, latency, requests per
//! successful exchange, memory).

mod common;

use azure_core::{credentials::TokenRequestOptions, error::ErrorKind};
use azure_pipelines_credential::{AzurePipelinesCredentialOptions, TokenRequestContext};
use azure_pipelines_emulator::{Emulator, Fault, FaultTrigger};
use common::{
    FAILED,
    emulator::{credential_with, options},
    faults::{ENDPOINTS, status, throttled, vm_kib},
};
use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const TASKS: usize = 64;
const RESOURCES: [&str; 10] = [
    "https://storage.azure.com",
    "https://vault.azure.net",
    "https://management.azure.com",
    "https://graph.microsoft.com",
    "https://database.windows.net",
    "https://servicebus.azure.net",
    "https://eventhubs.azure.net",
    "https://monitor.azure.com",
    "https://cognitiveservices.azure.com",
    "https://ossrdbms-aad.database.windows.net",
];
/// How long the load runs, and the most calls it makes (whichever comes first).
const RUN: Duration = Duration::from_secs(60);
const CALL_BUDGET: u64 = 1_000_000;
/// Access tokens: refreshed in the background from half their life (2.5 s, less up to 10 %
/// jitter), no longer handed out in their last tenth (from 4.5 s).
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(5);
/// OIDC tokens: reused until a minute before they expire, so fetched again 2 s after each
/// fetch, by the next acquisition that needs one.
const OIDC_TOKEN_LIFETIME: Duration = Duration::from_secs(62);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(4);
/// What a call may take beyond `token_timeout`: the time for a woken task to be scheduled on
/// a busy machine. Not a speed target: a caller left waiting past its budget is a bug.
const SLACK: Duration = Duration::from_secs(1);
/// Each of the five fault kinds hits a request with this probability, independently:
/// 1 - (1 - 0.0689)^5 = 30.0 % of requests get one.
const FAULT_RATE: f64 = 0.0689;
/// Bounds of the latency histogram, in milliseconds.
const BUCKETS: [u64; 7] = [1, 10, 100, 1000, 2000, 4000, 5000];

/// The scope and CAE mode of key `k` (0..20).
fn key(k: usize) -> (&'static str, String, bool) {
    let resource = RESOURCES[k % RESOURCES.len()];
    (
        resource,
        format!("{resource}/.default"),
        k >= RESOURCES.len(),
    )
}

fn cae(enabled: bool) -> Option<TokenRequestOptions<'static>> {
    enabled.then(|| {
        TokenRequestContext {
            enable_cae: true,
            ..Default::default()
        }
        .into()
    })
}

/// What the load observed.
#[derive(Default)]
struct Observed {
    calls: AtomicU64,
    tokens: AtomicU64,
    errors: AtomicU64,
    /// Tokens handed out at or after their expiry: must stay 0.
    expired: AtomicU64,
    /// Tokens that are not the emulator's for the scope (and CAE mode) asked: must stay 0.
    wrong: AtomicU64,
    /// Calls longer than `token_timeout` + `SLACK`: must stay 0.
    over_budget: AtomicU64,
    /// Errors that are not the credential's, worded as such: must stay 0.
    foreign_errors: AtomicU64,
    /// The longest call, in microseconds.
    longest_us: AtomicU64,
    /// Calls per latency bucket (the last one: beyond every bound).
    histogram: [AtomicU64; BUCKETS.len() + 1],
    /// Errors per troubleshooting section.
    sections: Mutex<BTreeMap<String, u64>>,
    /// Tokens seen (by hash), with the key they were handed out for; each checked once.
    seen: Mutex<HashMap<u64, usize>>,
}

impl Observed {
    fn latency(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.longest_us.fetch_max(us, Ordering::Relaxed);
        let ms = us / 1000;
        let bucket = BUCKETS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(BUCKETS.len());
        self.histogram[bucket].fetch_add(1, Ordering::Relaxed);
        if took > TOKEN_TIMEOUT + SLACK {
            self.over_budget.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The median of `values` (0 when empty).
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_64_tasks_and_10_scopes_with_refreshes_under_30_percent_faults() {
    let emulator = Arc::new(Emulator::start().await.unwrap());
    let control = emulator.control().clone();
    control.set_access_token_lifetime(ACCESS_TOKEN_LIFETIME);
    control.set_oidc_token_lifetime(OIDC_TOKEN_LIFETIME);
    for endpoint in ENDPOINTS {
        for fault in [
            status(503),
            throttled(1),
            Fault::DropConnection,
            Fault::MalformedJson,
            Fault::Hang,
        ] {
            control.inject_fault(endpoint, fault, FaultTrigger::Rate(FAULT_RATE));
        }
    }
    let credential = credential_with(
        &emulator,
        AzurePipelinesCredentialOptions {
            attempt_timeout: Some(ATTEMPT_TIMEOUT),
            token_timeout: Some(TOKEN_TIMEOUT),
            ..options(&emulator)
        },
    );

    let observed = Arc::new(Observed::default());
    let started = Instant::now();
    // Resident memory, sampled every second while the load runs.
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while started.elapsed() < RUN {
            tick.tick().await;
            samples.push((started.elapsed(), vm_kib("VmRSS")));
        }
        samples
    });
    let hasher = RandomState::new();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (credential, emulator, observed, hasher) = (
                credential.clone(),
                emulator.clone(),
                observed.clone(),
                hasher.clone(),
            );
            tokio::spawn(async move {
                let mut n = task;
                while started.elapsed() < RUN
                    && observed.calls.fetch_add(1, Ordering::Relaxed) < CALL_BUDGET
                {
                    let k = n % (2 * RESOURCES.len());
                    let (resource, scope, cae_on) = key(k);
                    let asked = Instant::now();
                    let result = credential.get_token_info(&[&scope], cae(cae_on)).await;
                    observed.latency(asked.elapsed());
                    // The time of return, as the credential reads it (the real clock).
                    let now = common::now();
                    match result {
                        Ok(info) => {
                            observed.tokens.fetch_add(1, Ordering::Relaxed);
                            if info.expires_on <= now {
                                observed.expired.fetch_add(1, Ordering::Relaxed);
                            }
                            let hash = hasher.hash_one(info.token.secret());
                            let first_seen = match lock(&observed.seen).get(&hash) {
                                Some(seen_for) if *seen_for == k => false,
                                Some(_) => {
                                    observed.wrong.fetch_add(1, Ordering::Relaxed);
                                    false
                                }
                                None => true,
                            };
                            if first_seen {
                                let claims = emulator.verify_token(info.token.secret());
                                let right = claims.is_some_and(|c| {
                                    c["aud"] == resource && (c.get("xms_cc").is_some() == cae_on)
                                });
                                if !right {
                                    observed.wrong.fetch_add(1, Ordering::Relaxed);
                                }
                                lock(&observed.seen).insert(hash, k);
                            }
                        }
                        Err(error) => {
                            observed.errors.fetch_add(1, Ordering::Relaxed);
                            let text = error.to_string();
                            let section = text
                                .rsplit_once("TROUBLESHOOTING.md#")
                                .map(|(_, anchor)| anchor.trim().to_owned());
                            match section {
                                Some(section)
                                    if matches!(error.kind(), ErrorKind::Credential)
                                        && text.starts_with(FAILED) =>
                                {
                                    *lock(&observed.sections).entry(section).or_default() += 1;
                                }
                                _ => {
                                    observed.foreign_errors.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("not the credential's error: {text}");
                                }
                            }
                        }
                    }
                    // Callers come back every 10 to 29 ms, not in lockstep.
                    let pause = 10 + (n as u64 * 7 + task as u64 * 13) % 20;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a task ran to its end");
    }
    let elapsed = started.elapsed();
    let samples = sampler.await.unwrap();
    let counters = control.counters();
    control.clear_faults();

    // After the faults stop, every key recovers.
    for k in 0..2 * RESOURCES.len() {
        let (resource, scope, cae_on) = key(k);
        let info = credential
            .get_token_info(&[&scope], cae(cae_on))
            .await
            .unwrap_or_else(|e| panic!("{scope} (CAE {cae_on}) did not recover: {e}"));
        let claims = emulator.verify_token(info.token.secret()).unwrap();
        assert_eq!(claims["aud"], resource);
    }

    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let calls = get(&observed.tokens) + get(&observed.errors);
    let requests = counters.oidc_requests + counters.token_requests;
    let exchanges = counters.access_tokens_issued;
    let per_exchange = requests as f64 / exchanges.max(1) as f64;
    let faulted_oidc = counters.oidc_requests - counters.oidc_tokens_issued;
    let faulted_token = counters.token_requests - counters.access_tokens_issued;
    let quarter = |from: Duration, to: Duration| {
        median(
            samples
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, kib)| *kib)
                .collect(),
        )
    };
    let first_quarter = quarter(Duration::ZERO, RUN / 4);
    let last_quarter = quarter(RUN * 3 / 4, RUN + Duration::from_secs(5));
    let histogram: Vec<String> = BUCKETS
        .iter()
        .map(|b| format!("<{b} ms"))
        .chain([format!(">={} ms", BUCKETS[BUCKETS.len() - 1])])
        .zip(&observed.histogram)
        .map(|(bound, n)| format!("{bound}: {}", get(n)))
        .collect();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| wall time | {:.1} s |", elapsed.as_secs_f64());
    println!(
        "| calls (tokens, errors) | {calls} ({}, {}) |",
        get(&observed.tokens),
        get(&observed.errors)
    );
    println!(
        "| distinct tokens handed out | {} |",
        lock(&observed.seen).len()
    );
    println!(
        "| expired tokens handed out / wrong tokens | {} / {} |",
        get(&observed.expired),
        get(&observed.wrong)
    );
    println!(
        "| longest call (budget {} s + {} s) | {:.3} s |",
        TOKEN_TIMEOUT.as_secs(),
        SLACK.as_secs(),
        get(&observed.longest_us) as f64 / 1e6
    );
    println!("| calls by latency | {} |", histogram.join(", "));
    println!(
        "| OIDC requests (tokens issued, faulted) | {} ({}, {faulted_oidc}) |",
        counters.oidc_requests, counters.oidc_tokens_issued
    );
    println!(
        "| token requests (tokens issued, faulted) | {} ({exchanges}, {faulted_token}) |",
        counters.token_requests
    );
    println!("| requests per successful exchange | {per_exchange:.2} |");
    println!("| connections accepted | {} |", counters.connections);
    println!("| errors by section | {:?} |", lock(&observed.sections));
    println!(
        "| RSS median, first / last quarter | {:.1} MB / {:.1} MB ({} samples) |",
        first_quarter as f64 / 1000.0,
        last_quarter as f64 / 1000.0,
        samples.len()
    );

    assert_eq!(get(&observed.expired), 0, "expired tokens were handed out");
    assert_eq!(get(&observed.wrong), 0, "tokens for another scope or mode");
    assert_eq!(
        get(&observed.over_budget),
        0,
        "callers held past token_timeout + {SLACK:?}"
    );
    assert_eq!(get(&observed.foreign_errors), 0);
    assert!(
        get(&observed.tokens) > get(&observed.errors),
        "most calls get a token"
    );
    assert!(faulted_oidc + faulted_token > 0, "faults were injected");
    assert!(
        lock(&observed.seen).len() > 2 * RESOURCES.len(),
        "tokens were refreshed"
    );
    assert!(samples.len() >= 40, "{} memory samples", samples.len());
    assert!(
        last_quarter <= first_quarter + 30_000,
        "resident memory grew from {first_quarter} KiB to {last_quarter} KiB"
    );
}
