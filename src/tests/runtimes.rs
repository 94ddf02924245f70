//! Shared requests whose runtime died under them: a runtime per call in a sync wrapper, one per
//! `#[tokio::test]` around a shared credential, a short-lived runtime in a tool.
//!
//! Each test builds and drops its runtimes itself (current-thread runtimes, driven only while
//! the test blocks on them) against an emulator that runs on a runtime of its own, which lives
//! for the whole test. A runtime that is dropped drops the tasks it holds, among them the
//! credential's shared requests; the requests must then count as absent: the next caller starts
//! the work anew on its own runtime, and nobody gets a false "The credential was closed".

use super::{STORAGE, Timeline, VAULT, credential, eventually, requests};
use async_trait::async_trait;
use azure_core::{
    credentials::TokenCredential,
    http::{
        Context, Request,
        policies::{Policy, PolicyResult},
    },
};
use azure_pipelines_emulator::{Emulator, Endpoint};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::runtime::{Builder, Runtime};

/// A runtime that runs only while the test blocks on it.
fn runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The emulator's runtime: a worker thread of its own, so that it serves while the test
/// thread blocks on (or has dropped) the runtimes under test.
fn server() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the emulator's runtime")
}

/// Counts the attempts to the OIDC endpoint on the client side, as each attempt starts: before
/// any network I/O, so a fetch that a caller started shows here at once, held at the emulator
/// or not.
#[derive(Debug, Default)]
struct OidcAttempts(AtomicU64);

impl OidcAttempts {
    fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

// `Context` without its lifetime, as the trait declares it (see src/timeout.rs).
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl Policy for OidcAttempts {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if request.url().path().ends_with("/oidctoken") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// Runtime 1 gets the tokens; in the refresh window a hit on runtime 2 starts each key's
/// background refresh, and runtime 2 is dropped while the token endpoint is still answering;
/// on runtime 3 the next hits refresh the token again; past the first tokens' stop time, the key
/// whose refresh died and was never restarted gets a new token (no false "closed" error).
///
/// Before the fix, the dead refresh kept its key "in flight" forever: runtime 3's hits started
/// no refresh (the bounded wait for a new token fails), and past the stop time the caller joined
/// the dead request and got "The credential was closed".
#[test]
fn a_refresh_whose_runtime_died_is_started_again_and_nobody_sees_closed() {
    let server = server();
    let emulator = server.block_on(Emulator::start()).expect("the emulator");
    let control = emulator.control().clone();
    let time = Timeline::new();
    let credential = Arc::new(credential(&emulator, &time, |_| {}));
    // One-hour tokens that Entra says to refresh after 10 minutes: refresh from +540..600 s,
    // handed out until +3570 s.
    control.set_access_token_lifetime(Duration::from_secs(3600));
    control.set_refresh_in(Some(Duration::from_secs(600)));

    let rt1 = runtime();
    let (storage, vault) = rt1.block_on(async {
        let storage = credential.get_token(&[STORAGE], None).await.unwrap();
        let vault = credential.get_token(&[VAULT], None).await.unwrap();
        (storage, vault)
    });
    drop(rt1);
    assert_eq!(requests(&emulator), (1, 2));
    // Later tokens: one hour, no refresh_in (refreshed 6 minutes before expiry, at the earliest
    // 7 minutes before).
    control.set_refresh_in(None);

    // In the refresh window. The emulator's clock moves along, so that the OIDC tokens it issues
    // now live on the credential's timeline.
    time.set(1000);
    control.set_clock_skew(1000);
    let hold = control.hold(Endpoint::Token);
    let rt2 = runtime();
    rt2.block_on(async {
        for (scope, old) in [(STORAGE, &storage), (VAULT, &vault)] {
            let got = credential.get_token(&[scope], None).await.unwrap();
            assert_eq!(got.token, old.token, "served at once while refreshing");
        }
        // One OIDC fetch shared by both refreshes, then both exchanges, held at the emulator.
        eventually(|| requests(&emulator) == (2, 4)).await;
    });
    // Both refreshes die with their runtime while Entra is still answering them.
    drop(rt2);
    drop(hold);

    let rt3 = runtime();
    let refreshed = rt3.block_on(async {
        let got = credential.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(
            got.token, storage.token,
            "still served while refreshing again"
        );
        let mut latest = got;
        for _ in 0..1000 {
            if latest.token != storage.token {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            latest = credential.get_token(&[STORAGE], None).await.unwrap();
        }
        latest
    });
    drop(rt3);
    assert_ne!(
        refreshed.token, storage.token,
        "a hit on runtime 3 started the refresh again"
    );
    let claims = emulator
        .verify_token(refreshed.token.secret())
        .expect("the emulator's token");
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(refreshed.expires_on, time.at(1000 + 3600));
    assert_eq!(
        requests(&emulator),
        (2, 5),
        "one more exchange, with the OIDC token that runtime 2 fetched"
    );

    // Past the first tokens' stop time: VAULT's refresh died with runtime 2 and nothing started
    // it again; its caller waits for a new token instead of joining the dead request.
    time.set(3580);
    control.set_clock_skew(3580);
    let rt4 = runtime();
    let (vault_now, storage_now) = rt4.block_on(async {
        let vault_now = credential.get_token(&[VAULT], None).await;
        let storage_now = credential.get_token(&[STORAGE], None).await;
        (vault_now, storage_now)
    });
    drop(rt4);
    let vault_now = vault_now.unwrap_or_else(|e| panic!("a new token, not an error: {e}"));
    assert_ne!(vault_now.token, vault.token);
    let claims = emulator
        .verify_token(vault_now.token.secret())
        .expect("the emulator's token");
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(vault_now.expires_on, time.at(3580 + 3600));
    assert_eq!(storage_now.unwrap().token, refreshed.token, "a hit");
    // The OIDC token of +1000 s is past its reuse time (+1540 s): fetched again.
    assert_eq!(requests(&emulator), (3, 6));
}

/// A caller that joined the shared OIDC fetch of another runtime gets a token on its own
/// runtime when that runtime dies under the fetch.
///
/// Before the fix, the waiter got the dead fetch's outcome: "The credential was closed".
#[test]
fn a_caller_whose_shared_oidc_fetch_died_with_its_runtime_fetches_on_its_own() {
    let server = server();
    let emulator = server.block_on(Emulator::start()).expect("the emulator");
    let control = emulator.control().clone();
    let time = Timeline::new();
    let attempts = Arc::new(OidcAttempts::default());
    let credential = Arc::new(credential(&emulator, &time, |o| {
        o.credential_options
            .client_options
            .per_try_policies
            .push(attempts.clone());
    }));

    // Runtime A: a caller for VAULT starts the OIDC fetch, which the emulator holds.
    let hold = control.hold(Endpoint::Oidc);
    let rt_a = runtime();
    let abandoned = {
        let credential = credential.clone();
        rt_a.spawn(async move { credential.get_token(&[VAULT], None).await })
    };
    rt_a.block_on(eventually(|| requests(&emulator) == (1, 0)));
    assert_eq!(attempts.count(), 1);

    // Runtime B: a caller for STORAGE needs an OIDC token too, and joins the fetch in flight.
    let rt_b = runtime();
    let waiting = {
        let credential = credential.clone();
        rt_b.spawn(async move { credential.get_token(&[STORAGE], None).await })
    };
    // A current-thread runtime: each yield lets the caller's tasks run to their next await,
    // which is the shared fetch's outcome (no I/O comes before it).
    rt_b.block_on(async {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    });
    assert!(!waiting.is_finished(), "the OIDC endpoint is held");
    assert_eq!(
        attempts.count(),
        1,
        "runtime B's caller joined the fetch in flight, it started none"
    );

    // Runtime A dies with the fetch in it, its request still held at the emulator.
    drop(rt_a);
    drop(hold);

    let (abandoned, token) = rt_b.block_on(async { (abandoned.await, waiting.await) });
    assert!(
        abandoned.is_err_and(|e| e.is_cancelled()),
        "runtime A's caller went with its runtime"
    );
    let token = token
        .expect("runtime B's caller ran to its end")
        .unwrap_or_else(|e| panic!("a token fetched on runtime B, not an error: {e}"));
    let claims = emulator
        .verify_token(token.token.secret())
        .expect("the emulator's token");
    assert_eq!(claims["aud"], "https://storage.azure.com");
    // The held request of runtime A, then runtime B's own; one exchange, for B's caller.
    assert_eq!(attempts.count(), 2);
    assert_eq!(requests(&emulator), (2, 1));
    drop(rt_b);
}
