//! Reliability runs that cross many token lifetimes on the manual clock: callers dropped at
//! random points never poison the cache. (The soak under faults, with refreshes on the real
//! clock, is `tests/soak.rs`.)
//!
//! They assert outcomes and request counts, never elapsed time. Every loop is bounded.

use super::{STORAGE, VAULT, setup};
use crate::TokenRequestContext;
use azure_core::credentials::{TokenCredential, TokenRequestOptions};
use azure_pipelines_emulator::Endpoint;
use std::time::Duration;

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
