//! Prometheus metrics, one registry per server (text-embeddings-inference's `te_*` set,
//! named `biomedclip_*`): requests by route and status, the queue, batch sizes, the time a
//! request spends queued, in inference and in all, inputs processed, the label cache, and
//! the process's peak memory.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A request's route and answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route, e.g. `/embed`.
    pub route: String,
    /// The HTTP status code.
    pub status: u16,
}

/// A route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route.
    pub route: String,
}

fn seconds() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Answered requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from a request's arrival to its answer, by route.
    pub request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests waiting for the engine.
    pub queue_size: Gauge,
    /// Inputs per engine call.
    pub batch_size: Histogram,
    /// Requests coalesced into one engine call.
    pub batch_requests: Histogram,
    /// Time a request waited in the queue.
    pub queue_duration: Histogram,
    /// Time of one engine call.
    pub inference_duration: Histogram,
    /// Images embedded.
    pub images: Counter,
    /// Texts embedded.
    pub texts: Counter,
    /// Queued requests dropped because their client went away.
    pub withdrawn: Counter,
    /// Label prompts found in the cache.
    pub label_cache_hits: Counter,
    /// Label prompts that needed text inference.
    pub label_cache_misses: Counter,
    /// Peak resident memory of the process (VmHWM), read when scraped.
    pub peak_rss: Gauge<u64, AtomicU64>,
    /// Every metric above, registered once (the registry holds handles to the same values).
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(seconds),
            queue_size: Gauge::default(),
            batch_size: sizes(),
            batch_requests: sizes(),
            queue_duration: seconds(),
            inference_duration: seconds(),
            images: Counter::default(),
            texts: Counter::default(),
            withdrawn: Counter::default(),
            label_cache_hits: Counter::default(),
            label_cache_misses: Counter::default(),
            peak_rss: Gauge::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("biomedclip");
        registry.register(
            "requests",
            "HTTP requests answered, by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer",
            metrics.request_duration.clone(),
        );
        registry.register(
            "queue_size",
            "Requests waiting for the engine",
            metrics.queue_size.clone(),
        );
        registry.register(
            "batch_size",
            "Inputs per engine call",
            metrics.batch_size.clone(),
        );
        registry.register(
            "batch_requests",
            "Requests coalesced into one engine call",
            metrics.batch_requests.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a request waited for the engine",
            metrics.queue_duration.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Time of one engine call",
            metrics.inference_duration.clone(),
        );
        registry.register("images", "Images embedded", metrics.images.clone());
        registry.register("texts", "Texts embedded", metrics.texts.clone());
        registry.register(
            "withdrawn",
            "Queued requests dropped because their client went away",
            metrics.withdrawn.clone(),
        );
        registry.register(
            "label_cache_hits",
            "Label prompts whose embedding came from the cache",
            metrics.label_cache_hits.clone(),
        );
        registry.register(
            "label_cache_misses",
            "Label prompts that needed text inference",
            metrics.label_cache_misses.clone(),
        );
        registry.register(
            "peak_rss_bytes",
            "Peak resident memory of the server process",
            metrics.peak_rss.clone(),
        );
        metrics.registry = registry;
        metrics
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(peak) = peak_rss_bytes() {
            self.peak_rss.set(peak);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `VmHWM` from `/proc/self/status` (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
