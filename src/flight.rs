//! One request at a time per key, shared by every caller that needs its result.
//!
//! The caller that starts the work drives it inside its own future, so a cold call reaches the
//! network with no task to spawn and no hop between threads. Should that caller give up first
//! (its future dropped at any await), the work goes on as a task on azure_core's async runtime
//! (`azure_core::async_runtime`, Tokio by default): giving up neither cancels the request for the
//! others nor leaves a lock held, and the next caller joins the same work, or starts new work
//! once it has finished.
//!
//! The work can also end without a result: its runtime shut down under it (a runtime per call in
//! a sync wrapper, one per `#[tokio::test]` around a shared credential). Dropping the work clears
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
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

type Outcome<T> = Result<T, Arc<Failure>>;

/// The work of a flight, with the clearing of its slot and the sending of its outcome, which it
/// also returns to the caller driving it.
type Task<T> = Pin<Box<dyn Future<Output = Outcome<T>> + Send>>;

/// How often a waiter starts the work again after the work it waited for was dropped unfinished.
const RESTARTS: usize = 3;

struct Flight<T> {
    id: u64,
    result: Shared<oneshot::Receiver<Outcome<T>>>,
    abort: AbortHandle,
    /// Callers waiting, counted for `while_awaited` flights only.
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
    /// Joins the work in flight, or takes the slot for `work()` right away. Says whether this
    /// call started the work.
    ///
    /// The future resolves with the shared outcome. The caller that started the work runs it
    /// while polling this future; dropping the future, polled or not, hands the work to a task
    /// (so a background refresh that never awaits it still runs it) and cancels nothing, except
    /// a `while_awaited` flight that nobody else waits for.
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
                match futures::future::poll_fn(|cx| joined.poll_outcome(cx)).await {
                    Ok(outcome) => return outcome,
                    // The work was dropped unfinished and has cleared its slot.
                    Err(oneshot::Canceled) => joined = start_or_join(&inner, &work)?,
                }
            }
            futures::future::poll_fn(|cx| joined.poll_outcome(cx))
                .await
                .unwrap_or_else(|oneshot::Canceled| {
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

/// One caller's place in a flight: its outcome to come, its count among the waiters of a
/// `while_awaited` flight and, for the caller that started the work, the work to drive while it
/// waits.
struct Joined<T: 'static> {
    result: Shared<oneshot::Receiver<Outcome<T>>>,
    started: bool,
    // Dropped before `_waiting`, which a `while_awaited` hand-off counts on.
    driver: Option<Driver<T>>,
    // Only `while_awaited` flights count their waiters: an ordinary flight runs on whoever
    // waits, so its callers take the lock once, to join, and not again as they leave (a
    // thousand of them at a cold start).
    _waiting: Option<Waiting<T>>,
}

impl<T: Clone + 'static> Joined<T> {
    /// Drives the work if this caller started it, then looks for the outcome. `Canceled`: the
    /// work was dropped unfinished.
    fn poll_outcome(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Outcome<T>, oneshot::Canceled>> {
        if let Some(driving) = self.driver.as_mut().and_then(|d| d.drive(cx)) {
            // The work this caller drives hands it the outcome. Taking it from the shared
            // outcome instead would register this task there as it completes, and the shared
            // outcome wakes every task registered, this running one too: Tokio answers a task
            // that wakes itself by polling it again and waking an idle worker, which then takes
            // the next request's I/O to another thread.
            return match driving {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
                Err(panicked) => {
                    self.driver = None;
                    Poll::Ready(Ok(Err(Arc::new(panicked.failure()))))
                }
            };
        }
        Pin::new(&mut self.result).poll(cx)
    }
}

/// The work of flight `id`, run inside the future of the caller that started it. Dropped
/// unfinished, it hands the work to a task of its own: always for an ordinary flight, and for a
/// `while_awaited` one if someone else still waits.
struct Driver<T: 'static> {
    task: Option<Task<T>>,
    inner: Weak<Inner<T>>,
    id: u64,
}

/// The work panicked: Tokio's I/O and timers do when polled outside a Tokio runtime, and so may
/// a transport of the application's.
struct Panicked {
    /// The panic speaks of a missing runtime.
    no_runtime: bool,
}

impl Panicked {
    fn of(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or_default();
        Self {
            no_runtime: ["runtime", "reactor", "Tokio"]
                .iter()
                .any(|word| message.contains(word)),
        }
    }

    fn failure(&self) -> Failure {
        if self.no_runtime {
            return Failure::new(
                Section::NoAsyncRuntime,
                "No async runtime is running to send the request on. azure_core uses Tokio by \
                 default: request tokens from within a Tokio runtime (such as #[tokio::main]), or \
                 install your runtime with azure_core::async_runtime::set_async_runtime.",
            );
        }
        // The panic's message is not repeated: a transport's may quote the request, secrets
        // and all.
        Failure::new(
            Section::NetworkError,
            "The request panicked in the HTTP transport or the async runtime (its message is not \
             repeated, as it may quote the request). Check the transport set in client_options, \
             or the runtime installed with azure_core::async_runtime::set_async_runtime.",
        )
    }
}

impl<T: 'static> Driver<T> {
    /// Polls the work, `Ready` with its outcome when it finishes; `None` once it has.
    fn drive(&mut self, cx: &mut Context<'_>) -> Option<Result<Poll<Outcome<T>>, Panicked>> {
        let task = self.task.as_mut()?;
        Some(
            match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(cx))) {
                Ok(Poll::Ready(outcome)) => {
                    self.task = None;
                    Ok(Poll::Ready(outcome))
                }
                Ok(Poll::Pending) => Ok(Poll::Pending),
                Err(payload) => {
                    // Dropping it clears the slot, so its waiters start anew on their own runtime.
                    let task = self.task.take();
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(task)));
                    Err(Panicked::of(payload.as_ref()))
                }
            },
        )
    }
}

impl<T: 'static> Drop for Driver<T> {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let hand_off = {
            let state = inner.lock();
            !state.closed
                && (!state.while_awaited
                    || state
                        .current
                        .as_ref()
                        .is_some_and(|f| f.id == self.id && f.waiters > 1))
        };
        // Outside the lock: the task, dropped, takes it to clear its slot.
        drop(inner);
        if hand_off {
            // A runtime that cannot take the task (none is running, or it is shutting down)
            // drops it, which clears the slot: the waiters start anew on their own runtime.
            let _ = catch_unwind(AssertUnwindSafe(move || {
                // The outcome has gone to the waiters; the task has nobody to return it to.
                drop(get_async_runtime().spawn(Box::pin(async move {
                    let _outcome = task.await;
                })));
            }));
        }
    }
}

/// Counts a waiter of flight `id` while it lives; the last one to give up cancels a
/// `while_awaited` flight and clears its slot, under the lock, so that nobody joins it after.
struct Waiting<T> {
    inner: Weak<Inner<T>>,
    id: u64,
}

impl<T> Waiting<T> {
    /// A waiter of flight `id`, if the flight counts them.
    fn of(inner: &Arc<Inner<T>>, id: u64, counted: bool) -> Option<Self> {
        counted.then(|| Waiting {
            inner: Arc::downgrade(inner),
            id,
        })
    }
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
    let (id, result, sender, registration, counted) = {
        let mut guard = inner.lock();
        if guard.closed {
            return Err(Arc::new(Failure::closed()));
        }
        let counted = guard.while_awaited;
        if let Some(flight) = &mut guard.current {
            flight.waiters += usize::from(counted);
            return Ok(Joined {
                result: flight.result.clone(),
                started: false,
                driver: None,
                _waiting: Waiting::of(inner, flight.id, counted),
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
        (id, result, sender, registration, counted)
    };
    // Built outside the lock: dropping the task takes the lock to clear its slot.
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
        let _ = sender.send(outcome.clone());
        outcome
    };
    Ok(Joined {
        result,
        started: true,
        driver: Some(Driver {
            task: Some(Box::pin(task)),
            inner: Arc::downgrade(inner),
            id,
        }),
        _waiting: Waiting::of(inner, id, counted),
    })
}

/// Clears the slot of flight `id` when its work is dropped, finished or not.
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
    fn work_that_needs_no_runtime_runs_without_one() {
        let flight = SingleFlight::<u8>::default();
        let outcome = futures::executor::block_on(flight.join(|| async { Ok(1) }).1);
        assert_eq!(outcome.unwrap(), 1);
        assert!(!flight.in_flight());
    }

    /// Work that counts its runs in `runs`: the first is `first`, every later one gives 7.
    fn first_run_then_7(
        runs: &Arc<AtomicUsize>,
        first: fn() -> futures::future::BoxFuture<'static, Outcome<u8>>,
    ) -> impl Fn() -> futures::future::BoxFuture<'static, Outcome<u8>> + Clone + Send + use<> {
        let runs = runs.clone();
        move || {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                first()
            } else {
                Box::pin(async { Ok(7) })
            }
        }
    }

    /// What Tokio's I/O and timers do when polled outside a Tokio runtime.
    fn tokio_outside_a_runtime() -> Outcome<u8> {
        panic!(
            "there is no reactor running, must be called from the context of a Tokio 1.x runtime"
        )
    }

    #[test]
    fn work_that_panics_fails_the_caller_and_its_joiners_start_anew() {
        let flight = SingleFlight::<u8>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let work = first_run_then_7(&runs, || Box::pin(async { tokio_outside_a_runtime() }));
        let (_, starter) = flight.join(work.clone());
        let (_, joiner) = flight.join(work);
        let error = futures::executor::block_on(starter).unwrap_err();
        assert_eq!(error.section(), Section::NoAsyncRuntime, "{error}");
        assert!(!flight.in_flight(), "the panicked work cleared its slot");
        assert_eq!(futures::executor::block_on(joiner).unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// A panic that says nothing of a runtime (a transport's) is not reported as a missing
    /// runtime, and its message, which may quote the request, is not repeated.
    #[test]
    fn other_panics_are_reported_without_their_message() {
        let flight = SingleFlight::<u8>::default();
        let (_, outcome) = flight.join(|| async {
            if std::hint::black_box(true) {
                panic!("transport failed on POST with Authorization: Bearer sekrit");
            }
            Ok(1)
        });
        let error = futures::executor::block_on(outcome).unwrap_err();
        assert_eq!(error.section(), Section::NetworkError, "{error}");
        assert!(!error.text().contains("sekrit"), "{error}");
        assert!(!flight.in_flight());
    }

    #[test]
    fn work_dropped_with_its_runtime_counts_as_absent() {
        let flight = SingleFlight::<u8>::default();
        let dying = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        // The first run never finishes: its runtime goes away first.
        let work = first_run_then_7(&runs, || Box::pin(futures::future::pending()));
        let (_, starter) = flight.join(work.clone());
        let (_, joiner) = flight.join(work.clone());
        // The starter drives the work in a task of the runtime about to go.
        dying.block_on(async {
            tokio::spawn(starter);
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        });
        assert!(flight.in_flight());
        drop(dying);
        assert!(!flight.in_flight(), "the dead work cleared its slot");

        let alive = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A waiter of the dead work starts it again on its own runtime.
        assert_eq!(alive.block_on(joiner).unwrap(), 7);
        assert_eq!(
            alive.block_on(async { flight.join(work).1.await }).unwrap(),
            7
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// The caller driving the work takes the outcome from it, and is not woken by it: Tokio
    /// polls a task that wakes itself once more, and wakes an idle worker to do it.
    #[test]
    fn the_starter_is_not_woken_by_its_own_outcome() {
        #[derive(Default)]
        struct Wakes(AtomicUsize);
        impl futures::task::ArcWake for Wakes {
            fn wake_by_ref(arc: &Arc<Self>) {
                arc.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let flight = SingleFlight::<u8>::default();
        let (_, outcome) = flight.join(|| async { Ok(7) });
        let (_, joiner) = flight.join(|| async { Ok(8) });
        let wakes = Arc::new(Wakes::default());
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut joiner = Box::pin(joiner);
        assert!(joiner.as_mut().poll(&mut cx).is_pending());
        let starter_wakes = Arc::new(Wakes::default());
        let starter_waker = futures::task::waker(starter_wakes.clone());
        let polled = Box::pin(outcome)
            .as_mut()
            .poll(&mut Context::from_waker(&starter_waker));
        assert!(matches!(polled, Poll::Ready(Ok(7))));
        assert_eq!(
            starter_wakes.0.load(Ordering::SeqCst),
            0,
            "the starter woke itself"
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the joiner is woken");
        assert!(matches!(joiner.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    }

    /// A caller that gives up hands the work it drove to a task: its joiners and the cache
    /// still get the outcome, from one run.
    #[tokio::test]
    async fn a_starter_that_gives_up_hands_the_work_on() {
        let flight = SingleFlight::<u8>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let work = {
            let (runs, gate) = (runs.clone(), gate.clone());
            move || {
                let (runs, gate) = (runs.clone(), gate.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(7)
                }
            }
        };
        let (started, starter) = flight.join(work.clone());
        assert!(started);
        let (_, joiner) = flight.join(work);
        // Polled once, so the work is under way in the starter's future, then dropped.
        let mut starter = Box::pin(starter);
        assert!(futures::poll!(starter.as_mut()).is_pending());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        drop(starter);
        assert!(flight.in_flight(), "handed on, not cancelled");
        gate.notify_one();
        assert_eq!(joiner.await.unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
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
