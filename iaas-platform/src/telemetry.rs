//! Metrics: the process's Prometheus recorder, `GET /metrics`, and what has to be measured by
//! polling rather than as it happens.
//!
//! The library crates emit through the `metrics` facade and record nothing until a recorder is
//! installed; worse, a handle registered before that (the cache registers its counters when it
//! is built) stays a no-op for good. So [`install`] runs first thing in `Platform::start`. It
//! installs at most once per process and hands every later caller (a second platform in the
//! same test binary) the same recorder instead of failing.
//!
//! Polled here, every [`REFRESH_INTERVAL`]: Redis `INFO` (memory and evictions, through
//! `iaas_cache::redis_health`, which sets the `iaas_cache_redis_*` gauges) and the recorder's
//! upkeep (without its own HTTP listener nobody else drains histogram buckets). Measured here
//! as it happens: how long each consumer handler takes per event ([`timed_handler`]), on the
//! in-process bus and on Kafka alike.
//!
//! Every metric, its labels and the alert rules built on them are in `docs/operations.md`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use iaas_cache::RedisStore;
use iaas_core::http::HttpError;
use iaas_core::{EventHandler, HandlerError, InfrastructureEvent};
use metrics::Histogram;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often polled gauges are refreshed.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Histogram buckets (seconds) of every `*_seconds` metric. They include the operating targets as
/// bucket bounds (publish latency < 10 ms, processing time < 50 ms), so alert rules can count
/// the observations over a target exactly instead of interpolating.
pub(crate) const SECONDS_BUCKETS: &[f64] =
    &[0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's recorder.
#[derive(Clone)]
pub(crate) struct Recorder {
    handle: PrometheusHandle,
    /// False when another recorder was installed first: ours then sees nothing.
    installed: bool,
}

impl Recorder {
    /// The current values in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }
}

/// Installs the Prometheus recorder as the global `metrics` recorder, once per process; later
/// calls return the same one.
pub(crate) fn install() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .unwrap_or_else(|error| {
                // Only an empty bucket list is refused, and ours is a non-empty constant.
                tracing::error!(%error, "histogram buckets refused; histograms become summaries");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let installed = match metrics::set_global_recorder(recorder) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "another metrics recorder is installed; /metrics stays empty");
                false
            }
        };
        Recorder { handle, installed }
    })
}

/// `GET /metrics`: every metric of the process in the Prometheus text format.
pub(crate) async fn metrics_endpoint() -> Response {
    let recorder = install();
    if !recorder.installed {
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed in this process before the platform's",
        )
        .into_response();
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], recorder.render()).into_response()
}

/// Refreshes the polled gauges every [`REFRESH_INTERVAL`] until `cancel`: the recorder's
/// upkeep, and Redis `INFO` when `redis` is configured.
pub(crate) fn spawn_refresh(
    redis: Option<RedisStore>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Log a Redis outage when it starts and when it ends, not on every tick in between.
        let mut redis_was_up = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            install().handle.run_upkeep();
            let Some(store) = &redis else { continue };
            let read = tokio::time::timeout(
                crate::health::CHECK_TIMEOUT,
                iaas_cache::redis_health(&mut store.connection()),
            )
            .await;
            let up = match read {
                Ok(Ok(_)) => true,
                Ok(Err(error)) => {
                    if redis_was_up {
                        tracing::warn!(%error, "reading Redis INFO; memory and eviction gauges are stale");
                    }
                    false
                }
                Err(_) => {
                    if redis_was_up {
                        tracing::warn!(timeout = ?crate::health::CHECK_TIMEOUT, "Redis INFO timed out; memory and eviction gauges are stale");
                    }
                    false
                }
            };
            if up && !redis_was_up {
                tracing::info!("Redis INFO readable again");
            }
            metrics::gauge!("iaas_cache_redis_up").set(if up { 1.0 } else { 0.0 });
            redis_was_up = up;
        }
    })
}

/// `handler`, with the time it takes per event recorded as
/// `iaas_consumer_processing_seconds{handler}` (the "processing time", target < 50 ms),
/// whichever bus drives it. Install the recorder first (`Platform::start` or `instrumented`
/// do): the histogram's handle is registered here.
pub fn timed_handler(handler: Arc<dyn EventHandler>) -> Arc<dyn EventHandler> {
    let duration = metrics::histogram!(
        "iaas_consumer_processing_seconds",
        "handler" => handler.name().to_owned()
    );
    Arc::new(Timed { inner: handler, duration })
}

/// See [`timed_handler`].
struct Timed {
    inner: Arc<dyn EventHandler>,
    duration: Histogram,
}

#[async_trait]
impl EventHandler for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
        let started = Instant::now();
        let outcome = self.inner.handle(event).await;
        self.duration.record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Forwarded whole, so the inner handler keeps its batching; every event of the batch
    /// records the batch's time (what each of them waited).
    async fn handle_batch(&self, events: &[InfrastructureEvent]) -> Vec<Result<(), HandlerError>> {
        let started = Instant::now();
        let outcomes = self.inner.handle_batch(events).await;
        let took = started.elapsed().as_secs_f64();
        for _ in events {
            self.duration.record(took);
        }
        outcomes
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
}

#[cfg(test)]
mod tests {
    use iaas_core::{Clock, EventAction, InstanceId, InstanceKind, SystemClock, UserId};

    use super::*;

    struct Sink;

    #[async_trait]
    impl EventHandler for Sink {
        fn name(&self) -> &str {
            "telemetry-test-sink"
        }

        async fn handle(&self, event: &InfrastructureEvent) -> Result<(), HandlerError> {
            if event.action == EventAction::Failed {
                return Err(HandlerError::Permanent("refused".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn a_second_install_reuses_the_first_recorder() {
        let first = install();
        let second = install();
        assert!(std::ptr::eq(first, second));
        assert!(first.installed, "no other recorder exists in this test binary");
        metrics::counter!("iaas_telemetry_test_total").increment(3);
        assert!(second.render().contains("iaas_telemetry_test_total 3"), "{}", second.render());
    }

    #[tokio::test]
    async fn timed_handlers_record_every_event_and_keep_the_outcome() {
        install();
        let handler = timed_handler(Arc::new(Sink));
        assert_eq!(handler.name(), "telemetry-test-sink");
        let event = |action| {
            InfrastructureEvent::new(
                InstanceId::new_random(),
                UserId::new_random(),
                InstanceKind::Postgres,
                action,
                SystemClock.now(),
            )
        };
        handler.handle(&event(EventAction::Started)).await.unwrap();
        let refused = handler.handle(&event(EventAction::Failed)).await.unwrap_err();
        assert!(!refused.is_transient());
        let text = install().render();
        let count = text
            .lines()
            .find(|l| {
                l.starts_with("iaas_consumer_processing_seconds_count")
                    && l.contains("handler=\"telemetry-test-sink\"")
            })
            .unwrap_or_else(|| panic!("no processing-time histogram in\n{text}"));
        assert!(count.ends_with(" 2"), "{count}");
        // The 50 ms target is a bucket bound.
        assert!(text.contains("iaas_consumer_processing_seconds_bucket{handler=\"telemetry-test-sink\",le=\"0.05\"}"), "{text}");
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format() {
        install();
        metrics::counter!("iaas_telemetry_endpoint_test_total").increment(1);
        let response = metrics_endpoint().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], TEXT_FORMAT);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("# TYPE iaas_telemetry_endpoint_test_total counter"), "{body}");
    }
}
