//! One request at a time per key, shared by every caller that needs its result.
//!
//! The work runs in its own task, so a caller that gives up (its future dropped at any await)
//! neither cancels the request for the others nor leaves a lock held: the next caller joins the
//! same task, or starts a new one once it has finished.

use crate::error::{self, SharedError};
use futures::{
    FutureExt as _,
    future::{BoxFuture, Shared},
};
use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::task::AbortHandle;

type Outcome<T> = Result<T, SharedError>;

struct Flight<T> {
    id: u64,
    result: Shared<BoxFuture<'static, Outcome<T>>>,
    abort: AbortHandle,
}

pub(crate) struct SingleFlight<T> {
    state: Arc<Mutex<State<T>>>,
}

struct State<T> {
    current: Option<Flight<T>>,
    next_id: u64,
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
        Self {
            state: Arc::new(Mutex::new(State {
                current: None,
                next_id: 0,
            })),
        }
    }
}

impl<T> SingleFlight<T> {
    pub(crate) fn in_flight(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .is_some()
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Joins the request in flight, or starts `work` in a new task.
    ///
    /// The returned future resolves with the shared outcome; dropping it does not cancel the
    /// work.
    pub(crate) fn join<W, F>(
        &self,
        work: W,
    ) -> impl Future<Output = azure_core::Result<T>> + Send + use<T, W, F>
    where
        W: FnOnce() -> F,
        F: Future<Output = azure_core::Result<T>> + Send + 'static,
    {
        // Without a Tokio runtime nothing can be spawned (nor could reqwest send): say so
        // rather than panic.
        let runtime = tokio::runtime::Handle::try_current();
        let result = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match (&state.current, runtime) {
                (Some(flight), _) => Ok(flight.result.clone()),
                (None, Err(_)) => Err(error::failed(
                    "No Tokio runtime is running. Request tokens from within a Tokio runtime, \
                     as the Azure SDK for Rust's HTTP client requires one.",
                )),
                (None, Ok(runtime)) => {
                    let id = state.next_id;
                    state.next_id += 1;
                    let slot = Arc::downgrade(&self.state);
                    let task = runtime.spawn(work());
                    let abort = task.abort_handle();
                    let result = async move {
                        let outcome = match task.await {
                            Ok(Ok(value)) => Ok(value),
                            Ok(Err(e)) => Err(SharedError(Arc::new(e))),
                            Err(join) if join.is_cancelled() => Err(SharedError(Arc::new(error::closed()))),
                            Err(_) => Err(SharedError(Arc::new(error::failed(
                                "An internal task failed while acquiring a token. Please report this bug.",
                            )))),
                        };
                        if let Some(state) = slot.upgrade() {
                            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                            if state.current.as_ref().is_some_and(|f| f.id == id) {
                                state.current = None;
                            }
                        }
                        outcome
                    }
                    .boxed()
                    .shared();
                    state.current = Some(Flight {
                        id,
                        result: result.clone(),
                        abort,
                    });
                    // The shared future clears the slot only when polled; this driver polls it
                    // even if every caller walks away.
                    runtime.spawn(result.clone());
                    Ok(result)
                }
            }
        };
        async move { result?.await.map_err(|e| e.to_error()) }
    }

    /// Cancels the work in flight; its waiters get the "closed" error.
    pub(crate) fn abort(&self) {
        if let Some(flight) = &self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current
        {
            flight.abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_runtime_it_fails_instead_of_panicking() {
        let flight = SingleFlight::<u8>::default();
        let error = futures::executor::block_on(flight.join(|| async { Ok(1) })).unwrap_err();
        assert!(error.to_string().contains("No Tokio runtime"), "{error}");
        assert!(!flight.in_flight());
    }

    #[tokio::test]
    async fn callers_share_one_run_and_its_error() {
        let flight = SingleFlight::<u8>::default();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let joined: Vec<_> = (0..3)
            .map(|_| {
                let (runs, gate) = (runs.clone(), gate.clone());
                flight.join(move || async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    gate.notified().await;
                    Err::<u8, _>(error::failed("nope"))
                })
            })
            .collect();
        assert!(flight.in_flight());
        gate.notify_one();
        for result in futures::future::join_all(joined).await {
            assert!(result.unwrap_err().to_string().contains("nope"));
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!flight.in_flight());
    }
}
