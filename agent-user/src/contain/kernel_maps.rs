//! Writes compiled entries into the kernel's rule maps and keeps track of what each owner has
//! there, so a task's entries can be replaced or removed and a reload can swap guardrails
//! without a moment with none (new entries first, then the stale ones removed).
use std::collections::{BTreeMap, BTreeSet};

use agent_common::contain::{
    Grants, MAX_GUARDRAILS, NetKey, NetRule, PATH_KEY_HEAD_BITS, PATH_KEY_LEN, PathKey, PathRule, TAIL_KEY_HEAD_BITS,
    TAIL_KEY_LEN, TailKey, Verdict, posture,
};
use aya::maps::{
    Array, HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};

use super::compile::Compiled;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("kernel rule map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{0} guardrails; the kernel holds at most {MAX_GUARDRAILS}")]
    TooManyGuardrails(usize),
}

fn err(map: &'static str) -> impl Fn(MapError) -> MapsError {
    move |source| MapsError::Map { map, source }
}

type PathK = (u32, Vec<u8>);
type NetK = (u32, NetKey);
type TailK = (u32, Vec<u8>);

/// What one owner has in the maps.
#[derive(Debug, Default)]
struct Owned {
    paths: BTreeSet<PathK>,
    tails: BTreeSet<TailK>,
    nets: BTreeSet<NetK>,
    grants: bool,
}

pub struct KernelRules {
    pub paths: LpmTrie<MapData, PathKey, PathRule>,
    pub tails: LpmTrie<MapData, TailKey, PathRule>,
    pub nets: LpmTrie<MapData, NetKey, NetRule>,
    pub grants: HashMap<MapData, u32, Grants>,
    pub posture: Array<MapData, Verdict>,
    pub guard_verdicts: Array<MapData, Verdict>,
    owned: BTreeMap<u32, Owned>,
    next_tail: u32,
}

fn path_key(bits: u32, owner: u32, class: u8, bytes: &[u8]) -> Key<PathKey> {
    let mut k = PathKey {
        owner: owner.to_be_bytes(),
        class,
        path: [0; PATH_KEY_LEN],
    };
    k.path[..bytes.len()].copy_from_slice(bytes);
    Key::new(bits, k)
}

fn tail_key(id: u32, bytes: &[u8]) -> Key<TailKey> {
    let mut k = TailKey {
        tail_id: id.to_be_bytes(),
        path: [0; TAIL_KEY_LEN],
    };
    k.path[..bytes.len()].copy_from_slice(bytes);
    Key::new(TAIL_KEY_HEAD_BITS + bytes.len() as u32 * 8, k)
}

impl KernelRules {
    pub fn new(
        paths: LpmTrie<MapData, PathKey, PathRule>,
        tails: LpmTrie<MapData, TailKey, PathRule>,
        nets: LpmTrie<MapData, NetKey, NetRule>,
        grants: HashMap<MapData, u32, Grants>,
        posture: Array<MapData, Verdict>,
        guard_verdicts: Array<MapData, Verdict>,
    ) -> KernelRules {
        KernelRules {
            paths,
            tails,
            nets,
            grants,
            posture,
            guard_verdicts,
            owned: BTreeMap::new(),
            next_tail: 1,
        }
    }

    /// Learns what the maps already hold, when they were pinned by the daemon before this one
    /// (a restart): each entry goes to the owner its key names, so that a later install or
    /// removal replaces it like one of this daemon's. A tail no path entry refers to is
    /// removed. Returns the owners found.
    pub fn adopt(&mut self) -> Result<BTreeSet<u32>, MapsError> {
        let mut tail_owner: BTreeMap<u32, u32> = BTreeMap::new();
        let paths: Vec<(Key<PathKey>, PathRule)> =
            self.paths.iter().collect::<Result<_, _>>().map_err(err("PATH_RULES"))?;
        for (key, rule) in paths {
            let (bits, k) = (key.prefix_len(), key.data());
            let owner = u32::from_be_bytes(k.owner);
            let len = (bits.saturating_sub(PATH_KEY_HEAD_BITS) / 8) as usize;
            let mut bytes = vec![k.class];
            bytes.extend_from_slice(&k.path[..len.min(PATH_KEY_LEN)]);
            self.owned.entry(owner).or_default().paths.insert((bits, bytes));
            if rule.tail_id != 0 {
                tail_owner.insert(rule.tail_id, owner);
            }
        }
        let tails: Vec<Key<TailKey>> = self.tails.keys().collect::<Result<_, _>>().map_err(err("TAIL_RULES"))?;
        for key in tails {
            let (bits, k) = (key.prefix_len(), key.data());
            let id = u32::from_be_bytes(k.tail_id);
            let len = (bits.saturating_sub(TAIL_KEY_HEAD_BITS) / 8) as usize;
            let bytes = k.path[..len.min(TAIL_KEY_LEN)].to_vec();
            match tail_owner.get(&id) {
                Some(owner) => {
                    self.owned.entry(*owner).or_default().tails.insert((id, bytes));
                }
                None => {
                    let _ = self.tails.remove(&key);
                }
            }
            self.next_tail = self.next_tail.max(id.wrapping_add(1).max(1));
        }
        let nets: Vec<Key<NetKey>> = self.nets.keys().collect::<Result<_, _>>().map_err(err("NET_RULES"))?;
        for key in nets {
            let (bits, k) = (key.prefix_len(), key.data());
            self.owned
                .entry(u32::from_be_bytes(k.owner))
                .or_default()
                .nets
                .insert((bits, k));
        }
        let owners: Vec<u32> = self.grants.keys().collect::<Result<_, _>>().map_err(err("GRANTS"))?;
        for owner in owners {
            self.owned.entry(owner).or_default().grants = true;
        }
        Ok(self.owned.keys().copied().collect())
    }

    /// Owners with entries in the maps.
    pub fn owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.owned.keys().copied()
    }

    /// Replaces everything `owner` has in the maps with `c` (new entries first).
    pub fn install(&mut self, owner: u32, c: &Compiled) -> Result<(), MapsError> {
        let mut now = Owned::default();
        // Owner-local tail ids -> global ones.
        let mut tail_map: BTreeMap<u32, u32> = BTreeMap::new();
        for t in &c.tails {
            let id = *tail_map.entry(t.tail).or_insert_with(|| {
                let id = self.next_tail;
                self.next_tail = self.next_tail.wrapping_add(1).max(1);
                id
            });
            self.tails
                .insert(&tail_key(id, &t.bytes), t.rule, 0)
                .map_err(err("TAIL_RULES"))?;
            now.tails.insert((id, t.bytes.clone()));
        }
        for p in &c.paths {
            let mut rule = p.rule;
            if let Some(id) = tail_map.get(&rule.tail_id) {
                rule.tail_id = *id;
            }
            let mut k = vec![p.class];
            k.extend_from_slice(&p.bytes);
            self.paths
                .insert(&path_key(p.prefix_bits(), p.owner, p.class, &p.bytes), rule, 0)
                .map_err(err("PATH_RULES"))?;
            now.paths.insert((p.prefix_bits(), k));
        }
        for n in &c.nets {
            let key = NetKey {
                owner: n.owner.to_be_bytes(),
                proto: n.proto,
                addr: n.addr,
            };
            self.nets
                .insert(&Key::new(n.prefix_bits(), key), n.rule, 0)
                .map_err(err("NET_RULES"))?;
            now.nets.insert((n.prefix_bits(), key));
        }
        if let Some(g) = &c.grants {
            self.grants.insert(owner, *g, 0).map_err(err("GRANTS"))?;
            now.grants = true;
        }
        let old = self.owned.insert(owner, now).unwrap_or_default();
        let now = &self.owned[&owner];
        let stale = Owned {
            paths: old.paths.difference(&now.paths).cloned().collect(),
            tails: old.tails.difference(&now.tails).cloned().collect(),
            nets: old.nets.difference(&now.nets).cloned().collect(),
            grants: old.grants && !now.grants,
        };
        self.delete(owner, &stale);
        Ok(())
    }

    /// Removes everything `owner` has in the maps.
    pub fn remove(&mut self, owner: u32) {
        if let Some(old) = self.owned.remove(&owner) {
            self.delete(owner, &old);
        }
    }

    fn delete(&mut self, owner: u32, o: &Owned) {
        // Missing entries are not an error here: the goal (absent) holds.
        for (bits, k) in &o.paths {
            let _ = self.paths.remove(&path_key(*bits, owner, k[0], &k[1..]));
        }
        for (id, bytes) in &o.tails {
            let _ = self.tails.remove(&tail_key(*id, bytes));
        }
        for (bits, key) in &o.nets {
            let _ = self.nets.remove(&Key::new(*bits, *key));
        }
        if o.grants {
            let _ = self.grants.remove(&owner);
        }
    }

    /// Do the kernel's posture and guardrail verdicts read as given? (A map entry that
    /// cannot be read counts as different.)
    pub fn verdicts_hold(&self, posture: &[Verdict; posture::COUNT as usize], guards: &[Verdict]) -> bool {
        posture
            .iter()
            .enumerate()
            .all(|(i, v)| self.posture.get(&(i as u32), 0).is_ok_and(|k| k == *v))
            && guards
                .iter()
                .enumerate()
                .all(|(i, v)| self.guard_verdicts.get(&(i as u32), 0).is_ok_and(|k| k == *v))
    }

    /// Writes the posture and guardrail verdicts.
    pub fn set_verdicts(
        &mut self,
        posture: &[Verdict; posture::COUNT as usize],
        guards: &[Verdict],
    ) -> Result<(), MapsError> {
        if guards.len() > MAX_GUARDRAILS as usize {
            return Err(MapsError::TooManyGuardrails(guards.len()));
        }
        for (i, v) in guards.iter().enumerate() {
            self.guard_verdicts
                .set(i as u32, *v, 0)
                .map_err(err("GUARD_VERDICTS"))?;
        }
        for (i, v) in posture.iter().enumerate() {
            self.posture.set(i as u32, *v, 0).map_err(err("POSTURE"))?;
        }
        Ok(())
    }
}
