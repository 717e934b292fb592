//! Minting counters: tokens signed, cache hits, signing latency and errors per backend. One
//! set per process, handed from each configuration to the next so the exported series never
//! go backwards on a reload.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A signer backend and algorithm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignerLabels {
    /// `file` or `pkcs11`.
    pub backend: &'static str,
    /// The JWS `alg`.
    pub algorithm: &'static str,
}

/// A signer backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `file` or `pkcs11`.
    pub backend: &'static str,
}

/// The minting counters.
#[derive(Debug, Clone)]
pub struct MintStats {
    minted: Family<SignerLabels, Counter>,
    cache_hits: Counter,
    signing: Family<BackendLabel, Histogram>,
    errors: Family<BackendLabel, Counter>,
}

impl Default for MintStats {
    fn default() -> Self {
        Self {
            minted: Family::default(),
            cache_hits: Counter::default(),
            // 20 µs … ~0.65 s: a file key signs in tens of microseconds, an HSM in milliseconds.
            signing: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
            }),
            errors: Family::default(),
        }
    }
}

impl MintStats {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mint_tokens",
            "Internal tokens signed, by signer backend and algorithm",
            self.minted.clone(),
        );
        registry.register(
            "mint_cache_hits",
            "Allowed checks that reused a cached minted token",
            self.cache_hits.clone(),
        );
        registry.register(
            "mint_signing_duration_seconds",
            "Time to sign one minted token, by signer backend",
            self.signing.clone(),
        );
        registry.register(
            "mint_signing_errors",
            "Minted tokens that could not be signed or encrypted, by signer backend",
            self.errors.clone(),
        );
    }

    /// One token signed by `labels`'s key in `seconds`.
    pub fn signed(&self, labels: SignerLabels, seconds: f64) {
        self.signing
            .get_or_create(&BackendLabel {
                backend: labels.backend,
            })
            .observe(seconds);
        self.minted.get_or_create(&labels).inc();
    }

    /// One token reused from the cache.
    pub fn hit(&self) {
        self.cache_hits.inc();
    }

    /// One failure of `backend`.
    pub fn failed(&self, backend: &'static str) {
        self.errors.get_or_create(&BackendLabel { backend }).inc();
    }

    /// Cache hits so far.
    pub fn hits(&self) -> u64 {
        self.cache_hits.get()
    }
}
