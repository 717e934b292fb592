//! A directory laid out the way the kubelet mounts a ConfigMap or Secret: each file a symlink
//! `name -> ..data/name`, `..data` a symlink to a timestamped directory. An update writes a new
//! timestamped directory, renames a new link over `..data` (atomic), then deletes the old one.

use std::path::{Path, PathBuf};

/// A kubelet-style mount.
pub struct KubeletDir {
    root: PathBuf,
    generation: usize,
}

impl KubeletDir {
    /// Creates the mount at `root` (which must not exist yet) holding `files`.
    pub fn create(root: &Path, files: &[(&str, &[u8])]) -> Self {
        std::fs::create_dir_all(root).expect("mount dir");
        let mut dir = Self {
            root: root.to_path_buf(),
            generation: 0,
        };
        dir.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name))
                .expect("file link");
        }
        dir
    }

    /// The path a container reads `name` at.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Publishes a new version of the files, as the kubelet does.
    pub fn swap(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let name = format!("..2026_12_02_12_00_00.{:09}", self.generation);
        let new = self.root.join(&name);
        std::fs::create_dir(&new).expect("timestamped dir");
        for (file, content) in files {
            std::fs::write(new.join(file), content).expect("write file");
        }
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("new ..data link");
        let old = std::fs::read_link(self.root.join("..data")).ok();
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(self.root.join(old)).expect("remove old dir");
        }
    }
}
