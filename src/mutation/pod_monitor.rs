//! PodMonitors (CREATE and UPDATE): they join the webhook's scrape class
//! (see [`super::monitor`]). prometheus-operator refuses file paths in a
//! PodMonitor's own `tlsConfig`, so the class is the only way for them to
//! get the certificates; `--monitors=endpoints` leaves them alone.

use serde_json::Value;

use super::monitor::{self, MonitorKind};
use super::view::Json;
use super::{Mutated, MutationConfig};

const POD_MONITOR: MonitorKind = MonitorKind {
    endpoints_field: "podMetricsEndpoints",
    endpoint_tls_allowed: false,
};

pub fn mutate<'r>(monitor: &Json<'_>, config: &'r MutationConfig) -> Mutated<'r> {
    static NO_RULES: Value = Value::Null;
    monitor::mutate(monitor, &POD_MONITOR, config, &NO_RULES)
}
