//! `ccs-actors`: the actor system of ccs, with no HTTP server and no CLI.
//!
//! Pure machines (`lifecycle`, `quota`, `routing`) decide; actors (`account`, `supervisor`)
//! carry out their effects. Time comes only from a `clock::Clock`.
#![forbid(unsafe_code)]

pub mod account;
pub mod clock;
pub mod lifecycle;
pub mod planted;
pub mod ports;
pub mod quota;
pub mod routing;
pub mod runway;
pub mod supervisor;
pub mod token;

pub use clock::{Clock, ManualClock, SharedClock, Span, SystemClock, Timestamp};
pub use token::{Secret, Token};
