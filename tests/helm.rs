//! The Helm chart, with the real Helm (v4.1.4) and kubernetes-validate: lint, renderings of the
//! default values and of every values file under the chart's `ci/`, each manifest validated
//! against the Kubernetes 1.29 and 1.35 schemas, assertions on what the platform relies on
//! (security settings, probes, ports, HPA/replicas, CRD objects, NOTES), the values schema
//! refusing bad values with Helm's own error, and the release binary run exactly as the rendered
//! Deployment runs it, on the rendered ConfigMap (and, for TLS, on certificates written where the
//! rendered Secret mounts are).
//!
//! scripts/test installs the tools into .tools/ and enables the `helm-e2e` feature.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fedauthz::proto::auth::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

use common::chart::chart_dir;
use common::kubelet::KubeletDir;
use common::process::Process;

/// The Kubernetes versions every rendering is validated against (oldest supported, newest).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.35.0"];

/// CRD API groups the renderings may use; Helm is told they exist, as `helm template` users do.
const CRD_APIS: [&str; 4] = [
    "monitoring.coreos.com/v1",
    "security.istio.io/v1",
    "gateway.envoyproxy.io/v1alpha1",
    "gateway.networking.k8s.io/v1beta1",
];

fn tool(env: &str, name: &str, installer: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".tools/bin")
                .join(name)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{name} not found at {} (set {env} or run {installer}; scripts/test does)",
        path.display()
    );
    path
}

fn helm() -> Command {
    Command::new(tool("FEDAUTHZ_HELM", "helm", "scripts/install-helm"))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("run {command:?}: {err}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The values files of the chart's `ci/` folder.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("chart ci/ folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the minimal, production, istio, existing and tls values"
    );
    files
}

fn ci(name: &str) -> PathBuf {
    chart_dir().join("ci").join(format!("{name}-values.yaml"))
}

/// `helm template` with the given arguments; panics with Helm's error on failure.
fn template_text(args: &[&str]) -> String {
    let output = template_output(args);
    assert!(
        output.status.success(),
        "helm template {args:?} failed:\n{}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn template_output(args: &[&str]) -> Output {
    let mut command = helm();
    command
        .arg("template")
        .arg("t")
        .arg(chart_dir())
        .args(["--namespace", "authz"]);
    for api in CRD_APIS {
        command.args(["--api-versions", api]);
    }
    run(command.args(args))
}

/// A rendering as manifests (kind/name → object).
struct Rendering(Vec<Value>);

impl Rendering {
    fn new(args: &[&str]) -> Self {
        let text = template_text(args);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|err| panic!("rendered YAML does not parse: {err}\n{text}"));
        Self(docs.into_iter().filter(|doc| !doc.is_null()).collect())
    }

    fn kinds(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|doc| doc["kind"].as_str())
            .collect()
    }

    fn find(&self, kind: &str) -> Option<&Value> {
        self.0.iter().find(|doc| doc["kind"] == kind)
    }

    fn get(&self, kind: &str) -> &Value {
        self.find(kind)
            .unwrap_or_else(|| panic!("no {kind} rendered; kinds: {:?}", self.kinds()))
    }

    fn pod(&self) -> &Value {
        &self.get("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    fn config(&self) -> Value {
        let text = self.get("ConfigMap")["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml in the ConfigMap");
        serde_saphyr::from_str(text).expect("config.yaml is YAML")
    }
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

#[test]
fn helm_lint_strict_passes_for_the_defaults_and_every_ci_values_file() {
    let output = run(helm().args(["lint", "--strict"]).arg(chart_dir()));
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    for values in ci_values() {
        let output = run(helm()
            .args(["lint", "--strict", "-f"])
            .arg(&values)
            .arg(chart_dir()));
        assert!(
            output.status.success(),
            "{}: {}{}",
            values.display(),
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}

#[test]
fn every_rendering_validates_strictly_against_kubernetes_1_29_and_1_35() {
    let validate = tool(
        "FEDAUTHZ_KUBERNETES_VALIDATE",
        "kubernetes-validate",
        "scripts/install-kubernetes-validate",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases = vec![("defaults".to_owned(), Vec::<String>::new())];
    for values in ci_values() {
        let name = values
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        cases.push((name, vec!["-f".into(), values.display().to_string()]));
    }
    for (name, args) in &cases {
        for version in KUBERNETES_VERSIONS {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--kube-version", version]);
            let rendered = template_text(&all);
            let file = dir.path().join(format!("{name}-{version}.yaml"));
            std::fs::write(&file, &rendered).expect("write rendering");
            let output = run(Command::new(&validate)
                .args(["--strict", "-k", version])
                .arg(&file));
            let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
            assert!(
                output.status.success() && !report.contains("ERROR"),
                "{name} for Kubernetes {version} does not validate:\n{report}"
            );
            // Every built-in kind was really checked; only CRD kinds may be skipped.
            for line in report
                .lines()
                .filter(|l| l.contains("Couldn't find schema"))
            {
                assert!(
                    [
                        "ServiceMonitor",
                        "AuthorizationPolicy",
                        "SecurityPolicy",
                        "ReferenceGrant"
                    ]
                    .iter()
                    .any(|kind| line.contains(&format!("kind {kind} "))),
                    "{name}: an unvalidated kind: {line}"
                );
            }
            assert!(
                report.contains("passed for resource deployment/"),
                "{report}"
            );
        }
    }
}

#[test]
fn the_default_rendering_is_locked_down_and_probed() {
    let r = Rendering::new(&[]);
    let mut kinds = r.kinds();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ],
        "the defaults render no HPA, ServiceMonitor, NetworkPolicy, Secret or CRD objects"
    );

    let pod = r.pod();
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    for field in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert_eq!(security[field], 65532, "pod {field}");
    }
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        r.get("ServiceAccount")["automountServiceAccountToken"],
        false
    );

    let container = r.container();
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security["capabilities"].get("add").is_none());
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["image"], "ghcr.io/fedauthz/fedauthz:0.1.0",
        "tag = appVersion"
    );

    // The only writable path is an emptyDir; config and secrets are directory mounts (never
    // subPath, which never updates).
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for mount in mounts {
        assert!(mount.get("subPath").is_none(), "subPath mount: {mount}");
        let writable = mount["readOnly"] != true;
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("volume of the mount");
        if writable {
            assert!(
                volume.get("emptyDir").is_some(),
                "writable non-emptyDir mount: {mount}"
            );
        }
    }
    assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"));
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/fedauthz/config")
    );

    // Probes: startup and liveness on /healthz, readiness on /readyz, all on the admin port.
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "http-admin", "{probe}");
    }

    // Ports: gRPC named grpc with appProtocol grpc (Istio protocol detection), admin apart.
    let ports = container["ports"].as_array().expect("container ports");
    assert_eq!(ports[0]["name"], "grpc");
    assert_eq!(ports[0]["containerPort"], 50051);
    assert_eq!(ports[1]["name"], "http-admin");
    assert_eq!(ports[1]["containerPort"], 9191);
    let service = r.get("Service");
    let ports = service["spec"]["ports"].as_array().expect("service ports");
    assert_eq!(ports[0]["name"], "grpc");
    assert_eq!(ports[0]["appProtocol"], "grpc");
    assert_eq!(ports[0]["targetPort"], "grpc");
    assert_eq!(ports[1]["name"], "http-admin");
    assert_eq!(
        service["spec"]["selector"],
        r.get("Deployment")["spec"]["selector"]["matchLabels"]
    );

    // Replicas and the disruption budget.
    assert_eq!(r.get("Deployment")["spec"]["replicas"], 2);
    assert_eq!(r.get("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
    assert!(
        r.get("PodDisruptionBudget")["spec"]
            .get("minAvailable")
            .is_none()
    );

    // Topology spread constraints get the selector labels.
    let selector = &r.get("Deployment")["spec"]["selector"]["matchLabels"];
    for constraint in pod["topologySpreadConstraints"].as_array().expect("spread") {
        assert_eq!(&constraint["labelSelector"]["matchLabels"], selector);
    }

    // The listeners in the rendered config are the container's ports.
    let config = r.config();
    assert_eq!(config["server"]["grpc_listen"], "0.0.0.0:50051");
    assert_eq!(config["server"]["admin_listen"], "0.0.0.0:9191");
    let args = args_of(container);
    assert_eq!(
        args[..4],
        [
            "serve",
            "--config",
            "/etc/fedauthz/config/config.yaml",
            "--grpc-listen"
        ]
    );
    // fedauthz reloads itself: no rollout annotation unless asked for.
    assert!(
        r.get("Deployment")["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
}

#[test]
fn the_production_rendering_scales_by_hpa_and_fences_the_pods() {
    let r = Rendering::new(&["-f", &ci("production").display().to_string()]);
    let deployment = r.get("Deployment");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "replicas must be left out under an HPA (the two would fight)"
    );
    let hpa = r.get("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(r.get("PodDisruptionBudget")["apiVersion"], "policy/v1");

    let monitor = r.get("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );

    let policy = r.get("NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(ingress[0]["ports"][0]["port"], "grpc");
    assert_eq!(ingress[0]["from"].as_array().map(Vec::len), Some(2));
    assert_eq!(ingress[1]["ports"][0]["port"], "http-admin");
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress[0]["ports"][0]["port"], 53);
    assert_eq!(egress[1]["ports"][0]["port"], 443);
    assert_eq!(
        egress.len(),
        4,
        "DNS, identity providers and the two extra rules"
    );

    let container = r.container();
    assert_eq!(
        container["image"],
        "registry.example.com/platform/fedauthz@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name"),
                e["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(env["OTEL_TRACES_EXPORTER"], "otlp");
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4317"
    );
    assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.05");
    assert_eq!(env["OTEL_SERVICE_NAME"], "t-fedauthz");

    // Secrets: the main one and the CA bundle, each a read-only directory mount.
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for path in ["/etc/fedauthz/secrets", "/etc/fedauthz/tls/keycloak"] {
        let mount = mounts.iter().find(|m| m["mountPath"] == path).expect(path);
        assert_eq!(mount["readOnly"], true);
        assert!(mount.get("subPath").is_none());
    }
    let volumes = r.pod()["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "fedauthz-hmac")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "keycloak-tls")
    );
    assert!(
        r.find("Secret").is_none(),
        "existingSecret: the chart creates none"
    );

    // rollOnConfigChange: the pod template carries the config checksum.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["checksum/config"]
            .as_str()
            .is_some_and(|s| s.len() == 64)
    );
    assert_eq!(r.pod()["priorityClassName"], "system-cluster-critical");
}

#[test]
fn trafficdistribution_is_rendered_only_where_kubernetes_has_it() {
    let production = ci("production").display().to_string();
    let old = Rendering::new(&["-f", &production, "--kube-version", "1.29.0"]);
    assert!(
        old.get("Service")["spec"]
            .get("trafficDistribution")
            .is_none()
    );
    let new = Rendering::new(&["-f", &production, "--kube-version", "1.35.0"]);
    assert_eq!(
        new.get("Service")["spec"]["trafficDistribution"],
        "PreferClose"
    );
}

#[test]
fn the_istio_rendering_has_a_custom_policy_and_native_grpc_readiness() {
    let r = Rendering::new(&["-f", &ci("istio").display().to_string()]);
    let policy = r.get("AuthorizationPolicy");
    assert_eq!(policy["apiVersion"], "security.istio.io/v1");
    assert_eq!(policy["metadata"]["namespace"], "orders");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], "fedauthz");
    assert_eq!(policy["spec"]["selector"]["matchLabels"]["app"], "orders");
    let readiness = &r.container()["readinessProbe"];
    assert_eq!(readiness["grpc"]["port"], 50051);
    assert_eq!(
        readiness["grpc"]["service"],
        "envoy.service.auth.v3.Authorization"
    );
    // Liveness stays on /healthz: gRPC health reports NOT_SERVING while keys are missing, and
    // a liveness probe on it would restart pods that are only waiting for an IdP.
    assert_eq!(
        r.container()["livenessProbe"]["httpGet"]["path"],
        "/healthz"
    );
}

/// The mount of `volume` and the Secret it mounts, asserting a read-only, whole-Secret
/// directory mount (no subPath, no items: both would stop the kubelet's updates reaching the
/// files, and fedauthz re-reads certificates when they change).
fn secret_mount<'a>(r: &'a Rendering, volume: &str) -> (&'a Value, &'a Value) {
    let mount = r.container()["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("no mount of volume {volume}"));
    assert_eq!(mount["readOnly"], true, "{mount}");
    assert!(mount.get("subPath").is_none(), "subPath mount: {mount}");
    let secret = &r.pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap_or_else(|| panic!("no volume {volume}"))["secret"];
    assert!(secret.is_object(), "{volume} is not a Secret volume");
    assert!(
        secret.get("items").is_none(),
        "{volume}: the whole Secret is mounted"
    );
    (mount, secret)
}

#[test]
fn the_tls_rendering_mounts_whole_secrets_and_configures_both_listeners() {
    let r = Rendering::new(&["-f", &ci("tls").display().to_string()]);
    for (volume, path, secret_name) in [
        ("tls-grpc", "/etc/fedauthz/tls/grpc", "fedauthz-grpc-tls"),
        (
            "tls-grpc-client-ca",
            "/etc/fedauthz/tls/grpc-client-ca",
            "fedauthz-client-ca",
        ),
        ("tls-admin", "/etc/fedauthz/tls/admin", "fedauthz-admin-tls"),
    ] {
        let (mount, secret) = secret_mount(&r, volume);
        assert_eq!(mount["mountPath"], path);
        assert_eq!(secret["secretName"], secret_name);
    }

    // The config names the mounted files, with the client CA and the allow-list.
    let config = r.config();
    let server = &config["server"];
    assert_eq!(
        server["tls"],
        json!({
            "certificate_file": "/etc/fedauthz/tls/grpc/tls.crt",
            "private_key_file": "/etc/fedauthz/tls/grpc/tls.key",
            "client_certificates": {
                "ca_file": "/etc/fedauthz/tls/grpc-client-ca/ca.crt",
                "mode": "required",
                "allowed_identities": {
                    "uris": ["spiffe://cluster.local/ns/gateways/sa/envoy"],
                    "dns_names": []
                }
            }
        })
    );
    assert_eq!(
        server["admin_tls"],
        json!({
            "certificate_file": "/etc/fedauthz/tls/admin/tls.crt",
            "private_key_file": "/etc/fedauthz/tls/admin/tls.key"
        }),
        "no admin client certificates: kubelet probes present none"
    );
    assert!(server.get("mesh_mtls").is_none());

    // Probes over HTTPS (the kubelet does not verify them), still on the admin port.
    let container = r.container();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http-admin", "{probe}");
    }

    // Prometheus scrapes https, verifying the Service's name against the given CA.
    let endpoint = &r.get("ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"],
        json!({
            "ca": {"secret": {"name": "fedauthz-admin-tls", "key": "ca.crt"}},
            "serverName": "t-fedauthz.authz.svc.cluster.local"
        })
    );

    // The Service still declares gRPC.
    let ports = r.get("Service")["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports[0]["appProtocol"], "grpc");

    // A serverName of the user's own wins.
    let r = Rendering::new(&[
        "-f",
        &ci("tls").display().to_string(),
        "--set",
        "metrics.serviceMonitor.tlsConfig.serverName=fedauthz.example",
    ]);
    assert_eq!(
        r.get("ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"]["serverName"],
        "fedauthz.example"
    );

    // gRPC TLS alone: no client CA mount, no client_certificates, plain admin.
    let r = Rendering::new(&[
        "--set",
        "tls.grpc.enabled=true,tls.grpc.secretName=grpc-tls",
    ]);
    let config = r.config();
    assert!(config["server"]["tls"].get("client_certificates").is_none());
    assert!(config["server"].get("admin_tls").is_none());
    let names: Vec<&str> = r.pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(names.contains(&"tls-grpc"));
    assert!(!names.contains(&"tls-grpc-client-ca") && !names.contains(&"tls-admin"));
    assert!(
        r.container()["readinessProbe"]["httpGet"]
            .get("scheme")
            .is_none()
    );
}

#[test]
fn the_mint_rendering_publishes_the_keys_on_a_service_port_of_their_own() {
    let r = Rendering::new(&["-f", &ci("mint").display().to_string()]);
    let config = r.config();
    assert_eq!(config["mint"]["publish"]["listen"], "0.0.0.0:8081");
    let ports = r.container()["ports"].as_array().expect("container ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "http-keys" && p["containerPort"] == 8081),
        "{ports:?}"
    );
    let service = r.get("Service");
    let port = service["spec"]["ports"]
        .as_array()
        .expect("service ports")
        .iter()
        .find(|p| p["name"] == "http-keys")
        .expect("an http-keys Service port");
    assert_eq!(port["port"], 8081);
    assert_eq!(port["targetPort"], "http-keys");
    let policy = r.get("NetworkPolicy");
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    assert!(
        ingress.iter().any(|rule| rule["ports"][0]["port"] == "http-keys"
            && rule["from"][0]["namespaceSelector"]["matchLabels"]
                ["fedauthz.dev/verifies-internal-tokens"]
                == "true"),
        "{ingress:?}"
    );
    let (mount, secret) = secret_mount(&r, "mint-keys");
    assert_eq!(mount["mountPath"], "/etc/fedauthz/mint");
    assert_eq!(secret["secretName"], "fedauthz-mint-keys");

    // Without mint there is no such port.
    let plain = Rendering::new(&[]);
    assert!(
        !plain.get("Service")["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "http-keys")
    );
}

#[test]
fn the_http_rendering_serves_the_http_listener_on_a_service_port_of_its_own() {
    let r = Rendering::new(&["-f", &ci("http").display().to_string()]);
    let config = r.config();
    assert_eq!(config["server"]["http"]["listen"], "0.0.0.0:9192");
    assert_eq!(
        config["server"]["http"]["trusted_proxies"],
        json!(["10.0.0.0/8"])
    );
    let ports = r.container()["ports"].as_array().expect("container ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "http-authz" && p["containerPort"] == 9192),
        "{ports:?}"
    );
    let service = r.get("Service");
    let port = service["spec"]["ports"]
        .as_array()
        .expect("service ports")
        .iter()
        .find(|p| p["name"] == "http-authz")
        .expect("an http-authz Service port");
    assert_eq!(port["port"], 9192);
    assert_eq!(port["targetPort"], "http-authz");
    let policy = r.get("NetworkPolicy");
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    assert!(
        ingress.iter().any(|rule| rule["ports"][0]["port"] == "http-authz"
            && rule["from"][0]["namespaceSelector"]["matchLabels"]
                ["kubernetes.io/metadata.name"]
                == "edge"),
        "{ingress:?}"
    );
    // Without server.http there is no such port.
    let plain = Rendering::new(&[]);
    assert!(
        !plain.get("Service")["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "http-authz")
    );
    assert!(
        !plain.container()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "http-authz")
    );
}

#[test]
fn plaintext_grpc_is_declared_behind_istio_and_warned_about_otherwise() {
    // The defaults: no TLS, no mesh; fedauthz warns about its plaintext listener.
    let r = Rendering::new(&[]);
    let config = fedauthz::config::parse_yaml(
        r.get("ConfigMap")["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
        "config.yaml",
    )
    .expect("config");
    assert!(config.server.tls.is_none() && config.server.admin_tls.is_none());
    assert!(!config.server.mesh_mtls);
    let warnings = fedauthz::server::tls::prepare(&config.server, 0)
        .expect("no TLS files to load")
        .warnings;
    assert!(
        warnings.iter().any(|w| w.to_string().contains("plaintext")),
        "{warnings:?}"
    );
    for probe in ["startupProbe", "livenessProbe"] {
        assert!(r.container()[probe]["httpGet"].get("scheme").is_none());
    }

    // istio.meshMtls: plaintext on purpose, no warning.
    let r = Rendering::new(&["-f", &ci("istio").display().to_string()]);
    assert_eq!(r.config()["server"]["mesh_mtls"], true);
    let config = fedauthz::config::parse_yaml(
        r.get("ConfigMap")["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
        "config.yaml",
    )
    .expect("config");
    assert!(config.server.tls.is_none());
    let warnings = fedauthz::server::tls::prepare(&config.server, 0)
        .expect("no TLS files to load")
        .warnings;
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn existing_objects_are_referenced_not_rendered_and_envoy_gateway_is_wired() {
    let r = Rendering::new(&["-f", &ci("existing").display().to_string()]);
    let configmaps: Vec<_> = r.0.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    assert_eq!(configmaps.len(), 1, "only the extra object");
    assert_eq!(
        configmaps[0]["metadata"]["name"], "t-fedauthz-dashboards",
        "tpl ran"
    );
    assert!(r.find("Secret").is_none() && r.find("ServiceAccount").is_none());
    let pod = r.pod();
    assert_eq!(pod["serviceAccountName"], "fedauthz");
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "fedauthz-config")
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "fedauthz-secrets")
    );

    let policy = r.get("SecurityPolicy");
    assert_eq!(policy["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(policy["metadata"]["namespace"], "gateway");
    let backend = &policy["spec"]["extAuth"]["grpc"]["backendRefs"][0];
    assert_eq!(backend["name"], r.get("Service")["metadata"]["name"]);
    assert_eq!(backend["namespace"], "authz");
    assert_eq!(backend["port"], 50051);
    assert_eq!(policy["spec"]["extAuth"]["failOpen"], false);
    assert_eq!(policy["spec"]["targetRefs"][0]["kind"], "HTTPRoute");
    let grant = r.get("ReferenceGrant");
    assert_eq!(grant["metadata"]["namespace"], "authz");
    assert_eq!(grant["spec"]["from"][0]["namespace"], "gateway");
    assert_eq!(grant["spec"]["from"][0]["kind"], "SecurityPolicy");
    assert_eq!(grant["spec"]["to"][0]["kind"], "Service");
}

#[test]
fn the_schema_refuses_misspelt_values_and_wrong_types_with_helms_error() {
    let cases = [
        (
            vec!["--set", "replicaCont=3"],
            "additional properties 'replicaCont' not allowed",
        ),
        (
            vec!["--set", "replicaCount=three"],
            "at '/replicaCount': got string, want integer",
        ),
        (
            vec!["--set", "image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy'",
        ),
        (vec!["--set", "probes.type=tcp"], "at '/probes/type'"),
        (
            vec!["--set", "tls.grpc.clientCA.mode=sometimes"],
            "at '/tls/grpc/clientCA/mode'",
        ),
        (
            vec!["--set", "config.default_decisoin=allow"],
            "additional properties 'default_decisoin' not allowed",
        ),
        (
            vec!["--set", "config.default_decision=maybe"],
            "at '/config/default_decision'",
        ),
        (
            vec!["--set", "config.issuers[0].issur=x"],
            "additional properties 'issur' not allowed",
        ),
    ];
    for (args, expected) in cases {
        let output = template_output(&args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(expected),
            "{args:?}: expected Helm's schema error with {expected:?}, got:\n{stderr}"
        );
    }
    // A parent chart's globals are allowed (the schema declares `global`).
    template_text(&["--set", "global.imageRegistry=registry.example.com"]);
}

#[test]
fn template_rules_refuse_settings_the_chart_owns_or_cannot_honour() {
    let tls_values = ci("tls").display().to_string();
    let mint_values = ci("mint").display().to_string();
    let http_values = ci("http").display().to_string();
    let cases = [
        (
            vec!["--set", "config.server.grpc_listen=0.0.0.0:1"],
            "config.server.grpc_listen/admin_listen: the chart sets the listeners",
        ),
        (
            vec![
                "--set",
                "config.server.tls.certificate_file=/a.crt,config.server.tls.private_key_file=/a.key",
            ],
            "config.server.tls/admin_tls/mesh_mtls: the chart sets them",
        ),
        (
            vec![
                "--set",
                "config.server.admin_tls.certificate_file=/a.crt,config.server.admin_tls.private_key_file=/a.key",
            ],
            "config.server.tls/admin_tls/mesh_mtls: the chart sets them",
        ),
        (
            vec![
                "-f",
                &mint_values,
                "--set",
                "config.mint.publish.listen=0.0.0.0:1",
            ],
            "config.mint.publish.listen: the chart sets it; use ports.publish instead",
        ),
        (
            vec![
                "-f",
                &http_values,
                "--set",
                "config.server.http.listen=0.0.0.0:1",
            ],
            "config.server.http.listen: the chart sets it; use ports.http instead",
        ),
        (
            vec!["--set", "config.server.mesh_mtls=true"],
            "use tls.grpc, tls.admin and istio.meshMtls instead",
        ),
        (
            vec!["--set", "tls.grpc.enabled=true"],
            "tls.grpc.secretName: name the kubernetes.io/tls Secret",
        ),
        (
            vec!["--set", "tls.admin.enabled=true"],
            "tls.admin.secretName: name the kubernetes.io/tls Secret",
        ),
        (
            // The rules hold with an existing ConfigMap too (the mounts still depend on them).
            vec![
                "--set",
                "existingConfigMap=mine",
                "--set",
                "tls.grpc.enabled=true",
            ],
            "tls.grpc.secretName: name the kubernetes.io/tls Secret",
        ),
        (
            vec!["--set", "tls.grpc.clientCA.secretName=ca"],
            "tls.grpc.clientCA.secretName: client certificates need tls.grpc.enabled",
        ),
        (
            vec![
                "--set",
                "tls.grpc.enabled=true,tls.grpc.secretName=grpc-tls",
                "--set",
                "tls.grpc.clientCA.allowedIdentities.uris[0]=spiffe://cluster.local/ns/a/sa/b",
            ],
            "an allow-list needs client certificates",
        ),
        (
            vec![
                "--set",
                "tls.grpc.enabled=true,tls.grpc.secretName=grpc-tls",
                "--set",
                "istio.meshMtls=true",
            ],
            "tls.grpc.enabled and istio.meshMtls: choose one",
        ),
        (
            vec!["-f", &tls_values, "--set", "probes.type=grpc"],
            "the kubelet's gRPC probe speaks no TLS",
        ),
        (
            vec!["--set", "podDisruptionBudget.minAvailable=1"],
            "set exactly one of maxUnavailable and minAvailable",
        ),
        (
            vec!["--set", "opentelemetry.enabled=true"],
            "opentelemetry.endpoint is required",
        ),
        (
            vec!["--set", "envoyGateway.securityPolicy.enabled=true"],
            "envoyGateway.securityPolicy.targetRefs",
        ),
        (
            vec![
                "--set",
                "istio.authorizationPolicy.enabled=true",
                "--set",
                "istio.authorizationPolicy.rules=null",
            ],
            "istio.authorizationPolicy.rules: list at least one rule",
        ),
        (
            vec![
                "--set",
                "autoscaling.enabled=true",
                "--set",
                "autoscaling.minReplicas=5",
                "--set",
                "autoscaling.maxReplicas=2",
            ],
            "autoscaling.minReplicas must not exceed",
        ),
    ];
    for (args, expected) in cases {
        let output = template_output(&args);
        let stderr = text(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{args:?}:\n{stderr}"
        );
    }
}

/// NOTES.txt as `helm install --dry-run=client` prints it (no cluster needed).
fn install_notes(args: &[&str]) -> String {
    let output = run(helm()
        .args(["install", "t"])
        .arg(chart_dir())
        .args(["--namespace", "authz", "--dry-run=client"])
        .args(args));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    stdout
        .split_once("NOTES:\n")
        .map(|(_, notes)| notes.to_owned())
        .expect("NOTES in the install output")
}

/// The YAML block in `notes` that starts with the line `first` (indented), up to the next
/// blank line, with its indentation removed.
fn notes_block(notes: &str, first: &str) -> Value {
    let mut lines = notes.lines().skip_while(|l| l.trim() != first);
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no {first:?} in NOTES:\n{notes}"));
    let indent = head.len() - head.trim_start().len();
    let block: Vec<&str> = std::iter::once(head)
        .chain(lines.take_while(|l| !l.trim().is_empty()))
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    serde_saphyr::from_str(&block.join("\n")).unwrap_or_else(|err| {
        panic!(
            "NOTES block {first:?} is not YAML: {err}\n{}",
            block.join("\n")
        )
    })
}

#[test]
fn notes_print_the_istio_provider_the_policy_and_the_envoy_cluster() {
    let notes = install_notes(&[]);
    assert!(notes.contains("WARNING: this release runs the chart's placeholder configuration"));
    let mesh = notes_block(&notes, "meshConfig:");
    let provider = &mesh["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["name"], "fedauthz");
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["service"], "t-fedauthz.authz.svc.cluster.local");
    assert_eq!(grpc["port"], 50051);
    assert_eq!(
        grpc["timeout"], "0.25s",
        "explicit: Istio's default is 600 s"
    );
    assert_eq!(grpc["failOpen"], false);

    let policy = notes_block(&notes, "apiVersion: security.istio.io/v1");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], "fedauthz");

    let clusters = notes_block(&notes, "clusters:");
    let cluster = &clusters["clusters"][0];
    assert!(
        cluster["typed_extension_protocol_options"]
            .to_string()
            .contains("http2_protocol_options")
    );
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["address"], "t-fedauthz.authz.svc.cluster.local");
    assert_eq!(address["port_value"], 50051);
    let filters = notes_block(&notes, "http_filters:");
    assert_eq!(
        filters["http_filters"][0]["typed_config"]["failure_mode_allow"],
        false
    );

    // A real configuration: no warning; a rendered policy is named instead of printed.
    let notes = install_notes(&["-f", &ci("istio").display().to_string()]);
    assert!(!notes.contains("WARNING"));
    assert!(notes.contains("this release rendered one:\norders/t-fedauthz"));
}

#[test]
fn notes_print_an_upstream_tls_context_when_the_grpc_listener_speaks_tls() {
    let cluster_of = |notes: &str| notes_block(notes, "clusters:")["clusters"][0].clone();
    let fqdn = "t-fedauthz.authz.svc.cluster.local";

    // Plaintext by default: no transport socket.
    assert!(
        cluster_of(&install_notes(&[]))
            .get("transport_socket")
            .is_none()
    );

    // mTLS: the server is verified by name, Envoy presents its client certificate.
    let notes = install_notes(&["-f", &ci("tls").display().to_string()]);
    assert!(
        notes.contains("spiffe://cluster.local/ns/gateways/sa/envoy"),
        "NOTES name the identity Envoy's certificate needs:\n{notes}"
    );
    let cluster = cluster_of(&notes);
    let socket = &cluster["transport_socket"];
    assert_eq!(socket["name"], "envoy.transport_sockets.tls");
    let context = &socket["typed_config"];
    assert_eq!(
        context["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    assert_eq!(context["sni"], fqdn);
    let common = &context["common_tls_context"];
    assert_eq!(common["alpn_protocols"], json!(["h2"]));
    let validation = &common["validation_context"];
    assert!(validation["trusted_ca"]["filename"].is_string());
    assert_eq!(
        validation["match_typed_subject_alt_names"],
        json!([{"san_type": "DNS", "matcher": {"exact": fqdn}}])
    );
    let client = &common["tls_certificates"][0];
    assert!(client["certificate_chain"]["filename"].is_string());
    assert!(client["private_key"]["filename"].is_string());
    // Still an HTTP/2 cluster to the same address.
    assert!(
        cluster["typed_extension_protocol_options"]
            .to_string()
            .contains("http2_protocol_options")
    );
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["address"], fqdn);
    assert!(notes.contains("DestinationRule"));

    // TLS without client certificates: no tls_certificates.
    let notes = install_notes(&[
        "--set",
        "tls.grpc.enabled=true,tls.grpc.secretName=grpc-tls",
    ]);
    let cluster = cluster_of(&notes);
    let common = &cluster["transport_socket"]["typed_config"]["common_tls_context"];
    assert!(common["validation_context"].is_object());
    assert!(common.get("tls_certificates").is_none());
}

/// Envoy itself accepts the cluster and filter NOTES print for a TLS listener: they are put
/// into a bootstrap (the `/etc/envoy/tls/` files written as generated certificates) and run
/// through `envoy --mode validate`.
#[cfg(feature = "envoy-e2e")]
#[test]
fn envoy_validates_the_tls_cluster_notes_print() {
    let envoy = std::env::var_os("FEDAUTHZ_ENVOY").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/envoy"),
        PathBuf::from,
    );
    assert!(envoy.is_file(), "no Envoy at {}", envoy.display());
    let notes = install_notes(&["-f", &ci("tls").display().to_string()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = common::pki::Ca::new("envoy test CA");
    let client = ca.leaf(&["spiffe://cluster.local/ns/gateways/sa/envoy"]);
    std::fs::write(dir.path().join("fedauthz-ca.crt"), &ca.pem).expect("CA");
    std::fs::write(dir.path().join("client.crt"), &client.cert_pem).expect("cert");
    std::fs::write(dir.path().join("client.key"), &client.key_pem).expect("key");
    let relocated = |block: Value| -> Value {
        let text = block
            .to_string()
            .replace("/etc/envoy/tls/", &format!("{}/", dir.path().display()));
        serde_json::from_str(&text).expect("JSON")
    };
    let clusters = relocated(notes_block(&notes, "clusters:"));
    let filters = relocated(notes_block(&notes, "http_filters:"));
    let mut http_filters = filters["http_filters"].as_array().expect("filters").clone();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let bootstrap = json!({
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
                        }]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters["clusters"]
        }
    });
    let file = dir.path().join("envoy.yaml");
    std::fs::write(&file, bootstrap.to_string()).expect("write bootstrap");
    let output = run(Command::new(&envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&file));
    assert!(
        output.status.success(),
        "Envoy refuses the NOTES cluster:\n{}{}\n{bootstrap:#}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Renders the minimal values on free loopback ports, then runs the binary with exactly the
/// container's args and the ConfigMap's file, `/etc/fedauthz/` mapped to a temp dir holding the
/// Secret's files, and checks the probes and /metrics on the rendered ports and paths and an
/// allow and two denials over gRPC.
#[tokio::test]
async fn the_rendered_configmap_and_args_run_the_real_binary() {
    let (grpc_port, admin_port) = (free_port(), free_port());
    let r = Rendering::new(&[
        "-f",
        &ci("minimal").display().to_string(),
        "--set",
        &format!("ports.grpc={grpc_port}"),
        "--set",
        &format!("ports.admin={admin_port}"),
        "--set",
        "listenAddress=127.0.0.1",
    ]);
    let root = tempfile::tempdir().expect("tempdir");
    let mapped =
        |path: &str| path.replace("/etc/fedauthz/", &format!("{}/", root.path().display()));

    // The pod's filesystem: the ConfigMap and the Secret, mounted where the Deployment says.
    let container = r.container();
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of volume {volume}"))
            .to_owned()
    };
    let config_dir = PathBuf::from(mapped(&mount_of("config")));
    let secrets_dir = PathBuf::from(mapped(&mount_of("secrets")));
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::create_dir_all(&secrets_dir).expect("secrets dir");
    let config_text = r.get("ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml");
    std::fs::write(config_dir.join("config.yaml"), mapped(config_text)).expect("write config");
    let issuer = common::TestIssuer::rs256("https://issuer.ci.example", "ci-1");
    std::fs::write(secrets_dir.join("jwks.json"), issuer.jwks().to_string()).expect("jwks");

    let args: Vec<String> = args_of(container).iter().map(|a| mapped(a)).collect();
    let mut server = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(&args)
            .env_clear()
            .envs(container["env"].as_array().expect("env").iter().map(|e| {
                (
                    e["name"].as_str().expect("name"),
                    e["value"].as_str().unwrap_or(""),
                )
            })),
    );
    server.wait_for("fedauthz listening");

    // Probes exactly as the kubelet would send them: path and port name from the Deployment.
    let port_named = |name: &str| {
        container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], port_named("http-admin")));
    assert_eq!(admin.port(), admin_port);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["port"], "http-admin");
        let path = get["path"].as_str().expect("probe path");
        let mut status = 0;
        for _ in 0..100 {
            status = common::http_get(admin, path).await.0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "{probe} {path}: {}", server.stderr());
    }
    let (status, metrics) = common::http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("fedauthz_"), "{metrics}");

    let grpc = SocketAddr::from(([127, 0, 0, 1], port_named("grpc")));
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to the rendered gRPC port");
    let mut claims = issuer.claims("alice", "orders-api");
    claims.insert("scope".into(), json!("orders:read"));
    let allowed = client
        .check(common::bearer(&issuer.sign(&claims, json!({}))))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        common::denied_status(&allowed),
        0,
        "allow: {}",
        common::reason(&allowed)
    );
    let missing = client
        .check(common::check_request(&[]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(common::denied_status(&missing), 401);
    assert_eq!(common::reason(&missing), "token_missing");
    claims.insert("scope".into(), json!("orders:write"));
    let forbidden = client
        .check(common::bearer(&issuer.sign(&claims, json!({}))))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(common::denied_status(&forbidden), 403);

    // JSON logs, as the chart asks for.
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.stderr();
    let first = log.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<Value>(first).is_ok(),
        "not JSON: {first}"
    );
}

/// Renders the TLS values on free loopback ports, writes generated certificates where the
/// Deployment mounts the three TLS Secrets (`/etc/fedauthz/` mapped to a temp dir), and runs
/// the binary with the container's args: check-config accepts the files without a warning,
/// the probes answer over HTTPS with the scheme the Deployment names, gRPC takes the
/// allow-listed client certificate and refuses others, and a renewed Secret (the kubelet's
/// `..data` swap) is served without a restart. The chart's paths are the binary's.
#[tokio::test]
async fn the_rendered_tls_mounts_and_config_serve_tls_with_the_real_binary() {
    let (grpc_port, admin_port) = (free_port(), free_port());
    let r = Rendering::new(&[
        "-f",
        &ci("tls").display().to_string(),
        "--set",
        &format!("ports.grpc={grpc_port}"),
        "--set",
        &format!("ports.admin={admin_port}"),
        "--set",
        "listenAddress=127.0.0.1",
    ]);
    let root = tempfile::tempdir().expect("tempdir");
    let mapped =
        |path: &str| path.replace("/etc/fedauthz/", &format!("{}/", root.path().display()));
    let container = r.container();
    let mount_dir = |volume: &str| {
        let path = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of volume {volume}"));
        PathBuf::from(mapped(path))
    };
    let dir_of = |volume: &str| {
        let dir = mount_dir(volume);
        std::fs::create_dir_all(&dir).expect("mount dir");
        dir
    };

    // The Secrets' files, as cert-manager would write them; the gRPC one laid out as the
    // kubelet mounts a whole Secret (`tls.crt -> ..data/tls.crt`), so it can be renewed below.
    let server_ca = common::pki::Ca::new("fedauthz server CA");
    let server = server_ca.leaf(&["localhost", "127.0.0.1"]);
    let pair = |leaf: &common::pki::Leaf| {
        [
            ("tls.crt", leaf.cert_pem.clone().into_bytes()),
            ("tls.key", leaf.key_pem.clone().into_bytes()),
        ]
    };
    let files = pair(&server);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let mut grpc_secret = KubeletDir::create(&mount_dir("tls-grpc"), &files);
    server.write(&dir_of("tls-admin"));
    let client_ca = common::pki::Ca::new("gateway client CA");
    std::fs::write(dir_of("tls-grpc-client-ca").join("ca.crt"), &client_ca.pem).expect("CA");
    let envoy = client_ca.leaf(&["spiffe://cluster.local/ns/gateways/sa/envoy"]);
    let stranger = client_ca.leaf(&["spiffe://cluster.local/ns/other/sa/default"]);
    let issuer = common::TestIssuer::rs256("https://issuer.ci.example", "ci-1");
    std::fs::write(
        dir_of("secrets").join("jwks.json"),
        issuer.jwks().to_string(),
    )
    .expect("jwks");
    let config_file = dir_of("config").join("config.yaml");
    let config_text = r.get("ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml");
    std::fs::write(&config_file, mapped(config_text)).expect("write config");

    // check-config loads every TLS file the chart names, and has nothing to warn about.
    let check = run(Command::new(env!("CARGO_BIN_EXE_fedauthz"))
        .arg("check-config")
        .arg(&config_file));
    assert!(
        check.status.success(),
        "check-config: {}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    assert!(
        !text(&check.stderr).contains("warning"),
        "{}",
        text(&check.stderr)
    );

    let args: Vec<String> = args_of(container).iter().map(|a| mapped(a)).collect();
    let mut process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_fedauthz"))
            .args(&args)
            .env_clear()
            .env("RUST_LOG", "info"),
    );
    process.wait_for("fedauthz listening");

    // The probes, with the scheme, path and port the Deployment gives them, over HTTP/1.1 as
    // the kubelet sends them (ALPN http/1.1 only). This client verifies; the kubelet does not.
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).expect("CA PEM"),
        )
        .http1_only()
        .build()
        .expect("client");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
        assert_eq!(get["port"], "http-admin", "{probe}");
        let url = format!(
            "https://127.0.0.1:{admin_port}{}",
            get["path"].as_str().expect("path")
        );
        let mut status = 0;
        for _ in 0..100 {
            status = https
                .get(&url)
                .send()
                .await
                .map_or(0, |response| response.status().as_u16());
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "{probe} {url}: {}", process.stderr());
    }
    let metrics = https
        .get(format!("https://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("metrics over HTTPS");
    assert_eq!(metrics.status(), 200);
    // Plain HTTP gets no answer from the TLS admin listener.
    let plain = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert_ne!(
        tokio::time::timeout(Duration::from_secs(5), common::http_get(plain, "/healthz"))
            .await
            .map_or(0, |(status, _)| status),
        200
    );

    // gRPC: the allow-listed identity is answered, another certificate of the same CA and a
    // caller without one are refused in the handshake.
    let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
    let mut claims = issuer.claims("alice", "orders-api");
    claims.insert("scope".into(), json!("orders:read"));
    let token = issuer.sign(&claims, json!({}));
    let mut allowed = common::pki::TlsClient::new(grpc, &server_ca.pem, Some(&envoy));
    let response = allowed
        .client
        .check(common::bearer(&token))
        .await
        .expect("check over mTLS")
        .into_inner();
    assert_eq!(
        common::denied_status(&response),
        0,
        "allow: {}",
        common::reason(&response)
    );
    assert_eq!(
        allowed.last_server_certificate().as_deref(),
        Some(server.der.as_slice()),
        "the certificate of the mounted Secret"
    );
    // cert-manager renews the Secret and the kubelet swaps `..data`: new connections get the
    // new certificate, without a restart.
    let renewed = server_ca.leaf(&["localhost", "127.0.0.1"]);
    let files = pair(&renewed);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    grpc_secret.swap(&files);
    let mut served = None;
    for _ in 0..100 {
        let mut fresh = common::pki::TlsClient::new(grpc, &server_ca.pem, Some(&envoy));
        let answered = fresh.client.check(common::bearer(&token)).await.is_ok();
        served = fresh.last_server_certificate();
        if answered && served.as_deref() == Some(renewed.der.as_slice()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served.as_deref(),
        Some(renewed.der.as_slice()),
        "the renewed certificate is served: {}",
        process.stderr()
    );

    for (name, client) in [
        ("not allow-listed", Some(&stranger)),
        ("no certificate", None),
    ] {
        let mut refused = common::pki::TlsClient::new(grpc, &server_ca.pem, client);
        assert!(
            refused.client.check(common::bearer(&token)).await.is_err(),
            "{name}: answered"
        );
    }

    process.signal("TERM");
    assert!(process.wait_exit().success());
}

#[test]
fn every_ci_rendering_holds_a_config_the_binary_accepts() {
    for values in ci_values() {
        let r = Rendering::new(&["-f", &values.display().to_string()]);
        let Some(configmap) =
            r.0.iter()
                .find(|d| d["kind"] == "ConfigMap" && d["data"].get("config.yaml").is_some())
        else {
            continue; // existingConfigMap
        };
        let text = configmap["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml");
        if let Err(err) = fedauthz::config::parse_yaml(text, "config.yaml") {
            panic!(
                "{}: the rendered config is refused:\n{err}",
                values.display()
            );
        }
    }
    let r = Rendering::new(&[]);
    let text = r.get("ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml");
    fedauthz::config::parse_yaml(text, "config.yaml").expect("the default config loads");
}

/// The chart runs the image as the Dockerfile builds it: same entrypoint (not overridden), the
/// same config file, user, ports, mount points and writable paths.
#[test]
fn the_chart_and_the_dockerfile_agree_on_the_runtime_contract() {
    let image = common::image::contract();
    let r = Rendering::new(&["-f", &ci("minimal").display().to_string()]);
    let container = r.container();
    assert!(
        container.get("command").is_none(),
        "the chart keeps the image's ENTRYPOINT"
    );
    let args = args_of(container);
    assert_eq!(
        args[..image.cmd.len()],
        image.cmd[..],
        "the chart's args start with the image's CMD"
    );

    let pod_security = &r.pod()["securityContext"];
    let security = &container["securityContext"];
    for context in [pod_security, security] {
        assert_eq!(context["runAsUser"], image.user.uid);
        assert_eq!(context["runAsGroup"], image.user.gid);
    }
    let ports: Vec<u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    let image_ports: Vec<u64> = image.ports.iter().map(|p| u64::from(*p)).collect();
    assert_eq!(ports, image_ports, "gRPC then admin");

    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let mount = |path: &std::path::Path| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path.display().to_string())
            .unwrap_or_else(|| panic!("the chart mounts nothing at {}", path.display()))
    };
    assert_eq!(mount(&image.config_dir)["readOnly"], true);
    assert_eq!(mount(&image.secrets_dir)["readOnly"], true);
    assert!(image.config_file.starts_with(&image.config_dir));
    let writable: Vec<String> = mounts
        .iter()
        .filter(|m| m["readOnly"] != true)
        .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
        .collect();
    let image_writable: Vec<String> = image
        .writable_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(writable, image_writable, "the only writable paths");
    assert_eq!(security["readOnlyRootFilesystem"], true);
}
