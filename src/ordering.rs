//! Is our MutatingWebhookConfiguration called before Istio's sidecar injector?
//!
//! The injector reads the annotations this webhook adds only when it injects,
//! so it must see the pod after us. The API server calls mutating webhook
//! configurations in the byte-wise order of their names; Istio's is
//! `istio-sidecar-injector[-<revision>]`, recognised here by its webhooks'
//! names (`*.sidecar-injector.istio.io`), whatever the configuration is called.
//!
//! [`check`] decides from a list of configurations (pure, unit-tested);
//! [`run`] fetches that list with the in-cluster client now and then, logs a
//! warning naming every offending configuration, and sets the metrics.
//! Failing to reach the API server is logged, never fatal: the webhook works
//! either way, this only tells the operator when it will come too late.
//! [`run`] needs the `kubernetes` feature; without it the flag is refused.

#[cfg(feature = "kubernetes")]
use std::sync::Arc;

#[cfg(feature = "kubernetes")]
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
#[cfg(feature = "kubernetes")]
use kube::api::{Api, ListParams};
#[cfg(feature = "kubernetes")]
use tracing::{info, warn};

#[cfg(feature = "kubernetes")]
use crate::config::OrderingConfig;
#[cfg(feature = "kubernetes")]
use crate::metrics::Metrics;

/// The suffix of every webhook in Istio's injector configurations.
const ISTIO_INJECTOR_SUFFIX: &str = ".sidecar-injector.istio.io";

/// A MutatingWebhookConfiguration, reduced to what the check reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfiguration {
    pub name: String,
    pub webhook_names: Vec<String>,
}

#[cfg(feature = "kubernetes")]
impl From<&MutatingWebhookConfiguration> for WebhookConfiguration {
    fn from(config: &MutatingWebhookConfiguration) -> Self {
        Self {
            name: config.metadata.name.clone().unwrap_or_default(),
            webhook_names: config
                .webhooks
                .iter()
                .flatten()
                .map(|webhook| webhook.name.clone())
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ours sorts before each of these injector configurations (none: Istio
    /// is not installed, or injects by other means).
    Ordered { injectors: Vec<String> },
    /// These injector configurations sort before ours: pods they inject are
    /// already injected when we see them.
    Misordered { offending: Vec<String> },
    /// No configuration of our name: this webhook is not being called.
    NotRegistered,
}

/// Decides the order of `ours` against every Istio injector configuration.
pub fn check(ours: &str, configs: &[WebhookConfiguration]) -> Verdict {
    if !configs.iter().any(|config| config.name == ours) {
        return Verdict::NotRegistered;
    }
    let injectors = configs.iter().filter(|config| {
        config.name != ours
            && config
                .webhook_names
                .iter()
                .any(|name| name.ends_with(ISTIO_INJECTOR_SUFFIX))
    });
    // Byte-wise, as the API server sorts (Go's string `<`), not by locale.
    let (before, after): (Vec<_>, Vec<_>) =
        injectors.partition(|config| config.name.as_bytes() < ours.as_bytes());
    if before.is_empty() {
        Verdict::Ordered {
            injectors: after
                .into_iter()
                .map(|config| config.name.clone())
                .collect(),
        }
    } else {
        Verdict::Misordered {
            offending: before
                .into_iter()
                .map(|config| config.name.clone())
                .collect(),
        }
    }
}

#[cfg(feature = "kubernetes")]
/// Checks now and every `config.interval`, forever; cancel by aborting the task.
pub async fn run(config: OrderingConfig, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = None;
    let mut last = None;
    loop {
        ticks.tick().await;
        let verdict = match check_once(&config.webhook_config_name, &mut client).await {
            Ok(verdict) => verdict,
            Err(error) => {
                metrics.ordering_checked(None);
                warn!(%error, "ordering check: cannot list MutatingWebhookConfigurations");
                continue;
            }
        };
        metrics.ordering_checked(Some(&verdict));
        report(&config.webhook_config_name, &verdict, last.as_ref());
        last = Some(verdict);
    }
}

#[cfg(feature = "kubernetes")]
async fn check_once(ours: &str, client: &mut Option<kube::Client>) -> Result<Verdict, kube::Error> {
    let client = match client {
        Some(client) => client.clone(),
        None => client.insert(kube::Client::try_default().await?).clone(),
    };
    let list = Api::<MutatingWebhookConfiguration>::all(client)
        .list(&ListParams::default())
        .await?;
    let configs: Vec<WebhookConfiguration> = list.items.iter().map(Into::into).collect();
    Ok(check(ours, &configs))
}

#[cfg(feature = "kubernetes")]
/// A misordering is warned about at every check (it is an outage for new
/// pods); a good order is logged only when it changes.
fn report(ours: &str, verdict: &Verdict, last: Option<&Verdict>) {
    match verdict {
        Verdict::Misordered { offending } => warn!(
            ours,
            offending = ?offending,
            "ordering check: Istio's injector configuration sorts before ours, so it injects pods \
             before this webhook adds its annotations; rename ours to sort first (e.g. a `00-` prefix)"
        ),
        Verdict::NotRegistered => warn!(
            ours,
            "ordering check: no MutatingWebhookConfiguration of this name; is --webhook-config-name right?"
        ),
        Verdict::Ordered { injectors } if last != Some(verdict) => {
            info!(ours, injectors = ?injectors, "ordering check: ours sorts before Istio's injector");
        }
        Verdict::Ordered { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, webhooks: &[&str]) -> WebhookConfiguration {
        WebhookConfiguration {
            name: name.into(),
            webhook_names: webhooks.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    fn ours() -> WebhookConfiguration {
        config("00-prom-mtls-webhook", &["mutate.prom-mtls-webhook.io"])
    }

    fn istio(name: &str) -> WebhookConfiguration {
        config(
            name,
            &[
                "rev.namespace.sidecar-injector.istio.io",
                "rev.object.sidecar-injector.istio.io",
            ],
        )
    }

    #[test]
    fn ours_before_the_default_and_revisioned_injectors_is_ordered() {
        let configs = [
            istio("istio-sidecar-injector"),
            ours(),
            istio("istio-sidecar-injector-1-24"),
        ];
        assert_eq!(
            check("00-prom-mtls-webhook", &configs),
            Verdict::Ordered {
                injectors: vec![
                    "istio-sidecar-injector".into(),
                    "istio-sidecar-injector-1-24".into()
                ]
            }
        );
    }

    #[test]
    fn an_injector_sorting_first_is_named() {
        let configs = [
            config("prom-mtls-webhook", &["mutate.prom-mtls-webhook.io"]),
            istio("istio-sidecar-injector"),
            istio("zz-istio"),
        ];
        assert_eq!(
            check("prom-mtls-webhook", &configs),
            Verdict::Misordered {
                offending: vec!["istio-sidecar-injector".into()]
            }
        );
    }

    #[test]
    fn injectors_are_recognised_by_webhook_name_not_configuration_name() {
        let configs = [
            ours(),
            config(
                "0-renamed-injector",
                &["namespace.sidecar-injector.istio.io"],
            ),
            config("000-unrelated", &["other.example.com"]),
        ];
        assert_eq!(
            check("00-prom-mtls-webhook", &configs),
            Verdict::Misordered {
                offending: vec!["0-renamed-injector".into()]
            }
        );
    }

    #[test]
    fn order_is_byte_wise_not_case_folded() {
        // 'Z' (0x5a) sorts before 'a' (0x61), as in the API server.
        let configs = [config("a-webhook", &[]), istio("Z-istio")];
        assert!(matches!(
            check("a-webhook", &configs),
            Verdict::Misordered { .. }
        ));
    }

    #[test]
    fn without_istio_the_order_is_fine() {
        assert_eq!(
            check("00-prom-mtls-webhook", &[ours()]),
            Verdict::Ordered { injectors: vec![] }
        );
    }

    #[test]
    fn a_missing_configuration_is_reported() {
        assert_eq!(
            check("00-prom-mtls-webhook", &[istio("istio-sidecar-injector")]),
            Verdict::NotRegistered
        );
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn reads_names_from_the_api_type() {
        let api: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istio-sidecar-injector"},
            "webhooks": [{
                "name": "object.sidecar-injector.istio.io",
                "clientConfig": {},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"]
            }]
        }))
        .unwrap();
        assert_eq!(
            WebhookConfiguration::from(&api),
            config(
                "istio-sidecar-injector",
                &["object.sidecar-injector.istio.io"]
            )
        );
    }
}
