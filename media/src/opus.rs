//! Opus packets (RFC 6716) and the Ogg Opus file format (RFC 7845).
//!
//! * [`packet_samples`]: how many 48 kHz samples one packet decodes to, read
//!   from its TOC byte, shared by the recorder's fMP4 audio runs and the
//!   Ogg writer.
//! * [`OggOpusWriter`]: the terminal viewer's audio file. It writes the
//!   identification and comment headers, then one Ogg packet per Opus
//!   packet with granule positions counting decoded samples (RFC 7845 §4).
//!   Packets the stream lost (a capture-time gap) are filled with TOC-only
//!   packets, which a decoder conceals (RFC 6716 §3.2.1: a zero-length frame
//!   is a lost one), so the file's timeline stays the camera's.

use std::io::{self, Write};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Samples (at 48 kHz) one Opus packet decodes to, from its TOC byte
/// (RFC 6716 §3.1); `None` for a packet that is not Opus.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in units of 2.5 ms (120 samples at 48 kHz).
    let units: u32 = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)], // SILK 10/20/40/60 ms
        12..=15 => [4, 8][usize::from(config % 2)],        // hybrid 10/20 ms
        _ => [1, 2, 4, 8][usize::from(config % 4)],        // CELT 2.5/5/10/20 ms
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = units * 120 * frames;
    // A packet holds at most 120 ms (§3.2.5).
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// How many packets of `packet_samples` each a gap of `gap_samples` (48 kHz)
/// before a packet stands for: none for jitter under half a packet, and none
/// for a gap over [`MAX_FILL_SAMPLES`] (a camera restart or a clock step,
/// joined without filler). Callers fill the lost ones with
/// [`lost_packet_marker`] so decoders conceal them and timelines stay whole.
pub fn lost_packets(gap_samples: u64, packet_samples: u32) -> u64 {
    let n = u64::from(packet_samples.max(1));
    if gap_samples <= n / 2 || gap_samples > MAX_FILL_SAMPLES {
        return 0;
    }
    (gap_samples + n / 2) / n
}

/// A one-byte packet standing for a lost one, in the configuration of the
/// packet whose TOC byte is `toc`: code 0 with a zero-length frame, which
/// a decoder treats as lost and conceals (RFC 6716 §3.2.1).
pub fn lost_packet_marker(toc: u8) -> u8 {
    toc & !0x3
}

/// The Ogg logical stream serial number of the viewer's files (one stream
/// per file, so any fixed value is unique).
const SERIAL: u32 = 0x4B4F_4441; // "KODA"

/// Audio packets per Ogg page: a page (and a flush of the writer) every
/// second of 20 ms packets, so a pipe reader hears the stream with at most
/// that much delay.
const PACKETS_PER_PAGE: u32 = 50;

/// The longest gap filled with lost-packet markers: longer ones (a camera
/// that restarted, a clock step) are joined without silence rather than
/// writing minutes of filler.
pub const MAX_FILL_SAMPLES: u64 = 10 * 48_000;

/// What an Ogg Opus file's identification header says (RFC 7845 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Channel count (1 or 2; channel mapping family 0).
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder drops at the start.
    pub pre_skip: u16,
    /// The sample rate the encoder was fed, for information.
    pub input_sample_rate: u32,
}

impl OpusHead {
    /// The `OpusHead` packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(19);
        b.extend_from_slice(b"OpusHead");
        b.push(1); // version
        b.push(self.channels);
        b.extend_from_slice(&self.pre_skip.to_le_bytes());
        b.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        b.extend_from_slice(&0i16.to_le_bytes()); // output gain
        b.push(0); // channel mapping family 0: mono or stereo, no table
        b
    }
}

/// Why an audio packet could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OggOpusError {
    /// The payload is not an Opus packet (empty, or a TOC byte that says
    /// more than 120 ms).
    #[error("audio packet of {len} bytes is not an Opus packet")]
    NotOpus {
        /// Its length.
        len: usize,
    },
    /// The output failed.
    #[error("writing the Ogg Opus output: {0}")]
    Io(#[from] io::Error),
}

/// Writes Opus packets as an Ogg Opus stream (RFC 7845) to `W`.
///
/// One packet is held back so that [`OggOpusWriter::finish`] can mark the
/// last one end-of-stream.
pub struct OggOpusWriter<W: Write> {
    ogg: PacketWriter<'static, W>,
    head: OpusHead,
    /// Samples decoded through the last packet handed to `ogg`, pre-skip included.
    granule: u64,
    held: Option<Vec<u8>>,
    in_page: u32,
    /// Capture time (µs) at which the next packet is due.
    next_capture_us: Option<u64>,
    packets: u64,
    filled: u64,
}

impl<W: Write> std::fmt::Debug for OggOpusWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("head", &self.head)
            .field("granule", &self.granule)
            .field("packets", &self.packets)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Starts the stream: writes the identification and comment headers,
    /// each on its own page (RFC 7845 §3).
    pub fn new(out: W, head: OpusHead) -> io::Result<Self> {
        let mut ogg = PacketWriter::new(out);
        ogg.write_packet(head.to_bytes(), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = concat!("kodama ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        ogg.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        ogg.inner_mut().flush()?;
        Ok(Self {
            ogg,
            head,
            granule: 0,
            held: None,
            in_page: 0,
            next_capture_us: None,
            packets: 0,
            filled: 0,
        })
    }

    /// Adds one Opus packet captured at `capture_us` (camera clock). A gap
    /// since the previous packet of more than half a packet is filled with
    /// lost-packet markers (up to [`MAX_FILL_SAMPLES`]).
    pub fn push(&mut self, capture_us: u64, packet: &[u8]) -> Result<(), OggOpusError> {
        let samples = packet_samples(packet).ok_or(OggOpusError::NotOpus { len: packet.len() })?;
        if let Some(due) = self.next_capture_us {
            let gap = capture_us.saturating_sub(due) * 48 / 1000;
            for _ in 0..lost_packets(gap, samples) {
                self.write(vec![lost_packet_marker(packet[0])], samples)?;
                self.filled += 1;
            }
        }
        self.next_capture_us = Some(capture_us + u64::from(samples) * 1000 / 48);
        self.write(packet.to_vec(), samples)?;
        self.packets += 1;
        Ok(())
    }

    fn write(&mut self, packet: Vec<u8>, samples: u32) -> io::Result<()> {
        if let Some(previous) = self.held.take() {
            self.in_page += 1;
            let end = if self.in_page >= PACKETS_PER_PAGE {
                self.in_page = 0;
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.ogg.write_packet(previous, SERIAL, end, self.granule)?;
            if end == PacketWriteEndInfo::EndPage {
                self.ogg.inner_mut().flush()?;
            }
        }
        self.granule += u64::from(samples);
        self.held = Some(packet);
        Ok(())
    }

    /// Opus packets pushed so far (without fillers).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Lost-packet markers written to fill gaps.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Playable duration so far in 48 kHz samples: decoded minus pre-skip.
    pub fn duration_samples(&self) -> u64 {
        self.granule.saturating_sub(u64::from(self.head.pre_skip))
    }

    /// Ends the stream (the last packet's page is marked end-of-stream) and
    /// returns the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(last) = self.held.take() {
            self.ogg
                .write_packet(last, SERIAL, PacketWriteEndInfo::EndStream, self.granule)?;
        }
        let mut out = self.ogg.into_inner();
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogg::reading::PacketReader;

    /// A CELT fullband 20 ms mono packet (config 31, code 0) with `len` bytes.
    fn celt_20ms(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 31 << 3;
        p
    }

    const HEAD: OpusHead = OpusHead {
        channels: 1,
        pre_skip: 312,
        input_sample_rate: 16_000,
    };

    fn read_back(bytes: &[u8]) -> Vec<ogg::Packet> {
        let mut r = PacketReader::new(std::io::Cursor::new(bytes));
        let mut out = Vec::new();
        while let Some(p) = r.read_packet().expect("valid ogg") {
            out.push(p);
        }
        out
    }

    #[test]
    fn packet_durations_follow_the_toc() {
        assert_eq!(packet_samples(&[31 << 3]), Some(960)); // CELT 20 ms
        assert_eq!(packet_samples(&[1 << 3]), Some(960)); // SILK NB 20 ms
        assert_eq!(packet_samples(&[(13 << 3) | 1, 0]), Some(1920)); // hybrid 2x20 ms
        assert_eq!(packet_samples(&[(3 << 3) | 3, 2]), Some(5760)); // SILK 2x60 ms
        assert_eq!(packet_samples(&[(3 << 3) | 3, 3]), None); // 180 ms: not Opus
        assert_eq!(packet_samples(&[(3 << 3) | 3]), None); // code 3 without count
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn headers_packets_and_granules_read_back() {
        let mut w = OggOpusWriter::new(Vec::new(), HEAD).expect("headers");
        for i in 0..120u64 {
            w.push(1_000_000 + i * 20_000, &celt_20ms(40))
                .expect("push");
        }
        assert_eq!(w.duration_samples(), 120 * 960 - 312);
        let bytes = w.finish().expect("finish");
        let packets = read_back(&bytes);
        assert_eq!(packets.len(), 122);
        assert_eq!(&packets[0].data[..8], b"OpusHead");
        assert_eq!(packets[0].data, HEAD.to_bytes());
        assert_eq!(&packets[1].data[..8], b"OpusTags");
        assert!(packets[2..].iter().all(|p| p.data.len() == 40));
        let last = packets.last().expect("packets");
        assert!(last.last_in_stream());
        assert_eq!(last.absgp_page(), 120 * 960);
        // Pages end every PACKETS_PER_PAGE packets with the granule of their last.
        let page_ends: Vec<u64> = packets[2..]
            .iter()
            .filter(|p| p.last_in_page())
            .map(ogg::Packet::absgp_page)
            .collect();
        assert_eq!(page_ends, vec![50 * 960, 100 * 960, 120 * 960]);
    }

    #[test]
    fn a_gap_is_filled_with_lost_packet_markers_and_a_restart_is_not() {
        let mut w = OggOpusWriter::new(Vec::new(), HEAD).expect("headers");
        w.push(0, &celt_20ms(30)).expect("push");
        // Three packets (60 ms) missing.
        w.push(80_000, &celt_20ms(30)).expect("push");
        assert_eq!(w.filled(), 3);
        // A minute-long jump (camera restart) is joined as is.
        w.push(60_000_000, &celt_20ms(30)).expect("push");
        assert_eq!((w.packets(), w.filled()), (3, 3));
        // Jitter under half a packet is not a gap.
        w.push(60_029_000, &celt_20ms(30)).expect("push");
        assert_eq!(w.filled(), 3);
        let packets = read_back(&w.finish().expect("finish"));
        let lengths: Vec<usize> = packets[2..].iter().map(|p| p.data.len()).collect();
        assert_eq!(lengths, vec![30, 1, 1, 1, 30, 30, 30]);
        assert_eq!(packets[3].data[0], 31 << 3);
        assert_eq!(packets.last().map(ogg::Packet::absgp_page), Some(7 * 960));
    }

    #[test]
    fn a_payload_that_is_not_opus_is_refused() {
        let mut w = OggOpusWriter::new(Vec::new(), HEAD).expect("headers");
        assert!(matches!(
            w.push(0, &[]),
            Err(OggOpusError::NotOpus { len: 0 })
        ));
        let bytes = w.finish().expect("finish");
        assert_eq!(read_back(&bytes).len(), 2);
    }
}
