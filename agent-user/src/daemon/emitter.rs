//! The emitter: the one owner of sequence numbers, of the folding of repeated alerts, of what
//! the audit stream's receivers already know of each process (so its later events can refer
//! to it: [`Introduced`]) and of the sinks. Every event and alert of the daemon leaves through
//! it, in order; a sink that fails or a spool that drops is counted and alerted here, never
//! fatal (enforcement does not depend on delivery).
use crate::ocsf::Concluded;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{error, warn};

use crate::{
    delivery::{
        Delivery, DeliveryError, RecordForm, Stream,
        fold::{Fold, Folder},
        introduced::Introduced,
    },
    lineage::ProcKey,
    metrics::Metrics,
    model::Identity,
    ocsf::{
        self, Finding, Form,
        objects::{Audit, Details, DetectionFinding, Dropped, FoldedData},
    },
};

/// The process an audit event is of: its key, the stamp of its identity
/// ([`ocsf::identity_stamp`]), the event's kernel time (ns since boot), and whether the event
/// is its exec (the start of what it is: always written in full).
pub(super) struct Subject {
    pub key: ProcKey,
    pub stamp: u64,
    pub now_ns: u64,
    pub exec: bool,
}

/// Bytes reserved for a serialised record (a full audit event is about 2 KiB).
const LINE_CAPACITY: usize = 2048;

/// A failing sink is alerted at most this often (every failure is counted).
const SINK_ALERT_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Emitter {
    out: Delivery,
    /// Repeated alerts held for folding.
    folder: Folder<DetectionFinding>,
    /// The processes whose full form the audit stream's receivers hold.
    introduced: Introduced,
    /// The last sequence number given out.
    seq: u64,
    /// When a failing sink was last alerted.
    sink_alerted: Option<Instant>,
    ctx: ocsf::Context,
    metrics: Metrics,
}

impl Emitter {
    pub(super) fn new(
        out: Delivery,
        folder: Folder<DetectionFinding>,
        form: RecordForm,
        ctx: ocsf::Context,
        metrics: Metrics,
    ) -> Emitter {
        Emitter {
            out,
            folder,
            introduced: Introduced::new(form),
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

    /// Events written to the sinks so far.
    pub(super) fn written(&self) -> u64 {
        self.out.written
    }

    /// The process ended: its identity is not needed again.
    pub(super) fn forget(&mut self, key: &ProcKey) {
        self.introduced.forget(key);
    }

    /// Writes an audit event of `subject`, rendered by `render` in the form the stream's
    /// receivers need: compact when they hold its identity as its stamp says, else in full
    /// (with `identity`, where it runs), which introduces it. A compact event that would be
    /// the first line of a sink starting over (a file about to rotate) is written in full
    /// instead. Returns the event written (None: `render` made none: not an action).
    pub(super) fn audit(
        &mut self,
        subject: &Subject,
        identity: Identity,
        render: impl Fn(Form) -> Option<Box<Audit>>,
    ) -> Option<Box<Audit>> {
        let known = !subject.exec && self.introduced.holds(&subject.key, subject.stamp, subject.now_ns);
        if known {
            let record = render(Form::Compact)?;
            let line = self.serialise(Stream::Audit, &record)?;
            if !self.out.would_start_over(Stream::Audit, line.len()) {
                self.deliver(Stream::Audit, &line);
                return Some(record);
            }
            self.introduced.start_over();
        }
        let record = render(Form::Full(identity))?;
        let line = self.serialise(Stream::Audit, &record)?;
        if self.deliver(Stream::Audit, &line) {
            self.introduced.introduced(subject.key, subject.stamp, subject.now_ns);
        }
        Some(record)
    }

    /// Writes an alert; one with a fold key may be held as a repeat.
    pub(super) fn alert(&mut self, finding: DetectionFinding, fold: Option<String>) {
        let finding = match fold {
            Some(key) => match self.folder.offer(&key, finding, Instant::now()) {
                Fold::Held => {
                    self.metrics.alerts_folded.inc();
                    return;
                }
                Fold::Send(f) => f,
            },
            None => finding,
        };
        self.send(Stream::Alerts, &finding);
    }

    /// Serialises a record and sends it to the sinks of `stream`.
    fn send(&mut self, stream: Stream, record: &impl Serialize) {
        if let Some(line) = self.serialise(stream, record) {
            self.deliver(stream, &line);
        }
    }

    /// A record as a JSON line (the only place records become JSON).
    fn serialise(&mut self, stream: Stream, record: &impl Serialize) -> Option<String> {
        // Sized for a line at once (to_string would grow it from 128 bytes, copying).
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        match serde_json::to_writer(&mut line, record).map(|()| String::from_utf8(line)) {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                self.sink_failed(&format!("a record of the {} stream is not UTF-8: {e}", stream.as_str()));
                None
            }
            Err(e) => {
                // Our own types: cannot happen short of a bug, and never silently.
                self.sink_failed(&format!("serialising a record of the {} stream: {e}", stream.as_str()));
                None
            }
        }
    }

    /// Sends a line to the sinks of `stream`; true when every sink took it. A spool that had
    /// to drop events to make room raises an alert about the loss. A sink of the audit stream
    /// that starts over or fails makes every process be introduced again.
    fn deliver(&mut self, stream: Stream, line: &str) -> bool {
        let sent = self.out.send(stream, line);
        let started_over = self.out.started_over(Stream::Audit);
        if started_over || (sent.is_err() && stream == Stream::Audit) {
            self.introduced.start_over();
        }
        match sent {
            Ok(d) if d.audit + d.alerts > 0 => {
                let reason = format!(
                    "the webhook spool is full: {} audit event(s) and {} alert(s) dropped unacknowledged to make room (receiver down or too slow)",
                    d.audit, d.alerts
                );
                warn!("{reason}");
                self.system(
                    "events-lost",
                    Concluded::Logged,
                    &reason,
                    Details::SpoolDropped {
                        spool_dropped: Dropped {
                            audit: d.audit,
                            alerts: d.alerts,
                        },
                    },
                );
                true
            }
            Ok(_) => true,
            Err(e) => {
                self.sink_failed(&format!("writing the {} stream: {e}", stream.as_str()));
                false
            }
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
        self.system(
            "delivery-failed",
            Concluded::Logged,
            &reason,
            Details::SinkErrors { sink_errors: errors },
        );
    }

    /// An alert about Tether itself (loss of events or coverage): no process, no task; it
    /// names the node.
    pub(super) fn system(&mut self, kind: &'static str, concluded: Concluded<'static>, reason: &str, details: Details) {
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
            outcome: concluded,
            rule: None,
        };
        let seq = self.take();
        let node = Identity {
            node: self.ctx.hostname.clone(),
            ..Default::default()
        };
        let finding = ocsf::finding(&self.ctx, seq, f, node);
        self.send_as_is(&finding, "an alert");
    }

    /// Sends an alert of the emitter's own (about a loss, or folded repeats) as is: a loss
    /// it causes in the spool is counted in the metrics only, never alerted again.
    fn send_as_is(&mut self, finding: &DetectionFinding, what: &str) {
        match serde_json::to_string(finding) {
            Ok(line) => {
                if let Err(e) = self.out.send(Stream::Alerts, &line) {
                    error!("writing {what}: {e}");
                }
                // An alert sharing a file with the audit stream may have rotated it.
                if self.out.started_over(Stream::Audit) {
                    self.introduced.start_over();
                }
            }
            Err(e) => error!("serialising {what}: {e}"),
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
            // A new event (its own uid) standing for the held repeats.
            let mut finding = f.last;
            let seq = self.take();
            finding.base.metadata.uid = format!("{}-{seq}", self.ctx.uid_prefix);
            finding.count = Some(f.repeats);
            finding.unmapped.tether.folded = Some(FoldedData {
                repeats: f.repeats,
                window_s: self.folder.window().as_secs(),
                note: "identical alerts (same task, rule and target) after the first, folded into this one",
            });
            self.send_as_is(&finding, "a folded alert");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;
    use serde_json::Value;

    use super::*;
    use crate::{
        delivery::DeliveryArgs,
        events::Event,
        lineage::{ProcInfo, ProcSnapshot, ProcessTable, Reason},
        ocsf::{Verdict, testing::*},
    };

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        d: DeliveryArgs,
    }

    /// An emitter writing both streams to `path`.
    fn emitter(path: &Path, extra: &[&str]) -> Emitter {
        let sink = format!("file:{}", path.display());
        let mut argv = vec!["t", "--audit", &sink, "--alerts", &sink];
        argv.extend(extra);
        let args = Args::try_parse_from(argv).unwrap().d;
        let (out, _) = Delivery::open(&args, Metrics::new()).unwrap();
        Emitter::new(
            out,
            Folder::new(Duration::ZERO),
            args.record_form,
            ctx(),
            Metrics::new(),
        )
    }

    /// A table with the agent `bash` (pid 42) and its child `python` (pid 50).
    fn table() -> (ProcessTable, ProcInfo, ProcInfo) {
        let (mut t, root) = table_with_root();
        let snap = ProcSnapshot {
            pid: 50,
            ppid: 42,
            start: 600,
            exe: "/usr/bin/python3".into(),
            argv: vec!["python3".into(), "job.py".into()],
            comm: "python3".into(),
            uid: 1000,
        };
        let k = t.insert_snapshot(&snap, Reason::Inherited, Some(root.key));
        let child = t.get(&k).unwrap().clone();
        (t, root, child)
    }

    /// Writes the audit event `ev` of `p` at `now_ns` with identity stamp `stamp`.
    fn write(e: &mut Emitter, t: &ProcessTable, p: &ProcInfo, ev: &Event, stamp: u64, now_ns: u64) {
        let outcome = allowed();
        let verdict = Verdict {
            mechanism: "tracepoint/syscalls",
            outcome: &outcome,
            kernel: Default::default(),
            decision: None,
        };
        let seq = e.take();
        let subject = Subject {
            key: p.key,
            stamp,
            now_ns,
            exec: matches!(ev, Event::Exec { .. }),
        };
        let identity = Identity {
            node: "node-1".into(),
            ..Default::default()
        };
        let render = |form| crate::ocsf::audit(&ctx(), seq, ev, p, p, t, None, verdict, form);
        e.audit(&subject, identity, render).expect("an action");
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn uid(v: &Value) -> &str {
        v["actor"]["process"]["uid"].as_str().unwrap()
    }

    fn is_full(v: &Value) -> bool {
        v["unmapped"]["tether"].get("lineage").is_some()
    }

    #[test]
    fn the_second_event_of_a_process_refers_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut e = emitter(&path, &[]);
        let (t, root, child) = table();
        let ev = file_write("/work/a");
        write(&mut e, &t, &child, &ev, 1, 0);
        write(&mut e, &t, &child, &ev, 1, 1);
        write(&mut e, &t, &root, &ev, 7, 2);
        write(&mut e, &t, &child, &ev, 1, 3);
        e.flush();
        let l = lines(&path);
        assert_eq!(l.iter().map(is_full).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(uid(&l[0]), uid(&l[1]));
        assert_eq!(uid(&l[0]), uid(&l[3]));
        assert_ne!(uid(&l[0]), uid(&l[2]), "another process, introduced on its own");
        assert_eq!(
            l[1]["actor"]["process"]["parent_process"]["uid"], l[2]["actor"]["process"]["uid"],
            "the parent by the uid of its own full form"
        );
        assert_eq!(
            l[0]["unmapped"]["tether"]["lineage"][1]["uid"],
            uid(&l[2]),
            "and of the lineage"
        );
    }

    #[test]
    fn a_changed_identity_an_exec_a_restart_or_time_write_the_process_in_full_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (t, _, child) = table();
        let ev = file_write("/work/a");
        let exec = Event::Exec {
            actor: actor(),
            ppid: 42,
            exe: rp("/usr/bin/curl", crate::events::PathOrigin::KernelObject),
            filename: "curl".into(),
            argv: vec!["curl".into()],
            argv_truncated: false,
            newly_selected: false,
            via_lsm: false,
            failed: None,
        };
        let refresh = crate::delivery::introduced::REFRESH_NS;
        let mut e = emitter(&path, &[]);
        write(&mut e, &t, &child, &ev, 1, 0);
        write(&mut e, &t, &child, &ev, 1, 1);
        // Another task binding, pod or lineage: another stamp.
        write(&mut e, &t, &child, &ev, 2, 2);
        write(&mut e, &t, &child, &ev, 2, 3);
        write(&mut e, &t, &child, &exec, 2, 4);
        write(&mut e, &t, &child, &ev, 2, 5);
        write(&mut e, &t, &child, &ev, 2, 5 + refresh);
        e.forget(&child.key);
        write(&mut e, &t, &child, &ev, 2, 6 + refresh);
        e.flush();
        drop(e);
        // A new daemon appends to the same file: it introduces every process again.
        let mut e = emitter(&path, &[]);
        write(&mut e, &t, &child, &ev, 2, 7 + refresh);
        e.flush();
        let full: Vec<bool> = lines(&path).iter().map(is_full).collect();
        assert_eq!(full, [true, false, true, false, true, false, true, true, true]);
    }

    #[test]
    fn every_file_a_rotation_starts_resolves_its_references() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut e = emitter(&path, &["--file-max-size", "8K", "--file-keep", "50"]);
        let (t, root, child) = table();
        let ev = file_write("/work/a");
        for i in 0..200 {
            let p = if i % 3 == 0 { &root } else { &child };
            write(&mut e, &t, p, &ev, 1, i);
            if i % 41 == 0 {
                // Alerts share the file, and may be what rotates it.
                e.system("events-lost", Concluded::Logged, "test", Details::Empty {});
            }
        }
        e.flush();
        let mut files = 0;
        let mut compact = 0;
        for n in 0..=50 {
            let p = if n == 0 {
                path.clone()
            } else {
                dir.path().join(format!("audit.jsonl.{n}"))
            };
            if !p.exists() {
                continue;
            }
            files += 1;
            let mut known = std::collections::HashSet::new();
            for l in lines(&p).iter().filter(|l| l["class_uid"] == 1001) {
                if is_full(l) {
                    known.insert(uid(l).to_string());
                } else {
                    compact += 1;
                    assert!(
                        known.contains(uid(l)),
                        "{} refers to no earlier line of {}",
                        uid(l),
                        p.display()
                    );
                }
            }
        }
        assert!(files > 5 && compact > 100, "{files} files, {compact} compact lines");
    }

    #[test]
    fn full_records_are_self_contained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut e = emitter(&path, &["--record-form", "full"]);
        let (t, _, child) = table();
        for i in 0..3 {
            write(&mut e, &t, &child, &file_write("/work/a"), 1, i);
        }
        e.flush();
        assert!(lines(&path).iter().all(is_full));
    }
}
