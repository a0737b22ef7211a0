//! What a topology may use of the machine it runs on.
//!
//! A topology run from the command line (`tidemark topology run`) is the user's own
//! program: its file paths are the user's paths. A topology deployed to a server comes
//! over the network, so the server confines it ([`Sandbox`]):
//!
//! - `file` sources and sinks and an `http` sink's `ca_file` name paths relative to the
//!   topology files directory (`--topology-files-dir`). Absolute paths and `..` are
//!   refused, the path is resolved through any symbolic links and must stay inside that
//!   directory, and never inside the data directory's own parts (catalog, logs, tables,
//!   topics, topologies). A source must be a regular file (not a device or a pipe).
//! - `http` sinks post only to public addresses unless `--http-sink-allow` lists the host,
//!   the host and port, or an address range: loopback, private, link-local and other
//!   non-public addresses are refused at deploy time for literal addresses and for what a
//!   name resolves to, and again at every connection (a name that later resolves
//!   elsewhere), and redirects are not followed.
//!
//! Every topology has a maximum parallelism per node (`--max-topology-parallelism`).
//!
//! Flow: `load_with` parses the YAML, [`Policy::apply`] rewrites confined paths to the
//! resolved absolute ones (so validation and the runtime open exactly what was checked)
//! and reports what is refused, then validation runs.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::spec::{Kind, Named, Problem, Spec};

/// Parts of a data directory that a topology may never read or write.
const DATA_DIR_PARTS: &[&str] = &["catalog", "log", "tables", "topics", "topologies", "tokens"];

/// The default maximum parallelism: a few tasks per core.
pub fn default_max_parallelism() -> usize {
    4 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What topologies loaded under it may use.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_parallelism: usize,
    /// `None`: the command line's own topology, with local paths and any address.
    pub sandbox: Option<Sandbox>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_parallelism: default_max_parallelism(),
            sandbox: None,
        }
    }
}

/// The confinement of a server's topologies.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Canonical: file paths resolve under it.
    files_dir: PathBuf,
    /// Canonical: its own parts are off limits even if `files_dir` contains them.
    data_dir: PathBuf,
    http_allow: Arc<HostAllow>,
}

impl Sandbox {
    /// Creates `files_dir` if needed.
    ///
    /// # Errors
    /// The directory cannot be created or resolved, or an allow-list entry is malformed.
    pub fn new(files_dir: &Path, data_dir: &Path, http_allow: &[String]) -> Result<Self, String> {
        std::fs::create_dir_all(files_dir)
            .map_err(|e| format!("cannot create {}: {e}", files_dir.display()))?;
        let canon = |p: &Path| {
            std::fs::canonicalize(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()))
        };
        Ok(Self {
            files_dir: canon(files_dir)?,
            data_dir: canon(data_dir)?,
            http_allow: Arc::new(HostAllow::parse(http_allow)?),
        })
    }

    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// Resolves a topology's file path inside the files directory.
    fn resolve(&self, raw: &str, must_exist: bool) -> Result<PathBuf, String> {
        let rel = Path::new(raw);
        let escapes = rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if raw.is_empty() || escapes {
            return Err(format!(
                "{raw:?}: a deployed topology's file paths are relative to the topology files directory (--topology-files-dir), without \"..\""
            ));
        }
        let joined = self.files_dir.join(rel);
        // Resolve the longest part that exists (symbolic links included); the rest is
        // made of plain names.
        let mut existing = joined.clone();
        let mut rest = Vec::new();
        loop {
            match std::fs::symlink_metadata(&existing) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match existing.file_name() {
                        Some(name) => rest.push(name.to_os_string()),
                        None => break,
                    }
                    if !existing.pop() {
                        break;
                    }
                }
                Err(e) => return Err(format!("{raw:?}: {e}")),
            }
        }
        let outside =
            || format!("{raw:?} resolves outside the topology files directory (a symbolic link?)");
        let canon = match std::fs::canonicalize(&existing) {
            Ok(p) => p,
            // A link pointing nowhere: do not follow it anywhere.
            Err(_) => return Err(outside()),
        };
        if !canon.starts_with(&self.files_dir) {
            return Err(outside());
        }
        if DATA_DIR_PARTS
            .iter()
            .any(|part| canon.starts_with(self.data_dir.join(part)))
        {
            return Err(format!("{raw:?} is inside the server's own data"));
        }
        let resolved = rest.iter().rev().fold(canon, |p, name| p.join(name));
        if must_exist {
            match std::fs::metadata(&resolved) {
                Ok(m) if m.is_file() => {}
                Ok(_) => return Err(format!("{raw:?} is not a regular file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!(
                        "{raw:?} does not exist in the topology files directory"
                    ));
                }
                Err(e) => return Err(format!("{raw:?}: {e}")),
            }
        }
        Ok(resolved)
    }
}

impl Policy {
    /// Checks `spec` against the policy, rewriting confined file paths to what they
    /// resolve to. Returns what is refused, each at its node.
    pub async fn apply(&self, spec: &mut Spec) -> Vec<Problem> {
        let mut problems = Vec::new();
        spec.confined = self.sandbox.is_some();
        for n in &mut spec.nodes {
            let node_path = n.path();
            let node_loc = n.loc;
            let mut refuse = |loc, message: String| {
                problems.push(Problem {
                    loc,
                    path: node_path.clone(),
                    message,
                });
            };
            if n.parallelism > self.max_parallelism {
                refuse(
                    n.parallelism_loc.unwrap_or(n.loc),
                    format!(
                        "parallelism {} is above this server's limit of {} (--max-topology-parallelism)",
                        n.parallelism, self.max_parallelism
                    ),
                );
            }
            let Some(sandbox) = &self.sandbox else {
                continue;
            };
            match &mut n.kind {
                Kind::FileSource { path, .. } => match sandbox.resolve(path, true) {
                    Ok(p) => *path = p.to_string_lossy().into_owned(),
                    Err(e) => refuse(node_loc, e),
                },
                Kind::FileSink { path, .. } => match sandbox.resolve(path, false) {
                    Ok(p) => *path = p.to_string_lossy().into_owned(),
                    Err(e) => refuse(node_loc, e),
                },
                Kind::Http {
                    url,
                    ca_file,
                    allow,
                    ..
                } => {
                    if let Some(Named { name, loc }) = ca_file {
                        match sandbox.resolve(name, true) {
                            Ok(p) => *name = p.to_string_lossy().into_owned(),
                            Err(e) => refuse(*loc, e),
                        }
                    }
                    if let Err(e) = sandbox.http_allow.check_url(url).await {
                        refuse(node_loc, e);
                    }
                    *allow = Some(Arc::clone(&sandbox.http_allow));
                }
                _ => {}
            }
        }
        problems
    }
}

/// The hosts and address ranges an `http` sink of a deployed topology may reach beyond
/// public addresses (`--http-sink-allow`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HostAllow {
    /// `host` or `host:port`, lower case.
    hosts: Vec<String>,
    ranges: Vec<(IpAddr, u8)>,
    anything: bool,
}

impl HostAllow {
    /// Entries: `*`, a host name or address, `host:port`, or a range `addr/prefix`.
    ///
    /// # Errors
    /// A malformed range.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allow = HostAllow::default();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if e == "*" {
                allow.anything = true;
            } else if let Some((addr, bits)) = e.split_once('/') {
                let bad = || {
                    format!("--http-sink-allow {e:?}: expected an address range like 10.0.0.0/8")
                };
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let bits: u8 = bits.parse().map_err(|_| bad())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if bits > max {
                    return Err(bad());
                }
                allow.ranges.push((addr, bits));
            } else {
                allow
                    .hosts
                    .push(e.trim_matches(['[', ']']).to_ascii_lowercase());
            }
        }
        Ok(allow)
    }

    fn host_listed(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.anything
            || self
                .hosts
                .iter()
                .any(|h| *h == host || *h == format!("{host}:{port}"))
    }

    /// Whether an address may be reached (public, or in a listed range or host).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.anything
            || is_public(ip)
            || self.hosts.iter().any(|h| h.parse::<IpAddr>() == Ok(ip))
            || self
                .ranges
                .iter()
                .any(|(net, bits)| in_range(ip, *net, *bits))
    }

    /// Checks a sink's URL at deploy time: a listed host passes; otherwise every address
    /// it names or resolves to must be allowed.
    async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
        let Some(host) = parsed.host_str() else {
            return Err(format!("url {url:?} has no host"));
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        if self.host_listed(host, port) {
            return Ok(());
        }
        let refused = |ip: IpAddr| {
            format!(
                "url {url:?} reaches {ip}, which is not a public address: list the host or a range in --http-sink-allow to allow it"
            )
        };
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return if self.address_allowed(ip) {
                Ok(())
            } else {
                Err(refused(ip))
            };
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("url {url:?}: cannot resolve {host}: {e}"))?
            .collect();
        match addrs.iter().find(|a| !self.address_allowed(a.ip())) {
            Some(a) => Err(refused(a.ip())),
            None => Ok(()),
        }
    }
}

/// Resolves names for a confined `http` sink, keeping only allowed addresses: a name
/// that resolved to a public address at deploy time cannot later lead to a private one.
#[derive(Debug)]
pub(crate) struct GuardedResolver(pub(crate) Arc<HostAllow>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let listed = allow.host_listed(&host, 0) || allow.hosts.contains(&host);
            let kept: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| listed || allow.address_allowed(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves to no address this server's http sinks may reach (--http-sink-allow)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, broadcast or unspecified.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        let allow = HostAllow::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allow.address_allowed(ip(private)), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(allow.address_allowed(ip(public)), "{public}");
        }
    }

    #[test]
    fn listed_hosts_and_ranges_pass() {
        let allow = HostAllow::parse(&[
            "127.0.0.1".into(),
            "10.0.0.0/8".into(),
            "hooks.internal:8443".into(),
        ])
        .unwrap();
        assert!(allow.address_allowed(ip("127.0.0.1")));
        assert!(!allow.address_allowed(ip("127.0.0.2")));
        assert!(allow.address_allowed(ip("10.200.1.1")));
        assert!(!allow.address_allowed(ip("192.168.0.1")));
        assert!(allow.host_listed("hooks.internal", 8443));
        assert!(!allow.host_listed("hooks.internal", 80));
        assert!(HostAllow::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn confined_paths_stay_in_the_files_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let files = data.join("files");
        let sandbox = Sandbox::new(&files, &data, &[]).unwrap();
        std::fs::write(files.join("in.csv"), "a\n1\n").unwrap();
        assert!(sandbox.resolve("in.csv", true).is_ok());
        assert!(sandbox.resolve("out/new.csv", false).is_ok());
        for bad in ["/etc/passwd", "../catalog/x", "a/../../x", ""] {
            assert!(sandbox.resolve(bad, false).is_err(), "{bad}");
        }
        assert!(sandbox.resolve("missing.csv", true).is_err());
        #[cfg(unix)]
        {
            std::fs::create_dir_all(data.join("catalog")).unwrap();
            std::os::unix::fs::symlink("/etc", files.join("etc")).unwrap();
            std::os::unix::fs::symlink(data.join("catalog"), files.join("cat")).unwrap();
            assert!(sandbox.resolve("etc/passwd", true).is_err());
            assert!(sandbox.resolve("cat/new", false).is_err());
        }
    }
}
