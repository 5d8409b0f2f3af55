//! PodMonitors (CREATE and UPDATE). prometheus-operator refuses file paths in
//! a PodMonitor's own `tlsConfig`, so the certificates come through the scrape
//! class this webhook adds to `Prometheus` resources: the PodMonitor gets
//! `spec.scrapeClass` and its endpoints without TLS of their own `scheme: https`.
//!
//! The scrape class is set only when some endpoint needs it: the operator
//! drops a PodMonitor whose class its Prometheus lacks, so a PodMonitor that
//! only scrapes sidecar metrics is better left without one.

use serde_json::Value;

use super::annotations::monitor_opted_out;
use super::endpoints::{Endpoint, classify, describe, is_https, left_alone_warning, subject};
use super::patch::{PatchBuilder, Path};
use super::{Mutation, MutationConfig, PodMonitorMode};

pub fn mutate(monitor: &Value, config: &MutationConfig) -> Mutation {
    let mut warnings = Vec::new();
    if monitor_opted_out(monitor, config, &mut warnings) {
        return Mutation::skipped(warnings);
    }

    let spec = monitor.get("spec");
    let scrape_class = spec
        .and_then(|s| s.get("scrapeClass"))
        .and_then(Value::as_str);
    let has_our_class = scrape_class == Some(config.scrape_class.as_str());
    let is_done = |endpoint: &Value| {
        has_our_class && is_https(endpoint) && endpoint.get("tlsConfig").is_none_or(Value::is_null)
    };
    let endpoints: Vec<(usize, &Value, Endpoint)> = spec
        .and_then(|s| s.get("podMetricsEndpoints"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, endpoint)| (index, endpoint, classify(endpoint, is_done)))
        .collect();
    let plain: Vec<String> = endpoints
        .iter()
        .filter(|(_, _, class)| matches!(class, Endpoint::Plain { .. }))
        .map(|(index, endpoint, _)| describe(*index, endpoint))
        .collect();

    if !plain.is_empty() {
        if config.pod_monitors == PodMonitorMode::Off {
            warnings.push(format!(
                "PodMonitors are not changed (--pod-monitors=off): {} on plain http, which fails behind mTLS",
                subject(&plain, "stays", "stay")
            ));
            return Mutation::skipped(warnings);
        }
        if let Some(other) = scrape_class.filter(|_| !has_our_class) {
            warnings.push(format!(
                "scrape class {other:?} is set, so {} not switched to https (that needs scrape class {:?})",
                subject(&plain, "was", "were"),
                config.scrape_class
            ));
            return Mutation::skipped(warnings);
        }
    }

    let mut patch = PatchBuilder::default();
    let spec_path = Path::root().key("spec");
    let sets_class = !plain.is_empty() && !has_our_class;
    if sets_class {
        patch.add(
            spec_path.key("scrapeClass"),
            Value::String(config.scrape_class.clone()),
        );
    }
    let endpoints_path = spec_path.key("podMetricsEndpoints");
    for (index, endpoint, class) in &endpoints {
        match class {
            Endpoint::Plain { scheme_present } => {
                let path = endpoints_path.index(*index).key("scheme");
                let https = Value::String("https".into());
                if *scheme_present {
                    patch.replace(path, https);
                } else {
                    patch.add(path, https);
                }
            }
            Endpoint::OwnTls
                if sets_class && endpoint.get("tlsConfig").is_some_and(Value::is_object) =>
            {
                warnings.push(format!(
                    "endpoint {} keeps its own tlsConfig, but scrape class {:?} now fills the CA, certificate and key it leaves empty",
                    describe(*index, endpoint),
                    config.scrape_class
                ));
            }
            other => warnings.extend(left_alone_warning(*index, endpoint, other)),
        }
    }
    Mutation::from_patch(patch, warnings)
}
