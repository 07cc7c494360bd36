//! Prometheus metrics: the recorder, the request middleware and the names of every metric.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `refact_http_requests_total` | counter | method, route, status |
//! | `refact_http_request_duration_seconds` | histogram | method, route |
//! | `refact_generate_queue_depth` | gauge | |
//! | `refact_generate_duration_seconds` | histogram | outcome |
//! | `refact_generate_batch_size` | histogram (images per UNet batch) | |
//! | `refact_generate_images_total` | counter | version (the last 16 by number, else `older`) |
//! | `refact_generate_queue_wait_seconds` | histogram | |
//! | `refact_edits_queued`, `refact_edits_running` | gauge (read at scrape) | |
//! | `refact_edit_duration_seconds` | histogram | outcome |
//! | `refact_versions` | gauge | |
//! | `refact_text_cache_hits_total`, `refact_text_cache_misses_total` | counter (prompts) | |

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Seconds; covers fast API calls (ms) up to long edits and large images (minutes).
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// Images per batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (every `Application`
/// in a process shares it, as the `metrics` macros are global).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("refact_generate_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(err) => {
                    // Someone else installed a recorder: /metrics will be empty, but serve.
                    tracing::warn!(error = %err, "metrics recorder not installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Middleware: counts requests by route and status and times them. The route is the
/// matched pattern (`/edits/{id}`), never the raw path, so label values stay few.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("refact_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("refact_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label from a fixed set: any token is a valid HTTP method, and one
/// label value per name a client invents would let anyone grow /metrics without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Records one finished image.
pub fn record_generate(duration: Duration, outcome: &'static str) {
    metrics::histogram!("refact_generate_duration_seconds", "outcome" => outcome)
        .record(duration.as_secs_f64());
}

/// Versions that get their own label in `refact_generate_images_total`: the newest ones.
/// Older versions share the label `older`, so the series stay bounded however many
/// versions a model accumulates.
pub const LABELLED_VERSIONS: i64 = 16;

/// The `version` label of an image rendered at `version` when the newest is `head`.
pub fn version_label(version: i64, head: i64) -> String {
    if version > head - LABELLED_VERSIONS {
        version.to_string()
    } else {
        "older".to_string()
    }
}

/// Counts images served at a version.
pub fn record_generated_images(version: i64, head: i64, images: usize) {
    metrics::counter!("refact_generate_images_total", "version" => version_label(version, head))
        .increment(images as u64);
}

/// Records how many images one UNet batch rendered.
pub fn record_generate_batch(images: usize) {
    metrics::histogram!("refact_generate_batch_size").record(images as f64);
    crate::activity::record_batch(images);
}

/// Records how long a request waited in the queue before its batch started.
pub fn record_generate_queue_wait(waited: Duration) {
    metrics::histogram!("refact_generate_queue_wait_seconds").record(waited.as_secs_f64());
}

/// Sets the number of images waiting or being rendered.
pub fn set_generate_queue_depth(depth: usize) {
    metrics::gauge!("refact_generate_queue_depth").set(depth as f64);
}

/// Records one finished edit attempt (`applied`, `failed`, `cancelled`, `retry`, `lease_lost`).
pub fn record_edit(duration: Duration, outcome: &'static str) {
    metrics::histogram!("refact_edit_duration_seconds", "outcome" => outcome)
        .record(duration.as_secs_f64());
}

/// Sets the edit queue gauges (read from the store when `/metrics` is scraped).
pub fn set_edit_queue(queued: i64, running: i64, versions: usize) {
    metrics::gauge!("refact_edits_queued").set(queued as f64);
    metrics::gauge!("refact_edits_running").set(running as f64);
    metrics::gauge!("refact_versions").set(versions as f64);
}

/// Prompts of one batch answered from the text-embedding cache, and prompts encoded.
pub fn count_text_cache(hits: u64, misses: u64) {
    metrics::counter!("refact_text_cache_hits_total").increment(hits);
    metrics::counter!("refact_text_cache_misses_total").increment(misses);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "other");
        let another = Method::from_bytes(b"XYZZY").unwrap();
        assert_eq!(method_label(&another), method_label(&invented));
    }

    #[test]
    fn only_the_newest_versions_get_their_own_label() {
        assert_eq!(version_label(100, 100), "100");
        assert_eq!(version_label(85, 100), "85");
        assert_eq!(version_label(84, 100), "older");
        assert_eq!(
            version_label(0, 3),
            "0",
            "a young model labels every version"
        );
        let labels: std::collections::HashSet<String> =
            (0..=1000).map(|v| version_label(v, 1000)).collect();
        assert_eq!(labels.len() as i64, LABELLED_VERSIONS + 1, "bounded");
    }
}
