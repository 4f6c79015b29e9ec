#![no_main]
use kodama_media::h264;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = h264::is_idr(data);
    let (sps, _) = h264::parameter_sets(data);
    if let Some(sps) = sps {
        let _ = h264::SpsInfo::parse(sps);
    }
    for nal in h264::nal_units(data) {
        let _ = h264::SpsInfo::parse(nal);
    }
});
