//! The access-token cache.
//!
//! - Hits take no lock and write no shared memory: one `arc-swap` load of the table (which
//!   holds the tokens), one clock read, and the token clone that `AccessToken` requires. Keys
//!   are looked up borrowed (scopes, tenant, CAE), so a hit allocates no key.
//! - Each token has a refresh time (Entra's `refresh_in`, half-life for long tokens, else a
//!   window before expiry wide enough for azure_core's 5-minute bearer policy; minus a little
//!   jitter) and a stop time shortly before expiry. Between the two, callers get the cached token
//!   at once while one background task per key refreshes it; a failed refresh is logged and not
//!   retried for [`REFRESH_BACKOFF`].
//! - Past the stop time callers wait, and identical callers share one request; keys never wait
//!   on each other.
//! - At most `capacity` keys: a new key evicts expired entries first, then the soonest to expire.

use crate::{AccessTokenInfo, clock::Clock, single_flight::SingleFlight};
use arc_swap::ArcSwap;
use azure_core::credentials::AccessToken;
use hashbrown::{Equivalent, HashMap};
use std::{
    future::Future,
    hash::{BuildHasher, Hash, Hasher, RandomState},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};
use time::{Duration, OffsetDateTime};

/// How long after a failed background refresh the next one may start.
pub(crate) const REFRESH_BACKOFF: Duration = Duration::seconds(30);
/// Refreshing starts at least this long before expiry, so that azure_core's bearer policy (which
/// asks again with 5 minutes left) receives a new token rather than the old one.
const REFRESH_WINDOW: Duration = Duration::minutes(6);
/// A token is not handed out in its last moments: callers wait for a new one instead.
const STOP_MARGIN: Duration = Duration::seconds(30);
const MAX_JITTER: Duration = Duration::seconds(60);
pub(crate) const DEFAULT_CAPACITY: usize = 256;

/// A cache key, borrowed: what a lookup needs without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyRef<'a> {
    pub(crate) scopes: &'a [&'a str],
    pub(crate) tenant: &'a str,
    pub(crate) cae: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    scopes: Box<[Box<str>]>,
    tenant: Box<str>,
    cae: bool,
}

// `Key` and `KeyRef` must hash identically: the same fields, in the same order.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.scopes.len());
        self.scopes.iter().for_each(|s| s.as_ref().hash(state));
        self.tenant.as_ref().hash(state);
        self.cae.hash(state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.scopes.len());
        self.scopes.iter().for_each(|s| s.hash(state));
        self.tenant.hash(state);
        self.cae.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.cae == key.cae
            && *self.tenant == *key.tenant
            && self.scopes.len() == key.scopes.len()
            && self
                .scopes
                .iter()
                .zip(key.scopes.iter())
                .all(|(a, b)| *a == b.as_ref())
    }
}

impl KeyRef<'_> {
    fn to_owned_key(self) -> Key {
        Key {
            scopes: self.scopes.iter().map(|s| Box::from(*s)).collect(),
            tenant: self.tenant.into(),
            cae: self.cae,
        }
    }
}

/// A cached token and when to stop trusting it.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) info: AccessTokenInfo,
    pub(crate) access: AccessToken,
    refresh_at: OffsetDateTime,
    stop_at: OffsetDateTime,
}

impl Cached {
    pub(crate) fn new(info: AccessTokenInfo, now: OffsetDateTime, jitter: f64) -> Self {
        let (refresh_at, stop_at) = schedule(&info, now, jitter);
        Self {
            access: AccessToken::new(info.token.clone(), info.expires_on),
            info,
            refresh_at,
            stop_at,
        }
    }
}

/// When to start refreshing `info` and when to stop handing it out.
///
/// `jitter` in `[0, 1)` moves the refresh earlier by up to a tenth of the time left before it
/// (at most a minute), so fleets of jobs started together do not refresh together.
pub(crate) fn schedule(
    info: &AccessTokenInfo,
    now: OffsetDateTime,
    jitter: f64,
) -> (OffsetDateTime, OffsetDateTime) {
    let lifetime = info.expires_on - now;
    if lifetime <= Duration::ZERO {
        return (info.expires_on, info.expires_on);
    }
    let stop_at = info.expires_on - STOP_MARGIN.min(lifetime / 10);
    let latest = info.expires_on - REFRESH_WINDOW.min(lifetime / 2);
    let base = info.refresh_on.map_or(latest, |r| r.min(latest)).max(now);
    let jitter = MAX_JITTER.min((base - now) / 10) * jitter.clamp(0.0, 1.0);
    (base - jitter, stop_at)
}

/// What a key needs besides its token: its request in flight and its backoff.
struct Slot {
    flight: SingleFlight<Arc<Cached>>,
    /// Unix milliseconds before which no background refresh starts (after a failure).
    backoff_until: AtomicI64,
}

impl Slot {
    fn new() -> Self {
        Self {
            flight: SingleFlight::default(),
            backoff_until: AtomicI64::new(i64::MIN),
        }
    }
}

/// One key's entry. The token lives in the table itself, so a hit is a single `arc-swap` load.
#[derive(Clone)]
struct Entry {
    slot: Arc<Slot>,
    token: Option<Arc<Cached>>,
}

type Slots = HashMap<Arc<Key>, Entry>;

impl Equivalent<Arc<Key>> for KeyRef<'_> {
    fn equivalent(&self, key: &Arc<Key>) -> bool {
        Equivalent::<Key>::equivalent(self, key)
    }
}

/// The table of entries, replaced whole on every write (new key or new token). Writes are rare
/// (a new key, or a token about once an hour per key) and cost a copy of at most `capacity`
/// reference-counted entries; reads are one lock-free load.
struct Table {
    slots: ArcSwap<Slots>,
    write: Mutex<()>,
}

impl Table {
    fn token(&self, key: &Arc<Key>) -> Option<Arc<Cached>> {
        self.slots.load().get(key).and_then(|e| e.token.clone())
    }

    /// Replaces the token of `key`, if the key is still in the table.
    fn set_token(&self, key: &Arc<Key>, token: Arc<Cached>) {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.slots.load_full();
        if !current.contains_key(key) {
            return;
        }
        let mut next: Slots = (*current).clone();
        if let Some(entry) = next.get_mut(key) {
            entry.token = Some(token);
        }
        self.slots.store(Arc::new(next));
    }
}

/// What a lookup found.
pub(crate) enum Lookup<R> {
    /// A token to hand out now.
    Hit(R),
    /// No usable token: wait for one.
    Miss,
}

pub(crate) struct TokenCache {
    table: Arc<Table>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    closed: AtomicBool,
    jitter: RandomState,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.table.slots.load().len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(clock: Arc<dyn Clock>, capacity: usize) -> Self {
        Self {
            table: Arc::new(Table {
                slots: ArcSwap::from_pointee(Slots::default()),
                write: Mutex::new(()),
            }),
            clock,
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            jitter: RandomState::new(),
        }
    }

    /// The cached token for `key`, projected by `project`, if one may be handed out now.
    ///
    /// In the refresh window this also starts the background refresh with `fetch`.
    #[inline]
    pub(crate) fn lookup<R, F, Fut>(
        &self,
        key: KeyRef<'_>,
        project: impl FnOnce(&Cached) -> R,
        fetch: F,
    ) -> Lookup<R>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessTokenInfo>> + Send + 'static,
    {
        let now = self.clock.now();
        let slots = self.table.slots.load();
        let Some((owned, entry)) = slots.get_key_value(&key) else {
            return Lookup::Miss;
        };
        let Some(token) = entry.token.as_deref() else {
            return Lookup::Miss;
        };
        if now < token.refresh_at {
            return Lookup::Hit(project(token));
        }
        if now < token.stop_at {
            self.refresh_in_background(owned, &entry.slot, now, fetch);
            return Lookup::Hit(project(token));
        }
        Lookup::Miss
    }

    #[cold]
    fn refresh_in_background<F, Fut>(
        &self,
        key: &Arc<Key>,
        slot: &Arc<Slot>,
        now: OffsetDateTime,
        fetch: F,
    ) where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessTokenInfo>> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire)
            || slot.flight.in_flight()
            || unix_millis(now) < slot.backoff_until.load(Ordering::Acquire)
        {
            return;
        }
        tracing::debug!(target: "azure_pipelines_credential", "token cache: refreshing in the background");
        drop(
            slot.flight
                .join(self.work(key.clone(), slot.clone(), fetch)),
        );
    }

    /// Waits for a token for `key`: joins the request in flight for it, or starts one.
    pub(crate) async fn wait<F, Fut>(
        &self,
        key: KeyRef<'_>,
        fetch: F,
    ) -> azure_core::Result<Arc<Cached>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessTokenInfo>> + Send + 'static,
    {
        let (key, slot) = self.entry(key);
        if let Some(token) = self.table.token(&key)
            && self.clock.now() < token.stop_at
        {
            return Ok(token);
        }
        tracing::debug!(target: "azure_pipelines_credential", "token cache: miss");
        slot.flight.join(self.work(key, slot.clone(), fetch)).await
    }

    /// Stores a token acquired outside the cache (a request with claims) for `key`.
    pub(crate) fn store(&self, key: KeyRef<'_>, info: AccessTokenInfo) -> Arc<Cached> {
        let cached = Arc::new(Cached::new(info, self.clock.now(), self.jitter_unit()));
        let (key, _) = self.entry(key);
        self.table.set_token(&key, cached.clone());
        cached
    }

    /// Stops background refreshes and cancels requests in flight; cached tokens stay readable.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for entry in self.table.slots.load().values() {
            entry.slot.flight.abort();
        }
    }

    fn work<F, Fut>(
        &self,
        key: Arc<Key>,
        slot: Arc<Slot>,
        fetch: F,
    ) -> impl FnOnce() -> std::pin::Pin<
        Box<dyn Future<Output = azure_core::Result<Arc<Cached>>> + Send>,
    > + use<F, Fut>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessTokenInfo>> + Send + 'static,
    {
        let clock = self.clock.clone();
        let table = self.table.clone();
        let jitter = self.jitter_unit();
        move || {
            let fetching = fetch();
            Box::pin(async move {
                match fetching.await {
                    Ok(info) => {
                        let cached = Arc::new(Cached::new(info, clock.now(), jitter));
                        table.set_token(&key, cached.clone());
                        Ok(cached)
                    }
                    Err(error) => {
                        let now = clock.now();
                        slot.backoff_until
                            .store(unix_millis(now + REFRESH_BACKOFF), Ordering::Release);
                        if table.token(&key).is_some_and(|t| now < t.stop_at) {
                            tracing::warn!(
                                target: "azure_pipelines_credential",
                                "token refresh failed; the cached token is still valid and stays in use; next attempt in {} s: {error}",
                                REFRESH_BACKOFF.whole_seconds()
                            );
                        }
                        Err(error)
                    }
                }
            })
        }
    }

    /// The entry for `key`, created (evicting if the table is full) when missing.
    fn entry(&self, key: KeyRef<'_>) -> (Arc<Key>, Arc<Slot>) {
        if let Some((k, entry)) = self.table.slots.load().get_key_value(&key) {
            return (k.clone(), entry.slot.clone());
        }
        let _writer = self
            .table
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.table.slots.load_full();
        if let Some((k, entry)) = current.get_key_value(&key) {
            return (k.clone(), entry.slot.clone());
        }
        let mut next: Slots = (*current).clone();
        if next.len() >= self.capacity {
            evict(&mut next, self.capacity - 1, unix_millis(self.clock.now()));
        }
        let owned = Arc::new(key.to_owned_key());
        let slot = Arc::new(Slot::new());
        next.insert(
            owned.clone(),
            Entry {
                slot: slot.clone(),
                token: None,
            },
        );
        self.table.slots.store(Arc::new(next));
        (owned, slot)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.slots.load().len()
    }

    #[cfg(test)]
    fn in_flight(&self, key: KeyRef<'_>) -> bool {
        self.table
            .slots
            .load()
            .get(&key)
            .is_some_and(|e| e.slot.flight.in_flight())
    }

    fn jitter_unit(&self) -> f64 {
        (self.jitter.hash_one(unix_millis(self.clock.now())) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Shrinks `slots` to `keep` entries: expired or empty ones first, then the soonest to expire.
/// Entries with a request in flight are kept.
fn evict(slots: &mut Slots, keep: usize, now_millis: i64) {
    let stop_millis = |entry: &Entry| {
        entry
            .token
            .as_ref()
            .map_or(i64::MIN, |t| unix_millis(t.stop_at))
    };
    slots.retain(|_, e| e.slot.flight.in_flight() || stop_millis(e) > now_millis);
    if slots.len() <= keep {
        return;
    }
    let mut by_expiry: Vec<(i64, Arc<Key>)> = slots
        .iter()
        .filter(|(_, e)| !e.slot.flight.in_flight())
        .map(|(k, e)| (stop_millis(e), k.clone()))
        .collect();
    by_expiry.sort_unstable_by_key(|(stop, _)| *stop);
    let excess = slots.len() - keep;
    for (_, key) in by_expiry.into_iter().take(excess) {
        slots.remove(&key);
    }
}

fn unix_millis(at: OffsetDateTime) -> i64 {
    i64::try_from((at - OffsetDateTime::UNIX_EPOCH).whole_milliseconds()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use azure_core::credentials::Secret;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    fn info(expires_in: i64, refresh_in: Option<i64>) -> AccessTokenInfo {
        AccessTokenInfo {
            token: Secret::new("t"),
            expires_on: at(expires_in),
            refresh_on: refresh_in.map(at),
            token_type: "Bearer".into(),
        }
    }

    #[test]
    fn refresh_and_stop_times() {
        // (expires_in, refresh_in, jitter, refresh_at, stop_at), in seconds from now
        let cases: &[(i64, Option<i64>, f64, i64, i64)] = &[
            // one hour: refresh 6 minutes before expiry, stop 30 s before
            (3600, None, 0.0, 3240, 3570),
            // jitter moves the refresh up to a minute earlier
            (3600, None, 0.999_999, 3180, 3570),
            (3600, None, 0.5, 3210, 3570),
            // Entra's refresh_in wins when earlier
            (3600, Some(1800), 0.0, 1800, 3570),
            // but never later than the bearer-policy window
            (3600, Some(3500), 0.0, 3240, 3570),
            // a day-long token at half-life (refresh_on from parsing)
            (86400, Some(43200), 0.0, 43200, 86370),
            // short tokens: half the lifetime, stop a tenth before expiry
            (60, None, 0.0, 30, 54),
            (10, None, 0.0, 5, 9),
            (10, None, 0.999_999, 4, 9),
            // already expired
            (0, None, 0.0, 0, 0),
            (-5, None, 0.0, -5, -5),
        ];
        for (expires_in, refresh_in, jitter, refresh_at, stop_at) in cases {
            let (r, s) = schedule(&info(*expires_in, *refresh_in), at(0), *jitter);
            assert_eq!(
                ((r - at(0)).whole_seconds(), (s - at(0)).whole_seconds()),
                (*refresh_at, *stop_at),
                "expires_in={expires_in} refresh_in={refresh_in:?} jitter={jitter}"
            );
        }
    }

    #[test]
    fn borrowed_and_owned_keys_agree() {
        let state = RandomState::new();
        let cases = [
            (
                KeyRef {
                    scopes: &["a"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["a"],
                    tenant: "t",
                    cae: false,
                },
                true,
            ),
            (
                KeyRef {
                    scopes: &["a", "b"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["a", "b"],
                    tenant: "t",
                    cae: false,
                },
                true,
            ),
            (
                KeyRef {
                    scopes: &["a"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["a"],
                    tenant: "t",
                    cae: true,
                },
                false,
            ),
            (
                KeyRef {
                    scopes: &["a"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["a"],
                    tenant: "u",
                    cae: false,
                },
                false,
            ),
            (
                KeyRef {
                    scopes: &["ab"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["a", "b"],
                    tenant: "t",
                    cae: false,
                },
                false,
            ),
            (
                KeyRef {
                    scopes: &["a", "b"],
                    tenant: "t",
                    cae: false,
                },
                KeyRef {
                    scopes: &["b", "a"],
                    tenant: "t",
                    cae: false,
                },
                false,
            ),
        ];
        for (probe, stored, equal) in cases {
            let owned = stored.to_owned_key();
            assert_eq!(probe.equivalent(&owned), equal, "{probe:?} vs {stored:?}");
            if equal {
                assert_eq!(state.hash_one(probe), state.hash_one(&owned));
            }
        }
    }

    /// A fetch that counts its calls, waits for a permit of `gate`, then returns a token with
    /// `lifetime` seconds left on `clock` (or an error when `fail` is set).
    #[derive(Clone)]
    struct Source {
        clock: ManualClock,
        calls: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
        fail: Arc<AtomicBool>,
        lifetime: i64,
    }

    impl Source {
        fn new(clock: &ManualClock, lifetime: i64) -> Self {
            Self {
                clock: clock.clone(),
                calls: Arc::default(),
                gate: Arc::new(Semaphore::new(GATE_PERMITS as usize)),
                fail: Arc::default(),
                lifetime,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fetch(
            &self,
        ) -> impl FnOnce() -> std::pin::Pin<
            Box<dyn Future<Output = azure_core::Result<AccessTokenInfo>> + Send>,
        > + use<> {
            let this = self.clone();
            move || {
                Box::pin(async move {
                    let n = this.calls.fetch_add(1, Ordering::SeqCst);
                    let _permit = this.gate.acquire().await.expect("gate open");
                    if this.fail.load(Ordering::SeqCst) {
                        return Err(crate::error::failed("refused"));
                    }
                    Ok(AccessTokenInfo {
                        token: Secret::new(format!("token-{n}")),
                        expires_on: this.clock.now() + Duration::seconds(this.lifetime),
                        refresh_on: None,
                        token_type: "Bearer".into(),
                    })
                })
            }
        }

        /// Holds every fetch until the returned permits are dropped.
        fn close_gate(&self) -> tokio::sync::OwnedSemaphorePermit {
            self.gate
                .clone()
                .try_acquire_many_owned(GATE_PERMITS)
                .expect("gate")
        }
    }

    const GATE_PERMITS: u32 = 1 << 20;
    const KEY: KeyRef<'static> = KeyRef {
        scopes: &["s"],
        tenant: "t",
        cae: false,
    };

    fn hit(cache: &TokenCache, key: KeyRef<'_>, source: &Source) -> Option<String> {
        match cache.lookup(key, |c| c.info.token.secret().to_owned(), source.fetch()) {
            Lookup::Hit(t) => Some(t),
            Lookup::Miss => None,
        }
    }

    /// Lets spawned tasks run until `done` holds (bounded: no test waits on wall time).
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("background work did not finish");
    }

    async fn warm(cache: &TokenCache, source: &Source) -> String {
        cache
            .wait(KEY, source.fetch())
            .await
            .unwrap()
            .info
            .token
            .secret()
            .to_owned()
    }

    #[tokio::test]
    async fn soft_window_serves_at_once_and_refreshes_once_in_background() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 8);
        let source = Source::new(&clock, 3600);
        let first = warm(&cache, &source).await;
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        assert_eq!(source.calls(), 1);

        clock.advance(Duration::minutes(55));
        let gate = source.close_gate();
        for _ in 0..100 {
            // lookup is synchronous: a caller in the refresh window never waits on the network.
            assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        }
        settle(|| source.calls() == 2).await;
        assert_eq!(source.calls(), 2, "one background refresh for 100 callers");
        drop(gate);
        settle(|| hit(&cache, KEY, &source).as_deref() == Some("token-1")).await;
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test]
    async fn hard_window_callers_share_one_request() {
        let clock = ManualClock::starting_now();
        let cache = Arc::new(TokenCache::new(Arc::new(clock.clone()), 8));
        let source = Source::new(&clock, 3600);
        warm(&cache, &source).await;
        clock.advance(Duration::seconds(3600 - 10));
        assert_eq!(
            hit(&cache, KEY, &source),
            None,
            "past the stop time nothing is served"
        );
        let gate = source.close_gate();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (cache, source) = (cache.clone(), source.clone());
                tokio::spawn(async move {
                    cache
                        .wait(KEY, source.fetch())
                        .await
                        .map(|c| c.info.token.secret().to_owned())
                })
            })
            .collect();
        settle(|| source.calls() == 2).await;
        drop(gate);
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap(), "token-1");
        }
        assert_eq!(source.calls(), 2);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_token_and_backs_off() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 8);
        let source = Source::new(&clock, 3600);
        let first = warm(&cache, &source).await;
        source.fail.store(true, Ordering::SeqCst);
        clock.advance(Duration::minutes(55));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 2).await;
        // Let the failed attempt finish and record its backoff.
        settle(|| !cache.in_flight(KEY)).await;
        for _ in 0..10 {
            assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        }
        assert_eq!(source.calls(), 2, "no new attempt within the backoff");
        clock.advance(REFRESH_BACKOFF + Duration::seconds(1));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 3).await;

        // Past the stop time the old token is not served, even though it has not expired.
        clock.advance(Duration::minutes(4) + Duration::seconds(20));
        settle(|| !cache.in_flight(KEY)).await;
        assert_eq!(hit(&cache, KEY, &source), None);
        assert!(cache.wait(KEY, source.fetch()).await.is_err());
    }

    #[tokio::test]
    async fn keys_are_isolated_by_tenant_and_cae() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 8);
        let source = Source::new(&clock, 3600);
        let keys = [
            KEY,
            KeyRef {
                tenant: "other",
                ..KEY
            },
            KeyRef { cae: true, ..KEY },
            KeyRef {
                scopes: &["s", "t"],
                ..KEY
            },
        ];
        let mut tokens = Vec::new();
        for key in keys {
            tokens.push(
                cache
                    .wait(key, source.fetch())
                    .await
                    .unwrap()
                    .info
                    .token
                    .secret()
                    .to_owned(),
            );
        }
        tokens.dedup();
        assert_eq!(tokens.len(), 4);
        for (key, token) in keys.iter().zip(&tokens) {
            assert_eq!(hit(&cache, *key, &source).as_ref(), Some(token));
        }
        assert_eq!(source.calls(), 4);
    }

    #[tokio::test]
    async fn capacity_holds_and_expired_entries_go_first() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 64);
        let short = Source::new(&clock, 60);
        let long = Source::new(&clock, 3600);
        let names: Vec<String> = (0..1000).map(|i| format!("scope-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let scopes = [name.as_str()];
            let key = KeyRef {
                scopes: &scopes,
                ..KEY
            };
            let source = if i < 10 { &long } else { &short };
            cache.wait(key, source.fetch()).await.unwrap();
            assert!(cache.len() <= 64);
            if i == 9 {
                // The ten long-lived entries are now alone in being valid later on.
                clock.advance(Duration::seconds(1));
            }
        }
        assert_eq!(cache.len(), 64);
        clock.advance(Duration::minutes(5));
        for name in &names[..10] {
            let scopes = [name.as_str()];
            assert!(
                hit(
                    &cache,
                    KeyRef {
                        scopes: &scopes,
                        ..KEY
                    },
                    &long
                )
                .is_some(),
                "{name} evicted before shorter-lived entries"
            );
        }
        // All short tokens have expired: a new key evicts them first.
        let scopes = ["fresh"];
        cache
            .wait(
                KeyRef {
                    scopes: &scopes,
                    ..KEY
                },
                long.fetch(),
            )
            .await
            .unwrap();
        assert_eq!(cache.len(), 11);
    }

    #[tokio::test]
    async fn dropped_callers_never_wedge_the_cache() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 8);
        let source = Source::new(&clock, 3600);
        let gate = source.close_gate();
        for _ in 0..5 {
            // Poll once (starting or joining the request), then drop the caller.
            let waiting = cache.wait(KEY, source.fetch());
            tokio::select! {
                biased;
                _ = waiting => panic!("the gate is closed"),
                _ = tokio::task::yield_now() => {}
            }
        }
        settle(|| source.calls() == 1).await;
        drop(gate);
        assert_eq!(warm(&cache, &source).await, "token-0");
        assert_eq!(
            source.calls(),
            1,
            "the abandoned request completed and was reused"
        );
    }

    #[tokio::test]
    async fn close_stops_refreshes_but_keeps_serving() {
        let clock = ManualClock::starting_now();
        let cache = TokenCache::new(Arc::new(clock.clone()), 8);
        let source = Source::new(&clock, 3600);
        let first = warm(&cache, &source).await;
        let gate = source.close_gate();
        clock.advance(Duration::minutes(55));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 2).await;
        cache.close();
        drop(gate);
        settle(|| !cache.in_flight(KEY)).await;
        for _ in 0..10 {
            assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        }
        assert_eq!(
            source.calls(),
            2,
            "no refresh after close; the one in flight was cancelled"
        );
    }
}
