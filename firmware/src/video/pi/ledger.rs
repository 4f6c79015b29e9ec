//! Buffer bookkeeping between the camera and the encoder.
//!
//! Each camera buffer (a libcamera request with its dmabuf) is, at any time,
//! in exactly one place: queued in the camera, completed and waiting for the
//! encoder, or imported into one of the encoder's OUTPUT slots (V4L2
//! `V4L2_MEMORY_DMABUF`). The encoder hands a slot back when it dequeues it
//! (VIDIOC_DQBUF on OUTPUT, spec section "Encoding": the buffer may be reused
//! once dequeued), and only then may the camera write into that dmabuf again.
//! Getting this wrong is silent on hardware (torn frames), so the rules live
//! here, checked, without any device.

/// Where a camera buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferState {
    /// Queued in the camera, waiting to be filled.
    InCamera,
    /// Filled; held by the source until the encoder has a free slot.
    Ready,
    /// Imported into this encoder OUTPUT slot.
    Encoding {
        /// OUTPUT buffer index.
        slot: u32,
    },
}

/// A transition that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A cookie that was never registered.
    #[error("unknown camera buffer {0}")]
    UnknownBuffer(u64),
    /// An encoder slot index out of range.
    #[error("encoder slot {0} does not exist")]
    UnknownSlot(u32),
    /// The buffer is not where the transition expects it.
    #[error("camera buffer {cookie} is {actual:?}, expected {expected}")]
    WrongState {
        /// The buffer.
        cookie: u64,
        /// Where it is.
        actual: BufferState,
        /// Where it should have been.
        expected: &'static str,
    },
    /// The encoder returned a slot that holds nothing.
    #[error("encoder slot {0} returned while empty")]
    SlotEmpty(u32),
    /// Every encoder slot is taken.
    #[error("all encoder slots are busy")]
    NoFreeSlot,
}

/// The ledger: `buffers[cookie]` and `slots[index]`.
#[derive(Debug, Clone)]
pub struct Ledger {
    buffers: Vec<BufferState>,
    slots: Vec<Option<u64>>,
}

impl Ledger {
    /// `buffers` camera buffers (cookies `0..buffers`), all in the camera,
    /// and `slots` empty encoder OUTPUT slots.
    pub fn new(buffers: usize, slots: usize) -> Self {
        Ledger {
            buffers: vec![BufferState::InCamera; buffers],
            slots: vec![None; slots],
        }
    }

    fn state_mut(&mut self, cookie: u64) -> Result<&mut BufferState, LedgerError> {
        usize::try_from(cookie)
            .ok()
            .and_then(|i| self.buffers.get_mut(i))
            .ok_or(LedgerError::UnknownBuffer(cookie))
    }

    /// Where a buffer is.
    pub fn state(&self, cookie: u64) -> Option<BufferState> {
        usize::try_from(cookie)
            .ok()
            .and_then(|i| self.buffers.get(i))
            .copied()
    }

    /// The camera completed a buffer.
    pub fn completed(&mut self, cookie: u64) -> Result<(), LedgerError> {
        let s = self.state_mut(cookie)?;
        match *s {
            BufferState::InCamera => {
                *s = BufferState::Ready;
                Ok(())
            }
            actual => Err(LedgerError::WrongState {
                cookie,
                actual,
                expected: "in the camera",
            }),
        }
    }

    /// A completed buffer goes back to the camera without being encoded
    /// (frame dropped).
    pub fn requeued(&mut self, cookie: u64) -> Result<(), LedgerError> {
        let s = self.state_mut(cookie)?;
        match *s {
            BufferState::Ready => {
                *s = BufferState::InCamera;
                Ok(())
            }
            actual => Err(LedgerError::WrongState {
                cookie,
                actual,
                expected: "ready",
            }),
        }
    }

    /// Picks a free encoder slot for a ready buffer and records the import.
    pub fn submit(&mut self, cookie: u64) -> Result<u32, LedgerError> {
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(LedgerError::NoFreeSlot)?;
        let slot = u32::try_from(free).map_err(|_| LedgerError::NoFreeSlot)?;
        let s = self.state_mut(cookie)?;
        match *s {
            BufferState::Ready => {
                *s = BufferState::Encoding { slot };
                self.slots[free] = Some(cookie);
                Ok(slot)
            }
            actual => Err(LedgerError::WrongState {
                cookie,
                actual,
                expected: "ready",
            }),
        }
    }

    /// The encoder dequeued OUTPUT slot `slot`: its camera buffer is free to
    /// go back to the camera. Returns the buffer's cookie.
    pub fn slot_done(&mut self, slot: u32) -> Result<u64, LedgerError> {
        let entry = usize::try_from(slot)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(LedgerError::UnknownSlot(slot))?;
        let cookie = entry.take().ok_or(LedgerError::SlotEmpty(slot))?;
        let s = self.state_mut(cookie)?;
        *s = BufferState::InCamera;
        Ok(cookie)
    }

    /// Whether an encoder slot is free.
    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    /// Buffers inside the encoder.
    pub fn encoding(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Buffers in the camera.
    pub fn in_camera(&self) -> usize {
        self.buffers
            .iter()
            .filter(|s| **s == BufferState::InCamera)
            .count()
    }

    /// Every buffer is back in the camera and no slot is taken: the camera
    /// may be stopped and its buffers freed without the encoder still
    /// reading one.
    pub fn all_home(&self) -> bool {
        self.encoding() == 0 && self.in_camera() == self.buffers.len()
    }

    /// Checks that slots and buffer states agree (fuzzing and tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(c) = slot {
                let want = BufferState::Encoding { slot: i as u32 };
                if self.state(*c) != Some(want) {
                    return Err(format!("slot {i} holds {c} which is {:?}", self.state(*c)));
                }
            }
        }
        for (c, s) in self.buffers.iter().enumerate() {
            if let BufferState::Encoding { slot } = s {
                if self.slots.get(*slot as usize).copied().flatten() != Some(c as u64) {
                    return Err(format!("buffer {c} claims slot {slot}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_buffer_round_trip() {
        let mut l = Ledger::new(4, 2);
        assert!(l.all_home());
        l.completed(2).expect("complete");
        assert_eq!(l.state(2), Some(BufferState::Ready));
        let slot = l.submit(2).expect("submit");
        assert_eq!(slot, 0);
        assert_eq!(l.state(2), Some(BufferState::Encoding { slot: 0 }));
        assert!(!l.all_home());
        assert_eq!(l.slot_done(0), Ok(2));
        assert!(l.all_home());
    }

    #[test]
    fn slots_run_out_and_free_up() {
        let mut l = Ledger::new(4, 2);
        for c in 0..3 {
            l.completed(c).expect("complete");
        }
        assert_eq!(l.submit(0), Ok(0));
        assert_eq!(l.submit(1), Ok(1));
        assert!(!l.has_free_slot());
        assert_eq!(l.submit(2), Err(LedgerError::NoFreeSlot));
        assert_eq!(l.slot_done(1), Ok(1));
        assert_eq!(l.submit(2), Ok(1));
        l.check_invariants().expect("consistent");
    }

    #[test]
    fn illegal_transitions_are_errors() {
        let mut l = Ledger::new(2, 1);
        assert_eq!(
            l.submit(0),
            Err(LedgerError::WrongState {
                cookie: 0,
                actual: BufferState::InCamera,
                expected: "ready"
            })
        );
        assert_eq!(l.completed(9), Err(LedgerError::UnknownBuffer(9)));
        assert_eq!(l.slot_done(0), Err(LedgerError::SlotEmpty(0)));
        assert_eq!(l.slot_done(5), Err(LedgerError::UnknownSlot(5)));
        l.completed(0).expect("complete");
        assert!(matches!(
            l.completed(0),
            Err(LedgerError::WrongState { .. })
        ));
        l.requeued(0).expect("dropped frame");
        assert!(l.all_home());
    }

    proptest! {
        #[test]
        fn random_operations_keep_books_straight(ops in proptest::collection::vec((0u8..4, 0u64..6, 0u32..4), 0..200)) {
            let mut l = Ledger::new(5, 3);
            for (op, cookie, slot) in ops {
                let before = l.clone();
                let r = match op {
                    0 => l.completed(cookie),
                    1 => l.requeued(cookie),
                    2 => l.submit(cookie).map(|_| ()),
                    _ => l.slot_done(slot).map(|_| ()),
                };
                if r.is_err() {
                    // A refused transition changes nothing.
                    prop_assert_eq!(format!("{:?}", before), format!("{:?}", l));
                }
                prop_assert!(l.check_invariants().is_ok(), "{:?}", l.check_invariants());
                prop_assert!(l.encoding() <= 3);
            }
        }
    }
}
