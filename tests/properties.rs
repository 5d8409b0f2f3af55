//! Property tests: for generated pods, `Prometheus` resources and monitors,
//! the patch applies cleanly, adds without removing or rewriting anything
//! but the allowed merges, and a second pass yields nothing. Arbitrary JSON
//! in any position never makes the core panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation, PodMonitorMode};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("istio-certs".to_owned()),
        Just("prometheus".to_owned()),
        Just("istio-proxy".to_owned()),
        Just("OUTPUT_CERTS".to_owned()),
        "[a-z][a-z0-9-]{0,8}",
    ]
}

fn dir() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/etc/prom-certs/".to_owned()),
        Just("/etc/prom-certs".to_owned()),
        Just("/etc/istio-output-certs".to_owned()),
        "/[a-z]{1,6}(/[a-z]{1,6})?/?",
    ]
}

/// Values Istio users really write into `proxy.istio.io/config`, and junk.
fn proxy_config() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("concurrency: 2\n".to_owned()),
        Just("proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n".to_owned()),
        Just("holdApplicationUntilProxyStarts: yes\nproxyMetadata: {A: on}\n".to_owned()),
        Just(r#"{"proxyMetadata":{"OUTPUT_CERTS":"/custom"}}"#.to_owned()),
        Just("{concurrency: 1}".to_owned()),
        Just("proxyMetadata:\n".to_owned()),
        dir().prop_map(|d| format!("proxyMetadata:\n  OUTPUT_CERTS: {d}\n")),
        any::<String>(),
        "[ -~\n]{0,40}",
    ]
}

fn user_volume_mount() -> impl Strategy<Value = String> {
    prop_oneof![
        (name(), dir()).prop_map(|(n, d)| json!([{"name": n, "mountPath": d}]).to_string()),
        (name(), dir()).prop_map(|(n, d)| json!({ n: {"mountPath": d} }).to_string()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        any::<String>(),
    ]
}

fn annotations() -> impl Strategy<Value = Option<Map<String, Value>>> {
    let pairs = prop::collection::vec(
        prop_oneof![
            proxy_config().prop_map(|v| ("proxy.istio.io/config".to_owned(), v)),
            user_volume_mount().prop_map(|v| ("sidecar.istio.io/userVolumeMount".to_owned(), v)),
            prop_oneof![Just("true"), Just("FALSE"), Just("maybe")]
                .prop_map(|v| ("prom-mtls-webhook.io/inject".to_owned(), v.to_owned())),
            prop_oneof![Just("injected"), Just("other")]
                .prop_map(|v| ("prom-mtls-webhook.io/status".to_owned(), v.to_owned())),
            "[ -~]{0,10}"
                .prop_map(|v| ("traffic.sidecar.istio.io/includeInboundPorts".to_owned(), v)),
            ("[a-z./~]{1,12}", "[ -~]{0,10}"),
        ],
        0..5,
    );
    proptest::option::of(pairs.prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    }))
}

fn mounts() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop::collection::vec((name(), dir()), 0..3).prop_map(|m| {
        Value::Array(
            m.into_iter()
                .map(|(n, d)| json!({"name": n, "mountPath": d}))
                .collect(),
        )
    }))
}

fn container() -> impl Strategy<Value = Value> {
    (
        name(),
        mounts(),
        proptest::option::of(prop::collection::vec((name(), dir()), 0..3)),
    )
        .prop_map(|(name, mounts, env)| {
            let mut c = json!({"name": name, "image": "example"});
            if let Some(mounts) = mounts {
                c["volumeMounts"] = mounts;
            }
            if let Some(env) = env {
                c["env"] = Value::Array(
                    env.into_iter()
                        .map(|(n, v)| json!({"name": n, "value": v}))
                        .collect(),
                );
            }
            c
        })
}

fn labels() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        Just(json!({"app.kubernetes.io/name": "prometheus"})),
        Just(json!({"app.kubernetes.io/name": "grafana"})),
        Just(json!({"app.kubernetes.io/name": "prometheus", "sidecar.istio.io/inject": "false"})),
        Just(json!({})),
    ])
}

fn pod() -> impl Strategy<Value = Value> {
    (
        labels(),
        annotations(),
        proptest::option::of(prop::collection::vec(name(), 0..3)),
        prop::collection::vec(container(), 0..3),
        proptest::option::of(prop::collection::vec(container(), 0..2)),
    )
        .prop_map(|(labels, annotations, volumes, containers, init)| {
            let mut metadata = json!({"name": "p"});
            if let Some(labels) = labels {
                metadata["labels"] = labels;
            }
            if let Some(annotations) = annotations {
                metadata["annotations"] = Value::Object(annotations);
            }
            let mut spec = json!({"containers": containers});
            if let Some(volumes) = volumes {
                spec["volumes"] = Value::Array(
                    volumes
                        .into_iter()
                        .map(|n| json!({"name": n, "emptyDir": {}}))
                        .collect(),
                );
            }
            if let Some(init) = init {
                spec["initContainers"] = Value::Array(init);
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
        })
}

fn prometheus() -> impl Strategy<Value = Value> {
    (
        annotations(),
        proptest::option::of(annotations()),
        proptest::option::of(prop::collection::vec(name(), 0..3)),
        mounts(),
        proptest::option::of(prop::collection::vec(prop_oneof![Just("istio-mtls".to_owned()), name()], 0..3)),
        any::<bool>(),
    )
        .prop_map(|(own, pod_annotations, volumes, mounts, classes, has_spec)| {
            let mut spec = json!({"replicas": 1});
            if let Some(pod_annotations) = pod_annotations {
                spec["podMetadata"] = match pod_annotations {
                    Some(a) => json!({"annotations": a}),
                    None => json!({"labels": {"a": "b"}}),
                };
            }
            if let Some(volumes) = volumes {
                spec["volumes"] = Value::Array(volumes.into_iter().map(|n| json!({"name": n, "emptyDir": {}})).collect());
            }
            if let Some(mounts) = mounts {
                spec["volumeMounts"] = mounts;
            }
            if let Some(classes) = classes {
                spec["scrapeClasses"] = Value::Array(classes.into_iter().map(|n| json!({"name": n})).collect());
            }
            let mut object = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "metadata": {"name": "p"}});
            if let Some(own) = own {
                object["metadata"]["annotations"] = Value::Object(own);
            }
            if has_spec {
                object["spec"] = spec;
            }
            object
        })
}

fn endpoint() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(prop_oneof![
            Just(json!("http")),
            Just(json!("HTTP")),
            Just(json!("https")),
            Just(json!("HTTPS")),
            Just(json!("ftp")),
            Just(Value::Null),
        ]),
        proptest::option::of(prop_oneof![
            Just(json!({})),
            Just(json!({"ca": {"secret": {"name": "a", "key": "b"}}})),
            Just(json!({"caFile": "/etc/prom-certs/root-cert.pem", "certFile": "/etc/prom-certs/cert-chain.pem", "keyFile": "/etc/prom-certs/key.pem", "insecureSkipVerify": true})),
            Just(Value::Null),
        ]),
        prop_oneof![
            Just(json!({"port": "web"})),
            Just(json!({"port": "http-envoy-prom"})),
            Just(json!({"targetPort": 15090})),
            Just(json!({"targetPort": "15020"})),
            Just(json!({"portNumber": 9090})),
            Just(json!({"path": "/stats/prometheus"})),
            Just(json!({})),
        ],
    )
        .prop_map(|(scheme, tls, mut endpoint)| {
            if let Some(scheme) = scheme {
                endpoint["scheme"] = scheme;
            }
            if let Some(tls) = tls {
                endpoint["tlsConfig"] = tls;
            }
            endpoint
        })
}

fn monitor(kind: &'static str, list: &'static str) -> impl Strategy<Value = Value> {
    (
        annotations(),
        proptest::option::of(prop::collection::vec(endpoint(), 0..5)),
        proptest::option::of(prop_oneof![Just("istio-mtls"), Just("other")]),
    )
        .prop_map(move |(annotations, endpoints, class)| {
            let mut object = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": kind, "metadata": {"name": "m"}, "spec": {"selector": {}}});
            if let Some(annotations) = annotations {
                object["metadata"]["annotations"] = Value::Object(annotations);
            }
            if let Some(endpoints) = endpoints {
                object["spec"][list] = Value::Array(endpoints);
            }
            if let Some(class) = class {
                object["spec"]["scrapeClass"] = json!(class);
            }
            object
        })
}

fn configs() -> impl Strategy<Value = MutationConfig> {
    (any::<bool>(), any::<bool>()).prop_map(|(off, custom)| {
        let mut config = MutationConfig::default();
        if off {
            config.pod_monitors = PodMonitorMode::Off;
        }
        if custom {
            config.prometheus_cert_dir = "/etc/prom-certs".into();
            config.volume_name = "prometheus".into();
        }
        config
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pods_patch_cleanly_and_converge(pod in pod(), config in configs()) {
        support::mutate_twice(Kind::Pod, Operation::Create, &pod, &config);
    }

    #[test]
    fn prometheuses_patch_cleanly_and_converge(object in prometheus(), config in configs(), update in any::<bool>()) {
        let operation = if update { Operation::Update } else { Operation::Create };
        support::mutate_twice(Kind::Prometheus, operation, &object, &config);
    }

    #[test]
    fn service_monitors_patch_cleanly_and_converge(object in monitor("ServiceMonitor", "endpoints"), config in configs()) {
        support::mutate_twice(Kind::ServiceMonitor, Operation::Update, &object, &config);
    }

    #[test]
    fn pod_monitors_patch_cleanly_and_converge(object in monitor("PodMonitor", "podMetricsEndpoints"), config in configs()) {
        support::mutate_twice(Kind::PodMonitor, Operation::Create, &object, &config);
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("metadata"),
            Just("spec"),
            Just("annotations"),
            Just("containers"),
            Just("volumes"),
            Just("endpoints"),
            Just("podMetricsEndpoints"),
            Just("podMetadata"),
            Just("name"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("metadata"),
                        Just("spec"),
                        Just("annotations"),
                        Just("labels"),
                        Just("containers"),
                        Just("initContainers"),
                        Just("volumes"),
                        Just("volumeMounts"),
                        Just("env"),
                        Just("name"),
                        Just("endpoints"),
                        Just("podMetricsEndpoints"),
                        Just("podMetadata"),
                        Just("scrapeClasses"),
                        Just("scrapeClass"),
                        Just("scheme"),
                        Just("tlsConfig"),
                        Just("port"),
                    ],
                    inner,
                ),
                0..5,
            )
            .prop_map(|pairs| Value::Object(
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// Either a well-formed value or arbitrary JSON in its place: custom
/// resources reach mutating admission before their schema is checked.
fn or_garbage(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![3 => good, 1 => any_json()].boxed()
}

/// Selected, mostly well-formed objects of each kind with fields of the wrong
/// type here and there.
fn malformed() -> impl Strategy<Value = (Kind, Value)> {
    let labels = Just(json!({"app.kubernetes.io/name": "prometheus"}));
    let metadata = (or_garbage(labels), or_garbage(annotations().prop_map(|a| a.map_or(Value::Null, Value::Object))))
        .prop_map(|(labels, annotations)| json!({"name": "x", "labels": labels, "annotations": annotations}))
    .boxed();
    let list = |item: BoxedStrategy<Value>| {
        or_garbage(prop::collection::vec(item, 0..3).prop_map(Value::Array))
    };
    let container = (
        or_garbage(mounts().prop_map(|m| m.unwrap_or(Value::Null))),
        or_garbage(Just(json!([]))),
    )
        .prop_map(|(mounts, env)| json!({"name": "prometheus", "volumeMounts": mounts, "env": env}))
        .boxed();
    let proxy = or_garbage(Just(
        json!({"name": "istio-proxy", "env": [{"name": "A", "value": "b"}]}),
    ))
    .boxed();
    let pod = (
        or_garbage(metadata.clone()),
        or_garbage(
            (list(Just(json!({"name": "v"})).boxed()), list(prop_oneof![container, proxy.clone()].boxed()), list(proxy))
                .prop_map(|(volumes, containers, init)| json!({"volumes": volumes, "containers": containers, "initContainers": init})),
        ),
    )
        .prop_map(|(metadata, spec)| (Kind::Pod, json!({"metadata": metadata, "spec": spec})));
    let prometheus = (
        or_garbage(metadata.clone()),
        or_garbage(
            (
                or_garbage(annotations().prop_map(|a| json!({"annotations": a.map_or(Value::Null, Value::Object)}))),
                list(Just(json!({"name": "v"})).boxed()),
                list(Just(json!({"name": "m", "mountPath": "/m"})).boxed()),
                list(Just(json!({"name": "other"})).boxed()),
            )
                .prop_map(|(pm, volumes, mounts, classes)| {
                    json!({"podMetadata": pm, "volumes": volumes, "volumeMounts": mounts, "scrapeClasses": classes})
                }),
        ),
    )
        .prop_map(|(metadata, spec)| (Kind::Prometheus, json!({"metadata": metadata, "spec": spec})));
    let endpoints = list(or_garbage(endpoint()));
    let service_monitor = (
        or_garbage(metadata.clone()),
        or_garbage(endpoints.clone().prop_map(|e| json!({"endpoints": e}))),
    )
        .prop_map(|(metadata, spec)| {
            (
                Kind::ServiceMonitor,
                json!({"metadata": metadata, "spec": spec}),
            )
        });
    let pod_monitor = (
        or_garbage(metadata),
        or_garbage(endpoints.prop_map(|e| json!({"podMetricsEndpoints": e}))),
    )
        .prop_map(|(metadata, spec)| {
            (
                Kind::PodMonitor,
                json!({"metadata": metadata, "spec": spec}),
            )
        });
    prop_oneof![pod, prometheus, service_monitor, pod_monitor]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Fields of the wrong type never get overwritten: the patch still
    /// applies, keeps every value, and converges (or the object is left alone).
    #[test]
    fn malformed_objects_are_patched_safely_or_left_alone((kind, object) in malformed(), update in any::<bool>()) {
        let operation = if update && kind != Kind::Pod { Operation::Update } else { Operation::Create };
        support::mutate_twice(kind, operation, &object, &MutationConfig::default());
    }

    /// Objects of any shape at all: never a panic, and the same guarantees.
    #[test]
    fn objects_of_any_shape_never_panic(object in any_json(), kind in prop_oneof![
        Just(Kind::Pod), Just(Kind::Prometheus), Just(Kind::ServiceMonitor), Just(Kind::PodMonitor)
    ]) {
        support::mutate_twice(kind, Operation::Create, &object, &MutationConfig::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_review(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = review(&body, &MutationConfig::default());
    }

    #[test]
    fn arbitrary_objects_in_a_review_never_panic(object in any_json(), kind in prop_oneof![
        Just("Pod"), Just("Prometheus"), Just("ServiceMonitor"), Just("PodMonitor")
    ]) {
        let group = if kind == "Pod" { "" } else { "monitoring.coreos.com" };
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
                        "operation": "CREATE", "object": object},
        })).unwrap();
        let reviewed = review(&body, &MutationConfig::default()).unwrap();
        prop_assert!(serde_json::from_slice::<Value>(&reviewed.body).is_ok());
    }
}
