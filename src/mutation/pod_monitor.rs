//! PodMonitors (CREATE and UPDATE): they join the webhook's scrape class
//! (see [`super::monitor`]). prometheus-operator refuses file paths in a
//! PodMonitor's own `tlsConfig`, so the class is the only way for them to
//! get the certificates; `--monitors=endpoints` leaves them alone.

use serde_json::Value;

use super::monitor::{self, MonitorKind};
use super::{Mutation, MutationConfig};

const POD_MONITOR: MonitorKind = MonitorKind {
    endpoints_field: "podMetricsEndpoints",
    endpoint_tls_allowed: false,
};

pub fn mutate(monitor: &Value, config: &MutationConfig) -> Mutation {
    monitor::mutate(monitor, &POD_MONITOR, config, &Value::Null)
}
