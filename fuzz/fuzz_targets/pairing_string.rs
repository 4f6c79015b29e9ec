#![no_main]
//! Pairing strings (typed, pasted or read from a QR code) and pairing codes
//! on arbitrary input: never panic, and whatever parses prints back to a
//! string that parses to the same thing.
use kodama_proto::pairing::{normalize_code, PairingString, CODE_LEN, MAX_PAIRING_STRING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(code) = normalize_code(&text) {
        assert_eq!(code.len(), CODE_LEN);
        assert_eq!(normalize_code(&code).as_deref(), Ok(code.as_str()));
    }
    for candidate in [text.to_string(), format!("kodama:pair?{text}")] {
        if let Ok(p) = PairingString::parse(&candidate) {
            assert!(candidate.trim().len() <= MAX_PAIRING_STRING);
            let printed = p.to_string();
            // Printing adds the code's dashes; near the limit that can tip it over.
            if printed.len() <= MAX_PAIRING_STRING {
                assert_eq!(PairingString::parse(&printed).as_ref(), Ok(&p));
            }
        }
    }
});
