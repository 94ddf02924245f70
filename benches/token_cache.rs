//! Token-cache benchmarks against the built-in emulator over HTTPS, this crate next to
//! `azure_identity::AzurePipelinesCredential` 1.x. Run with `cargo bench --bench token_cache`.
//!
//! 1. Cache hit, one thread: this crate, azure_identity, and the floor (one read of the system
//!    clock plus cloning the same token).
//! 2. Cache hits on 1 and 2 threads: time per hit on each thread.
//! 3. Hit latency while another request is in flight at a 50 ms endpoint: p50/p99.
//! 4. Ten new scopes requested at once at 20 ms endpoints: wall time and request counts.
//! 5. 1,000 concurrent cold callers for one scope: request counts.
//!
//! 3-5 are distributions and counts rather than means, so they are measured by hand and printed
//! as tables after criterion's output.

mod common;

use azure_core::credentials::TokenCredential;
use azure_pipelines_emulator::Endpoint;
use common::{Bench, FloorCredential, SCOPE, clock_read};
use criterion::Criterion;
use std::hint::black_box;
use std::{
    sync::{Arc, Barrier, mpsc},
    time::{Duration, Instant},
};

fn hit_single_thread(c: &mut Criterion, bench: &Bench) {
    let ours = bench.ours();
    let theirs = bench.theirs();
    let token = bench.runtime.block_on(async {
        theirs.get_token(&[SCOPE], None).await.expect("token");
        ours.get_token(&[SCOPE], None).await.expect("token")
    });
    let mut group = c.benchmark_group("1_cache_hit_single_thread");
    group.bench_function("floor_clock_read_and_token_clone", |b| {
        b.to_async(&bench.runtime)
            .iter(|| async { black_box((clock_read(), token.token.clone())) })
    });
    // Every TokenCredential pays for one boxed future per call (the trait uses async_trait):
    // the floor a TokenCredential implementation can reach.
    group.bench_function("floor_plus_boxed_future", |b| {
        b.to_async(&bench.runtime).iter(|| async {
            let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async { (clock_read(), token.token.clone()) });
            black_box(boxed.await)
        })
    });
    // The same as the `get_token` of a TokenCredential: its boxed future also holds the scopes
    // and options every call passes.
    let floor = FloorCredential(token.clone());
    group.bench_function("floor_as_token_credential", |b| {
        b.to_async(&bench.runtime)
            .iter(|| async { black_box(floor.get_token(&[SCOPE], None).await) })
    });
    // A credential whose token can be replaced while others read it reads it through some
    // synchronization: the boxed floor, its token read through arc-swap's lock-free load, as
    // this crate's cache reads its table.
    let swap = arc_swap::ArcSwap::from_pointee(token.clone());
    group.bench_function("floor_plus_lock_free_read", |b| {
        b.to_async(&bench.runtime).iter(|| async {
            let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async { (clock_read(), swap.load().token.clone()) });
            black_box(boxed.await)
        })
    });
    group.bench_function("azure_pipelines_credential", |b| {
        b.to_async(&bench.runtime)
            .iter(|| async { black_box(ours.get_token(&[SCOPE], None).await) })
    });
    group.bench_function("azure_identity_1x", |b| {
        b.to_async(&bench.runtime)
            .iter(|| async { black_box(theirs.get_token(&[SCOPE], None).await) })
    });
    group.finish();
}

/// Threads that live as long as a benchmark and run its hits on command, so that every
/// measurement runs on warmed-up threads (each with its own allocator arena) rather than on
/// threads spawned for it.
struct Workers {
    orders: Vec<mpsc::Sender<(u64, Arc<Barrier>)>>,
    times: mpsc::Receiver<Duration>,
}

impl Workers {
    fn new(threads: usize, hit: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (report, times) = mpsc::channel();
        let orders = (0..threads)
            .map(|_| {
                let (order, orders) = mpsc::channel::<(u64, Arc<Barrier>)>();
                let (hit, report) = (hit.clone(), report.clone());
                std::thread::spawn(move || {
                    for (iters, barrier) in orders {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..iters {
                            hit();
                        }
                        if report.send(start.elapsed()).is_err() {
                            return;
                        }
                    }
                });
                order
            })
            .collect();
        Self { orders, times }
    }

    /// Time per hit on each thread, all threads hitting at once.
    fn per_thread(&self, iters: u64) -> Duration {
        let barrier = Arc::new(Barrier::new(self.orders.len()));
        for order in &self.orders {
            order.send((iters, barrier.clone())).expect("worker");
        }
        let total: Duration = self
            .orders
            .iter()
            .map(|_| self.times.recv().expect("worker"))
            .sum();
        total / self.orders.len() as u32
    }
}

/// One hit of `credential`, as a thread of an application makes it.
fn hit_of<C: TokenCredential + ?Sized + 'static>(
    credential: Arc<C>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        black_box(futures::executor::block_on(credential.get_token(&[SCOPE], None)).ok());
    })
}

fn hits_on_threads(c: &mut Criterion, bench: &Bench) {
    let ours = bench.ours();
    let theirs = bench.theirs();
    let token = bench.runtime.block_on(async {
        theirs.get_token(&[SCOPE], None).await.expect("token");
        ours.get_token(&[SCOPE], None).await.expect("token")
    });
    let floor: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(async { (clock_read(), token.token.clone()) });
        black_box(futures::executor::block_on(boxed));
    });
    let mut group = c.benchmark_group("2_cache_hits_per_thread");
    for threads in [1usize, 2] {
        for (name, hit) in [
            ("floor_plus_boxed_future", floor.clone()),
            ("azure_pipelines_credential", hit_of(ours.clone())),
            ("azure_identity_1x", hit_of(theirs.clone())),
        ] {
            let workers = Workers::new(threads, hit);
            group.bench_function(format!("{name}/{threads}_threads"), |b| {
                b.iter_custom(|iters| workers.per_thread(iters))
            });
        }
    }
    group.finish();
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies of hits on `SCOPE`, taken on this thread only while a request is in flight.
///
/// Each of `rounds` rounds calls `start` (which starts a request and returns when it is on the
/// wire), then times hits until `finished` says the request is over; a hit blocked behind the
/// request counts with its whole wait.
fn latencies_while<C: TokenCredential + ?Sized + 'static>(
    bench: &Bench,
    credential: &Arc<C>,
    rounds: usize,
    mut start: impl FnMut(usize) -> Box<dyn Fn() -> bool>,
) -> (u64, u64, u64, usize) {
    // Hits run on this thread; inside the runtime, so that a background refresh can start.
    let _runtime = bench.runtime.enter();
    let mut samples = Vec::with_capacity(1 << 20);
    for round in 0..rounds {
        let finished = start(round);
        let mut taken = 0;
        while (!finished() || taken == 0) && taken < 1_000_000 {
            let t = Instant::now();
            black_box(futures::executor::block_on(credential.get_token(&[SCOPE], None)).ok());
            samples.push(t.elapsed().as_nanos() as u64);
            taken += 1;
        }
    }
    samples.sort_unstable();
    let max = *samples.last().unwrap_or(&0);
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        max,
        samples.len(),
    )
}

/// Waits (bounded) until the emulator has received `n` token requests.
fn wait_for_token_requests(bench: &Bench, n: u64) {
    for _ in 0..2_000 {
        if bench.emulator.control().counters().token_requests >= n {
            return;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn hit_latency_during_refresh(bench: &Bench) -> Vec<String> {
    let control = bench.emulator.control();
    let mut rows = Vec::new();
    let row = |name: &str, (p50, p99, max, n): (u64, u64, u64, usize)| {
        format!("| {name} | {p50} | {p99} | {:.1} | {n} |", max as f64 / 1e6)
    };

    // Another scope's request (50 ms at each endpoint) is in flight while SCOPE is hit.
    fn other_scope<C: TokenCredential + ?Sized + 'static>(
        bench: &Bench,
        credential: &Arc<C>,
    ) -> impl FnMut(usize) -> Box<dyn Fn() -> bool> {
        let credential = credential.clone();
        let handle = bench.runtime.handle().clone();
        let control = bench.emulator.control().clone();
        move |round| {
            let credential = credential.clone();
            let before = control.counters().oidc_requests + control.counters().token_requests;
            let task = handle.spawn(async move {
                let scope = format!("api://bench-other-{round}/.default");
                credential.get_token(&[&scope], None).await.ok();
            });
            // Start timing once the request is on the wire.
            for _ in 0..2_000 {
                let c = control.counters();
                if c.oidc_requests + c.token_requests > before {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            // The window ends when the emulator has answered the token request (the task may
            // take a little longer to wake): hits after that no longer overlap the network call.
            let issued = control.counters().access_tokens_issued;
            let control = control.clone();
            Box::new(move || task.is_finished() || control.counters().access_tokens_issued > issued)
        }
    }
    let ours = bench.ours();
    let theirs = bench.theirs();
    bench.runtime.block_on(async {
        ours.get_token(&[SCOPE], None).await.expect("token");
        theirs.get_token(&[SCOPE], None).await.expect("token");
    });
    control.set_latency(Endpoint::Token, Duration::from_millis(50));
    control.set_latency(Endpoint::Oidc, Duration::from_millis(50));
    let stats = latencies_while(bench, &ours, 10, other_scope(bench, &ours));
    rows.push(row(
        "azure_pipelines_credential, another scope's request in flight",
        stats,
    ));
    let stats = latencies_while(bench, &theirs, 10, other_scope(bench, &theirs));
    rows.push(row(
        "azure_identity 1.x, another scope's request in flight",
        stats,
    ));

    // This crate: SCOPE's own refresh in flight. Entra says to refresh each token after a
    // second: each round waits for the current token's refresh time, lets one hit start the
    // background refresh, and times hits until the new token lands.
    control.set_latency(Endpoint::Token, Duration::ZERO);
    control.set_latency(Endpoint::Oidc, Duration::ZERO);
    control.set_refresh_in(Some(Duration::from_secs(1)));
    let refreshing = bench.ours();
    bench
        .runtime
        .block_on(refreshing.get_token(&[SCOPE], None))
        .expect("token");
    control.set_latency(Endpoint::Token, Duration::from_millis(50));
    control.reset_counters();
    let stats = latencies_while(bench, &refreshing, 10, |round| {
        let current =
            futures::executor::block_on(refreshing.get_token_info(&[SCOPE], None)).expect("token");
        let refresh_on = current.refresh_on.expect("Entra's refresh_in");
        let wait = refresh_on - time::OffsetDateTime::from(clock_read());
        std::thread::sleep(
            Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(10),
        );
        let _runtime = bench.runtime.enter();
        // This hit finds the token in its refresh window and starts the background refresh.
        let _ = futures::executor::block_on(refreshing.get_token(&[SCOPE], None));
        wait_for_token_requests(bench, round as u64 + 1);
        let credential = refreshing.clone();
        Box::new(move || {
            futures::executor::block_on(credential.get_token(&[SCOPE], None))
                .map(|t| t.token != current.token)
                .unwrap_or(true)
        })
    });
    rows.push(row(
        &format!(
            "azure_pipelines_credential, its own refresh in flight ({} refreshes)",
            control.counters().token_requests
        ),
        stats,
    ));
    control.set_refresh_in(None);
    control.set_latency(Endpoint::Token, Duration::ZERO);
    rows
}

fn ten_new_scopes(bench: &Bench) -> Vec<String> {
    let control = bench.emulator.control();
    control.set_latency(Endpoint::Token, Duration::from_millis(20));
    control.set_latency(Endpoint::Oidc, Duration::from_millis(20));
    let scopes: Vec<String> = (0..10)
        .map(|i| format!("api://bench-scope-{i}/.default"))
        .collect();
    let mut rows = Vec::new();
    // A new credential per round, so that every round starts cold.
    let mut run = |name: &str, make: &dyn Fn() -> Arc<dyn TokenCredential>| {
        let mut walls = Vec::new();
        let mut counts = (0, 0);
        for _ in 0..5 {
            control.reset_counters();
            let credential = make();
            let scopes = scopes.clone();
            let start = Instant::now();
            bench.runtime.block_on(async move {
                let calls = scopes.iter().map(|s| {
                    let credential = credential.clone();
                    let s = s.clone();
                    async move { credential.get_token(&[&s], None).await.expect("token") }
                });
                futures::future::join_all(calls).await
            });
            walls.push(start.elapsed());
            let c = control.counters();
            counts = (c.oidc_requests, c.token_requests);
        }
        walls.sort();
        rows.push(format!(
            "| {name} | {:.1} | {} | {} |",
            walls[walls.len() / 2].as_secs_f64() * 1000.0,
            counts.0,
            counts.1
        ));
    };
    run("azure_pipelines_credential", &|| bench.ours());
    run("azure_identity 1.x", &|| bench.theirs());
    control.set_latency(Endpoint::Token, Duration::ZERO);
    control.set_latency(Endpoint::Oidc, Duration::ZERO);
    rows
}

/// `callers` callers at once on a new (cold) credential, median of many rounds, the two crates
/// taking turns. The credentials share the emulator's transport, whose connections the warm-up
/// round opens: the figure is the cache's, not a TLS handshake's.
const HERD_ROUNDS: usize = 201;

fn cold_callers(bench: &Bench, callers: usize) -> Vec<String> {
    let control = bench.emulator.control();
    let herd = |credential: Arc<dyn TokenCredential>| {
        control.reset_counters();
        let start = Instant::now();
        bench.cold_start(credential, callers);
        let c = control.counters();
        (start.elapsed(), c.oidc_requests, c.token_requests)
    };
    herd(bench.ours());
    herd(bench.theirs());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // Each round is about a millisecond of network round trips on loopback, whose time moves
    // by tens of percent between rounds and drifts between runs: many rounds, the two crates
    // in turn (each going first every other round), and the ratio taken within each pair.
    for round in 0..HERD_ROUNDS {
        if round % 2 == 0 {
            ours.push(herd(bench.ours()));
            theirs.push(herd(bench.theirs()));
        } else {
            theirs.push(herd(bench.theirs()));
            ours.push(herd(bench.ours()));
        }
    }
    let mut ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(o, t)| o.0.as_secs_f64() / t.0.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let faster = ratios.iter().filter(|&&r| r < 1.0).count();
    let mut rows: Vec<String> = [
        ("azure_pipelines_credential", ours),
        ("azure_identity 1.x", theirs),
    ]
    .into_iter()
    .map(|(name, mut rounds)| {
        rounds.sort();
        let (wall, oidc, token) = rounds[rounds.len() / 2];
        format!(
            "| {callers} | {name} | {:.3} | {oidc} | {token} |",
            wall.as_secs_f64() * 1000.0
        )
    })
    .collect();
    rows.push(format!(
        "| {callers} | ratio, median of the {HERD_ROUNDS} paired rounds | {:.2}× | faster in {faster} of {HERD_ROUNDS} | |",
        ratios[ratios.len() / 2]
    ));
    rows
}

fn main() {
    let bench = Bench::start();
    let mut criterion = Criterion::default().configure_from_args();
    hit_single_thread(&mut criterion, &bench);
    hits_on_threads(&mut criterion, &bench);
    criterion.final_summary();

    println!("\n3. Hit latency (ns) while a request is in flight at a 50 ms endpoint");
    println!("| case | p50 ns | p99 ns | max ms | samples |\n|---|---|---|---|---|");
    hit_latency_during_refresh(&bench)
        .iter()
        .for_each(|r| println!("{r}"));

    println!("\n4. Ten new scopes requested at once, 20 ms endpoints (median of 5 cold rounds)");
    println!("| credential | wall ms | OIDC requests | token requests |\n|---|---|---|---|");
    ten_new_scopes(&bench).iter().for_each(|r| println!("{r}"));

    println!("\n5. Concurrent cold callers for one scope (median of {HERD_ROUNDS} rounds)");
    println!(
        "| callers | credential | wall ms | OIDC requests | token requests |\n|---|---|---|---|---|"
    );
    for callers in [1, 1000] {
        cold_callers(&bench, callers)
            .iter()
            .for_each(|r| println!("{r}"));
    }
}
