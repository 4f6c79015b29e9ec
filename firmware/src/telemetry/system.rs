//! System health from `/proc` and `/sys`, under an injectable root directory
//! so tests read fixture trees.
//!
//! The parsers are plain functions on file contents (proc(5), sysfs ABI);
//! [`SystemReader`] reads the files and keeps the one piece of state CPU
//! usage needs (the previous `/proc/stat` sample). A missing or unreadable
//! file gives `None` for its field, never an error: a camera without a
//! thermal zone still reports everything else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Aggregate CPU time counters from the `cpu` line of `/proc/stat` (USER_HZ ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// All ticks (user + nice + system + idle + iowait + irq + softirq + steal).
    pub total: u64,
    /// Idle and iowait ticks.
    pub idle: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat` (proc(5)). `guest` and
/// `guest_nice` are already included in `user` and `nice`, so they are not added.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total = v.iter().fold(0u64, |a, &b| a.saturating_add(b));
    let idle = v[3].saturating_add(v.get(4).copied().unwrap_or(0));
    Some(CpuTimes { total, idle })
}

/// CPU busy share between two samples, percent (0-100).
pub fn cpu_percent(prev: CpuTimes, cur: CpuTimes) -> Option<f32> {
    let total = cur.total.checked_sub(prev.total)?;
    let idle = cur.idle.checked_sub(prev.idle)?;
    if total == 0 {
        return None;
    }
    let busy = total.saturating_sub(idle);
    Some((busy as f64 * 100.0 / total as f64) as f32)
}

/// Memory from `/proc/meminfo`, kibibytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_kb: u64,
    /// `MemAvailable` (what can be allocated without swapping).
    pub available_kb: u64,
}

/// Parses `MemTotal` and `MemAvailable` from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_ascii_whitespace().next()?.parse().ok())
    };
    Some(Memory {
        total_kb: field("MemTotal")?,
        available_kb: field("MemAvailable")?,
    })
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
}

/// Thermal zone temperature: sysfs reports millidegrees Celsius.
pub fn parse_millidegrees(text: &str) -> Option<f32> {
    let m: i64 = text.trim().parse().ok()?;
    Some(m as f32 / 1000.0)
}

/// The Raspberry Pi firmware's throttling word (`vcgencmd get_throttled`),
/// decoded. Bits 0-3 are "now", bits 16-19 "since boot".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    /// The raw word.
    pub raw: u32,
    /// Bit 0: supply below 4.63 V now.
    pub under_voltage: bool,
    /// Bit 1: ARM frequency capped now.
    pub freq_capped: bool,
    /// Bit 2: throttled now.
    pub throttled: bool,
    /// Bit 3: soft temperature limit active now.
    pub soft_temp_limit: bool,
    /// Bit 16: under-voltage has occurred since boot.
    pub under_voltage_occurred: bool,
    /// Bit 18: throttling has occurred since boot.
    pub throttled_occurred: bool,
}

impl Throttling {
    /// Decodes the word.
    pub fn from_raw(raw: u32) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Throttling {
            raw,
            under_voltage: bit(0),
            freq_capped: bit(1),
            throttled: bit(2),
            soft_temp_limit: bit(3),
            under_voltage_occurred: bit(16),
            throttled_occurred: bit(18),
        }
    }
}

/// Parses `get_throttled`, which the firmware driver prints as bare hex
/// (`sprintf("%x\n")`, e.g. `50005`); a `0x` prefix is accepted too.
pub fn parse_throttled(text: &str) -> Option<Throttling> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(t, 16).ok().map(Throttling::from_raw)
}

/// The interface of the default IPv4 route in `/proc/net/route`: destination
/// 0, flags RTF_UP (0x1), lowest metric wins.
pub fn parse_default_route(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let (iface, dest, flags, metric) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u32 = metric.parse().ok()?;
            (*dest == "00000000" && flags & 0x1 != 0).then(|| (metric, iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// What kind of link carries the default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// No default route.
    #[default]
    None,
    /// IEEE 802.11.
    Wifi,
    /// The modem (QMI `wwan*`, RNDIS/ECM `usb*`, PPP).
    Cellular,
    /// Anything else (wired Ethernet, a USB gadget link on the bench).
    Ethernet,
}

/// The link in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Link {
    /// Kind of the default route's interface.
    pub kind: LinkKind,
    /// The default route's interface.
    pub iface: Option<String>,
    /// Interfaces whose `operstate` is `up`, sorted.
    pub up: Vec<String>,
}

/// Classifies an interface from its sysfs directory: `wireless/` or
/// `DEVTYPE=wlan` is Wi-Fi, `DEVTYPE=wwan` or a modem-style name is cellular.
fn link_kind(net: &Path, iface: &str) -> LinkKind {
    let dir = net.join(iface);
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    let devtype = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .unwrap_or("");
    if devtype == "wlan" || dir.join("wireless").exists() || dir.join("phy80211").exists() {
        LinkKind::Wifi
    } else if devtype == "wwan"
        || ["wwan", "rmnet", "ppp", "usb"]
            .iter()
            .any(|p| iface.starts_with(p))
    {
        LinkKind::Cellular
    } else {
        LinkKind::Ethernet
    }
}

/// Free space on a file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// The path measured.
    pub path: PathBuf,
    /// Bytes available to unprivileged users.
    pub free_bytes: u64,
    /// File system size in bytes.
    pub total_bytes: u64,
}

/// Measures the file system holding `path` with statvfs(3).
// `c_ulong` and `fsblkcnt_t` are u32 on 32-bit ARM, u64 here.
#[allow(clippy::useless_conversion)]
pub fn storage(path: &Path) -> Option<Storage> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = u64::from(s.fragment_size());
    Some(Storage {
        path: path.to_path_buf(),
        free_bytes: u64::from(s.blocks_available()).saturating_mul(frag),
        total_bytes: u64::from(s.blocks()).saturating_mul(frag),
    })
}

/// Everything read from `/proc` and `/sys` in one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SystemSample {
    /// Seconds since boot.
    pub uptime_s: Option<f64>,
    /// CPU busy percent since the previous sample (`None` on the first).
    pub cpu_percent: Option<f32>,
    /// Memory.
    pub memory: Option<Memory>,
    /// SoC temperature, °C.
    pub soc_temp_c: Option<f32>,
    /// Raspberry Pi under-voltage and throttling flags.
    pub throttling: Option<Throttling>,
    /// Free space on the recording/config file system.
    pub storage: Option<Storage>,
    /// The link in use.
    pub link: Link,
    /// The firmware's own process: its memory and CPU.
    pub process: Option<ProcessSample>,
}

/// The firmware process's own footprint, from `/proc/self/status` and
/// `/proc/self/stat` ([`super::procfs`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessSample {
    /// Resident memory now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// The most it has been resident since it started, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// CPU it used since the previous sample, percent of one core (`None`
    /// on the first sample).
    pub cpu_percent: Option<f32>,
}

/// The process's CPU share between two samples: `ticks` of CPU (USER_HZ)
/// over `seconds` of uptime, percent of one core.
pub fn process_cpu_percent(ticks: u64, ticks_per_second: u64, seconds: f64) -> Option<f32> {
    if seconds <= 0.0 || ticks_per_second == 0 {
        return None;
    }
    Some((ticks as f64 / ticks_per_second as f64 / seconds * 100.0) as f32)
}

/// Where the Pi firmware driver publishes the throttling word
/// (drivers/firmware/raspberrypi.c in the Raspberry Pi kernel, "Add a
/// get_throttled sysfs file"; deprecated there in favour of hwmon).
pub const THROTTLED_PATH: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

/// Reads [`SystemSample`]s under a root directory (`/` on the camera).
#[derive(Debug, Clone)]
pub struct SystemReader {
    root: PathBuf,
    storage_path: PathBuf,
    thermal_zone: String,
    prev_cpu: Option<CpuTimes>,
    /// The process's CPU ticks and the uptime at the previous sample.
    prev_process: Option<(u64, f64)>,
}

impl SystemReader {
    /// A reader of `root`'s `proc/` and `sys/`, measuring storage at
    /// `storage_path` (taken relative to `root`).
    pub fn new(root: impl Into<PathBuf>, storage_path: &Path, thermal_zone: &str) -> Self {
        SystemReader {
            root: root.into(),
            storage_path: storage_path.to_path_buf(),
            thermal_zone: thermal_zone.to_string(),
            prev_cpu: None,
            prev_process: None,
        }
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// This process's memory, and its CPU since the previous sample
    /// measured against `uptime_s` (the same clock in fixture trees).
    fn process(&mut self, uptime_s: Option<f64>) -> Option<ProcessSample> {
        let memory = super::procfs::parse_status(&self.read("proc/self/status")?).ok()?;
        let ticks = self
            .read("proc/self/stat")
            .and_then(|text| super::procfs::parse_stat(&text).ok())
            .map(super::procfs::CpuTicks::total);
        let cpu_percent = match (self.prev_process, ticks, uptime_s) {
            (Some((ticks0, up0)), Some(ticks1), Some(up1)) => process_cpu_percent(
                ticks1.saturating_sub(ticks0),
                super::procfs::ticks_per_second(),
                up1 - up0,
            ),
            _ => None,
        };
        if let (Some(ticks), Some(up)) = (ticks, uptime_s) {
            self.prev_process = Some((ticks, up));
        }
        Some(ProcessSample {
            rss_kib: memory.rss_kib,
            peak_rss_kib: memory.hwm_kib,
            cpu_percent,
        })
    }

    /// Takes a sample. CPU usage is measured since the previous call.
    pub fn sample(&mut self) -> SystemSample {
        let cpu = self.read("proc/stat").as_deref().and_then(parse_proc_stat);
        let cpu_percent = match (self.prev_cpu, cpu) {
            (Some(p), Some(c)) => cpu_percent(p, c),
            _ => None,
        };
        if cpu.is_some() {
            self.prev_cpu = cpu;
        }
        let throttling = self
            .read(THROTTLED_PATH)
            .as_deref()
            .and_then(parse_throttled)
            .or_else(|| self.hwmon_under_voltage());
        let uptime_s = self.read("proc/uptime").as_deref().and_then(parse_uptime);
        let process = self.process(uptime_s);
        let rel_storage = self
            .storage_path
            .strip_prefix("/")
            .unwrap_or(&self.storage_path);
        SystemSample {
            uptime_s,
            process,
            cpu_percent,
            memory: self.read("proc/meminfo").as_deref().and_then(parse_meminfo),
            soc_temp_c: self
                .read(&format!("sys/class/thermal/{}/temp", self.thermal_zone))
                .as_deref()
                .and_then(parse_millidegrees),
            throttling,
            storage: storage(&self.root.join(rel_storage)),
            link: self.link(),
        }
    }

    /// Mainline kernels expose only the under-voltage alarm, through the
    /// `rpi_volt` hwmon device (Documentation/hwmon/raspberrypi-hwmon.rst).
    fn hwmon_under_voltage(&self) -> Option<Throttling> {
        let dir = std::fs::read_dir(self.root.join("sys/class/hwmon")).ok()?;
        // Bounded: a handful of hwmon devices at most.
        for entry in dir.flatten().take(64) {
            let p = entry.path();
            let name = std::fs::read_to_string(p.join("name")).unwrap_or_default();
            if name.trim() == "rpi_volt" {
                let alarm = std::fs::read_to_string(p.join("in0_lcrit_alarm")).ok()?;
                return Some(Throttling::from_raw(u32::from(alarm.trim() == "1")));
            }
        }
        None
    }

    fn link(&self) -> Link {
        let net = self.root.join("sys/class/net");
        let mut up: Vec<String> = std::fs::read_dir(&net)
            .map(|d| {
                d.flatten()
                    .take(256)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let state = std::fs::read_to_string(e.path().join("operstate")).ok()?;
                        (state.trim() == "up").then_some(name)
                    })
                    .collect()
            })
            .unwrap_or_default();
        up.sort();
        let iface = self
            .read("proc/net/route")
            .as_deref()
            .and_then(parse_default_route);
        let kind = iface
            .as_deref()
            .map_or(LinkKind::None, |i| link_kind(&net, i));
        Link { kind, iface, up }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_percent_from_two_stat_samples() {
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_proc_stat("cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        assert_eq!(cpu_percent(a, b), Some(50.0));
        assert_eq!(cpu_percent(b, a), None, "counters went backwards");
        assert_eq!(cpu_percent(a, a), None);
    }

    #[test]
    fn throttled_word_decodes() {
        let t = parse_throttled("50005\n").unwrap();
        assert!(t.under_voltage && t.throttled && t.under_voltage_occurred && t.throttled_occurred);
        assert!(!t.freq_capped && !t.soft_temp_limit);
        assert_eq!(parse_throttled("0x0").unwrap().raw, 0);
        assert_eq!(parse_throttled("zz"), None);
    }

    #[test]
    fn default_route_picks_lowest_metric() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     wwan0\t00000000\t0100A8C0\t0003\t0\t0\t700\t00000000\n\
                     wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\n\
                     wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\n";
        assert_eq!(parse_default_route(route).as_deref(), Some("wlan0"));
        assert_eq!(parse_default_route("Iface\n"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = parse_proc_stat(&s);
            let _ = parse_meminfo(&s);
            let _ = parse_uptime(&s);
            let _ = parse_millidegrees(&s);
            let _ = parse_throttled(&s);
            let _ = parse_default_route(&s);
        }

        #[test]
        fn cpu_percent_is_a_percentage(u in 0u64..1<<40, i in 0u64..1<<40, du in 0u64..1<<20, di in 0u64..1<<20) {
            let a = CpuTimes { total: u + i, idle: i };
            let b = CpuTimes { total: u + i + du + di, idle: i + di };
            if let Some(p) = cpu_percent(a, b) {
                prop_assert!((0.0..=100.0).contains(&p));
            }
        }
    }
}
