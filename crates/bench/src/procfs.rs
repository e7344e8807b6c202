//! What `/proc` says about the machine and about a process (Linux only; elsewhere every
//! figure is `None`).

use serde::Serialize;

/// CPU time of a process so far, in microseconds (user + system).
pub fn cpu_micros(pid: u32) -> Option<u64> {
    stat_cpu_micros(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// utime + stime of a `/proc/…/stat` file (a process's or a thread's), in microseconds.
fn stat_cpu_micros(path: &std::path::Path) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// CPU time so far of this process's threads whose name starts with `prefix`, in
/// microseconds (user + system); `None` when `/proc/self/task` cannot be read or no thread
/// has that name.
pub fn threads_cpu_micros(prefix: &str) -> Option<u64> {
    tasks_cpu_micros("/proc/self/task", prefix)
}

/// [`threads_cpu_micros`] of another process (the server's SQLite writer thread).
pub fn process_threads_cpu_micros(pid: u32, prefix: &str) -> Option<u64> {
    tasks_cpu_micros(&format!("/proc/{pid}/task"), prefix)
}

fn tasks_cpu_micros(dir: &str, prefix: &str) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let path = task.path();
        let named = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with(prefix));
        if !named {
            continue;
        }
        if let Some(us) = stat_cpu_micros(&path.join("stat")) {
            total += us;
            any = true;
        }
    }
    any.then_some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`). It is 100 on every Linux we know of, which
/// is the fallback when `getconf` is missing; we do not link libc for one `sysconf` call.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Resets the process's peak RSS to its current RSS (writing 5 to `clear_refs`, Linux
/// 4.0+), so each scenario reports its own peak. Returns whether it worked.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy CPU time of the whole machine in clock ticks, and total ticks, from `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle (4th) + iowait (5th) are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub mem_gb: Option<f64>,
    /// 1-minute load average when the run started: how busy the machine already was.
    pub loadavg_1m_at_start: Option<f64>,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    let mem_gb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kb: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some((kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
    });
    let loadavg_1m_at_start = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel,
        mem_gb,
        loadavg_1m_at_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_micros(pid).is_some());
        assert!(peak_rss_mb(pid).unwrap() > 0.0);
        let m = machine();
        assert!(m.cores >= 1);
        assert!(m.kernel.is_some());
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
    }
}
