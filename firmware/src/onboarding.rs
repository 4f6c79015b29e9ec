//! QR onboarding: an unpaired camera with no server configured reads its
//! pairing string (and optionally Wi-Fi credentials) from a QR code held in
//! front of the lens, the way consumer cameras onboard — no SD-card editing.
//!
//! While scanning, the capture source runs on a blocking thread owned by
//! [`scan_for_pairing`]; every [`SCAN_EVERY`]th frame's full-resolution luma
//! plane goes to the `rqrr` QR decoder. A QR code that is not a Kodama
//! pairing string is logged and ignored. The status LED says where it is
//! ([`OnboardingState`], [`blink_for`]).

use kodama_proto::pairing::PairingString;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::video::{LumaFrame, VideoError, VideoSource};

/// Frames between QR decodes (6 a second at 30 fps: quick to notice, cheap
/// on a Pi Zero 2W's cores).
pub const SCAN_EVERY: u64 = 5;

/// Where onboarding is, for the status LED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnboardingState {
    /// Waiting for a pairing QR code.
    Scanning,
    /// A QR code was seen but it is not a usable pairing string.
    BadQr(String),
    /// Redeeming the code with the server.
    Pairing,
    /// The server refused the code.
    Refused(String),
    /// Paired; onboarding is over.
    Paired,
}

/// Status LED flashes per cycle while onboarding (`hw/README.md`); they do
/// not clash with the first-boot error codes (2–5).
pub mod blink {
    /// Not paired, no server set: looking for a pairing QR code.
    pub const WAITING_FOR_QR: u8 = 1;
    /// A QR code is in view but it is not a Kodama pairing code.
    pub const BAD_QR: u8 = 6;
    /// The server refused the code (wrong, expired, used).
    pub const REFUSED: u8 = 7;
    /// Pairing with the server.
    pub const PAIRING: u8 = 8;
}

/// The blink code for a state (`None`: LED off).
pub fn blink_for(state: &OnboardingState) -> Option<u8> {
    match state {
        OnboardingState::Scanning => Some(blink::WAITING_FOR_QR),
        OnboardingState::Pairing => Some(blink::PAIRING),
        OnboardingState::BadQr(_) => Some(blink::BAD_QR),
        OnboardingState::Refused(_) => Some(blink::REFUSED),
        OnboardingState::Paired => None,
    }
}

/// Every QR code's text in `luma`.
pub fn decode_qr(luma: &LumaFrame) -> Vec<String> {
    let (w, h) = (luma.width as usize, luma.height as usize);
    if w == 0 || h == 0 || luma.data.len() < w * h {
        return Vec::new();
    }
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| luma.data[y * w + x]);
    image
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect()
}

/// Runs `source` until a QR code with a Kodama pairing string appears (or
/// `cancel` fires: `Ok(None)`), then hands the source back with it. Blocking:
/// call from a blocking thread.
pub fn scan_for_pairing(
    mut source: Box<dyn VideoSource>,
    state: &watch::Sender<OnboardingState>,
    cancel: &CancellationToken,
) -> Result<(Box<dyn VideoSource>, Option<PairingString>), VideoError> {
    state.send_replace(OnboardingState::Scanning);
    let mut frames = 0u64;
    while !cancel.is_cancelled() {
        source.next_frame()?;
        frames += 1;
        if !frames.is_multiple_of(SCAN_EVERY) {
            continue;
        }
        let Some(luma) = source.full_luma() else {
            return Err(VideoError::Device(
                "this video source cannot read QR codes; set server.pair in kodama.toml".into(),
            ));
        };
        for text in decode_qr(&luma) {
            match PairingString::parse(&text) {
                Ok(p) => {
                    tracing::info!(frames, "read a pairing QR code");
                    state.send_replace(OnboardingState::Pairing);
                    return Ok((source, Some(p)));
                }
                Err(e) => {
                    tracing::warn!("a QR code is in view but it is not a Kodama pairing code: {e}");
                    state.send_replace(OnboardingState::BadQr(e.to_string()));
                }
            }
        }
    }
    Ok((source, None))
}

/// Plays the state's blink code on `led` until `cancel`; logs each change.
pub async fn drive_led<P: embedded_hal::digital::OutputPin>(
    mut led: crate::hw::gpio::StatusLed<P>,
    mut state: watch::Receiver<OnboardingState>,
    cancel: CancellationToken,
) {
    loop {
        let current = state.borrow_and_update().clone();
        let pattern = blink_for(&current).map(crate::hw::gpio::blink_code);
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = led.set(false);
                return;
            }
            r = state.changed() => if r.is_err() { let _ = led.set(false); return },
            _ = async {
                match &pattern {
                    Some(p) => { let _ = led.play(p, &cancel).await; }
                    None => { let _ = led.set(false); std::future::pending::<()>().await }
                }
            } => {}
        }
    }
}

/// Logs onboarding progress, and on the Pi shows it on the status LED.
pub fn spawn_feedback(
    state: watch::Receiver<OnboardingState>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let log_state = state.clone();
    let log_cancel = cancel.clone();
    tokio::spawn(async move {
        let logger = async {
            let mut s = log_state;
            while s.changed().await.is_ok() {
                let now = s.borrow_and_update().clone();
                tracing::info!(state = ?now, blink = ?blink_for(&now), "onboarding");
            }
        };
        #[cfg(feature = "pi")]
        {
            use crate::hw::gpio::{pi, StatusLed};
            match pi::output(crate::firstboot::STATUS_LED_PIN).and_then(StatusLed::new) {
                Ok(led) => {
                    // drive_led ends (LED off) when onboarding cancels it.
                    tokio::select! {
                        _ = logger => {}
                        _ = drive_led(led, state, log_cancel) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status LED unavailable");
                    tokio::select! { _ = logger => {}, _ = log_cancel.cancelled() => {} }
                }
            }
        }
        #[cfg(not(feature = "pi"))]
        {
            let _ = state;
            tokio::select! { _ = logger => {}, _ = log_cancel.cancelled() => {} }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::gpio::{RecordingPin, StatusLed};

    #[test]
    fn states_have_distinct_blink_codes() {
        let codes: Vec<_> = [
            OnboardingState::Scanning,
            OnboardingState::Pairing,
            OnboardingState::BadQr(String::new()),
            OnboardingState::Refused(String::new()),
        ]
        .iter()
        .map(blink_for)
        .collect();
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        assert_eq!(blink_for(&OnboardingState::Paired), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_led_follows_the_state() {
        let (pin, probe) = RecordingPin::new();
        let led = StatusLed::new(pin).expect("led");
        let (tx, rx) = watch::channel(OnboardingState::Scanning);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(drive_led(led, rx, cancel.clone()));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!probe.high_pulses().is_empty(), "scanning blinks");
        tx.send_replace(OnboardingState::Paired);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let before = probe.high_pulses().len();
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert_eq!(
            probe.high_pulses().len(),
            before,
            "paired: the LED stays off"
        );
        assert!(!probe.level());
        cancel.cancel();
        task.await.expect("task");
    }
}
