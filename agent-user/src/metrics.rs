//! Prometheus metrics (`tether run --metrics ADDR`: `/metrics`, `/healthz`, `/readyz`).
//! The metrics are atomics shared between the daemon's event loop, which updates them, and
//! the HTTP worker, which encodes them on request.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{features::HookMechanism, model::Stream};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    mechanism: String,
    enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    /// OCSF class name, e.g. `network_activity`.
    class: &'static str,
    /// allowed, detected (a violation let through: observe mode or alert), denied, killed.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

/// The daemon's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    mechanism: Family<HookLabels, Gauge>,
    events: Family<EventLabels, Counter>,
    kernel: Family<CounterLabels, Counter>,
    pub decode_errors: Counter,
    pub tracked_processes: Gauge,
    pub live_tasks: Gauge,
    pub daemon_kills: Counter,
    pub daemon_kill_errors: Counter,
    spool_depth: Family<StreamLabels, Gauge>,
    spool_dropped: Family<StreamLabels, Counter>,
    pub spool_bytes: Gauge,
    pub webhook_failures: Counter,
    pub webhook_events: Counter,
    webhook_latency: Histogram,
    pub syslog_failures: Counter,
    pub alerts_folded: Counter,
    pub state_write_errors: Counter,
    /// Writes to a stdout or file sink that failed (a full disk, a closed pipe).
    pub sink_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            ready: Arc::new(AtomicBool::new(false)),
            mechanism: Family::default(),
            events: Family::default(),
            kernel: Family::default(),
            decode_errors: Counter::default(),
            tracked_processes: Gauge::default(),
            live_tasks: Gauge::default(),
            daemon_kills: Counter::default(),
            daemon_kill_errors: Counter::default(),
            spool_depth: Family::default(),
            spool_dropped: Family::default(),
            spool_bytes: Gauge::default(),
            webhook_failures: Counter::default(),
            webhook_events: Counter::default(),
            webhook_latency: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            syslog_failures: Counter::default(),
            alerts_folded: Counter::default(),
            state_write_errors: Counter::default(),
            sink_errors: Counter::default(),
        };
        let mut r = Registry::with_prefix("tether");
        r.register(
            "enforcement_mechanism",
            "The mechanism in effect per hook on this kernel (value 1), with what it can do",
            m.mechanism.clone(),
        );
        r.register(
            "events",
            "Audit events written, by OCSF class and outcome",
            m.events.clone(),
        );
        r.register(
            "kernel_losses",
            "Kernel-side losses and errors (ring buffer full, tracked map full, pending map full, read errors)",
            m.kernel.clone(),
        );
        r.register(
            "decode_errors",
            "Ring buffer records that could not be decoded",
            m.decode_errors.clone(),
        );
        r.register(
            "tracked_processes",
            "Processes in the process table",
            m.tracked_processes.clone(),
        );
        r.register(
            "live_tasks",
            "Task credentials bound and not collected",
            m.live_tasks.clone(),
        );
        r.register(
            "daemon_kills",
            "Processes the daemon killed (pidfd) for kill verdicts the kernel could not carry out",
            m.daemon_kills.clone(),
        );
        r.register(
            "daemon_kill_errors",
            "Kills the daemon could not carry out",
            m.daemon_kill_errors.clone(),
        );
        r.register(
            "spool_depth",
            "Events in the webhook spool not yet acknowledged by the receiver, by stream",
            m.spool_depth.clone(),
        );
        r.register(
            "spool_dropped",
            "Events dropped unacknowledged from a full webhook spool (oldest audit first, alerts last), by stream",
            m.spool_dropped.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes of the webhook spool on disk",
            m.spool_bytes.clone(),
        );
        r.register(
            "webhook_failures",
            "Webhook requests that failed (connection, TLS, timeout or a non-2xx answer); their events stay spooled",
            m.webhook_failures.clone(),
        );
        r.register(
            "webhook_events",
            "Events the webhook receiver acknowledged",
            m.webhook_events.clone(),
        );
        r.register(
            "webhook_latency_seconds",
            "Time of acknowledged webhook requests",
            m.webhook_latency.clone(),
        );
        r.register(
            "syslog_failures",
            "Syslog messages that could not be sent",
            m.syslog_failures.clone(),
        );
        r.register(
            "alerts_folded",
            "Repeated alerts folded into a later alert with a count",
            m.alerts_folded.clone(),
        );
        r.register(
            "state_write_errors",
            "Failed writes of the --persist state file (a restart then would not know the tasks bound since)",
            m.state_write_errors.clone(),
        );
        r.register(
            "sink_errors",
            "Failed writes to a stdout or file sink (full disk, closed pipe): enforcement goes on, the events are lost there",
            m.sink_errors.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The spool's depth per stream (`depth`) and its size in bytes.
    pub fn spool_depth(&self, depth: impl Fn(Stream) -> u64, bytes: u64) {
        for st in [Stream::Audit, Stream::Alerts] {
            self.spool_depth
                .get_or_create(&StreamLabels {
                    stream: st.as_str().into(),
                })
                .set(depth(st) as i64);
        }
        self.spool_bytes.set(bytes as i64);
    }

    /// Events the full spool dropped, per stream.
    pub fn spool_dropped(&self, stream: Stream, n: u64) {
        if n > 0 {
            self.spool_dropped
                .get_or_create(&StreamLabels {
                    stream: stream.as_str().into(),
                })
                .inc_by(n);
        }
    }

    pub fn webhook_sent(&self, events: u64, took: std::time::Duration) {
        self.webhook_events.inc_by(events);
        self.webhook_latency.observe(took.as_secs_f64());
    }

    pub fn webhook_failed(&self) {
        self.webhook_failures.inc();
    }

    pub fn syslog_failed(&self) {
        self.syslog_failures.inc();
    }

    pub fn set_mechanisms(&self, hooks: &[HookMechanism]) {
        for h in hooks {
            self.mechanism
                .get_or_create(&HookLabels {
                    hook: h.hook.to_string(),
                    mechanism: h.mechanism.clone(),
                    enforcement: h.enforcement.clone(),
                })
                .set(1);
        }
    }

    /// One event written (labels are static: no allocation per event).
    pub fn event(&self, class: &'static str, outcome: &'static str) {
        self.events.get_or_create(&EventLabels { class, outcome }).inc();
    }

    pub fn kernel_loss(&self, counter: &str, new: u64) {
        self.kernel
            .get_or_create(&CounterLabels {
                counter: counter.to_string(),
            })
            .inc_by(new);
    }

    /// Probes attached and rules compiled.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

async fn metrics(State(m): State<Metrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(m): State<Metrics>) -> (StatusCode, &'static str) {
    if m.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: probes or rules not loaded yet\n",
        )
    }
}

/// Binds `addr` (an error names it) and serves the endpoints in the background.
pub async fn serve(addr: SocketAddr, m: Metrics) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(m);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_mechanisms_events_and_losses() {
        let m = Metrics::new();
        m.set_mechanisms(&[HookMechanism {
            hook: "connect",
            mechanism: "cgroup_sock_addr/connect4,connect6".into(),
            enforcement: "deny".into(),
        }]);
        m.event("network_activity", "denied");
        m.event("network_activity", "denied");
        m.kernel_loss("ringbuf_full", 3);
        let text = m.encode();
        assert!(
            text.contains(
                r#"tether_enforcement_mechanism{hook="connect",mechanism="cgroup_sock_addr/connect4,connect6",enforcement="deny"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tether_events_total{class="network_activity",outcome="denied"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tether_kernel_losses_total{counter="ringbuf_full"} 3"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
