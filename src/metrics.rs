//! Prometheus metrics, served as text on the admin listener at `/metrics`.
//!
//! Label values are bounded: decisions, reason codes, issuer ids, fetch result kinds, reload
//! results, listener names, TLS handshake failure reasons, signer backends and algorithms —
//! never subjects, paths or tokens.
//! Key and token-cache metrics are read from the running configuration at each scrape. Depends on [`crate::pipeline`] (the running
//! generation), [`crate::keys`] and [`crate::verify::cache`] (their counters).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use std::fmt::Write as _;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::Generation;

/// Labels of one check outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    transport: &'static str,
    decision: &'static str,
    reason: &'static str,
    issuer: IssuerId,
}

/// An issuer id label value (empty when unknown), shared with the issuer: counting a check
/// allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct IssuerId(Option<Arc<str>>);

impl EncodeLabelValue for IssuerId {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReasonLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerResultLabels {
    listener: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    duration: Family<TransportLabel, Histogram>,
    /// Each transport's series of `duration`, looked up once (a check then observes without
    /// a family lookup); gRPC's from the start, HTTP's at its first check.
    durations: [std::sync::OnceLock<Histogram>; 2],
    reloads: Family<ResultLabel, Counter>,
    last_reload: Gauge,
    tls_expiry: Family<ListenerLabel, Gauge>,
    tls_handshake_failures: Family<ListenerReasonLabels, Counter>,
    tls_reloads: Family<ListenerResultLabels, Counter>,
}

impl Metrics {
    /// Metrics for a server whose running configuration is `current`.
    pub fn new(current: Arc<ArcSwap<Generation>>) -> Self {
        let mut registry = Registry::with_prefix("fedauthz");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Check requests answered, by transport (grpc or http), decision, reason code and \
             issuer id",
            checks.clone(),
        );
        // 50 µs … ~1.6 s: a check is normally well under a millisecond, but one waiting for a
        // key refresh takes as long as that fetch.
        let duration = Family::<TransportLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "check_duration_seconds",
            "Time to answer a check, by transport (grpc or http)",
            duration.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (applied or refused)",
            reloads.clone(),
        );
        // The configuration the process started with counts as the first successful load.
        let last_reload = Gauge::default();
        last_reload.set(crate::service::unix_now());
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (Unix time)",
            last_reload.clone(),
        );
        let tls_expiry = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate each TLS listener serves expires (Unix time)",
            tls_expiry.clone(),
        );
        let tls_handshake_failures = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason",
            tls_handshake_failures.clone(),
        );
        let tls_reloads = Family::<ListenerResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate reloads, by listener and result (applied or refused)",
            tls_reloads.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        // Shared by every configuration from this one on (each hands them to the next).
        current.load().pipeline.mint_stats().register(&mut registry);
        current
            .load()
            .pipeline
            .api_keys()
            .stats()
            .register(&mut registry);
        registry.register_collector(Box::new(CacheCollector {
            current: Arc::clone(&current),
        }));
        registry.register_collector(Box::new(KeyCollector { current }));
        let metrics = Self {
            registry,
            checks,
            duration,
            durations: Default::default(),
            reloads,
            last_reload,
            tls_expiry,
            tls_handshake_failures,
            tls_reloads,
        };
        // Present from the start for the one listener that always runs.
        let _ = metrics.duration_of(crate::check::Transport::Grpc);
        metrics
    }

    /// Records when the certificate `listener` serves expires.
    pub fn set_tls_certificate_expiry(&self, listener: &'static str, not_after: i64) {
        self.tls_expiry
            .get_or_create(&ListenerLabel { listener })
            .set(not_after);
    }

    /// Counts one failed TLS handshake.
    pub fn record_tls_handshake_failure(&self, listener: &'static str, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ListenerReasonLabels { listener, reason })
            .inc();
    }

    /// Counts one TLS certificate reload.
    pub fn record_tls_reload(&self, listener: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.tls_reloads
            .get_or_create(&ListenerResultLabels { listener, result })
            .inc();
    }

    /// Counts one answered check.
    pub fn record_check(
        &self,
        transport: crate::check::Transport,
        decision: &'static str,
        reason: &'static str,
        issuer: Option<&Arc<str>>,
        took: Duration,
    ) {
        self.checks
            .get_or_create(&CheckLabels {
                transport: transport.name(),
                decision,
                reason,
                issuer: IssuerId(issuer.cloned()),
            })
            .inc();
        self.duration_of(transport).observe(took.as_secs_f64());
    }

    /// The check duration series of `transport`.
    fn duration_of(&self, transport: crate::check::Transport) -> &Histogram {
        let slot = match transport {
            crate::check::Transport::Grpc => &self.durations[0],
            crate::check::Transport::Http => &self.durations[1],
        };
        slot.get_or_init(|| {
            self.duration
                .get_or_create(&TransportLabel {
                    transport: transport.name(),
                })
                .clone()
        })
    }

    /// Counts one configuration reload.
    pub fn record_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if applied {
            self.last_reload.set(crate::service::unix_now());
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Reads the token-cache counters of the running configuration at scrape time (the counters
/// carry over reloads; the entries are those of the running configuration's cache).
#[derive(Debug)]
struct CacheCollector {
    current: Arc<ArcSwap<Generation>>,
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let generation = self.current.load();
        let pipeline = &generation.pipeline;
        let stats = pipeline.cache_stats();
        for (name, help, value) in [
            (
                "token_cache_hits",
                "Checks whose token was taken from the verified-token cache",
                stats.hits(),
            ),
            (
                "token_cache_misses",
                "Checks whose token was looked up in the verified-token cache and verified",
                stats.misses(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let entries = pipeline.token_cache().map_or(0, |cache| cache.len());
        let gauge = ConstGauge::new(i64::try_from(entries).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "token_cache_entries",
            "Tokens held in the verified-token cache",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        if let Some(minter) = pipeline.minter() {
            let gauge = ConstGauge::new(i64::try_from(minter.cached()).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "mint_cache_entries",
                "Minted tokens held for reuse",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Reads the key counters of the running configuration at scrape time.
#[derive(Debug)]
struct KeyCollector {
    current: Arc<ArcSwap<Generation>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabel {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    result: String,
}

impl Collector for KeyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let generation = self.current.load();
        let stats: Vec<(String, crate::keys::KeyStatsSnapshot)> = generation
            .keys
            .stores()
            .into_iter()
            .map(|(id, store)| (id.to_owned(), store.stats().snapshot()))
            .collect();
        let now = crate::service::unix_now();

        let loaded = ConstGauge::new(0_i64);
        let mut family = encoder.encode_descriptor(
            "keys_loaded",
            "Keys in each issuer's current key set",
            None,
            loaded.metric_type(),
        )?;
        for (issuer, snapshot) in &stats {
            let labels = IssuerLabel {
                issuer: issuer.clone(),
            };
            let keys = i64::try_from(snapshot.keys).unwrap_or(i64::MAX);
            ConstGauge::new(keys).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "key_set_age_seconds",
            "Seconds since each issuer's current keys loaded",
            None,
            loaded.metric_type(),
        )?;
        for (issuer, snapshot) in &stats {
            if let Some(loaded_at) = snapshot.loaded_at {
                let labels = IssuerLabel {
                    issuer: issuer.clone(),
                };
                ConstGauge::new(now.saturating_sub(loaded_at))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let counter = ConstCounter::new(0_u64);
        let mut family = encoder.encode_descriptor(
            "key_fetches",
            "Key fetches by issuer and result (ok, or the failure kind)",
            None,
            counter.metric_type(),
        )?;
        for (issuer, snapshot) in &stats {
            let results = std::iter::once(("ok", snapshot.fetches_ok))
                .chain(snapshot.fetch_failures.iter().map(|(k, v)| (*k, *v)));
            for (result, count) in results {
                let labels = FetchLabels {
                    issuer: issuer.clone(),
                    result: result.to_owned(),
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
