//! Logging and tracing set-up shared by every service.
//!
//! Logs are JSON lines on stdout, filtered by `RUST_LOG` (default `info`); `LOG_FORMAT=pretty`
//! gives human-readable lines. When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP (http/protobuf) with `service.name` = the binary's name, and the W3C
//! trace context travels inside queue messages ([`current_traceparent`],
//! [`parent_from_traceparent`]). When it is not set, no OpenTelemetry layer is installed:
//! the hot path pays for nothing.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static TRACING_EXPORT: AtomicBool = AtomicBool::new(false);

/// Flushes exported spans when dropped; keep it alive until `main` returns.
#[must_use = "dropping the guard flushes telemetry immediately"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` set).
pub fn exporting() -> bool {
    TRACING_EXPORT.load(Ordering::Relaxed)
}

/// Installs the global subscriber for `service`. Calling it twice (tests) is harmless.
pub fn init(service: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The exporter logs every failed export; operators see those through our metrics.
    let filter = filter.add_directive("opentelemetry_sdk=warn".parse().unwrap_or_default());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    let provider = if endpoint.trim().is_empty() {
        None
    } else {
        tracer_provider(service)
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = if pretty {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init()
    };
    if result.is_ok() {
        if provider.is_some() {
            TRACING_EXPORT.store(true, Ordering::Relaxed);
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        }
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            traces = provider.is_some(),
            "telemetry initialised"
        );
    }
    TelemetryGuard { provider }
}

fn tracer_provider(service: &'static str) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build();
    match exporter {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build(),
        ),
        Err(e) => {
            eprintln!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter cannot be built: {e}"
            );
            None
        }
    }
}

/// The W3C `traceparent` of the current span, when spans are exported.
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a `traceparent` names, if it is well formed.
pub fn span_context_from_traceparent(traceparent: &str) -> Option<SpanContext> {
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let sc = context.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Makes `span` continue the trace of `traceparent` (a queued item's origin).
pub fn parent_from_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    let Some(sc) = span_context_from_traceparent(traceparent) else {
        return false;
    };
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    true
}

/// Links `span` to the trace of `traceparent` (more items of one batch).
pub fn link_traceparent(span: &tracing::Span, traceparent: &str) {
    if let Some(sc) = span_context_from_traceparent(traceparent) {
        span.add_link(sc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_or_are_refused() {
        let sc = span_context_from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context_from_traceparent("garbage").is_none());
        assert!(
            span_context_from_traceparent(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )
            .is_none()
        );
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        assert!(!exporting());
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn the_exporter_can_be_built_for_an_https_collector() {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint("https://127.0.0.1:4318/v1/traces")
            .build();
        assert!(exporter.is_ok(), "{:?}", exporter.err());
    }
}
