//! Pod identity against a local HTTPS server that speaks the Kubernetes API's list/watch
//! protocol with recorded objects (no cluster runs here). No root needed.
#[path = "support/kube_api.rs"]
mod kube_api;
#[path = "support/soc.rs"]
mod soc;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use kube_api::{END_WATCH, KubeApi};
use tether::pods::kube::{ApiConfig, KubeStats, PodChange, SharedPods, Watcher};
use tokio::sync::mpsc;

const LIST: &str = include_str!("../fixtures/kubernetes/pods-list.json");
const WATCH: &str = include_str!("../fixtures/kubernetes/watch-events.jsonl");
const AGENT_UID: &str = "6a1f3c2e-8b7d-4e59-9c21-0f4b5a6d7e81";
const DNS_UID: &str = "b3c2d1e0-1234-4f5a-9b8c-7d6e5f4a3b2c";
const REVIEWER_UID: &str = "f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f";

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
    cache: SharedPods,
    stats: Arc<KubeStats>,
    changes: mpsc::Receiver<PodChange>,
    _rt: tokio::runtime::Runtime,
}

fn watch(api: &KubeApi, ca_pem: &str, token: &str) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, token_file) = (dir.path().join("ca.crt"), dir.path().join("token"));
    std::fs::write(&ca_file, ca_pem).unwrap();
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let cfg = ApiConfig {
        server: api.url(),
        ca_file,
        token_file: token_file.clone(),
        node: "node-a".into(),
    };
    cfg.validate().expect("configuration");
    let client = tether::pods::kube::client(&cfg).unwrap();
    let (tx, changes) = mpsc::channel(64);
    let (cache, stats) = (SharedPods::default(), Arc::new(KubeStats::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(
        Watcher {
            cfg,
            client,
            cache: cache.clone(),
            changes: Some(tx),
            stats: stats.clone(),
            min_backoff: Duration::from_millis(50),
        }
        .run(),
    );
    Setup {
        _dir: dir,
        token_file,
        cache,
        stats,
        changes,
        _rt: rt,
    }
}

fn drain(rx: &mut mpsc::Receiver<PodChange>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Ok(c) = rx.try_recv() {
        out.push(match c {
            PodChange::Upsert(p) => ("upsert".into(), p.uid.clone()),
            PodChange::Removed(p) => ("removed".into(), p.uid.clone()),
        });
    }
    out
}

#[test]
fn the_node_pods_are_listed_then_watched_and_relisted_when_the_version_expires() {
    let pki = soc::Pki::generate();
    let api = KubeApi::start(pki.acceptor(), LIST, "token-one");
    let mut s = watch(&api, &pki.ca_pem, "token-one");

    // The list: both recorded pods, with their labels, before any watch event.
    wait_for("the first list", || s.cache.read().unwrap().synced());
    {
        let cache = s.cache.read().unwrap();
        assert_eq!(cache.len(), 2);
        let agent = cache.get(AGENT_UID).expect("the agent pod");
        assert_eq!(
            (agent.namespace.as_str(), agent.name.as_str()),
            ("agents", "coding-agent-7d9c5b8f6-x2kq4")
        );
        assert_eq!(agent.labels["tether.dev/agent"], "true");
    }
    let mut changes = drain(&mut s.changes);
    changes.sort();
    assert_eq!(
        changes,
        vec![("upsert".into(), AGENT_UID.into()), ("upsert".into(), DNS_UID.into())]
    );
    // Only this node's pods, with the service account's token; then a watch from the list's
    // resourceVersion.
    wait_for("the watch", || api.requests().len() >= 2);
    let reqs = api.requests();
    assert!(
        reqs[0]
            .0
            .starts_with("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"),
        "{reqs:?}"
    );
    assert!(!reqs[0].0.contains("watch=true"), "{reqs:?}");
    assert_eq!(reqs[0].1, "Bearer token-one");
    assert!(
        reqs[1].0.contains("watch=true") && reqs[1].0.contains("resourceVersion=48213"),
        "{reqs:?}"
    );

    // Watch events: a label change, a bookmark, a new pod, a deletion.
    api.push(WATCH.lines());
    wait_for("the watch events", || {
        s.cache.read().unwrap().get_live(DNS_UID).is_none()
    });
    {
        let cache = s.cache.read().unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(AGENT_UID).unwrap().labels["tether.dev/tier"], "sandbox");
        assert_eq!(cache.get(REVIEWER_UID).unwrap().name, "reviewer-agent-0");
        // A deleted pod still names the events of its last moments (still in the ring buffer).
        assert_eq!(cache.get(DNS_UID).unwrap().namespace, "kube-system");
    }
    assert_eq!(
        drain(&mut s.changes),
        vec![
            ("upsert".into(), AGENT_UID.into()),
            ("upsert".into(), REVIEWER_UID.into()),
            ("removed".into(), DNS_UID.into()),
        ]
    );

    // The server ends the watch: resumed from the last version seen, without a list.
    api.push([END_WATCH]);
    wait_for("the resumed watch", || api.requests().len() >= 3);
    let reqs = api.requests();
    assert!(
        reqs[2].0.contains("watch=true") && reqs[2].0.contains("resourceVersion=48320"),
        "{reqs:?}"
    );
    assert_eq!(s.stats.lists.load(Ordering::Relaxed), 1);

    // The token rotates, then the version expires (410 Gone): listed again with the new
    // token; the list no longer has the reviewer pod, which is reported removed.
    std::fs::write(&s.token_file, "token-two\n").unwrap();
    api.set_token("token-two");
    api.set_list(LIST);
    api.push([r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 48213 (48400)","reason":"Expired","code":410}}"#]);
    wait_for("the relist", || s.stats.lists.load(Ordering::Relaxed) == 2);
    let reqs = api.requests();
    let relist = &reqs[3];
    assert!(!relist.0.contains("watch=true"), "{reqs:?}");
    assert_eq!(relist.1, "Bearer token-two");
    wait_for("the relisted cache", || {
        s.cache.read().unwrap().get_live(DNS_UID).is_some()
    });
    let mut changes = drain(&mut s.changes);
    changes.sort();
    assert_eq!(
        changes,
        vec![
            ("removed".into(), REVIEWER_UID.into()),
            // Back with its listed labels (without the watch's tier label).
            ("upsert".into(), AGENT_UID.into()),
            ("upsert".into(), DNS_UID.into()),
        ]
    );
    // 410 is the protocol, not a failure.
    assert_eq!(s.stats.errors.load(Ordering::Relaxed), 0);

    // An undecodable watch line is counted and makes it list again.
    api.push(["{not json"]);
    wait_for("the relist after garbage", || {
        s.stats.lists.load(Ordering::Relaxed) == 3
    });
    assert_eq!(s.stats.decode_errors.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.errors.load(Ordering::Relaxed), 1);
}

#[test]
fn a_server_the_ca_does_not_vouch_for_or_a_refused_token_fills_nothing() {
    let pki = soc::Pki::generate();
    let api = KubeApi::start(pki.acceptor(), LIST, "right");
    // Another CA: the TLS handshake fails; errors are counted, nothing is cached.
    let other = soc::Pki::generate();
    let s = watch(&api, &other.ca_pem, "right");
    wait_for("TLS failures", || s.stats.errors.load(Ordering::Relaxed) >= 2);
    assert!(!s.cache.read().unwrap().synced());
    assert!(api.requests().is_empty(), "no request passes an untrusted handshake");
    // The right CA, a wrong token: 401, counted, nothing cached.
    let s = watch(&api, &pki.ca_pem, "wrong");
    wait_for("401s", || s.stats.errors.load(Ordering::Relaxed) >= 2);
    assert!(!s.cache.read().unwrap().synced());
    assert!(api.requests().iter().all(|(_, auth)| auth == "Bearer wrong"));
}
