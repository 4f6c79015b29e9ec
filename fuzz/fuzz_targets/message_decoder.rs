#![no_main]
use kodama_proto::MessageDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = MessageDecoder::new();
    dec.push(data);
    loop {
        match dec.next_message() {
            Ok(Some(msg)) => {
                // Whatever decodes must re-encode to something that decodes the same.
                let mut again = MessageDecoder::new();
                again.push(&msg.to_bytes());
                assert_eq!(again.next_message().ok().flatten(), Some(msg));
            }
            Ok(None) | Err(_) => break,
        }
    }
});
