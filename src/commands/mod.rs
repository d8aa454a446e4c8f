//! One file per command group. Each returns `anyhow::Result` with messages for people.

pub mod cliproxy;
pub mod config;
pub mod sim;
