//! Sans-IO decision logic for the transport: pure state machines with `now`
//! passed in, no iroh types, tested without sockets on a virtual clock.
//!
//! * [`send`]: the GOP send policy `media_send` drives.
//! * [`rate`]: adaptive bitrate — which rung of the tier ladder to send.

pub mod rate;
pub mod send;
