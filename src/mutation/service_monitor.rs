//! ServiceMonitors (CREATE and UPDATE): they join the webhook's scrape class
//! (see [`super::monitor`]); with `--monitors=endpoints`, each plain
//! endpoint gets the file `tlsConfig` and the class's rules instead.

use serde_json::Value;

use super::monitor::{self, MonitorKind};
use super::view::Json;
use super::{Mutated, MutationConfig};

const SERVICE_MONITOR: MonitorKind = MonitorKind {
    endpoints_field: "endpoints",
    endpoint_tls_allowed: true,
};

pub fn mutate<'r>(
    monitor: &Json<'_>,
    config: &'r MutationConfig,
    relabelings: &'r Value,
) -> Mutated<'r> {
    monitor::mutate(monitor, &SERVICE_MONITOR, config, relabelings)
}
