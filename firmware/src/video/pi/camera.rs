//! The libcamera thread: owns the camera manager and the IMX219, turns
//! completed requests into [`Picture`]s and requeues the requests it gets
//! back.
//!
//! Each request carries two buffers: the full picture for the encoder
//! (a dmabuf it reads directly) and a small YUV420 picture from the ISP's
//! second output (about 160 pixels wide, [`motion_stream_size`]) whose luma
//! plane, mapped and copied (a few kB), feeds the motion detector. A
//! pipeline that cannot give a second stream runs without it, and motion
//! detection then has no input (logged).
//!
//! libcamera's `CameraManager` and `ActiveCamera` are not `Send`, so they
//! live on one thread for their whole life. Channels:
//! * `pictures` (bounded, `buffers` deep): completed pictures to the source.
//!   When it is full the newest picture goes straight back to the camera
//!   (a dropped frame, never a stall of the sensor).
//! * `to_camera` (bounded, `2 * buffers + 2`): completed requests from
//!   libcamera's callback, requests returned by the source, and `Stop`.
//!   Every message but `Stop` carries one of the `buffers` requests, so the
//!   channel can never hold more than its capacity and sends never block.

use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use libcamera::camera::{CameraConfigurationStatus, SensorConfiguration};
use libcamera::camera_manager::CameraManager;
use libcamera::control::ControlList;
use libcamera::controls::{FrameDurationLimits, SensorTimestamp};
use libcamera::framebuffer::AsFrameBuffer;
use libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use libcamera::geometry::Size;
use libcamera::pixel_format::PixelFormat;
use libcamera::request::{Request, RequestStatus, ReuseFlag};
use libcamera::stream::StreamRole;

use super::assemble::{device_error, libc_errno, Op};
use super::format::{
    accept_camera_stream, contiguous_extent, frame_duration_us, motion_stream_size, tight_luma,
    CameraStream, Yuv420Layout,
};
use super::tiers::sensor_mode_for;
use crate::video::VideoError;

/// How the camera is set up.
#[derive(Debug, Clone, Copy)]
pub(super) struct CameraConfig {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Requests (and dmabufs) in circulation.
    pub buffers: u32,
}

/// A filled camera buffer, still owned by its request.
pub(super) struct Picture {
    /// The request; goes back with [`CameraThread::recycle`].
    pub request: Request,
    /// The buffer's index (request cookie).
    pub cookie: u64,
    /// dmabuf holding all three planes.
    pub fd: RawFd,
    /// Size of the dmabuf region the planes occupy.
    pub length: u32,
    /// Start of exposure, CLOCK_MONOTONIC ns.
    pub sensor_ns: u64,
    /// Sensor frame counter (gaps are drops in the camera pipeline).
    pub sequence: u32,
    /// The motion stream's luma plane, tight (`width * height` bytes).
    pub luma: Option<LumaPlane>,
}

/// The low-resolution luma plane of one picture.
pub(super) struct LumaPlane {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major 8-bit luma.
    pub data: Vec<u8>,
}

/// The motion stream as configured: its stream and geometry.
struct MotionStream {
    stream: libcamera::stream::Stream,
    width: u32,
    height: u32,
    stride: u32,
}

/// Motion stream buffers are mapped once, for reading the luma plane.
type MappedBuffer = MemoryMappedFrameBuffer<FrameBuffer>;

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("cookie", &self.cookie)
            .field("fd", &self.fd)
            .field("length", &self.length)
            .field("sensor_ns", &self.sensor_ns)
            .field("sequence", &self.sequence)
            .finish()
    }
}

enum ToCamera {
    Completed(Request),
    Recycle(Request),
    Stop,
}

/// Handle to the running libcamera thread.
pub(super) struct CameraThread {
    /// Completed pictures.
    pub pictures: Receiver<Picture>,
    /// What libcamera settled on.
    pub stream: CameraStream,
    /// Plane layout the encoder must use.
    pub layout: Yuv420Layout,
    to_camera: SyncSender<ToCamera>,
    thread: Option<JoinHandle<Result<(), VideoError>>>,
}

impl std::fmt::Debug for CameraThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraThread")
            .field("stream", &self.stream)
            .finish()
    }
}

/// YUV420 (I420), libcamera's `formats::YUV420` (DRM fourcc `YU12`).
const YUV420: PixelFormat = PixelFormat::new(u32::from_le_bytes(*b"YU12"), 0);
/// How long start-up (IPA load, sensor power-up) may take.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn fourcc_text(fourcc: u32) -> String {
    fourcc
        .to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

fn cam_err(op: Op, what: &str, e: &std::io::Error) -> VideoError {
    device_error(op, e.raw_os_error().unwrap_or(0), &format!("{what}: {e}"))
}

impl CameraThread {
    /// Starts the camera with `config`; returns once frames are flowing or
    /// start-up failed.
    pub fn spawn(config: CameraConfig) -> Result<Self, VideoError> {
        let buffers = config.buffers.max(2) as usize;
        let (to_camera, from_users) = mpsc::sync_channel(2 * buffers + 2);
        let (pictures_tx, pictures) = mpsc::sync_channel(buffers);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let callback_tx = to_camera.clone();
        let thread = std::thread::Builder::new()
            .name("kodama-libcamera".into())
            .spawn(move || run(config, callback_tx, from_users, pictures_tx, ready_tx))
            .map_err(|e| VideoError::Device(format!("cannot start the libcamera thread: {e}")))?;
        let mut handle = CameraThread {
            pictures,
            stream: CameraStream {
                width: 0,
                height: 0,
                stride: 0,
                frame_size: 0,
                fourcc: String::new(),
            },
            layout: Yuv420Layout::new(0, 0),
            to_camera,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok((stream, layout))) => {
                handle.stream = stream;
                handle.layout = layout;
                Ok(handle)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(handle.join_error().unwrap_or_else(|| {
                device_error(
                    Op::ConfigureCamera,
                    libc_errno::ETIMEDOUT,
                    "camera did not start within 10 s",
                )
            })),
        }
    }

    fn join_error(&mut self) -> Option<VideoError> {
        let t = self.thread.take()?;
        match t.join() {
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) => None,
            Err(_) => Some(VideoError::Device("libcamera thread panicked".into())),
        }
    }

    /// Gives a picture's request back to the camera.
    pub fn recycle(&self, request: Request) {
        // Cannot block (see the module doc); fails only when the thread is gone.
        let _ = self.to_camera.send(ToCamera::Recycle(request));
    }

    /// Stops the camera and waits for its thread.
    pub fn stop(mut self) -> Result<(), VideoError> {
        let _ = self.to_camera.send(ToCamera::Stop);
        self.join_error().map_or(Ok(()), Err)
    }
}

impl Drop for CameraThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.to_camera.send(ToCamera::Stop);
            if let Some(e) = self.join_error() {
                tracing::warn!("camera stopped with an error: {e}");
            }
        }
    }
}

type Ready = Result<(CameraStream, Yuv420Layout), VideoError>;

fn run(
    config: CameraConfig,
    callback_tx: SyncSender<ToCamera>,
    from_users: Receiver<ToCamera>,
    pictures_tx: SyncSender<Picture>,
    ready_tx: SyncSender<Ready>,
) -> Result<(), VideoError> {
    let fail = |e: VideoError| {
        let _ = ready_tx.send(Err(VideoError::Device(e.to_string())));
        e
    };
    let mgr =
        CameraManager::new().map_err(|e| fail(cam_err(Op::OpenCamera, "start libcamera", &e)))?;
    let cameras = mgr.cameras();
    let cam = cameras.get(0).ok_or_else(|| {
        fail(device_error(
            Op::OpenCamera,
            libc_errno::ENODEV,
            "libcamera found no camera",
        ))
    })?;
    let mut active = cam
        .acquire()
        .map_err(|e| fail(cam_err(Op::OpenCamera, "acquire camera", &e)))?;

    // Pin the sensor mode: libcamera would otherwise pick by size alone and
    // may choose a mode that cannot reach the frame rate.
    let mode =
        sensor_mode_for(config.width, config.height, config.fps).map_err(|e| fail(e.into()))?;
    let (motion_w, motion_h) = motion_stream_size(config.width, config.height);
    // The video stream plus the motion stream; without the latter if the
    // pipeline refuses two outputs.
    let mut configured = None;
    for roles in [
        &[StreamRole::VideoRecording, StreamRole::ViewFinder][..],
        &[StreamRole::VideoRecording][..],
    ] {
        let Some(mut cfgs) = active.generate_configuration(roles) else {
            continue;
        };
        if cfgs.len() != roles.len() {
            continue;
        }
        for (i, (w, h)) in [(config.width, config.height), (motion_w, motion_h)]
            .into_iter()
            .take(roles.len())
            .enumerate()
        {
            if let Some(mut s) = cfgs.get_mut(i) {
                s.set_pixel_format(YUV420);
                s.set_size(Size {
                    width: w,
                    height: h,
                });
                s.set_buffer_count(config.buffers);
            }
        }
        let mut sensor = SensorConfiguration::new();
        sensor.set_bit_depth(10);
        sensor.set_output_size(mode.width, mode.height);
        cfgs.set_sensor_configuration(sensor);
        if let CameraConfigurationStatus::Invalid = cfgs.validate() {
            continue;
        }
        if roles.len() == 1 {
            tracing::warn!(
                "the camera gives no second (motion) stream: motion detection has no input"
            );
        }
        configured = Some(cfgs);
        break;
    }
    let Some(mut cfgs) = configured else {
        return Err(fail(VideoError::Device(format!(
            "camera rejects {}x{} YUV420 with sensor mode {}x{}",
            config.width, config.height, mode.width, mode.height
        ))));
    };
    let stream_info = {
        let s = cfgs
            .get(0)
            .ok_or_else(|| fail(VideoError::Device("empty camera configuration".into())))?;
        let size = s.get_size();
        CameraStream {
            width: size.width,
            height: size.height,
            stride: s.get_stride(),
            frame_size: s.get_frame_size(),
            fourcc: fourcc_text(s.get_pixel_format().fourcc()),
        }
    };
    let layout = accept_camera_stream((config.width, config.height), &stream_info)
        .map_err(|e| fail(e.into()))?;
    active
        .configure(&mut cfgs)
        .map_err(|e| fail(cam_err(Op::ConfigureCamera, "configure camera", &e)))?;
    let stream = cfgs
        .get(0)
        .and_then(|s| s.stream())
        .ok_or_else(|| fail(VideoError::Device("configured stream missing".into())))?;
    let motion = cfgs.get(1).and_then(|s| {
        let size = s.get_size();
        Some(MotionStream {
            stream: s.stream()?,
            width: size.width,
            height: size.height,
            stride: s.get_stride(),
        })
    });

    let mut alloc = FrameBufferAllocator::new(&active);
    let frame_buffers = alloc
        .alloc(&stream)
        .map_err(|e| fail(cam_err(Op::ConfigureCamera, "allocate camera buffers", &e)))?;
    let mut motion_buffers = match &motion {
        Some(m) => alloc
            .alloc(&m.stream)
            .map_err(|e| fail(cam_err(Op::ConfigureCamera, "allocate motion buffers", &e)))?
            .into_iter()
            .map(|fb| {
                MappedBuffer::new(fb).map_err(|e| {
                    fail(VideoError::Device(format!(
                        "cannot map a motion buffer: {e}"
                    )))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    }
    .into_iter();
    let mut requests = Vec::with_capacity(frame_buffers.len());
    for (i, fb) in frame_buffers.into_iter().enumerate() {
        let mut req = active
            .create_request(Some(i as u64))
            .ok_or_else(|| fail(VideoError::Device("cannot create a camera request".into())))?;
        req.add_buffer(&stream, fb)
            .map_err(|e| fail(cam_err(Op::ConfigureCamera, "attach buffer to request", &e)))?;
        if let (Some(m), Some(mb)) = (&motion, motion_buffers.next()) {
            req.add_buffer(&m.stream, mb).map_err(|e| {
                fail(cam_err(
                    Op::ConfigureCamera,
                    "attach motion buffer to request",
                    &e,
                ))
            })?;
        }
        requests.push(req);
    }

    active.on_request_completed(move |req| {
        let _ = callback_tx.send(ToCamera::Completed(req));
    });
    let mut controls = ControlList::new();
    controls
        .set(FrameDurationLimits(frame_duration_us(config.fps)))
        .map_err(|e| fail(VideoError::Device(format!("frame duration control: {e}"))))?;
    active
        .start(Some(&controls))
        .map_err(|e| fail(cam_err(Op::ConfigureCamera, "start camera", &e)))?;
    for req in requests {
        active
            .queue_request(req)
            .map_err(|(_, e)| fail(cam_err(Op::ConfigureCamera, "queue request", &e)))?;
    }
    let _ = ready_tx.send(Ok((stream_info, layout)));
    tracing::info!(
        width = config.width,
        height = config.height,
        fps = config.fps,
        "camera streaming"
    );

    let mut result = Ok(());
    loop {
        // A camera that delivers nothing for 2 s is stuck (the sensor runs
        // at >= 1 fps); the source sees the error and restarts the pipeline.
        let msg = match from_users.recv_timeout(Duration::from_secs(2)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                result = Err(device_error(
                    Op::ConfigureCamera,
                    libc_errno::ETIMEDOUT,
                    "no frame from the camera for 2 s",
                ));
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            ToCamera::Stop => break,
            ToCamera::Recycle(mut req) => {
                req.reuse(ReuseFlag::REUSE_BUFFERS);
                if let Err((_, e)) = active.queue_request(req) {
                    result = Err(cam_err(Op::ConfigureCamera, "requeue request", &e));
                    break;
                }
            }
            ToCamera::Completed(mut req) => {
                if req.status() != RequestStatus::Complete {
                    continue;
                }
                match picture(req, &stream, motion.as_ref()) {
                    Ok(pic) => match pictures_tx.try_send(pic) {
                        Ok(()) => {}
                        Err(TrySendError::Full(pic)) => {
                            let mut req = pic.request;
                            req.reuse(ReuseFlag::REUSE_BUFFERS);
                            if let Err((_, e)) = active.queue_request(req) {
                                result = Err(cam_err(Op::ConfigureCamera, "requeue request", &e));
                                break;
                            }
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    },
                    Err((r, e)) => {
                        tracing::warn!("dropping unusable camera frame: {e}");
                        req = r;
                        req.reuse(ReuseFlag::REUSE_BUFFERS);
                        if let Err((_, e)) = active.queue_request(req) {
                            result = Err(cam_err(Op::ConfigureCamera, "requeue request", &e));
                            break;
                        }
                    }
                }
            }
        }
    }
    // stop() cancels every queued request synchronously (they come back
    // through the callback as Cancelled and are dropped with the channel).
    if let Err(e) = active.stop() {
        tracing::warn!("camera stop: {e}");
    }
    drop(alloc);
    result
}

/// The motion stream's luma plane of a completed request, if it has one.
fn motion_luma(req: &Request, motion: &MotionStream) -> Option<LumaPlane> {
    let mapped: &MappedBuffer = req.buffer(&motion.stream)?;
    let planes = mapped.data();
    let data = tight_luma(planes.first()?, motion.width, motion.height, motion.stride)?;
    Some(LumaPlane {
        width: motion.width,
        height: motion.height,
        data,
    })
}

fn picture(
    req: Request,
    stream: &libcamera::stream::Stream,
    motion: Option<&MotionStream>,
) -> Result<Picture, (Request, VideoError)> {
    let luma = motion.and_then(|m| motion_luma(&req, m));
    let info = (|| {
        let fb: &FrameBuffer = req
            .buffer(stream)
            .ok_or_else(|| VideoError::Device("request without buffer".into()))?;
        let planes: Vec<(RawFd, usize, usize)> = fb
            .planes()
            .into_iter()
            .map(|p| (p.fd(), p.offset().unwrap_or(0), p.len()))
            .collect();
        let (fd, extent) =
            contiguous_extent(&planes).map_err(|e| VideoError::Device(e.to_string()))?;
        let md = fb.metadata();
        let sequence = md.as_ref().map_or(0, |m| m.sequence());
        let sensor_ns = match req.metadata().get::<SensorTimestamp>() {
            Ok(t) => u64::try_from(t.0).unwrap_or(0),
            Err(_) => md.as_ref().map_or(0, |m| m.timestamp()),
        };
        let length = u32::try_from(extent)
            .map_err(|_| VideoError::Device("camera buffer over 4 GiB".into()))?;
        Ok::<_, VideoError>((fd, length, sensor_ns, sequence))
    })();
    match info {
        Ok((fd, length, sensor_ns, sequence)) => {
            let cookie = req.cookie();
            Ok(Picture {
                request: req,
                cookie,
                fd,
                length,
                sensor_ns,
                sequence,
                luma,
            })
        }
        Err(e) => Err((req, e)),
    }
}
