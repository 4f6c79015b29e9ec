//! Sans-IO decision logic for the transport: pure state machines with `now`
//! passed in, no iroh types, tested without sockets on a virtual clock.
//! `media_send` (and the uplink) drive them.

pub mod send;
