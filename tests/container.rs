//! The container image: the Dockerfile states the runtime contract agreed with the Helm chart
//! (entrypoint, default command, numeric user, ports, mounted paths, distroless base, a locked
//! release build), and the image's root filesystem, laid out on this host by
//! scripts/image-rootfs, serves as that user on a read-only root with only the contract's
//! writable paths writable. No container engine is available here: see tests/common/image.rs
//! for how the runtime's part is done, and docs/container-image.md.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::image::{self, Dockerfile, ImageContract, ImageUser, Sandbox, VolumeMount};
use common::process::Process;
use common::{Answer, JwksServer, TestIssuer, bearer, denied_status, http_get, reason};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_dockerfile_states_the_contract_agreed_with_the_chart() {
    let contract = image::contract();
    assert_eq!(contract.entrypoint, ["/usr/local/bin/fedauthz"]);
    assert_eq!(
        contract.cmd,
        ["serve", "--config", "/etc/fedauthz/config/config.yaml"]
    );
    assert_eq!(
        contract.user,
        ImageUser {
            uid: 65532,
            gid: 65532
        }
    );
    assert_eq!(contract.ports, [50051, 9191], "gRPC, then admin");
    assert_eq!(contract.base, "gcr.io/distroless/cc-debian12:nonroot");
    assert_eq!(contract.config_dir, Path::new("/etc/fedauthz/config"));
    assert_eq!(contract.secrets_dir, Path::new("/etc/fedauthz/secrets"));
    assert_eq!(contract.writable_paths, [PathBuf::from("/tmp")]);

    let dockerfile = Dockerfile::read();
    let runtime = dockerfile.runtime();
    for keyword in ["RUN", "SHELL", "HEALTHCHECK"] {
        assert!(
            runtime.last(keyword).is_none(),
            "the runtime image has no shell: no {keyword}"
        );
    }
    assert!(
        runtime.all("ENV").all(|env| !env.args.contains("HOME")),
        "HOME stays the base's (/home/nonroot, read-only), never a writable path that hides a dependency on it"
    );
}

#[test]
fn the_builder_is_a_locked_release_build_on_bookworm_with_the_openssl_headers() {
    let dockerfile = Dockerfile::read();
    let builder = dockerfile.stage("builder");

    let version = builder
        .from
        .strip_prefix("rust:")
        .and_then(|tag| tag.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("builder {} is not rust:X.Y-bookworm", builder.from));
    let number = |text: &str| -> (u32, u32) {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().expect("number"));
        (parts.next().expect("major"), parts.next().expect("minor"))
    };
    let minimum = number(env!("CARGO_PKG_RUST_VERSION"));
    assert!(
        number(version) >= minimum && number(version) >= (1, 85),
        "rust:{version} is older than rust-version {minimum:?} or edition 2024 (1.85)"
    );

    let runs: Vec<&str> = builder.all("RUN").map(|r| r.args.as_str()).collect();
    let build = runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("the builder runs cargo build");
    for flag in ["--release", "--locked"] {
        assert!(
            build.split_whitespace().any(|w| w == flag),
            "cargo build without {flag}"
        );
    }
    let install = runs
        .iter()
        .find(|r| r.contains("apt-get install"))
        .expect("the builder installs packages");
    for package in ["libssl-dev", "pkg-config"] {
        assert!(
            install.split_whitespace().any(|w| w == package),
            "josekit links OpenSSL: install {package}"
        );
    }
    for instruction in dockerfile.stages.iter().flat_map(|s| &s.instructions) {
        assert!(
            !instruction.args.contains("protoc") && !instruction.args.contains("protobuf"),
            "build.rs needs no protoc: {instruction:?}"
        );
    }
    assert!(
        std::fs::read_to_string(repo_file("build.rs"))
            .expect("build.rs")
            .contains("protox::compile"),
        "build.rs compiles the protos with protox"
    );

    // The dependency cache is target/ under the WORKDIR the build runs in.
    let workdir = builder
        .last("WORKDIR")
        .expect("builder WORKDIR")
        .args
        .clone();
    assert!(
        build.contains(&format!("--mount=type=cache,target={workdir}/target")),
        "target/ ({workdir}/target) is a cache mount: {build}"
    );

    // The binary lands where ENTRYPOINT runs it, the mount points where the contract puts them.
    let contract = image::contract();
    let entrypoint = &contract.entrypoint[0];
    assert!(
        build.contains(&format!(
            "install -D -m 0755 target/release/fedauthz /out{entrypoint}"
        )),
        "{build}"
    );
    for dir in [&contract.config_dir, &contract.secrets_dir] {
        assert!(
            build.contains(&format!("/out{}", dir.display())),
            "the builder creates the mount point {}",
            dir.display()
        );
    }
    let copies = dockerfile.runtime().copies();
    for (source, destination) in [
        (format!("/out{entrypoint}"), entrypoint.clone()),
        ("/out/etc/fedauthz".to_owned(), "/etc/fedauthz".to_owned()),
    ] {
        assert!(
            copies.iter().any(|c| c.flags == ["--from=builder"]
                && c.sources == [source.clone()]
                && c.destination == destination),
            "the runtime stage copies {source} to {destination}: {copies:?}"
        );
    }
}

#[test]
fn the_image_labels_name_its_license_version_and_source() {
    let dockerfile = Dockerfile::read();
    let runtime = dockerfile.runtime();
    let labels = runtime.labels();
    assert_eq!(
        labels
            .get("org.opencontainers.image.licenses")
            .map(String::as_str),
        Some(env!("CARGO_PKG_LICENSE"))
    );
    assert_eq!(
        labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some("${VERSION}")
    );
    assert_eq!(
        runtime.arg_default("VERSION").as_deref(),
        Some(env!("CARGO_PKG_VERSION")),
        "ARG VERSION defaults to Cargo.toml's version"
    );
    assert_eq!(
        labels
            .get("org.opencontainers.image.source")
            .map(String::as_str),
        Some("${SOURCE_URL}")
    );
}

#[test]
fn the_build_context_is_exactly_what_the_builder_copies() {
    let text = std::fs::read_to_string(repo_file(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        "an allow-list: exclude everything first"
    );
    let mut allowed: Vec<&str> = patterns
        .iter()
        .skip(1)
        .map(|p| {
            p.strip_prefix('!')
                .unwrap_or_else(|| panic!("{p}: after `*` only ! lines"))
        })
        .collect();
    allowed.sort_unstable();

    let dockerfile = Dockerfile::read();
    let mut copied: Vec<String> = dockerfile
        .stage("builder")
        .copies()
        .into_iter()
        .filter(|c| c.flags.is_empty())
        .flat_map(|c| c.sources)
        .collect();
    copied.sort_unstable();
    assert_eq!(allowed, copied);
    for input in &copied {
        assert!(repo_file(input).exists(), "the builder copies {input}");
    }
    for excluded in ["target", ".tools", ".git", "fuzz", ".fedauthz", "tests"] {
        assert!(
            !allowed.contains(&excluded),
            "{excluded} is sent to the builder"
        );
    }
}

#[test]
fn the_exposed_ports_are_the_configurations_default_ports() {
    let contract = image::contract();
    let config = fedauthz::config::parse_yaml(
        "issuers:\n  - id: a\n    issuer: https://a.example.com\n    keys: { jwks: { keys: [] } }\n    audiences: [x]\n",
        "defaults.yaml",
    )
    .expect("a minimal config");
    assert_eq!(
        [
            config.server.grpc_listen.port(),
            config.server.admin_listen.port()
        ],
        contract.ports.as_slice()
    );
}

/// Kills the container's PID 1 if the test ends before it exits (it outlives `unshare`:
/// changing its uid cleared the parent-death signal `--kill-child` set).
struct Reap(Option<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn assert_root() {
    let uid = image::status_field(std::process::id(), "Uid");
    assert!(
        uid.split_whitespace().next() == Some("0"),
        "this test plays the container runtime (mount namespaces, bind mounts, setuid) and \
         needs root, as scripts/test runs in CI; running as uid {uid}"
    );
}

/// Writes `text` to `path` with `mode`, owned by root and `gid`.
fn write_file(path: &Path, text: &str, mode: u32, gid: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(0), Some(gid)).expect("chown");
}

fn make_dir(path: &Path, mode: u32, gid: u32) {
    std::fs::create_dir(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(0), Some(gid)).expect("chown");
}

/// The port of `field` ("grpc" or "admin") from the JSON "fedauthz listening" line; asserts
/// the listener is bound to every address (a pod is reached on its IP).
fn listening_port(line: &str, field: &str) -> u16 {
    let log: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    let addr: std::net::SocketAddr = log["fields"][field]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {field} address in {line}"));
    assert!(addr.ip().is_unspecified(), "{field} listens on {addr}");
    addr.port()
}

/// Runs `fedauthz dev-token` (which creates its state directory and writes a key file there)
/// inside the running container as its user: the image's own binary probing what it may write.
fn probe_write(pid: u32, contract: &ImageContract, state_dir: Option<&str>) -> (bool, String) {
    let mut argv = vec![contract.entrypoint[0].clone(), "dev-token".to_owned()];
    if let Some(dir) = state_dir {
        argv.extend(["--state-dir".to_owned(), dir.to_owned()]);
    }
    let output = image::exec_in(pid, contract.user, &argv, &image::image_env())
        .output()
        .expect("run nsenter");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_as_its_user_on_a_read_only_root_with_only_tmp_writable() {
    assert_root();
    let contract = image::contract();
    let ImageUser { uid, gid } = contract.user;
    let work = tempfile::tempdir().expect("tempdir");

    // The image's root filesystem, as the runtime stage lays it out.
    let rootfs = image::rootfs(
        Path::new(env!("CARGO_BIN_EXE_fedauthz")),
        &work.path().join("rootfs"),
    );
    let inside = |path: &Path| rootfs.join(path.strip_prefix("/").expect("absolute"));
    let entrypoint = inside(Path::new(&contract.entrypoint[0]));
    let mode = std::fs::metadata(&entrypoint)
        .unwrap_or_else(|err| panic!("{}: {err}", entrypoint.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "{}", entrypoint.display());
    for dir in [&contract.config_dir, &contract.secrets_dir] {
        let entries = std::fs::read_dir(inside(dir))
            .unwrap_or_else(|err| panic!("the image has no mount point {}: {err}", dir.display()));
        assert_eq!(
            entries.count(),
            0,
            "{} is empty in the image",
            dir.display()
        );
    }
    for copy in Dockerfile::read().runtime().copies() {
        assert!(
            inside(Path::new(&copy.destination)).exists(),
            "scripts/image-rootfs lays out no {}",
            copy.destination
        );
    }
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"] {
        assert!(!rootfs.join(shell).exists(), "the image has {shell}");
    }

    // The volumes: a ConfigMap directory and a Secret directory, readable by the image's group.
    let issuer = TestIssuer::es256("https://idp.example.com", "k1");
    let jwks = JwksServer::start(Answer::Json(issuer.jwks().to_string())).await;
    let config_dir = work.path().join("configmap");
    let secrets_dir = work.path().join("secret");
    make_dir(&config_dir, 0o755, 0);
    make_dir(&secrets_dir, 0o750, gid);
    let ca_file = contract.secrets_dir.join("ca.pem");
    write_file(&secrets_dir.join("ca.pem"), &jwks.ca_pem, 0o440, gid);
    let config_name = contract.config_file.file_name().expect("config file name");
    write_file(
        &config_dir.join(config_name),
        &format!(
            "server: {{ grpc_listen: \"0.0.0.0:0\", admin_listen: \"0.0.0.0:0\" }}\nissuers:\n  - id: idp\n    issuer: {}\n    audiences: [orders]\n    keys: {{ jwks_uri: \"{}\", ca_file: \"{}\" }}\n",
            issuer.iss,
            jwks.url,
            ca_file.display()
        ),
        0o644,
        0,
    );

    let sandbox = Sandbox {
        rootfs: rootfs.clone(),
        volumes: vec![
            VolumeMount {
                host: config_dir,
                container: contract.config_dir.clone(),
            },
            VolumeMount {
                host: secrets_dir,
                container: contract.secrets_dir.clone(),
            },
        ],
        writable: contract.writable_paths.clone(),
        user: contract.user,
    };
    // The image's ENTRYPOINT and CMD as they are; JSON logs only so the test can read the
    // addresses the config's port 0 got.
    let mut env = image::image_env();
    env.push(("FEDAUTHZ_LOG_FORMAT".into(), "json".into()));
    let mut server = Process::spawn(
        sandbox
            .command(&contract.argv(), &env)
            .stdout(Stdio::null()),
    );
    let listening = server.wait_for("fedauthz listening");
    let pid = image::child_of(server.id());
    let mut reap = Reap(Some(pid));
    let grpc = format!("127.0.0.1:{}", listening_port(&listening, "grpc"));
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", listening_port(&listening, "admin"))
        .parse()
        .expect("admin addr");

    // Who and where the process is.
    let ids = |field: &str| image::status_field(pid, field);
    for field in ["Uid", "Gid"] {
        let want = if field == "Uid" { uid } else { gid }.to_string();
        assert!(
            ids(field).split_whitespace().all(|id| id == want),
            "{field}: {} (want {want} real, effective, saved, fs)",
            ids(field)
        );
    }
    assert_eq!(ids("Groups"), "", "no supplementary groups");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(ids(caps), "0000000000000000", "{caps}");
    }
    assert_eq!(ids("NoNewPrivs"), "1");
    assert_eq!(
        ids("NSpid").split_whitespace().last(),
        Some("1"),
        "PID 1 of its namespace"
    );
    let link = |name: &str| std::fs::read_link(format!("/proc/{pid}/{name}")).expect("readlink");
    assert_eq!(link("root"), rootfs);
    assert_eq!(link("exe"), entrypoint);
    assert_eq!(link("cwd"), inside(Path::new(image::WORKDIR)));

    // What it can write: its mounts as it sees them.
    let mounts = image::mounts_of(pid);
    let mount = |point: &Path| {
        mounts
            .iter()
            .rev()
            .find(|m| Path::new(&m.point) == point)
            .unwrap_or_else(|| panic!("nothing mounted at {}: {mounts:#?}", point.display()))
    };
    for point in [Path::new("/"), &contract.config_dir, &contract.secrets_dir] {
        assert!(!mount(point).writable(), "{} is writable", point.display());
    }
    for point in &contract.writable_paths {
        let tmp = mount(point);
        assert!(
            tmp.writable() && tmp.fstype == "tmpfs",
            "{}: {tmp:?}",
            point.display()
        );
    }
    // Besides those, only what every runtime provides: /proc and the root-owned (0755) /dev
    // with its device nodes.
    for m in mounts.iter().filter(|m| m.writable()) {
        let point = Path::new(&m.point);
        assert!(
            contract.writable_paths.iter().any(|w| w == point)
                || m.point == "/proc"
                || m.point == "/dev"
                || m.point.starts_with("/dev/"),
            "{} is mounted writable: {m:?}",
            m.point
        );
    }

    // The premise, tried by the image's own binary as the image's user in the same container:
    // creating anything outside the writable paths fails because the filesystem is read-only
    // (not merely for lack of permission: the same holds for its own HOME).
    let config_probe = contract.config_dir.join("probe");
    let secrets_probe = contract.secrets_dir.join("probe");
    for dir in [
        Some("/probe"),
        Some("/etc/probe"),
        Some("/usr/local/bin/probe"),
        config_probe.to_str(),
        secrets_probe.to_str(),
        None, // the default state dir: $HOME/.local/state/fedauthz
    ] {
        let (ok, stderr) = probe_write(pid, &contract, dir);
        assert!(
            !ok && stderr.contains("Read-only file system"),
            "writing {dir:?}: ok={ok} {stderr}"
        );
    }
    for writable in &contract.writable_paths {
        let dir = writable.join("probe");
        let (ok, stderr) = probe_write(pid, &contract, dir.to_str());
        assert!(ok, "writing {}: {stderr}", dir.display());
        let key = std::fs::metadata(
            Path::new(&format!("/proc/{pid}/root"))
                .join(dir.strip_prefix("/").expect("absolute"))
                .join("dev-signing-key.jwk.json"),
        )
        .expect("the probe's key file, seen in the container");
        assert_eq!((key.uid(), key.gid()), (uid, gid));
        assert_eq!(
            std::fs::read_dir(inside(writable)).expect("read").count(),
            0,
            "{} is a tmpfs of the container's own, not the image's directory",
            writable.display()
        );
    }

    // It serves: readiness once the keys came over HTTPS with the CA from the Secret.
    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(admin, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}: {body}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the container's gRPC port");
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1 Check")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut client = fedauthz::proto::auth::authorization_client::AuthorizationClient::new(channel);
    let token = issuer.token("alice", "orders");
    let allowed = client
        .check(bearer(&token))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(
        (reason(&allowed), denied_status(&allowed)),
        ("token_valid", 0)
    );
    let (signed, signature) = token.rsplit_once('.').expect("three segments");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    let denied = client
        .check(bearer(&forged))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(
        (reason(&denied), denied_status(&denied)),
        ("signature_invalid", 401)
    );
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"fedauthz_checks_total{transport="grpc",decision="allow",reason="token_valid",issuer="idp"} 1"#,
        r#"fedauthz_checks_total{transport="grpc",decision="deny",reason="signature_invalid",issuer="idp"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }

    // SIGTERM to PID 1 (what the kubelet sends) stops it cleanly.
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    server.wait_for("SIGTERM received");
    let exit = server.wait_exit();
    assert!(exit.success(), "{exit}\n{}", server.stderr());
    reap.0 = None;
}
