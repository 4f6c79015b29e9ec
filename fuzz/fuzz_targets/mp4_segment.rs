#![no_main]
//! The fMP4 reader on arbitrary bytes, alone and after a valid init segment:
//! never panics, and what it reports lies within the input.
use kodama_media::fmp4;
use libfuzzer_sys::fuzz_target;

// SPS/PPS of a 640x480 baseline stream.
const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0x80, 0x6d, 0x0a, 0x13, 0x50];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn check(buf: &[u8]) {
    if let Ok(scan) = fmp4::scan_segment(buf) {
        assert!(scan.complete_len as usize <= buf.len());
        let mut end = scan.init.len;
        for f in &scan.fragments {
            assert_eq!(f.offset, end);
            end += f.len;
            assert!(f.data_offset >= f.offset && f.data_offset <= end);
        }
        assert_eq!(end, scan.complete_len);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let _ = fmp4::parse_fragment(data, 0);
    if let Ok(track) = fmp4::VideoTrack::new(SPS, PPS) {
        let mut with_init = fmp4::init_segment(&track);
        with_init.extend_from_slice(data);
        check(&with_init);
    }
});
