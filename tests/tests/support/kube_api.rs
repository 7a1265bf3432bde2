//! A local HTTPS server that speaks the Kubernetes API's pod list/watch protocol, serving
//! recorded objects (tests/fixtures/kubernetes), since no cluster runs here. A list answers the
//! recorded PodList; a watch streams, chunked, the lines a test queues ([`KubeApi::push`]), and
//! ends when it queues [`END_WATCH`]. Requests without the expected bearer token get 401.
#![allow(dead_code)]
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Queued to end the current watch response (the server's timeoutSeconds).
pub const END_WATCH: &str = "<end of watch>";

#[derive(Default)]
struct State {
    list: String,
    token: String,
    queue: VecDeque<String>,
    /// Every request: (path and query, Authorization header).
    requests: Vec<(String, String)>,
    /// The newest watch: only it takes queued lines (a client that dropped an older watch
    /// leaves its server side waiting).
    watch_gen: u64,
}

pub struct KubeApi {
    pub port: u16,
    state: Arc<Mutex<State>>,
    more: Arc<tokio::sync::Notify>,
    rt: tokio::runtime::Runtime,
}

impl KubeApi {
    /// `acceptor`: TLS with the server certificate (`Pki::acceptor`).
    pub fn start(acceptor: tokio_rustls::TlsAcceptor, list: &str, token: &str) -> KubeApi {
        let state = Arc::new(Mutex::new(State {
            list: list.into(),
            token: token.into(),
            ..State::default()
        }));
        let more = Arc::new(tokio::sync::Notify::new());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (st, mo) = (state.clone(), more.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st, mo) = (acceptor.clone(), st.clone(), mo.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, st, mo).await;
                    }
                });
            }
        });
        KubeApi { port, state, more, rt }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Queues watch lines (JSON events, or [`END_WATCH`]).
    pub fn push<'a>(&self, lines: impl IntoIterator<Item = &'a str>) {
        self.state
            .lock()
            .unwrap()
            .queue
            .extend(lines.into_iter().map(str::to_string));
        self.more.notify_waiters();
    }

    pub fn set_token(&self, token: &str) {
        self.state.lock().unwrap().token = token.into();
    }

    pub fn set_list(&self, list: &str) {
        self.state.lock().unwrap().list = list.into();
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        // Wakes the watches so the runtime can stop.
        self.more.notify_waiters();
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    st: Arc<Mutex<State>>,
    more: Arc<tokio::sync::Notify>,
) {
    let mut stream = BufReader::new(stream);
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if stream.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = v.trim().to_string();
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let (expected, list) = {
        let mut s = st.lock().unwrap();
        s.requests.push((target.clone(), auth.clone()));
        (format!("Bearer {}", s.token), s.list.clone())
    };
    let out = stream.get_mut();
    if auth != expected {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
        let _ = out
            .write_all(format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
            .await;
        let _ = out.shutdown().await;
        return;
    }
    if !target.starts_with("/api/v1/pods?") {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        let _ = out.shutdown().await;
        return;
    }
    if !target.contains("watch=true") {
        let _ = out
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{list}", list.len()).as_bytes())
            .await;
        let _ = out.shutdown().await;
        return;
    }
    if out
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = out.flush().await;
    let mine = {
        let mut s = st.lock().unwrap();
        s.watch_gen += 1;
        s.watch_gen
    };
    more.notify_waiters();
    loop {
        let notified = more.notified();
        let next = {
            let mut s = st.lock().unwrap();
            if s.watch_gen != mine {
                return;
            }
            s.queue.pop_front()
        };
        match next {
            Some(line) if line == END_WATCH => break,
            Some(line) => {
                let chunk = format!("{line}\n");
                if out
                    .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = out.flush().await;
            }
            None => notified.await,
        }
    }
    let _ = out.write_all(b"0\r\n\r\n").await;
    let _ = out.shutdown().await;
}
