//! OpenTelemetry traces, exported over OTLP/HTTP (JSON) when `tracing.otlp_endpoint` is
//! set, and absent otherwise: without an endpoint no OpenTelemetry layer is installed
//! and the delivery path creates no spans at all.
//!
//! One trace follows a change from the HTTP request (honouring an incoming W3C
//! `traceparent`) through the outbox row and the relay's publish into the broker, and
//! from there to the fan-out on every instance: the W3C trace context travels inside the
//! outbox row and inside the message envelope.

use crate::config::TracingConfig;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (spans on the delivery path exist only then).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Builds the tracer provider for `config`, or `None` without an endpoint. Must be
/// called inside a tokio runtime (the exporter's HTTP client runs on it).
pub fn provider(config: &TracingConfig, node_id: &str) -> Option<SdkTracerProvider> {
    if config.otlp_endpoint.is_empty() {
        return None;
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(config.otlp_endpoint.clone())
        .build()
        .map_err(
            |e| tracing::error!(error = %e, "cannot build the OTLP exporter; tracing stays off"),
        )
        .ok()?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(OnTokio {
            exporter: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Some(provider)
}

/// The tracing layer that turns `tracing` spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("roomcast"))
}

/// The W3C `traceparent` of the current span, to carry across a process boundary.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    // Unsampled traces are not carried: no instance creates spans for them downstream.
    if !context.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by `traceparent` (a header or a carried
/// context); does nothing when tracing is off or the value is not a traceparent.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let (true, Some(traceparent)) = (enabled(), traceparent) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent: Context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The trace id in a `traceparent` (`00-<trace id>-<span id>-<flags>`), for log lines.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

/// Runs the OTLP exporter's requests on the server's tokio runtime: the SDK's batch
/// processor exports from a thread of its own, and the exporter's hyper client needs a
/// runtime to run on.
#[derive(Debug)]
struct OnTokio {
    exporter: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnTokio {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let exporter = self.exporter.clone();
        match self
            .runtime
            .spawn(async move { exporter.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(err) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                err.to_string(),
            )),
        }
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(exporter) = Arc::get_mut(&mut self.exporter) {
            exporter.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_read_from_traceparents() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
