//! Syslog (RFC 5424) as the classic SIEM path: each OCSF object is the MSG of one message,
//! over UDP (one datagram each), TCP (octet-counting framing, RFC 6587) or a Unix datagram
//! socket (/dev/log). Header fields are data only where RFC 5424 allows it: the host name is
//! reduced to printable ASCII without spaces, the message is JSON (no raw newline).
use std::{
    io::{self, Write},
    net::{TcpStream, UdpSocket},
    os::unix::net::UnixDatagram,
    time::Duration,
};

use super::Stream;

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("--syslog {0:?}: expected udp://HOST:PORT, tcp://HOST:PORT or unix:PATH")]
    Url(String),
    #[error("syslog {target}: {source}")]
    Io { target: String, source: io::Error },
}

enum Transport {
    Udp(UdpSocket),
    Tcp(Option<TcpStream>, String),
    Unix(UnixDatagram),
}

pub struct Syslog {
    transport: Transport,
    target: String,
    hostname: String,
}

/// facility local0 (16); severity by stream: alerts warning (4), audit informational (6).
fn pri(stream: Stream) -> u8 {
    16 * 8
        + match stream {
            Stream::Alerts => 4,
            Stream::Audit => 6,
        }
}

/// An RFC 5424 header field: printable US-ASCII without spaces, at most `max` bytes; `-`
/// when empty.
pub fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

/// One message: `<PRI>1 TIMESTAMP HOST tether PID MSGID - MSG`.
pub fn format(stream: Stream, hostname: &str, pid: u32, timestamp: &str, msg: &str) -> String {
    format!(
        "<{}>1 {} {} tether {} {} - {}",
        pri(stream),
        timestamp,
        header_field(hostname, 255),
        pid,
        stream.as_str(),
        msg
    )
}

impl Syslog {
    pub fn connect(url: &str) -> Result<Syslog, SyslogError> {
        let io_err = |source| SyslogError::Io {
            target: url.to_string(),
            source,
        };
        let transport = if let Some(addr) = url.strip_prefix("udp://") {
            let sock = UdpSocket::bind(if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" }).map_err(io_err)?;
            sock.connect(addr).map_err(io_err)?;
            Transport::Udp(sock)
        } else if let Some(addr) = url.strip_prefix("tcp://") {
            if addr.is_empty() {
                return Err(SyslogError::Url(url.into()));
            }
            // Connected lazily (and again after a failure): a receiver down at start is not fatal.
            Transport::Tcp(None, addr.to_string())
        } else if let Some(path) = url.strip_prefix("unix:") {
            let sock = UnixDatagram::unbound().map_err(io_err)?;
            sock.connect(path).map_err(io_err)?;
            Transport::Unix(sock)
        } else {
            return Err(SyslogError::Url(url.into()));
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Syslog {
            transport,
            target: url.to_string(),
            hostname,
        })
    }

    /// Sends one line; an error is the caller's to count (syslog is best effort by nature).
    pub fn send(&mut self, stream: Stream, line: &str) -> Result<(), SyslogError> {
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        let msg = format(stream, &self.hostname, std::process::id(), &ts, line);
        let target = self.target.clone();
        let io_err = |source| SyslogError::Io { target, source };
        match &mut self.transport {
            Transport::Udp(s) => s.send(msg.as_bytes()).map(|_| ()).map_err(io_err),
            Transport::Unix(s) => s.send(msg.as_bytes()).map(|_| ()).map_err(io_err),
            Transport::Tcp(conn, addr) => {
                if conn.is_none() {
                    let s = TcpStream::connect(addr.as_str()).map_err(io_err)?;
                    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
                    *conn = Some(s);
                }
                let framed = format!("{} {msg}", msg.len());
                let r = conn.as_mut().map(|s| s.write_all(framed.as_bytes()));
                match r {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => {
                        *conn = None; // reconnect next time
                        Err(SyslogError::Io {
                            target: self.target.clone(),
                            source: e,
                        })
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_header_and_a_json_message() {
        let m = format(
            Stream::Alerts,
            "node 1\n",
            42,
            "2026-11-22T10:00:00.000000Z",
            "{\"a\":\"x\\ny\"}",
        );
        assert_eq!(
            m,
            "<132>1 2026-11-22T10:00:00.000000Z node1 tether 42 alerts - {\"a\":\"x\\ny\"}"
        );
        assert!(!m.contains('\n'));
        assert_eq!(header_field("", 10), "-");
        assert!(format(Stream::Audit, "h", 1, "t", "{}").starts_with("<134>1 "));
    }

    #[test]
    fn udp_and_unix_deliver_one_message_per_line_and_bad_urls_are_refused() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = Syslog::connect(&format!("udp://{}", rx.local_addr().unwrap())).unwrap();
        s.send(Stream::Audit, "{\"x\":1}").unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<134>1 "), "{got}");
        assert!(got.ends_with("audit - {\"x\":1}"), "{got}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let ux = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::connect(&format!("unix:{}", path.display())).unwrap();
        s.send(Stream::Alerts, "{}").unwrap();
        let n = ux.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("<132>1 "));

        for bad in ["syslog.example:514", "tcp://", "http://x"] {
            let e = Syslog::connect(bad).err().unwrap().to_string();
            assert!(e.contains("expected udp://"), "{e}");
        }
    }

    #[test]
    fn tcp_frames_by_octet_count() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = Syslog::connect(&format!("tcp://{}", l.local_addr().unwrap())).unwrap();
        s.send(Stream::Audit, "{\"a\":1}").unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = c.read(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        let (len, rest) = got.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len(), "{got}");
    }
}
