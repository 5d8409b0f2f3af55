//! ServiceMonitors and PodMonitors (CREATE and UPDATE): what both kinds share.
//!
//! With `--monitors=scrape-class` (the default) a monitor joins the scrape
//! class that this webhook adds to every `Prometheus` and `PrometheusAgent`
//! (`spec.scrapeClass`), and its endpoints stay as written: the class's
//! relabelings switch exactly the targets that need mTLS to https, per
//! target, at scrape time. A monitor stays out of the class, with a warning,
//! when it has a class of its own or an endpoint with TLS settings of its
//! own: prometheus-operator merges only the class's files into an endpoint
//! that has a `tlsConfig`, not `insecureSkipVerify`, so Istio's SPIFFE
//! certificate would then fail verification.
//!
//! UPDATE matters: `kubectl apply` replaces the whole spec of a custom
//! resource, so the patch is made again.

use serde_json::Value;

use super::annotations::monitor_opted_out;
use super::endpoints::{Endpoint, describe, has_tls_config, is_https, is_own_rule, subject};
use super::patch::{PatchBuilder, PatchValue, Path};
use super::view::Json;
use super::{MonitorMode, Mutated, MutationConfig};

/// What differs between the two kinds.
pub struct MonitorKind {
    /// `endpoints` or `podMetricsEndpoints`.
    pub endpoints_field: &'static str,
    /// Whether `--monitors=endpoints` can serve this kind: prometheus-operator
    /// refuses file paths in a PodMonitor's own `tlsConfig`.
    pub endpoint_tls_allowed: bool,
}

pub fn mutate<'r>(
    monitor: &Json<'_>,
    kind: &MonitorKind,
    config: &'r MutationConfig,
    relabelings: &'r Value,
) -> Mutated<'r> {
    let mut warnings = Vec::new();
    if monitor_opted_out(monitor, config, &mut warnings) {
        return Mutated::skipped(warnings);
    }
    let spec = monitor.get("spec");
    let endpoints_path = Path::root().key("spec").key(kind.endpoints_field);
    let endpoints = match spec.and_then(|s| s.get(kind.endpoints_field)) {
        None | Some(Json::Null) => &[][..],
        Some(Json::Array(endpoints)) => endpoints,
        Some(_) => {
            warnings.push(format!(
                "{endpoints_path} is not a list; the object was left unchanged"
            ));
            return Mutated::refused(warnings);
        }
    };
    if let Some(index) = endpoints.iter().position(|e| !e.is_object()) {
        warnings.push(format!(
            "endpoint {index} is not a mapping; the object was left unchanged"
        ));
        return Mutated::refused(warnings);
    }
    match config.monitors {
        MonitorMode::Off => Mutated::skipped(warnings),
        MonitorMode::ScrapeClass => join_class(spec, endpoints, &endpoints_path, config, warnings),
        MonitorMode::Endpoints if kind.endpoint_tls_allowed => {
            wire_endpoints(endpoints, &endpoints_path, config, relabelings, warnings)
        }
        MonitorMode::Endpoints => {
            warnings.push(
                "PodMonitors are left alone with --monitors=endpoints: prometheus-operator refuses \
                 certificate files in their tlsConfig, and before 0.74 a scrape class gives them none"
                    .into(),
            );
            Mutated::skipped(warnings)
        }
    }
}

fn join_class<'r>(
    spec: Option<&Json<'_>>,
    endpoints: &[Json<'_>],
    endpoints_path: &Path,
    config: &'r MutationConfig,
    mut warnings: Vec<String>,
) -> Mutated<'r> {
    let class_path = Path::root().key("spec").key("scrapeClass");
    let joined = match spec.and_then(|s| s.get("scrapeClass")) {
        None | Some(Json::Null) => false,
        Some(Json::String(class)) if *class == config.scrape_class => true,
        Some(Json::String(other)) => {
            warnings.push(format!(
                "it uses scrape class {other:?}, so it does not join {:?}: its targets are not switched to mTLS by this webhook",
                config.scrape_class
            ));
            return Mutated::skipped(warnings);
        }
        Some(_) => {
            warnings.push(format!(
                "{class_path} is not a string; the object was left unchanged"
            ));
            return Mutated::refused(warnings);
        }
    };

    let classes: Vec<Endpoint> = endpoints
        .iter()
        .map(|endpoint| classify_for_class(endpoint, joined, config))
        .collect();
    let own_tls: Vec<String> = endpoints
        .iter()
        .zip(&classes)
        .enumerate()
        .filter(|(_, (_, class))| **class == Endpoint::OwnTls)
        .map(|(index, (endpoint, _))| describe(index, endpoint))
        .collect();
    if !own_tls.is_empty() {
        warnings.push(format!(
            "{}, so the monitor does not join scrape class {:?} \
             (the class's insecureSkipVerify would not reach it): none of its targets is switched to mTLS by this webhook",
            subject(&own_tls, "has TLS settings of its own", "have TLS settings of their own"),
            config.scrape_class
        ));
        return Mutated::skipped(warnings);
    }

    let mut patch = PatchBuilder::default();
    let mut migrated = Vec::new();
    for (index, (endpoint, class)) in endpoints.iter().zip(&classes).enumerate() {
        if *class == Endpoint::Legacy {
            let path = endpoints_path.index(index);
            patch.replace(path.child_key("scheme"), "http");
            if has_tls_config(endpoint) {
                patch.remove(path.child_key("tlsConfig"));
            }
            migrated.push(describe(index, endpoint));
        }
    }
    if !migrated.is_empty() {
        warnings.push(format!(
            "{} https as an earlier version of this webhook (or the hand-edit it automates) wrote it: \
             it is back on http, and scrape class {:?} switches exactly the targets whose sidecar requires mTLS to https",
            subject(&migrated, "had", "had"),
            config.scrape_class
        ));
    }
    if !joined {
        patch.ensure_mapping(&Path::root().key("spec"), spec);
        patch.add(&class_path, config.scrape_class.as_str());
    }
    Mutated::from_patch(patch, warnings)
}

fn classify_for_class(endpoint: &Json<'_>, joined: bool, config: &MutationConfig) -> Endpoint {
    let tls = endpoint.get("tlsConfig").filter(|t| !t.is_null());
    match (is_https(endpoint), tls) {
        (true, Some(tls)) if *tls == *config.scrape_tls_config() => Endpoint::Legacy,
        // An earlier version set the class on PodMonitors and https on
        // their endpoints.
        (true, None) if joined => Endpoint::Legacy,
        (true, _) | (false, Some(_)) => Endpoint::OwnTls,
        (false, None) => Endpoint::Plain,
    }
}

/// `--monitors=endpoints`, for operators older than 0.74: each plain
/// endpoint gets the file `tlsConfig` and the class's rules appended to its
/// `relabelings` (after the user's own, which therefore run first). Rules
/// rendered for older policies are replaced; PeerAuthentication changes
/// reach a monitor only when it is next written.
fn wire_endpoints<'r>(
    endpoints: &[Json<'_>],
    endpoints_path: &Path,
    config: &'r MutationConfig,
    relabelings: &'r Value,
    mut warnings: Vec<String>,
) -> Mutated<'r> {
    let tls_config = config.scrape_tls_config();
    let rules: &[Value] = relabelings.as_array().map_or(&[], Vec::as_slice);
    let mut patch = PatchBuilder::default();
    let mut own_tls = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let path = endpoints_path.index(index);
        let ours = endpoint
            .get("tlsConfig")
            .is_some_and(|tls| *tls == *tls_config);
        if is_https(endpoint) && ours {
            // An earlier version's https: the rules decide now.
            patch.replace(path.child_key("scheme"), "http");
        } else if is_https(endpoint) || (has_tls_config(endpoint) && !ours) {
            own_tls.push(describe(index, endpoint));
            continue;
        } else if !ours {
            patch.add(path.child_key("tlsConfig"), tls_config);
        }
        ensure_rules(
            &path.key("relabelings"),
            endpoint.get("relabelings"),
            rules,
            &mut patch,
        );
    }
    if !own_tls.is_empty() {
        warnings.push(format!(
            "{}; left as written",
            subject(
                &own_tls,
                "has TLS settings of its own",
                "have TLS settings of their own"
            )
        ));
    }
    Mutated::from_patch(patch, warnings)
}

/// The class's rules at the end of the endpoint's `relabelings`, replacing
/// any earlier rendering of them.
fn ensure_rules<'r>(
    path: &Path,
    current: Option<&Json<'_>>,
    rules: &'r [Value],
    patch: &mut PatchBuilder<'r>,
) {
    let existing = match current {
        None | Some(Json::Null) => {
            patch.add(
                path,
                PatchValue::Array(rules.iter().map(PatchValue::from).collect()),
            );
            return;
        }
        Some(Json::Array(existing)) => existing,
        Some(_) => {
            patch.refuse(path, "list");
            return;
        }
    };
    let own: Vec<usize> = existing
        .iter()
        .enumerate()
        .filter(|(_, rule)| is_own_rule(rule))
        .map(|(index, _)| index)
        .collect();
    let tail_is_current = existing.len() >= rules.len()
        && own.len() == rules.len()
        && existing
            .get(existing.len() - rules.len()..)
            .is_some_and(|tail| tail.iter().zip(rules).all(|(have, rule)| have == rule));
    if tail_is_current {
        return;
    }
    // Highest index first, so the lower ones stay where they are.
    for index in own.into_iter().rev() {
        patch.remove(path.child_index(index));
    }
    for rule in rules {
        patch.add(path.child_end(), rule);
    }
}
