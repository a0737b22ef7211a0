//! `process_*` metrics as Prometheus client libraries export them (CPU seconds, resident
//! and virtual memory, open and maximum file descriptors, start time), read from
//! `/proc/self` at each scrape. On a system without `/proc` the family is left out rather
//! than reported as zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux
/// architecture (the kernel converts to it for user space).
const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector;

/// What one scrape read.
#[derive(Debug, Default)]
struct Sample {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

fn read() -> Sample {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map(|k| k.saturating_mul(1024))
    };
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<i64>().ok())
        });
    Sample {
        cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) / USER_HZ),
        start_time_seconds: field(22).zip(boot_time).map(|(t, b)| b + t / USER_HZ),
        resident_bytes: kib("VmRSS:"),
        virtual_bytes: kib("VmSize:"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| crate::metrics::gauge_value(d.count())),
        max_fds,
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(Unit::Seconds),
            s.start_time_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(Unit::Bytes),
            s.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(Unit::Bytes),
            s.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            s.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            None,
            s.max_fds,
        )?;
        Ok(())
    }
}

/// Encodes a gauge when its value could be read.
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: Option<N>,
) -> Result<(), std::fmt::Error> {
    let Some(v) = value else {
        return Ok(());
    };
    let g = ConstGauge::new(v);
    let m = encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
    g.encode(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_read() {
        let s = read();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0));
        assert!(s.resident_bytes.is_some_and(|r| r > 0));
        assert!(s.open_fds.is_some_and(|f| f > 0));
        assert!(s.max_fds.is_some_and(|f| f > 0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
    }
}
