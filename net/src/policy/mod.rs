//! Sans-IO policies driven by the transport's measurements: pure state
//! machines with `now` passed in, tested on a virtual clock.
//!
//! * [`rate`]: adaptive bitrate — which rung of the tier ladder to send.

pub mod rate;
