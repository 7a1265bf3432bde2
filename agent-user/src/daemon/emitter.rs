//! The emitter: the one owner of sequence numbers, of the folding of repeated alerts and of
//! the sinks. Every event and alert of the daemon leaves through it, in order; a sink that
//! fails or a spool that drops is counted and alerted here, never fatal (enforcement does not
//! depend on delivery).
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{error, warn};

use crate::{
    delivery::{
        Delivery, DeliveryError, Stream,
        fold::{Fold, Folder},
    },
    metrics::Metrics,
    ocsf::{self, Finding},
};

/// A failing sink is alerted at most this often (every failure is counted).
const SINK_ALERT_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Emitter {
    out: Delivery,
    /// Repeated alerts held for folding.
    folder: Folder,
    /// The last sequence number given out.
    seq: u64,
    /// When a failing sink was last alerted.
    sink_alerted: Option<Instant>,
    ctx: ocsf::Context,
    metrics: Metrics,
}

impl Emitter {
    pub(super) fn new(out: Delivery, folder: Folder, ctx: ocsf::Context, metrics: Metrics) -> Emitter {
        Emitter {
            out,
            folder,
            seq: 0,
            sink_alerted: None,
            ctx,
            metrics,
        }
    }

    /// The sequence number of the next event, given out.
    pub(super) fn take(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `n` more sequence numbers, after the last given out, were used (the events that
    /// follow one taken with [`Emitter::take`] in the same batch).
    pub(super) fn taken(&mut self, n: u64) {
        self.seq += n;
    }

    /// Events written to the sinks so far.
    pub(super) fn written(&self) -> u64 {
        self.out.written
    }

    /// Sends one line of `stream`; an alert with a fold key may be held as a repeat. A spool
    /// that had to drop events to make room raises an alert about the loss.
    pub(super) fn emit(&mut self, stream: Stream, line: &str, fold: Option<&str>) {
        if let Some(key) = fold
            && self.folder.offer(key, line, Instant::now()) == Fold::Held
        {
            self.metrics.alerts_folded.inc();
            return;
        }
        match self.out.send(stream, line) {
            Ok(d) if d.audit + d.alerts > 0 => {
                let reason = format!(
                    "the webhook spool is full: {} audit event(s) and {} alert(s) dropped unacknowledged to make room (receiver down or too slow)",
                    d.audit, d.alerts
                );
                warn!("{reason}");
                self.system(
                    "events-lost",
                    &reason,
                    json!({"spool_dropped": {"audit": d.audit, "alerts": d.alerts}}),
                );
            }
            Ok(_) => {}
            Err(e) => self.sink_failed(&format!("writing the {} stream: {e}", stream.as_str())),
        }
    }

    /// Flushes every sink (after a drained batch).
    pub(super) fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.sink_failed(&format!("flushing the sinks: {e}"));
        }
    }

    /// The last flush, at exit (no alert can follow it).
    pub(super) fn close(&mut self) -> Result<(), DeliveryError> {
        self.out.flush()
    }

    /// A sink write failed (a full disk, a closed pipe): counted, logged and alerted (at
    /// most every [`SINK_ALERT_EVERY`], to the sinks that still work).
    pub(super) fn sink_failed(&mut self, what: &str) {
        self.metrics.sink_errors.inc();
        let now = Instant::now();
        if self
            .sink_alerted
            .is_some_and(|t| now.duration_since(t) < SINK_ALERT_EVERY)
        {
            return;
        }
        self.sink_alerted = Some(now);
        error!(errors = self.metrics.sink_errors.get(), "{what} (enforcement goes on)");
        let reason = format!("a sink failed: {what}; events written there are lost until it recovers");
        let errors = self.metrics.sink_errors.get();
        self.system("delivery-failed", &reason, json!({"sink_errors": errors}));
    }

    /// An alert about Tether itself (loss of events or coverage): no process, no task; it
    /// names the node.
    pub(super) fn system(&mut self, kind: &'static str, reason: &str, details: serde_json::Value) {
        let f = Finding {
            kind,
            title: kind.to_string(),
            desc: reason.to_string(),
            process: None,
            task: None,
            related: None,
            details,
            time_ns: None,
            severity_id: 4,
            outcome: None,
        };
        let seq = self.take();
        let mut v = ocsf::finding(&self.ctx, seq, &f);
        v["unmapped"]["tether"]["node"] = json!(self.ctx.hostname);
        // Sent as is: a loss alert that cost more room is counted in the metrics only.
        if let Err(e) = self.out.send(Stream::Alerts, &v.to_string()) {
            error!("writing an alert: {e}");
        }
    }

    /// Folding windows that ended (`all`: every one, at shutdown): one alert per held
    /// series, with its count.
    pub(super) fn fold_tick(&mut self, all: bool) {
        let due = if all {
            self.folder.flush_all()
        } else {
            self.folder.due(Instant::now())
        };
        for f in due {
            let mut v = match serde_json::from_str::<serde_json::Value>(&f.line) {
                Ok(v) => v,
                Err(e) => {
                    // Our own line: cannot happen short of a bug, and never silently.
                    error!("a held alert is not JSON ({e}); {} repeats not sent", f.repeats);
                    continue;
                }
            };
            // A new event (its own uid) standing for the held repeats.
            let seq = self.take();
            v["metadata"]["uid"] = json!(format!("{}-{seq}", self.ctx.uid_prefix));
            v["count"] = json!(f.repeats);
            v["unmapped"]["tether"]["folded"] = json!({
                "repeats": f.repeats,
                "window_s": self.folder.window().as_secs(),
                "note": "identical alerts (same task, rule and target) after the first, folded into this one",
            });
            if let Err(e) = self.out.send(Stream::Alerts, &v.to_string()) {
                error!("writing a folded alert: {e}");
            }
        }
    }
}
