//! The bcm2835-codec H.264 encoder through the V4L2 stateful
//! memory-to-memory encoder interface (kernel docs, "Memory-to-Memory
//! Stateful Video Encoder Interface"; referred to below as "the spec").
//!
//! OUTPUT (raw pictures) uses `V4L2_MEMORY_DMABUF`: each queued buffer is a
//! camera dmabuf, so pictures are never copied. CAPTURE (bitstream) uses
//! `V4L2_MEMORY_MMAP` buffers mapped once at start. All ioctls go through
//! v4l2r's safe wrappers; this module has no `unsafe`.

use std::os::fd::{AsFd, RawFd};
use std::path::Path;
use std::time::Duration;

use v4l2r::bindings;
use v4l2r::device::{Device, DeviceConfig};
use v4l2r::ioctl::{
    self, BufferFlags, DqBufIoctlError, IoctlConvertError, MemoryConsistency, PlaneMapping,
    QBufPlane, QBuffer, V4l2Buffer,
};
use v4l2r::memory::{DmaBufHandle, MemoryType, MmapHandle};
use v4l2r::nix::errno::Errno;
use v4l2r::nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use v4l2r::{Format, PixelFormat, PlaneLayout, QueueType};

use super::assemble::{device_error, Op};
use super::clock::{ns_from_timeval, timeval_from_ns};
use super::controls::{EncoderParams, CID_BITRATE, CID_FORCE_KEY_FRAME};
use super::format::{check_encoder_answer, coded_buffer_size, time_per_frame, Yuv420Layout};
use crate::video::VideoError;

const OUTPUT: QueueType = QueueType::VideoOutputMplane;
const CAPTURE: QueueType = QueueType::VideoCaptureMplane;

/// What the encoder is opened with.
#[derive(Debug, Clone, Copy)]
pub(super) struct EncoderSetup {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frame rate (for rate control).
    pub fps: u32,
    /// Layout of the camera's buffers.
    pub layout: Yuv420Layout,
    /// Controls.
    pub params: EncoderParams,
    /// OUTPUT slots (camera buffers the encoder may hold at once).
    pub output_slots: u32,
    /// CAPTURE buffers.
    pub capture_buffers: u32,
}

/// One coded buffer, dequeued from CAPTURE.
#[derive(Debug)]
pub(super) struct Coded {
    /// `bytesused` bytes of the buffer.
    pub data: Vec<u8>,
    /// The sensor timestamp the matching OUTPUT buffer carried, ns.
    pub sensor_ns: Option<u64>,
}

/// An open, streaming encoder.
pub(super) struct Encoder {
    device: Device,
    capture: Vec<PlaneMapping>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("capture_buffers", &self.capture.len())
            .finish()
    }
}

fn errno_of(e: &impl std::fmt::Display) -> i32 {
    // v4l2r's error enums wrap an Errno without exposing it uniformly; the
    // message ends with the errno's description, which is all the hint needs.
    let s = e.to_string();
    [
        Errno::ENOENT,
        Errno::ENODEV,
        Errno::EACCES,
        Errno::EPERM,
        Errno::EBUSY,
        Errno::ENOMEM,
        Errno::EINVAL,
        Errno::EIO,
        Errno::EPIPE,
    ]
    .into_iter()
    .find(|n| s.contains(n.desc()))
    .map_or(0, |n| n as i32)
}

fn enc_err(op: Op, what: &str, e: impl std::fmt::Display) -> VideoError {
    let errno = errno_of(&e);
    device_error(op, errno, &format!("{what}: {e}"))
}

impl Encoder {
    /// Opens and configures the encoder and starts both queues. Follows the
    /// spec's "Initialization" order: CAPTURE format, OUTPUT format, frame
    /// interval, controls, buffers, STREAMON.
    pub fn open(path: &Path, setup: &EncoderSetup) -> Result<Self, VideoError> {
        let mut device =
            Device::open(path, DeviceConfig::new().non_blocking_dqbuf()).map_err(|e| match e {
                v4l2r::device::DeviceOpenError::OpenError(errno) => device_error(
                    Op::OpenEncoder,
                    errno as i32,
                    &format!("open {}", path.display()),
                ),
                other => enc_err(Op::OpenEncoder, &format!("open {}", path.display()), other),
            })?;

        // Spec "Initialization" step 1: the coded format on CAPTURE first;
        // its size is ignored, sizeimage sizes the bitstream buffers.
        let coded_size = coded_buffer_size(setup.width, setup.height);
        let capture_fmt = Format {
            width: setup.width,
            height: setup.height,
            pixelformat: PixelFormat::from_fourcc(b"H264"),
            plane_fmt: vec![PlaneLayout {
                sizeimage: coded_size,
                bytesperline: 0,
            }],
        };
        let _: Format = ioctl::s_fmt(&mut device, (CAPTURE, &capture_fmt))
            .map_err(|e| enc_err(Op::ConfigureEncoder, "S_FMT CAPTURE H264", e))?;

        // Step 2: the raw format on OUTPUT, exactly the camera's buffers.
        let output_fmt = Format {
            width: setup.width,
            height: setup.height,
            pixelformat: PixelFormat::from_fourcc(b"YU12"),
            plane_fmt: vec![PlaneLayout {
                sizeimage: setup.layout.size,
                bytesperline: setup.layout.stride,
            }],
        };
        let got: Format = ioctl::s_fmt(&mut device, (OUTPUT, &output_fmt))
            .map_err(|e| enc_err(Op::ConfigureEncoder, "S_FMT OUTPUT YUV420", e))?;
        let got_stride = got.plane_fmt.first().map_or(0, |p| p.bytesperline);
        check_encoder_answer(
            "OUTPUT",
            (setup.width, setup.height, setup.layout.stride),
            (got.width, got.height, got_stride),
        )?;

        // Step 3: frame interval on OUTPUT (rate control's idea of time).
        let (num, den) = time_per_frame(setup.fps);
        let parm = bindings::v4l2_streamparm {
            type_: OUTPUT as u32,
            parm: bindings::v4l2_streamparm__bindgen_ty_1 {
                output: bindings::v4l2_outputparm {
                    timeperframe: bindings::v4l2_fract {
                        numerator: num,
                        denominator: den,
                    },
                    ..Default::default()
                },
            },
        };
        if let Err(e) = ioctl::s_parm::<_, bindings::v4l2_streamparm>(&device, parm) {
            tracing::warn!("encoder ignores the frame interval: {e}");
        }

        // Step 4: controls (spec "Encoding Parameter Changes" allows them any
        // time; profile/level/I-period only take effect from STREAMON).
        for (id, value) in setup.params.controls() {
            ioctl::s_ctrl(&device, id, value).map_err(|e| {
                enc_err(
                    Op::ConfigureEncoder,
                    &format!("set control {id:#x} = {value}"),
                    e,
                )
            })?;
        }

        // Step 5: buffers. OUTPUT imports dmabufs; CAPTURE is driver memory.
        let granted: usize = ioctl::reqbufs(
            &device,
            OUTPUT,
            MemoryType::DmaBuf,
            setup.output_slots,
            MemoryConsistency::empty(),
        )
        .map_err(|e| enc_err(Op::ConfigureEncoder, "REQBUFS OUTPUT DMABUF", e))?;
        if granted < setup.output_slots as usize {
            return Err(VideoError::Encoder(format!(
                "encoder granted {granted} OUTPUT buffers, {} needed",
                setup.output_slots
            )));
        }
        let count: usize = ioctl::reqbufs(
            &device,
            CAPTURE,
            MemoryType::Mmap,
            setup.capture_buffers,
            MemoryConsistency::empty(),
        )
        .map_err(|e| enc_err(Op::ConfigureEncoder, "REQBUFS CAPTURE MMAP", e))?;
        let mut capture = Vec::with_capacity(count);
        for index in 0..count {
            let q: ioctl::QueryBuffer = ioctl::querybuf(&device, CAPTURE, index)
                .map_err(|e| enc_err(Op::ConfigureEncoder, "QUERYBUF CAPTURE", e))?;
            let plane = q
                .planes
                .first()
                .ok_or_else(|| VideoError::Encoder("CAPTURE buffer without planes".into()))?;
            let map = ioctl::mmap(&device.as_fd(), plane.mem_offset, plane.length)
                .map_err(|e| enc_err(Op::ConfigureEncoder, "mmap CAPTURE", e))?;
            capture.push(map);
        }
        let encoder = Encoder { device, capture };
        for index in 0..encoder.capture.len() {
            encoder.queue_capture(index as u32)?;
        }

        // Step 6: STREAMON both queues; encoding starts with the first OUTPUT buffer.
        ioctl::streamon(&encoder.device, OUTPUT)
            .map_err(|e| enc_err(Op::ConfigureEncoder, "STREAMON OUTPUT", e))?;
        ioctl::streamon(&encoder.device, CAPTURE)
            .map_err(|e| enc_err(Op::ConfigureEncoder, "STREAMON CAPTURE", e))?;
        Ok(encoder)
    }

    fn queue_capture(&self, index: u32) -> Result<(), VideoError> {
        let mut b = QBuffer::<MmapHandle>::new(CAPTURE, index);
        b.planes.push(QBufPlane::new_from_handle(&MmapHandle, 0));
        ioctl::qbuf::<_, ()>(&self.device, b).map_err(|e| enc_err(Op::Encode, "QBUF CAPTURE", e))
    }

    /// Queues camera dmabuf `fd` (`length` bytes, `bytes_used` of picture)
    /// into OUTPUT slot `slot`, stamped with the sensor time so the coded
    /// frame carries it back (spec "Encoding": timestamps are copied).
    pub fn queue_picture(
        &self,
        slot: u32,
        fd: RawFd,
        length: u32,
        bytes_used: u32,
        sensor_ns: u64,
    ) -> Result<(), VideoError> {
        let (sec, usec) = timeval_from_ns(sensor_ns);
        let mut b =
            QBuffer::<DmaBufHandle<std::fs::File>>::new(OUTPUT, slot).set_timestamp(sec, usec);
        b.planes.push(QBufPlane(bindings::v4l2_plane {
            bytesused: bytes_used,
            length,
            m: bindings::v4l2_plane__bindgen_ty_1 { fd },
            data_offset: 0,
            ..Default::default()
        }));
        ioctl::qbuf::<_, ()>(&self.device, b)
            .map_err(|e| enc_err(Op::Encode, "QBUF OUTPUT (dmabuf)", e))
    }

    /// Waits until a buffer can be dequeued from either queue, up to `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<bool, VideoError> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(
            self.device.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT,
        )];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EINTR) => Ok(false),
            Err(e) => Err(device_error(Op::Encode, e as i32, "poll encoder")),
        }
    }

    /// Dequeues a finished OUTPUT buffer: its slot (and the camera buffer in
    /// it) is free again.
    pub fn dequeue_output(&self) -> Result<Option<u32>, VideoError> {
        match ioctl::dqbuf::<V4l2Buffer>(&self.device, OUTPUT) {
            Ok(b) => Ok(Some(b.index())),
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::NotReady)) => Ok(None),
            Err(e) => Err(enc_err(Op::Encode, "DQBUF OUTPUT", e)),
        }
    }

    /// Dequeues a coded buffer, copies its payload out and gives the buffer
    /// back to the encoder.
    pub fn dequeue_coded(&self) -> Result<Option<Coded>, VideoError> {
        let b = match ioctl::dqbuf::<V4l2Buffer>(&self.device, CAPTURE) {
            Ok(b) => b,
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::NotReady)) => return Ok(None),
            Err(e) => return Err(enc_err(Op::Encode, "DQBUF CAPTURE", e)),
        };
        let index = b.index();
        let used = *b.get_first_plane().bytesused as usize;
        let map = self.capture.get(index as usize).ok_or_else(|| {
            VideoError::Encoder(format!("encoder returned unknown CAPTURE buffer {index}"))
        })?;
        let data = map.get(..used).map(<[u8]>::to_vec);
        let ts = b.timestamp();
        let error = b.flags().contains(BufferFlags::ERROR);
        // The buffer goes back before anything can fail below.
        self.queue_capture(index)?;
        let data = data.ok_or_else(|| {
            VideoError::Encoder(format!(
                "CAPTURE buffer {index} claims {used} bytes of {}",
                map.len()
            ))
        })?;
        if error {
            return Err(VideoError::Encoder(format!(
                "encoder flagged CAPTURE buffer {index} as corrupt"
            )));
        }
        Ok(Some(Coded {
            data,
            sensor_ns: ns_from_timeval(ts.tv_sec, ts.tv_usec),
        }))
    }

    /// Changes the target bitrate while streaming.
    pub fn set_bitrate(&self, bps: u32) -> Result<(), VideoError> {
        let v = i32::try_from(bps).unwrap_or(i32::MAX);
        ioctl::s_ctrl(&self.device, CID_BITRATE, v)
            .map(|_| ())
            .map_err(|e| enc_err(Op::Encode, "set bitrate", e))
    }

    /// Makes the next coded picture an IDR.
    pub fn force_keyframe(&self) -> Result<(), VideoError> {
        ioctl::s_ctrl(&self.device, CID_FORCE_KEY_FRAME, 1)
            .map(|_| ())
            .map_err(|e| enc_err(Op::Encode, "force key frame", e))
    }
}

impl Drop for Encoder {
    /// STREAMOFF returns every queued buffer to us (spec "Reset"): after it
    /// the encoder no longer reads any camera dmabuf, so the camera buffers
    /// can be requeued or freed.
    fn drop(&mut self) {
        if let Err(e) = ioctl::streamoff(&self.device, OUTPUT) {
            tracing::warn!("STREAMOFF OUTPUT: {e}");
        }
        if let Err(e) = ioctl::streamoff(&self.device, CAPTURE) {
            tracing::warn!("STREAMOFF CAPTURE: {e}");
        }
    }
}
