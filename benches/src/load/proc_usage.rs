//! What a process holds and has spent, read from Linux's `/proc`: the platform's memory and CPU
//! in the sweeps and load runs that are given its pid.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`, fixed at 100 by the
/// kernel's ABI on the architectures this runs on).
pub const USER_HZ: f64 = 100.0;

/// What a process holds and has spent, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// User plus system CPU time, in ticks of [`USER_HZ`].
    pub cpu_ticks: u64,
}

impl Usage {
    /// The usage of process `pid` on this host.
    ///
    /// # Errors
    /// When `/proc/<pid>` cannot be read (no such process, not Linux) or reads unexpectedly.
    pub fn of(pid: u32) -> Result<Self, String> {
        let read = |file: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .map_err(|err| format!("reading /proc/{pid}/{file} (--platform-pid): {err}"))
        };
        Self::parse(&read("status")?, &read("stat")?)
            .ok_or_else(|| format!("/proc/{pid}/status or stat does not read as expected"))
    }

    /// The usage in the text of `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn parse(status: &str, stat: &str) -> Option<Self> {
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count the fields
        // after its closing one, which starts at field 3 (state); utime and stime are 14 and 15.
        let after_name: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| after_name.get(n - 3)?.parse::<u64>().ok();
        Some(Self { rss_kib, cpu_ticks: field(14)? + field(15)? })
    }

    /// CPU seconds spent between `self` and `later`.
    pub fn cpu_seconds_until(&self, later: &Self) -> f64 {
        later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / USER_HZ
    }

    /// CPU between `self` and `later`, over `elapsed`, as percent of one core.
    pub fn cpu_percent_until(&self, later: &Self, elapsed: Duration) -> f64 {
        self.cpu_seconds_until(later) / elapsed.as_secs_f64().max(f64::EPSILON) * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_resident_memory_and_both_cpu_times() {
        let status = "Name:\tiaas-platform\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        // A command name with a space and a parenthesis, as a process may name itself.
        let stat = "4242 (iaas (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(Usage::parse(status, stat), Some(Usage { rss_kib: 51_234, cpu_ticks: 325 }));
        assert_eq!(Usage::parse("Name:\tx\n", stat), None, "no VmRSS line");
        assert_eq!(Usage::parse(status, "4242 (x) S 1"), None, "a cut stat line");
    }

    #[test]
    fn cpu_is_a_share_of_one_core_over_the_window() {
        let before = Usage { rss_kib: 0, cpu_ticks: 100 };
        let after = Usage { rss_kib: 0, cpu_ticks: 150 };
        let percent = before.cpu_percent_until(&after, Duration::from_secs(2));
        assert!((percent - 25.0).abs() < 1e-9, "0.5 s of CPU in 2 s: {percent}");
    }
}
