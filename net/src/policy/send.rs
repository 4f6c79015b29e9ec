//! The GOP send policy, sans-IO: which stream a frame goes to, when a group
//! is superseded or abandoned, and what every stream's priority is.
//!
//! [`crate::media_send::MediaSender`] is the driver: it asks
//! [`SendPolicy::video`] / [`SendPolicy::aux`] what to do with each frame
//! (passing the current queue depth and `now`), opens, feeds, finishes and
//! resets QUIC streams as told, and asks [`end_superseded`] how a replaced
//! group's stream ends. Nothing here touches a socket or a clock.
//!
//! The rules (Media-over-QUIC style, newest first):
//! * A keyframe starts a new group on a new stream whose priority is above
//!   every older group's; the previous group is *superseded*.
//! * A superseded group whose frames were all handed to QUIC finishes
//!   normally (let it arrive); one with frames still unsent is reset and
//!   those frames dropped: old video never queues behind new video.
//! * A group whose queue hits [`SendConfig::group_queue`] frames, or whose
//!   queue has not once drained for [`SendConfig::max_backlog`], is
//!   *abandoned*: reset, and video is dropped until the next keyframe (the
//!   caller asks its encoder for one). Latency stays bounded on a link that
//!   cannot keep up.
//! * Audio, telemetry and events have long-lived streams above all video;
//!   when their queue is full the frame is dropped.

use std::time::{Duration, Instant};

/// Control stream priority (above everything).
pub const PRIORITY_CONTROL: i32 = i32::MAX;
/// Audio stream priority.
pub const PRIORITY_AUDIO: i32 = i32::MAX - 1;
/// Telemetry and event stream priority.
pub const PRIORITY_AUX: i32 = i32::MAX - 2;

/// A video group's priority: newer groups higher, below audio and telemetry.
/// Masking to 30 bits wraps after ~10^9 groups (decades of GOPs).
pub fn group_priority(group: u64) -> i32 {
    (group & 0x3FFF_FFFF) as i32
}

/// The policy's numbers, with their reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendConfig {
    /// Frames a group's queue may hold before the group is abandoned. 256
    /// frames is over 8 s at 30 fps: only a stalled link fills it.
    pub group_queue: usize,
    /// Frames an aux stream's queue may hold before frames are dropped.
    pub aux_queue: usize,
    /// How long a group's queue may stay non-empty without once draining
    /// before the group is abandoned: the link is not keeping up, and newer
    /// pictures are worth more than finishing this GOP late.
    pub max_backlog: Duration,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            group_queue: 256,
            aux_queue: 64,
            max_backlog: Duration::from_secs(3),
        }
    }
}

/// What to do with a video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPlan {
    /// Open a stream for `group` at `priority` and queue the frame on it;
    /// `supersede` is the previous group, whose stream must end (see
    /// [`end_superseded`]).
    StartGroup {
        /// The new group's id.
        group: u64,
        /// Its stream priority.
        priority: i32,
        /// The group it replaces, if one was open.
        supersede: Option<u64>,
    },
    /// Queue the frame on the current group's stream.
    Queue {
        /// The current group.
        group: u64,
    },
    /// Drop the frame: no group is open (before the first keyframe, or
    /// after an abandon until the next keyframe).
    Drop,
    /// Reset `group`'s stream, drop its queue and this frame, and ask the
    /// encoder for a keyframe.
    Abandon {
        /// The abandoned group.
        group: u64,
        /// Why.
        reason: AbandonReason,
    },
}

/// Why a group was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbandonReason {
    /// Its queue reached [`SendConfig::group_queue`] frames.
    QueueFull,
    /// Its queue did not drain for [`SendConfig::max_backlog`].
    Backlog,
    /// Its stream died (stopped by the peer, connection trouble).
    StreamClosed,
}

/// What to do with an audio, telemetry or event frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuxPlan {
    /// Queue it on the channel's stream (opening it at `priority` if needed).
    Queue {
        /// The stream's priority.
        priority: i32,
    },
    /// Drop it: the channel's queue is full.
    Drop,
}

/// How a superseded group's stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEnd {
    /// Everything was handed to QUIC: finish and let it arrive.
    Finish,
    /// Frames are still unsent (or one is mid-write): reset the stream and
    /// drop them.
    Reset,
}

/// How a superseded group ends, given the frames not yet handed to QUIC and
/// whether one is being written right now.
pub fn end_superseded(unsent: usize, mid_write: bool) -> GroupEnd {
    if unsent == 0 && !mid_write {
        GroupEnd::Finish
    } else {
        GroupEnd::Reset
    }
}

#[derive(Debug, Clone, Copy)]
struct OpenGroup {
    id: u64,
    /// Since when the queue has been non-empty at every frame, if it is now.
    backlogged_since: Option<Instant>,
}

/// The per-connection video send state.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    config: SendConfig,
    current: Option<OpenGroup>,
    next_group: u64,
}

impl Default for SendPolicy {
    fn default() -> Self {
        Self::new(SendConfig::default())
    }
}

impl SendPolicy {
    /// A policy with `config`.
    pub fn new(config: SendConfig) -> Self {
        Self {
            config,
            current: None,
            next_group: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SendConfig {
        &self.config
    }

    /// The group frames currently go to, if any.
    pub fn current_group(&self) -> Option<u64> {
        self.current.map(|g| g.id)
    }

    /// A video frame arrives at `now`; `queued` is how many frames the
    /// current group's stream has not yet handed to QUIC.
    pub fn video(&mut self, now: Instant, keyframe: bool, queued: usize) -> VideoPlan {
        if keyframe {
            let supersede = self.current.take().map(|g| g.id);
            let group = self.next_group;
            self.next_group += 1;
            self.current = Some(OpenGroup {
                id: group,
                backlogged_since: None,
            });
            return VideoPlan::StartGroup {
                group,
                priority: group_priority(group),
                supersede,
            };
        }
        let Some(open) = &mut self.current else {
            return VideoPlan::Drop;
        };
        let group = open.id;
        if queued >= self.config.group_queue {
            self.current = None;
            return VideoPlan::Abandon {
                group,
                reason: AbandonReason::QueueFull,
            };
        }
        if queued == 0 {
            open.backlogged_since = None;
        } else {
            let since = *open.backlogged_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.max_backlog {
                self.current = None;
                return VideoPlan::Abandon {
                    group,
                    reason: AbandonReason::Backlog,
                };
            }
        }
        VideoPlan::Queue { group }
    }

    /// The current group's stream died (its writer is gone): video is
    /// dropped until the next keyframe.
    pub fn stream_closed(&mut self, group: u64) -> Option<VideoPlan> {
        if self.current.is_some_and(|g| g.id == group) {
            self.current = None;
            return Some(VideoPlan::Abandon {
                group,
                reason: AbandonReason::StreamClosed,
            });
        }
        None
    }

    /// An aux frame for an audio (`audio` true) or telemetry/event stream
    /// whose queue holds `queued` frames.
    pub fn aux(&self, audio: bool, queued: usize) -> AuxPlan {
        if queued >= self.config.aux_queue {
            return AuxPlan::Drop;
        }
        AuxPlan::Queue {
            priority: if audio { PRIORITY_AUDIO } else { PRIORITY_AUX },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_is_sent_before_the_first_keyframe() {
        let mut p = SendPolicy::default();
        let t = Instant::now();
        assert_eq!(p.video(t, false, 0), VideoPlan::Drop);
        assert_eq!(
            p.video(t, true, 0),
            VideoPlan::StartGroup {
                group: 0,
                priority: 0,
                supersede: None
            }
        );
        assert_eq!(p.video(t, false, 0), VideoPlan::Queue { group: 0 });
    }

    #[test]
    fn each_keyframe_supersedes_the_previous_group_with_a_higher_priority() {
        let mut p = SendPolicy::default();
        let t = Instant::now();
        let mut last_priority = -1;
        for g in 0..5u64 {
            match p.video(t, true, 0) {
                VideoPlan::StartGroup {
                    group,
                    priority,
                    supersede,
                } => {
                    assert_eq!(group, g);
                    assert!(priority > last_priority);
                    assert!(priority < PRIORITY_AUX);
                    last_priority = priority;
                    assert_eq!(supersede, g.checked_sub(1));
                }
                other => panic!("expected a new group, got {other:?}"),
            }
        }
    }

    #[test]
    fn priorities_wrap_inside_the_video_range() {
        assert_eq!(group_priority(0x4000_0000), 0);
        assert!(group_priority(u64::MAX) < PRIORITY_AUX);
        const { assert!(PRIORITY_AUX < PRIORITY_AUDIO && PRIORITY_AUDIO < PRIORITY_CONTROL) };
    }

    #[test]
    fn superseded_groups_finish_only_when_fully_handed_over() {
        assert_eq!(end_superseded(0, false), GroupEnd::Finish);
        assert_eq!(end_superseded(3, false), GroupEnd::Reset);
        assert_eq!(end_superseded(0, true), GroupEnd::Reset);
    }

    #[test]
    fn a_full_queue_abandons_the_group_until_the_next_keyframe() {
        let cfg = SendConfig {
            group_queue: 4,
            ..SendConfig::default()
        };
        let mut p = SendPolicy::new(cfg);
        let t = Instant::now();
        p.video(t, true, 0);
        assert_eq!(p.video(t, false, 3), VideoPlan::Queue { group: 0 });
        assert_eq!(
            p.video(t, false, 4),
            VideoPlan::Abandon {
                group: 0,
                reason: AbandonReason::QueueFull
            }
        );
        assert_eq!(p.current_group(), None);
        assert_eq!(p.video(t, false, 0), VideoPlan::Drop);
        assert!(matches!(
            p.video(t, true, 0),
            VideoPlan::StartGroup {
                group: 1,
                supersede: None,
                ..
            }
        ));
    }

    /// A virtual-clock trace: frames every 33 ms, the link drains the
    /// queue for a while, then stalls; the group is abandoned once its queue
    /// has not drained for `max_backlog`, and not a frame earlier.
    #[test]
    fn a_queue_that_never_drains_is_abandoned_after_max_backlog() {
        let mut p = SendPolicy::default();
        let t0 = Instant::now();
        p.video(t0, true, 0);
        let frame = ms(33);
        // Healthy: the queue is sometimes empty, so the backlog clock resets.
        for i in 1..=60u32 {
            let queued = (i % 3) as usize;
            assert_eq!(
                p.video(t0 + frame * i, false, queued),
                VideoPlan::Queue { group: 0 }
            );
        }
        // Stalled from frame 61 on: the queue only grows.
        let stall = t0 + frame * 61;
        let mut abandoned_at = None;
        for i in 61..=300u32 {
            let now = t0 + frame * i;
            match p.video(now, false, (i - 60) as usize) {
                VideoPlan::Queue { .. } => {}
                VideoPlan::Abandon { reason, .. } => {
                    assert_eq!(reason, AbandonReason::Backlog);
                    abandoned_at = Some(now);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let waited = abandoned_at.expect("abandoned") - stall;
        assert!(
            waited >= SendConfig::default().max_backlog
                && waited < SendConfig::default().max_backlog + frame,
            "abandoned after {waited:?}"
        );
    }

    #[test]
    fn a_dead_stream_abandons_only_the_current_group() {
        let mut p = SendPolicy::default();
        let t = Instant::now();
        p.video(t, true, 0);
        p.video(t, true, 0);
        assert_eq!(
            p.stream_closed(0),
            None,
            "an old group's end changes nothing"
        );
        assert_eq!(
            p.stream_closed(1),
            Some(VideoPlan::Abandon {
                group: 1,
                reason: AbandonReason::StreamClosed
            })
        );
        assert_eq!(p.video(t, false, 0), VideoPlan::Drop);
    }

    #[test]
    fn aux_frames_drop_when_their_queue_is_full() {
        let p = SendPolicy::default();
        assert_eq!(
            p.aux(true, 0),
            AuxPlan::Queue {
                priority: PRIORITY_AUDIO
            }
        );
        assert_eq!(
            p.aux(false, 63),
            AuxPlan::Queue {
                priority: PRIORITY_AUX
            }
        );
        assert_eq!(p.aux(false, 64), AuxPlan::Drop);
    }
}
