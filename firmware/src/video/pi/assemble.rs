//! Turns the encoder's CAPTURE buffers into access units, and device
//! errors into [`VideoError`]s that tell an installer what to do.
//!
//! The bcm2835 encoder puts one coded picture in each CAPTURE buffer, but the
//! sequence header may arrive in a buffer of its own (SPS and PPS, no slice)
//! before the first IDR picture. An access unit (H.264 clause 7.4.1.2.3)
//! must carry its picture, so a header-only buffer is held and prepended to
//! the next picture.

use bytes::{Bytes, BytesMut};
use kodama_media::h264::{self, nal_type};

use crate::video::{EncodedFrame, VideoError};

/// Largest access unit accepted; a buffer claiming more is a driver fault.
pub const MAX_ACCESS_UNIT: usize = 8 << 20;

/// Joins header-only buffers onto the following picture.
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    pending_headers: BytesMut,
}

impl AccessUnitAssembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one CAPTURE buffer's payload (`bytesused` bytes). Returns the
    /// access unit when the buffer holds a picture, `Ok(None)` when it only
    /// held parameter sets (kept for the next picture).
    pub fn push(
        &mut self,
        data: &[u8],
        capture_us: u64,
    ) -> Result<Option<EncodedFrame>, VideoError> {
        if data.len() + self.pending_headers.len() > MAX_ACCESS_UNIT {
            self.pending_headers.clear();
            return Err(VideoError::Encoder(format!(
                "coded buffer of {} bytes exceeds the {MAX_ACCESS_UNIT}-byte access unit limit",
                data.len()
            )));
        }
        let has_picture = h264::nal_units(data).any(|n| {
            matches!(
                h264::unit_type(n),
                Some(nal_type::NON_IDR_SLICE) | Some(nal_type::IDR_SLICE)
            )
        });
        if !has_picture {
            if h264::nal_units(data).next().is_none() {
                return Err(VideoError::Encoder(format!(
                    "coded buffer of {} bytes has no Annex-B start code",
                    data.len()
                )));
            }
            self.pending_headers.extend_from_slice(data);
            return Ok(None);
        }
        let au: Bytes = if self.pending_headers.is_empty() {
            Bytes::copy_from_slice(data)
        } else {
            let mut joined = std::mem::take(&mut self.pending_headers);
            joined.extend_from_slice(data);
            joined.freeze()
        };
        let keyframe = h264::is_idr(&au);
        Ok(Some(EncodedFrame {
            data: au,
            keyframe,
            capture_us,
        }))
    }

    /// Drops held headers (after an encoder restart they are stale).
    pub fn reset(&mut self) {
        self.pending_headers.clear();
    }
}

/// Device operations, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening the encoder node.
    OpenEncoder,
    /// Setting formats, controls or buffers on the encoder.
    ConfigureEncoder,
    /// Queueing/dequeueing encoder buffers.
    Encode,
    /// Finding or acquiring the camera.
    OpenCamera,
    /// Configuring or starting the camera.
    ConfigureCamera,
}

/// An OS error from a device operation as a [`VideoError`] whose message
/// says what is probably wrong on the Pi.
pub fn device_error(op: Op, errno: i32, detail: &str) -> VideoError {
    let hint = match (op, errno) {
        (Op::OpenEncoder, libc_errno::ENOENT) | (Op::OpenEncoder, libc_errno::ENODEV) => {
            "no /dev/video11: the bcm2835-codec driver is not loaded (kernel config VIDEO_CODEC_BCM2835)"
        }
        (_, libc_errno::EACCES) | (_, libc_errno::EPERM) => "permission denied: run as a member of the `video` group",
        (_, libc_errno::EBUSY) => "device busy: another process (rpicam-apps, a second kodama-camera) holds it",
        (_, libc_errno::ENOMEM) => "out of contiguous memory: raise CMA (dtoverlay=vc4-kms-v3d,cma-…) or lower the resolution",
        (Op::ConfigureEncoder, libc_errno::EINVAL) => "the encoder rejected the format or a control value",
        (Op::OpenCamera, libc_errno::ENODEV) | (Op::OpenCamera, libc_errno::ENOENT) => {
            "no camera: check the ribbon cable and `camera_auto_detect=1` (or dtoverlay=imx219) in config.txt"
        }
        (_, libc_errno::ETIMEDOUT) => "the device stopped producing frames",
        (_, libc_errno::EPIPE) | (_, libc_errno::EIO) => "device I/O error; the firmware restarts the pipeline",
        _ => "",
    };
    let sep = if hint.is_empty() { "" } else { ": " };
    let msg = format!("{detail} (errno {errno}){sep}{hint}");
    match op {
        Op::OpenEncoder | Op::ConfigureEncoder | Op::Encode => VideoError::Encoder(msg),
        Op::OpenCamera | Op::ConfigureCamera => VideoError::Device(msg),
    }
}

/// The Linux errno values used above (asm-generic/errno-base.h, errno.h),
/// named here so this module needs no libc binding.
pub mod libc_errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Broken pipe.
    pub const EPIPE: i32 = 32;
    /// Timed out.
    pub const ETIMEDOUT: i32 = 110;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPS: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f];
    const PPS: &[u8] = &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0, 0, 0, 1, 0x65, 0x88, 0x84];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02];

    #[test]
    fn header_buffer_joins_next_picture() {
        let mut a = AccessUnitAssembler::new();
        let headers = [SPS, PPS].concat();
        assert!(a.push(&headers, 10).expect("headers").is_none());
        let f = a.push(IDR, 11).expect("idr").expect("picture");
        assert!(f.keyframe);
        assert_eq!(f.capture_us, 11);
        assert_eq!(&f.data[..], &[SPS, PPS, IDR].concat()[..]);
        let f = a.push(P, 12).expect("p").expect("picture");
        assert!(!f.keyframe);
        assert_eq!(&f.data[..], P);
    }

    #[test]
    fn inline_headers_pass_through() {
        let mut a = AccessUnitAssembler::new();
        let au = [SPS, PPS, IDR].concat();
        let f = a.push(&au, 1).expect("ok").expect("picture");
        assert!(f.keyframe);
        assert_eq!(&f.data[..], &au[..]);
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        let mut a = AccessUnitAssembler::new();
        assert!(a.push(&[1, 2, 3], 0).is_err());
        assert!(a.push(&vec![0u8; MAX_ACCESS_UNIT + 1], 0).is_err());
        a.push(SPS, 0).expect("held");
        a.reset();
        assert_eq!(&a.push(P, 0).expect("ok").expect("pic").data[..], P);
    }

    #[test]
    fn errno_hints() {
        let e = device_error(Op::OpenEncoder, libc_errno::ENOENT, "open /dev/video11");
        assert!(matches!(e, VideoError::Encoder(_)));
        assert!(e.to_string().contains("bcm2835-codec"), "{e}");
        let e = device_error(Op::OpenCamera, libc_errno::ENODEV, "no camera");
        assert!(matches!(e, VideoError::Device(_)));
        assert!(e.to_string().contains("ribbon"), "{e}");
        assert!(device_error(Op::Encode, libc_errno::EBUSY, "qbuf")
            .to_string()
            .contains("busy"));
        let e = device_error(Op::Encode, 999, "qbuf");
        assert_eq!(e.to_string(), "encoder: qbuf (errno 999)");
    }

    proptest! {
        #[test]
        fn arbitrary_buffers_never_panic(bufs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut a = AccessUnitAssembler::new();
            for (i, b) in bufs.iter().enumerate() {
                if let Ok(Some(f)) = a.push(b, i as u64) {
                    prop_assert!(f.data.len() >= b.len());
                    prop_assert_eq!(f.keyframe, h264::is_idr(&f.data));
                }
            }
        }
    }
}
