//! Deterministic TSBS-style `cpu` data (the `cpu-only` use case: 10 tags per host, 10 float
//! fields, one row per host every 10 s), as line protocol. Used by the benches and tests;
//! the same generator will feed `tidemark load`.

use tidemark_storage::batch::FieldValue;

use super::write_line;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
const OS: [&str; 3] = ["Ubuntu16.04LTS", "Ubuntu15.10", "Ubuntu16.10"];
const ARCH: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVS: [&str; 3] = ["production", "staging", "test"];
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

/// A small, fast, seedable PRNG (xorshift64*): same seed, same data, on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Appends `rows_per_host` rows for each of `hosts` hosts, starting at `start_ns`, 10 s apart,
/// time-major (all hosts at t0, then all at t1, ...), as TSBS orders them.
pub fn cpu_lines(out: &mut String, hosts: usize, rows_per_host: usize, start_ns: i64, seed: u64) {
    let mut rng = Rng::new(seed);
    let host_tags: Vec<[String; 10]> = (0..hosts)
        .map(|h| {
            let region = REGIONS[h % REGIONS.len()];
            [
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
            ]
        })
        .collect();
    const TAG_KEYS: [&str; 10] = [
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
    for r in 0..rows_per_host {
        let ts = start_ns + r as i64 * 10_000_000_000;
        for tags in &host_tags {
            let tag_pairs: Vec<(&str, &str)> = TAG_KEYS
                .iter()
                .zip(tags.iter())
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            let fields: Vec<(&str, FieldValue<'_>)> = CPU_FIELDS
                .iter()
                .map(|f| {
                    (
                        *f,
                        FieldValue::Float((rng.next_f64() * 10_000.0).round() / 100.0),
                    )
                })
                .collect();
            write_line(out, "cpu", &tag_pairs, &fields, Some(ts));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_deterministic_and_parses() {
        let mut a = String::new();
        let mut b = String::new();
        super::cpu_lines(&mut a, 5, 3, 0, 42);
        super::cpu_lines(&mut b, 5, 3, 0, 42);
        assert_eq!(a, b);
        assert_eq!(a.lines().count(), 15);
        let mut p = super::super::LineParser::new(&a);
        let mut n = 0;
        while let Some(l) = p.next() {
            let line = l.result.unwrap();
            assert_eq!(line.tags.len(), 10);
            assert_eq!(line.fields.len(), 10);
            n += 1;
        }
        assert_eq!(n, 15);
    }
}
