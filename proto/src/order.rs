//! Putting groups back in order at the receiver.
//!
//! Each GOP travels on its own stream and newer streams have higher priority,
//! so the first frames of group N+1 can overtake the tail of group N. The
//! [`GroupOrderer`] delivers video group by group: frames of the current
//! group pass straight through; a newer group's frames wait until the current
//! group ends (finished or reset). If the waiting grows past a byte budget
//! the current group is abandoned (reported as ended incomplete) and the
//! receiver moves on: latency stays bounded when a sender stalls mid-group.
//! Frames of groups older than the current one are stale and dropped
//! (counted). A group id that never shows up (the sender superseded it
//! before opening its stream) holds things up for at most
//! [`MAX_PENDING_GROUPS`] newer groups. Audio, telemetry and events pass through untouched.

use std::collections::BTreeMap;

use crate::frame::{Channel, Frame};
use crate::stream::StreamHeader;

/// Newer groups that may wait for the current one before it is given up.
pub const MAX_PENDING_GROUPS: usize = 3;

/// Media as it comes off the streams, and as the orderer emits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A stream began; for video, a group.
    Started(StreamHeader),
    /// A validated frame.
    Frame(StreamHeader, Frame),
    /// A stream ended; `complete` is false when it was reset or abandoned.
    Ended {
        /// Its header.
        header: StreamHeader,
        /// Whether it finished normally.
        complete: bool,
    },
}

#[derive(Debug)]
struct Pending {
    header: StreamHeader,
    frames: Vec<Frame>,
    ended: Option<bool>,
}

/// Reorders video groups; see the module docs.
#[derive(Debug)]
pub struct GroupOrderer {
    current: Option<u64>,
    /// Whether the current group has ended (the next one may start at once).
    current_ended: bool,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    budget: usize,
    stale: u64,
}

impl GroupOrderer {
    /// An orderer that holds at most `budget` payload bytes of newer groups.
    pub fn new(budget: usize) -> Self {
        Self {
            current: None,
            current_ended: false,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            budget,
            stale: 0,
        }
    }

    /// Frames dropped because their group was older than the current one.
    pub fn stale_frames(&self) -> u64 {
        self.stale
    }

    /// Bytes held for newer groups.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Feeds one event; in-order events are appended to `out`.
    pub fn push(&mut self, event: MediaEvent, out: &mut Vec<MediaEvent>) {
        let header = match &event {
            MediaEvent::Started(h)
            | MediaEvent::Frame(h, _)
            | MediaEvent::Ended { header: h, .. } => *h,
        };
        if header.channel != Channel::Video {
            out.push(event);
            return;
        }
        let g = header.group;
        self.route(g, event, out);
        self.advance(out);
    }

    /// A finished current group hands over to its successor as soon as that
    /// one is here (even if it arrived earlier and was set aside), and so on.
    fn advance(&mut self, out: &mut Vec<MediaEvent>) {
        while let (Some(c), true) = (self.current, self.current_ended) {
            if self
                .pending
                .first_key_value()
                .is_none_or(|(&next, _)| next != c + 1)
            {
                break;
            }
            self.promote_one(out);
        }
    }

    fn route(&mut self, g: u64, event: MediaEvent, out: &mut Vec<MediaEvent>) {
        match event {
            MediaEvent::Started(h) => match self.current {
                // The next group after one that ended starts at once; a later
                // one waits, since its predecessor's stream may still be on
                // its way.
                Some(c) if g == c + 1 && self.current_ended && self.pending.is_empty() => {
                    self.current = Some(g);
                    self.current_ended = false;
                    out.push(MediaEvent::Started(h));
                }
                None => {
                    self.current = Some(g);
                    self.current_ended = false;
                    out.push(MediaEvent::Started(h));
                }
                Some(c) if g > c => {
                    self.pending.entry(g).or_insert(Pending {
                        header: h,
                        frames: Vec::new(),
                        ended: None,
                    });
                    if self.pending.len() > MAX_PENDING_GROUPS {
                        // A group id the sender never opened (it superseded
                        // the group first) must not hold everything up.
                        self.abandon_current(out);
                    }
                }
                Some(_) => {}
            },
            MediaEvent::Frame(h, f) => match self.current {
                Some(c) if g == c => out.push(MediaEvent::Frame(h, f)),
                Some(c) if g > c => {
                    if let Some(p) = self.pending.get_mut(&g) {
                        self.pending_bytes += f.payload.len();
                        p.frames.push(f);
                    }
                    if self.pending_bytes > self.budget {
                        // The current group is holding everything up: give it up.
                        self.abandon_current(out);
                    }
                }
                _ => self.stale += 1,
            },
            MediaEvent::Ended {
                header: h,
                complete,
            } => match self.current {
                Some(c) if g == c && !self.current_ended => {
                    out.push(MediaEvent::Ended {
                        header: h,
                        complete,
                    });
                    self.current_ended = true;
                }
                Some(c) if g > c => {
                    if let Some(p) = self.pending.get_mut(&g) {
                        p.ended = Some(complete);
                    }
                }
                _ => {}
            },
        }
    }

    /// Gives up on the current group and moves to the oldest pending one.
    fn abandon_current(&mut self, out: &mut Vec<MediaEvent>) {
        if let (Some(c), false) = (self.current, self.current_ended) {
            out.push(MediaEvent::Ended {
                header: StreamHeader {
                    channel: Channel::Video,
                    group: c,
                },
                complete: false,
            });
            self.current_ended = true;
        }
        self.promote_one(out);
    }

    /// Makes the oldest pending group current, flushing what it holds.
    fn promote_one(&mut self, out: &mut Vec<MediaEvent>) {
        let Some((g, p)) = self.pending.pop_first() else {
            return;
        };
        self.current = Some(g);
        self.pending_bytes -= p.frames.iter().map(|f| f.payload.len()).sum::<usize>();
        out.push(MediaEvent::Started(p.header));
        out.extend(p.frames.into_iter().map(|f| MediaEvent::Frame(p.header, f)));
        self.current_ended = p.ended.is_some();
        if let Some(complete) = p.ended {
            out.push(MediaEvent::Ended {
                header: p.header,
                complete,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameFlags;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn h(group: u64) -> StreamHeader {
        StreamHeader {
            channel: Channel::Video,
            group,
        }
    }

    fn f(seq: u64, len: usize) -> Frame {
        Frame {
            channel: Channel::Video,
            flags: FrameFlags::empty(),
            capture_us: seq,
            sequence: seq,
            payload: Bytes::from(vec![0; len]),
        }
    }

    fn run(o: &mut GroupOrderer, events: Vec<MediaEvent>) -> Vec<MediaEvent> {
        let mut out = Vec::new();
        for e in events {
            o.push(e, &mut out);
        }
        out
    }

    fn seqs(events: &[MediaEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Frame(_, f) => Some(f.sequence),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn newer_group_waits_for_the_current_one() {
        let mut o = GroupOrderer::new(1 << 20);
        let out = run(
            &mut o,
            vec![
                MediaEvent::Started(h(0)),
                MediaEvent::Frame(h(0), f(0, 1)),
                MediaEvent::Started(h(1)),
                MediaEvent::Frame(h(1), f(2, 1)),
                MediaEvent::Frame(h(0), f(1, 1)),
                MediaEvent::Ended {
                    header: h(0),
                    complete: true,
                },
                MediaEvent::Frame(h(1), f(3, 1)),
            ],
        );
        assert_eq!(seqs(&out), vec![0, 1, 2, 3]);
        assert_eq!(o.pending_bytes(), 0);
    }

    #[test]
    fn sequential_groups_flow_without_waiting() {
        let mut o = GroupOrderer::new(1 << 20);
        let mut events = Vec::new();
        for g in 0..3 {
            events.push(MediaEvent::Started(h(g)));
            events.push(MediaEvent::Frame(h(g), f(g, 1)));
            events.push(MediaEvent::Ended {
                header: h(g),
                complete: true,
            });
        }
        let out = run(&mut o, events.clone());
        assert_eq!(out, events);
    }

    #[test]
    fn a_stalled_group_is_abandoned_past_the_budget() {
        let mut o = GroupOrderer::new(10);
        let out = run(
            &mut o,
            vec![
                MediaEvent::Started(h(0)),
                MediaEvent::Frame(h(0), f(0, 5)),
                MediaEvent::Started(h(1)),
                MediaEvent::Frame(h(1), f(5, 6)),
                MediaEvent::Frame(h(1), f(6, 6)),
                MediaEvent::Frame(h(0), f(1, 5)),
            ],
        );
        assert_eq!(seqs(&out), vec![0, 5, 6]);
        assert!(out.contains(&MediaEvent::Ended {
            header: h(0),
            complete: false
        }));
        assert_eq!(o.stale_frames(), 1);
    }

    #[test]
    fn pending_groups_that_already_ended_are_flushed_in_order() {
        let mut o = GroupOrderer::new(1 << 20);
        let out = run(
            &mut o,
            vec![
                MediaEvent::Started(h(0)),
                MediaEvent::Started(h(2)),
                MediaEvent::Frame(h(2), f(20, 1)),
                MediaEvent::Started(h(1)),
                MediaEvent::Frame(h(1), f(10, 1)),
                MediaEvent::Ended {
                    header: h(1),
                    complete: true,
                },
                MediaEvent::Ended {
                    header: h(0),
                    complete: false,
                },
            ],
        );
        assert_eq!(seqs(&out), vec![10, 20]);
    }

    #[test]
    fn a_group_id_that_never_arrives_does_not_block() {
        let mut o = GroupOrderer::new(1 << 20);
        let mut events = vec![
            MediaEvent::Started(h(0)),
            MediaEvent::Ended {
                header: h(0),
                complete: true,
            },
        ];
        // Group 1 was superseded before its stream opened.
        for g in 2..6 {
            events.push(MediaEvent::Started(h(g)));
            events.push(MediaEvent::Frame(h(g), f(g, 1)));
            events.push(MediaEvent::Ended {
                header: h(g),
                complete: true,
            });
        }
        let out = run(&mut o, events);
        assert_eq!(seqs(&out), vec![2, 3, 4, 5]);
    }

    proptest! {
        /// Whatever the interleaving of per-group streams, delivered video is in
        /// group order and, within the budget, nothing is lost.
        #[test]
        fn interleavings_come_out_in_order(groups in 1usize..5, per in 1usize..6, seed in any::<u64>()) {
            let mut streams: Vec<Vec<MediaEvent>> = (0..groups as u64).map(|g| {
                let mut s = vec![MediaEvent::Started(h(g))];
                for i in 0..per as u64 { s.push(MediaEvent::Frame(h(g), f(g * 100 + i, 1))); }
                s.push(MediaEvent::Ended { header: h(g), complete: true });
                s
            }).collect();
            // Stream 0 is opened first, as a real sender does.
            let mut order = vec![streams[0].remove(0)];
            let mut rng = seed;
            while streams.iter().any(|s| !s.is_empty()) {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let live: Vec<usize> = (0..streams.len()).filter(|&i| !streams[i].is_empty()).collect();
                let pick = live[(rng >> 33) as usize % live.len()];
                order.push(streams[pick].remove(0));
            }
            let mut o = GroupOrderer::new(1 << 20);
            let out = run(&mut o, order);
            let got = seqs(&out);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&got, &sorted);
            prop_assert_eq!(got.len(), groups * per);
        }
    }
}
