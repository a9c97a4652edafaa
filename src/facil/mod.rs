//! The host room: facil.io 0.7.0.beta4's ABI and the glue that runs a TLS
//! connection inside its event loop.

pub mod acme;
pub mod hooks;
pub mod pubsub;
pub mod sys;
pub mod v076;
mod ticket_watch;
pub mod watcher;
