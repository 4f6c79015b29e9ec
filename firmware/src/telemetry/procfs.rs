//! Reads a process's CPU time and memory from Linux procfs, as proc(5)
//! documents `/proc/<pid>/stat` and `/proc/<pid>/status`.
//!
//! The parsers are pure functions over the file text (tested with golden
//! samples and arbitrary input); [`sample`] does the reading. The camera
//! reports its own process this way in telemetry ([`super::system`]), and
//! `kodama-bench` measures the processes it runs with the same functions.

use std::path::PathBuf;
use std::time::Duration;

/// Why a procfs file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The file could not be read (the process may have exited).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `/proc/<pid>/stat` lacks the closing parenthesis of the command name.
    #[error("stat: no ')' ending the command name")]
    NoCommEnd,
    /// A numeric field of `/proc/<pid>/stat` is missing or not a number.
    #[error("stat: field {field} ({name}) is missing or not a number")]
    StatField {
        /// 1-based field number as proc(5) counts them.
        field: usize,
        /// Its name in proc(5).
        name: &'static str,
    },
    /// A `Vm…` line of `/proc/<pid>/status` is missing or malformed.
    #[error("status: {key} is missing or not '<n> kB'")]
    StatusField {
        /// The key, e.g. `VmRSS`.
        key: &'static str,
    },
}

/// CPU time a process has used, in clock ticks (`sysconf(_SC_CLK_TCK)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// Field 14, `utime`: user mode, all threads.
    pub user: u64,
    /// Field 15, `stime`: kernel mode, all threads.
    pub system: u64,
}

impl CpuTicks {
    /// User plus system ticks.
    pub fn total(self) -> u64 {
        self.user.saturating_add(self.system)
    }
}

/// Resident memory of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `VmRSS`: resident set size now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: peak resident set size, KiB.
    pub hwm_kib: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is parenthesised
/// and may itself contain spaces and parentheses, so fields are counted
/// from the *last* `)`.
pub fn parse_stat(text: &str) -> Result<CpuTicks, ProcError> {
    let end = text.rfind(')').ok_or(ProcError::NoCommEnd)?;
    // After ")" come fields 3 (state), 4 (ppid), …: field n is index n - 3.
    let fields: Vec<&str> = text[end + 1..].split_ascii_whitespace().collect();
    let field = |n: usize, name: &'static str| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(ProcError::StatField { field: n, name })
    };
    Ok(CpuTicks {
        user: field(14, "utime")?,
        system: field(15, "stime")?,
    })
}

/// Parses the `VmRSS` and `VmHWM` lines of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Result<Memory, ProcError> {
    let kib = |key: &'static str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or(ProcError::StatusField { key })
    };
    Ok(Memory {
        rss_kib: kib("VmRSS")?,
        hwm_kib: kib("VmHWM")?,
    })
}

/// Clock ticks per second for [`CpuTicks`]. Linux fixes USER_HZ at 100 on
/// every architecture, which is the fallback if `sysconf` fails.
pub fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Converts ticks to time.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64)
}

/// Which process to read: `None` is this one (`/proc/self`).
fn proc_file(pid: Option<u32>, name: &str) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/{name}")),
        None => PathBuf::from(format!("/proc/self/{name}")),
    }
}

fn read(path: PathBuf) -> Result<String, ProcError> {
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// Reads the CPU ticks of `pid` (or of this process).
pub fn cpu(pid: Option<u32>) -> Result<CpuTicks, ProcError> {
    parse_stat(&read(proc_file(pid, "stat"))?)
}

/// Reads the resident memory of `pid` (or of this process).
pub fn memory(pid: Option<u32>) -> Result<Memory, ProcError> {
    parse_status(&read(proc_file(pid, "status"))?)
}

/// CPU and memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// CPU used so far.
    pub cpu: CpuTicks,
    /// Resident memory now and at peak.
    pub memory: Memory,
}

/// Reads both files of `pid` (or of this process).
pub fn sample(pid: Option<u32>) -> Result<Sample, ProcError> {
    Ok(Sample {
        cpu: cpu(pid)?,
        memory: memory(pid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A real line from Debian 12 (kernel 6.1), with a command name that
    // contains both a space and a parenthesis to exercise the rfind.
    const STAT: &str = "4242 (kodama (srv) x) S 1 4242 4242 0 -1 4194560 2411 0 0 0 \
                        731 129 0 0 20 0 9 0 1234567 812339200 5678 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0\n";

    const STATUS: &str = "Name:\tkodama-server\nUmask:\t0022\nState:\tS (sleeping)\n\
                          VmPeak:\t  845212 kB\nVmSize:\t  793300 kB\nVmHWM:\t   24576 kB\n\
                          VmRSS:\t   22708 kB\nThreads:\t9\n";

    #[test]
    fn golden_stat() {
        assert_eq!(
            parse_stat(STAT).expect("valid"),
            CpuTicks {
                user: 731,
                system: 129
            }
        );
    }

    #[test]
    fn golden_status() {
        assert_eq!(
            parse_status(STATUS).expect("valid"),
            Memory {
                rss_kib: 22708,
                hwm_kib: 24576
            }
        );
    }

    #[test]
    fn missing_fields_are_named() {
        assert!(matches!(
            parse_stat("12 (x) S 1 2"),
            Err(ProcError::StatField { field: 14, .. })
        ));
        assert!(matches!(parse_stat("12 x S"), Err(ProcError::NoCommEnd)));
        let no_hwm = STATUS.replace("VmHWM", "VmXXX");
        assert!(matches!(
            parse_status(&no_hwm),
            Err(ProcError::StatusField { key: "VmHWM" })
        ));
    }

    #[test]
    fn this_process_is_readable() {
        let s = sample(None).expect("procfs of self");
        assert!(s.memory.rss_kib > 0);
        assert!(s.memory.hwm_kib >= s.memory.rss_kib);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse_stat(&text);
            let _ = parse_status(&text);
        }

        #[test]
        fn stat_round_trips(comm in "[ -~]{0,16}", user in any::<u64>(), system in any::<u64>()) {
            let line = format!("1 ({comm}) R 0 1 1 0 -1 0 0 0 0 0 {user} {system} 0 0 20 0 1 0 5 0 0");
            prop_assert_eq!(parse_stat(&line).expect("valid"), CpuTicks { user, system });
        }
    }
}
