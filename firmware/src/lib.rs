//! Kodama camera firmware.
