//! The tasks component: the task table (credentials bound to process trees, their lifecycle
//! and revocation), the trusted issuers' keys that verify credentials, and the host names of
//! the tasks' scopes, resolved by workers off the event loop.
use std::sync::{Arc, RwLock};

use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    contain::sandbox::Layers,
    credentials::{
        self, Resolved,
        carriers::ScopeBook,
        revocations::{ListConfig, ListError, Revocations},
        tasks::{BindError, Bound, CredState, Task, Tasks},
        token::{self, Keys, TokenError, Verified},
        trust::{Profile, Trust},
        workload::{MustMatch, WorkloadCheck},
    },
    ocsf::TaskView,
    persist::SavedTask,
};

pub(super) struct TaskBook {
    tasks: Tasks,
    /// The trusted issuers and their keys (shared with the API's workers, which verify).
    keys: Arc<RwLock<Keys>>,
    /// The rule files' scope bundles and identity bindings.
    scopes: Arc<ScopeBook>,
    trust: Vec<Trust>,
    /// Longest delegation chain (principal excluded).
    max_chain: usize,
    /// Host-name resolutions for a task's scope, from the resolver workers.
    resolved_tx: mpsc::UnboundedSender<(u32, Resolved)>,
    /// The revocation lists, with what each last gave.
    lists: Vec<ListState>,
    /// The identity check of the rule files (None: off).
    workload: Option<WorkloadCheck>,
}

/// One revocation list: its last good read, and its last failure since.
struct ListState {
    config: ListConfig,
    last: Option<Revocations>,
    read_at: Option<i64>,
    error: Option<String>,
}

impl TaskBook {
    pub(super) fn new(
        keys: Arc<RwLock<Keys>>,
        scopes: Arc<ScopeBook>,
        trust: Vec<Trust>,
        lists: Vec<ListConfig>,
        workload: Option<WorkloadCheck>,
        max_chain: usize,
        resolved_tx: mpsc::UnboundedSender<(u32, Resolved)>,
    ) -> TaskBook {
        TaskBook {
            tasks: Tasks::default(),
            keys,
            scopes,
            trust,
            max_chain,
            resolved_tx,
            workload: workload.filter(|w| w.must_match != MustMatch::Off),
            lists: lists
                .into_iter()
                .map(|config| ListState {
                    config,
                    last: None,
                    read_at: None,
                    error: None,
                })
                .collect(),
        }
    }

    /// Revocation list `index` was read (or could not be): every task the lists now name is
    /// revoked; the ids of those revoked now, and the failure (a new one) to report.
    pub(super) fn listed(&mut self, index: usize, read: Result<Revocations, ListError>) -> (Vec<u32>, Option<String>) {
        let Some(l) = self.lists.get_mut(index) else {
            return (Vec::new(), None);
        };
        let failure = match read {
            Ok(r) => {
                l.last = Some(r);
                l.read_at = Some(credentials::now_epoch());
                l.error = None;
                None
            }
            Err(e) => {
                let e = e.to_string();
                let new = l.error.as_deref() != Some(e.as_str());
                l.error = Some(e.clone());
                new.then_some(e)
            }
        };
        let mut union = Revocations::default();
        for r in self.lists.iter().filter_map(|l| l.last.as_ref()) {
            union.extend(r);
        }
        (self.tasks.apply_list(union), failure)
    }

    /// The revocation lists never read yet (bindings wait for them: a credential a list names
    /// must not bind because the list could not be had).
    pub(super) fn lists_unread(&self) -> Vec<String> {
        self.lists
            .iter()
            .filter(|l| l.last.is_none())
            .map(|l| match &l.error {
                Some(e) => format!("{} ({e})", l.config.source.describe()),
                None => l.config.source.describe(),
            })
            .collect()
    }

    /// The identity check in force (None: off).
    pub(super) fn workload(&self) -> Option<&WorkloadCheck> {
        self.workload.as_ref()
    }

    /// `tether status`'s revocation lists.
    pub(super) fn lists_status(&self) -> Vec<serde_json::Value> {
        self.lists
            .iter()
            .map(|l| {
                json!({"list": l.config.source.describe(), "every_s": l.config.every.as_secs(),
                       "entries": l.last.as_ref().map(Revocations::len), "read_at": l.read_at,
                       "error": l.error})
            })
            .collect()
    }

    pub(super) fn list_configs(&self) -> Vec<ListConfig> {
        self.lists.iter().map(|l| l.config.clone()).collect()
    }

    pub(super) fn get(&self, id: u32) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Task> {
        self.tasks.all()
    }

    pub(super) fn count(&self) -> usize {
        self.tasks.all().count()
    }

    /// The task `id` as events show it: `action` is Some(the kernel's expired flag) for an
    /// action (its state as it was then), None for the state now; `sandbox`: the layers its
    /// tree runs under.
    pub(super) fn view<'a>(
        &'a self,
        id: u32,
        action: Option<bool>,
        sandbox: Option<&'a Layers>,
    ) -> Option<TaskView<'a>> {
        let t = self.tasks.get(id)?;
        let c = &t.verified.claims;
        Some(TaskView {
            jti: &t.verified.id,
            iss: &c.iss,
            sub: &c.sub,
            exp: c.exp,
            state: match action {
                Some(k) => t.state_at_action(k),
                None => t.state(credentials::now_epoch(), false),
            },
            kernel_expired: action.unwrap_or(false),
            chain: &t.verified.chain,
            sandbox,
            scope_source: t.verified.scope_source.as_str(),
            txn: c.txn.as_deref(),
        })
    }

    /// Is task `id`'s credential valid now?
    pub(super) fn valid(&self, id: u32) -> bool {
        self.tasks
            .get(id)
            .is_some_and(|t| t.state(credentials::now_epoch(), false) == CredState::Valid)
    }

    /// Task `id` as the API shows it.
    pub(super) fn json(&self, id: u32) -> serde_json::Value {
        let Some(t) = self.tasks.get(id) else {
            return json!(null);
        };
        let c = &t.verified.claims;
        json!({
            "jti": t.verified.id,
            "txn": c.txn,
            "scope_source": t.verified.scope_source,
            "iss": c.iss,
            "issuer": t.verified.issuer,
            "sub": c.sub,
            "exp": c.exp,
            "state": t.state(credentials::now_epoch(), false).as_str(),
            "delegation": t.verified.chain,
            "parent": t.parent.and_then(|p| self.tasks.get(p)).map(|p| p.jti().to_string()),
            "root_pid": t.root_pid,
            "scope": t.verified.scope.spec,
        })
    }

    /// Binds a verified credential to `pid`, which acts under task `current` now; `live`: does
    /// a task still have a live process.
    pub(super) fn bind(
        &mut self,
        verified: Verified,
        pid: u32,
        current: u32,
        live: impl Fn(u32) -> bool,
    ) -> Result<Bound, BindError> {
        self.tasks.bind(verified, pid, current, live)
    }

    /// Revokes the task of `jti` and those delegated from it; its id, and every task to cut off.
    pub(super) fn revoke(&mut self, jti: &str) -> Option<(u32, Vec<u32>)> {
        self.tasks.revoke(jti)
    }

    /// Forgets ended tasks without processes; the ids forgotten.
    pub(super) fn collect(&mut self, live: impl Fn(u32) -> bool) -> Vec<u32> {
        let before: Vec<u32> = self.tasks.all().map(|t| t.id).collect();
        self.tasks.collect(credentials::now_epoch(), live);
        before.into_iter().filter(|id| self.tasks.get(*id).is_none()).collect()
    }

    /// Verifies a credential now (one a process carries in its environment).
    pub(super) fn verify(&self, token: &str) -> Option<Result<Verified, TokenError>> {
        let keys = self.keys.read().ok()?;
        Some(token::verify(token, &self.checks(&keys), credentials::now_epoch()))
    }

    /// Resolves the host names of task `id`'s scope again, off the event loop.
    pub(super) fn resolve(&self, id: u32) {
        let Some(hosts) = self.tasks.get(id).map(|t| t.verified.scope.host_names()) else {
            return;
        };
        if hosts.is_empty() {
            return;
        }
        let tx = self.resolved_tx.clone();
        tokio::spawn(async move {
            let r = credentials::resolve_hosts(&hosts).await;
            let _ = tx.send((id, r));
        });
    }

    /// Resolves the host names of every task's scope again.
    pub(super) fn resolve_all(&self) {
        for t in self.tasks.all() {
            self.resolve(t.id);
        }
    }

    /// A resolution came back: the task's scope takes it. True when the task is still there
    /// (its scope in the kernel must follow).
    pub(super) fn resolved(&mut self, id: u32, hosts: Resolved) -> bool {
        match self.tasks.get_mut(id) {
            Some(t) => {
                t.verified.scope.resolved = hosts;
                true
            }
            None => false,
        }
    }

    /// The tasks as the state file keeps them.
    pub(super) fn saved(&self) -> Vec<SavedTask> {
        self.tasks
            .all()
            .map(|t| SavedTask {
                id: t.id,
                token: t.verified.token.clone(),
                verified_at: t.verified.verified_at,
                root_pid: t.root_pid,
                parent: t.parent,
                revoked: t.revoked,
            })
            .collect()
    }

    /// Verifies a task of the state file again, as of when it was first verified, and puts
    /// it back under its id.
    pub(super) fn restore(&mut self, t: &SavedTask) -> Result<(), TokenError> {
        let keys = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let verified = token::verify(&t.token, &self.checks(&keys), t.verified_at)?;
        self.tasks.restore(Task {
            id: t.id,
            verified,
            root_pid: t.root_pid,
            parent: t.parent,
            revoked: t.revoked,
        });
        Ok(())
    }

    /// `tether status`'s trusted issuers, with the state of their keys.
    pub(super) fn issuers_status(&self) -> Vec<serde_json::Value> {
        self.trust
            .iter()
            .map(|t| {
                let keys = self.keys.read().ok().and_then(|k| {
                    k.by_issuer.get(&t.issuer).map(|r| match r {
                        Ok(set) => json!({"keys": set.jwks.keys.len(), "left_out": set.dropped}),
                        Err(e) => json!({"error": e.to_string()}),
                    })
                });
                json!({"issuer": t.issuer, "jwks": t.source.describe(), "state": keys,
                "algorithms": t.accept.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "audiences": t.accept.audiences, "leeway": t.accept.leeway,
                "typ": t.accept.typ, "profile": match &t.accept.profile {
                    Profile::Jwt => "jwt".to_string(),
                    Profile::Spiffe { trust_domain } => format!("spiffe ({trust_domain})"),
                }})
            })
            .collect()
    }

    fn checks<'a>(&'a self, keys: &'a Keys) -> token::Checks<'a> {
        token::Checks {
            keys,
            scopes: &self.scopes,
            max_chain: self.max_chain,
        }
    }

    pub(super) fn max_chain(&self) -> usize {
        self.max_chain
    }
}
