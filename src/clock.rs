//! Where the credential reads the time.
//!
//! Every expiry and refresh decision goes through a [`Clock`], so tests can move time
//! forward instead of sleeping, and so the cache hit path reads the time exactly once.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};
use time::{Duration, OffsetDateTime};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real clock: [`OffsetDateTime::now_utc`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    #[allow(clippy::disallowed_methods)] // the one place the credential reads the real time
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for deterministic tests.
///
/// Clones share the same time.
///
/// ```
/// use azure_pipelines_credential::clock::{Clock, ManualClock};
/// use time::Duration;
///
/// let clock = ManualClock::new(time::OffsetDateTime::UNIX_EPOCH);
/// clock.advance(Duration::minutes(5));
/// assert_eq!(clock.now().unix_timestamp(), 300);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    // Milliseconds since the Unix epoch: an atomic keeps `now()` lock-free in benchmarks.
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start` (to the millisecond).
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(to_millis(start))),
        }
    }

    /// A clock stopped at the current real time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Moves the clock forward (or backward, for a negative `by`).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        self.millis.store(to_millis(at), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let millis = self.millis.load(Ordering::SeqCst);
        OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(millis)
    }
}

fn to_millis(at: OffsetDateTime) -> i64 {
    i64::try_from((at - OffsetDateTime::UNIX_EPOCH).whole_milliseconds()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(clock.now(), OffsetDateTime::UNIX_EPOCH);
        let shared = clock.clone();
        shared.advance(Duration::seconds(90));
        assert_eq!(clock.now().unix_timestamp(), 90);
        clock.set(OffsetDateTime::UNIX_EPOCH + Duration::days(1));
        assert_eq!(shared.now().unix_timestamp(), 86_400);
    }
}
