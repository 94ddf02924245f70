//! Where the credential reads the time.
//!
//! Every expiry and refresh decision reads the time here, and the crate's own tests move time
//! forward instead of sleeping. Moving time is a crate-private seam: it does not exist outside
//! `cfg(test)`, where `Clock` is a zero-sized handle on the system's clocks.
//!
//! Two readings: the wall clock (Unix milliseconds, for token expiry times as Entra states them)
//! and the monotonic clock (`Instant`, for the cache's deadlines). A cache hit reads only the
//! monotonic clock and compares it with a deadline fixed when the token was stored: the cheapest
//! reading there is, and one that a wall clock stepped by NTP cannot fool.

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;

/// Unix time in milliseconds: what the cache compares on every hit.
pub(crate) type Millis = i64;

/// The credential's source of time.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that moves only when a test says so, shared by its clones: Unix milliseconds,
    /// and the `Instant` and milliseconds it started at (its monotonic reading moves with it).
    #[cfg(test)]
    Manual(
        std::sync::Arc<std::sync::atomic::AtomicI64>,
        Instant,
        Millis,
    ),
}

impl Clock {
    /// The current time in Unix milliseconds.
    #[inline]
    pub(crate) fn now_millis(&self) -> Millis {
        match self {
            #[allow(clippy::disallowed_methods)] // the one place the credential reads the real time
            Clock::System => match SystemTime::now().duration_since(UNIX_EPOCH) {
                Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
                // A clock set before 1970 is broken; every token then looks fresh from the
                // network's point of view and expired from the cache's, which is the safe side.
                Err(_) => 0,
            },
            #[cfg(test)]
            Clock::Manual(millis, ..) => millis.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// The monotonic clock: what cache deadlines are compared with.
    #[inline]
    pub(crate) fn now_instant(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(millis, start, start_millis) => {
                let moved = millis.load(std::sync::atomic::Ordering::SeqCst) - start_millis;
                at_offset(*start, moved)
            }
        }
    }

    /// The current time as a date, for token expiry times.
    pub(crate) fn now(&self) -> OffsetDateTime {
        from_millis(self.now_millis())
    }
}

/// `at` in Unix milliseconds, saturating far outside the range tokens live in.
pub(crate) fn to_millis(at: OffsetDateTime) -> Millis {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(if at.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// `base` moved by `millis` (either way), clamped to what `Instant` can hold.
pub(crate) fn at_offset(base: Instant, millis: Millis) -> Instant {
    let by = std::time::Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        base.checked_add(by).unwrap_or(base)
    } else {
        base.checked_sub(by).unwrap_or(base)
    }
}

/// Unix milliseconds as a date; out-of-range values clamp to the Unix epoch.
pub(crate) fn from_millis(millis: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
impl Clock {
    /// A clock stopped at `start` (to the millisecond).
    pub(crate) fn manual(start: OffsetDateTime) -> Self {
        let start = to_millis(start);
        Clock::Manual(
            std::sync::Arc::new(std::sync::atomic::AtomicI64::new(start)),
            Instant::now(),
            start,
        )
    }

    /// Moves a manual clock by `by` (backwards when negative).
    pub(crate) fn advance(&self, by: time::Duration) {
        if let Clock::Manual(millis, ..) = self {
            let by = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
            millis.fetch_add(by, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Sets a manual clock to `at`.
    pub(crate) fn set(&self, at: OffsetDateTime) {
        if let Clock::Manual(millis, ..) = self {
            millis.store(to_millis(at), std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn manual_clock_moves_only_when_told_and_is_shared() {
        let clock = Clock::manual(OffsetDateTime::UNIX_EPOCH);
        let shared = clock.clone();
        assert_eq!(clock.now(), OffsetDateTime::UNIX_EPOCH);
        shared.advance(Duration::seconds(90));
        assert_eq!(clock.now_millis(), 90_000);
        clock.set(OffsetDateTime::UNIX_EPOCH + Duration::days(1));
        assert_eq!(shared.now().unix_timestamp(), 86_400);
    }

    #[test]
    fn the_monotonic_reading_moves_with_a_manual_clock() {
        let clock = Clock::manual(OffsetDateTime::UNIX_EPOCH);
        let start = clock.now_instant();
        clock.advance(Duration::seconds(90));
        assert_eq!(
            clock.now_instant() - start,
            std::time::Duration::from_secs(90)
        );
        clock.advance(Duration::seconds(-30));
        assert_eq!(
            clock.now_instant() - start,
            std::time::Duration::from_secs(60)
        );
        let base = Instant::now();
        assert_eq!(
            at_offset(base, 1500) - base,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            base - at_offset(base, -1500),
            std::time::Duration::from_millis(1500)
        );
    }

    #[test]
    fn millis_round_trip_and_saturate() {
        let cases = [
            (OffsetDateTime::UNIX_EPOCH, 0),
            (
                OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
                1_700_000_000_000,
            ),
            (OffsetDateTime::UNIX_EPOCH - Duration::milliseconds(1), -1),
        ];
        for (at, millis) in cases {
            assert_eq!(to_millis(at), millis);
            assert_eq!(from_millis(millis), at);
        }
        let system = Clock::System.now_millis();
        assert!(system > 1_700_000_000_000, "{system}");
    }
}
