#![no_main]
//! The NMEA reader on arbitrary bytes, split at a fuzzer-chosen point:
//! never panics, counters stay consistent, and the split changes nothing.
use kodama_firmware::hw::gnss::NmeaReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut whole = NmeaReader::new();
    let mut a = Vec::new();
    whole.push(data, |f| a.push(f));
    a.extend(whole.finish());

    let mut parts = NmeaReader::new();
    let mut b = Vec::new();
    parts.push(&data[..split], |f| b.push(f));
    parts.push(&data[split..], |f| b.push(f));
    b.extend(parts.finish());

    assert_eq!(a, b);
    assert_eq!(whole.counts(), parts.counts());
    let c = whole.counts();
    assert_eq!(c.fixes, a.len() as u64);
    assert!(c.bad_checksums + c.unparsed <= c.sentences);
});
