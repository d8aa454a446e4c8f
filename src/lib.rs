//! `ccs`: use several Claude subscriptions as one. The product around the actor system of
//! `ccs-actors`: configuration, the store, and (as they land) the proxy, OAuth, the CLI
//! commands and the simulator. See ARCHITECTURE.md for the map.
#![forbid(unsafe_code)]

// First: the commands print through its macros.
#[macro_use]
pub mod term;
pub mod alerts;
pub mod api;
pub mod claude_code;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod endpoint;
pub mod fsutil;
pub mod harness;
pub mod keys;
pub mod logging;
pub mod oauth;
pub mod profiles;
pub mod proxy;
pub mod shared;
/// The simulated Anthropic (crate `ccs-sim`), under the name the code and tests know it by.
pub use ccs_sim as sim;
pub mod store;
pub mod telemetry;
pub mod tls;
