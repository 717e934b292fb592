//! The container image's runtime contract, read from the repository's `Dockerfile`, and a way
//! to run the image's root filesystem (laid out by `scripts/image-rootfs`) as a container
//! runtime with a read-only root would: tests/container.rs checks both, tests/helm.rs compares
//! the chart's Deployment with [`contract`].
//!
//! No container engine is available where these tests run, so [`Sandbox`] does a runtime's part
//! with util-linux tools as root: a private mount (and PID) namespace, the root filesystem
//! bind-mounted read-only, read-only binds for the mounted volumes, a tmpfs for every writable
//! path, then `nsenter --root` into it as the image's user without capabilities and with
//! `no_new_privs`. Depends only on std and serde_json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's Dockerfile.
pub fn dockerfile_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")
}

/// One instruction: its keyword (upper case) and the rest of the line, continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// A build stage: the `FROM` image, its `AS` name, and its instructions after `FROM`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub from: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The instructions with `keyword`.
    pub fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a Instruction> + use<'a> {
        let keyword = keyword.to_owned();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    /// The last instruction with `keyword` (the one that takes effect), if any.
    pub fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }

    /// `ARG NAME=default` of this stage: the default.
    pub fn arg_default(&self, name: &str) -> Option<String> {
        self.all("ARG").find_map(|arg| {
            let (key, value) = arg.args.split_once('=')?;
            (key.trim() == name).then(|| unquote(value.trim()))
        })
    }

    /// Every `LABEL key=value` of this stage.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for label in self.all("LABEL") {
            for word in words(&label.args) {
                let (key, value) = word
                    .split_once('=')
                    .unwrap_or_else(|| panic!("LABEL word {word:?} is not key=value"));
                labels.insert(key.to_owned(), unquote(value));
            }
        }
        labels
    }

    /// `COPY` instructions of this stage as (flags, sources, destination).
    pub fn copies(&self) -> Vec<Copy> {
        self.all("COPY")
            .map(|copy| {
                let words = words(&copy.args);
                let (flags, rest): (Vec<_>, Vec<_>) =
                    words.into_iter().partition(|w| w.starts_with("--"));
                let (destination, sources) = rest
                    .split_last()
                    .unwrap_or_else(|| panic!("COPY {:?} has no destination", copy.args));
                Copy {
                    flags,
                    sources: sources.to_vec(),
                    destination: destination.clone(),
                }
            })
            .collect()
    }
}

/// One `COPY`.
#[derive(Debug, Clone)]
pub struct Copy {
    pub flags: Vec<String>,
    pub sources: Vec<String>,
    pub destination: String,
}

/// A parsed Dockerfile: its stages in order (the last is the image).
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Parses Dockerfile text: comment lines (parser directives included) are dropped,
    /// backslash continuations joined, and instructions grouped by `FROM`.
    pub fn parse(text: &str) -> Self {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        assert!(
            current.is_empty(),
            "the Dockerfile ends inside a continuation"
        );
        let mut stages: Vec<Stage> = Vec::new();
        for line in logical {
            let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
            if keyword == "FROM" {
                let words: Vec<&str> = args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (from, name) = match words.as_slice() {
                    [from] => (*from, None),
                    [from, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*from, Some((*name).to_owned()))
                    }
                    _ => panic!("FROM {args:?} is not `FROM image [AS name]`"),
                };
                stages.push(Stage {
                    from: from.to_owned(),
                    name,
                    instructions: Vec::new(),
                });
            } else {
                stages
                    .last_mut()
                    .unwrap_or_else(|| panic!("{keyword} before the first FROM"))
                    .instructions
                    .push(Instruction { keyword, args });
            }
        }
        Self { stages }
    }

    /// The repository's Dockerfile.
    pub fn read() -> Self {
        let path = dockerfile_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        Self::parse(&text)
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("the Dockerfile has no stage named {name}"))
    }

    /// The last stage: what the image is.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("the Dockerfile has no FROM")
    }
}

/// The numeric user the image runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: u32,
    pub gid: u32,
}

/// What the image promises its runtime (and the chart relies on).
#[derive(Debug, Clone)]
pub struct ImageContract {
    /// `ENTRYPOINT`, exec form.
    pub entrypoint: Vec<String>,
    /// `CMD`, exec form: the default arguments.
    pub cmd: Vec<String>,
    /// `USER uid:gid`.
    pub user: ImageUser,
    /// `EXPOSE`d TCP ports, in order: gRPC, then admin.
    pub ports: Vec<u16>,
    /// The configuration file `CMD` passes with `--config`.
    pub config_file: PathBuf,
    /// Its directory: where the ConfigMap is mounted (a directory, so updates arrive).
    pub config_dir: PathBuf,
    /// Where Secrets are mounted (label `fedauthz.contract.secrets-dir`).
    pub secrets_dir: PathBuf,
    /// The only paths that must be writable (label `fedauthz.contract.writable-paths`,
    /// space-separated): the rest of the root filesystem may be read-only.
    pub writable_paths: Vec<PathBuf>,
    /// The runtime stage's `FROM`.
    pub base: String,
}

impl ImageContract {
    /// `ENTRYPOINT` followed by `CMD`: the process the image runs by default.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// The contract of the repository's Dockerfile (panics, naming the instruction, when the
/// Dockerfile does not state one part of it).
pub fn contract() -> ImageContract {
    contract_of(&Dockerfile::read())
}

/// The contract of a parsed Dockerfile.
pub fn contract_of(dockerfile: &Dockerfile) -> ImageContract {
    let runtime = dockerfile.runtime();
    let exec_form = |keyword: &str| -> Vec<String> {
        let instruction = runtime
            .last(keyword)
            .unwrap_or_else(|| panic!("the runtime stage has no {keyword}"));
        serde_json::from_str(&instruction.args).unwrap_or_else(|err| {
            panic!(
                "{keyword} {} is not exec form (a JSON array; there is no shell): {err}",
                instruction.args
            )
        })
    };
    let entrypoint = exec_form("ENTRYPOINT");
    let cmd = exec_form("CMD");
    let user = runtime.last("USER").expect("the runtime stage has no USER");
    let (uid, gid) = user
        .args
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .unwrap_or_else(|| panic!("USER {} is not numeric uid:gid", user.args));
    let ports = runtime
        .all("EXPOSE")
        .flat_map(|e| e.args.split_whitespace())
        .map(|port| {
            port.strip_suffix("/tcp")
                .unwrap_or(port)
                .parse()
                .unwrap_or_else(|_| panic!("EXPOSE {port} is not a TCP port"))
        })
        .collect();
    let config_file = cmd
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| cmd.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("CMD {cmd:?} passes no --config FILE"));
    let config_dir = config_file
        .parent()
        .expect("the config file has a directory")
        .to_owned();
    let labels = runtime.labels();
    let label = |key: &str| {
        labels
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("the runtime stage has no LABEL {key}"))
    };
    ImageContract {
        entrypoint,
        cmd,
        user: ImageUser { uid, gid },
        ports,
        config_file,
        config_dir,
        secrets_dir: PathBuf::from(label("fedauthz.contract.secrets-dir")),
        writable_paths: label("fedauthz.contract.writable-paths")
            .split_whitespace()
            .map(PathBuf::from)
            .collect(),
        base: runtime.from.clone(),
    }
}

/// The environment the image's process gets from the base image and a runtime: distroless'
/// `PATH` and `SSL_CERT_FILE`, and `HOME` from `/etc/passwd` for the image's user, as Docker
/// and containerd set it (it is on the read-only root, so unwritable).
pub fn image_env() -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
        ("HOME", "/home/nonroot"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The working directory of distroless' `:nonroot` images.
pub const WORKDIR: &str = "/home/nonroot";

/// Lays out the image's root filesystem in `dir` (which must not exist) with
/// `scripts/image-rootfs --binary BINARY`; returns its canonical path.
pub fn rootfs(binary: &Path, dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image-rootfs");
    let output = Command::new(&script)
        .arg("--binary")
        .arg(binary)
        .arg(dir)
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", script.display()));
    assert!(
        output.status.success(),
        "scripts/image-rootfs failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.canonicalize().expect("the rootfs exists")
}

/// A directory of the host mounted read-only at a path inside the container (a ConfigMap or
/// Secret volume; Kubernetes mounts both read-only).
#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub host: PathBuf,
    pub container: PathBuf,
}

/// How to run a command in the image's root filesystem the way a container runtime with
/// `readOnlyRootFilesystem: true` would.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The root filesystem (from [`rootfs`]).
    pub rootfs: PathBuf,
    /// Read-only volume mounts; each mount point must exist in the rootfs.
    pub volumes: Vec<VolumeMount>,
    /// Paths that get a fresh writable tmpfs (an emptyDir); each must exist in the rootfs.
    pub writable: Vec<PathBuf>,
    /// The user to run as.
    pub user: ImageUser,
}

/// Runs as `sh -c SANDBOX_SCRIPT sh ROOTFS UID GID WORKDIR NVOL [HOST CONTAINER]... NTMP [PATH]... --
/// ARGV...` inside `unshare --mount --pid --fork`. Mount points of the kernel filesystems are
/// created the way a runtime creates them; the volume and writable mount points are not: the
/// image must have them.
const SANDBOX_SCRIPT: &str = r#"set -eu
root="$1"; uid="$2"; gid="$3"; workdir="$4"; shift 4
mkdir -p "$root/proc" "$root/dev" "$root/sys"
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
n="$1"; shift
while [ "$n" -gt 0 ]; do
  [ -d "$root$2" ] || { echo "sandbox: the image has no mount point $2" >&2; exit 1; }
  mount --bind "$1" "$root$2"
  mount -o remount,bind,ro "$root$2"
  shift 2; n=$((n - 1))
done
n="$1"; shift
while [ "$n" -gt 0 ]; do
  [ -d "$root$1" ] || { echo "sandbox: the image has no mount point $1" >&2; exit 1; }
  mount -t tmpfs -o rw,nosuid,nodev,mode=1777 tmpfs "$root$1"
  shift; n=$((n - 1))
done
[ "$1" = -- ] || { echo "sandbox: bad arguments" >&2; exit 1; }
shift
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=0755 tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  : > "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
echo "sandbox: running as $uid:$gid in $root" >&2
exec setpriv --no-new-privs --inh-caps=-all \
  --bounding-set=-all,+setuid,+setgid,+sys_chroot,+dac_read_search -- \
  nsenter --root="$root" --wd="$root$workdir" -S "$uid" -G "$gid" -- "$@"
"#;

impl Sandbox {
    /// The command that runs `argv` (e.g. [`ImageContract::argv`]) in the sandbox with only
    /// `env` set. It becomes PID 1 of its own PID namespace, as in a container; the spawned
    /// process is `unshare`, its parent (find PID 1 with [`child_of`]). Needs root.
    pub fn command(&self, argv: &[String], env: &[(String, String)]) -> Command {
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--",
                "sh",
                "-c",
                SANDBOX_SCRIPT,
                "sh",
            ])
            .arg(&self.rootfs)
            .arg(self.user.uid.to_string())
            .arg(self.user.gid.to_string())
            .arg(WORKDIR)
            .arg(self.volumes.len().to_string());
        for volume in &self.volumes {
            command.arg(&volume.host).arg(&volume.container);
        }
        command.arg(self.writable.len().to_string());
        command.args(&self.writable).arg("--").args(argv);
        command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// The command that runs `argv` as `user` in the mount namespace and root of the running
/// process `pid` (a second process in the same container, as `kubectl exec` would start).
pub fn exec_in(pid: u32, user: ImageUser, argv: &[String], env: &[(String, String)]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg("--target")
        .arg(pid.to_string())
        .args(["--mount", "--root", "--wd", "-S"])
        .arg(user.uid.to_string())
        .arg("-G")
        .arg(user.gid.to_string())
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// The one child process of `parent` (scans /proc; the kernel here has no
/// /proc/PID/task/TID/children).
pub fn child_of(parent: u32) -> u32 {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    match children.as_slice() {
        [child] => *child,
        _ => panic!("process {parent} has children {children:?}, expected exactly one"),
    }
}

/// One line of /proc/PID/mountinfo: the mount point as the process sees it, the per-mount
/// options, and the filesystem type.
#[derive(Debug, Clone)]
pub struct Mount {
    pub point: String,
    pub options: Vec<String>,
    pub fstype: String,
}

impl Mount {
    /// Mounted read-write.
    pub fn writable(&self) -> bool {
        self.options.iter().any(|o| o == "rw")
    }
}

/// The mounts process `pid` sees (paths relative to its root).
pub fn mounts_of(pid: u32) -> Vec<Mount> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields
                .iter()
                .position(|f| *f == "-")
                .unwrap_or_else(|| panic!("{path}: no separator in {line:?}"));
            Mount {
                point: fields.get(4).expect("mount point").replace("\\040", " "),
                options: fields
                    .get(5)
                    .expect("mount options")
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                fstype: fields.get(separator + 1).expect("fstype").to_string(),
            }
        })
        .collect()
}

/// The value of `field` in /proc/PID/status (tabs kept between values).
pub fn status_field(pid: u32, field: &str) -> String {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{path} has no {field}"))
}

/// Splits on whitespace, keeping double-quoted runs (with their quotes) inside one word.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    assert!(!quoted, "unbalanced quotes in {text:?}");
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn unquote(value: &str) -> String {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .to_owned()
}
