//! The current key set of one issuer, swapped atomically when keys (re)load, plus the
//! coordination of refreshes that checks trigger by naming an unknown `kid`, and the counters
//! observability exports.
//!
//! Unknown-kid refreshes are single-flight (concurrent checks wait for the same fetch, each up
//! to its budget), rate-limited (at most one per `interval`), and backed by a negative cache of
//! kids that were still unknown after a refresh, so a flood of random kids costs at most one
//! fetch per interval and no waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::KeySet;

/// Upper bound of the negative kid cache; beyond it, the oldest entries are dropped.
const MAX_NEGATIVE_KIDS: usize = 1024;

/// Holds one issuer's current [`KeySet`]. Readers never block; a reload replaces the whole set
/// at once, so a check sees either the old keys or the new ones, never a mix.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwapOption<KeySet>,
    changed: Arc<Notify>,
    required: bool,
    on_demand: Option<OnDemand>,
    stats: KeyStats,
}

/// How refreshes on an unknown kid are paced.
#[derive(Debug, Clone, Copy)]
pub struct OnDemandPolicy {
    /// At most one triggered refresh per interval.
    pub interval: Duration,
    /// How long a check waits for the refresh.
    pub wait: Duration,
}

#[derive(Debug)]
struct OnDemand {
    policy: OnDemandPolicy,
    wake: Notify,
    state: Mutex<OnDemandState>,
    done: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct OnDemandState {
    in_flight: bool,
    last: Option<Instant>,
    wanted: Option<String>,
    /// Kids still unknown after a refresh, with when that was learnt.
    negative: HashMap<String, Instant>,
}

impl KeyStore {
    /// An empty store; `changed` is notified whenever keys are replaced or dropped.
    pub fn new(changed: Arc<Notify>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changed,
            required: true,
            on_demand: None,
            stats: KeyStats::default(),
        }
    }

    /// A store that already holds `keys`.
    pub fn with_keys(keys: KeySet, changed: Arc<Notify>) -> Self {
        let store = Self::new(changed);
        store.replace(keys);
        store
    }

    /// Whether readiness waits for this store (default true).
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Enables refreshes triggered by unknown kids (for remote sources).
    pub fn refreshed_on_demand(mut self, policy: OnDemandPolicy) -> Self {
        self.on_demand = Some(OnDemand {
            policy,
            wake: Notify::new(),
            state: Mutex::new(OnDemandState::default()),
            done: watch::Sender::new(0),
        });
        self
    }

    /// The current keys, if any have loaded. Cheap: no allocation, no lock.
    pub fn load(&self) -> Guard<Option<Arc<KeySet>>> {
        self.current.load()
    }

    /// True once keys have loaded (and until they are dropped as too stale).
    pub fn has_keys(&self) -> bool {
        self.current.load().is_some()
    }

    /// Whether readiness waits for this store.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Replaces the current keys.
    pub fn replace(&self, keys: KeySet) {
        self.stats.keys.store(keys.len(), Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.stats.loaded_at.store(now, Ordering::Relaxed);
        self.current.store(Some(Arc::new(keys)));
        if let Some(on_demand) = &self.on_demand {
            on_demand.lock().negative.clear();
        }
        self.changed.notify_one();
    }

    /// Drops the keys (they became too stale to trust).
    pub fn clear(&self) {
        self.stats.keys.store(0, Ordering::Relaxed);
        self.current.store(None);
        self.changed.notify_one();
    }

    /// The counters of this store.
    pub fn stats(&self) -> &KeyStats {
        &self.stats
    }

    /// Asks for a refresh because a token named `kid`, which the current set lacks, and waits
    /// for it up to the configured budget. True when a refresh completed and the set now has
    /// `kid`; false at once when the kid is known to be missing, the rate limit allows no
    /// refresh now, or the store has no remote source.
    pub async fn refresh_for_kid(&self, kid: &str) -> bool {
        let Some(on_demand) = &self.on_demand else {
            return false;
        };
        let mut done = on_demand.done.subscribe();
        done.borrow_and_update();
        {
            let mut state = on_demand.lock();
            let now = Instant::now();
            let interval = on_demand.policy.interval;
            if state
                .negative
                .get(kid)
                .is_some_and(|at| now.duration_since(*at) < interval)
            {
                return false;
            }
            if !state.in_flight {
                if state
                    .last
                    .is_some_and(|at| now.duration_since(at) < interval)
                {
                    return false;
                }
                state.in_flight = true;
                state.last = Some(now);
                state.wanted = Some(kid.to_owned());
                self.stats
                    .on_demand_refreshes
                    .fetch_add(1, Ordering::Relaxed);
                on_demand.wake.notify_one();
            }
        }
        let completed = tokio::time::timeout(on_demand.policy.wait, done.changed())
            .await
            .is_ok_and(|r| r.is_ok());
        if !completed {
            return false;
        }
        let found = self
            .current
            .load()
            .as_deref()
            .is_some_and(|set| set.select(Some(kid)).is_some());
        if !found {
            let mut state = on_demand.lock();
            if state.negative.len() >= MAX_NEGATIVE_KIDS {
                let interval = on_demand.policy.interval;
                let now = Instant::now();
                state
                    .negative
                    .retain(|_, at| now.duration_since(*at) < interval);
                if state.negative.len() >= MAX_NEGATIVE_KIDS {
                    state.negative.clear();
                }
            }
            state.negative.insert(kid.to_owned(), Instant::now());
        }
        found
    }

    /// For the source task: waits until a check asks for a refresh; returns the kid it wanted.
    /// Never returns for stores without on-demand refreshes.
    pub async fn demanded(&self) -> Option<String> {
        match &self.on_demand {
            Some(on_demand) => {
                on_demand.wake.notified().await;
                on_demand.lock().wanted.take()
            }
            None => std::future::pending().await,
        }
    }

    /// For the source task: a refresh attempt finished (successfully or not); wakes the
    /// checks waiting for it.
    pub fn refresh_finished(&self) {
        if let Some(on_demand) = &self.on_demand {
            on_demand.lock().in_flight = false;
            on_demand.done.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Records a fetch result in the counters.
    pub fn record_fetch(&self, result: Result<(), &'static str>) {
        match result {
            Ok(()) => {
                self.stats.fetches_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                let mut failures = self
                    .stats
                    .fetch_failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *failures.entry(kind).or_default() += 1;
            }
        }
    }
}

impl OnDemand {
    fn lock(&self) -> MutexGuard<'_, OnDemandState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters of one issuer's keys, for metrics.
#[derive(Debug, Default)]
pub struct KeyStats {
    fetches_ok: AtomicU64,
    fetch_failures: Mutex<BTreeMap<&'static str, u64>>,
    loaded_at: AtomicI64,
    keys: AtomicUsize,
    on_demand_refreshes: AtomicU64,
}

/// A copy of [`KeyStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatsSnapshot {
    /// Successful fetches.
    pub fetches_ok: u64,
    /// Failed fetches by kind (see `FetchError::kind`).
    pub fetch_failures: BTreeMap<&'static str, u64>,
    /// When the current keys loaded (seconds since the epoch), if they did.
    pub loaded_at: Option<i64>,
    /// Keys in the current set.
    pub keys: usize,
    /// Refreshes triggered by unknown kids.
    pub on_demand_refreshes: u64,
}

impl KeyStats {
    /// The counters now.
    pub fn snapshot(&self) -> KeyStatsSnapshot {
        let loaded_at = self.loaded_at.load(Ordering::Relaxed);
        KeyStatsSnapshot {
            fetches_ok: self.fetches_ok.load(Ordering::Relaxed),
            fetch_failures: self
                .fetch_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            loaded_at: (loaded_at > 0).then_some(loaded_at),
            keys: self.keys.load(Ordering::Relaxed),
            on_demand_refreshes: self.on_demand_refreshes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::Algorithm;
    use crate::keys::TrustedKey;

    fn set_with(kid: &str) -> KeySet {
        let key = TrustedKey::hmac(&[7; 32], Some(kid.to_owned()), &[Algorithm::HS256]).unwrap();
        KeySet::from_keys(vec![Arc::new(key)], Vec::new()).unwrap()
    }

    fn store(interval_ms: u64) -> Arc<KeyStore> {
        let store = KeyStore::with_keys(set_with("old"), Arc::new(Notify::new()))
            .refreshed_on_demand(OnDemandPolicy {
                interval: Duration::from_millis(interval_ms),
                wait: Duration::from_secs(2),
            });
        Arc::new(store)
    }

    /// A stand-in for a source task: answers each demand by publishing `publish`.
    fn serve(store: &Arc<KeyStore>, publish: &'static str) -> tokio::task::JoinHandle<usize> {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let mut fetches = 0;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), store.demanded()).await
            {
                fetches += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                store.replace(set_with(publish));
                store.refresh_finished();
            }
            fetches
        })
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_refresh_and_find_the_new_key() {
        let store = store(10_000);
        let source = serve(&store, "new");
        let waits: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.refresh_for_kid("new").await })
            })
            .collect();
        for wait in waits {
            assert!(wait.await.unwrap());
        }
        assert_eq!(source.await.unwrap(), 1);
        assert_eq!(store.stats().snapshot().on_demand_refreshes, 1);
    }

    #[tokio::test]
    async fn unknown_kids_are_rate_limited_and_remembered() {
        let store = store(10_000);
        let source = serve(&store, "other");
        assert!(!store.refresh_for_kid("random-1").await, "still unknown");
        // Within the interval: no new refresh, for the same kid or another one.
        assert!(!store.refresh_for_kid("random-1").await);
        assert!(!store.refresh_for_kid("random-2").await);
        assert_eq!(source.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn after_the_interval_a_new_refresh_is_allowed() {
        let store = store(50);
        let source = serve(&store, "other");
        assert!(!store.refresh_for_kid("k").await);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!store.refresh_for_kid("k").await);
        assert_eq!(source.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn stores_without_a_remote_source_never_wait() {
        let store = KeyStore::with_keys(set_with("old"), Arc::new(Notify::new()));
        assert!(!store.refresh_for_kid("new").await);
    }
}
