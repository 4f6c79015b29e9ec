//! GPIO: the camera's few pins behind embedded-hal 1.0 traits.
//!
//! - **PWRKEY** of the SIM7600 (output): [`Pwrkey`] drives power-on / power-off
//!   pulses; the modem supervisor uses it as the last step of recovery.
//! - **Status LED** (output): [`StatusLed`] plays [`BlinkPattern`]s; [`blink_code`]
//!   is the pure generator for first-boot error codes.
//! - **PIR motion sensor** (optional input): [`watch_pir`] samples it and reports
//!   edges on a bounded channel.
//!
//! Real pins come from rppal behind the `pi` feature ([`pi`]); everywhere else
//! [`RecordingPin`] / [`ScriptedInput`] are test doubles that record transitions
//! (and let the modem simulator observe PWRKEY through a [`PinProbe`]).
//!
//! Channels: [`watch_pir`] sends [`MotionEdge`] on a caller-supplied bounded
//! `mpsc::Sender`; [`PinProbe::subscribe`] is a `watch` of the pin level.

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use embedded_hal::digital::{InputPin, OutputPin, PinState};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Errors from driving or reading a pin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpioError {
    /// The pin driver refused the operation (embedded-hal error kind shown).
    #[error("GPIO pin error: {0:?}")]
    Pin(embedded_hal::digital::ErrorKind),
    /// The GPIO character device / memory could not be opened or the pin is
    /// taken; on the Pi check that the user is in the `gpio` group and that no
    /// other process (or a device-tree overlay) claims the pin.
    #[error("cannot open GPIO pin {pin}: {reason}")]
    Open {
        /// BCM pin number.
        pin: u8,
        /// The driver's explanation.
        reason: String,
    },
    /// The operation was cancelled before it finished (pin left inactive).
    #[error("GPIO operation cancelled")]
    Cancelled,
}

fn pin_err<E: embedded_hal::digital::Error>(e: E) -> GpioError {
    GpioError::Pin(e.kind())
}

/// PWRKEY pulse lengths.
///
/// SIM7600 Series Hardware Design, "Power on / power off" timing: the module
/// powers on after PWRKEY is held low ≥ 500 ms and powers off after it is held
/// low ≥ 2.5 s; after power-off it needs some seconds before it accepts another
/// power-on pulse. Defaults leave margin on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PwrkeyTiming {
    /// Hold time that turns a running module off.
    pub off_hold: Duration,
    /// Pause between power-off and the power-on pulse.
    pub off_settle: Duration,
    /// Hold time that turns a powered-off module on.
    pub on_hold: Duration,
}

impl Default for PwrkeyTiming {
    fn default() -> Self {
        Self {
            off_hold: Duration::from_millis(3_000),
            off_settle: Duration::from_millis(5_000),
            on_hold: Duration::from_millis(1_000),
        }
    }
}

/// The SIM7600's PWRKEY line.
///
/// `active_high`: on the Waveshare SIM7600X HAT the Pi's GPIO drives a transistor
/// that pulls PWRKEY low, so *driving the GPIO high asserts PWRKEY*; wired
/// directly (through a level shifter) it is the other way round.
#[derive(Debug)]
pub struct Pwrkey<P> {
    pin: P,
    active_high: bool,
    timing: PwrkeyTiming,
}

impl<P: OutputPin> Pwrkey<P> {
    /// Take the pin and drive it to the inactive level.
    pub fn new(mut pin: P, active_high: bool, timing: PwrkeyTiming) -> Result<Self, GpioError> {
        let inactive = if active_high {
            PinState::Low
        } else {
            PinState::High
        };
        pin.set_state(inactive).map_err(pin_err)?;
        Ok(Self {
            pin,
            active_high,
            timing,
        })
    }

    fn assert(&mut self, on: bool) -> Result<(), GpioError> {
        let high = on == self.active_high;
        self.pin.set_state(PinState::from(high)).map_err(pin_err)
    }

    /// Assert PWRKEY for `hold`, then release it. On cancellation the line is
    /// released before returning [`GpioError::Cancelled`].
    pub async fn pulse(
        &mut self,
        hold: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), GpioError> {
        self.assert(true)?;
        let cancelled = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(hold) => false,
        };
        self.assert(false)?;
        if cancelled {
            return Err(GpioError::Cancelled);
        }
        Ok(())
    }

    /// Power-cycle a hung module: an off pulse, a settle pause, an on pulse.
    pub async fn power_cycle(&mut self, cancel: &CancellationToken) -> Result<(), GpioError> {
        let t = self.timing;
        tracing::warn!(
            hold_ms = t.off_hold.as_millis() as u64,
            "PWRKEY: power-off pulse"
        );
        self.pulse(t.off_hold, cancel).await?;
        tokio::select! {
            _ = cancel.cancelled() => return Err(GpioError::Cancelled),
            _ = tokio::time::sleep(t.off_settle) => {}
        }
        tracing::warn!(
            hold_ms = t.on_hold.as_millis() as u64,
            "PWRKEY: power-on pulse"
        );
        self.pulse(t.on_hold, cancel).await
    }

    /// The configured timing.
    pub fn timing(&self) -> PwrkeyTiming {
        self.timing
    }

    /// Give the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// One step of a blink pattern: LED state held for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlinkStep {
    /// LED lit.
    pub on: bool,
    /// How long.
    pub duration: Duration,
}

/// A finite LED pattern; [`StatusLed::play`] plays it once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlinkPattern {
    /// Steps in order.
    pub steps: Vec<BlinkStep>,
}

impl BlinkPattern {
    /// Sum of all step durations.
    pub fn total(&self) -> Duration {
        self.steps.iter().map(|s| s.duration).sum()
    }

    /// Number of times the LED turns on.
    pub fn flashes(&self) -> usize {
        self.steps.iter().filter(|s| s.on).count()
    }
}

/// Largest blink code; larger numbers are clamped (humans stop counting reliably).
pub const MAX_BLINK_CODE: u8 = 10;
/// Length of one flash of a blink code.
pub const BLINK_ON: Duration = Duration::from_millis(250);
/// Gap between flashes of one code.
pub const BLINK_GAP: Duration = Duration::from_millis(350);
/// Dark pause after a code, so repeated codes can be told apart.
pub const BLINK_PAUSE: Duration = Duration::from_millis(2_000);

/// The pattern for error code `n`: `n` short flashes, then a long dark pause.
///
/// `n` is clamped to `1..=MAX_BLINK_CODE`. Pure; play it with [`StatusLed::play`]
/// (repeat it to keep signalling).
pub fn blink_code(n: u8) -> BlinkPattern {
    let n = n.clamp(1, MAX_BLINK_CODE);
    let mut steps = Vec::with_capacity(usize::from(n) * 2);
    for i in 0..n {
        steps.push(BlinkStep {
            on: true,
            duration: BLINK_ON,
        });
        steps.push(BlinkStep {
            on: false,
            duration: if i + 1 == n { BLINK_PAUSE } else { BLINK_GAP },
        });
    }
    BlinkPattern { steps }
}

/// The status LED (active high).
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
}

impl<P: OutputPin> StatusLed<P> {
    /// Take the pin, LED off.
    pub fn new(mut pin: P) -> Result<Self, GpioError> {
        pin.set_low().map_err(pin_err)?;
        Ok(Self { pin })
    }

    /// Turn the LED on or off.
    pub fn set(&mut self, on: bool) -> Result<(), GpioError> {
        self.pin.set_state(PinState::from(on)).map_err(pin_err)
    }

    /// Play `pattern` once; the LED is left off (also when cancelled).
    pub async fn play(
        &mut self,
        pattern: &BlinkPattern,
        cancel: &CancellationToken,
    ) -> Result<(), GpioError> {
        for step in &pattern.steps {
            self.set(step.on)?;
            let cancelled = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(step.duration) => false,
            };
            if cancelled {
                self.set(false)?;
                return Err(GpioError::Cancelled);
            }
        }
        self.set(false)
    }

    /// Give the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// A PIR edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MotionEdge {
    /// `true` when motion started (line went high), `false` when it ended.
    pub motion: bool,
    /// When the edge was sampled.
    pub at: Instant,
}

/// Sample a PIR sensor's output every `period` and send each edge on `tx`.
///
/// PIR modules (HC-SR501 and alike) hold their output high for seconds, so
/// polling at 10–50 Hz loses nothing and avoids an interrupt thread. Ends when
/// `cancel` fires or the receiver is dropped.
pub async fn watch_pir<P: InputPin>(
    mut pin: P,
    period: Duration,
    tx: mpsc::Sender<MotionEdge>,
    cancel: CancellationToken,
) -> Result<(), GpioError> {
    let mut last = pin.is_high().map_err(pin_err)?;
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let now = pin.is_high().map_err(pin_err)?;
        if now != last {
            last = now;
            let edge = MotionEdge {
                motion: now,
                at: Instant::now(),
            };
            if tx.send(edge).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// One recorded level change of a [`RecordingPin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// New level (`true` = high).
    pub high: bool,
    /// When it was set (tokio clock, so paused-time tests see virtual time).
    pub at: Instant,
}

/// Longest transition log a [`RecordingPin`] keeps (oldest dropped first).
pub const MAX_TRANSITIONS: usize = 4_096;

#[derive(Debug)]
struct PinShared {
    log: Mutex<Vec<Transition>>,
    level: watch::Sender<bool>,
}

/// Test double for an output pin: records every level change and publishes the
/// current level to any [`PinProbe`]. Never fails.
#[derive(Debug, Clone)]
pub struct RecordingPin {
    shared: Arc<PinShared>,
}

/// Observer side of a [`RecordingPin`].
#[derive(Debug, Clone)]
pub struct PinProbe {
    shared: Arc<PinShared>,
}

impl RecordingPin {
    /// A new pin, initially low, and its probe.
    pub fn new() -> (Self, PinProbe) {
        let (level, _) = watch::channel(false);
        let shared = Arc::new(PinShared {
            log: Mutex::new(Vec::new()),
            level,
        });
        (
            Self {
                shared: shared.clone(),
            },
            PinProbe { shared },
        )
    }

    fn record(&self, high: bool) {
        let mut log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.len() >= MAX_TRANSITIONS {
            log.remove(0);
        }
        log.push(Transition {
            high,
            at: Instant::now(),
        });
        drop(log);
        self.shared.level.send_replace(high);
    }
}

impl PinProbe {
    /// Every level set so far (including repeated sets of the same level).
    pub fn transitions(&self) -> Vec<Transition> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Completed high pulses: (rise time, duration).
    pub fn high_pulses(&self) -> Vec<(Instant, Duration)> {
        let mut out = Vec::new();
        let mut rise: Option<Instant> = None;
        for t in self.transitions() {
            match (t.high, rise) {
                (true, None) => rise = Some(t.at),
                (false, Some(r)) => {
                    out.push((r, t.at.duration_since(r)));
                    rise = None;
                }
                _ => {}
            }
        }
        out
    }

    /// Current level.
    pub fn level(&self) -> bool {
        *self.shared.level.borrow()
    }

    /// A `watch` receiver that changes with the level.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.shared.level.subscribe()
    }
}

impl embedded_hal::digital::ErrorType for RecordingPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.record(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.record(true);
        Ok(())
    }
}

/// Test double for an input pin whose level the test sets through a handle.
#[derive(Debug, Clone, Default)]
pub struct ScriptedInput {
    level: Arc<Mutex<bool>>,
}

impl ScriptedInput {
    /// A new input reading low.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the level the next read returns.
    pub fn set(&self, high: bool) {
        *self
            .level
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = high;
    }
}

impl embedded_hal::digital::ErrorType for ScriptedInput {
    type Error = core::convert::Infallible;
}

impl InputPin for ScriptedInput {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(*self
            .level
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

/// Raspberry Pi pins through rppal (its `hal` feature provides the
/// embedded-hal 1.0 impls on `rppal::gpio::{OutputPin, InputPin}`).
#[cfg(feature = "pi")]
pub mod pi {
    use super::GpioError;

    fn open(pin: u8) -> Result<rppal::gpio::Pin, GpioError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|e| GpioError::Open {
            pin,
            reason: e.to_string(),
        })?;
        gpio.get(pin).map_err(|e| GpioError::Open {
            pin,
            reason: e.to_string(),
        })
    }

    /// BCM pin `pin` as an output, initially low. The pin is reset to its
    /// previous mode when dropped (rppal default), leaving the line floating.
    pub fn output(pin: u8) -> Result<rppal::gpio::OutputPin, GpioError> {
        Ok(open(pin)?.into_output_low())
    }

    /// BCM pin `pin` as an input with the pull-down enabled (PIR outputs drive
    /// high on motion; the pull-down keeps a disconnected sensor quiet).
    pub fn input(pin: u8) -> Result<rppal::gpio::InputPin, GpioError> {
        Ok(open(pin)?.into_input_pulldown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blink_code_counts_flashes_and_ends_dark() {
        for n in 1..=MAX_BLINK_CODE {
            let p = blink_code(n);
            assert_eq!(p.flashes(), usize::from(n));
            assert_eq!(p.steps.len(), usize::from(n) * 2);
            let last = p.steps.last().copied();
            assert_eq!(
                last,
                Some(BlinkStep {
                    on: false,
                    duration: BLINK_PAUSE
                })
            );
            // Alternates on/off, starting on.
            for (i, s) in p.steps.iter().enumerate() {
                assert_eq!(s.on, i % 2 == 0);
            }
            let expect = BLINK_ON * u32::from(n) + BLINK_GAP * u32::from(n - 1) + BLINK_PAUSE;
            assert_eq!(p.total(), expect);
        }
    }

    #[test]
    fn blink_code_clamps() {
        assert_eq!(blink_code(0), blink_code(1));
        assert_eq!(blink_code(200), blink_code(MAX_BLINK_CODE));
    }

    #[tokio::test(start_paused = true)]
    async fn pwrkey_active_high_pulse_is_recorded() {
        let (pin, probe) = RecordingPin::new();
        let cancel = CancellationToken::new();
        let mut key = Pwrkey::new(pin, true, PwrkeyTiming::default()).unwrap();
        assert!(!probe.level(), "inactive after new()");
        key.pulse(Duration::from_millis(600), &cancel)
            .await
            .unwrap();
        let pulses = probe.high_pulses();
        assert_eq!(pulses.len(), 1);
        assert_eq!(pulses[0].1, Duration::from_millis(600));
        assert!(!probe.level());
    }

    #[tokio::test(start_paused = true)]
    async fn pwrkey_active_low_inverts() {
        let (pin, probe) = RecordingPin::new();
        let cancel = CancellationToken::new();
        let mut key = Pwrkey::new(pin, false, PwrkeyTiming::default()).unwrap();
        assert!(probe.level(), "inactive = high when active-low");
        key.pulse(Duration::from_millis(100), &cancel)
            .await
            .unwrap();
        let levels: Vec<bool> = probe.transitions().iter().map(|t| t.high).collect();
        assert_eq!(levels, vec![true, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn power_cycle_is_off_pulse_settle_on_pulse() {
        let (pin, probe) = RecordingPin::new();
        let cancel = CancellationToken::new();
        let timing = PwrkeyTiming::default();
        let mut key = Pwrkey::new(pin, true, timing).unwrap();
        key.power_cycle(&cancel).await.unwrap();
        let pulses = probe.high_pulses();
        assert_eq!(pulses.len(), 2);
        assert_eq!(pulses[0].1, timing.off_hold);
        assert_eq!(pulses[1].1, timing.on_hold);
        let gap = pulses[1].0.duration_since(pulses[0].0) - pulses[0].1;
        assert_eq!(gap, timing.off_settle);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_pulse_releases_the_line() {
        let (pin, probe) = RecordingPin::new();
        let cancel = CancellationToken::new();
        let mut key = Pwrkey::new(pin, true, PwrkeyTiming::default()).unwrap();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c2.cancel();
        });
        let r = key.pulse(Duration::from_secs(5), &cancel).await;
        assert!(matches!(r, Err(GpioError::Cancelled)));
        assert!(!probe.level());
    }

    #[tokio::test(start_paused = true)]
    async fn led_plays_pattern_transitions() {
        let (pin, probe) = RecordingPin::new();
        let cancel = CancellationToken::new();
        let mut led = StatusLed::new(pin).unwrap();
        let pattern = blink_code(3);
        led.play(&pattern, &cancel).await.unwrap();
        let pulses = probe.high_pulses();
        assert_eq!(pulses.len(), 3);
        assert!(pulses.iter().all(|(_, d)| *d == BLINK_ON));
        assert!(!probe.level());
    }

    #[tokio::test(start_paused = true)]
    async fn pir_edges_are_reported() {
        let input = ScriptedInput::new();
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch_pir(
            input.clone(),
            Duration::from_millis(20),
            tx,
            cancel.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        input.set(true);
        let e = rx.recv().await.unwrap();
        assert!(e.motion);
        input.set(false);
        let e = rx.recv().await.unwrap();
        assert!(!e.motion);
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}
