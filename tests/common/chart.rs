//! The Helm chart's values schema, generated so it cannot drift: the shape of
//! deploy/helm/fedauthz/values.yaml (every key it has, with the type of its default, objects
//! closed with `additionalProperties: false`), a table of the few values a default cannot type
//! (enums, nullable numbers, Kubernetes objects passed through), and, for `config`, the schema
//! `fedauthz config-schema` prints. `tests/deploy.rs` regenerates it and fails on a difference;
//! `FEDAUTHZ_REGENERATE=1 cargo test --test deploy` rewrites values.schema.json.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/fedauthz")
}

/// values.yaml as JSON.
pub fn default_values() -> Value {
    let path = chart_dir().join("values.yaml");
    let text = std::fs::read_to_string(&path).expect("read values.yaml");
    serde_saphyr::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A Kubernetes object passed through to the manifests as it is (kubernetes-validate checks it
/// where it lands).
fn kubernetes_object() -> Value {
    json!({"type": "object"})
}

fn kubernetes_list() -> Value {
    json!({"type": "array", "items": {"type": "object"}})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn port() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 65535})
}

fn positive() -> Value {
    json!({"type": "integer", "minimum": 1})
}

/// The name of a Secret, or "" for none.
fn secret_name_or_empty() -> Value {
    json!({"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"})
}

fn string_list() -> Value {
    json!({"type": "array", "items": {"type": "string", "minLength": 1}})
}

fn int_or_percent_or_null() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^[0-9]+%$"},
        {"type": "null"}
    ]})
}

/// Values whose default does not say their type, by dot path.
fn overrides() -> Vec<(&'static str, Value)> {
    vec![
        (
            "global",
            json!({"type": "object", "description": "Values a parent chart shares; fedauthz reads none."}),
        ),
        ("commonLabels", string_map()),
        (
            "image.pullPolicy",
            json!({"enum": ["Always", "IfNotPresent", "Never"]}),
        ),
        (
            "image.digest",
            json!({"type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$"}),
        ),
        (
            "imagePullSecrets",
            json!({"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": false,
                "properties": {"name": {"type": "string", "minLength": 1}}
            }}),
        ),
        ("replicaCount", json!({"type": "integer", "minimum": 0})),
        ("autoscaling.minReplicas", positive()),
        ("autoscaling.maxReplicas", positive()),
        (
            "autoscaling.targetCPUUtilizationPercentage",
            json!({"type": "integer", "minimum": 1}),
        ),
        (
            "autoscaling.targetMemoryUtilizationPercentage",
            json!({"type": ["integer", "null"], "minimum": 1}),
        ),
        ("autoscaling.behavior", kubernetes_object()),
        (
            "podDisruptionBudget.maxUnavailable",
            int_or_percent_or_null(),
        ),
        ("podDisruptionBudget.minAvailable", int_or_percent_or_null()),
        (
            "secretFiles",
            json!({"type": "object", "additionalProperties": {"type": "string"},
                   "propertyNames": {"pattern": "^[-._a-zA-Z0-9]+$"}}),
        ),
        (
            "secretMounts",
            json!({"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "required": ["name", "secretName", "mountPath"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "secretName": {"type": "string", "minLength": 1},
                    "mountPath": {"type": "string", "pattern": "^/"},
                    "items": kubernetes_list(),
                    "defaultMode": {"type": "integer", "minimum": 0, "maximum": 511}
                }
            }}),
        ),
        ("ports.grpc", port()),
        ("ports.admin", port()),
        ("listenAddress", json!({"type": "string", "minLength": 1})),
        ("tls.grpc.secretName", secret_name_or_empty()),
        ("tls.grpc.clientCA.secretName", secret_name_or_empty()),
        (
            "tls.grpc.clientCA.key",
            json!({"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"}),
        ),
        (
            "tls.grpc.clientCA.mode",
            json!({"enum": ["required", "optional"]}),
        ),
        ("tls.grpc.clientCA.allowedIdentities.uris", string_list()),
        (
            "tls.grpc.clientCA.allowedIdentities.dnsNames",
            string_list(),
        ),
        ("tls.admin.secretName", secret_name_or_empty()),
        (
            "service.type",
            json!({"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}),
        ),
        ("service.annotations", string_map()),
        ("service.labels", string_map()),
        ("service.grpcPort", port()),
        ("service.adminPort", port()),
        (
            "service.trafficDistribution",
            json!({"enum": ["", "PreferClose", "PreferSameZone", "PreferSameNode"]}),
        ),
        ("serviceAccount.annotations", string_map()),
        ("podAnnotations", string_map()),
        ("podLabels", string_map()),
        ("podSecurityContext", kubernetes_object()),
        ("securityContext", kubernetes_object()),
        ("resources", kubernetes_object()),
        (
            "tmpSizeLimit",
            json!({"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|k|M|G)?$"}),
        ),
        ("probes.type", json!({"enum": ["http", "grpc"]})),
        (
            "preStopSleepSeconds",
            json!({"type": "integer", "minimum": 0, "maximum": 60}),
        ),
        ("terminationGracePeriodSeconds", positive()),
        ("topologySpreadConstraints", kubernetes_list()),
        ("affinity", kubernetes_object()),
        ("tolerations", kubernetes_list()),
        ("nodeSelector", string_map()),
        ("logFormat", json!({"enum": ["text", "json"]})),
        (
            "opentelemetry.protocol",
            json!({"enum": ["grpc", "http/protobuf"]}),
        ),
        (
            "opentelemetry.sampler",
            json!({"enum": [
                "always_on", "always_off", "traceidratio", "parentbased_always_on",
                "parentbased_always_off", "parentbased_traceidratio"
            ]}),
        ),
        (
            "extraArgs",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        ("extraEnv", kubernetes_list()),
        ("extraEnvFrom", kubernetes_list()),
        ("extraVolumes", kubernetes_list()),
        ("extraVolumeMounts", kubernetes_list()),
        ("metrics.serviceMonitor.labels", string_map()),
        ("metrics.serviceMonitor.relabelings", kubernetes_list()),
        (
            "metrics.serviceMonitor.metricRelabelings",
            kubernetes_list(),
        ),
        ("metrics.serviceMonitor.tlsConfig", kubernetes_object()),
        ("networkPolicy.grpcFrom", kubernetes_list()),
        ("networkPolicy.adminFrom", kubernetes_list()),
        ("networkPolicy.publishFrom", kubernetes_list()),
        ("networkPolicy.httpFrom", kubernetes_list()),
        (
            "networkPolicy.egress.dns.namespaceSelector",
            kubernetes_object(),
        ),
        ("networkPolicy.egress.dns.podSelector", kubernetes_object()),
        ("networkPolicy.egress.identityProviders", kubernetes_list()),
        ("networkPolicy.egress.extra", kubernetes_list()),
        ("istio.authorizationPolicy.selector", string_map()),
        ("istio.authorizationPolicy.rules", kubernetes_list()),
        ("envoyGateway.securityPolicy.targetRefs", kubernetes_list()),
        (
            "envoyGateway.securityPolicy.headersToExtAuth",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        (
            "extraObjects",
            json!({"type": "array", "items": {"type": ["object", "string"]}}),
        ),
    ]
}

/// The schema of one value: an override, the config schema, or the type of its default.
fn schema_of(
    path: &str,
    default: &Value,
    overrides: &[(&str, Value)],
    used: &mut Vec<String>,
) -> Value {
    if let Some((_, schema)) = overrides.iter().find(|(p, _)| *p == path) {
        used.push(path.to_owned());
        return schema.clone();
    }
    match default {
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_u64() || n.is_i64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Object(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|(key, value)| {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    (key.clone(), schema_of(&child, value, overrides, used))
                })
                .collect();
            json!({"type": "object", "additionalProperties": false, "properties": properties})
        }
        Value::Null | Value::Array(_) => {
            panic!("values.yaml: {path}: a null or list default needs an entry in overrides()")
        }
    }
}

/// The generated values.schema.json text.
pub fn values_schema() -> String {
    let mut values = default_values();
    // `config` is typed by the binary's own schema, not by its placeholder default.
    let config_default = values
        .as_object_mut()
        .and_then(|fields| fields.remove("config"))
        .expect("values.yaml has config");
    assert!(config_default.is_object());
    let overrides = overrides();
    let mut used = Vec::new();
    let mut schema = schema_of("", &values, &overrides, &mut used);
    let unused: Vec<_> = overrides
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| !used.iter().any(|u| u == path))
        .collect();
    assert!(
        unused.is_empty(),
        "overrides for values that values.yaml does not have: {unused:?}"
    );

    let mut config: Value =
        serde_json::from_str(&fedauthz::config::json_schema()).expect("config schema is JSON");
    let config = config.as_object_mut().expect("config schema is an object");
    let mut definitions = config.remove("$defs").unwrap_or_else(|| json!({}));
    // The chart sets server.http.listen from ports.http (and refuses a value for it).
    if let Some(required) = definitions
        .pointer_mut("/HttpListenerConfig/required")
        .and_then(Value::as_array_mut)
    {
        required.retain(|field| field != "listen");
    }
    if let Some(listener) = definitions
        .pointer_mut("/HttpListenerConfig")
        .and_then(Value::as_object_mut)
        && listener["required"].as_array().is_some_and(Vec::is_empty)
    {
        listener.remove("required");
    }
    config.remove("$schema");
    config.insert(
        "description".into(),
        json!("The fedauthz configuration (docs/configuration.md), rendered as config.yaml."),
    );
    let root = schema.as_object_mut().expect("root is an object");
    root["properties"]["config"] = Value::Object(config.clone());
    root["properties"]["existingConfigMap"]["description"] =
        json!("An existing ConfigMap with the key config.yaml; config is then not rendered.");
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert("title".into(), json!("fedauthz Helm chart values"));
    out.insert(
        "$comment".into(),
        json!("Generated by tests/common/chart.rs from values.yaml and `fedauthz config-schema`; FEDAUTHZ_REGENERATE=1 cargo test --test deploy rewrites it."),
    );
    for (key, value) in std::mem::take(root) {
        out.insert(key, value);
    }
    out.insert("$defs".into(), definitions);
    let mut text = serde_json::to_string_pretty(&Value::Object(out)).expect("serialize schema");
    text.push('\n');
    text
}

/// Every value a user sets, by dot path: the leaves of values.yaml, where an object whose schema
/// is an override (a Kubernetes object, a map) and `config` count as one value.
pub fn value_paths() -> Vec<String> {
    fn walk(path: &str, value: &Value, overrides: &[(&str, Value)], out: &mut Vec<String>) {
        match value {
            Value::Object(fields)
                if path != "config" && !overrides.iter().any(|(p, _)| *p == path) =>
            {
                for (key, child) in fields {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&child_path, child, overrides, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", &default_values(), &overrides(), &mut out);
    out
}
