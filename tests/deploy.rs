//! What we ship under deploy/ is consistent: every fedauthz config there loads, the Istio
//! manifests refer to each other correctly, and the Helm chart's schema and version follow the
//! code. (Envoy configs are validated by Envoy itself in tests/envoy.rs; the chart is rendered
//! and validated by the real Helm in tests/helm.rs.)

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()))
}

#[test]
fn every_example_config_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(deploy("examples")).expect("deploy/examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let config = fedauthz::config::load_file(&path)
            .unwrap_or_else(|err| panic!("{} is refused:\n{err}", path.display()));
        if let Err(errors) = fedauthz::keys::source::prepare(&config) {
            panic!("{}: {errors:?}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 1);
}

#[test]
fn the_istio_policy_names_the_registered_provider_and_fails_closed() {
    let mesh = &yaml_documents(&deploy("istio/mesh-config.yaml"))[0];
    let providers = mesh["meshConfig"]["extensionProviders"]
        .as_array()
        .expect("extensionProviders");
    let policy = yaml_documents(&deploy("istio/authorization-policy.yaml"))
        .into_iter()
        .find(|doc| doc["kind"] == "AuthorizationPolicy")
        .expect("an AuthorizationPolicy");
    assert_eq!(policy["apiVersion"], "security.istio.io/v1");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    let name = &policy["spec"]["provider"]["name"];
    let provider = providers
        .iter()
        .find(|p| &p["name"] == name)
        .unwrap_or_else(|| panic!("no extension provider named {name}"));
    let grpc = &provider["envoyExtAuthzGrpc"];
    assert_eq!(grpc["failOpen"], false);
    assert!(
        grpc["timeout"].is_string(),
        "set a timeout: Istio's default is 600 s"
    );
    assert!(grpc["port"].is_u64() && grpc["service"].is_string());
}

#[test]
fn the_chart_values_schema_is_generated_from_values_and_config_schema() {
    let path = common::chart::chart_dir().join("values.schema.json");
    let generated = common::chart::values_schema();
    if std::env::var_os("FEDAUTHZ_REGENERATE").is_some() {
        std::fs::write(&path, &generated).expect("write values.schema.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date (values.yaml or the config types changed): run \
         FEDAUTHZ_REGENERATE=1 cargo test --test deploy and commit the file",
        path.display()
    );
}

#[test]
fn the_chart_version_and_app_version_are_the_crate_version() {
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(common::chart::chart_dir().join("Chart.yaml"))
            .expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["version"], version, "Chart.yaml version");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    assert_eq!(chart["apiVersion"], "v2");
}

#[test]
fn docs_kubernetes_lists_every_chart_value() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes.md"))
            .expect("docs/kubernetes.md");
    let (_, table) = docs.split_once("## Values").expect("a Values section");
    let missing: Vec<_> = common::chart::value_paths()
        .into_iter()
        .filter(|path| !table.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/kubernetes.md ## Values does not list {missing:?}"
    );
    // And nothing it lists is gone from values.yaml.
    let known = common::chart::value_paths();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            assert!(
                known.iter().any(|k| k == name),
                "docs list `{name}`, which values.yaml does not have"
            );
        }
    }
}

/// rustls panics at first use when it finds two crypto providers and none was installed as
/// the default; fedauthz's TLS listeners and reqwest's key fetches must share aws-lc-rs, so
/// `ring` must never enter the shipped binary's dependency graph.
#[test]
fn the_binary_compiles_in_exactly_one_rustls_crypto_provider() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal,build"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crate_named = |name: &str| {
        tree.lines()
            .any(|line| line.split_whitespace().next() == Some(name))
    };
    assert!(crate_named("rustls"), "rustls is in the tree:\n{tree}");
    assert!(crate_named("aws-lc-rs"), "aws-lc-rs is the provider");
    assert!(
        !crate_named("ring"),
        "ring must not be compiled in:\n{tree}"
    );
}
