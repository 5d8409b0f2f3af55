//! Property tests: for generated pods, `Prometheus` resources and monitors,
//! the patch applies cleanly, adds without removing or rewriting anything
//! but the allowed merges, and a second pass yields nothing; and what must
//! change does change (a selected pod is wired, a monitor joins the class,
//! a `Prometheus` gets it), which an oracle written apart from the rules
//! decides. Arbitrary JSON in any position, and real reviews with their
//! bytes damaged, never make the core panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::{Kind, MonitorMode, MutationConfig, Operation, Outcome};
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

fn image() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("example"),
        Just("quay.io/prometheus/prometheus:v3.5.0"),
        Just("prom/prometheus"),
        Just("quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1"),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        name(),
        mounts(),
        proptest::option::of(prop::collection::vec((name(), dir()), 0..3)),
        image(),
    )
        .prop_map(|(name, mounts, env, image)| {
            let mut c = json!({"name": name, "image": image});
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
        Just(json!({"app.kubernetes.io/name": "prometheus", "sidecar.istio.io/inject": "true"})),
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
        proptest::option::of(prop_oneof![
            Just(json!("istio-mtls")),
            Just(json!("other")),
            Just(json!(5)),
            Just(json!({"name": "istio-mtls"})),
            Just(Value::Null),
        ]),
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
                object["spec"]["scrapeClass"] = class;
            }
            object
        })
}

fn configs() -> impl Strategy<Value = MutationConfig> {
    (
        prop_oneof![
            4 => Just(MonitorMode::ScrapeClass),
            1 => Just(MonitorMode::Endpoints),
            1 => Just(MonitorMode::Off),
        ],
        any::<bool>(),
    )
        .prop_map(|(monitors, custom)| {
            let mut config = MutationConfig::default();
            config.monitors = monitors;
            if custom {
                config.prometheus_cert_dir = "/etc/prom-certs".into();
                config.volume_name = "prometheus".into();
            }
            config
        })
}

// Oracles: what must have changed, decided from the object alone.

fn annotation<'a>(object: &'a Value, pointer: &str, key: &str) -> Option<&'a Value> {
    object.pointer(pointer).and_then(|a| a.get(key))
}

/// `<prefix>inject`'s value, if it is a string.
fn inject(object: &Value, pointer: &str) -> Option<String> {
    annotation(object, pointer, "prom-mtls-webhook.io/inject")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

fn has_named(list: Option<&Value>, name: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|i| i["name"] == name))
}

/// A pod that is selected and not refused gets the volume and Istio's
/// annotations; the status only once Prometheus mounts the volume.
fn assert_pod_wired(pod: &Value, outcome: Outcome, mutated: &Value, config: &MutationConfig) {
    let choice = inject(pod, "/metadata/annotations");
    let selected = match choice.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => pod.pointer("/metadata/labels/app.kubernetes.io~1name") == Some(&json!("prometheus")),
    };
    if !selected {
        assert_eq!(outcome, Outcome::Skipped);
        assert_eq!(mutated, pod);
        return;
    }
    if outcome == Outcome::Refused {
        assert_eq!(mutated, pod);
        return;
    }
    assert!(
        has_named(mutated.pointer("/spec/volumes"), &config.volume_name),
        "no volume: {mutated}"
    );
    for key in [
        "proxy.istio.io/config",
        "sidecar.istio.io/userVolumeMount",
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
    ] {
        assert!(
            annotation(mutated, "/metadata/annotations", key).is_some(),
            "no {key}: {mutated}"
        );
    }
    let proxy = annotation(mutated, "/metadata/annotations", "proxy.istio.io/config").unwrap();
    let proxy = prom_mtls_webhook::yaml::parse_one(proxy.as_str().unwrap()).unwrap();
    assert!(
        proxy["proxyMetadata"]["OUTPUT_CERTS"].is_string(),
        "{proxy}"
    );
    assert!(
        !proxy["holdApplicationUntilProxyStarts"].is_null(),
        "{proxy}"
    );
    let status = annotation(
        mutated,
        "/metadata/annotations",
        "prom-mtls-webhook.io/status",
    );
    let mounted = mutated["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == config.volume_name.as_str())
        });
    let had_status = annotation(pod, "/metadata/annotations", "prom-mtls-webhook.io/status")
        == Some(&json!("injected"));
    if status == Some(&json!("injected")) && !had_status {
        assert!(mounted, "status without a mount: {mutated}");
    }
    // The Prometheus container: by name, else the only Prometheus image.
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let by_name = containers
        .iter()
        .find(|c| c["name"] == config.prometheus_container.as_str());
    let by_image: Vec<&&Value> = containers
        .iter()
        .filter(|c| {
            c["name"] != "istio-proxy"
                && matches!(
                    c["image"].as_str(),
                    Some("quay.io/prometheus/prometheus:v3.5.0" | "prom/prometheus")
                )
        })
        .collect();
    let target = by_name.or(if by_image.len() == 1 {
        by_image.first().copied()
    } else {
        None
    });
    let dir = config.prometheus_cert_dir.trim_end_matches('/');
    if let Some(target) = target {
        if !dir_taken(&target["volumeMounts"], dir, config) {
            assert!(
                mounted && status == Some(&json!("injected")),
                "not mounted: {mutated}"
            );
        }
    } else {
        assert!(
            status.is_none_or(|s| pod
                .pointer("/metadata/annotations/prom-mtls-webhook.io~1status")
                == Some(s)),
            "{mutated}"
        );
    }
}

/// Whether another volume sits at the certificate directory while ours is
/// not mounted at all: then nothing is mounted, and no status is written.
fn dir_taken(mounts: &Value, dir: &str, config: &MutationConfig) -> bool {
    let mounts = mounts.as_array().map_or(&[][..], Vec::as_slice);
    !mounts
        .iter()
        .any(|m| m["name"] == config.volume_name.as_str())
        && mounts.iter().any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| p.trim_end_matches('/') == dir)
        })
}

/// A `Prometheus` that is not opted out and not refused carries the volume,
/// the mount and (where monitors join it) the scrape class.
fn assert_prometheus_wired(
    object: &Value,
    outcome: Outcome,
    mutated: &Value,
    config: &MutationConfig,
) {
    let opted_out = [
        inject(object, "/metadata/annotations"),
        inject(object, "/spec/podMetadata/annotations"),
    ]
    .iter()
    .any(|choice| choice.as_deref() == Some("false"));
    if opted_out || outcome == Outcome::Refused {
        assert_eq!(mutated, object);
        return;
    }
    assert!(
        has_named(mutated.pointer("/spec/volumes"), &config.volume_name),
        "{mutated}"
    );
    let dir = config.prometheus_cert_dir.trim_end_matches('/');
    let occupied = dir_taken(&object["spec"]["volumeMounts"], dir, config);
    assert!(
        occupied || has_named(mutated.pointer("/spec/volumeMounts"), &config.volume_name),
        "{mutated}"
    );
    let status = annotation(
        mutated,
        "/spec/podMetadata/annotations",
        "prom-mtls-webhook.io/status",
    );
    let had_status = annotation(
        object,
        "/spec/podMetadata/annotations",
        "prom-mtls-webhook.io/status",
    ) == Some(&json!("injected"));
    assert_eq!(
        status == Some(&json!("injected")),
        !occupied || had_status,
        "{mutated}"
    );
    let class = mutated["spec"]["scrapeClasses"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == config.scrape_class.as_str()));
    match config.monitors {
        MonitorMode::ScrapeClass => {
            let class = class.unwrap_or_else(|| panic!("no scrape class: {mutated}"));
            assert!(class.get("default").is_none());
        }
        // Nothing is added, but an existing entry stays.
        MonitorMode::Endpoints | MonitorMode::Off => assert_eq!(
            class.is_some(),
            object["spec"]["scrapeClasses"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == config.scrape_class.as_str()))
        ),
    }
}

/// A monitor joins the class unless it opted out, chose a class of its own,
/// or has an endpoint with TLS of its own that is not an earlier version's.
fn assert_monitor_joined(
    object: &Value,
    list: &str,
    outcome: Outcome,
    mutated: &Value,
    config: &MutationConfig,
) {
    let opted_out = inject(object, "/metadata/annotations").as_deref() == Some("false");
    let class = &object["spec"]["scrapeClass"];
    let ours = class == config.scrape_class.as_str();
    let legacy_tls = json!({"caFile": "/etc/prom-certs/root-cert.pem", "certFile": "/etc/prom-certs/cert-chain.pem", "keyFile": "/etc/prom-certs/key.pem", "insecureSkipVerify": true});
    let https = |e: &Value| {
        e["scheme"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    };
    let endpoints = object["spec"][list].as_array();
    let own_tls = endpoints.into_iter().flatten().any(|e| {
        let tls = &e["tlsConfig"];
        let legacy = https(e) && (*tls == legacy_tls || (tls.is_null() && ours));
        !legacy && (https(e) || !tls.is_null())
    });
    let joinable = config.monitors == MonitorMode::ScrapeClass
        && !opted_out
        && (class.is_null() || ours)
        && !object["spec"][list].is_object()
        && !object["spec"][list].is_string()
        && !object["spec"][list].is_number()
        && !object["spec"][list].is_boolean()
        && endpoints.into_iter().flatten().all(Value::is_object)
        && !own_tls;
    if joinable {
        assert_ne!(outcome, Outcome::Skipped, "{object}");
        assert_eq!(
            mutated["spec"]["scrapeClass"],
            config.scrape_class.as_str(),
            "{mutated}"
        );
        for endpoint in mutated["spec"][list].as_array().into_iter().flatten() {
            assert!(
                !https(endpoint)
                    || endpoint
                        .get("tlsConfig")
                        .is_some_and(|t| !t.is_null() && *t != legacy_tls),
                "{mutated}"
            );
        }
    } else if config.monitors != MonitorMode::Endpoints {
        assert_eq!(mutated, object, "{outcome:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pods_patch_cleanly_converge_and_get_wired(pod in pod(), config in configs()) {
        let (mutation, mutated) = support::mutate_twice(Kind::Pod, Operation::Create, &pod, &config);
        assert_pod_wired(&pod, mutation.outcome, &mutated, &config);
    }

    #[test]
    fn prometheuses_patch_cleanly_converge_and_get_the_class(object in prometheus(), config in configs(), update in any::<bool>(), agent in any::<bool>()) {
        let operation = if update { Operation::Update } else { Operation::Create };
        let kind = if agent { Kind::PrometheusAgent } else { Kind::Prometheus };
        let (mutation, mutated) = support::mutate_twice(kind, operation, &object, &config);
        assert_prometheus_wired(&object, mutation.outcome, &mutated, &config);
    }

    #[test]
    fn service_monitors_patch_cleanly_converge_and_join(object in monitor("ServiceMonitor", "endpoints"), config in configs()) {
        let (mutation, mutated) = support::mutate_twice(Kind::ServiceMonitor, Operation::Update, &object, &config);
        assert_monitor_joined(&object, "endpoints", mutation.outcome, &mutated, &config);
    }

    #[test]
    fn pod_monitors_patch_cleanly_converge_and_join(object in monitor("PodMonitor", "podMetricsEndpoints"), config in configs()) {
        let (mutation, mutated) = support::mutate_twice(Kind::PodMonitor, Operation::Create, &object, &config);
        assert_monitor_joined(&object, "podMetricsEndpoints", mutation.outcome, &mutated, &config);
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
                list(prop_oneof![Just(json!({"name": "other"})), Just(json!({"name": "istio-mtls", "tlsConfig": 3}))].boxed()),
            )
                .prop_map(|(pm, volumes, mounts, classes)| {
                    json!({"podMetadata": pm, "volumes": volumes, "volumeMounts": mounts, "scrapeClasses": classes})
                }),
        ),
    )
        .prop_map(|(metadata, spec)| (Kind::Prometheus, json!({"metadata": metadata, "spec": spec})));
    let endpoints = list(or_garbage(endpoint()));
    let scrape_class = || or_garbage(Just(json!("istio-mtls")));
    let service_monitor = (
        or_garbage(metadata.clone()),
        or_garbage(
            (endpoints.clone(), scrape_class())
                .prop_map(|(e, c)| json!({"endpoints": e, "scrapeClass": c})),
        ),
    )
        .prop_map(|(metadata, spec)| {
            (
                Kind::ServiceMonitor,
                json!({"metadata": metadata, "spec": spec}),
            )
        });
    let pod_monitor = (
        or_garbage(metadata),
        or_garbage(
            (endpoints, scrape_class())
                .prop_map(|(e, c)| json!({"podMetricsEndpoints": e, "scrapeClass": c})),
        ),
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

    /// Real reviews with their bytes damaged, so that parsing gets past the
    /// first byte and fails (or succeeds) anywhere in the object.
    #[test]
    fn damaged_reviews_never_panic(fixture in prop::sample::select(fixture_bodies()), damage in prop::collection::vec(damage(), 1..4)) {
        let mut body = fixture.clone();
        for d in damage {
            d.apply(&mut body);
        }
        match review(&body, &MutationConfig::default(), support::rules()) {
            Ok(reviewed) => prop_assert!(serde_json::from_slice::<Value>(&reviewed.body).is_ok()),
            Err(error) => prop_assert!(!error.to_string().contains('\n')),
        }
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
        let reviewed = review(&body, &MutationConfig::default(), support::rules()).unwrap();
        prop_assert!(serde_json::from_slice::<Value>(&reviewed.body).is_ok());
    }
}

fn fixture_bodies() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    support::files_with_extension(&dir, "json")
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// One change to a body, at a position given as a fraction of its length.
#[derive(Clone, Debug)]
enum Damage {
    Flip(f64, u8),
    Insert(f64, u8),
    Delete(f64, usize),
    Truncate(f64),
    /// A byte that JSON gives meaning to.
    Structural(f64, u8),
}

impl Damage {
    fn apply(&self, body: &mut Vec<u8>) {
        let at = |fraction: f64, len: usize| ((fraction * len as f64) as usize).min(len);
        match *self {
            Self::Flip(f, bit) => {
                let i = at(f, body.len().saturating_sub(1));
                if let Some(byte) = body.get_mut(i) {
                    *byte ^= 1 << (bit % 8);
                }
            }
            Self::Insert(f, byte) | Self::Structural(f, byte) => {
                let i = at(f, body.len());
                body.insert(i, byte);
            }
            Self::Delete(f, n) => {
                let i = at(f, body.len());
                let end = (i + n).min(body.len());
                body.drain(i..end);
            }
            Self::Truncate(f) => body.truncate(at(f, body.len())),
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    let at = 0.0..1.0f64;
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(f, b)| Damage::Flip(f, b)),
        (at.clone(), any::<u8>()).prop_map(|(f, b)| Damage::Insert(f, b)),
        (at.clone(), 1..16usize).prop_map(|(f, n)| Damage::Delete(f, n)),
        at.clone().prop_map(Damage::Truncate),
        (at, prop::sample::select(&b"{}[]\",:0\\"[..])).prop_map(|(f, b)| Damage::Structural(f, b)),
    ]
}
