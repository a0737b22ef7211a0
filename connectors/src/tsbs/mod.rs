//! Deterministic TSBS-style data and queries, for `tidemark load`, the benches and the tests.
//!
//! Two use cases, as in the Time Series Benchmark Suite:
//! - `cpu-only`: one `cpu` row per host per step, 10 tags and 10 float fields;
//! - `devops`: per host per step one row in each of `cpu`, `diskio`, `disk`, `kernel`, `mem`
//!   and `net`, 10 host tags plus a measurement's own tags, integer and float fields.
//!
//! Rows are numbered time-major (step, then host, then measurement), and every value of row
//! `i` is drawn from a generator seeded by `(seed, i)`: any range of rows can be produced on
//! its own, so K concurrent senders write exactly the data one sender would.

pub mod queries;

use std::ops::Range;

use crate::line_protocol::{escape_key, escape_measurement};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
const OS: [&str; 3] = ["Ubuntu16.04LTS", "Ubuntu15.10", "Ubuntu16.10"];
const ARCH: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVS: [&str; 3] = ["production", "staging", "test"];
const HOST_TAG_KEYS: [&str; 10] = [
    "hostname",
    "region",
    "datacenter",
    "rack",
    "os",
    "arch",
    "team",
    "service",
    "service_version",
    "service_environment",
];

pub const CPU_FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

/// Default step between two rows of one host, as in TSBS.
pub const DEFAULT_INTERVAL_NS: i64 = 10_000_000_000;

/// A small, fast, seedable PRNG (xorshift64*): same seed, same data, on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A generator for item `index` of a stream seeded by `seed`: splitmix64 of both, so
    /// that neighbouring indexes get unrelated sequences.
    pub fn for_item(seed: u64, index: u64) -> Self {
        let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self::new(z ^ (z >> 31))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which TSBS schema to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    CpuOnly,
    Devops,
}

impl UseCase {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cpu-only" => Some(Self::CpuOnly),
            "devops" => Some(Self::Devops),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::CpuOnly => "cpu-only",
            Self::Devops => "devops",
        }
    }

    fn measurements(self) -> &'static [Measurement] {
        match self {
            Self::CpuOnly => &MEASUREMENTS[..1],
            Self::Devops => &MEASUREMENTS,
        }
    }
}

/// How one field's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Value {
    /// A float in [0, 100] with two decimals.
    Percent,
    /// An integer in `0..n`.
    Int(u64),
}

#[derive(Debug)]
struct Measurement {
    name: &'static str,
    /// Tags of the measurement besides the host's, with the values they cycle through.
    tags: &'static [(&'static str, &'static [&'static str])],
    fields: &'static [(&'static str, Value)],
}

const fn pct(name: &'static str) -> (&'static str, Value) {
    (name, Value::Percent)
}

const fn int(name: &'static str, n: u64) -> (&'static str, Value) {
    (name, Value::Int(n))
}

const MEASUREMENTS: [Measurement; 6] = [
    Measurement {
        name: "cpu",
        tags: &[],
        fields: &[
            pct(CPU_FIELDS[0]),
            pct(CPU_FIELDS[1]),
            pct(CPU_FIELDS[2]),
            pct(CPU_FIELDS[3]),
            pct(CPU_FIELDS[4]),
            pct(CPU_FIELDS[5]),
            pct(CPU_FIELDS[6]),
            pct(CPU_FIELDS[7]),
            pct(CPU_FIELDS[8]),
            pct(CPU_FIELDS[9]),
        ],
    },
    Measurement {
        name: "diskio",
        tags: &[("serial", &["843-171-2", "513-254-9", "120-836-5"])],
        fields: &[
            int("reads", 1 << 32),
            int("writes", 1 << 32),
            int("read_bytes", 1 << 40),
            int("write_bytes", 1 << 40),
            int("read_time", 1 << 32),
            int("write_time", 1 << 32),
            int("io_time", 1 << 32),
        ],
    },
    Measurement {
        name: "disk",
        tags: &[
            ("path", &["/", "/boot", "/var"]),
            ("fstype", &["ext4", "xfs"]),
        ],
        fields: &[
            int("total", 1 << 40),
            int("free", 1 << 40),
            int("used", 1 << 40),
            pct("used_percent"),
            int("inodes_total", 1 << 32),
            int("inodes_free", 1 << 32),
            int("inodes_used", 1 << 32),
        ],
    },
    Measurement {
        name: "kernel",
        tags: &[],
        fields: &[
            int("boot_time", 1 << 31),
            int("interrupts", 1 << 40),
            int("context_switches", 1 << 40),
            int("processes_forked", 1 << 32),
            int("disk_pages_in", 1 << 40),
            int("disk_pages_out", 1 << 40),
        ],
    },
    Measurement {
        name: "mem",
        tags: &[],
        fields: &[
            int("total", 1 << 36),
            int("available", 1 << 36),
            int("used", 1 << 36),
            int("free", 1 << 36),
            int("cached", 1 << 36),
            int("buffered", 1 << 36),
            pct("used_percent"),
            pct("available_percent"),
            pct("buffered_percent"),
        ],
    },
    Measurement {
        name: "net",
        tags: &[("interface", &["eth0", "eth1", "eth2"])],
        fields: &[
            int("bytes_sent", 1 << 40),
            int("bytes_recv", 1 << 40),
            int("packets_sent", 1 << 32),
            int("packets_recv", 1 << 32),
            int("err_in", 1000),
            int("err_out", 1000),
            int("drop_in", 1000),
            int("drop_out", 1000),
        ],
    },
];

/// The value of each host tag of host `h`, as TSBS spreads them.
pub fn host_tags(h: usize) -> [(&'static str, String); 10] {
    let region = REGIONS[h % REGIONS.len()];
    let values = [
        format!("host_{h}"),
        region.to_string(),
        format!("{region}{}", (h / 3) % 4),
        format!("{}", h % 100),
        OS[h % OS.len()].to_string(),
        ARCH[h % ARCH.len()].to_string(),
        TEAMS[h % TEAMS.len()].to_string(),
        format!("{}", h % 20),
        format!("{}", h % 2),
        ENVS[h % ENVS.len()].to_string(),
    ];
    let mut i = 0;
    values.map(|v| {
        let k = HOST_TAG_KEYS[i];
        i += 1;
        (k, v)
    })
}

/// Produces any range of rows of one data set as line protocol.
#[derive(Debug, Clone)]
pub struct Generator {
    use_case: UseCase,
    hosts: usize,
    start_ns: i64,
    interval_ns: i64,
    seed: u64,
    /// `prefixes[host * measurements + m]`: `measurement,tag=v,...,` up to the space.
    prefixes: Vec<Vec<u8>>,
}

impl Generator {
    pub fn new(
        use_case: UseCase,
        hosts: usize,
        start_ns: i64,
        interval_ns: i64,
        seed: u64,
    ) -> Self {
        let measurements = use_case.measurements();
        let mut prefixes = Vec::with_capacity(hosts * measurements.len());
        for h in 0..hosts {
            let tags = host_tags(h);
            for m in measurements {
                let mut s = String::new();
                escape_measurement(&mut s, m.name);
                for (k, v) in &tags {
                    push_tag(&mut s, k, v);
                }
                for (k, values) in m.tags {
                    push_tag(&mut s, k, values[h % values.len()]);
                }
                s.push(' ');
                prefixes.push(s.into_bytes());
            }
        }
        Self {
            use_case,
            hosts,
            start_ns,
            interval_ns,
            seed,
            prefixes,
        }
    }

    pub fn use_case(&self) -> UseCase {
        self.use_case
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    pub fn start_ns(&self) -> i64 {
        self.start_ns
    }

    pub fn interval_ns(&self) -> i64 {
        self.interval_ns
    }

    /// Rows in one time step (every host, every measurement).
    pub fn rows_per_step(&self) -> u64 {
        self.prefixes.len() as u64
    }

    /// Timestamp of row `i`.
    pub fn time_of(&self, row: u64) -> i64 {
        let step = row / self.rows_per_step().max(1);
        self.start_ns
            .saturating_add((step as i64).saturating_mul(self.interval_ns))
    }

    /// Appends rows `range` as line protocol (one `\n` after each) and returns how many
    /// field values they carry.
    pub fn write_rows(&self, out: &mut Vec<u8>, range: Range<u64>) -> u64 {
        let measurements = self.use_case.measurements();
        let per_step = self.rows_per_step().max(1);
        let mut values = 0;
        for row in range {
            let slot = (row % per_step) as usize;
            let m = &measurements[slot % measurements.len()];
            out.extend_from_slice(&self.prefixes[slot]);
            let mut rng = Rng::for_item(self.seed, row);
            for (i, (name, kind)) in m.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                match kind {
                    Value::Percent => {
                        let cents = rng.below(10_001);
                        push_u64(out, cents / 100);
                        out.push(b'.');
                        let frac = cents % 100;
                        out.push(b'0' + (frac / 10) as u8);
                        out.push(b'0' + (frac % 10) as u8);
                    }
                    Value::Int(n) => {
                        push_u64(out, rng.below(*n));
                        out.push(b'i');
                    }
                }
            }
            values += m.fields.len() as u64;
            out.push(b' ');
            let t = self.time_of(row);
            if t < 0 {
                out.push(b'-');
            }
            push_u64(out, t.unsigned_abs());
            out.push(b'\n');
        }
        values
    }
}

fn push_tag(s: &mut String, key: &str, value: &str) {
    s.push(',');
    escape_key(s, key);
    s.push('=');
    escape_key(s, value);
}

/// Decimal digits of `v`, without going through `fmt`.
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `rows_per_host` `cpu` rows for each of `hosts` hosts, starting at `start_ns`,
/// 10 s apart, time-major, as TSBS orders them. Shorthand of [`Generator`] for benches.
pub fn cpu_lines(out: &mut String, hosts: usize, rows_per_host: usize, start_ns: i64, seed: u64) {
    let g = Generator::new(UseCase::CpuOnly, hosts, start_ns, DEFAULT_INTERVAL_NS, seed);
    let mut bytes = Vec::new();
    g.write_rows(&mut bytes, 0..(hosts * rows_per_host) as u64);
    // The generator writes ASCII only.
    out.push_str(&String::from_utf8_lossy(&bytes));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::LineParser;

    fn parse_all(data: &[u8]) -> Vec<(String, usize, usize, i64)> {
        let text = std::str::from_utf8(data).unwrap();
        let mut p = LineParser::new(text);
        let mut out = Vec::new();
        while let Some(l) = p.next() {
            let line = l.result.unwrap();
            out.push((
                line.measurement.to_string(),
                line.tags.len(),
                line.fields.len(),
                line.timestamp.unwrap(),
            ));
        }
        out
    }

    #[test]
    fn cpu_lines_are_deterministic_and_parse() {
        let mut a = String::new();
        let mut b = String::new();
        cpu_lines(&mut a, 5, 3, 0, 42);
        cpu_lines(&mut b, 5, 3, 0, 42);
        assert_eq!(a, b);
        let rows = parse_all(a.as_bytes());
        assert_eq!(rows.len(), 15);
        assert!(rows.iter().all(|r| r.1 == 10 && r.2 == 10));
        assert_eq!(rows[5].3, 10_000_000_000);
    }

    #[test]
    fn any_split_of_the_rows_gives_the_same_data() {
        for use_case in [UseCase::CpuOnly, UseCase::Devops] {
            let g = Generator::new(use_case, 7, 1_000, 5, 9);
            let total = g.rows_per_step() * 4;
            let mut whole = Vec::new();
            let values = g.write_rows(&mut whole, 0..total);
            let mut parts = Vec::new();
            let mut split_values = 0;
            let mut at = 0;
            for len in [1, 5, 13, 2] {
                let end = (at + len * g.rows_per_step() / 3).min(total);
                split_values += g.write_rows(&mut parts, at..end);
                at = end;
            }
            split_values += g.write_rows(&mut parts, at..total);
            assert_eq!(whole, parts);
            assert_eq!(values, split_values);
            let rows = parse_all(&whole);
            assert_eq!(rows.len() as u64, total);
            assert_eq!(rows.iter().map(|r| r.2 as u64).sum::<u64>(), values);
        }
    }

    #[test]
    fn devops_has_every_measurement_with_its_own_tags() {
        let g = Generator::new(UseCase::Devops, 2, 0, DEFAULT_INTERVAL_NS, 1);
        let mut data = Vec::new();
        g.write_rows(&mut data, 0..g.rows_per_step());
        let rows = parse_all(&data);
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            ["cpu", "diskio", "disk", "kernel", "mem", "net"].repeat(2)
        );
        assert_eq!(rows[2].1, 12, "disk: host tags plus path and fstype");
        assert!(rows.iter().all(|r| r.3 == 0));
    }
}
