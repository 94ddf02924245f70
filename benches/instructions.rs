//! One cache hit, in instructions: run under callgrind by `benches/callgrind.sh`, which counts
//! only what runs inside `hit` (`--toggle-collect`), so that setting up the emulator and the
//! credentials does not count.
//!
//! `instructions cold <ours|theirs> <callers> <rounds>` makes `rounds` cold starts of a new
//! credential, each with `callers` concurrent callers, on the emulator's runtime: the script
//! counts the whole process (client, emulator and runtime threads) and subtracts a run of zero
//! rounds. The emulator's share is the same for both crates (the same two requests per round).
//!
//! `instructions <floor|floor_boxed|floor_swap|floor_trait|ours|theirs> <hits>` warms the
//! credential, then makes `hits` calls of `hit`, each a `get_token` through `TokenCredential`
//! polled with `futures::executor::block_on` (the floor: a clock read and a clone of the same
//! token, plain or in a boxed future as `TokenCredential`'s `async_trait` makes every call, the
//! boxed one reading the token through arc-swap's lock-free load as a token that can be replaced
//! must be read, or as the `get_token` of a `TokenCredential` that only returns a stored token:
//! `FloorCredential`).

mod common;

use azure_core::credentials::{AccessToken, TokenCredential};
use common::{Bench, FloorCredential, SCOPE, clock_read};
use std::{future::Future, hint::black_box, pin::Pin, sync::Arc};

enum Subject {
    Floor(AccessToken),
    FloorBoxed(AccessToken),
    FloorSwap(arc_swap::ArcSwap<AccessToken>),
    Credential(Arc<dyn TokenCredential>),
}

#[inline(never)]
fn hit(subject: &Subject) {
    match subject {
        Subject::Floor(token) => {
            black_box((clock_read(), token.token.clone()));
        }
        Subject::FloorBoxed(token) => {
            let boxed: Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(async { (clock_read(), token.token.clone()) });
            black_box(futures::executor::block_on(boxed));
        }
        Subject::FloorSwap(token) => {
            let boxed: Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(async { (clock_read(), token.load().token.clone()) });
            black_box(futures::executor::block_on(boxed));
        }
        Subject::Credential(credential) => {
            black_box(futures::executor::block_on(credential.get_token(&[SCOPE], None)).ok());
        }
    }
}

/// Cold starts on new credentials, each with `callers` concurrent callers.
fn cold(bench: &Bench, subject: &str, callers: usize, rounds: usize) {
    for _ in 0..rounds {
        let credential: Arc<dyn TokenCredential> = match subject {
            "ours" => bench.ours(),
            "theirs" => bench.theirs(),
            other => {
                eprintln!("unknown cold subject {other}: ours or theirs");
                std::process::exit(2);
            }
        };
        bench.cold_start(credential, callers);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "ours".to_owned());
    if what == "cold" {
        let subject = args.next().unwrap_or_default();
        let mut numbers = args.filter_map(|a| a.parse().ok());
        let (callers, rounds) = (numbers.next().unwrap_or(1), numbers.next().unwrap_or(50));
        cold(&Bench::start(), &subject, callers, rounds);
        return;
    }
    // `cargo bench` passes --bench; only a number counts.
    let hits: u64 = args.find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let bench = Bench::start();
    let ours = bench.ours();
    let token = bench
        .runtime
        .block_on(ours.get_token(&[SCOPE], None))
        .expect("token");
    let subject = match what.as_str() {
        "floor" => Subject::Floor(token),
        "floor_boxed" => Subject::FloorBoxed(token),
        "floor_swap" => Subject::FloorSwap(arc_swap::ArcSwap::from_pointee(token)),
        "floor_trait" => Subject::Credential(Arc::new(FloorCredential(token))),
        "ours" => Subject::Credential(ours),
        "theirs" => {
            let theirs = bench.theirs();
            bench
                .runtime
                .block_on(theirs.get_token(&[SCOPE], None))
                .expect("token");
            Subject::Credential(theirs)
        }
        other => {
            eprintln!(
                "unknown subject {other}: floor, floor_boxed, floor_swap, floor_trait, ours or theirs"
            );
            std::process::exit(2);
        }
    };
    // Inside the runtime, as an application's hits are.
    let _runtime = bench.runtime.enter();
    for _ in 0..hits {
        hit(&subject);
    }
}
