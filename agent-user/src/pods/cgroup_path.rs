//! Container and pod identity from a cgroup path, as container runtimes and the kubelet name
//! their cgroups. Pure text: tested on the real layouts of containerd, CRI-O and Docker under
//! cgroup v1 and v2, with the systemd and cgroupfs drivers.
//!
//! The layouts (`<uid>` a pod UID, `<id>` a 64-hex container id):
//!
//! | driver   | runtime    | container cgroup                                                   |
//! |----------|------------|--------------------------------------------------------------------|
//! | systemd  | containerd | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd  | CRI-O      | `…/kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope` (`crio-conmon-<id>.scope` is its monitor) |
//! | systemd  | Docker     | `…/kubepods-<qos>-pod<uid_>.slice/docker-<id>.scope`               |
//! | cgroupfs | containerd, Docker | `/kubepods/<qos>/pod<uid>/<id>`                            |
//! | cgroupfs | CRI-O      | `/kubepods/<qos>/pod<uid>/crio-<id>`                               |
//!
//! Guaranteed pods have no `<qos>` level; the systemd driver writes the UID with `_` for `-`.
//! Docker outside Kubernetes: `/system.slice/docker-<id>.scope` or `/docker/<id>`. Seen from
//! inside a cgroup namespace the path may start with `/../..`: only the components matter.

pub use crate::model::Runtime;

/// What a cgroup path says about the process in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIdentity {
    /// The pod's UID, with dashes (as the API server writes it).
    pub pod_uid: Option<String>,
    /// The container id and runtime, when the cgroup is a container's (or below one).
    pub container: Option<(String, Runtime)>,
}

impl CgroupIdentity {
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none() && self.container.is_none()
    }
}

/// Parses one cgroup path (the part after the second `:` of a /proc/PID/cgroup line). The pod
/// is the outermost pod component above any container: a process that may create cgroups
/// below its own (root in a privileged container) can name one `pod<another uid>`, and must
/// not become that pod.
pub fn parse(path: &str) -> CgroupIdentity {
    let mut out = CgroupIdentity::default();
    let mut parent: Option<&str> = None;
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != "..") {
        if let Some(uid) = pod_uid(comp) {
            if out.pod_uid.is_none() && out.container.is_none() {
                out.pod_uid = Some(uid);
            }
        } else if let Some(c) = container(comp, parent) {
            // The innermost container id wins (nested runtimes).
            out.container = Some(c);
        }
        parent = Some(comp);
    }
    out
}

/// Parses a whole /proc/PID/cgroup text: the cgroup v2 line (`0::`) when there is one, else
/// the first cgroup v1 hierarchy line that names a pod or container (`name=systemd`, `pids`,
/// `memory`, … all hold the same path on Kubernetes nodes).
pub fn parse_proc_cgroup(text: &str) -> CgroupIdentity {
    let mut v1 = CgroupIdentity::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            let v2 = parse(path);
            if !v2.is_empty() {
                return v2;
            }
        } else if v1.is_empty() {
            v1 = parse(path);
        }
    }
    v1
}

/// `pod<uid>` (cgroupfs) or `<prefix>-pod<uid_>.slice` (systemd).
fn pod_uid(comp: &str) -> Option<String> {
    let raw = if let Some(slice) = comp.strip_suffix(".slice") {
        slice.rsplit_once("-pod").map(|(_, u)| u)?
    } else {
        comp.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

fn container(comp: &str, parent: Option<&str>) -> Option<(String, Runtime)> {
    let (id, runtime) = if let Some(scope) = comp.strip_suffix(".scope") {
        if let Some(id) = scope.strip_prefix("cri-containerd-") {
            (id, Runtime::Containerd)
        } else if scope.starts_with("crio-conmon-") {
            // CRI-O's monitor process for a container, not the container.
            return None;
        } else if let Some(id) = scope.strip_prefix("crio-") {
            (id, Runtime::Crio)
        } else if let Some(id) = scope.strip_prefix("docker-") {
            (id, Runtime::Docker)
        } else {
            return None;
        }
    } else if let Some(id) = comp.strip_prefix("crio-") {
        (id, Runtime::Crio)
    } else if parent == Some("docker") {
        (comp, Runtime::Docker)
    } else {
        (comp, Runtime::Unknown)
    };
    is_container_id(id).then(|| (id.to_string(), runtime))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "84ad0790d137467a41a21d7fb29b4973f68d4d00e67390454d587da8e5cc292b";
    const UID: &str = "d0544205-72df-11e8-b691-080027c5d95e";
    const UID_: &str = "d0544205_72df_11e8_b691_080027c5d95e";

    fn both(path: &str, runtime: Runtime) {
        assert_eq!(
            parse(path),
            CgroupIdentity {
                pod_uid: Some(UID.into()),
                container: Some((ID.into(), runtime)),
            },
            "{path}"
        );
    }

    #[test]
    fn cgroup_v2_systemd_driver() {
        for (qos, pod) in [
            (
                "/kubepods-burstable.slice",
                format!("kubepods-burstable-pod{UID_}.slice"),
            ),
            (
                "/kubepods-besteffort.slice",
                format!("kubepods-besteffort-pod{UID_}.slice"),
            ),
            ("", format!("kubepods-pod{UID_}.slice")),
        ] {
            let base = format!("/kubepods.slice{qos}/{pod}");
            both(&format!("{base}/cri-containerd-{ID}.scope"), Runtime::Containerd);
            both(&format!("{base}/crio-{ID}.scope"), Runtime::Crio);
            both(&format!("{base}/docker-{ID}.scope"), Runtime::Docker);
            // CRI-O's conmon is in the pod, not in a container.
            assert_eq!(
                parse(&format!("{base}/crio-conmon-{ID}.scope")),
                CgroupIdentity {
                    pod_uid: Some(UID.into()),
                    container: None
                }
            );
            // The pod's own cgroup.
            assert_eq!(parse(&base).pod_uid.as_deref(), Some(UID));
            assert_eq!(parse(&base).container, None);
        }
        // kind and other nested kubelets prefix the slices.
        both(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
        );
    }

    #[test]
    fn cgroup_v2_cgroupfs_driver() {
        for qos in ["/burstable", "/besteffort", ""] {
            both(&format!("/kubepods{qos}/pod{UID}/{ID}"), Runtime::Unknown);
            both(&format!("/kubepods{qos}/pod{UID}/crio-{ID}"), Runtime::Crio);
        }
    }

    #[test]
    fn inside_a_cgroup_namespace_the_components_still_tell() {
        both(
            &format!("/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            Runtime::Containerd,
        );
    }

    #[test]
    fn cgroup_v1_proc_files() {
        // containerd, cgroupfs driver: every hierarchy holds the same path.
        let text = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        let got = parse_proc_cgroup(&text);
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        assert_eq!(got.container, Some((ID.into(), Runtime::Unknown)));
        // Docker, systemd driver, with the unified line empty (hybrid mode).
        let text = format!(
            "10:devices:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n1:name=systemd:/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope\n0::/\n"
        );
        let got = parse_proc_cgroup(&text);
        assert_eq!(got.container, Some((ID.into(), Runtime::Docker)));
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        // CRI-O, systemd driver.
        let text = format!(
            "9:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(parse_proc_cgroup(&text).container, Some((ID.into(), Runtime::Crio)));
    }

    /// A process that may make cgroups below its own names one after another pod: it stays
    /// in its own pod.
    #[test]
    fn a_pod_named_below_a_container_or_a_pod_is_not_the_processs_pod() {
        let victim = "0b6c5f8e-1d2a-4c43-9d5e-7a8b9c0d1e2f";
        for inner in [
            format!("pod{victim}"),
            format!("kubepods-pod{}.slice", victim.replace('-', "_")),
        ] {
            let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/{inner}");
            assert_eq!(parse(&path).pod_uid.as_deref(), Some(UID), "{path}");
            let path = format!("/kubepods/pod{UID}/{inner}/{ID}");
            assert_eq!(parse(&path).pod_uid.as_deref(), Some(UID), "{path}");
        }
    }

    #[test]
    fn docker_outside_kubernetes() {
        let want = CgroupIdentity {
            pod_uid: None,
            container: Some((ID.into(), Runtime::Docker)),
        };
        assert_eq!(parse(&format!("/system.slice/docker-{ID}.scope")), want);
        assert_eq!(parse(&format!("/docker/{ID}")), want);
        assert_eq!(parse_proc_cgroup(&format!("4:memory:/docker/{ID}\n")), want);
    }

    #[test]
    fn host_processes_and_near_misses_name_nothing() {
        for path in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/init.scope",
            // Not 64 hex, not a UUID.
            "/kubepods/besteffort/podnot-a-uid/abc123",
            &format!("/kubepods/besteffort/pod{UID}x/{}", &ID[1..]),
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
        ] {
            let got = parse(path);
            assert!(got.container.is_none(), "{path}: {got:?}");
        }
        assert!(parse("/kubepods/besteffort/podnot-a-uid").pod_uid.is_none());
        assert!(parse_proc_cgroup("0::/system.slice/cron.service\n").is_empty());
        assert!(parse_proc_cgroup("garbage").is_empty());
    }
}
