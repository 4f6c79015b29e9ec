//! Format negotiation between libcamera's output stream and the encoder's
//! OUTPUT (raw) and CAPTURE (H.264) queues.
//!
//! The V4L2 stateful encoder interface (kernel docs, "Memory-to-Memory
//! Stateful Video Encoder Interface", section "Initialization") fixes the
//! order: set the CAPTURE (coded) format first, then the OUTPUT (raw)
//! format, whose size and `bytesperline` must describe the buffers we
//! queue. Here that means: the raw format is whatever libcamera settled on
//! after validation (size and stride included), and the encoder must accept
//! exactly that, because its OUTPUT buffers are the camera's dmabufs.

use crate::video::{VideoError, VideoFormat};

/// Largest picture the bcm2835-codec H.264 encoder takes (the VideoCore IV
/// encoder is specified for 1080p30; the driver limits OUTPUT to
/// 1920x1920).
pub const MAX_ENCODE_WIDTH: u32 = 1920;
/// See [`MAX_ENCODE_WIDTH`].
pub const MAX_ENCODE_HEIGHT: u32 = 1920;
/// The ISP writes lines aligned to 32 bytes; the encoder reads them that way
/// (`bytesperline` alignment in bcm2835-v4l2-codec.c for YUV420).
pub const STRIDE_ALIGN: u32 = 32;

/// Why a format cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Width or height is odd, zero or too large for the encoder.
    #[error("{width}x{height} is not encodable (even sizes up to {MAX_ENCODE_WIDTH}x{MAX_ENCODE_HEIGHT})")]
    Size {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// No IMX219 mode covers the size at that frame rate.
    #[error("no IMX219 sensor mode gives {width}x{height} at {fps} fps")]
    NoSensorMode {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Requested frame rate.
        fps: u32,
    },
    /// libcamera changed the pixel format away from YUV420.
    #[error("camera offers {got}, the encoder needs YUV420")]
    PixelFormat {
        /// What the camera settled on (fourcc as text).
        got: String,
    },
    /// libcamera's stride cannot be handed to the encoder.
    #[error(
        "stride {stride} for width {width} is not a multiple of {STRIDE_ALIGN} at least the width"
    )]
    Stride {
        /// Line length in bytes.
        stride: u32,
        /// Picture width.
        width: u32,
    },
    /// libcamera adjusted the size so far that it is no longer the tier asked for.
    #[error("camera adjusted {requested_w}x{requested_h} to {got_w}x{got_h}")]
    Adjusted {
        /// Asked-for width.
        requested_w: u32,
        /// Asked-for height.
        requested_h: u32,
        /// Width libcamera chose.
        got_w: u32,
        /// Height libcamera chose.
        got_h: u32,
    },
    /// The encoder answered S_FMT with a different format than the one set.
    #[error("encoder changed the {queue} format: {detail}")]
    EncoderChanged {
        /// `OUTPUT` or `CAPTURE`.
        queue: &'static str,
        /// What differs.
        detail: String,
    },
    /// The camera buffer's planes cannot be handed over as one dmabuf.
    #[error("camera buffer planes: {detail}")]
    Planes {
        /// What is wrong.
        detail: String,
    },
    /// A frame rate of zero or above what Kodama supports.
    #[error("{fps} fps is out of range 1..=60")]
    FrameRate {
        /// Requested rate.
        fps: u32,
    },
}

impl From<FormatError> for VideoError {
    fn from(e: FormatError) -> Self {
        VideoError::InvalidSettings {
            field: "format",
            message: e.to_string(),
        }
    }
}

/// Checks a requested size and rate before anything is opened.
pub fn check_request(width: u32, height: u32, fps: u32) -> Result<(), FormatError> {
    if width == 0
        || height == 0
        || !width.is_multiple_of(2)
        || !height.is_multiple_of(2)
        || width > MAX_ENCODE_WIDTH
        || height > MAX_ENCODE_HEIGHT
    {
        return Err(FormatError::Size { width, height });
    }
    if !(1..=60).contains(&fps) {
        return Err(FormatError::FrameRate { fps });
    }
    Ok(())
}

/// What libcamera reported after `validate()` for our stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraStream {
    /// Width chosen.
    pub width: u32,
    /// Height chosen.
    pub height: u32,
    /// Bytes per luma line.
    pub stride: u32,
    /// Bytes per frame buffer (all three planes).
    pub frame_size: u32,
    /// Fourcc of the pixel format, as text (`"YU12"` is YUV420).
    pub fourcc: String,
}

/// Plane layout of a contiguous YUV420 (I420) buffer: Y, then U, then V;
/// chroma lines are half the luma stride (V4L2 `V4L2_PIX_FMT_YUV420`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuv420Layout {
    /// Luma line length, bytes.
    pub stride: u32,
    /// Chroma line length, bytes.
    pub chroma_stride: u32,
    /// Offset of the U plane.
    pub u_offset: u32,
    /// Offset of the V plane.
    pub v_offset: u32,
    /// Bytes the encoder reads from a buffer.
    pub size: u32,
}

impl Yuv420Layout {
    /// The layout for `height` lines of `stride` bytes.
    pub fn new(stride: u32, height: u32) -> Self {
        let chroma_stride = stride / 2;
        let y = stride * height;
        let c = chroma_stride * height.div_ceil(2);
        Yuv420Layout {
            stride,
            chroma_stride,
            u_offset: y,
            v_offset: y + c,
            size: y + 2 * c,
        }
    }
}

/// Accepts libcamera's validated stream for encoding and returns the plane
/// layout the encoder's OUTPUT format must describe.
///
/// The camera may move the size a little (ISP alignment); anything beyond
/// 64 pixels either way means it picked another format than the one asked
/// for, and the source would advertise a resolution it does not produce.
pub fn accept_camera_stream(
    requested: (u32, u32),
    got: &CameraStream,
) -> Result<Yuv420Layout, FormatError> {
    if got.fourcc != "YU12" {
        return Err(FormatError::PixelFormat {
            got: got.fourcc.clone(),
        });
    }
    check_request(got.width, got.height, 1)?;
    if got.width.abs_diff(requested.0) > 64 || got.height.abs_diff(requested.1) > 64 {
        return Err(FormatError::Adjusted {
            requested_w: requested.0,
            requested_h: requested.1,
            got_w: got.width,
            got_h: got.height,
        });
    }
    if got.stride < got.width || !got.stride.is_multiple_of(STRIDE_ALIGN) {
        return Err(FormatError::Stride {
            stride: got.stride,
            width: got.width,
        });
    }
    let layout = Yuv420Layout::new(got.stride, got.height);
    if got.frame_size != 0 && got.frame_size < layout.size {
        return Err(FormatError::Stride {
            stride: got.stride,
            width: got.width,
        });
    }
    Ok(layout)
}

/// The dmabuf and byte extent holding all planes of a camera buffer, given
/// `(fd, offset, length)` per plane. The encoder's OUTPUT format is
/// single-planar YUV420, so every plane must live in one dmabuf, in order,
/// without overlap (the Pi ISP allocates them that way).
pub fn contiguous_extent<F: Copy + PartialEq>(
    planes: &[(F, usize, usize)],
) -> Result<(F, usize), FormatError> {
    let (&(fd, _, _), _) = planes.split_first().ok_or(FormatError::Planes {
        detail: "no planes".into(),
    })?;
    let mut end = 0usize;
    for (i, &(pfd, offset, len)) in planes.iter().enumerate() {
        if pfd != fd {
            return Err(FormatError::Planes {
                detail: format!("plane {i} is in another dmabuf"),
            });
        }
        if offset < end {
            return Err(FormatError::Planes {
                detail: format!("plane {i} at {offset} overlaps the previous one ending at {end}"),
            });
        }
        end = offset.checked_add(len).ok_or(FormatError::Planes {
            detail: format!("plane {i} extent overflows"),
        })?;
    }
    Ok((fd, end))
}

/// Size of each encoder CAPTURE (bitstream) buffer: room for an IDR frame at
/// the highest quality the rate control allows, which is well under one
/// byte per pixel; at least 512 KiB (what the driver itself defaults to).
pub fn coded_buffer_size(width: u32, height: u32) -> u32 {
    let pixels = width.saturating_mul(height);
    (pixels / 2)
        .clamp(512 << 10, 4 << 20)
        .next_multiple_of(4096)
}

/// Checks the encoder's answer to S_FMT on a queue.
pub fn check_encoder_answer(
    queue: &'static str,
    want: (u32, u32, u32),
    got: (u32, u32, u32),
) -> Result<(), FormatError> {
    if want == got {
        Ok(())
    } else {
        Err(FormatError::EncoderChanged {
            queue,
            detail: format!(
                "asked {}x{} with {} bytes/line, got {}x{} with {} bytes/line",
                want.0, want.1, want.2, got.0, got.1, got.2
            ),
        })
    }
}

/// The format a source advertises once negotiation is done.
pub fn negotiated(got: &CameraStream, fps: u32) -> VideoFormat {
    VideoFormat {
        width: got.width,
        height: got.height,
        fps,
    }
}

/// Frame duration limits for libcamera's `FrameDurationLimits` control, in
/// microseconds: min = max pins the sensor to exactly `fps`.
pub fn frame_duration_us(fps: u32) -> [i64; 2] {
    let d = 1_000_000 / i64::from(fps.max(1));
    [d, d]
}

/// `timeperframe` for VIDIOC_S_PARM on the encoder's OUTPUT queue (the
/// encoder uses it for rate control): numerator/denominator seconds.
pub fn time_per_frame(fps: u32) -> (u32, u32) {
    (1, fps.max(1))
}

/// Width of the motion stream: libcamera's second, low-resolution output
/// (the ISP scales it in hardware, so the CPU never touches the full
/// picture). 160 pixels is what the block detector needs; the height keeps
/// the main stream's aspect ratio.
pub const MOTION_STREAM_WIDTH: u32 = 160;

/// The motion stream's size for a main stream of `width`×`height`: at most
/// [`MOTION_STREAM_WIDTH`] wide, the same aspect, even sizes (YUV420).
pub fn motion_stream_size(width: u32, height: u32) -> (u32, u32) {
    let w = MOTION_STREAM_WIDTH.min(width.max(2)) & !1;
    let h = ((u64::from(height) * u64::from(w) / u64::from(width.max(1))) as u32).max(2) & !1;
    (w, h)
}

/// Copies the luma plane of a `width`×`height` picture whose lines are
/// `stride` bytes apart into a tight `width * height` buffer (the motion
/// detector's [`LumaFrame`](crate::video::LumaFrame) layout). `None` when
/// the buffer is too short for that geometry.
pub fn tight_luma(plane: &[u8], width: u32, height: u32, stride: u32) -> Option<Vec<u8>> {
    let (w, h, stride) = (width as usize, height as usize, stride as usize);
    if stride < w || h == 0 || plane.len() < stride * (h - 1) + w {
        return None;
    }
    let mut out = Vec::with_capacity(w * h);
    for row in plane.chunks(stride).take(h) {
        out.extend_from_slice(&row[..w]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_motion_stream_keeps_the_aspect_and_even_sizes() {
        assert_eq!(motion_stream_size(1920, 1080), (160, 90));
        assert_eq!(motion_stream_size(1280, 720), (160, 90));
        assert_eq!(motion_stream_size(640, 480), (160, 120));
        assert_eq!(motion_stream_size(1640, 1232), (160, 120));
        // Smaller than the motion stream: the same size.
        assert_eq!(motion_stream_size(96, 64), (96, 64));
    }

    #[test]
    fn a_strided_luma_plane_is_copied_tight_and_short_buffers_refused() {
        // 3x2 picture, 4-byte lines (one byte of padding each).
        let plane = [1, 2, 3, 0, 4, 5, 6];
        assert_eq!(tight_luma(&plane, 3, 2, 4), Some(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(tight_luma(&plane[..6], 3, 2, 4), None);
        assert_eq!(tight_luma(&plane, 3, 2, 2), None);
        assert_eq!(tight_luma(&plane, 3, 0, 4), None);
    }

    use super::*;

    fn stream(w: u32, h: u32, stride: u32) -> CameraStream {
        CameraStream {
            width: w,
            height: h,
            stride,
            frame_size: Yuv420Layout::new(stride, h).size,
            fourcc: "YU12".into(),
        }
    }

    #[test]
    fn yuv420_layout_1080p() {
        let l = Yuv420Layout::new(1920, 1080);
        assert_eq!(l.u_offset, 1920 * 1080);
        assert_eq!(l.v_offset, 1920 * 1080 + 960 * 540);
        assert_eq!(l.size, 1920 * 1080 * 3 / 2);
        // Odd heights round the chroma plane up.
        assert_eq!(Yuv420Layout::new(64, 3).size, 64 * 3 + 2 * 32 * 2);
    }

    #[test]
    fn request_checks() {
        assert!(check_request(1920, 1080, 30).is_ok());
        assert_eq!(
            check_request(1921, 1080, 30),
            Err(FormatError::Size {
                width: 1921,
                height: 1080
            })
        );
        assert!(check_request(2560, 1440, 30).is_err());
        assert!(check_request(0, 2, 30).is_err());
        assert_eq!(
            check_request(640, 480, 0),
            Err(FormatError::FrameRate { fps: 0 })
        );
        assert!(check_request(640, 480, 61).is_err());
    }

    #[test]
    fn accepts_aligned_stream() {
        let l = accept_camera_stream((1280, 720), &stream(1280, 720, 1280)).expect("ok");
        assert_eq!(l.stride, 1280);
        // 848 wide: the ISP pads lines to 864.
        let l = accept_camera_stream((848, 480), &stream(848, 480, 864)).expect("padded");
        assert_eq!(l.chroma_stride, 432);
    }

    #[test]
    fn rejects_bad_streams() {
        let mut s = stream(1280, 720, 1280);
        s.fourcc = "NV12".into();
        assert_eq!(
            accept_camera_stream((1280, 720), &s),
            Err(FormatError::PixelFormat { got: "NV12".into() })
        );
        assert!(matches!(
            accept_camera_stream((1280, 720), &stream(640, 480, 640)),
            Err(FormatError::Adjusted { got_w: 640, .. })
        ));
        assert_eq!(
            accept_camera_stream((848, 480), &stream(848, 480, 848)),
            Err(FormatError::Stride {
                stride: 848,
                width: 848
            })
        );
        let mut s = stream(1280, 720, 1280);
        s.frame_size = 1280 * 720;
        assert!(accept_camera_stream((1280, 720), &s).is_err());
    }

    #[test]
    fn plane_extents() {
        let y = 1280 * 720;
        let planes = [(7, 0, y), (7, y, y / 4), (7, y + y / 4, y / 4)];
        assert_eq!(contiguous_extent(&planes), Ok((7, y * 3 / 2)));
        assert!(contiguous_extent::<i32>(&[]).is_err());
        assert!(contiguous_extent(&[(7, 0, 10), (8, 10, 10)]).is_err());
        assert!(contiguous_extent(&[(7, 0, 10), (7, 5, 10)]).is_err());
        assert!(contiguous_extent(&[(7, usize::MAX, 10)]).is_err());
    }

    #[test]
    fn coded_buffers() {
        assert_eq!(coded_buffer_size(640, 360), 512 << 10);
        assert_eq!(
            coded_buffer_size(1920, 1080),
            1_036_800usize.next_multiple_of(4096) as u32
        );
        assert_eq!(coded_buffer_size(u32::MAX, u32::MAX), 4 << 20);
    }

    #[test]
    fn encoder_answer() {
        assert!(check_encoder_answer("OUTPUT", (1280, 720, 1280), (1280, 720, 1280)).is_ok());
        let e = check_encoder_answer("OUTPUT", (1280, 720, 1280), (1280, 720, 1344))
            .expect_err("differs");
        assert!(e.to_string().contains("OUTPUT"));
    }

    #[test]
    fn durations() {
        assert_eq!(frame_duration_us(30), [33_333, 33_333]);
        assert_eq!(frame_duration_us(0), [1_000_000, 1_000_000]);
        assert_eq!(time_per_frame(15), (1, 15));
        assert_eq!(
            negotiated(&stream(640, 360, 640), 10),
            VideoFormat {
                width: 640,
                height: 360,
                fps: 10
            }
        );
    }

    #[test]
    fn errors_become_invalid_settings() {
        let e: VideoError = FormatError::FrameRate { fps: 0 }.into();
        assert!(e.to_string().starts_with("video.format"));
    }
}
