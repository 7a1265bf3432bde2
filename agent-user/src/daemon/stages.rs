//! One event's path through the daemon, stage by stage, with a typed value between each:
//!
//! decode (`events::decode`, in `drain`) -> [`Event`] -> **track** -> [`Seen`] -> **resolve**
//! (the paths the call changes) -> **judge** -> `Option<Decision>` -> **enforce** ->
//! [`Enforced`] -> **outcome** -> [`Outcome`] -> **identify** -> [`Identity`] -> **render** ->
//! typed OCSF records (the audit event full or compact, as the emitter says its receivers
//! need) -> **emit** (the emitter serialises them for the sinks).
//!
//! Everything runs on the one event loop, in the kernel's order: a fork is applied before the
//! child's actions are judged.
use tracing::{debug, error, warn};

use super::{Daemon, emitter::Subject, tracking::Seen};
use crate::{
    contain::{self, DaemonAct, Outcome},
    events::{self, Event},
    model::{Action, Identity, Mode},
    ocsf::{self, Finding, TaskView, Verdict, objects::Details},
    paths,
    policy::engine::{self, Credential, Decision},
    procscan,
};

/// What enforcement found and did: the daemon's share of the verdict, whether its kill
/// reached the process, and how the call ended (Some(-errno): it failed or was refused).
pub(super) struct Enforced {
    pub act: DaemonAct,
    pub killed: bool,
    pub errno: Option<i64>,
}

/// One action as the render and emit stages see it: the event, the actor before and after,
/// and what the earlier stages made of it.
struct Judged<'a> {
    ev: &'a Event,
    seen: &'a Seen,
    decision: Option<&'a Decision>,
    mechanism: &'a str,
    outcome: &'a Outcome,
}

/// How an action ended, as a metrics label.
fn result_label(outcome: &Outcome, decision: Option<&Decision>) -> &'static str {
    if outcome.killed {
        "killed"
    } else if outcome.denied {
        "denied"
    } else if decision.is_some_and(|d| d.action.is_some()) {
        "detected"
    } else {
        "allowed"
    }
}

impl Daemon {
    /// One decoded event, through every stage.
    pub(super) fn handle(&mut self, mut ev: Event) {
        if ev.actor().tgid == self.pid {
            return; // never watch or judge ourselves
        }
        if let Event::Exit { .. } = ev {
            // Nothing refers to an ended process again.
            let key = self.tracking.table().key_of(ev.actor());
            self.emitter.forget(&key);
        }
        let Some(seen) = self.tracking.apply(&ev) else {
            return;
        };
        resolve(&mut ev);
        let decision = self.judge(&ev);
        let enforced = self.enforce(&ev, decision.as_ref());
        // The hook that saw it, as in effect on this kernel: named by the outcome, the audit
        // event and the finding.
        let mechanism = self.ctx.mechanism(&ev);
        let outcome = self.outcome(&ev, decision.as_ref(), &enforced, &mechanism);
        // Fork and exit are not written (see `ocsf::audit`): no identity, no record.
        if ev.is_action() {
            let identity = self.pods.identify(Some(ev.actor().cgroup_id));
            let action = Judged {
                ev: &ev,
                seen: &seen,
                decision: decision.as_ref(),
                mechanism: &mechanism,
                outcome: &outcome,
            };
            self.render_and_emit(&action, identity);
        }
        if let Event::Exec {
            newly_selected: true, ..
        } = ev
        {
            self.bind_from_environment(ev.actor().tgid);
        }
    }

    /// Reads the rings, each up to its budget ([`super::backlog::RING_BUDGET`]), and handles the
    /// records in the order the kernel made them (each ring is in order; records of one
    /// process can be in several: a fork, then the child's writes); true when a ring was left
    /// with records or some are held back (the caller drains again soon). **decode**: an
    /// undecodable record is counted and logged, never dropped silently.
    pub(super) fn drain(&mut self) -> bool {
        let rings = self.kernel.rings().len();
        // Sized by the last batch (a flood's batches are alike, and growing a vector of
        // records copies every record again).
        let mut batch = self.backlog.batch(rings, self.batch);
        for (i, ring) in self.kernel.rings().iter_mut().enumerate() {
            let budget = batch.budget(i);
            let mut read = 0;
            while read < budget {
                let Some(item) = ring.next() else {
                    break;
                };
                read += 1;
                self.record_bytes += item.len() as u64;
                match events::decode(&item) {
                    Ok(ev) => batch.push(i, ev),
                    Err(e) => {
                        let n = self.metrics.decode_errors.inc() + 1;
                        error!(decode_errors = n, "undecodable ring buffer record: {e}");
                    }
                }
            }
            if read == budget {
                batch.more_in(i);
            }
        }
        self.batch = batch.len();
        let more = batch.left_more();
        let ready = self.backlog.split(batch);
        self.handle_all(ready);
        more || self.backlog.held() > 0
    }

    /// Handles every record held back, in the kernel's order (at exit: nothing read from a
    /// ring is left unhandled).
    pub(super) fn handle_held(&mut self) {
        let held = self.backlog.take();
        self.handle_all(held);
    }

    /// Handles decoded records in the order given, then flushes the sinks.
    fn handle_all(&mut self, records: Vec<Event>) {
        for ev in records {
            self.decoded += 1;
            self.handle(ev);
        }
        self.emitter.flush();
    }

    /// **judge**: the rules' decision on the action, by the same rules the kernel judged it by
    /// (the engine gives the rule and the clause; the kernel's verdict says what was done). The
    /// exec that selects an agent is its start, not one of its actions.
    fn judge(&self, ev: &Event) -> Option<Decision> {
        let a = ev.actor();
        let unjudged = ev.unjudged_reason();
        let rules = self.rulebook.rules();
        match ev {
            // Another seccomp filter than the sandbox's (a container runtime's) decides
            // without a rule of Tether's: reported as refused, with no decision.
            Event::Sandbox { call, .. } => {
                let root = self.kernel.entry(a.tgid).map(|t| t.root_tgid);
                self.sandboxes.filtered(a, root).then(|| Decision::sandbox(call))
            }
            Event::Exec {
                newly_selected: true, ..
            } => unjudged.map(|why| rules.unjudged(None, Credential::None, why)),
            _ => {
                let task = self.task_view(a.task, Some(a.task_expired));
                let bound = self.tasks.get(a.task);
                let attempt = engine::attempt_of(ev)?;
                let cred = match (&task, bound) {
                    (Some(t), Some(b)) => Credential::Bound {
                        state: t.state,
                        scope: &b.verified.scope,
                    },
                    _ => Credential::None,
                };
                Some(match unjudged {
                    Some(why) => rules.unjudged(Some(&attempt), cred, why),
                    None => rules.evaluate(&attempt, cred, a.guard_set),
                })
            }
        }
    }

    /// **enforce**: what the daemon must still do given what the kernel did, carried out.
    fn enforce(&mut self, ev: &Event, decision: Option<&Decision>) -> Enforced {
        let a = ev.actor();
        let kv = a.kernel;
        // A child the tracked map had no room for: the kernel killed its parent; the child,
        // which the kernel could not signal, is killed here.
        if let Event::Fork {
            child_tgid,
            child_start_ns,
            ..
        } = ev
            && ev.unjudged_reason().is_some()
            && kv.refuses()
        {
            match contain::kill::kill(*child_tgid, *child_start_ns, self.tracking.ticks_per_sec()) {
                Ok(_) => warn!(pid = child_tgid, "killed a child the tracked map had no room for"),
                Err(e) => error!(
                    pid = child_tgid,
                    "a child the tracked map had no room for could not be killed: {e}"
                ),
            }
        }
        let errno = match ev {
            Event::File { ret, .. } if *ret < 0 => Some(*ret),
            Event::Exec { failed: Some(e), .. } => Some(*e),
            Event::Sandbox { .. } => Some(-(libc::EPERM as i64)),
            Event::Net { .. } | Event::Exec { .. } | Event::Unix { .. } | Event::Socket { .. } if kv.denied => {
                Some(-(libc::EPERM as i64))
            }
            _ => None,
        };
        let act = decision.map_or(DaemonAct::None, |d| contain::daemon_act(d, &kv, errno.is_none()));
        let killed = self.carry_out(act, a);
        if let Some(d) = decision
            && d.action.is_some()
            && d.mode == Mode::Enforce
            && !kv.acted()
            && !kv.undecided
            && act == DaemonAct::None
            && errno.is_none()
            && d.action != Some(Action::Alert)
        {
            warn!(rule = %d.rule, pid = a.tgid, "the kernel allowed what the rules refuse (see the event)");
        }
        Enforced { act, killed, errno }
    }

    /// **outcome**: what happened, honestly: allowed, denied, killed, after the effect.
    fn outcome(&self, ev: &Event, decision: Option<&Decision>, e: &Enforced, mechanism: &str) -> Outcome {
        let a = ev.actor();
        contain::outcome(
            decision,
            &a.kernel,
            mechanism,
            e.errno,
            self.sandboxes.landlocked(a.task),
            e.act,
            e.killed,
        )
    }

    /// **render** and **emit**: the audit event and, for a violation, the Detection Finding,
    /// built once with their outcome (the decision, the mechanism that saw the action, what
    /// became of it), to their streams through the emitter. The audit event is compact when
    /// the stream's receivers hold the actor's identity (see [`ocsf::objects::AuditData`]);
    /// the finding is always self-contained.
    fn render_and_emit(&mut self, x: &Judged, identity: Identity) {
        let a = x.ev.actor();
        let violation = x.decision.is_some_and(|d| d.action.is_some());
        let seq = self.emitter.take();
        let finding_seq = violation.then(|| self.emitter.take());
        // The finding, when there is one, names the actor's pod too.
        let finding_identity = violation.then(|| identity.clone());
        let task = self
            .tasks
            .view(a.task, Some(a.task_expired), self.sandboxes.of_task(a.task));
        let table = self.tracking.table();
        let Some(after) = x.seen.after(table) else {
            return;
        };
        let actor = x.seen.before_exec.as_ref().unwrap_or(after);
        let subject = Subject {
            key: x.seen.key,
            stamp: ocsf::identity_stamp(table, after, task.as_ref(), &identity, a.cgroup_id),
            now_ns: a.ktime_ns,
            exec: matches!(x.ev, Event::Exec { .. }),
        };
        let verdict = Verdict {
            mechanism: x.mechanism,
            outcome: x.outcome,
            kernel: a.kernel,
            decision: x.decision,
        };
        let ctx = &self.ctx;
        let render = |form| ocsf::audit(ctx, seq, x.ev, actor, after, table, task.as_ref(), verdict, form);
        let Some(audit) = self.emitter.audit(&subject, identity, render) else {
            return;
        };
        self.metrics
            .event(audit.class().label(), result_label(x.outcome, x.decision));
        let Some((d, (seq, identity))) = x.decision.zip(finding_seq.zip(finding_identity)) else {
            return;
        };
        // Repeats of one violation (same task, rule and target) fold into one alert.
        let fold = format!("{}|{}|{:?}", a.task, d.rule, engine::attempt_of(x.ev));
        let f = Finding {
            kind: d.alert_kind(),
            title: format!("{} ({})", d.reason, d.rule),
            desc: format!("{} by pid {} ({})", x.mechanism, a.tgid, after.exe),
            process: Some(after),
            task: task.as_ref(),
            related: Some(&audit),
            details: ocsf::decision_details(d, x.outcome, task.as_ref().map(|t| t.state)),
            time_ns: Some(a.ktime_ns),
            severity_id: d.severity.ocsf_id(),
            outcome: ocsf::Concluded::Action(x.outcome),
            rule: Some(ocsf::RuleRef {
                name: &d.rule,
                reason: &d.reason,
                enforced: d.mode == crate::model::Mode::Enforce,
                attack: &d.attack,
            }),
        };
        let finding = ocsf::finding(ctx, seq, f, identity);
        self.emitter.alert(finding, Some(fold));
    }

    /// Carries out the daemon's share of enforcement; true when the process (or tree) was
    /// signalled.
    fn carry_out(&mut self, act: DaemonAct, a: &events::Actor) -> bool {
        let ticks = self.tracking.ticks_per_sec();
        let result = match act {
            DaemonAct::None => return false,
            DaemonAct::Kill => {
                contain::kill::kill(a.tgid, a.start_ns, ticks).map(|k| k == contain::kill::Killed::Signalled)
            }
            DaemonAct::KillTree => {
                let root = self.kernel.entry(a.tgid).map(|t| t.root_tgid).unwrap_or(a.tgid);
                let (task, kernel) = (a.task, &self.kernel);
                let r = contain::kill::kill_tree(|| kernel.members(task, root), ticks);
                if let Ok(pids) = &r {
                    warn!(
                        task,
                        root,
                        killed = pids.len(),
                        pids = ?pids,
                        "kill-tree: every process of the task was killed"
                    );
                }
                r.map(|_| true)
            }
        };
        match result {
            Ok(done) => {
                self.metrics.daemon_kills.inc_by(u64::from(done));
                done
            }
            Err(e) => {
                self.metrics.daemon_kill_errors.inc();
                error!(pid = a.tgid, "enforcement kill failed: {e}");
                false
            }
        }
    }

    /// Binds the credential in TETHER_TASK_TOKEN of a process a selector just made an agent.
    fn bind_from_environment(&mut self, pid: u32) {
        let Some(token) = procscan::environ_var(pid, super::TOKEN_ENV) else {
            return;
        };
        match self.tasks.verify(&token) {
            None => {}
            Some(Ok(v)) => {
                if let Err(e) = self.bind(pid, v) {
                    debug!(pid, "{}: {}", super::TOKEN_ENV, e.message);
                }
            }
            Some(Err(e)) => {
                let reason = format!("{} of pid {pid} refused: {e}", super::TOKEN_ENV);
                warn!("{reason}");
                self.alert_refused(pid, "credential-refused", &reason);
            }
        }
    }

    /// The task `id` as events show it: `action` is Some(the kernel's expired flag) for an
    /// action (its state as it was then), None for the state now.
    pub(super) fn task_view(&self, id: u32, action: Option<bool>) -> Option<TaskView<'_>> {
        self.tasks.view(id, action, self.sandboxes.of_task(id))
    }

    /// An alert about a refused credential, binding or admin call of process `pid`.
    /// An alert about a request refused before anything ran (`Concluded::Refused`), or seen
    /// and let be as the rules say (`Concluded::Detected`).
    pub(super) fn alert_refused(&mut self, pid: u32, kind: &'static str, reason: &str) {
        self.alert_request(pid, kind, ocsf::Concluded::Refused, reason);
    }

    pub(super) fn alert_request(
        &mut self,
        pid: u32,
        kind: &'static str,
        concluded: ocsf::Concluded<'static>,
        reason: &str,
    ) {
        let process = self.tracking.process(pid).cloned();
        let task_id = self.kernel.entry(pid).map(|t| t.task).unwrap_or(agent_common::NO_TASK);
        let identity = self.pods.identify(process.as_ref().map(|p| p.cgroup_id));
        let seq = self.emitter.take();
        let finding = {
            let task = self.task_view(task_id, None);
            let f = Finding {
                kind,
                title: format!("{kind} (pid {pid})"),
                desc: reason.to_string(),
                process: process.as_ref(),
                task: task.as_ref(),
                related: None,
                details: Details::Refused {
                    pid,
                    reason: reason.to_string(),
                },
                time_ns: None,
                severity_id: if matches!(kind, "delegation-escalation" | "actor-mismatch") {
                    4
                } else {
                    3
                },
                outcome: concluded,
                rule: None,
            };
            ocsf::finding(&self.ctx, seq, f, identity)
        };
        self.emitter.alert(finding, None);
    }
}

/// **resolve**: the file a call changes: where it follows a final symlink, its target;
/// relative names joined.
fn resolve(ev: &mut Event) {
    if let Event::File {
        path,
        path2,
        syscall_nr,
        flags,
        op,
        ..
    } = ev
    {
        let follows = syscall_nr
            .and_then(agent_common::syscalls::by_nr)
            .is_some_and(|sc| sc.follows_final(*flags));
        if follows {
            paths::resolve_following(path);
        } else {
            paths::resolve(path);
        }
        // An extended attribute's name is no path.
        if let Some(p2) = path2
            && !matches!(op, events::FileOp::SetXattr | events::FileOp::RemoveXattr)
        {
            paths::resolve(p2);
        }
    }
}
