#![no_main]
//! The AT digester on arbitrary modem output: never panics, stays bounded,
//! and only ever reports printable, bounded lines.
use kodama_firmware::hw::modem::digest::{Digested, Digester, MAX_LINE, MAX_RESPONSE_LINES};
use libfuzzer_sys::fuzz_target;

const COMMANDS: [&str; 6] = [
    "AT",
    "AT+CSQ",
    "AT+CPSI?",
    "AT+CREG?",
    "AT$QCRMCALL=1,1",
    "ATI",
];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut d = Digester::new();
    let chunk = usize::from(ctl >> 4) + 1;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        // Start a new command now and then, as the engine would.
        if i % 7 == usize::from(ctl & 7) && !d.in_flight() {
            d.begin(COMMANDS[i % COMMANDS.len()], ctl & 8 != 0);
        }
        d.push(piece);
        d.check_invariants();
        while let Some(ev) = d.poll() {
            let lines = match &ev {
                Digested::Response(Ok(lines)) => lines.clone(),
                Digested::Urc(l) => vec![l.clone()],
                _ => Vec::new(),
            };
            assert!(lines.len() <= MAX_RESPONSE_LINES);
            for l in lines {
                assert!(!l.is_empty() && l.len() <= MAX_LINE);
                assert!(l.bytes().all(|b| (0x20..=0x7e).contains(&b) || b == b'\t'));
            }
        }
    }
});
