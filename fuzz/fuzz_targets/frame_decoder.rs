#![no_main]
use kodama_proto::{FrameDecoder, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size so split points vary too.
    let Some((&split, rest)) = data.split_first() else { return };
    let mut dec = FrameDecoder::new();
    for chunk in rest.chunks(usize::from(split.max(1))) {
        dec.push(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => assert!(f.payload.len() <= MAX_PAYLOAD),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(dec.buffered() <= rest.len());
    }
    let _ = dec.finish();
});
