//! The local API: HTTP/JSON over Unix sockets (so `curl --unix-socket` works). The daemon learns
//! the caller's pid and uid from the socket (SO_PEERCRED), never from the request body, so a
//! process can only register or bind *itself* on the agent socket.
//!
//! Two sockets, and their file permissions decide who may call what:
//! - the agent socket (default /run/tether/tether.sock, mode 0666): any local process may
//!   register itself or bind a credential to itself (both only add monitoring of the caller),
//!   and read the status;
//! - the admin socket (default /run/tether/admin.sock, mode 0600, root): everything above, plus
//!   binding a credential to another pid, revoking a task and listing tasks (orchestrators),
//!   switching the mode and reloading the rules. It answers no tracked process, whatever its
//!   uid ([`Request::AdminCaller`], before every route): an agent running as root must not
//!   switch off what watches it.
//!
//! | method and path                | socket | body                         | answer |
//! |--------------------------------|--------|------------------------------|--------|
//! | `POST /v1/register`            | both   | -                            | `{"pid","sandbox"}` |
//! | `POST /v1/bind`                | both   | `{"token"}`                  | `{"pid","task","sandbox"}` |
//! | `POST /v1/sandbox`             | both   | the layers applied           | `{}` (once per process) |
//! | `GET /v1/status`               | both   | -                            | the status report |
//! | `POST /v1/tasks`               | admin  | `{"token","pid"}`            | `{"pid","task"}` |
//! | `GET /v1/tasks`                | admin  | -                            | `{"tasks":[...]}` |
//! | `POST /v1/tasks/{jti}/revoke`  | admin  | -                            | `{"task"}` |
//! | `POST /v1/mode`                | admin  | `{"mode"}`                   | `{"mode","rules"}` |
//! | `POST /v1/reload`              | admin  | -                            | the rules in force |
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.
use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use crate::credentials::{
    self,
    carriers::ScopeBook,
    token::{self, Keys, Verified},
};

pub const DEFAULT_SOCKET: &str = "/run/tether/tether.sock";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/tether/admin.sock";
/// Request bodies larger than this are refused (a token is at most 16 KiB).
const MAX_BODY: usize = 64 * 1024;

/// The caller, from SO_PEERCRED.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// A request for the daemon's event loop, which owns the process table and the kernel maps.
#[derive(Debug)]
pub enum Request {
    /// Track `pid` (the caller itself).
    Register {
        pid: u32,
    },
    /// Bind a verified credential to `pid`.
    Bind {
        pid: u32,
        verified: Box<Verified>,
    },
    /// A credential was refused before it reached the loop (for the alert).
    Refused {
        pid: u32,
        uid: u32,
        reason: String,
    },
    Revoke {
        jti: String,
    },
    Tasks,
    Status,
    /// Switch the global containment mode.
    Mode {
        mode: crate::policy::engine::Mode,
    },
    /// Reload the rule files.
    Reload,
    /// May `pid` call the admin socket? Refused (403, and alerted) when it is tracked: an
    /// agent, root or not, must not switch off what watches it.
    AdminCaller {
        pid: u32,
    },
    /// `tether exec` (`pid`) says which sandbox layers it applied to itself.
    Sandbox {
        pid: u32,
        layers: Box<crate::contain::sandbox::Layers>,
    },
}

#[derive(Debug)]
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Value, ApiError>>,
}

/// A failed call: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// Why the API itself refused or failed a call (before, or instead of, the event loop's
/// answer); [`ApiError`] carries it to the caller with its status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("the daemon dropped the request")]
    Dropped,
    #[error("the caller's pid is unknown (SO_PEERCRED)")]
    UnknownPid,
    #[error("key store poisoned")]
    KeysPoisoned,
    #[error("credential refused: {0}")]
    Credential(#[from] token::TokenError),
    #[error("bad request: {}", .0.body_text())]
    BadRequest(#[from] axum::extract::rejection::JsonRejection),
    #[error("no such endpoint (see `tether help` or the README's API table)")]
    NoRoute,
    #[error("uid {0} is not an admin of this daemon (--admin-uid, --admin-group)")]
    NotAdmin(u32),
}

impl CallError {
    /// The HTTP status the caller gets.
    pub fn status(&self) -> u16 {
        match self {
            CallError::ShuttingDown => 503,
            CallError::Dropped | CallError::KeysPoisoned => 500,
            CallError::UnknownPid | CallError::BadRequest(_) => 400,
            CallError::Credential(_) | CallError::NotAdmin(_) => 403,
            CallError::NoRoute => 404,
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        ApiError::new(e.status(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({"error": self.message}))).into_response()
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub calls: mpsc::Sender<Call>,
    pub keys: Arc<RwLock<Keys>>,
    /// The rule files' scope bundles and identity bindings.
    pub scopes: Arc<ScopeBook>,
    pub max_chain: usize,
    /// Who may call the admin socket beyond its file mode (empty: any untracked caller that
    /// can open it).
    pub admins: Admins,
}

/// `--admin-uid` and `--admin-group`: the admin socket answers only callers with one of these
/// uids, or one of these groups as primary or supplementary group.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Admins {
    /// May the caller (uid `uid`, gid `gid`, process `pid`) call the admin socket?
    pub fn admit(&self, uid: u32, gid: u32, pid: Option<u32>) -> bool {
        if self.uids.is_empty() && self.gids.is_empty() {
            return true;
        }
        if self.uids.contains(&uid) || self.gids.contains(&gid) {
            return true;
        }
        // Supplementary groups, from /proc (the pid is the one that connected).
        let groups = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .and_then(|st| {
                st.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default();
        groups.iter().any(|g| self.gids.contains(g))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create the API socket {path}: {source}")]
    Bind { path: String, source: std::io::Error },
}

/// Binds a socket with `mode` (replacing a stale one left by a dead daemon).
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Bind {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

async fn call(state: &ApiState, request: Request) -> Result<Value, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .calls
        .send(Call { request, reply: tx })
        .await
        .map_err(|_| CallError::ShuttingDown)?;
    rx.await.map_err(|_| CallError::Dropped)?
}

fn peer_pid(peer: &Peer) -> Result<u32, CallError> {
    peer.pid.ok_or(CallError::UnknownPid)
}

async fn handle_register(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Result<Json<Value>, ApiError> {
    let pid = peer_pid(&peer)?;
    call(&s, Request::Register { pid }).await.map(Json)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    pub token: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindOtherBody {
    pub token: String,
    pub pid: u32,
}

/// Verifies a token here (pure CPU, off the event loop) and resolves its scope's host names
/// (async, bounded); a refusal is reported to the loop for the alert.
async fn verify_and_bind(s: &ApiState, peer: &Peer, pid: u32, token: &str) -> Result<Value, ApiError> {
    let verified = {
        let keys = s.keys.read().map_err(|_| CallError::KeysPoisoned)?;
        let checks = token::Checks {
            keys: &keys,
            scopes: &s.scopes,
            max_chain: s.max_chain,
        };
        token::verify(token, &checks, credentials::now_epoch())
    };
    let mut verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let refused = CallError::Credential(e);
            let _ = call(
                s,
                Request::Refused {
                    pid,
                    uid: peer.uid,
                    reason: refused.to_string(),
                },
            )
            .await;
            return Err(refused.into());
        }
    };
    verified.scope.resolved = credentials::resolve_hosts(&verified.scope.host_names()).await;
    call(
        s,
        Request::Bind {
            pid,
            verified: Box::new(verified),
        },
    )
    .await
}

async fn handle_bind_self(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<BindBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(CallError::from)?;
    let pid = peer_pid(&peer)?;
    verify_and_bind(&s, &peer, pid, &body.token).await.map(Json)
}

async fn handle_bind_other(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<BindOtherBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(CallError::from)?;
    verify_and_bind(&s, &peer, body.pid, &body.token).await.map(Json)
}

async fn handle_sandbox(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<crate::contain::sandbox::Layers>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(layers) = body.map_err(CallError::from)?;
    let pid = peer_pid(&peer)?;
    call(
        &s,
        Request::Sandbox {
            pid,
            layers: Box::new(layers),
        },
    )
    .await
    .map(Json)
}

async fn handle_status(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    call(&s, Request::Status).await.map(Json)
}

async fn handle_tasks(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    call(&s, Request::Tasks).await.map(Json)
}

async fn handle_revoke(State(s): State<ApiState>, UrlPath(jti): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    call(&s, Request::Revoke { jti }).await.map(Json)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    pub mode: crate::policy::engine::Mode,
}

async fn handle_mode(
    State(s): State<ApiState>,
    body: Result<Json<ModeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(CallError::from)?;
    call(&s, Request::Mode { mode: body.mode }).await.map(Json)
}

async fn handle_reload(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    call(&s, Request::Reload).await.map(Json)
}

async fn not_found() -> ApiError {
    CallError::NoRoute.into()
}

/// Every admin-socket request first: a caller whose pid is unknown or tracked is refused.
async fn admin_gate(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let admitted = match peer_pid(&peer) {
        Ok(_) if !s.admins.admit(peer.uid, peer.gid, peer.pid) => Err(CallError::NotAdmin(peer.uid).into()),
        Ok(pid) => call(&s, Request::AdminCaller { pid }).await,
        Err(e) => Err(e.into()),
    };
    match admitted {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The routes of the agent socket (`admin` false) or the admin socket (every route behind
/// `admin_gate`).
pub fn router(state: ApiState, admin: bool) -> Router {
    let mut r = Router::new()
        .route("/v1/register", post(handle_register))
        .route("/v1/bind", post(handle_bind_self))
        .route("/v1/sandbox", post(handle_sandbox))
        .route("/v1/status", get(handle_status));
    if admin {
        r = r
            .route("/v1/tasks", post(handle_bind_other).get(handle_tasks))
            .route("/v1/tasks/{jti}/revoke", post(handle_revoke))
            .route("/v1/mode", post(handle_mode))
            .route("/v1/reload", post(handle_reload));
    }
    let mut r = r.fallback(not_found);
    if admin {
        r = r.layer(axum::middleware::from_fn_with_state(state.clone(), admin_gate));
    }
    r.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Connections the processes of one tracked tree may hold open at once on one socket (an
/// agent, root or not, opening many exhausts its own share only) ...
pub const MAX_PER_TREE: usize = 8;
/// ... and the untracked processes of one uid.
pub const MAX_PER_UID: usize = 16;
/// Connections one socket holds open at once.
pub const MAX_CONNECTIONS: usize = 128;
/// A request's header must arrive within this (generous: a daemon under a flood of records
/// on a slow machine still reads it in time).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A connection is closed after this, busy or idle (`tether exec` needs a few seconds).
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// Whose share a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    /// A tracked tree, by its root's pid.
    Tree(u32),
    /// Untracked processes of a uid.
    Uid(u32),
    /// Every connection (the total).
    All,
}

/// Open connections per owner on one socket.
#[derive(Clone, Default)]
struct Conns(
    Arc<std::sync::Mutex<std::collections::HashMap<Owner, usize>>>,
    /// Connections refused for their owner's share, in all.
    Arc<std::sync::atomic::AtomicU64>,
);

/// A connection slot, given back when the connection ends.
struct Slot(Conns, Owner);

impl Conns {
    fn take(&self, owner: Owner) -> Option<Slot> {
        let cap = match owner {
            Owner::Tree(_) => MAX_PER_TREE,
            Owner::Uid(_) => MAX_PER_UID,
            Owner::All => MAX_CONNECTIONS,
        };
        let mut m = self.0.lock().ok()?;
        let n = m.entry(owner).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), owner))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// The tracked tree of a pid (its root's pid), None when untracked: a lookup in the kernel's
/// tracked map, made by the API's own workers.
pub type TreeOf = Arc<dyn Fn(u32) -> Option<u32> + Send + Sync>;

/// Whose share the connection of `peer` counts against (an unknown pid counts as its uid's).
fn owner_of(tree_of: &TreeOf, peer: &Peer) -> Owner {
    match peer.pid.and_then(|p| tree_of(p)) {
        Some(root) => Owner::Tree(root),
        None => Owner::Uid(peer.uid),
    }
}

/// Serves `router` on `listener` until the process ends. What a local process can hold is
/// bounded: [`MAX_PER_TREE`] connections per tracked tree, [`MAX_PER_UID`] per uid for
/// untracked callers and [`MAX_CONNECTIONS`] in all (more are closed at once, counted in the
/// log), a header within [`HEADER_TIMEOUT`], a connection for at most
/// [`CONNECTION_LIFETIME`]. An accept that fails (no descriptor left) backs off instead of
/// spinning.
pub async fn serve(listener: UnixListener, router: Router, tree_of: TreeOf) {
    let conns = Conns::default();
    let mut refused: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("API accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                pid: c.pid().map(|p| p as u32),
                uid: c.uid(),
                gid: c.gid(),
            },
            Err(_) => Peer {
                pid: None,
                uid: u32::MAX,
                gid: u32::MAX,
            },
        };
        // Classified at once (a map lookup): a burst from one tree is refused here, before it
        // can hold a slot of the total.
        let owner = owner_of(&tree_of, &peer);
        let Some(slot) = conns.take(owner) else {
            let n = conns.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    ?owner,
                    refused = n,
                    "API connection refused: its share is open (tree {MAX_PER_TREE}, uid {MAX_PER_UID})"
                );
            }
            continue;
        };
        let Some(all) = conns.take(Owner::All) else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(refused, "API connection refused: {MAX_CONNECTIONS} open");
            }
            continue;
        };
        let svc = router.clone().layer(axum::Extension(ConnectInfo(peer)));
        tokio::spawn(async move {
            let (_slot, _all) = (slot, all);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(svc),
                );
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!("API connection: {e}"),
                Err(_) => debug!("API connection closed after {CONNECTION_LIFETIME:?}"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// How `tether exec` makes sure the socket is the daemon's before it hands it a credential
/// or takes a sandbox plan from it.
#[derive(Debug, Clone)]
pub struct DaemonCheck {
    /// The daemon's executable (the peer must be running this file, as `tether run`).
    pub exe: std::path::PathBuf,
    /// Accept a peer whose pid this process cannot see (the daemon in another pid namespace,
    /// as with a DaemonSet and agents in their own containers): then only the socket's owner
    /// and the peer's uid are checked.
    pub other_pid_namespace: bool,
}

/// Why the peer of a socket is not the daemon ([`check_daemon`]).
#[derive(Debug, thiserror::Error)]
pub enum NotDaemon {
    #[error("not a socket (a symlink or another file)")]
    NotASocket,
    #[error("owned by uid {0}, not root")]
    SocketOwner(u32),
    #[error("the process serving it runs as uid {0}, not root")]
    ServerUid(u32),
    #[error(
        "the serving process is in another pid namespace (give --daemon-in-other-pid-namespace if that is how it runs)"
    )]
    OtherPidNamespace,
    #[error("the serving process {pid} does not run {} (the daemon's executable)", exe.display())]
    OtherExe { pid: i32, exe: std::path::PathBuf },
    #[error("the serving process {0} is not `tether run`")]
    NotRun(i32),
}

/// Why a call to the daemon failed, on the client's side (`tether exec`, `tasks`, `status`,
/// `mode`, `reload`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{} is not the tether daemon's socket: {why}", socket.display())]
    NotDaemon { socket: std::path::PathBuf, why: NotDaemon },
    /// A file the check reads (the socket, the daemon's executable).
    #[error("{}: {source}", path.display())]
    Stat {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("SO_PEERCRED: {0}")]
    PeerCred(std::io::Error),
    #[error("cannot see the serving process {pid}'s executable: {source}")]
    ServerExe { pid: i32, source: std::io::Error },
    #[error("{0}")]
    Runtime(std::io::Error),
    #[error("cannot reach the tether daemon at {}: {source} (is `tether run` running?)", socket.display())]
    Unreachable {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The HTTP exchange on the socket failed.
    #[error("{}: {source}", socket.display())]
    Http {
        socket: std::path::PathBuf,
        source: hyper::Error,
    },
    #[error("{0}")]
    BadRequest(#[from] hyper::http::Error),
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
    #[error("bad reply from the daemon ({source}): {}", String::from_utf8_lossy(body))]
    BadReply { source: serde_json::Error, body: Vec<u8> },
    /// The daemon refused the call, saying why.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The daemon refused the call without saying why.
    #[error("HTTP {0}")]
    Status(hyper::StatusCode),
    #[error("bad reply: {0}")]
    NoPid(Value),
}

/// Is the peer of `stream` (at `socket`) the daemon? The socket file must be a socket owned by
/// root, the peer root, and (where its pid is visible) running the daemon's executable as
/// `tether run`: a socket an agent made, or a server it runs, is refused.
pub fn check_daemon(socket: &Path, stream: &tokio::net::UnixStream, check: &DaemonCheck) -> Result<(), ClientError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let refuse = |why| {
        Err(ClientError::NotDaemon {
            socket: socket.to_path_buf(),
            why,
        })
    };
    fn stat(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
        move |source| ClientError::Stat {
            path: path.to_path_buf(),
            source,
        }
    }
    let meta = std::fs::symlink_metadata(socket).map_err(stat(socket))?;
    if !meta.file_type().is_socket() {
        return refuse(NotDaemon::NotASocket);
    }
    if meta.uid() != 0 {
        return refuse(NotDaemon::SocketOwner(meta.uid()));
    }
    let cred = stream.peer_cred().map_err(ClientError::PeerCred)?;
    if cred.uid() != 0 {
        return refuse(NotDaemon::ServerUid(cred.uid()));
    }
    let pid = match cred.pid() {
        Some(p) if p > 0 => p,
        _ if check.other_pid_namespace => return Ok(()),
        _ => return refuse(NotDaemon::OtherPidNamespace),
    };
    let want = std::fs::metadata(&check.exe).map_err(stat(&check.exe))?;
    match std::fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(exe) if (exe.dev(), exe.ino()) == (want.dev(), want.ino()) => {}
        Ok(_) => {
            return refuse(NotDaemon::OtherExe {
                pid,
                exe: check.exe.clone(),
            });
        }
        // Not ours to read (another user's process, or hidden by the Landlock domain of an
        // enclosing `tether exec`): the command line below still has to be the daemon's.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(source) => return Err(ClientError::ServerExe { pid, source }),
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.split(|&b| b == 0).nth(1) != Some(b"run") {
        return refuse(NotDaemon::NotRun(pid));
    }
    Ok(())
}

/// Blocking client: one HTTP request to the daemon at `socket`.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
    Session::open(socket, None)?.request(method, path, body)
}

/// One connection to the daemon, kept for several requests (HTTP/1.1 keep-alive): `tether
/// exec` connects, and is checked, once, before it is tracked and sandboxed, and reports its
/// sandbox over the same connection (a new connect from inside the task would be judged by
/// the task's scope, and Landlock hides the daemon's /proc entries from it).
pub struct Session {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    socket: std::path::PathBuf,
}

impl Session {
    /// Connects to `socket`; with `check`, refuses a peer that is not the daemon.
    pub fn open(socket: &Path, check: Option<&DaemonCheck>) -> Result<Session, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let http = |source| ClientError::Http {
            socket: socket.to_path_buf(),
            source,
        };
        let sender = rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: socket.to_path_buf(),
                    source,
                })?;
            if let Some(c) = check {
                check_daemon(socket, &stream, c)?;
            }
            let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(http)?;
            // The connection is driven by a worker of its own.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, ClientError>(sender)
        })?;
        Ok(Session {
            rt,
            sender,
            socket: socket.to_path_buf(),
        })
    }

    /// One request on the connection.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        use http_body_util::{BodyExt, Full};
        let socket = &self.socket;
        let http = |source| ClientError::Http {
            socket: socket.clone(),
            source,
        };
        let sender = &mut self.sender;
        self.rt.block_on(async {
            sender.ready().await.map_err(http)?;
            let bytes = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "tether")
                .header("content-type", "application/json")
                .body(Full::new(hyper::body::Bytes::from(bytes)))?;
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
            let value: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(source) => {
                    return Err(ClientError::BadReply {
                        source,
                        body: body.to_vec(),
                    });
                }
            };
            if status.is_success() {
                Ok(value)
            } else {
                Err(match value["error"].as_str() {
                    Some(message) => ClientError::Refused {
                        status: status.as_u16(),
                        message: message.to_string(),
                    },
                    None => ClientError::Status(status),
                })
            }
        })
    }

    /// Asks the daemon to track the calling process: the whole answer (pid, sandbox plan).
    pub fn register_self(&mut self) -> Result<Value, ClientError> {
        self.request("POST", "/v1/register", None)
    }

    /// Presents `token` for the calling process: pid, task and sandbox plan.
    pub fn bind_self(&mut self, token: &str) -> Result<Value, ClientError> {
        self.request("POST", "/v1/bind", Some(&json!({"token": token})))
    }

    /// Tells the daemon which sandbox layers the calling process applied.
    pub fn report_sandbox(&mut self, layers: &crate::contain::sandbox::Layers) -> Result<Value, ClientError> {
        let body = serde_json::to_value(layers)?;
        self.request("POST", "/v1/sandbox", Some(&body))
    }
}

/// Asks the daemon to track the calling process.
pub fn register_self(socket: &Path) -> Result<u32, ClientError> {
    let v = Session::open(socket, None)?.register_self()?;
    match v["pid"].as_u64() {
        Some(p) => Ok(p as u32),
        None => Err(ClientError::NoPid(v)),
    }
}

/// Presents `token` for the calling process; returns the daemon's answer (pid and task).
pub fn bind_self(socket: &Path, token: &str) -> Result<Value, ClientError> {
    Session::open(socket, None)?.bind_self(token)
}

/// The daemon's status report.
pub fn status_of(socket: &Path) -> Result<Value, ClientError> {
    request(socket, "GET", "/v1/status", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `state` at `path` (the admin routes when `admin`), every caller untracked.
    fn serve_fake(path: &Path, state: ApiState, admin: bool) {
        let mode = if admin { 0o600 } else { 0o666 };
        tokio::spawn(serve(
            bind(path, mode).unwrap(),
            router(state, admin),
            Arc::new(|_| None),
        ));
    }

    /// A fake event loop answering every call with the request's pid.
    fn fake_loop() -> ApiState {
        fake_loop_admitting(true)
    }

    /// [`fake_loop`], admitting admin callers or (as for a tracked one) refusing them.
    fn fake_loop_admitting(admit: bool) -> ApiState {
        let (tx, mut rx) = mpsc::channel::<Call>(4);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let v = match c.request {
                    Request::AdminCaller { .. } if admit => Ok(json!({})),
                    Request::AdminCaller { pid } => Err(ApiError::new(403, format!("tracked: {pid}"))),
                    Request::Register { pid } => Ok(json!({"pid": pid})),
                    Request::Refused { reason, .. } => Ok(json!({"refused": reason})),
                    other => Err(ApiError::new(418, format!("{other:?}"))),
                };
                let _ = c.reply.send(v);
            }
        });
        ApiState {
            calls: tx,
            keys: Arc::new(RwLock::new(Keys::default())),
            scopes: Default::default(),
            max_chain: 8,
            admins: Admins::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn register_uses_the_peer_pid_and_admin_routes_need_the_admin_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let state = fake_loop();
        serve_fake(&path, state, false);
        let p = path.clone();
        let got = tokio::task::spawn_blocking(move || register_self(&p)).await.unwrap();
        assert_eq!(got.unwrap(), std::process::id());
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || request(&p, "GET", "/v1/tasks", None))
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such endpoint"), "{err}");
        // A pid in the body of the self-bind is refused outright.
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || {
            request(&p, "POST", "/v1/bind", Some(&json!({"token": "x", "pid": 1})))
        })
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad request"), "{err}");
        // A token that does not verify: refused with the reason.
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || bind_self(&p, "garbage"))
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("credential refused: malformed token"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_admin_route_asks_whether_the_caller_may_and_a_refusal_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        for (admit, name) in [(true, "admitted.sock"), (false, "refused.sock")] {
            let path = dir.path().join(name);
            let state = fake_loop_admitting(admit);
            serve_fake(&path, state, true);
            for (method, route) in [("POST", "/v1/register"), ("POST", "/v1/mode"), ("GET", "/nope")] {
                let p = path.clone();
                let body = (route == "/v1/mode").then(|| json!({"mode": "observe"}));
                let got = tokio::task::spawn_blocking(move || request(&p, method, route, body.as_ref()))
                    .await
                    .unwrap();
                if admit {
                    // Past the gate: the fake loop's own answer (or the 404).
                    assert!(
                        got.as_ref()
                            .map_or_else(|e| !e.to_string().contains("tracked"), |_| true),
                        "{got:?}"
                    );
                } else {
                    let err = got.unwrap_err().to_string();
                    assert!(
                        err.contains(&format!("tracked: {}", std::process::id())),
                        "{route}: {err}"
                    );
                }
            }
        }
    }

    /// One uid holding its share of connections gets the next one closed at once; the
    /// connections it holds still answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_uid_cannot_hold_more_than_its_share_of_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let state = fake_loop();
        serve_fake(&path, state, false);
        let mut held = Vec::new();
        for _ in 0..MAX_PER_UID {
            held.push(tokio::net::UnixStream::connect(&path).await.unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut extra = tokio::net::UnixStream::connect(&path).await.unwrap();
        let _ = extra.write_all(b"GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), extra.read_to_end(&mut buf))
            .await
            .expect("the extra connection is closed, not left hanging");
        assert_eq!(n.unwrap_or(0), 0, "{}", String::from_utf8_lossy(&buf));
        // A held one still works.
        let c = &mut held[0];
        c.write_all(b"POST /v1/register HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut got = [0u8; 64];
        let n = c.read(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
        drop(held);
        // Their slots are given back.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let p = path.clone();
        let got = tokio::task::spawn_blocking(move || register_self(&p)).await.unwrap();
        assert_eq!(got.unwrap(), std::process::id());
    }

    #[test]
    fn admins_are_every_caller_unless_limited_by_uid_or_group() {
        let any = Admins::default();
        assert!(any.admit(1000, 1000, None));
        let limited = Admins {
            uids: vec![0],
            gids: vec![4242],
        };
        assert!(limited.admit(0, 0, None));
        assert!(limited.admit(1000, 4242, None));
        assert!(!limited.admit(1000, 1000, None));
        // Supplementary groups of a live process: this one's own.
        let mine: Vec<u32> = nix::unistd::getgroups().unwrap().iter().map(|g| g.as_raw()).collect();
        if let Some(&g) = mine.iter().find(|&&g| g != nix::unistd::getgid().as_raw()) {
            let by_group = Admins {
                uids: vec![],
                gids: vec![g],
            };
            assert!(by_group.admit(12345, 12345, Some(std::process::id())));
        }
    }

    #[test]
    fn unreachable_daemon_is_a_clear_error() {
        let err = register_self(Path::new("/nonexistent/tether.sock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is `tether run` running?"), "{err}");
    }
}
