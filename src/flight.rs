//! One request at a time per key, shared by every caller that needs its result.
//!
//! The work runs as a task on azure_core's async runtime (`azure_core::async_runtime`, Tokio by
//! default), so a caller that gives up, its future dropped at any await, neither cancels the
//! request for the others nor leaves a lock held: the next caller joins the same task, or starts
//! a new one once it has finished.
//!
//! A task can also end without a result: its runtime shut down under it (a runtime per call in
//! a sync wrapper, one per `#[tokio::test]` around a shared credential). Dropping the task clears
//! its slot, so the flight counts as absent, and its waiters start the work anew on their own
//! runtime. Only [`SingleFlight::close`] makes waiters fail as "closed".
//!
//! A flight made with [`SingleFlight::while_awaited`] runs only while someone awaits it: when the
//! last waiter gives up (its own budget ran out, it was cancelled), the work is cancelled too, so
//! that nobody joins a request that hangs with no one behind it.

use crate::error::{Failure, Section};
use azure_core::async_runtime::get_async_runtime;
use futures::{
    FutureExt as _,
    channel::oneshot,
    future::{AbortHandle, Abortable, Aborted, Shared},
};
use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

type Outcome<T> = Result<T, Arc<Failure>>;

/// How often a waiter starts the work again after the runtime dropped the task running it.
const RESTARTS: usize = 3;

struct Flight<T> {
    id: u64,
    result: Shared<oneshot::Receiver<Outcome<T>>>,
    abort: AbortHandle,
    waiters: usize,
}

struct State<T> {
    current: Option<Flight<T>>,
    next_id: u64,
    closed: bool,
    /// Cancel the work when its last waiter gives up.
    while_awaited: bool,
}

/// The state, and whether a task is running: a flag kept in step with `State::current` under
/// the lock, so that a cache hit in the refresh window asks without taking the lock.
struct Inner<T> {
    state: Mutex<State<T>>,
    running: AtomicBool,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the flight in `state`, this `Inner`'s locked state.
    fn set_current(&self, state: &mut State<T>, flight: Option<Flight<T>>) {
        self.running.store(flight.is_some(), Ordering::Release);
        state.current = flight;
    }
}

pub(crate) struct SingleFlight<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for SingleFlight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self::with(false)
    }
}

impl<T> SingleFlight<T> {
    /// Flights whose work is cancelled when the last caller awaiting it gives up.
    pub(crate) fn while_awaited() -> Self {
        Self::with(true)
    }

    fn with(while_awaited: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    current: None,
                    next_id: 0,
                    closed: false,
                    while_awaited,
                }),
                running: AtomicBool::new(false),
            }),
        }
    }
}

impl<T> SingleFlight<T> {
    /// Whether a task is running for this key (one whose runtime died does not count). Takes no
    /// lock: a hit in the refresh window asks it.
    pub(crate) fn in_flight(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Cancels the work in flight and refuses new work; waiters get the "closed" failure.
    pub(crate) fn close(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        if let Some(flight) = &state.current {
            flight.abort.abort();
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Joins the work in flight, or starts `work()` in a new task, right away: a caller that
    /// never awaits the returned future (a background refresh) still starts it. Says whether
    /// this call started the work.
    ///
    /// The future resolves with the shared outcome; dropping it does not cancel the work.
    pub(crate) fn join<W, F>(
        &self,
        work: W,
    ) -> (bool, impl Future<Output = Outcome<T>> + Send + use<T, W, F>)
    where
        W: Fn() -> F + Send,
        F: Future<Output = Outcome<T>> + Send + 'static,
    {
        let first = start_or_join(&self.inner, &work);
        let started = matches!(first, Ok(Joined { started: true, .. }));
        let inner = self.inner.clone();
        let outcome = async move {
            let mut joined = first?;
            for _ in 0..RESTARTS {
                match (&mut joined.result).await {
                    Ok(outcome) => return outcome,
                    // The task was dropped unfinished and has cleared its slot.
                    Err(oneshot::Canceled) => joined = start_or_join(&inner, &work)?,
                }
            }
            joined.result.await.unwrap_or_else(|oneshot::Canceled| {
                Err(Arc::new(Failure::new(
                    Section::NoAsyncRuntime,
                    "The async runtime dropped the task that requested the token, again and \
                     again: it is shutting down. Request tokens from a runtime that stays up \
                     until they arrive.",
                )))
            })
        };
        (started, outcome)
    }
}

/// One caller's place in a flight: its outcome to come, and its count among the waiters.
struct Joined<T> {
    result: Shared<oneshot::Receiver<Outcome<T>>>,
    started: bool,
    _waiting: Waiting<T>,
}

/// Counts a waiter of flight `id` while it lives; the last one to give up cancels a
/// `while_awaited` flight and clears its slot, under the lock, so that nobody joins it after.
struct Waiting<T> {
    inner: Weak<Inner<T>>,
    id: u64,
}

impl<T> Drop for Waiting<T> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut state = inner.lock();
        let while_awaited = state.while_awaited;
        let Some(flight) = state.current.as_mut().filter(|f| f.id == self.id) else {
            return;
        };
        flight.waiters -= 1;
        if flight.waiters == 0 && while_awaited {
            flight.abort.abort();
            inner.set_current(&mut state, None);
        }
    }
}

/// The task in flight, or a new one running `work()`.
fn start_or_join<T, W, F>(inner: &Arc<Inner<T>>, work: &W) -> Result<Joined<T>, Arc<Failure>>
where
    T: Clone + Send + Sync + 'static,
    W: Fn() -> F,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    let (id, joined, sender, registration) = {
        let mut guard = inner.lock();
        if guard.closed {
            return Err(Arc::new(Failure::closed()));
        }
        let waiting = |id| Waiting {
            inner: Arc::downgrade(inner),
            id,
        };
        if let Some(flight) = &mut guard.current {
            flight.waiters += 1;
            return Ok(Joined {
                result: flight.result.clone(),
                started: false,
                _waiting: waiting(flight.id),
            });
        }
        // Only a caller that starts the work pays for its channel and abort handle.
        let (sender, receiver) = oneshot::channel();
        let (abort, registration) = AbortHandle::new_pair();
        let id = guard.next_id;
        guard.next_id += 1;
        let result = receiver.shared();
        let flight = Flight {
            id,
            result: result.clone(),
            abort,
            waiters: 1,
        };
        inner.set_current(&mut guard, Some(flight));
        let joined = Joined {
            result,
            started: true,
            _waiting: waiting(id),
        };
        (id, joined, sender, registration)
    };
    // Built and spawned outside the lock: dropping the task takes the lock to clear its slot.
    let slot = ClearOnDrop {
        inner: Arc::downgrade(inner),
        id,
    };
    let work = Abortable::new(work(), registration);
    let task = async move {
        let outcome = match work.await {
            Ok(result) => result,
            Err(Aborted) => Err(Arc::new(Failure::closed())),
        };
        // Cleared before the outcome goes out: a caller that has it and asks again must start
        // new work, not join this finished one and get the same outcome back.
        drop(slot);
        // Nobody waiting is fine: the work's own effects (the cached token) are what count.
        let _ = sender.send(outcome);
    };
    // Tokio's spawn panics outside a Tokio runtime; that is a usage error to report, not a
    // reason to abort the caller. The task, dropped while unwinding, clears its slot.
    match catch_unwind(AssertUnwindSafe(|| {
        get_async_runtime().spawn(Box::pin(task))
    })) {
        // Detached: the task runs on, and its outcome arrives through `result`.
        Ok(_detached) => Ok(joined),
        Err(_panic) => Err(Arc::new(Failure::new(
            Section::NoAsyncRuntime,
            "No async runtime is running to send the request on. azure_core uses Tokio by \
             default: request tokens from within a Tokio runtime (such as #[tokio::main]), or \
             install your runtime with azure_core::async_runtime::set_async_runtime.",
        ))),
    }
}

/// Clears the slot of flight `id` when its task is dropped, finished or not.
struct ClearOnDrop<T> {
    inner: Weak<Inner<T>>,
    id: u64,
}

impl<T> Drop for ClearOnDrop<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut state = inner.lock();
            if state.current.as_ref().is_some_and(|f| f.id == self.id) {
                inner.set_current(&mut state, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn failed(message: &str) -> Failure {
        Failure::new(Section::NetworkError, message)
    }

    #[tokio::test]
    async fn callers_share_one_run_and_its_failure() {
        let flight = SingleFlight::<u8>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let joined: Vec<_> = (0..3)
            .map(|_| {
                let (runs, gate) = (runs.clone(), gate.clone());
                flight.join(move || {
                    let (runs, gate) = (runs.clone(), gate.clone());
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Err::<u8, _>(Arc::new(failed("nope")))
                    }
                })
            })
            .collect();
        let started: Vec<bool> = joined.iter().map(|(started, _)| *started).collect();
        assert_eq!(started, [true, false, false]);
        let joined = joined.into_iter().map(|(_, outcome)| outcome);
        assert!(flight.in_flight());
        tokio::task::yield_now().await;
        gate.notify_one();
        for result in futures::future::join_all(joined).await {
            assert_eq!(result.unwrap_err().text(), "nope");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!flight.in_flight());
    }

    #[test]
    fn without_a_runtime_it_fails_instead_of_panicking() {
        let flight = SingleFlight::<u8>::default();
        let error = futures::executor::block_on(flight.join(|| async { Ok(1) }).1).unwrap_err();
        assert_eq!(error.section(), Section::NoAsyncRuntime, "{error}");
        assert!(!flight.in_flight());
    }

    #[test]
    fn a_task_dropped_with_its_runtime_counts_as_absent() {
        let flight = SingleFlight::<u8>::default();
        let dying = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = {
            let runs = runs.clone();
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run == 0 {
                        // The first run never finishes: its runtime goes away first.
                        futures::future::pending::<()>().await;
                    }
                    Ok(7)
                }
            }
        };
        let (_, abandoned) = dying.block_on(async { flight.join(work.clone()) });
        assert!(flight.in_flight());
        drop(dying);
        assert!(!flight.in_flight(), "the dead task cleared its slot");

        let alive = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A waiter of the dead task starts the work again on its own runtime.
        assert_eq!(alive.block_on(abandoned).unwrap(), 7);
        assert_eq!(
            alive.block_on(async { flight.join(work).1.await }).unwrap(),
            7
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn close_cancels_the_work_and_refuses_more() {
        let flight = SingleFlight::<u8>::default();
        let (_, waiting) = flight.join(|| async {
            futures::future::pending::<()>().await;
            Ok(1)
        });
        tokio::task::yield_now().await;
        flight.close();
        assert_eq!(waiting.await.unwrap_err().section(), Section::Closed);
        let refused = flight.join(|| async { Ok(1) }).1.await.unwrap_err();
        assert_eq!(refused.section(), Section::Closed);
    }

    /// A caller that got a flight's outcome and asks again starts new work: it never joins the
    /// flight that just finished and receives its outcome a second time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_after_an_outcome_starts_new_work() {
        let flight = SingleFlight::<u8>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        for round in 0..1000 {
            let runs = runs.clone();
            let (started, outcome) = flight.join(move || {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Err::<u8, _>(Arc::new(failed("nope")))
                }
            });
            assert!(started, "round {round}: joined a finished flight");
            assert!(outcome.await.is_err());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1000);
    }

    #[tokio::test]
    async fn a_flight_while_awaited_ends_with_its_last_waiter() {
        let flight = SingleFlight::<u8>::while_awaited();
        let runs = Arc::new(AtomicUsize::new(0));
        let hung = {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async {
                    futures::future::pending::<()>().await;
                    Ok(1)
                }
            }
        };
        let (_, first) = flight.join(hung.clone());
        let (_, second) = flight.join(hung.clone());
        drop(first);
        assert!(flight.in_flight(), "one waiter is left");
        drop(second);
        assert!(!flight.in_flight(), "nobody waits: cancelled and cleared");
        // The next caller starts afresh instead of joining the abandoned request.
        let (started, third) = flight.join(|| async { Ok(7) });
        assert!(started);
        assert_eq!(third.await.unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // An ordinary flight keeps running without waiters (a background refresh).
        let ordinary = SingleFlight::<u8>::default();
        drop(ordinary.join(hung));
        assert!(ordinary.in_flight());
    }
}
