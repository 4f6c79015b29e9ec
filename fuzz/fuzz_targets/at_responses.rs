#![no_main]
//! SIM7600 response and URC parsers on arbitrary lines: typed errors, no panics.
use kodama_firmware::hw::modem::engine::AtCommand;
use kodama_firmware::hw::modem::sim7600::{
    parse_cclk, parse_cpsi, split_params, Cclk, CgpsQuery, CopsQuery, CpinQuery, Cpsi, Csq,
    RegQuery, RmnetQuery, Urc,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for l in &lines {
        let _ = parse_cpsi(l);
        let _ = parse_cclk(l);
        let _ = split_params(l);
        let _ = Urc::parse(l);
    }
    let _ = Csq.parse(&lines).map(|q| q.dbm());
    let _ = Cpsi.parse(&lines);
    let _ = Cclk.parse(&lines);
    let _ = CopsQuery.parse(&lines);
    let _ = CpinQuery.parse(&lines);
    let _ = CgpsQuery.parse(&lines);
    let _ = RmnetQuery.parse(&lines);
    let _ = RegQuery { eps: false }.parse(&lines);
    let _ = RegQuery { eps: true }.parse(&lines);
});
