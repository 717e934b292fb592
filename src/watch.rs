//! Watching files for changes, as the server runtime needs it for the configuration, the files
//! it names (secrets, CA bundles) and key files (and, later, certificates).
//!
//! Kubernetes mounts a ConfigMap or Secret as a directory of symlinks into `..data`, itself a
//! symlink to a timestamped directory; an update writes a new directory and renames `..data`
//! over the old link. A watch on the file itself misses that (or dies with the old inode), so
//! this watches the *parent directories* (inotify through `notify`) and decides "changed" by a
//! content fingerprint (SHA-256 of the bytes read through the links, or "missing"): events that
//! change nothing cause nothing, and a swap is never mistaken for no change, whatever the
//! timestamps and sizes say. A periodic poll of the same fingerprints backs the events up
//! (inotify limits, filesystems without events, a watched directory deleted and recreated).
//!
//! Depends on nothing else in the crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// How long a burst of events (a kubelet swap is several) may last before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The content of a watched file: its SHA-256, or `None` when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(Option<[u8; 32]>);

impl Fingerprint {
    /// Reads `path` (through symlinks) and fingerprints what it holds now.
    pub async fn of(path: &Path) -> Self {
        Self(
            tokio::fs::read(path)
                .await
                .ok()
                .map(|bytes| openssl::sha::sha256(&bytes)),
        )
    }

    /// Whether the file could be read.
    pub fn exists(self) -> bool {
        self.0.is_some()
    }
}

/// How files new to a [`FileWatch`] start out.
#[derive(Debug, Clone, Copy)]
enum NewFiles {
    /// Fingerprinted now: only later changes count.
    ReadNow,
    /// Missing: being there already counts as a change.
    AsMissing,
}

/// A set of files whose content is watched.
pub struct FileWatch {
    files: Vec<(PathBuf, Fingerprint)>,
    events: Arc<Notify>,
    watcher: Option<RecommendedWatcher>,
    watched_dirs: BTreeSet<PathBuf>,
    poll: Duration,
}

impl FileWatch {
    /// Starts watching `paths` (fingerprinted now) with events where the platform has them and
    /// a poll every `poll` in any case.
    pub async fn new(paths: impl IntoIterator<Item = PathBuf>, poll: Duration) -> Self {
        let events = Arc::new(Notify::new());
        let sender = Arc::clone(&events);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Any event in a watched directory that may change content may be a swap: the
            // fingerprints decide.
            if event.is_ok_and(|event| may_change_content(&event)) {
                sender.notify_one();
            }
        })
        .inspect_err(|err| {
            warn!(error = %err, "cannot watch files for changes; polling them instead");
        })
        .ok();
        let mut watch = Self {
            files: Vec::new(),
            events,
            watcher,
            watched_dirs: BTreeSet::new(),
            poll,
        };
        watch.set_paths(paths).await;
        watch
    }

    /// Replaces the watched paths. Files watched before keep their last fingerprint (so a
    /// change that happened meanwhile is still reported); new ones are fingerprinted now.
    pub async fn set_paths(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.replace_paths(paths, NewFiles::ReadNow).await;
    }

    /// Like [`set_paths`](Self::set_paths), but new files count as missing until read, so one
    /// that is already there is reported as a change at once. For the files a refused
    /// configuration named: one that arrived while the refusal was being handled must still
    /// cause a retry (at most one extra attempt when it was there all along).
    pub async fn set_paths_new_as_missing(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        self.replace_paths(paths, NewFiles::AsMissing).await;
        self.events.notify_one();
    }

    async fn replace_paths(&mut self, paths: impl IntoIterator<Item = PathBuf>, new: NewFiles) {
        let mut files = Vec::new();
        for path in paths.into_iter().collect::<BTreeSet<_>>() {
            let known = self.files.iter().find(|(p, _)| *p == path).map(|(_, f)| *f);
            let fingerprint = match (known, new) {
                (Some(fingerprint), _) => fingerprint,
                (None, NewFiles::ReadNow) => Fingerprint::of(&path).await,
                (None, NewFiles::AsMissing) => Fingerprint(None),
            };
            files.push((path, fingerprint));
        }
        self.files = files;
        self.watch_dirs();
    }

    /// The watched paths.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// Waits until at least one watched file's content differs from the last one seen, and
    /// returns those files. Never returns for an empty set.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            tokio::select! {
                () = self.events.notified() => tokio::time::sleep(DEBOUNCE).await,
                () = tokio::time::sleep(self.poll) => {
                    // A watched directory may have been recreated since (its watch is gone).
                    self.watch_dirs();
                }
            }
            let mut changed = Vec::new();
            for (path, seen) in &mut self.files {
                let now = Fingerprint::of(path).await;
                if now != *seen {
                    *seen = now;
                    changed.push(path.clone());
                }
            }
            if !changed.is_empty() {
                return changed;
            }
        }
    }

    /// Watches the parent directory of every file (non-recursively), once each; directories
    /// that are not there yet are tried again on the next poll.
    fn watch_dirs(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: BTreeSet<PathBuf> = self
            .files
            .iter()
            .map(|(path, _)| parent_dir(path))
            .collect();
        for gone in self
            .watched_dirs
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = watcher.unwatch(&gone);
            self.watched_dirs.remove(&gone);
        }
        for dir in wanted {
            // Re-adding an existing inotify watch is cheap and revives one whose directory was
            // deleted and recreated.
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched_dirs.insert(dir);
                }
                Err(err) => {
                    debug!(dir = %dir.display(), error = %err, "cannot watch directory yet; polling");
                    self.watched_dirs.remove(&dir);
                }
            }
        }
    }
}

/// Whether an event may mean new content. Opens, reads and read-only closes never do, and
/// must be ignored: reading a file to fingerprint it causes them, so counting them would make
/// the watcher wake itself forever (inotify reports them for files directly in a watched
/// directory).
fn may_change_content(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    !matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Read
                | AccessKind::Open(_)
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out the way the kubelet mounts a ConfigMap.
    struct KubeletDir {
        root: tempfile::TempDir,
        generation: usize,
    }

    impl KubeletDir {
        fn new(files: &[(&str, &str)]) -> Self {
            let mut dir = Self {
                root: tempfile::tempdir().unwrap(),
                generation: 0,
            };
            dir.swap(files);
            for (name, _) in files {
                std::os::unix::fs::symlink(format!("..data/{name}"), dir.root.path().join(name))
                    .unwrap();
            }
            dir
        }

        fn path(&self, name: &str) -> PathBuf {
            self.root.path().join(name)
        }

        /// New timestamped directory, `..data` renamed over, old directory removed.
        fn swap(&mut self, files: &[(&str, &str)]) {
            self.generation += 1;
            let name = format!("..2026_12_02_12_00_00.{:09}", self.generation);
            let new = self.root.path().join(&name);
            std::fs::create_dir(&new).unwrap();
            for (file, content) in files {
                std::fs::write(new.join(file), content).unwrap();
            }
            let tmp = self.root.path().join("..data_tmp");
            std::os::unix::fs::symlink(&name, &tmp).unwrap();
            let old = std::fs::read_link(self.root.path().join("..data")).ok();
            std::fs::rename(&tmp, self.root.path().join("..data")).unwrap();
            if let Some(old) = old {
                std::fs::remove_dir_all(self.root.path().join(old)).unwrap();
            }
        }
    }

    async fn next_change(watch: &mut FileWatch) -> Vec<PathBuf> {
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("a change within 10 s")
    }

    async fn no_change(watch: &mut FileWatch, wait: Duration) {
        assert!(tokio::time::timeout(wait, watch.changed()).await.is_err());
    }

    #[tokio::test]
    async fn a_kubelet_swap_is_a_change_by_event_alone() {
        let mut dir = KubeletDir::new(&[("config.yaml", "a: 1\n")]);
        // A poll far beyond the test's timeout: only the directory event can report it.
        let mut watch = FileWatch::new([dir.path("config.yaml")], Duration::from_secs(3600)).await;
        dir.swap(&[("config.yaml", "a: 2\n")]);
        assert_eq!(next_change(&mut watch).await, [dir.path("config.yaml")]);
        // Swapping in the same bytes is no change.
        dir.swap(&[("config.yaml", "a: 2\n")]);
        no_change(&mut watch, Duration::from_millis(500)).await;
        dir.swap(&[("config.yaml", "a: 3\n")]);
        assert_eq!(next_change(&mut watch).await, [dir.path("config.yaml")]);
    }

    #[test]
    fn reads_are_not_changes_and_writes_are() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        use notify::{Event, EventKind};
        let quiet = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ];
        for kind in quiet {
            assert!(!may_change_content(&Event::new(kind)), "{kind:?}");
        }
        let loud = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Remove(notify::event::RemoveKind::Any),
            EventKind::Any,
        ];
        for kind in loud {
            assert!(may_change_content(&Event::new(kind)), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn reading_the_files_does_not_wake_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let watch = FileWatch::new([file.clone()], Duration::from_secs(3600)).await;
        // A read by anyone (the watch's own fingerprinting included) is an open/close event.
        let _ = std::fs::read(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), watch.events.notified())
                .await
                .is_err(),
            "a read woke the watch"
        );
    }

    #[tokio::test]
    async fn same_size_same_second_rewrites_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "aaaa").unwrap();
        let mut watch = FileWatch::new([file.clone()], Duration::from_millis(50)).await;
        std::fs::write(&file, "bbbb").unwrap();
        assert_eq!(next_change(&mut watch).await, [file]);
    }

    #[tokio::test]
    async fn missing_files_and_recreated_directories_are_seen_by_the_poll() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mount");
        let file = dir.join("ca.pem");
        let mut watch = FileWatch::new([file.clone()], Duration::from_millis(50)).await;
        assert!(!Fingerprint::of(&file).await.exists());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, "one").unwrap();
        assert_eq!(next_change(&mut watch).await, std::slice::from_ref(&file));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            next_change(&mut watch).await,
            std::slice::from_ref(&file),
            "gone is a change"
        );
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, "two").unwrap();
        assert_eq!(next_change(&mut watch).await, [file]);
    }

    #[tokio::test]
    async fn set_paths_keeps_the_last_fingerprint_of_known_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "1").unwrap();
        std::fs::write(&b, "1").unwrap();
        let mut watch = FileWatch::new([a.clone()], Duration::from_millis(50)).await;
        // `a` changes while the set is being replaced: still reported afterwards.
        std::fs::write(&a, "2").unwrap();
        watch.set_paths([a.clone(), b.clone()]).await;
        assert_eq!(watch.paths().count(), 2);
        assert_eq!(next_change(&mut watch).await, [a]);
        no_change(&mut watch, Duration::from_millis(300)).await;
    }
}
