//! Istio's PeerAuthentication (`security.istio.io/v1`), reduced to what
//! decides a workload's mTLS mode: where it lives, when it was created, whom
//! it selects, and the modes it sets.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// `spec.mtls.mode`, as Istio spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MtlsMode {
    /// Inherit from the wider scope (also what a missing `mtls` means).
    Unset,
    /// Plain text only.
    Disable,
    /// Plain text and Istio's own mTLS; TLS from a client outside the mesh
    /// (Prometheus) is not terminated, so it must scrape over http.
    Permissive,
    /// Any TLS client with a mesh certificate; plain text is refused.
    Strict,
}

impl MtlsMode {
    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "UNSET" => Some(Self::Unset),
            "DISABLE" => Some(Self::Disable),
            "PERMISSIVE" => Some(Self::Permissive),
            "STRICT" => Some(Self::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Disable => "DISABLE",
            Self::Permissive => "PERMISSIVE",
            Self::Strict => "STRICT",
        }
    }

    /// `Some(self)` unless this is `UNSET`, which inherits.
    pub fn set(self) -> Option<Self> {
        (self != Self::Unset).then_some(self)
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp`, in seconds since the Unix epoch (the
    /// API server keeps whole seconds): within one scope the oldest wins.
    pub created: i64,
    /// `spec.selector.matchLabels`; empty means the whole namespace (or,
    /// in the root namespace, the whole mesh).
    pub selector: BTreeMap<String, String>,
    pub mode: MtlsMode,
    /// `spec.portLevelMtls`, by container port.
    pub port_level: BTreeMap<u32, MtlsMode>,
}

/// Why an object could not be read as a PeerAuthentication. The object is
/// then left out, as Istio's own validation would refuse it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("PeerAuthentication {object}: {reason}")]
pub struct PolicyError {
    pub object: String,
    pub reason: String,
}

impl PeerAuthentication {
    /// Reads a PeerAuthentication from its JSON (as the API server serves it).
    pub fn from_object(object: &Value) -> Result<Self, PolicyError> {
        let metadata = object.get("metadata");
        let text = |field: &str| {
            metadata
                .and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (namespace, name) = (text("namespace"), text("name"));
        let fail = |reason: String| PolicyError {
            object: format!("{namespace}/{name}"),
            reason,
        };
        let created = text("creationTimestamp");
        let created = created
            .parse::<jiff::Timestamp>()
            .map_err(|error| fail(format!("creationTimestamp {created:?}: {error}")))?
            .as_second();

        let spec = object.get("spec");
        let selector = match spec
            .and_then(|s| s.get("selector"))
            .and_then(|s| s.get("matchLabels"))
        {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(labels)) => labels
                .iter()
                .map(|(key, value)| match value.as_str() {
                    Some(value) => Ok((key.clone(), value.to_owned())),
                    None => Err(fail(format!("selector label {key:?} is not a string"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(fail("selector.matchLabels is not a mapping".into())),
        };
        let mode = mtls_mode(spec.and_then(|s| s.get("mtls"))).map_err(&fail)?;
        let port_level = match spec.and_then(|s| s.get("portLevelMtls")) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(ports)) => ports
                .iter()
                .map(|(port, mtls)| {
                    let number = port
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (1..=65535).contains(p))
                        .ok_or_else(|| fail(format!("portLevelMtls key {port:?} is not a port")))?;
                    Ok((number, mtls_mode(Some(mtls)).map_err(&fail)?))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(fail("portLevelMtls is not a mapping".into())),
        };
        Ok(Self {
            namespace,
            name,
            created,
            selector,
            mode,
            port_level,
        })
    }

    /// Whether it applies to a whole namespace (or mesh) rather than to the
    /// workloads its selector matches.
    pub fn is_namespace_wide(&self) -> bool {
        self.selector.is_empty()
    }

    /// Istio's order within one scope: oldest first, then by
    /// `name.namespace` (timestamps are whole seconds, so ties happen).
    pub fn precedes(&self, other: &Self) -> bool {
        (self.created, self.order_name()) < (other.created, other.order_name())
    }

    fn order_name(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// `{mode: ...}`, absent, or null; a missing mode is UNSET.
fn mtls_mode(mtls: Option<&Value>) -> Result<MtlsMode, String> {
    match mtls.and_then(|m| m.get("mode")) {
        None | Some(Value::Null) => Ok(MtlsMode::Unset),
        Some(Value::String(mode)) => {
            MtlsMode::parse(mode).ok_or_else(|| format!("unknown mtls mode {mode:?}"))
        }
        Some(other) => Err(format!("mtls mode {other} is not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_policy_as_the_api_server_serves_it() {
        let policy = PeerAuthentication::from_object(&json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "reviews", "namespace": "bookinfo",
                         "creationTimestamp": "2026-12-01T10:00:05Z"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}},
                     "mtls": {"mode": "STRICT"},
                     "portLevelMtls": {"9080": {"mode": "PERMISSIVE"}, "15000": {}}}
        }))
        .unwrap();
        assert_eq!(policy.namespace, "bookinfo");
        assert_eq!(policy.created, 1_796_119_205);
        assert_eq!(
            policy.selector,
            BTreeMap::from([("app".into(), "reviews".into())])
        );
        assert_eq!(policy.mode, MtlsMode::Strict);
        assert_eq!(
            policy.port_level,
            BTreeMap::from([(9080, MtlsMode::Permissive), (15000, MtlsMode::Unset)])
        );
    }

    #[test]
    fn a_policy_without_spec_is_namespace_wide_and_unset() {
        let policy = PeerAuthentication::from_object(&json!({
            "metadata": {"name": "default", "namespace": "istio-system",
                         "creationTimestamp": "2026-12-01T10:00:00Z"}
        }))
        .unwrap();
        assert!(policy.is_namespace_wide());
        assert_eq!(policy.mode, MtlsMode::Unset);
    }

    #[test]
    fn refuses_what_istio_would_refuse() {
        let base = |spec: Value| {
            json!({"metadata": {"name": "p", "namespace": "n", "creationTimestamp": "2026-12-01T10:00:00Z"},
                   "spec": spec})
        };
        for spec in [
            json!({"mtls": {"mode": "strict"}}),
            json!({"mtls": {"mode": 1}}),
            json!({"selector": {"matchLabels": {"app": 1}}}),
            json!({"selector": {"matchLabels": ["app"]}}),
            json!({"portLevelMtls": {"http": {"mode": "STRICT"}}}),
            json!({"portLevelMtls": {"0": {"mode": "STRICT"}}}),
        ] {
            let error = PeerAuthentication::from_object(&base(spec.clone())).unwrap_err();
            assert_eq!(error.object, "n/p", "{spec}");
        }
        let no_time = json!({"metadata": {"name": "p", "namespace": "n"}});
        assert!(PeerAuthentication::from_object(&no_time).is_err());
    }

    #[test]
    fn older_policies_precede_and_ties_go_by_name() {
        let policy = |name: &str, created: i64| PeerAuthentication {
            namespace: "n".into(),
            name: name.into(),
            created,
            selector: BTreeMap::new(),
            mode: MtlsMode::Strict,
            port_level: BTreeMap::new(),
        };
        assert!(policy("z", 1).precedes(&policy("a", 2)));
        assert!(policy("a", 2).precedes(&policy("b", 2)));
        assert!(!policy("b", 2).precedes(&policy("a", 2)));
    }
}
