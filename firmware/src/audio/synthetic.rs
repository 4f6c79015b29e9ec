//! A speech-like test signal (test equipment, feature `synthetic`): a
//! 120-250 Hz voice with harmonics, in 4 Hz "syllables" separated by pauses,
//! paced in real time like a microphone. Speech, not a pure tone, so the
//! encoder's bitrate is the one a real voice costs.

use std::time::{Duration, Instant};

use super::{now_us, AudioCapture, AudioError, FRAME_SAMPLES, SAMPLE_RATE};

/// The synthetic microphone.
#[derive(Debug)]
pub struct SpeechLike {
    sample: u64,
    phase: f32,
    start: Instant,
    start_us: u64,
    noise: u32,
}

impl Default for SpeechLike {
    fn default() -> Self {
        Self::new()
    }
}

impl SpeechLike {
    /// Starts now.
    pub fn new() -> Self {
        SpeechLike {
            sample: 0,
            phase: 0.0,
            start: Instant::now(),
            start_us: now_us(),
            noise: 0x1234_5678,
        }
    }

    fn next_sample(&mut self) -> i16 {
        let t = self.sample as f32 / SAMPLE_RATE as f32;
        self.sample += 1;
        // Pitch glides like intonation; syllables at 4 Hz, a pause every 2 s.
        let pitch = 185.0 + 65.0 * (t * 0.7 * std::f32::consts::TAU).sin();
        self.phase = (self.phase + pitch / SAMPLE_RATE as f32).fract();
        let syllable = (t * 4.0 * std::f32::consts::PI).sin().abs();
        let envelope = if t % 2.0 > 1.6 { 0.0 } else { syllable };
        let voice: f32 = (1..=6)
            .map(|h| (self.phase * h as f32 * std::f32::consts::TAU).sin() / h as f32)
            .sum();
        // A little room noise (xorshift), as any microphone has.
        self.noise ^= self.noise << 13;
        self.noise ^= self.noise >> 17;
        self.noise ^= self.noise << 5;
        let noise = (self.noise as f32 / u32::MAX as f32 - 0.5) * 200.0;
        (voice * envelope * 6000.0 + noise) as i16
    }
}

impl AudioCapture for SpeechLike {
    fn read_frame(&mut self, pcm: &mut [i16]) -> Result<u64, AudioError> {
        let first = self.sample;
        for s in pcm.iter_mut() {
            *s = self.next_sample();
        }
        // Like a microphone, a frame is ready once its last sample was heard.
        let ready = Duration::from_micros((self.sample * 1_000_000) / u64::from(SAMPLE_RATE));
        if let Some(wait) = ready.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
        debug_assert_eq!(pcm.len(), FRAME_SAMPLES);
        Ok(self.start_us + first * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}
