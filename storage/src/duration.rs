//! The one duration grammar of Tidemark: retention periods (HTTP API, CLI), `tidemark
//! load --span` and topology durations (windows, lateness, timeouts) all read it, and
//! what the CLI prints is written back in it.
//!
//! A duration is one or more `<integer><unit>` terms, summed: `30d`, `1h30m`, `500ms`,
//! `5 s`. Units: `ns`, `us` (`µs`), `ms`, `s`, `m` (`min`), `h`, `d`, `w`.

/// Nanoseconds per unit.
const UNITS: [(&str, i64); 10] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// What the grammar expects, for the callers' error messages.
pub const EXPECTED: &str =
    "a number and a unit (ns, us, ms, s, m, h, d, w), like 500ms, 30d or 1h30m";

/// A duration in nanoseconds; `None` when `s` does not follow the grammar or overflows.
pub fn parse(s: &str) -> Option<i64> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        let after = rest[digits..].trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(after.len());
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == &after[..unit_len])
            .map(|(_, scale)| *scale)?;
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = after[unit_len..].trim_start();
    }
    Some(total)
}

/// A duration in nanoseconds as the grammar writes it, largest units first: `30d`,
/// `1h30m`, `250ms`; zero is `0s`.
pub fn format(ns: u64) -> String {
    const WRITTEN: [(&str, u64); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    let mut left = ns;
    let mut out = String::new();
    for (unit, size) in WRITTEN {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        assert_eq!(parse("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse("7d"), Some(604_800_000_000_000));
        assert_eq!(parse("1w"), Some(604_800_000_000_000));
        assert_eq!(parse(" 5 s "), Some(5_000_000_000));
        assert_eq!(parse("2min"), Some(120_000_000_000));
        assert_eq!(parse("500ms"), Some(500_000_000));
        assert_eq!(parse("3µs"), Some(3_000));
        for bad in ["", "7", "3x", "h", "1h x", "99999999999999999999d", "-1s"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        assert_eq!(format(30 * 86_400_000_000_000), "30d");
        assert_eq!(format(5_400_000_000_000), "1h30m");
        assert_eq!(format(250_000_000), "250ms");
        assert_eq!(format(0), "0s");
        assert_eq!(format(86_400_000_000_001), "1d1ns");
        for ns in [1, 999, 61_000_000_000, 90_061_001_001_001] {
            assert_eq!(parse(&format(ns)), Some(ns as i64));
        }
    }
}
