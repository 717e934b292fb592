//! The current key set of one issuer, swapped atomically when keys (re)load.

use std::sync::Arc;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::Notify;

use super::KeySet;

/// Holds one issuer's current [`KeySet`]. Readers never block; a reload replaces the whole set
/// at once, so a check sees either the old keys or the new ones, never a mix.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwapOption<KeySet>,
    changed: Arc<Notify>,
}

impl KeyStore {
    /// An empty store; `changed` is notified whenever keys are replaced.
    pub fn new(changed: Arc<Notify>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changed,
        }
    }

    /// A store that already holds `keys`.
    pub fn with_keys(keys: KeySet, changed: Arc<Notify>) -> Self {
        let store = Self::new(changed);
        store.current.store(Some(Arc::new(keys)));
        store
    }

    /// The current keys, if any have loaded. Cheap: no allocation, no lock.
    pub fn load(&self) -> Guard<Option<Arc<KeySet>>> {
        self.current.load()
    }

    /// True once keys have loaded.
    pub fn has_keys(&self) -> bool {
        self.current.load().is_some()
    }

    /// Replaces the current keys.
    pub fn replace(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
        self.changed.notify_one();
    }
}
