#![no_main]
use kodama_proto::GroupReceiver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rx = GroupReceiver::new();
    for chunk in data.chunks(7) {
        rx.push(chunk);
        loop {
            match rx.poll() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = rx.finish();
});
