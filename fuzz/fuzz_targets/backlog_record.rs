#![no_main]
//! A backlog record read back from the camera's SD card: whatever the card
//! returns (torn writes, flipped bits, a record of another format version)
//! must be refused cleanly; what decodes is a playable GOP with its audio in
//! order, and encodes back to the same GOP.
use kodama_firmware::backlog::record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = record::record_len(data);
    if let Ok((summary, gop)) = record::decode(data) {
        assert_eq!(summary.frames as usize, gop.frames.len());
        assert_eq!(summary.audio as usize, gop.audio.len());
        assert!(gop.frames[0].is_keyframe());
        assert!(gop.audio.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert!(summary.len <= data.len());
        let again = record::encode(summary.id, &gop).expect("a decoded GOP encodes");
        let (_, back) = record::decode(&again).expect("and decodes again");
        assert_eq!(back, gop);
    }
});
