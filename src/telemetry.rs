//! The Prometheus recorder behind `GET /metrics`. Metric names follow Prometheus conventions:
//! the `asterai_` prefix, `_total` for counters, `_seconds` for durations.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets for latency histograms, in seconds (5 ms to 30 s).
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets for webhook deliveries, from the event to the receiver's 2xx (10 ms to a day): most
/// go at once, a receiver that was down is caught up hours later.
const WEBHOOK_DELIVERY_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0];

/// Buckets for asterai's own per-turn overhead (100 µs to 50 ms): its target is under 2 ms.
const OVERHEAD_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05];

/// Installs the process-wide recorder once and returns its handle; later calls return the same
/// handle. `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("asterai_turn_overhead_seconds".into()), OVERHEAD_BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("asterai_webhook_delivery_seconds".into()),
                    WEBHOOK_DELIVERY_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}
