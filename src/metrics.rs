//! Metrics for `/metrics`, in the OpenMetrics text format (prometheus-client).
//!
//! Every name starts with `prom_mtls_webhook_`. Labels take values from small
//! closed sets (kind, operation, outcome): never a namespace or an object name,
//! so the number of series stays bounded whatever the cluster sends.
//!
//! The review path touches only atomics and one uncontended lock per metric;
//! label values are enums written straight into the output, never strings
//! formatted per request.

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::ReviewSummary;
use crate::mesh::{ModeSource, Rendering};
use crate::mutation::{Kind, Outcome};
use crate::ordering::Verdict;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The object kind of a review; `other` for every kind the webhook leaves
/// alone, and for requests too malformed to have one.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum KindLabel {
    Pod,
    Prometheus,
    PrometheusAgent,
    ServiceMonitor,
    PodMonitor,
    Other,
}

impl From<Option<Kind>> for KindLabel {
    fn from(kind: Option<Kind>) -> Self {
        match kind {
            Some(Kind::Pod) => Self::Pod,
            Some(Kind::Prometheus) => Self::Prometheus,
            Some(Kind::PrometheusAgent) => Self::PrometheusAgent,
            Some(Kind::ServiceMonitor) => Self::ServiceMonitor,
            Some(Kind::PodMonitor) => Self::PodMonitor,
            None => Self::Other,
        }
    }
}

impl EncodeLabelValue for KindLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Pod => "Pod",
            Self::Prometheus => "Prometheus",
            Self::PrometheusAgent => "PrometheusAgent",
            Self::ServiceMonitor => "ServiceMonitor",
            Self::PodMonitor => "PodMonitor",
            Self::Other => "other",
        })
    }
}

/// The admission operation; `other` for anything unexpected or unparsed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OperationLabel {
    Create,
    Update,
    Delete,
    Connect,
    Other,
}

impl OperationLabel {
    fn parse(operation: &str) -> Self {
        match operation {
            "CREATE" => Self::Create,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

impl EncodeLabelValue for OperationLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Other => "other",
        })
    }
}

/// What came of a review: the core's [`Outcome`] (`skipped`: out of scope;
/// `refused`: in scope but left alone, a field of the wrong type), or
/// `rejected` when the request got an HTTP error instead of an
/// AdmissionReview (400, 408, 413, 503).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum OutcomeLabel {
    Patched,
    Unchanged,
    Skipped,
    Refused,
    Rejected,
}

impl From<Outcome> for OutcomeLabel {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Patched => Self::Patched,
            Outcome::Unchanged => Self::Unchanged,
            Outcome::Skipped => Self::Skipped,
            Outcome::Refused => Self::Refused,
        }
    }
}

impl EncodeLabelValue for OutcomeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Refused => "refused",
            Self::Rejected => "rejected",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: KindLabel,
    operation: OperationLabel,
    outcome: OutcomeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: KindLabel,
}

/// The last ordering check's result.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CheckResult {
    /// Ours sorts before every Istio injector configuration.
    Ordered,
    /// No Istio injector configuration exists.
    NoInjector,
    /// An Istio injector configuration sorts before ours.
    Misordered,
    /// Our configuration is not registered.
    NotRegistered,
    /// The API server could not be asked.
    Error,
}

impl CheckResult {
    const ALL: [Self; 5] = [
        Self::Ordered,
        Self::NoInjector,
        Self::Misordered,
        Self::NotRegistered,
        Self::Error,
    ];
}

impl EncodeLabelValue for CheckResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Ordered => "ordered",
            Self::NoInjector => "no_injector",
            Self::Misordered => "misordered",
            Self::NotRegistered => "not_registered",
            Self::Error => "error",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    result: CheckResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: SourceLabel,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct SourceLabel(ModeSource);

impl EncodeLabelValue for SourceLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: KindLabel,
    result: &'static str,
}

/// The mesh watch and the scrape class it keeps.
struct MeshMetrics {
    mode_source: Family<SourceLabels, Gauge>,
    policies: Gauge,
    invalid_policies: Gauge,
    rules: Gauge,
    last_render: Gauge,
    watch_errors: Family<ResourceLabels, Counter>,
    class_writes: Family<WriteLabels, Counter>,
    classes_stale: Gauge,
}

impl MeshMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            mode_source: Family::default(),
            policies: Gauge::default(),
            invalid_policies: Gauge::default(),
            rules: Gauge::default(),
            last_render: Gauge::default(),
            watch_errors: Family::default(),
            class_writes: Family::default(),
            classes_stale: Gauge::default(),
        };
        registry.register(
            "mesh_mode_source",
            "Where the mTLS modes in force come from: 1 for watch (PeerAuthentications), assumed_strict (they cannot be read) or flag (--mesh-mtls)",
            metrics.mode_source.clone(),
        );
        registry.register(
            "mesh_peer_authentications",
            "PeerAuthentications the modes are composed from",
            metrics.policies.clone(),
        );
        registry.register(
            "mesh_invalid_peer_authentications",
            "PeerAuthentications left out because they cannot be read (render failures; the log names them)",
            metrics.invalid_policies.clone(),
        );
        registry.register(
            "mesh_relabel_rules",
            "Relabel rules in the scrape class as rendered now",
            metrics.rules.clone(),
        );
        registry.register_with_unit(
            "mesh_last_render_timestamp",
            "When the scrape class was last rendered anew, in seconds since the Unix epoch",
            Unit::Seconds,
            metrics.last_render.clone(),
        );
        registry.register(
            "mesh_watch_errors",
            "Errors of the watches on PeerAuthentications, Prometheus and PrometheusAgent resources (each is retried with backoff)",
            metrics.watch_errors.clone(),
        );
        registry.register(
            "scrape_class_writes",
            "Server-side applies of the scrape class, by kind and result (applied, failed)",
            metrics.class_writes.clone(),
        );
        registry.register(
            "scrape_classes_stale",
            "Prometheus and PrometheusAgent resources left without the current scrape class after the last pass",
            metrics.classes_stale.clone(),
        );
        metrics
    }
}

struct OrderingMetrics {
    ordered_before_istio: Gauge,
    last_result: Family<CheckLabels, Gauge>,
}

/// Every metric the process exposes, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: Histogram,
    warnings: Family<KindLabels, Counter>,
    connections: Gauge,
    requests_received: Counter,
    responses_sent: Counter,
    body_bytes: Gauge,
    log_lines_dropped: Counter,
    log_lines_dropped_seen: std::sync::atomic::AtomicU64,
    certificate_expiry: Gauge,
    certificate_reloads: Counter,
    certificate_reload_failures: Counter,
    ordering: Option<OrderingMetrics>,
    mesh: MeshMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// `ordering_check`: whether the ordering metrics exist (they would only
    /// mislead when the check does not run).
    pub fn new(ordering_check: bool) -> Self {
        let mut registry = Registry::with_prefix("prom_mtls_webhook");

        let reviews = Family::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by object kind, operation and outcome (rejected: answered with an HTTP error)",
            reviews.clone(),
        );
        // 25µs to ~0.8s, doubling: a review takes tens of microseconds, so
        // the interesting buckets are at the bottom.
        let review_duration = Histogram::new(exponential_buckets(25e-6, 2.0, 16));
        registry.register_with_unit(
            "review_duration",
            "Time from the request's headers to its answer, body read included",
            Unit::Seconds,
            review_duration.clone(),
        );
        let warnings = Family::default();
        registry.register(
            "warnings",
            "Warnings returned to the API server (kubectl prints them), by object kind",
            warnings.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "TLS connections open on the webhook port",
            connections.clone(),
        );
        let requests_received = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests received on the webhook port (every path; a shutdown answers each one it takes)",
            requests_received.clone(),
        );
        let responses_sent = Counter::default();
        registry.register(
            "http_responses",
            "HTTP responses handed whole to their connection on the webhook port",
            responses_sent.clone(),
        );
        let body_bytes = Gauge::default();
        registry.register_with_unit(
            "request_body_in_flight",
            "Bytes of request bodies held now, of the --max-body-bytes-in-flight budget",
            Unit::Bytes,
            body_bytes.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log sink could not keep up (nothing that serves waits for it)",
            log_lines_dropped.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "notAfter of the serving certificate in use, in seconds since the Unix epoch",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let certificate_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "New serving certificates picked up from the files",
            certificate_reloads.clone(),
        );
        let certificate_reload_failures = Counter::default();
        registry.register(
            "certificate_reload_failures",
            "Certificate/key pairs refused (unreadable, broken or mismatched); the previous pair stays in use",
            certificate_reload_failures.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        let ordering = ordering_check.then(|| {
            let metrics = OrderingMetrics {
                ordered_before_istio: Gauge::default(),
                last_result: Family::default(),
            };
            registry.register(
                "ordered_before_istio",
                "1 when our MutatingWebhookConfiguration sorts before every Istio sidecar injector configuration",
                metrics.ordered_before_istio.clone(),
            );
            registry.register(
                "ordering_check_result",
                "Result of the last ordering check: 1 for the result it had, 0 for the others",
                metrics.last_result.clone(),
            );
            metrics
        });

        let mesh = MeshMetrics::register(&mut registry);

        Self {
            registry,
            mesh,
            reviews,
            review_duration,
            warnings,
            connections,
            requests_received,
            responses_sent,
            body_bytes,
            log_lines_dropped,
            log_lines_dropped_seen: std::sync::atomic::AtomicU64::new(0),
            certificate_expiry,
            certificate_reloads,
            certificate_reload_failures,
            ordering,
        }
    }

    /// A review answered with an AdmissionReview.
    pub fn review(&self, summary: &ReviewSummary<'_>, elapsed: Duration) {
        let kind = KindLabel::from(summary.known_kind);
        self.reviews
            .get_or_create(&ReviewLabels {
                kind,
                operation: OperationLabel::parse(&summary.operation),
                outcome: summary.outcome.into(),
            })
            .inc();
        if !summary.warnings.is_empty() {
            self.warnings
                .get_or_create(&KindLabels { kind })
                .inc_by(summary.warnings.len() as u64);
        }
        self.review_duration.observe(elapsed.as_secs_f64());
    }

    /// A request answered with an HTTP error instead of a review.
    pub fn rejected(&self) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: KindLabel::Other,
                operation: OperationLabel::Other,
                outcome: OutcomeLabel::Rejected,
            })
            .inc();
    }

    pub fn request_received(&self) {
        self.requests_received.inc();
    }

    pub fn response_sent(&self) {
        self.responses_sent.inc();
    }

    /// Requests received and responses sent so far.
    pub fn requests(&self) -> (u64, u64) {
        (self.requests_received.get(), self.responses_sent.get())
    }

    pub fn body_bytes_in_flight(&self, bytes: usize) {
        self.body_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// A pair was loaded (at start or by a reload) and is now served.
    pub fn certificate_loaded(&self, not_after: i64) {
        self.certificate_expiry.set(not_after);
    }

    pub fn certificate_reloaded(&self) {
        self.certificate_reloads.inc();
    }

    pub fn certificate_reload_failed(&self) {
        self.certificate_reload_failures.inc();
    }

    /// Records an ordering check; `None` when the API server could not be asked.
    pub fn ordering_checked(&self, verdict: Option<&Verdict>) {
        let Some(ordering) = &self.ordering else {
            return;
        };
        let result = match verdict {
            Some(Verdict::Ordered { injectors }) if injectors.is_empty() => CheckResult::NoInjector,
            Some(Verdict::Ordered { .. }) => CheckResult::Ordered,
            Some(Verdict::Misordered { .. }) => CheckResult::Misordered,
            Some(Verdict::NotRegistered) => CheckResult::NotRegistered,
            None => CheckResult::Error,
        };
        match result {
            CheckResult::Ordered | CheckResult::NoInjector => {
                ordering.ordered_before_istio.set(1);
            }
            CheckResult::Misordered | CheckResult::NotRegistered => {
                ordering.ordered_before_istio.set(0);
            }
            // Unknown: keep what the last successful check said.
            CheckResult::Error => {}
        }
        for each in CheckResult::ALL {
            ordering
                .last_result
                .get_or_create(&CheckLabels { result: each })
                .set(i64::from(each == result));
        }
    }

    /// A rendering came into force; `rules` is its number of relabel rules.
    pub fn mesh_rendered(&self, rendering: &Rendering, rules: usize) {
        for source in ModeSource::ALL {
            self.mesh
                .mode_source
                .get_or_create(&SourceLabels {
                    source: SourceLabel(source),
                })
                .set(i64::from(source == rendering.source));
        }
        self.mesh
            .rules
            .set(i64::try_from(rules).unwrap_or(i64::MAX));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.mesh.last_render.set(now);
    }

    pub fn mesh_policies(&self, valid: usize, invalid: usize) {
        self.mesh
            .policies
            .set(i64::try_from(valid).unwrap_or(i64::MAX));
        self.mesh
            .invalid_policies
            .set(i64::try_from(invalid).unwrap_or(i64::MAX));
    }

    /// `resource`: the kind watched (a closed set, named by the controller).
    pub fn mesh_watch_error(&self, resource: &'static str) {
        self.mesh
            .watch_errors
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub fn scrape_class_written(&self, kind: Kind, applied: bool) {
        let result = if applied { "applied" } else { "failed" };
        self.mesh
            .class_writes
            .get_or_create(&WriteLabels {
                kind: KindLabel::from(Some(kind)),
                result,
            })
            .inc();
    }

    pub fn scrape_classes_stale(&self, stale: usize) {
        self.mesh
            .classes_stale
            .set(i64::try_from(stale).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        // The log writer counts its drops; bring the counter up to it.
        let dropped = crate::logging::dropped_lines();
        let seen = self
            .log_lines_dropped_seen
            .fetch_max(dropped, std::sync::atomic::Ordering::SeqCst);
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(
        kind: Option<Kind>,
        operation: &str,
        outcome: Outcome,
        warnings: usize,
    ) -> ReviewSummary<'static> {
        ReviewSummary {
            uid: "u".into(),
            kind: "Pod".into(),
            known_kind: kind,
            namespace: "ns".into(),
            name: "n".into(),
            operation: operation.to_owned().into(),
            dry_run: false,
            patch_operations: 0,
            warnings: vec!["w".into(); warnings],
            outcome,
        }
    }

    #[test]
    fn counts_reviews_by_kind_operation_and_outcome_without_names() {
        let metrics = Metrics::new(false);
        let patched = summary(Some(Kind::Pod), "CREATE", Outcome::Patched, 2);
        metrics.review(&patched, Duration::from_micros(30));
        metrics.review(&patched, Duration::from_micros(30));
        metrics.review(&summary(None, "WEIRD", Outcome::Skipped, 0), Duration::ZERO);
        metrics.rejected();
        let text = metrics.encode().unwrap();
        assert!(text.contains(
            "prom_mtls_webhook_reviews_total{kind=\"Pod\",operation=\"CREATE\",outcome=\"patched\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "prom_mtls_webhook_reviews_total{kind=\"other\",operation=\"other\",outcome=\"skipped\"} 1\n"
        ));
        assert!(text.contains(
            "prom_mtls_webhook_reviews_total{kind=\"other\",operation=\"other\",outcome=\"rejected\"} 1\n"
        ));
        assert!(text.contains("prom_mtls_webhook_warnings_total{kind=\"Pod\"} 4\n"));
        assert!(
            text.contains("prom_mtls_webhook_review_duration_seconds_bucket{le=\"0.000025\"} 1\n"),
            "{text}"
        );
        // Rejections get no duration: they never reached a review.
        assert!(text.contains("prom_mtls_webhook_review_duration_seconds_count 3\n"));
        assert!(!text.contains("namespace") && !text.contains("name=\""));
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("ordered_before_istio"));
    }

    #[test]
    fn ordering_gauges_follow_the_verdict_and_survive_errors() {
        let metrics = Metrics::new(true);
        metrics.ordering_checked(Some(&Verdict::Misordered {
            offending: vec!["istio-sidecar-injector".into()],
        }));
        metrics.ordering_checked(None);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("prom_mtls_webhook_ordered_before_istio 0\n"),
            "{text}"
        );
        assert!(text.contains("prom_mtls_webhook_ordering_check_result{result=\"error\"} 1\n"));
        assert!(
            text.contains("prom_mtls_webhook_ordering_check_result{result=\"misordered\"} 0\n")
        );
        metrics.ordering_checked(Some(&Verdict::Ordered {
            injectors: vec!["istio-sidecar-injector".into()],
        }));
        let text = metrics.encode().unwrap();
        assert!(text.contains("prom_mtls_webhook_ordered_before_istio 1\n"));
        assert!(text.contains("prom_mtls_webhook_ordering_check_result{result=\"ordered\"} 1\n"));
    }
}
