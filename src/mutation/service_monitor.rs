//! ServiceMonitors (CREATE and UPDATE): every endpoint without TLS of its own
//! gets `scheme: https` and the `tlsConfig` pointing at the workload
//! certificate files. UPDATE matters: `kubectl apply` of a changed
//! ServiceMonitor replaces the whole `endpoints` list.

use serde_json::Value;

use super::annotations::monitor_opted_out;
use super::endpoints::{Endpoint, classify, is_https, left_alone_warning};
use super::patch::{PatchBuilder, Path};
use super::{Mutation, MutationConfig};

pub fn mutate(monitor: &Value, config: &MutationConfig) -> Mutation {
    let mut warnings = Vec::new();
    if monitor_opted_out(monitor, config, &mut warnings) {
        return Mutation::skipped(warnings);
    }

    let tls_config = config.scrape_tls_config();
    let is_done =
        |endpoint: &Value| is_https(endpoint) && endpoint.get("tlsConfig") == Some(&tls_config);
    let endpoints_path = Path::root().key("spec").key("endpoints");
    let endpoints = monitor
        .get("spec")
        .and_then(|s| s.get("endpoints"))
        .and_then(Value::as_array);

    let mut patch = PatchBuilder::default();
    for (index, endpoint) in endpoints.into_iter().flatten().enumerate() {
        let class = classify(endpoint, is_done);
        match class {
            Endpoint::Plain { scheme_present } => {
                let path = endpoints_path.index(index);
                let https = Value::String("https".into());
                if scheme_present {
                    patch.replace(path.key("scheme"), https);
                } else {
                    patch.add(path.key("scheme"), https);
                }
                patch.add(path.key("tlsConfig"), tls_config.clone());
            }
            other => warnings.extend(left_alone_warning(index, endpoint, &other)),
        }
    }
    Mutation::from_patch(patch, warnings)
}
