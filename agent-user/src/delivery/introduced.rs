//! Which processes the audit stream's receivers already know: a process is *introduced* by
//! an audit event in full form (its command line, image, lineage up to the agent root, task
//! binding, node, container and pod), and its later events refer to it by `process.uid`
//! (the compact form). Pure: the emitter says when a record was written and when a sink
//! started over.
//!
//! A process is written in full again when what its full form says changed (its stamp: a
//! new task binding, a new pod identity, another lineage), when a sink of the stream starts
//! over (a rotated file, a spool that dropped lines, a sink that failed: [`start_over`]
//! forgets every process), and at least every [`REFRESH_NS`], so a receiver that starts
//! reading mid-stream or over a lossy transport (syslog over UDP) can resolve every uid
//! within that bound. With [`RecordForm::Full`] every event is written in full.
//!
//! [`start_over`]: Introduced::start_over

use crate::{lineage::ProcKey, model::FastMap};

/// A process's full form is written again after this long (ns of the kernel's clock).
pub const REFRESH_NS: u64 = 60 * 1_000_000_000;
/// Most processes remembered; past it every process is introduced again (a bound on memory
/// if exits were missed).
pub const MAX_KNOWN: usize = 1 << 16;

/// Which form audit events take (`tether run --record-form`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordForm {
    /// A process's identity and lineage once, at its first event (exec or first sight) and
    /// when they change; its later events refer to it by `actor.process.uid`.
    #[default]
    Compact,
    /// Every audit event self-contained: the full identity and lineage in each.
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    stamp: u64,
    at_ns: u64,
}

#[derive(Debug)]
pub struct Introduced {
    form: RecordForm,
    known: FastMap<ProcKey, Known>,
}

impl Introduced {
    pub fn new(form: RecordForm) -> Introduced {
        Introduced {
            form,
            known: FastMap::default(),
        }
    }

    /// Do the receivers hold `key`'s full form as `stamp` describes it, written recently
    /// enough at `now_ns`? (Then an event of it may be compact.)
    pub fn holds(&self, key: &ProcKey, stamp: u64, now_ns: u64) -> bool {
        self.form == RecordForm::Compact
            && self
                .known
                .get(key)
                .is_some_and(|k| k.stamp == stamp && now_ns.saturating_sub(k.at_ns) < REFRESH_NS)
    }

    /// `key`'s full form, as `stamp` describes it, was written at `now_ns`.
    pub fn introduced(&mut self, key: ProcKey, stamp: u64, now_ns: u64) {
        if self.form == RecordForm::Full {
            return;
        }
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&key) {
            self.known.clear();
        }
        self.known.insert(key, Known { stamp, at_ns: now_ns });
    }

    /// The process ended: nothing will refer to it again.
    pub fn forget(&mut self, key: &ProcKey) {
        self.known.remove(key);
    }

    /// A sink of the stream started over (or lost lines): every process is introduced again
    /// at its next event.
    pub fn start_over(&mut self) {
        self.known.clear();
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProcKey = ProcKey { pid: 7, start: 100 };

    #[test]
    fn a_process_is_known_once_introduced_until_its_stamp_changes_or_the_sink_starts_over() {
        let mut i = Introduced::new(RecordForm::Compact);
        assert!(!i.holds(&P, 1, 0), "never introduced");
        i.introduced(P, 1, 0);
        assert!(i.holds(&P, 1, 10));
        assert!(!i.holds(&P, 2, 10), "its identity changed");
        assert!(
            !i.holds(&ProcKey { pid: 7, start: 101 }, 1, 10),
            "a reused pid is another process"
        );
        assert!(!i.holds(&P, 1, REFRESH_NS), "refreshed");
        i.start_over();
        assert!(!i.holds(&P, 1, 10), "a sink started over");
        i.introduced(P, 1, 0);
        i.forget(&P);
        assert!(i.is_empty());
    }

    #[test]
    fn full_records_never_refer() {
        let mut i = Introduced::new(RecordForm::Full);
        i.introduced(P, 1, 0);
        assert!(!i.holds(&P, 1, 1) && i.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut i = Introduced::new(RecordForm::Compact);
        for pid in 0..=MAX_KNOWN as u32 {
            i.introduced(ProcKey { pid, start: 1 }, 1, 0);
        }
        assert!(i.len() <= MAX_KNOWN);
    }
}
