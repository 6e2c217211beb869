//! CPU time of processes and their threads from `/proc` (Linux), so that an
//! overload run can say where the two cores went: the collector, the load
//! generator (this test process) and the collector's threads by name.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (name, user + system CPU seconds) from one `stat` file's text. The name
/// is in parentheses and may itself hold spaces or parentheses, so fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3) ... utime is field 14, stime field 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / ticks_per_second()))
}

/// User + system CPU seconds of process `pid` (all its threads, live and
/// exited); `None` once it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, s)| s)
}

/// CPU seconds of this process (the test and its load generator).
pub fn own_seconds() -> f64 {
    process_seconds(std::process::id()).unwrap_or(0.0)
}

/// CPU seconds of each live thread of `pid`, by thread id, with its name.
pub fn thread_seconds(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some(s) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(tid, s);
        }
    }
    out
}

/// A snapshot of the CPU used so far by the collector, its threads and this process.
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    pub collector: f64,
    pub own: f64,
    pub threads: BTreeMap<u32, (String, f64)>,
}

impl CpuSnapshot {
    /// Reads the collector `pid` and this process now.
    pub fn take(pid: u32) -> CpuSnapshot {
        CpuSnapshot {
            collector: process_seconds(pid).unwrap_or(0.0),
            own: own_seconds(),
            threads: thread_seconds(pid),
        }
    }

    /// Cores used between `self` and `later` over `secs` seconds: the
    /// collector, this process, and the collector's busiest threads (name,
    /// thread id, cores), at most `top` of them, busiest first.
    pub fn cores_until(
        &self,
        later: &CpuSnapshot,
        secs: f64,
        top: usize,
    ) -> (f64, f64, Vec<(String, u32, f64)>) {
        let secs = secs.max(1e-9);
        let mut threads: Vec<(String, u32, f64)> = later
            .threads
            .iter()
            .map(|(tid, (name, s))| {
                let before = self.threads.get(tid).map_or(0.0, |t| t.1);
                (name.clone(), *tid, (s - before) / secs)
            })
            .collect();
        threads.sort_by(|a, b| b.2.total_cmp(&a.2));
        threads.truncate(top);
        (
            (later.collector - self.collector) / secs,
            (later.own - self.own) / secs,
            threads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        let (name, secs) = parse_stat(line).unwrap();
        assert_eq!(name, "a (b) c");
        assert!((secs - 300.0 / ticks_per_second()).abs() < 1e-9);
        assert!(parse_stat("garbage").is_none());
    }
}
