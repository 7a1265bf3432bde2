//! Delivery of the two streams to the SOC: **audit** (every action of an agent process, with
//! its decision) and **alerts** (violations, credential problems, loss of coverage), each OCSF
//! JSON, one object per line, each routed to its own sinks: stdout, a size-rotated file
//! ([`file`](mod@file)), the HTTPS webhook behind a bounded on-disk spool ([`spool`], [`webhook`]), syslog
//! ([`syslog`]). Repeated alerts are folded ([`fold`]).
//!
//! Lines are JSON from serde_json, so every string in them (paths, argv, host names) is
//! escaped data: a newline, a quote or an ANSI escape in a file name cannot break a line or
//! forge a field in any sink.
pub mod file;
pub mod fold;
pub mod introduced;
pub mod spool;
pub mod syslog;
pub mod webhook;

use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tracing::warn;

use crate::metrics::Metrics;

pub use crate::model::Stream;
pub use introduced::RecordForm;

/// Buffer of stdout and of each file sink: lines leave in few large writes, all of them at
/// the end of each drained batch of events (`Delivery::flush`) and at exit.
const SINK_BUFFER: usize = 256 << 10;

/// A sink named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    Webhook,
    Syslog,
    None,
}

/// A sink or size option that does not parse (clap prints it with the option's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown sink {0:?}: expected stdout, file:PATH, webhook, syslog or none")]
    Sink(String),
    #[error("{0:?} is not a size (e.g. 4096, 64MiB, 1G)")]
    NotSize(String),
    #[error("{0:?}: unknown unit {1:?} (use K, M or G, powers of 1024)")]
    Unit(String, String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

pub fn parse_sink(s: &str) -> Result<SinkSpec, OptionError> {
    Ok(match s {
        "stdout" => SinkSpec::Stdout,
        "webhook" => SinkSpec::Webhook,
        "syslog" => SinkSpec::Syslog,
        "none" => SinkSpec::None,
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => SinkSpec::File(PathBuf::from(p)),
            _ => return Err(OptionError::Sink(s.into())),
        },
    })
}

/// A size: bytes, or with a K/M/G (KiB/MiB/GiB, powers of 1024) suffix.
pub fn parse_size(s: &str) -> Result<u64, OptionError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| OptionError::NotSize(s.into()))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(OptionError::Unit(s.into(), other.into())),
    };
    n.checked_mul(mult).ok_or_else(|| OptionError::TooLarge(s.into()))
}

/// Where the streams go, and how (the `tether run` options).
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Where the audit stream (every action of an agent process, with its decision) goes:
    /// stdout, file:PATH, webhook, syslog or none. Repeatable. Default: stdout.
    #[arg(long = "audit", value_name = "SINK", value_parser = parse_sink)]
    pub audit: Vec<SinkSpec>,
    /// Where the alerts stream (OCSF Detection Findings: violations, credential problems,
    /// loss of coverage or of events) goes; as --audit. Default: stdout.
    #[arg(long = "alerts", value_name = "SINK", value_parser = parse_sink)]
    pub alerts: Vec<SinkSpec>,
    /// file: sinks rotate when they pass this size (FILE.1 is the newest rotated file).
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_size)]
    pub file_max_size: u64,
    /// Rotated files kept per file sink (older ones are deleted).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub file_keep: usize,
    /// HTTPS URL the `webhook` sink POSTs to (NDJSON batches, header x-tether-stream); a
    /// batch leaves the spool only when the receiver answers 2xx.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// PEM bundle of the CAs to trust for the webhook (default: the web PKI roots).
    #[arg(long, value_name = "FILE")]
    pub webhook_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for mTLS to the webhook; needs --webhook-key.
    #[arg(long, value_name = "FILE")]
    pub webhook_cert: Option<PathBuf>,
    /// Private key (PEM) of --webhook-cert.
    #[arg(long, value_name = "FILE")]
    pub webhook_key: Option<PathBuf>,
    /// File holding a bearer token for the webhook (read before every request, so it may be
    /// rotated in place).
    #[arg(long, value_name = "FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// Most events per webhook request.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub webhook_batch: usize,
    /// Directory of the webhook's spool: what the receiver has not acknowledged survives
    /// outages and daemon restarts there.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/tether/spool")]
    pub spool_dir: PathBuf,
    /// Bound of the spool on disk. When full, the oldest audit events are dropped first,
    /// alerts last; the loss is counted (tether_spool_dropped_total) and alerted.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub spool_max_size: u64,
    /// Syslog receiver of the `syslog` sink (RFC 5424): udp://HOST:PORT, tcp://HOST:PORT
    /// (octet-counted frames) or unix:PATH (e.g. unix:/dev/log).
    #[arg(long, value_name = "URL")]
    pub syslog: Option<String>,
    /// The form of audit events: `compact` writes a process's identity and lineage once (at
    /// its exec or first event, again when its task, pod or lineage changes, when a sink
    /// starts over and every minute) and refers to it from its later events by
    /// `actor.process.uid` / `parent_process.uid`; `full` writes them in every event, for
    /// receivers that need self-contained lines. Alerts are always self-contained.
    #[arg(long, value_name = "FORM", value_enum, default_value_t = RecordForm::Compact)]
    pub record_form: RecordForm,
    /// Identical alerts (same task, rule and target) within this window are folded into one
    /// with a count; the first is always sent at once. 0s: no folding.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub fold_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    File(#[from] file::FileError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    Syslog(#[from] syslog::SyslogError),
    #[error("writing the {stream} stream to stdout: {source}")]
    Stdout { stream: &'static str, source: io::Error },
}

/// A sink of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Stdout,
    /// Index into `Delivery::files` (both streams may share one file).
    File(usize),
    Webhook,
    Syslog,
}

/// The webhook worker to spawn: it delivers the spool until the process ends.
pub type WebhookWorker = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub struct Delivery {
    audit: Vec<Route>,
    alerts: Vec<Route>,
    stdout: BufWriter<io::Stdout>,
    files: Vec<file::RotatingFile>,
    spool: Option<Arc<Mutex<spool::Spool>>>,
    wake: Arc<Notify>,
    syslog: Option<syslog::Syslog>,
    metrics: Metrics,
    /// Per stream (audit, alerts): a sink of it started over (a file rotated, the spool
    /// dropped lines) since [`Delivery::started_over`] last said.
    started_over: [bool; 2],
    /// Lines handed to the sinks.
    pub written: u64,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Audit => 0,
        Stream::Alerts => 1,
    }
}

impl Delivery {
    /// Opens every sink `args` names; the webhook worker, when there is one, is returned to be
    /// spawned on the runtime.
    pub fn open(args: &DeliveryArgs, metrics: Metrics) -> Result<(Delivery, Option<WebhookWorker>), DeliveryError> {
        let default = [SinkSpec::Stdout];
        let audit: &[SinkSpec] = if args.audit.is_empty() { &default } else { &args.audit };
        let alerts: &[SinkSpec] = if args.alerts.is_empty() { &default } else { &args.alerts };
        let uses = |s: &SinkSpec| audit.contains(s) || alerts.contains(s);
        let conflict = |a: &[SinkSpec], name: &str| {
            if a.contains(&SinkSpec::None) && a.len() > 1 {
                Err(DeliveryError::Config(format!(
                    "--{name} none cannot be combined with other sinks"
                )))
            } else {
                Ok(())
            }
        };
        conflict(audit, "audit")?;
        conflict(alerts, "alerts")?;
        // A sink that needs a URL has one, and a URL given is used by some stream.
        for (sink, name, url) in [
            (SinkSpec::Webhook, "webhook", &args.webhook),
            (SinkSpec::Syslog, "syslog", &args.syslog),
        ] {
            match (uses(&sink), url) {
                (true, None) => {
                    return Err(DeliveryError::Config(format!(
                        "a stream is sent to `{name}` but no --{name} URL is given"
                    )));
                }
                (false, Some(url)) => {
                    return Err(DeliveryError::Config(format!(
                        "--{name} {url} is set but no stream is sent to it: add --alerts {name} and/or --audit {name}"
                    )));
                }
                _ => {}
            }
        }
        let mut files: Vec<file::RotatingFile> = Vec::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut routes = |specs: &[SinkSpec]| -> Result<Vec<Route>, DeliveryError> {
            let mut out = Vec::new();
            for s in specs {
                let r = match s {
                    SinkSpec::Stdout => Route::Stdout,
                    SinkSpec::Webhook => Route::Webhook,
                    SinkSpec::Syslog => Route::Syslog,
                    SinkSpec::None => continue,
                    SinkSpec::File(p) => {
                        let i = match paths.iter().position(|q| q == p) {
                            Some(i) => i,
                            None => {
                                files.push(file::RotatingFile::open(p, args.file_max_size, args.file_keep)?);
                                paths.push(p.clone());
                                paths.len() - 1
                            }
                        };
                        Route::File(i)
                    }
                };
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            Ok(out)
        };
        let audit = routes(audit)?;
        let alerts = routes(alerts)?;
        let wake = Arc::new(Notify::new());
        let (spool, worker) = match &args.webhook {
            Some(url) => {
                let cfg = webhook::WebhookConfig {
                    url: url.clone(),
                    ca: args.webhook_ca.clone(),
                    cert: args.webhook_cert.clone(),
                    key: args.webhook_key.clone(),
                    token_file: args.webhook_token_file.clone(),
                    batch: args.webhook_batch.max(1),
                    timeout: Duration::from_secs(10),
                    backoff_min: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(30),
                };
                let client = webhook::client(&cfg)?;
                let spool = Arc::new(Mutex::new(spool::Spool::open(&args.spool_dir, args.spool_max_size)?));
                if let Ok(s) = spool.lock() {
                    metrics.spool_depth(|st| s.depth(st), s.bytes());
                }
                let worker: WebhookWorker =
                    Box::pin(webhook::run(client, cfg, spool.clone(), wake.clone(), metrics.clone()));
                (Some(spool), Some(worker))
            }
            None => (None, None),
        };
        let syslog = args.syslog.as_deref().map(syslog::Syslog::connect).transpose()?;
        Ok((
            Delivery {
                audit,
                alerts,
                stdout: BufWriter::with_capacity(SINK_BUFFER, io::stdout()),
                files,
                spool,
                wake,
                syslog,
                metrics,
                started_over: [false; 2],
                written: 0,
            },
            worker,
        ))
    }

    /// Sends one line of `stream` to its sinks. Returns what the spool had to drop to make
    /// room (for the caller to alert on). A sink that fails is an error, except syslog,
    /// whose failures are counted and logged (it has no acknowledgement to wait for).
    pub fn send(&mut self, stream: Stream, line: &str) -> Result<spool::Dropped, DeliveryError> {
        // Borrowed field by field: the routes are read while the sinks are written.
        let Delivery {
            audit,
            alerts,
            stdout,
            files,
            spool,
            wake,
            syslog,
            metrics,
            started_over,
            ..
        } = self;
        let (audit, alerts) = (&*audit, &*alerts);
        let routes = match stream {
            Stream::Audit => audit,
            Stream::Alerts => alerts,
        };
        let mut dropped = spool::Dropped::default();
        for &r in routes.iter() {
            match r {
                Route::Stdout => {
                    (stdout.write_all(line.as_bytes()).and_then(|()| stdout.write_all(b"\n"))).map_err(|source| {
                        DeliveryError::Stdout {
                            stream: stream.as_str(),
                            source,
                        }
                    })?
                }
                Route::File(i) => {
                    if files[i].line(line)? {
                        // Every stream written to this file starts over in the new one.
                        for s in [Stream::Audit, Stream::Alerts] {
                            let routes = if s == Stream::Audit { audit } else { alerts };
                            if routes.contains(&Route::File(i)) {
                                started_over[index(s)] = true;
                            }
                        }
                    }
                }
                Route::Webhook => {
                    if let Some(s) = spool.as_ref() {
                        let mut s = s
                            .lock()
                            .map_err(|_| DeliveryError::Config("spool lock poisoned".into()))?;
                        dropped = s.append(stream, line)?;
                        if dropped.audit > 0 {
                            started_over[index(Stream::Audit)] = true;
                        }
                        metrics.spool_dropped(Stream::Audit, dropped.audit);
                        metrics.spool_dropped(Stream::Alerts, dropped.alerts);
                        metrics.spool_depth(|st| s.depth(st), s.bytes());
                        wake.notify_one();
                    }
                }
                Route::Syslog => {
                    if let Some(s) = syslog.as_mut()
                        && let Err(e) = s.send(stream, line)
                    {
                        metrics.syslog_failed();
                        warn!("{e}");
                    }
                }
            }
        }
        self.written += 1;
        Ok(dropped)
    }

    /// Would a line of `len` bytes of `stream` make one of its sinks start over (a file
    /// rotate)? A line that refers to an earlier one must not be the first of a new file.
    pub fn would_start_over(&self, stream: Stream, len: usize) -> bool {
        let routes = match stream {
            Stream::Audit => &self.audit,
            Stream::Alerts => &self.alerts,
        };
        routes.iter().any(|r| match r {
            Route::File(i) => self.files[*i].would_rotate(len),
            _ => false,
        })
    }

    /// Did a sink of `stream` start over (a file rotated, the spool dropped lines) since
    /// the last call? Clears the flag.
    pub fn started_over(&mut self, stream: Stream) -> bool {
        std::mem::take(&mut self.started_over[index(stream)])
    }

    /// Unacknowledged events in the webhook spool (None: no webhook).
    pub fn spool_depth(&self) -> Option<u64> {
        let s = self.spool.as_ref()?.lock().ok()?;
        Some(s.depth(Stream::Audit) + s.depth(Stream::Alerts))
    }

    pub fn flush(&mut self) -> Result<(), DeliveryError> {
        self.stdout
            .flush()
            .map_err(|source| DeliveryError::Stdout { stream: "both", source })?;
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        d: DeliveryArgs,
    }

    fn args(a: &[&str]) -> DeliveryArgs {
        let mut v = vec!["t"];
        v.extend(a);
        T::try_parse_from(v).map(|t| t.d).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sizes_and_sinks_parse_with_clear_errors() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12XB").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().to_string().contains("not a size"));
        assert_eq!(
            parse_sink("file:/var/log/a.jsonl"),
            Ok(SinkSpec::File("/var/log/a.jsonl".into()))
        );
        assert!(
            parse_sink("file:")
                .unwrap_err()
                .to_string()
                .contains("expected stdout, file:PATH")
        );
        assert!(parse_sink("kafka").is_err());
    }

    #[test]
    fn routing_errors_name_the_missing_piece() {
        let err = |a: &[&str]| Delivery::open(&args(a), Metrics::new()).err().unwrap().to_string();
        assert!(err(&["--alerts", "webhook"]).contains("no --webhook URL"));
        assert!(err(&["--webhook", "https://siem.example/x"]).contains("no stream is sent to it"));
        assert!(err(&["--audit", "syslog"]).contains("no --syslog URL"));
        assert!(err(&["--audit", "none", "--audit", "stdout"]).contains("cannot be combined"));
    }

    #[test]
    fn each_stream_reaches_only_its_sinks_and_a_shared_file_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let both = dir.path().join("both.jsonl");
        let a = args(&[
            "--audit",
            &format!("file:{}", audit.display()),
            "--audit",
            &format!("file:{}", both.display()),
            "--alerts",
            &format!("file:{}", both.display()),
        ]);
        let (mut d, worker) = Delivery::open(&a, Metrics::new()).unwrap();
        assert!(worker.is_none());
        d.send(Stream::Audit, "{\"class_uid\":1001}").unwrap();
        d.send(Stream::Alerts, "{\"class_uid\":2004}").unwrap();
        d.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&audit).unwrap(), "{\"class_uid\":1001}\n");
        assert_eq!(
            std::fs::read_to_string(&both).unwrap(),
            "{\"class_uid\":1001}\n{\"class_uid\":2004}\n"
        );
    }

    /// Hostile names are data in every sink: serde_json escapes them, so a line stays one
    /// line and no field can be forged.
    #[test]
    fn hostile_file_names_cannot_break_a_line_or_forge_a_field() {
        let hostile = [
            "evil\n{\"class_uid\":2004,\"forged\":true}",
            "quote\"},\"forged\":{\"x\":\"",
            "ansi\u{1b}[31mred\u{1b}[0m\r",
            &String::from_utf8_lossy(b"bad-utf8-\xff\xfe"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let a = args(&[
            "--audit",
            &format!("file:{}", path.display()),
            "--audit",
            "syslog",
            "--syslog",
            &format!("udp://{}", rx.local_addr().unwrap()),
        ]);
        let (mut d, _) = Delivery::open(&a, Metrics::new()).unwrap();
        for h in hostile {
            let line = serde_json::json!({"class_uid": 1001, "file": {"path": h}}).to_string();
            d.send(Stream::Audit, &line).unwrap();
        }
        d.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), hostile.len(), "{text}");
        for (l, h) in lines.iter().zip(hostile) {
            assert!(
                !l.contains('\u{1b}') && !l.contains('\r'),
                "control bytes are escaped: {l:?}"
            );
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["file"]["path"], h, "the name round-trips as data");
            assert!(v.get("forged").is_none() && v["class_uid"] == 1001, "{v}");
        }
        let mut buf = [0u8; 4096];
        for h in hostile {
            let n = rx.recv(&mut buf).unwrap();
            let msg = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
            let json = &msg[msg.find(" - ").unwrap() + 3..];
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["file"]["path"], h);
        }
    }
}
