//! Tether's daemon and CLI. `main.rs` only calls [`cli::main`].
pub mod api;
pub mod cli;
pub mod contain;
pub mod credentials;
pub mod daemon;
pub mod delivery;
pub mod events;
pub mod features;
pub mod kernel_layout;
pub mod lineage;
pub mod loader;
pub mod metrics;
pub mod ocsf;
pub mod paths;
pub mod policy;
pub mod procscan;
pub mod selectors;
