//! One event's path through the daemon, stage by stage, with a typed value between each:
//!
//! decode (`events::decode`, in `drain`) -> [`Event`] -> **track** -> [`Seen`] -> **resolve**
//! (the paths the call changes) -> **judge** -> `Option<Decision>` -> **enforce** ->
//! [`Enforced`] -> **outcome** -> [`Outcome`] -> **identify** -> [`Identity`] -> **render** ->
//! [`Rendered`] (typed OCSF records) -> **emit** (the emitter serialises them for the sinks).
//!
//! Everything runs on the one event loop, in the kernel's order: a fork is applied before the
//! child's actions are judged.
use tracing::{error, warn};

use super::Daemon;
use crate::{
    contain::{self, DaemonAct, Outcome},
    events::{self, Event},
    lineage::ProcInfo,
    model::{Action, Identity, Mode},
    ocsf::{
        self, Finding, Verdict,
        objects::{Audit, DetectionFinding},
    },
    paths,
    policy::engine::{self, Credential, Decision},
    procscan::Procfs,
};

/// What the process table made of an event: the actor as it was when it acted (for an exec,
/// before it) and as it is after the event.
pub(super) struct Seen {
    pub actor: ProcInfo,
    pub after: ProcInfo,
}

/// What enforcement found and did: the daemon's share of the verdict, whether its kill
/// reached the process, and how the call ended (Some(-errno): it failed or was refused).
pub(super) struct Enforced {
    pub act: DaemonAct,
    pub killed: bool,
    pub errno: Option<i64>,
}

/// The records of one action: its audit event, and the finding of a violation with the key
/// its repeats fold under.
pub(super) struct Rendered {
    pub audit: Audit,
    pub finding: Option<(DetectionFinding, String)>,
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
        if ev.actor().tgid == std::process::id() {
            return; // never watch or judge ourselves
        }
        let Some(seen) = self.track_event(&ev) else {
            return;
        };
        resolve(&mut ev);
        let decision = self.judge(&ev);
        let enforced = self.enforce(&ev, decision.as_ref());
        let outcome = self.outcome(&ev, decision.as_ref(), &enforced);
        // Fork and exit are not written (see `ocsf::audit`): no identity, no record.
        if ev.is_action() {
            let identity = self.identify(Some(ev.actor().cgroup_id));
            let result = result_label(&outcome, decision.as_ref());
            if let Some(rendered) = self.render(&ev, &seen, decision, &outcome, identity) {
                self.metrics.event(rendered.audit.class().label(), result);
                self.emit(rendered);
            }
        }
        if let Event::Exec {
            newly_selected: true, ..
        } = ev
        {
            self.bind_from_environment(ev.actor().tgid);
        }
    }

    /// **track**: the process table applies the event (fork, exec, exit); the actor before and
    /// after. None: the process is not in the table (nothing to attribute the event to).
    fn track_event(&mut self, ev: &Event) -> Option<Seen> {
        let before = self.table.get(&self.table.key_of(ev.actor())).cloned();
        // An exec the kernel refused changed nothing: the process keeps its image.
        let refused_exec = matches!(ev, Event::Exec { actor, failed, .. } if actor.kernel.denied || failed.is_some());
        let key = if refused_exec {
            self.table.ensure(ev.actor(), &Procfs)
        } else {
            self.table.apply(ev, &Procfs)
        };
        let after = self.table.get(&key).cloned()?;
        Some(Seen {
            actor: before.unwrap_or_else(|| after.clone()),
            after,
        })
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
            Event::Sandbox { call, .. } => self.sandboxed(a).then(|| Decision::sandbox(call)),
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
            match contain::kill::kill(*child_tgid, *child_start_ns, self.ticks_per_sec) {
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
    fn outcome(&self, ev: &Event, decision: Option<&Decision>, e: &Enforced) -> Outcome {
        let a = ev.actor();
        contain::outcome(
            decision,
            &a.kernel,
            &self.ctx.mechanism(ev),
            e.errno,
            self.landlocked.contains(&a.task),
            e.act,
            e.killed,
        )
    }

    /// **identify**: the node, and the container and pod of a process in cgroup `cgroup_id`.
    pub(super) fn identify(&mut self, cgroup_id: Option<u64>) -> Identity {
        match cgroup_id.filter(|id| *id != 0) {
            Some(id) => {
                let ident = self.resolver.identity(id);
                crate::pods::identity(&self.ctx.hostname, &ident, self.kube.as_ref().map(|k| &k.pods))
            }
            None => Identity {
                node: self.ctx.hostname.clone(),
                ..Default::default()
            },
        }
    }

    /// **render**: the audit event and, for a violation, the Detection Finding, built once
    /// with their outcome. None for events that are not actions.
    fn render(
        &mut self,
        ev: &Event,
        seen: &Seen,
        decision: Option<Decision>,
        outcome: &Outcome,
        identity: Identity,
    ) -> Option<Rendered> {
        let a = ev.actor();
        let violation = decision.as_ref().is_some_and(|d| d.action.is_some());
        let seq = self.emitter.take();
        let finding_seq = violation.then(|| self.emitter.take());
        let task = self.task_view(a.task, Some(a.task_expired));
        let verdict = Verdict {
            outcome,
            kernel: a.kernel,
            decision: decision.as_ref(),
        };
        let audit = ocsf::audit(
            &self.ctx,
            seq,
            ev,
            &seen.actor,
            &seen.after,
            &self.table,
            task.as_ref(),
            verdict,
            identity.clone(),
        )?;
        let finding = decision.zip(finding_seq).map(|(d, seq)| {
            // Repeats of one violation (same task, rule and target) fold into one alert.
            let fold = format!("{}|{}|{:?}", a.task, d.rule, engine::attempt_of(ev));
            let f = Finding {
                kind: d.alert_kind(),
                title: format!("{} ({})", d.reason, d.rule),
                desc: format!("{} by pid {} ({})", self.ctx.mechanism(ev), a.tgid, seen.after.exe),
                process: Some(&seen.after),
                task: task.as_ref(),
                related: Some(&audit),
                details: ocsf::decision_details(&d, outcome, task.as_ref().map(|t| t.state)),
                time_ns: Some(a.ktime_ns),
                severity_id: d.severity.ocsf_id(),
                outcome: Some(outcome),
            };
            (ocsf::finding(&self.ctx, seq, f, identity), fold)
        });
        Some(Rendered { audit, finding })
    }

    /// **emit**: the records to their streams, through the emitter.
    fn emit(&mut self, r: Rendered) {
        self.emitter.audit(&r.audit);
        if let Some((finding, fold)) = r.finding {
            self.emitter.alert(finding, Some(fold));
        }
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
