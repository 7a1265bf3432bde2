//! The pods of this node, from the Kubernetes API: one list, then a watch from its
//! resourceVersion, kept in a cache events are enriched from (never one API call per event).
//! A watch that ends is resumed from the last version seen; a version the server no longer has
//! (410 Gone) or any error makes it list again, after a backoff.
//!
//! In a cluster the API server, CA and service-account token come from the pod (the
//! `KUBERNETES_SERVICE_HOST`/`_PORT` variables and
//! /var/run/secrets/kubernetes.io/serviceaccount); the token file is re-read at every
//! connection, since projected tokens rotate.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

/// Where in-cluster pods find their service-account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    /// This node's name: only its pods are listed.
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API {url}: {why}")]
    Config { url: String, why: ConfigError },
    #[error("Kubernetes API: {0}")]
    Tls(#[from] rustls::Error),
    #[error("Kubernetes API: {0}")]
    Client(#[from] reqwest::Error),
    #[error("Kubernetes API {call}: {why}")]
    Request { call: Call, why: RequestError },
    /// The resourceVersion is too old (HTTP or watch status 410): list again.
    #[error("Kubernetes API: resourceVersion expired (410 Gone)")]
    Gone,
}

/// What is wrong with the API configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("must be an https:// URL")]
    NotHttps,
    #[error("no node name: set TETHER_NODE_NAME (the DaemonSet passes spec.nodeName) or --node-name")]
    NoNode,
    #[error("CA bundle {0}")]
    CaBundle(#[from] crate::tls::PemError),
    #[error(transparent)]
    Token(#[from] TokenFileError),
}

/// The two calls the watcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    List,
    Watch,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::List => "list pods",
            Call::Watch => "watch pods",
        })
    }
}

/// Why a list or watch call failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Token(#[from] TokenFileError),
    /// The connection or the transfer failed (the whole chain of causes).
    #[error("{}", crate::tls::error_chain(.0))]
    Transport(#[from] reqwest::Error),
    /// The server answered another status than 200 or 410 (`body`: the first 300 characters).
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("a page of the pod list is over {MAX_LIST_BYTES} bytes")]
    PageTooLarge,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Line(#[from] LineTooLong),
    /// A watch ERROR event other than 410.
    #[error("status {code}: {message}")]
    WatchStatus { code: u64, message: String },
}

/// The service-account token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("token file {}: not a bearer token", path.display())]
    NotBearer { path: PathBuf },
}

/// Why a page of the pod list, a watch line or a pod in them does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a PodList: {0}")]
    NotAList(serde_json::Error),
    #[error("not a Pod: {0}")]
    NotAPod(serde_json::Error),
    #[error("a pod without uid, name or namespace")]
    Incomplete,
    #[error("not a watch event: {0}")]
    NotAWatchEvent(serde_json::Error),
    /// The event's type (its first 64 characters) is none of the four.
    #[error("unknown watch event type {0:?}")]
    UnknownType(String),
}

/// A watch line longer than [`MAX_WATCH_LINE`].
#[derive(Debug, thiserror::Error)]
#[error("a watch line is over {MAX_WATCH_LINE} bytes")]
pub struct LineTooLong;

impl ApiConfig {
    /// The in-cluster configuration, or None outside a cluster (no KUBERNETES_SERVICE_HOST).
    pub fn in_cluster(node: &str) -> Option<ApiConfig> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        Some(ApiConfig {
            server: format!("https://{host}:{port}"),
            ca_file: dir.join("ca.crt"),
            token_file: dir.join("token"),
            node: node.to_string(),
        })
    }

    /// Checks the configuration before the daemon starts: an https URL, a readable CA bundle
    /// and token file, a node name.
    pub fn validate(&self) -> Result<(), KubeError> {
        let bad = |why: ConfigError| KubeError::Config {
            url: self.server.clone(),
            why,
        };
        if !self.server.starts_with("https://") {
            return Err(bad(ConfigError::NotHttps));
        }
        if self.node.is_empty() {
            return Err(bad(ConfigError::NoNode));
        }
        crate::tls::read_certs(&self.ca_file).map_err(|e| bad(e.into()))?;
        read_token(&self.token_file).map_err(|e| bad(e.into()))?;
        Ok(())
    }

    fn pods_url(&self) -> String {
        format!(
            "{}/api/v1/pods?fieldSelector={}",
            self.server.trim_end_matches('/'),
            encode(&format!("spec.nodeName={}", self.node))
        )
    }
}

fn read_token(path: &Path) -> Result<String, TokenFileError> {
    let t = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let t = t.trim().to_string();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(TokenFileError::NotBearer {
            path: path.to_path_buf(),
        });
    }
    Ok(t)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub use crate::model::PodMeta;

/// The pods of this node by UID, shared with event enrichment. A deleted pod stays findable
/// for [`DELETED_GRACE`]: events of its last moments are still in the ring buffer when the
/// deletion arrives.
#[derive(Debug, Default)]
pub struct PodCache {
    by_uid: HashMap<String, Arc<PodMeta>>,
    deleted: HashMap<String, (Arc<PodMeta>, std::time::Instant)>,
    /// The first list has completed.
    synced: bool,
}

pub type SharedPods = Arc<RwLock<PodCache>>;

/// How long a deleted pod still names the events of its processes.
pub const DELETED_GRACE: Duration = Duration::from_secs(120);

impl PodCache {
    /// A cache holding these pods (tests, and tools that read recorded objects).
    pub fn from_pods(pods: impl IntoIterator<Item = PodMeta>) -> PodCache {
        PodCache {
            by_uid: pods.into_iter().map(|p| (p.uid.clone(), Arc::new(p))).collect(),
            deleted: HashMap::new(),
            synced: true,
        }
    }
    /// A pod of this node, or one deleted less than [`DELETED_GRACE`] ago.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.by_uid
            .get(uid)
            .or_else(|| self.deleted.get(uid).map(|(p, _)| p))
            .cloned()
    }
    /// A live pod of this node.
    pub fn get_live(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.by_uid.get(uid).cloned()
    }
    /// The live pods of this node.
    pub fn live(&self) -> impl Iterator<Item = &Arc<PodMeta>> {
        self.by_uid.values()
    }
    fn remove(&mut self, uid: &str) -> Option<Arc<PodMeta>> {
        let now = std::time::Instant::now();
        self.deleted
            .retain(|_, (_, at)| now.duration_since(*at) < DELETED_GRACE);
        let p = self.by_uid.remove(uid)?;
        self.deleted.insert(uid.to_string(), (p.clone(), now));
        Some(p)
    }
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
    pub fn synced(&self) -> bool {
        self.synced
    }
}

/// A change to the cache, for whoever compiles pod selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodChange {
    Upsert(Arc<PodMeta>),
    Removed(Arc<PodMeta>),
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct KubeStats {
    pub lists: AtomicU64,
    pub watch_events: AtomicU64,
    pub errors: AtomicU64,
    /// Objects or watch lines that could not be decoded.
    pub decode_errors: AtomicU64,
}

// The API's JSON, as far as Tether reads it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue", default)]
    cont: Option<String>,
}
#[derive(serde::Deserialize)]
struct Pod {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpec,
}
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    service_account_name: String,
}
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resource_version: String,
}
#[derive(serde::Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

impl Pod {
    fn meta(self) -> Result<PodMeta, DecodeError> {
        let m = self.metadata;
        if m.uid.is_empty() || m.name.is_empty() || m.namespace.is_empty() {
            return Err(DecodeError::Incomplete);
        }
        Ok(PodMeta {
            namespace: m.namespace,
            name: m.name,
            uid: m.uid,
            labels: m.labels,
            service_account: match self.spec.service_account_name {
                s if s.is_empty() => "default".into(),
                s => s,
            },
        })
    }
}

/// A page of the pod list is read up to this size (a few KiB per pod, 500 pods a page).
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// A watch line (one Pod object) is read up to this size; the API server stores objects of
/// at most ~1.5 MiB, so a longer line is a broken stream, not a pod.
pub const MAX_WATCH_LINE: usize = 8 << 20;

/// One page of the pod list, decoded: the pods (each decoded on its own, so one bad object
/// costs only itself), the list's resourceVersion and the `continue` token of the next page.
#[derive(Debug)]
pub struct ListPage {
    pub pods: Vec<Result<PodMeta, DecodeError>>,
    pub resource_version: String,
    pub cont: Option<String>,
}

/// Decodes one page of `GET /api/v1/pods`. Pure: the list/watch decoder fuzz target's entry.
pub fn decode_list(body: &[u8]) -> Result<ListPage, DecodeError> {
    #[derive(serde::Deserialize)]
    struct RawList {
        metadata: ListMeta,
        items: Vec<serde_json::Value>,
    }
    let list: RawList = serde_json::from_slice(body).map_err(DecodeError::NotAList)?;
    Ok(ListPage {
        pods: list
            .items
            .into_iter()
            .map(|v| {
                serde_json::from_value::<Pod>(v)
                    .map_err(DecodeError::NotAPod)
                    .and_then(Pod::meta)
            })
            .collect(),
        resource_version: list.metadata.resource_version,
        cont: list.metadata.cont.filter(|c| !c.is_empty()),
    })
}

/// What one watch line says.
#[derive(Debug, PartialEq, Eq)]
pub struct Watched {
    /// The object's resourceVersion (where the watch resumes), when it has one.
    pub resource_version: Option<String>,
    pub change: WatchChange,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WatchChange {
    /// A BOOKMARK: only the resourceVersion moves.
    Bookmark,
    /// ADDED or MODIFIED.
    Upsert(PodMeta),
    Deleted(PodMeta),
}

/// Why a watch line ends the watch.
#[derive(Debug)]
pub enum WatchError {
    /// An ERROR event with status 410: the version is gone, list again.
    Gone,
    /// Another ERROR event.
    Status { code: u64, message: String },
    /// Not a watch event of a pod.
    Decode(DecodeError),
}

/// Decodes one line of a pod watch. Pure: the list/watch decoder fuzz target's entry.
pub fn decode_watch(line: &[u8]) -> Result<Watched, WatchError> {
    let ev: WatchEvent =
        serde_json::from_slice(line).map_err(|e| WatchError::Decode(DecodeError::NotAWatchEvent(e)))?;
    if ev.kind == "ERROR" {
        let code = ev.object["code"].as_u64().unwrap_or(0);
        if code == 410 {
            return Err(WatchError::Gone);
        }
        return Err(WatchError::Status {
            code,
            message: ev.object["message"].as_str().unwrap_or("").chars().take(300).collect(),
        });
    }
    let pod: Pod = serde_json::from_value(ev.object).map_err(|e| WatchError::Decode(DecodeError::NotAPod(e)))?;
    let resource_version = Some(pod.metadata.resource_version.clone()).filter(|v| !v.is_empty());
    let change = match ev.kind.as_str() {
        "BOOKMARK" => WatchChange::Bookmark,
        "ADDED" | "MODIFIED" => WatchChange::Upsert(pod.meta().map_err(WatchError::Decode)?),
        "DELETED" => WatchChange::Deleted(pod.meta().map_err(WatchError::Decode)?),
        other => {
            return Err(WatchError::Decode(DecodeError::UnknownType(
                other.chars().take(64).collect(),
            )));
        }
    };
    Ok(Watched {
        resource_version,
        change,
    })
}

/// The lines of a watch stream, from its chunks as they arrive (a line may span chunks, a
/// chunk hold many lines). Blank lines are skipped; a line longer than [`MAX_WATCH_LINE`] is
/// an error, so a broken stream cannot grow the buffer without bound.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The lines `chunk` completes, without their newline.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..nl])?;
            let line = std::mem::take(&mut self.partial);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
            rest = &rest[nl + 1..];
        }
        self.take(rest)?;
        Ok(out)
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), LineTooLong> {
        if self.partial.len() + bytes.len() > MAX_WATCH_LINE {
            self.partial.clear();
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }
}

/// An HTTPS client that trusts only the cluster's CA.
pub fn client(cfg: &ApiConfig) -> Result<reqwest::Client, KubeError> {
    let roots = crate::tls::root_store(Some(&cfg.ca_file)).map_err(|e| KubeError::Config {
        url: cfg.server.clone(),
        why: e.into(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        // A watch asks the server to end within WATCH_SECONDS; bookmarks come more often.
        .read_timeout(Duration::from_secs(WATCH_SECONDS + 30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(KubeError::Client)
}

const WATCH_SECONDS: u64 = 300;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The watcher: list, watch, repeat; never returns.
pub struct Watcher {
    pub cfg: ApiConfig,
    pub client: reqwest::Client,
    pub cache: SharedPods,
    pub changes: Option<mpsc::Sender<PodChange>>,
    pub stats: Arc<KubeStats>,
    /// First retry delay (doubling up to 30 s).
    pub min_backoff: Duration,
}

impl Watcher {
    pub async fn run(self) {
        let mut failures = 0u32;
        loop {
            let err = match self.list().await {
                Ok(rv) => {
                    failures = 0;
                    self.watch_from(rv).await
                }
                Err(e) => e,
            };
            if !matches!(err, KubeError::Gone) {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                let delay = self.min_backoff.saturating_mul(1 << failures.min(8)).min(MAX_BACKOFF);
                tracing::warn!("{err}; listing the node's pods again in {delay:?}");
                tokio::time::sleep(delay).await;
            } else {
                tracing::info!("{err}; listing the node's pods again");
            }
        }
    }

    async fn get(&self, call: Call, url: &str) -> Result<reqwest::Response, KubeError> {
        let req_err = |why: RequestError| KubeError::Request { call, why };
        let token = read_token(&self.cfg.token_file).map_err(|e| req_err(e.into()))?;
        let resp = self
            .client
            .get(url)
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| req_err(e.into()))?;
        match resp.status().as_u16() {
            200 => Ok(resp),
            410 => Err(KubeError::Gone),
            status => {
                let body = resp.text().await.unwrap_or_default();
                Err(req_err(RequestError::Status {
                    status,
                    body: body.chars().take(300).collect(),
                }))
            }
        }
    }

    /// Lists the node's pods (following `continue`), replaces the cache, returns the list's
    /// resourceVersion.
    async fn list(&self) -> Result<String, KubeError> {
        let base = self.cfg.pods_url();
        let mut pods = HashMap::new();
        let mut cont: Option<String> = None;
        let rv = loop {
            let url = match &cont {
                Some(c) => format!("{base}&limit=500&continue={}", encode(c)),
                None => format!("{base}&limit=500"),
            };
            let mut resp = self.get(Call::List, &url).await?;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| KubeError::Request {
                call: Call::List,
                why: e.into(),
            })? {
                if body.len() + chunk.len() > MAX_LIST_BYTES {
                    self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(KubeError::Request {
                        call: Call::List,
                        why: RequestError::PageTooLarge,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            let page = decode_list(&body).map_err(|e| {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                KubeError::Request {
                    call: Call::List,
                    why: e.into(),
                }
            })?;
            for pod in page.pods {
                match pod {
                    Ok(m) => {
                        pods.insert(m.uid.clone(), Arc::new(m));
                    }
                    Err(e) => {
                        self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("{}: {e}", Call::List);
                    }
                }
            }
            match page.cont {
                Some(c) => cont = Some(c),
                None => break page.resource_version,
            }
        };
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        let (gone, changed) = {
            let mut cache = self.cache.write().expect("pod cache lock");
            let gone: Vec<_> = cache
                .by_uid
                .keys()
                .filter(|u| !pods.contains_key(*u))
                .cloned()
                .collect();
            let gone: Vec<_> = gone.iter().filter_map(|u| cache.remove(u)).collect();
            let changed: Vec<_> = pods
                .values()
                .filter(|p| cache.by_uid.get(&p.uid) != Some(*p))
                .cloned()
                .collect();
            for uid in pods.keys() {
                cache.deleted.remove(uid);
            }
            cache.by_uid = pods;
            cache.synced = true;
            (gone, changed)
        };
        tracing::info!(node = %self.cfg.node, "listed the node's pods at resourceVersion {rv}");
        for p in gone {
            self.notify(PodChange::Removed(p)).await;
        }
        for p in changed {
            self.notify(PodChange::Upsert(p)).await;
        }
        Ok(rv)
    }

    async fn notify(&self, change: PodChange) {
        if let Some(tx) = &self.changes {
            // Only fails when the daemon is shutting down.
            let _ = tx.send(change).await;
        }
    }

    /// Watches from `rv`, resuming after each server-side timeout; returns why it stopped.
    async fn watch_from(&self, mut rv: String) -> KubeError {
        loop {
            let url = format!(
                "{}&watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={}",
                self.cfg.pods_url(),
                encode(&rv)
            );
            let mut resp = match self.get(Call::Watch, &url).await {
                Ok(r) => r,
                Err(e) => return e,
            };
            let mut lines = Lines::default();
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    // The server ended the watch (timeoutSeconds): resume from `rv`.
                    Ok(None) => break,
                    Err(e) => {
                        return KubeError::Request {
                            call: Call::Watch,
                            why: e.into(),
                        };
                    }
                };
                let complete = match lines.push(&chunk) {
                    Ok(l) => l,
                    Err(e) => {
                        self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                        return KubeError::Request {
                            call: Call::Watch,
                            why: e.into(),
                        };
                    }
                };
                for line in complete {
                    if let Err(e) = self.apply(&line, &mut rv).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Applies one watch event line.
    async fn apply(&self, line: &[u8], rv: &mut String) -> Result<(), KubeError> {
        self.stats.watch_events.fetch_add(1, Ordering::Relaxed);
        let watched = match decode_watch(line) {
            Ok(w) => w,
            Err(WatchError::Gone) => return Err(KubeError::Gone),
            Err(WatchError::Status { code, message }) => {
                return Err(KubeError::Request {
                    call: Call::Watch,
                    why: RequestError::WatchStatus { code, message },
                });
            }
            Err(WatchError::Decode(e)) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                return Err(KubeError::Request {
                    call: Call::Watch,
                    why: e.into(),
                });
            }
        };
        if let Some(v) = watched.resource_version {
            *rv = v;
        }
        let change = {
            let mut cache = self.cache.write().expect("pod cache lock");
            match watched.change {
                WatchChange::Bookmark => None,
                WatchChange::Upsert(meta) => {
                    let meta = Arc::new(meta);
                    cache.deleted.remove(&meta.uid);
                    let old = cache.by_uid.insert(meta.uid.clone(), meta.clone());
                    (old.as_ref() != Some(&meta)).then_some(PodChange::Upsert(meta))
                }
                WatchChange::Deleted(meta) => cache.remove(&meta.uid).map(PodChange::Removed),
            }
        };
        if let Some(c) = change {
            self.notify(c).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_url_selects_this_node() {
        let cfg = ApiConfig {
            server: "https://10.0.0.1:443".into(),
            ca_file: "/ca".into(),
            token_file: "/t".into(),
            node: "node-a.example".into(),
        };
        assert_eq!(
            cfg.pods_url(),
            "https://10.0.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a.example"
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").unwrap();
        let mut cfg = ApiConfig {
            server: "http://10.0.0.1".into(),
            ca_file: dir.path().join("missing-ca.crt"),
            token_file: token.clone(),
            node: "n".into(),
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("https://"));
        cfg.server = "https://10.0.0.1".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("missing-ca.crt"));
        cfg.node.clear();
        assert!(cfg.validate().unwrap_err().to_string().contains("TETHER_NODE_NAME"));
        std::fs::write(&token, "two words").unwrap();
        assert!(
            read_token(&token)
                .unwrap_err()
                .to_string()
                .contains("not a bearer token")
        );
    }
}
