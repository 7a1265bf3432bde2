//! Tasks: verified credentials bound to process trees. Pure: the daemon gives it the facts it
//! needs from the kernel (the caller's current task, which tasks still have live processes)
//! and applies its answers to the kernel maps.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{revocations::Revocations, token::Verified};

/// A credential's state at the time of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredState {
    Valid,
    Expired,
    Revoked,
    /// The process acts under no credential.
    None,
}

impl CredState {
    pub fn as_str(self) -> &'static str {
        match self {
            CredState::Valid => "valid",
            CredState::Expired => "expired",
            CredState::Revoked => "revoked",
            CredState::None => "none",
        }
    }
}

/// A bound task.
#[derive(Debug, Clone)]
pub struct Task {
    /// The number the kernel carries for it (never 0).
    pub id: u32,
    pub verified: Verified,
    /// The pid it was first bound to.
    pub root_pid: u32,
    /// The task it was delegated from, when bound inside another task's tree.
    pub parent: Option<u32>,
    pub revoked: bool,
}

impl Task {
    pub fn jti(&self) -> &str {
        &self.verified.id
    }

    /// The state at `now` (seconds since the epoch), or as the kernel saw it (`kernel_expired`).
    pub fn state(&self, now: i64, kernel_expired: bool) -> CredState {
        if self.revoked {
            CredState::Revoked
        } else if kernel_expired || now >= self.verified.expires() {
            CredState::Expired
        } else {
            CredState::Valid
        }
    }

    /// The state when the kernel recorded an action of the task: its own flag says whether
    /// the credential had expired or been revoked by then (revocation moves the kernel's
    /// expiry into the past at once), so an action handled after a later revocation or expiry
    /// is still attributed as it happened.
    pub fn state_at_action(&self, kernel_expired: bool) -> CredState {
        match (kernel_expired, self.revoked) {
            (false, _) => CredState::Valid,
            (true, true) => CredState::Revoked,
            (true, false) => CredState::Expired,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("replay: task {jti} is already bound to another live process tree (root pid {root_pid})")]
    Replay { jti: String, root_pid: u32 },
    #[error(
        "replay: transaction {txn} is already bound to another live process tree (root pid {root_pid}); a transaction's tokens stay in the tree that began it"
    )]
    TxnReplay { txn: String, root_pid: u32 },
    #[error("delegation escalation: {0}")]
    Escalation(String),
    #[error("task {0} was revoked")]
    Revoked(String),
    #[error("task {0} is on a revocation list (its jti or txn)")]
    Listed(String),
}

/// What a bind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A new task, numbered `id`.
    New(u32),
    /// The caller already acts under this task (same `jti`): nothing changes.
    Already(u32),
}

#[derive(Debug, Default)]
pub struct Tasks {
    by_id: BTreeMap<u32, Task>,
    by_jti: HashMap<String, u32>,
    /// Transaction Token `txn` -> the tasks bound with it.
    by_txn: HashMap<String, Vec<u32>>,
    /// What the revocation lists name (their union, as last read).
    listed: Revocations,
    next: u32,
}

impl Tasks {
    pub fn get(&self, id: u32) -> Option<&Task> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Task> {
        self.by_id.get_mut(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Task> {
        self.by_id.values()
    }

    /// Binds `v` to process `pid`, which currently acts under task `current` (0: none).
    /// `live(id)` says whether task `id` still has live processes.
    pub fn bind(
        &mut self,
        v: Verified,
        pid: u32,
        current: u32,
        live: impl Fn(u32) -> bool,
    ) -> Result<Bound, BindError> {
        if self.listed.names(&v.id, v.claims.txn.as_deref()) {
            return Err(BindError::Listed(v.id.clone()));
        }
        if let Some(&id) = self.by_jti.get(&v.id) {
            let t = &self.by_id[&id];
            if t.revoked {
                return Err(BindError::Revoked(t.jti().into()));
            }
            if current == id {
                return Ok(Bound::Already(id));
            }
            if live(id) {
                return Err(BindError::Replay {
                    jti: t.jti().into(),
                    root_pid: t.root_pid,
                });
            }
        }
        if let Some(txn) = &v.claims.txn {
            // The caller's tree: the root task above its task (none: a tree of its own).
            let mine = self.root_task(current);
            let other = self
                .by_txn
                .get(txn)
                .into_iter()
                .flatten()
                .copied()
                .find(|id| (mine.is_none() || self.root_task(*id) != mine) && live(*id));
            if let Some(id) = other {
                return Err(BindError::TxnReplay {
                    txn: txn.clone(),
                    root_pid: self.by_id[&id].root_pid,
                });
            }
        }
        // A process whose task (or a task above it) was revoked gets no new credential: its
        // revocation would otherwise end with one narrower token.
        if let Some(r) = self.revoked_above(current) {
            return Err(BindError::Revoked(r));
        }
        let parent = match self.by_id.get(&current) {
            Some(p) => {
                check_delegation(&p.verified, &v)?;
                Some(p.id)
            }
            None => None,
        };
        self.next += 1;
        let id = self.next;
        if let Some(txn) = &v.claims.txn {
            self.by_txn.entry(txn.clone()).or_default().push(id);
        }
        self.by_jti.insert(v.id.clone(), id);
        self.by_id.insert(
            id,
            Task {
                id,
                verified: v,
                root_pid: pid,
                parent,
                revoked: false,
            },
        );
        Ok(Bound::New(id))
    }

    /// Puts back a task a previous daemon bound (a restart): same id, so the kernel's tracked
    /// entries that carry it keep meaning it; later binds are numbered after it.
    /// The id of the first revoked task from `id` up its parents, if any.
    fn revoked_above(&self, id: u32) -> Option<String> {
        let mut at = self.by_id.get(&id);
        while let Some(t) = at {
            if t.revoked {
                return Some(t.jti().to_string());
            }
            at = t.parent.and_then(|p| self.by_id.get(&p));
        }
        None
    }

    /// Task `id` and every task below it (delegated from it, at any depth).
    fn tree(&self, id: u32) -> Vec<u32> {
        let mut tree = vec![id];
        let mut i = 0;
        while i < tree.len() {
            let x = tree[i];
            tree.extend(self.by_id.values().filter(|t| t.parent == Some(x)).map(|t| t.id));
            i += 1;
        }
        tree
    }

    /// Revokes task `id` and every task below it; the ids revoked now.
    fn revoke_tree(&mut self, id: u32) -> Vec<u32> {
        let mut now = Vec::new();
        for x in self.tree(id) {
            if let Some(t) = self.by_id.get_mut(&x)
                && !t.revoked
            {
                t.revoked = true;
                now.push(x);
            }
        }
        now
    }

    /// The topmost task above task `id` (itself when it has no parent); None: no such task.
    fn root_task(&self, id: u32) -> Option<u32> {
        let mut t = self.by_id.get(&id)?;
        while let Some(p) = t.parent.and_then(|p| self.by_id.get(&p)) {
            t = p;
        }
        Some(t.id)
    }

    pub fn restore(&mut self, task: Task) {
        self.next = self.next.max(task.id);
        if let Some(txn) = &task.verified.claims.txn {
            self.by_txn.entry(txn.clone()).or_default().push(task.id);
        }
        self.by_jti.insert(task.jti().to_string(), task.id);
        self.by_id.insert(task.id, task);
    }

    /// Marks the task `jti` revoked; returns its id.
    /// Takes the revocation lists' union as last read: every task they name (by its id or
    /// its `txn`) is revoked; the ids of those revoked now.
    pub fn apply_list(&mut self, listed: Revocations) -> Vec<u32> {
        let named: Vec<u32> = self
            .by_id
            .values()
            .filter(|t| !t.revoked && listed.names(&t.verified.id, t.verified.claims.txn.as_deref()))
            .map(|t| t.id)
            .collect();
        let mut now = Vec::new();
        for id in named {
            now.extend(self.revoke_tree(id));
        }
        self.listed = listed;
        now
    }

    /// Revokes the task of `jti` and every task delegated from it; its id, and the ids of the
    /// tasks whose processes are to be cut off (it and those below it).
    pub fn revoke(&mut self, jti: &str) -> Option<(u32, Vec<u32>)> {
        let id = *self.by_jti.get(jti)?;
        self.by_id.get(&id)?;
        self.revoke_tree(id);
        Some((id, self.tree(id)))
    }

    /// Forgets tasks whose credential ended (expired or revoked) and that have no live
    /// process, keeping the `jti` of revoked ones so they can never be bound again.
    pub fn collect(&mut self, now: i64, live: impl Fn(u32) -> bool) {
        let dead: Vec<u32> = self
            .by_id
            .values()
            .filter(|t| t.state(now, false) == CredState::Expired && !live(t.id))
            .map(|t| t.id)
            .collect();
        for id in dead {
            if let Some(t) = self.by_id.remove(&id) {
                // Only if it still names this task (a later binding may have the id now).
                if self.by_jti.get(t.jti()) == Some(&id) {
                    self.by_jti.remove(t.jti());
                }
                if let Some(txn) = &t.verified.claims.txn
                    && let Some(ids) = self.by_txn.get_mut(txn)
                {
                    ids.retain(|x| *x != id);
                    if ids.is_empty() {
                        self.by_txn.remove(txn);
                    }
                }
            }
        }
    }
}

/// A credential bound inside `parent`'s tree must be narrower: scope a subset, `exp` not later,
/// and its actor chain extending the parent's.
pub fn check_delegation(parent: &Verified, child: &Verified) -> Result<(), BindError> {
    let esc = |s: String| Err(BindError::Escalation(s));
    if child.claims.exp > parent.claims.exp {
        return esc(format!(
            "exp {} is later than the parent task's exp {}",
            child.claims.exp, parent.claims.exp
        ));
    }
    if child.chain.len() <= parent.chain.len() || !child.chain.starts_with(&parent.chain) {
        return esc(format!(
            "actor chain {:?} does not extend the parent task's chain {:?}",
            child.chain, parent.chain
        ));
    }
    if let Err(e) = child.scope.within(&parent.scope) {
        return esc(e.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{
        scope::{CompiledScope, ScopeSpec},
        token::{Audience, Claims},
    };

    fn verified(jti: &str, chain: &[&str], exp: i64, exec: &[&str]) -> Verified {
        let spec = ScopeSpec {
            exec: exec.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut act = None;
        for a in &chain[1..] {
            act = Some(crate::credentials::token::Actor {
                sub: a.to_string(),
                act: act.map(Box::new),
            });
        }
        let claims = Claims {
            iss: "i".into(),
            sub: chain[0].into(),
            aud: Audience::One("tether".into()),
            jti: jti.into(),
            iat: None,
            nbf: None,
            exp,
            act,
            may_act: None,
            scope: None,
            authorization_details: None,
            txn: None,
            tctx: None,
            rctx: None,
            req_wl: None,
        };
        Verified {
            token: String::new(),
            verified_at: 0,
            chain: claims.chain(),
            id: claims.jti.clone(),
            issuer: claims.iss.clone(),
            claims,
            scope: CompiledScope::compile(&spec).unwrap(),
            scope_source: crate::credentials::carriers::ScopeSource::ScopeObject,
            leeway: 0,
        }
    }

    #[test]
    fn a_transaction_stays_in_the_tree_that_began_it() {
        let mut t = Tasks::default();
        let with_txn = |jti: &str, txn: &str| {
            let chain: &[&str] = if jti == "b" {
                &["alice", "coder", "sub"]
            } else {
                &["alice", "coder"]
            };
            let mut v = verified(jti, chain, 100, &["/bin/**"]);
            v.claims.txn = Some(txn.into());
            v
        };
        assert_eq!(t.bind(with_txn("a", "txn-1"), 10, 0, |_| true), Ok(Bound::New(1)));
        // Another token of the same transaction, in the same tree (a sub-agent): bound.
        assert_eq!(t.bind(with_txn("b", "txn-1"), 11, 1, |_| true), Ok(Bound::New(2)));
        // A sibling sub-agent under the first task (another branch of the same tree): bound.
        let mut sibling = verified("b2", &["alice", "coder", "sub2"], 100, &["/bin/**"]);
        sibling.claims.txn = Some("txn-1".into());
        assert_eq!(t.bind(sibling, 12, 1, |_| true), Ok(Bound::New(3)));
        // In a tree of its own while the first lives: refused, whatever its jti.
        assert_eq!(
            t.bind(with_txn("c", "txn-1"), 20, 0, |_| true),
            Err(BindError::TxnReplay {
                txn: "txn-1".into(),
                root_pid: 10
            })
        );
        // Another transaction: bound.
        assert_eq!(t.bind(with_txn("d", "txn-2"), 30, 0, |_| true), Ok(Bound::New(4)));
        // Once the transaction's trees are gone, it may begin elsewhere.
        assert_eq!(t.bind(with_txn("e", "txn-1"), 40, 0, |id| id == 4), Ok(Bound::New(5)));
    }

    #[test]
    fn revocation_reaches_every_task_delegated_below_and_no_new_credential_binds_there() {
        let mut t = Tasks::default();
        let root = verified("root", &["alice", "coder"], 100, &["/bin/**"]);
        let child = verified("child", &["alice", "coder", "sub"], 100, &["/bin/ls"]);
        let grandchild = verified("grand", &["alice", "coder", "sub", "subsub"], 100, &["/bin/ls"]);
        let other = verified("other", &["bob", "coder"], 100, &["/bin/**"]);
        assert_eq!(t.bind(root, 10, 0, |_| true), Ok(Bound::New(1)));
        assert_eq!(t.bind(child, 11, 1, |_| true), Ok(Bound::New(2)));
        assert_eq!(t.bind(grandchild, 12, 2, |_| true), Ok(Bound::New(3)));
        assert_eq!(t.bind(other, 20, 0, |_| true), Ok(Bound::New(4)));
        let (id, mut tree) = t.revoke("root").unwrap();
        tree.sort();
        assert_eq!((id, tree), (1, vec![1, 2, 3]));
        assert!(t.get(2).unwrap().revoked && t.get(3).unwrap().revoked);
        assert!(!t.get(4).unwrap().revoked);
        // A process of the revoked tree presents a narrower credential: refused.
        let narrower = verified("fresh", &["alice", "coder", "sub", "subsub", "x"], 90, &["/bin/ls"]);
        assert_eq!(
            t.bind(narrower, 13, 3, |_| true),
            Err(BindError::Revoked("grand".into()))
        );
        // By list: the named task and those below it.
        let mut t2 = Tasks::default();
        t2.bind(verified("r", &["a", "b"], 100, &["/bin/**"]), 1, 0, |_| true)
            .unwrap();
        t2.bind(verified("c", &["a", "b", "c"], 100, &["/bin/**"]), 2, 1, |_| true)
            .unwrap();
        let mut got = t2.apply_list(Revocations {
            jti: ["r".to_string()].into(),
            txn: Default::default(),
        });
        got.sort();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn listed_tasks_are_revoked_for_good_and_listed_credentials_never_bind() {
        let mut t = Tasks::default();
        let mut a = verified("a", &["alice", "coder"], 100, &["/bin/**"]);
        a.claims.txn = Some("txn-a".into());
        let b = verified("b", &["alice", "coder"], 100, &["/bin/**"]);
        assert_eq!(t.bind(a.clone(), 10, 0, |_| true), Ok(Bound::New(1)));
        assert_eq!(t.bind(b.clone(), 20, 0, |_| true), Ok(Bound::New(2)));
        let list = |jti: &[&str], txn: &[&str]| Revocations {
            jti: jti.iter().map(|s| s.to_string()).collect(),
            txn: txn.iter().map(|s| s.to_string()).collect(),
        };
        // By txn, then by jti; each once.
        assert_eq!(t.apply_list(list(&[], &["txn-a"])), [1]);
        assert_eq!(t.apply_list(list(&["b"], &["txn-a"])), [2]);
        assert!(t.apply_list(list(&["b"], &["txn-a"])).is_empty());
        // Off the list again: still revoked.
        assert!(t.apply_list(Revocations::default()).is_empty());
        assert!(t.get(1).unwrap().revoked && t.get(2).unwrap().revoked);
        // A listed credential never binds, in no tree.
        t.apply_list(list(&["c"], &["txn-d"]));
        let c = verified("c", &["alice", "coder"], 100, &["/bin/**"]);
        assert_eq!(t.bind(c, 30, 0, |_| false), Err(BindError::Listed("c".into())));
        let mut d = verified("d", &["alice", "coder"], 100, &["/bin/**"]);
        d.claims.txn = Some("txn-d".into());
        assert_eq!(t.bind(d, 40, 0, |_| false), Err(BindError::Listed("d".into())));
    }

    #[test]
    fn replay_into_another_live_tree_is_refused() {
        let mut t = Tasks::default();
        let v = verified("j1", &["alice", "coder"], 100, &["/bin/**"]);
        assert_eq!(t.bind(v.clone(), 10, 0, |_| true), Ok(Bound::New(1)));
        // The same tree presenting it again: nothing changes.
        assert_eq!(t.bind(v.clone(), 11, 1, |_| true), Ok(Bound::Already(1)));
        // Another tree while the first lives: replay.
        assert!(matches!(
            t.bind(v.clone(), 20, 0, |_| true),
            Err(BindError::Replay { root_pid: 10, .. })
        ));
        // Once the first tree is gone it may be bound again.
        assert!(matches!(t.bind(v, 20, 0, |_| false), Ok(Bound::New(2))));
    }

    #[test]
    fn delegation_must_narrow() {
        let mut t = Tasks::default();
        let parent = verified("p", &["alice", "coder"], 100, &["/bin/**"]);
        assert_eq!(t.bind(parent, 10, 0, |_| true), Ok(Bound::New(1)));
        let ok = verified("c1", &["alice", "coder", "tests"], 90, &["/bin/sh"]);
        assert!(matches!(t.bind(ok, 11, 1, |_| true), Ok(Bound::New(2))));
        for (bad, why) in [
            (verified("c2", &["alice", "coder", "tests"], 101, &["/bin/sh"]), "exp"),
            (verified("c3", &["alice", "tests"], 90, &["/bin/sh"]), "chain"),
            (verified("c4", &["alice", "coder"], 90, &["/bin/sh"]), "chain"),
            (verified("c5", &["bob", "coder", "tests"], 90, &["/bin/sh"]), "chain"),
            (
                verified("c6", &["alice", "coder", "tests"], 90, &["/usr/bin/curl"]),
                "scope.exec",
            ),
        ] {
            match t.bind(bad, 12, 1, |_| true) {
                Err(BindError::Escalation(e)) => assert!(e.contains(why), "{e}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn revoked_tasks_stay_revoked() {
        let mut t = Tasks::default();
        let v = verified("j", &["alice", "coder"], 100, &[]);
        t.bind(v.clone(), 10, 0, |_| true).unwrap();
        assert_eq!(t.revoke("j"), Some((1, vec![1])));
        assert_eq!(t.get(1).unwrap().state(50, false), CredState::Revoked);
        assert!(matches!(t.bind(v, 11, 0, |_| false), Err(BindError::Revoked(_))));
        assert_eq!(t.revoke("nope"), None);
    }

    #[test]
    fn state_follows_time_and_the_kernel() {
        let task = Task {
            id: 1,
            verified: verified("j", &["a", "b"], 100, &[]),
            root_pid: 1,
            parent: None,
            revoked: false,
        };
        assert_eq!(task.state(99, false), CredState::Valid);
        assert_eq!(task.state(99, true), CredState::Expired, "the kernel saw it expired");
        assert_eq!(task.state(100, false), CredState::Expired);
        // Actions: as the kernel saw them, whenever they are handled.
        assert_eq!(task.state_at_action(false), CredState::Valid);
        assert_eq!(task.state_at_action(true), CredState::Expired);
        let revoked = Task { revoked: true, ..task };
        assert_eq!(
            revoked.state_at_action(false),
            CredState::Valid,
            "done before the revocation"
        );
        assert_eq!(revoked.state_at_action(true), CredState::Revoked);
    }

    #[test]
    fn restored_tasks_keep_their_ids_and_new_binds_come_after_them() {
        let mut tasks = Tasks::default();
        tasks.restore(Task {
            id: 7,
            verified: verified("j7", &["u", "a"], i64::MAX, &["/bin/**"]),
            root_pid: 100,
            parent: None,
            revoked: false,
        });
        assert_eq!(tasks.get(7).map(|t| t.jti()), Some("j7"));
        // The same jti in another live tree is still a replay.
        assert!(matches!(
            tasks.bind(verified("j7", &["u", "a"], i64::MAX, &["/bin/**"]), 200, 0, |_| true),
            Err(BindError::Replay { .. })
        ));
        let next = tasks.bind(verified("j8", &["u", "a"], i64::MAX, &["/bin/**"]), 300, 0, |_| false);
        assert_eq!(next, Ok(Bound::New(8)));
    }
}
