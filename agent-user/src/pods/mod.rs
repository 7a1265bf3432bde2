//! Pod identity: which container and pod a process runs in. The kernel gives each event the
//! process's cgroup id; [`CgroupResolver`] turns it into the cgroup's path (the id is the
//! cgroup directory's kernfs handle) and [`cgroup_path`] reads the runtime's container id and
//! the kubelet's pod UID from it; [`kube`] keeps the node's pods (namespace, name, labels) by UID.
pub mod cgroup_path;
pub mod kube;
pub mod selection;

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use cgroup_path::{CgroupIdentity, Runtime};

use crate::model::{Container, Identity, PodRef};

/// The kernfs file-handle type of cgroup directories (include/linux/exportfs.h FILEID_KERNFS).
const FILEID_KERNFS: i32 = 0xfe;

/// cgroup id -> what its path says, with a cache (ids are not reused while the cgroup lives;
/// the cache is dropped when it grows large, so removed cgroups do not pile up).
pub struct CgroupResolver {
    /// The cgroup v2 mount, opened: the mount fd for open_by_handle_at.
    root: Option<(OwnedFd, PathBuf)>,
    cache: crate::model::FastMap<u64, Arc<CgroupIdentity>>,
    /// Lookups that failed (cgroup gone, no permission): events lack container identity.
    pub failures: Arc<AtomicU64>,
}

const CACHE_MAX: usize = 16_384;

impl CgroupResolver {
    /// Opens the cgroup v2 mount `root` (the one the probes attach at,
    /// [`crate::loader::cgroup2_root`]); without permission every lookup fails and is counted.
    pub fn open(root: &Path) -> CgroupResolver {
        let fd = nix::fcntl::open(
            root,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        let root = match fd {
            Ok(fd) => Some((fd, root.to_path_buf())),
            Err(e) => {
                tracing::warn!(
                    "cgroup v2 mount {}: {e}; events will lack container identity",
                    root.display()
                );
                None
            }
        };
        CgroupResolver {
            root,
            cache: crate::model::FastMap::default(),
            failures: Arc::default(),
        }
    }

    /// The path of cgroup `id` below the cgroup v2 root, as /proc/PID/cgroup writes it.
    pub fn path_of(&self, id: u64) -> std::io::Result<String> {
        let Some((mount, mount_path)) = &self.root else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the cgroup v2 mount could not be opened",
            ));
        };
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: [u8; 8],
        }
        let mut h = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `h` has the layout of a struct file_handle with 8 handle bytes.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&raw mut h).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_PATH,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let rel = full.strip_prefix(mount_path).unwrap_or(&full);
        Ok(format!("/{}", rel.display()).replace("//", "/"))
    }

    /// What cgroup `id`'s path says (empty for host processes and failed lookups).
    pub fn identity(&mut self, id: u64) -> Arc<CgroupIdentity> {
        if let Some(i) = self.cache.get(&id) {
            return i.clone();
        }
        let ident = match self.path_of(id) {
            Ok(path) => Arc::new(cgroup_path::parse(&path)),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("cgroup {id}: {e}");
                // Not cached: the next event of this cgroup tries again.
                return Arc::default();
            }
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(id, ident.clone());
        ident
    }
}

/// Pod identity options of `tether run`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// This node's name, in every event (`device.hostname`, `unmapped.tether.node`) and for
    /// listing its pods. Default: the host name. The DaemonSet sets TETHER_NODE_NAME from
    /// spec.nodeName.
    #[arg(long, value_name = "NAME", env = "TETHER_NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubernetes API server to watch this node's pods from (https://HOST:PORT), for pod
    /// namespace, name and labels in events and for `namespace`/`pod_labels` agent selectors.
    /// Default: the in-cluster API (KUBERNETES_SERVICE_HOST) when running in a pod; outside a
    /// cluster, off (events still carry container ids and pod UIDs from cgroup paths).
    #[arg(long, value_name = "URL")]
    pub kube_api: Option<String>,
    /// CA bundle of the API server. Default: the service account's ca.crt.
    #[arg(long, value_name = "FILE", requires = "kube_api")]
    pub kube_ca: Option<PathBuf>,
    /// Bearer token file, re-read at every connection (projected tokens rotate). Default:
    /// the service account's token.
    #[arg(long, value_name = "FILE", requires = "kube_api")]
    pub kube_token_file: Option<PathBuf>,
    /// Do not watch the Kubernetes API even in a pod.
    #[arg(long, conflicts_with = "kube_api")]
    pub no_kubernetes: bool,
}

impl KubeArgs {
    /// The node name, and the API configuration (None: pod identity off), validated.
    pub fn resolve(&self) -> Result<(String, Option<kube::ApiConfig>), kube::KubeError> {
        let node = match &self.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let sa = std::path::Path::new(kube::SERVICE_ACCOUNT_DIR);
        let cfg = if self.no_kubernetes {
            None
        } else if let Some(url) = &self.kube_api {
            Some(kube::ApiConfig {
                server: url.trim_end_matches('/').to_string(),
                ca_file: self.kube_ca.clone().unwrap_or_else(|| sa.join("ca.crt")),
                token_file: self.kube_token_file.clone().unwrap_or_else(|| sa.join("token")),
                node: node.clone(),
            })
        } else {
            kube::ApiConfig::in_cluster(&node)
        };
        if let Some(c) = &cfg {
            c.validate()?;
        }
        Ok((node, cfg))
    }
}

/// The cgroup id (directory inode) of pod `uid`'s cgroup below the cgroup v2 mount `root`, found
/// by its name (`pod<uid>` or `…-pod<uid_>.slice`) within the first levels of the hierarchy.
pub fn find_pod_cgroup(root: &std::path::Path, uid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    const DEPTH: usize = 5;
    let mut level = vec![root.to_path_buf()];
    for _ in 0..DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name();
                let name = name.to_string_lossy();
                let ident = cgroup_path::parse(&name);
                match (&ident.pod_uid, &ident.container) {
                    (Some(u), _) if u == uid => return e.metadata().ok().map(|m| m.ino()),
                    // Another pod's or a container's cgroup: ours is not below it.
                    (Some(_), _) | (None, Some(_)) => {}
                    (None, None) => next.push(e.path()),
                }
            }
        }
        level = next;
    }
    None
}

/// The `container` and `pod` of a process in cgroup `ident`, on `node`; `pods` None when pod
/// identity is off (not in a cluster).
pub fn identity(node: &str, ident: &CgroupIdentity, pods: Option<&kube::SharedPods>) -> Identity {
    let pod = ident.pod_uid.as_ref().map(
        |uid| match pods.and_then(|p| p.read().expect("pod cache lock").get(uid)) {
            Some(m) => PodRef::Known((*m).clone()),
            None => PodRef::Unresolved {
                uid: uid.clone(),
                resolved: false,
            },
        },
    );
    Identity {
        node: node.to_string(),
        container: ident.container.as_ref().map(|(id, runtime)| Container {
            id: id.clone(),
            runtime: *runtime,
        }),
        pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_the_pod_when_the_cache_knows_it() {
        let uid = "d0544205-72df-11e8-b691-080027c5d95e";
        let ident = CgroupIdentity {
            pod_uid: Some(uid.into()),
            container: Some(("ab".repeat(32), Runtime::Containerd)),
        };
        let unknown = serde_json::to_value(identity("n1", &ident, None)).unwrap();
        assert_eq!(unknown["container"]["runtime"], "containerd");
        assert_eq!(unknown["pod"], serde_json::json!({"uid": uid, "resolved": false}));
        assert_eq!(unknown["node"], "n1");
        let bare = serde_json::to_value(identity("n1", &CgroupIdentity::default(), None)).unwrap();
        assert_eq!(bare, serde_json::json!({"node": "n1"}));
    }
}
