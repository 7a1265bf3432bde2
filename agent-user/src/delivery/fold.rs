//! Noise control: identical alerts (same task, rule and target) repeated within a window are
//! folded into one. The first is always sent at once; the repeats are counted, and when the
//! window ends with repeats, one alert carrying their count (OCSF `count`) is sent for them.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// What to do with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fold<T> {
    /// Send it now (it is handed back).
    Send(T),
    /// A repeat inside the window: counted, sent later in a folded alert.
    Held,
}

struct Window<T> {
    opened: Instant,
    /// Repeats held since the window opened, and the last of them.
    repeats: u64,
    last: Option<T>,
}

/// Alerts of type `T` (the typed finding; the sink serialises what is sent) held for folding.
pub struct Folder<T> {
    window: Duration,
    open: HashMap<String, Window<T>>,
}

/// A folded alert due: the last repeat and how many repeats it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded<T> {
    pub key: String,
    pub last: T,
    pub repeats: u64,
}

impl<T> Folder<T> {
    /// `window` zero: no folding.
    pub fn new(window: Duration) -> Folder<T> {
        Folder {
            window,
            open: HashMap::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// An alert with fold key `key` (task, rule, target).
    pub fn offer(&mut self, key: &str, alert: T, now: Instant) -> Fold<T> {
        if self.window.is_zero() {
            return Fold::Send(alert);
        }
        match self.open.get_mut(key) {
            Some(w) if now.duration_since(w.opened) < self.window => {
                w.repeats += 1;
                w.last = Some(alert);
                Fold::Held
            }
            _ => {
                self.open.insert(
                    key.to_string(),
                    Window {
                        opened: now,
                        repeats: 0,
                        last: None,
                    },
                );
                Fold::Send(alert)
            }
        }
    }

    /// The windows that ended by `now`: the folded alerts to send (windows without repeats
    /// just close).
    pub fn due(&mut self, now: Instant) -> Vec<Folded<T>> {
        let window = self.window;
        let mut out = Vec::new();
        self.open.retain(|key, w| {
            if now.duration_since(w.opened) < window {
                return true;
            }
            if let (n @ 1.., Some(last)) = (w.repeats, w.last.take()) {
                out.push(Folded {
                    key: key.clone(),
                    last,
                    repeats: n,
                });
            }
            false
        });
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Every held repeat, now (at shutdown: nothing held is lost).
    pub fn flush_all(&mut self) -> Vec<Folded<T>> {
        let mut out: Vec<Folded<T>> = self
            .open
            .drain()
            .filter_map(|(key, w)| {
                let last = w.last?;
                (w.repeats > 0).then_some(Folded {
                    key,
                    last,
                    repeats: w.repeats,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_goes_at_once_repeats_are_folded_into_one_with_their_count() {
        let t0 = Instant::now();
        let mut f: Folder<String> = Folder::new(Duration::from_secs(60));
        assert_eq!(
            f.offer("task-a|scope:connect|10.0.0.1:443", "first".into(), t0),
            Fold::Send("first".into())
        );
        for i in 1..=5 {
            let line = format!("repeat {i}");
            assert_eq!(
                f.offer("task-a|scope:connect|10.0.0.1:443", line, t0 + Duration::from_secs(i)),
                Fold::Held
            );
        }
        // Another target, another task: not folded with it.
        assert_eq!(
            f.offer("task-a|scope:connect|10.0.0.2:443", "other".into(), t0),
            Fold::Send("other".into())
        );
        assert_eq!(
            f.offer("task-b|scope:connect|10.0.0.1:443", "other task".into(), t0),
            Fold::Send("other task".into())
        );
        assert!(f.due(t0 + Duration::from_secs(59)).is_empty());
        let due = f.due(t0 + Duration::from_secs(60));
        assert_eq!(
            due,
            vec![Folded {
                key: "task-a|scope:connect|10.0.0.1:443".into(),
                last: "repeat 5".into(),
                repeats: 5
            }]
        );
        // The window closed: the next one is a first again.
        assert_eq!(
            f.offer(
                "task-a|scope:connect|10.0.0.1:443",
                "again".into(),
                t0 + Duration::from_secs(61)
            ),
            Fold::Send("again".into())
        );
        assert_eq!(
            f.offer(
                "task-a|scope:connect|10.0.0.1:443",
                "again 2".into(),
                t0 + Duration::from_secs(62)
            ),
            Fold::Held
        );
        assert_eq!(f.flush_all().len(), 1, "held repeats are not lost at shutdown");
    }

    #[test]
    fn a_zero_window_folds_nothing() {
        let mut f: Folder<&str> = Folder::new(Duration::ZERO);
        let t = Instant::now();
        assert_eq!(f.offer("k", "a", t), Fold::Send("a"));
        assert_eq!(f.offer("k", "b", t), Fold::Send("b"));
    }
}
