#![no_main]
//! A backlog record read back from the camera's SD card: whatever the card
//! returns (torn writes, flipped bits) must be refused cleanly.
use kodama_firmware::backlog::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = record::record_len(data);
    if let Ok((summary, gop)) = record::decode(data) {
        assert_eq!(summary.frames as usize, gop.frames.len());
        assert!(gop.frames[0].is_keyframe());
        assert!(summary.len <= data.len());
    }
});
