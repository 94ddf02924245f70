//! The access-token cache.
//!
//! - Hits take no lock and write no shared memory: one `arc-swap` load of the table (which
//!   holds the tokens), one reading of the monotonic clock compared with a deadline, and the
//!   token clone that `AccessToken` requires. A hit looks its key up borrowed (the call's
//!   [`Request`]), so it allocates no key; in a small table (most credentials use a few scopes)
//!   it compares keys directly instead of hashing the request.
//! - Each token has a refresh time (Entra's `refresh_in`, half-life for long tokens, else a
//!   window before expiry wide enough for azure_core's 5-minute bearer policy; minus a little
//!   jitter) and a stop time shortly before expiry. Between the two, callers get the cached token
//!   at once while one background task per key refreshes it; a failed refresh is logged and not
//!   retried for [`REFRESH_BACKOFF`].
//! - Past the stop time callers wait, and identical callers share one request; keys never wait
//!   on each other.
//! - At most `capacity` keys: a new key evicts expired entries first, then the soonest to expire.

use crate::{
    AccessTokenInfo,
    clock::{self, Clock, Millis},
    error::Failure,
    flight::SingleFlight,
    request::{Key, Request},
};
use arc_swap::ArcSwap;
use azure_core::credentials::AccessToken;
use hashbrown::{Equivalent, HashMap};
use std::{
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Instant,
};
use time::{Duration, OffsetDateTime};

/// How long after a failed background refresh the next one may start.
pub(crate) const REFRESH_BACKOFF: Duration = Duration::seconds(30);
/// Refreshing starts at least this long before expiry, so that azure_core's bearer policy (which
/// asks again with 5 minutes left) receives a new token rather than the old one.
pub(crate) const REFRESH_WINDOW: Duration = Duration::minutes(6);
/// The most the jitter moves a refresh earlier.
pub(crate) const MAX_JITTER: Duration = Duration::seconds(60);
/// A token is not handed out in its last moments: callers wait for a new one instead.
const STOP_MARGIN: Duration = Duration::seconds(30);
pub(crate) const DEFAULT_CAPACITY: usize = 256;
/// Up to this many keys, a lookup compares keys one by one: cheaper than hashing the request.
const SCAN_UP_TO: usize = 8;

/// A cached token and when to stop trusting it, as deadlines on the monotonic clock.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) access: AccessToken,
    refresh_on: Option<OffsetDateTime>,
    token_type: String,
    refresh_at: Instant,
    stop_at: Instant,
}

impl Cached {
    fn new(info: AccessTokenInfo, clock: &Clock, jitter: f64) -> Self {
        let (now, now_instant) = (clock.now_millis(), clock.now_instant());
        let (refresh_at, stop_at) = schedule(
            clock::to_millis(info.expires_on),
            info.refresh_on.map(clock::to_millis),
            now,
            jitter,
        );
        Self {
            access: AccessToken::new(info.token, info.expires_on),
            refresh_on: info.refresh_on,
            token_type: info.token_type,
            refresh_at: clock::at_offset(now_instant, refresh_at - now),
            stop_at: clock::at_offset(now_instant, stop_at - now),
        }
    }

    /// The token with its timing, as `get_token_info` returns it.
    pub(crate) fn info(&self) -> AccessTokenInfo {
        AccessTokenInfo {
            token: self.access.token.clone(),
            expires_on: self.access.expires_on,
            refresh_on: self.refresh_on,
            token_type: self.token_type.clone(),
        }
    }
}

fn millis(d: Duration) -> Millis {
    i64::try_from(d.whole_milliseconds()).unwrap_or(i64::MAX)
}

/// When to start refreshing a token that expires at `expires_at` (and that Entra suggests to
/// refresh at `refresh_on`), and when to stop handing it out, seen at `now`.
///
/// `jitter` in `[0, 1)` moves the refresh earlier by up to a tenth of the time left before it
/// (at most [`MAX_JITTER`]), so fleets of jobs started together do not refresh together.
pub(crate) fn schedule(
    expires_at: Millis,
    refresh_on: Option<Millis>,
    now: Millis,
    jitter: f64,
) -> (Millis, Millis) {
    let lifetime = expires_at.saturating_sub(now);
    if lifetime <= 0 {
        return (expires_at, expires_at);
    }
    let stop_at = expires_at - millis(STOP_MARGIN).min(lifetime / 10);
    let latest = expires_at - millis(REFRESH_WINDOW).min(lifetime / 2);
    let base = refresh_on.map_or(latest, |r| r.min(latest)).max(now);
    let spread = millis(MAX_JITTER).min((base - now) / 10) as f64;
    (base - (spread * jitter.clamp(0.0, 1.0)) as Millis, stop_at)
}

/// What a key needs besides its token: its request in flight and its backoff.
struct Slot {
    flight: SingleFlight<Arc<Cached>>,
    /// No background refresh starts before this time (after a failure).
    backoff_until: AtomicI64,
}

/// One key's entry. The token lives in the table itself, so a hit is a single `arc-swap` load.
#[derive(Clone)]
struct Entry {
    slot: Arc<Slot>,
    token: Option<Arc<Cached>>,
}

/// The entries, in a vector scanned directly while it is small, with an index by key for when
/// it is not. Both are rebuilt only on writes, which are rare.
#[derive(Clone, Default)]
struct Slots {
    entries: Vec<(Arc<Key>, Entry)>,
    index: HashMap<Arc<Key>, usize>,
}

impl Slots {
    /// The entry of `request`, with its key.
    #[inline]
    fn find(&self, request: &Request<'_>) -> Option<&(Arc<Key>, Entry)> {
        if self.entries.len() <= SCAN_UP_TO {
            self.entries
                .iter()
                .find(|(key, _)| Equivalent::<Key>::equivalent(request, key))
        } else {
            let &i = self.index.get(&Probe(request))?;
            self.entries.get(i)
        }
    }

    fn get(&self, key: &Key) -> Option<&Entry> {
        let &i = self.index.get(key)?;
        self.entries.get(i).map(|(_, entry)| entry)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry> {
        let &i = self.index.get(key)?;
        self.entries.get_mut(i).map(|(_, entry)| entry)
    }

    fn insert(&mut self, key: Arc<Key>, entry: Entry) {
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, entry));
    }

    fn retain(&mut self, keep: impl FnMut(&(Arc<Key>, Entry)) -> bool) {
        self.entries.retain(keep);
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (key.clone(), i))
            .collect();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|(_, entry)| entry)
    }
}

/// Lets a borrowed request find its entry, whose key sits behind an `Arc`.
struct Probe<'a, 'b>(&'a Request<'b>);

impl std::hash::Hash for Probe<'_, '_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Equivalent<Arc<Key>> for Probe<'_, '_> {
    fn equivalent(&self, key: &Arc<Key>) -> bool {
        Equivalent::<Key>::equivalent(self.0, key)
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
        if current.get(key).is_none() {
            return;
        }
        let mut next: Slots = (*current).clone();
        if let Some(entry) = next.get_mut(key) {
            entry.token = Some(token);
        }
        self.slots.store(Arc::new(next));
    }
}

/// How [`TokenCache::wait`] got its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// A token another caller stored meanwhile.
    Cached,
    /// This caller started the request.
    Started,
    /// This caller joined a request in flight.
    Joined,
}

pub(crate) struct TokenCache {
    table: Arc<Table>,
    clock: Clock,
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
    pub(crate) fn new(clock: Clock, capacity: usize) -> Self {
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

    /// The cached token for `request`, projected by `project`, if one may be handed out now.
    ///
    /// In the refresh window this also starts the background refresh with `fetch`, and says so
    /// in `refreshing`.
    #[inline]
    pub(crate) fn lookup<R, W, F>(
        &self,
        request: &Request<'_>,
        project: impl FnOnce(&Cached) -> R,
        fetch: W,
        refreshing: &mut bool,
    ) -> Option<R>
    where
        W: Fn(Arc<Key>) -> F + Send,
        F: Future<Output = Result<AccessTokenInfo, Arc<Failure>>> + Send + 'static,
    {
        let now = self.clock.now_instant();
        let slots = self.table.slots.load();
        let (key, entry) = slots.find(request)?;
        let token = entry.token.as_deref()?;
        if now < token.refresh_at {
            return Some(project(token));
        }
        if now < token.stop_at {
            *refreshing = self.refresh_in_background(key, &entry.slot, fetch);
            return Some(project(token));
        }
        None
    }

    /// The cached token for `request`, projected, if one may be handed out now; starts nothing.
    pub(crate) fn peek<R>(
        &self,
        request: &Request<'_>,
        project: impl FnOnce(&Cached) -> R,
    ) -> Option<R> {
        let now = self.clock.now_instant();
        let slots = self.table.slots.load();
        let token = slots.find(request)?.1.token.as_deref()?;
        (now < token.stop_at).then(|| project(token))
    }

    /// Starts the refresh of `key` unless one runs, is backing off, or the cache is closed.
    #[cold]
    fn refresh_in_background<W, F>(&self, key: &Arc<Key>, slot: &Arc<Slot>, fetch: W) -> bool
    where
        W: Fn(Arc<Key>) -> F + Send,
        F: Future<Output = Result<AccessTokenInfo, Arc<Failure>>> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire)
            || slot.flight.in_flight()
            || self.clock.now_millis() < slot.backoff_until.load(Ordering::Acquire)
        {
            return false;
        }
        slot.flight.join(self.work(key, slot, fetch)).0
    }

    /// Waits for a token for `request`: joins the request in flight for its key, or starts one.
    pub(crate) async fn wait<W, F>(
        &self,
        request: &Request<'_>,
        fetch: W,
    ) -> (Served, Result<Arc<Cached>, Arc<Failure>>)
    where
        W: Fn(Arc<Key>) -> F + Send,
        F: Future<Output = Result<AccessTokenInfo, Arc<Failure>>> + Send + 'static,
    {
        let (key, slot, token) = self.entry(request);
        if let Some(token) = token
            && self.clock.now_instant() < token.stop_at
        {
            return (Served::Cached, Ok(token));
        }
        let (started, outcome) = slot.flight.join(self.work(&key, &slot, fetch));
        let served = if started {
            Served::Started
        } else {
            Served::Joined
        };
        (served, outcome.await)
    }

    /// The key of `request`'s entry, created when missing: for a request acquired outside the
    /// cache (one with claims), whose token [`store`](Self::store) then keeps.
    pub(crate) fn key(&self, request: &Request<'_>) -> Arc<Key> {
        self.entry(request).0
    }

    /// Keeps `info`, acquired outside the cache, as the token of `key`.
    pub(crate) fn store(&self, key: &Arc<Key>, info: AccessTokenInfo) -> Arc<Cached> {
        let jitter = self.jitter_unit(self.clock.now_millis());
        let cached = Arc::new(Cached::new(info, &self.clock, jitter));
        self.table.set_token(key, cached.clone());
        cached
    }

    /// Stops background refreshes and cancels requests in flight; cached tokens stay readable.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for entry in self.table.slots.load().values() {
            entry.slot.flight.close();
        }
    }

    /// The work of one acquisition for `key`: fetch, then keep the token or record the backoff.
    fn work<'a, W, F>(
        &'a self,
        key: &'a Arc<Key>,
        slot: &'a Arc<Slot>,
        fetch: W,
    ) -> impl Fn()
        -> std::pin::Pin<Box<dyn Future<Output = Result<Arc<Cached>, Arc<Failure>>> + Send>>
    + Send
    + 'a
    where
        W: Fn(Arc<Key>) -> F + Send + 'a,
        F: Future<Output = Result<AccessTokenInfo, Arc<Failure>>> + Send + 'static,
    {
        // Called only by the caller that starts the work: those who join it clone nothing.
        move || {
            let fetching = fetch(key.clone());
            let (key, slot, clock, table) = (
                key.clone(),
                slot.clone(),
                self.clock.clone(),
                self.table.clone(),
            );
            let jitter = self.jitter_unit(clock.now_millis());
            Box::pin(async move {
                match fetching.await {
                    Ok(info) => {
                        let cached = Arc::new(Cached::new(info, &clock, jitter));
                        table.set_token(&key, cached.clone());
                        Ok(cached)
                    }
                    Err(failure) => {
                        let now = clock.now_millis();
                        slot.backoff_until
                            .store(now + millis(REFRESH_BACKOFF), Ordering::Release);
                        if table
                            .token(&key)
                            .is_some_and(|t| clock.now_instant() < t.stop_at)
                        {
                            tracing::warn!(
                                target: "azure_pipelines_credential",
                                "token refresh failed; the cached token is still valid and stays in use; next attempt in {} s: {failure}",
                                REFRESH_BACKOFF.whole_seconds()
                            );
                        }
                        Err(failure)
                    }
                }
            })
        }
    }

    /// The entry for `request` with its token, read in the same lookup; created (evicting if the
    /// table is full) when missing.
    fn entry(&self, request: &Request<'_>) -> (Arc<Key>, Arc<Slot>, Option<Arc<Cached>>) {
        if let Some((k, entry)) = self.table.slots.load().find(request) {
            return (k.clone(), entry.slot.clone(), entry.token.clone());
        }
        let _writer = self
            .table
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.table.slots.load_full();
        if let Some((k, entry)) = current.find(request) {
            return (k.clone(), entry.slot.clone(), entry.token.clone());
        }
        let mut next: Slots = (*current).clone();
        if next.len() >= self.capacity {
            evict(&mut next, self.capacity - 1, self.clock.now_instant());
        }
        let key = Arc::new(request.to_key());
        let slot = Arc::new(Slot {
            flight: SingleFlight::default(),
            backoff_until: AtomicI64::new(i64::MIN),
        });
        if self.closed.load(Ordering::Acquire) {
            slot.flight.close();
        }
        next.insert(
            key.clone(),
            Entry {
                slot: slot.clone(),
                token: None,
            },
        );
        self.table.slots.store(Arc::new(next));
        (key, slot, None)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.slots.load().len()
    }

    #[cfg(test)]
    fn in_flight(&self, request: &Request<'_>) -> bool {
        self.table
            .slots
            .load()
            .find(request)
            .is_some_and(|(_, e)| e.slot.flight.in_flight())
    }

    /// A number in `[0, 1)` that differs between processes and moments.
    fn jitter_unit(&self, now: Millis) -> f64 {
        (self.jitter.hash_one(now) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Shrinks `slots` to `keep` entries: expired or empty ones first, then the soonest to expire.
/// Entries with a request in flight are kept.
fn evict(slots: &mut Slots, keep: usize, now: Instant) {
    let stop_at = |entry: &Entry| entry.token.as_ref().map(|t| t.stop_at);
    slots.retain(|(_, e)| e.slot.flight.in_flight() || stop_at(e).is_some_and(|s| s > now));
    if slots.len() <= keep {
        return;
    }
    let mut by_expiry: Vec<(Option<Instant>, Arc<Key>)> = slots
        .entries
        .iter()
        .filter(|(_, e)| !e.slot.flight.in_flight())
        .map(|(k, e)| (stop_at(e), k.clone()))
        .collect();
    by_expiry.sort_unstable_by_key(|(stop, _)| *stop);
    let excess = slots.len() - keep;
    let evicted: Vec<Arc<Key>> = by_expiry.into_iter().take(excess).map(|(_, k)| k).collect();
    slots.retain(|(key, _)| !evicted.iter().any(|e| Arc::ptr_eq(e, key)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Section;
    use azure_core::credentials::Secret;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
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
            let (r, s) = schedule(expires_in * 1000, refresh_in.map(|r| r * 1000), 0, *jitter);
            assert_eq!(
                (r / 1000, s / 1000),
                (*refresh_at, *stop_at),
                "expires_in={expires_in} refresh_in={refresh_in:?} jitter={jitter}"
            );
        }
    }

    /// A fetch that counts its calls, waits for a permit of `gate`, then returns a token with
    /// `lifetime` seconds left on `clock` (or an error when `fail` is set).
    #[derive(Clone)]
    struct Source {
        clock: Clock,
        calls: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
        fail: Arc<AtomicBool>,
        lifetime: i64,
    }

    impl Source {
        fn new(clock: &Clock, lifetime: i64) -> Self {
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
        ) -> impl Fn(
            Arc<Key>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<AccessTokenInfo, Arc<Failure>>> + Send>,
        > + Send
        + use<> {
            let source = self.clone();
            move |_key| {
                let this = source.clone();
                Box::pin(async move {
                    let n = this.calls.fetch_add(1, Ordering::SeqCst);
                    let _permit = this.gate.acquire().await.expect("gate open");
                    if this.fail.load(Ordering::SeqCst) {
                        return Err(Arc::new(Failure::new(Section::EntraError, "refused")));
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
    const KEY: Request<'static> = Request {
        scopes: &["s"],
        tenant: "t",
        cae: false,
        claims: None,
    };

    fn hit(cache: &TokenCache, key: Request<'_>, source: &Source) -> Option<String> {
        cache.lookup(
            &key,
            |c| c.access.token.secret().to_owned(),
            source.fetch(),
            &mut false,
        )
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
            .wait(&KEY, source.fetch())
            .await
            .1
            .unwrap()
            .access
            .token
            .secret()
            .to_owned()
    }

    #[tokio::test]
    async fn soft_window_serves_at_once_and_refreshes_once_in_background() {
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 8);
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
        let clock = Clock::manual(at(0));
        let cache = Arc::new(TokenCache::new(clock.clone(), 8));
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
                        .wait(&KEY, source.fetch())
                        .await
                        .1
                        .map(|c| c.access.token.secret().to_owned())
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
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 8);
        let source = Source::new(&clock, 3600);
        let first = warm(&cache, &source).await;
        source.fail.store(true, Ordering::SeqCst);
        clock.advance(Duration::minutes(55));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 2).await;
        // Let the failed attempt finish and record its backoff.
        settle(|| !cache.in_flight(&KEY)).await;
        for _ in 0..10 {
            assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        }
        assert_eq!(source.calls(), 2, "no new attempt within the backoff");
        clock.advance(REFRESH_BACKOFF + Duration::seconds(1));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 3).await;

        // Past the stop time the old token is not served, even though it has not expired.
        clock.advance(Duration::minutes(4) + Duration::seconds(20));
        settle(|| !cache.in_flight(&KEY)).await;
        assert_eq!(hit(&cache, KEY, &source), None);
        assert!(cache.wait(&KEY, source.fetch()).await.1.is_err());
    }

    #[tokio::test]
    async fn keys_are_isolated_by_tenant_and_cae() {
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 8);
        let source = Source::new(&clock, 3600);
        let keys = [
            KEY,
            Request {
                tenant: "other",
                ..KEY
            },
            Request { cae: true, ..KEY },
            Request {
                scopes: &["s", "t"],
                ..KEY
            },
        ];
        let mut tokens = Vec::new();
        for key in keys {
            tokens.push(
                cache
                    .wait(&key, source.fetch())
                    .await
                    .1
                    .unwrap()
                    .access
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
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 64);
        let short = Source::new(&clock, 60);
        let long = Source::new(&clock, 3600);
        let names: Vec<String> = (0..1000).map(|i| format!("scope-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let scopes = [name.as_str()];
            let key = Request {
                scopes: &scopes,
                ..KEY
            };
            let source = if i < 10 { &long } else { &short };
            cache.wait(&key, source.fetch()).await.1.unwrap();
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
                    Request {
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
                &Request {
                    scopes: &scopes,
                    ..KEY
                },
                long.fetch(),
            )
            .await
            .1
            .unwrap();
        assert_eq!(cache.len(), 11);
    }

    #[tokio::test]
    async fn dropped_callers_never_wedge_the_cache() {
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 8);
        let source = Source::new(&clock, 3600);
        let gate = source.close_gate();
        for _ in 0..5 {
            // Poll once (starting or joining the request), then drop the caller.
            let waiting = cache.wait(&KEY, source.fetch());
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
        let clock = Clock::manual(at(0));
        let cache = TokenCache::new(clock.clone(), 8);
        let source = Source::new(&clock, 3600);
        let first = warm(&cache, &source).await;
        let gate = source.close_gate();
        clock.advance(Duration::minutes(55));
        assert_eq!(hit(&cache, KEY, &source).as_deref(), Some(first.as_str()));
        settle(|| source.calls() == 2).await;
        cache.close();
        drop(gate);
        settle(|| !cache.in_flight(&KEY)).await;
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
