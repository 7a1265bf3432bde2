//! Tether's daemon and CLI. `main.rs` only calls [`cli::main`].
pub mod api;
pub mod cli;
pub mod contain;
pub mod credentials;
pub mod daemon;
pub mod delivery;
pub mod events;
pub mod features;
pub mod fuzzing;
pub mod kernel_layout;
pub mod lineage;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod modret;
pub mod ocsf;
pub mod paths;
pub mod persist;
pub mod pods;
pub mod policy;
pub mod procscan;
pub mod programs;
pub mod selectors;
pub mod tls;

/// The map for what is looked up on every event (the process table, the processes already
/// introduced, cgroup identities): foldhash, a fraction of SipHash's cost, seeded per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
