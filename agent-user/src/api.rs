//! The local API: a Unix socket where a process asks to be tracked. The daemon learns the
//! caller's pid from the socket (SO_PEERCRED), never from the request, so a process can only
//! ever register itself.
//!
//! Protocol (one JSON object per line each way):
//!   -> {"op":"register"}
//!   <- {"ok":true,"pid":1234}  |  {"ok":false,"error":"..."}
//!   -> {"op":"status"}
//!   <- {"ok":true,"status":{"kernel":..., "features":..., "hooks":[...], "degraded":[...], ...}}
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

pub const DEFAULT_SOCKET: &str = "/run/tether/tether.sock";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Track the calling process (and everything it starts).
    Register {},
    /// The daemon's state: kernel features, the mechanism in effect per hook, what is degraded,
    /// loss counters.
    Status {},
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl Reply {
    pub fn error(e: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            pid: None,
            error: Some(e.into()),
            status: None,
        }
    }
}

/// A request with the caller's identity, for the daemon's event loop.
#[derive(Debug)]
pub struct Call {
    pub pid: u32,
    pub uid: u32,
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot create the API socket {path}: {source}")]
    Bind { path: String, source: std::io::Error },
}

/// Binds the socket (replacing a stale one left by a dead daemon).
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |source| ApiError::Bind {
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
    // Any local user may register their own processes (which only adds monitoring of them).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Serves the socket until the receiver side of `calls` is gone.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("API accept failed: {e}");
                continue;
            }
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, calls).await {
                debug!("API connection: {e}");
            }
        });
    }
}

async fn handle(stream: UnixStream, calls: mpsc::Sender<Call>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(4096));
    reader.read_line(&mut line).await?;
    let reply = match (serde_json::from_str::<Request>(line.trim()), cred.pid()) {
        (Err(e), _) => Reply::error(format!("bad request: {e}")),
        (_, None) => Reply::error("the caller's pid is unknown (SO_PEERCRED)"),
        (Ok(request), Some(pid)) => {
            let (tx, rx) = oneshot::channel();
            let call = Call {
                pid: pid as u32,
                uid: cred.uid(),
                request,
                reply: tx,
            };
            if calls.send(call).await.is_err() {
                Reply::error("the daemon is shutting down")
            } else {
                rx.await
                    .unwrap_or_else(|_| Reply::error("the daemon dropped the request"))
            }
        }
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

/// Blocking client: asks the daemon at `socket` to track the calling process.
pub fn register_self(socket: &Path) -> Result<u32, String> {
    match request(socket, &Request::Register {})? {
        Reply {
            ok: true,
            pid: Some(pid),
            ..
        } => Ok(pid),
        Reply { error, .. } => Err(error.unwrap_or_else(|| "refused".into())),
    }
}

/// Blocking client: the daemon's status report.
pub fn status(socket: &Path) -> Result<serde_json::Value, String> {
    match request(socket, &Request::Status {})? {
        Reply {
            ok: true,
            status: Some(s),
            ..
        } => Ok(s),
        Reply { error, .. } => Err(error.unwrap_or_else(|| "refused".into())),
    }
}

/// One blocking request/reply exchange.
fn request(socket: &Path, req: &Request) -> Result<Reply, String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the tether daemon at {}: {e} (is `tether run` running?)",
            socket.display()
        )
    })?;
    let mut req = serde_json::to_string(req).map_err(|e| e.to_string())?;
    req.push('\n');
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("reading from {}: {e}", socket.display()))?;
    serde_json::from_str(line.trim()).map_err(|e| format!("bad reply from the daemon ({e}): {line:?}"))
}

pub fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_stable() {
        assert_eq!(
            serde_json::to_string(&Request::Register {}).unwrap(),
            r#"{"op":"register"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status {}).unwrap(),
            r#"{"op":"status"}"#
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"register","pid":1}"#).is_err(),
            "no pid in requests"
        );
    }

    #[tokio::test]
    async fn register_uses_the_peer_pid_not_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(call) = rx.recv().await {
                let _ = call.reply.send(Reply {
                    ok: true,
                    pid: Some(call.pid),
                    error: None,
                    status: None,
                });
            }
        });
        let p = path.clone();
        let got = tokio::task::spawn_blocking(move || register_self(&p)).await.unwrap();
        assert_eq!(got, Ok(std::process::id()));
    }

    #[test]
    fn unreachable_daemon_is_a_clear_error() {
        let err = register_self(Path::new("/nonexistent/tether.sock")).unwrap_err();
        assert!(err.contains("is `tether run` running?"), "{err}");
    }
}
