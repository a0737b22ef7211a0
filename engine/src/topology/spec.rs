//! The YAML shape of a topology, read into a [`Spec`] with the line and column of every
//! part, so that each problem can be reported where it is.
//!
//! ```yaml
//! name: cpu_rollup
//! sources:
//!   cpu_in: { type: table_stream, database: metrics, table: cpu, event_time: time,
//!             watermark: { max_out_of_orderness: 5s, idle_timeout: 30s } }
//! transforms:
//!   busy:   { inputs: [cpu_in], sql: "SELECT host, usage_user, time FROM input WHERE usage_user > 50" }
//!   per_1m: { inputs: [busy], type: window, key_by: [host], window: { tumbling: 1m },
//!             aggregates: { avg_user: avg(usage_user) }, allowed_lateness: 30s }
//! sinks:
//!   store:  { inputs: [per_1m], type: table, database: metrics, table: cpu_1m }
//!   late:   { inputs: [per_1m.late], type: stdout }
//! ```
//!
//! Reading never stops at the first problem: every problem of the file is collected (an
//! unknown key, a missing field, a bad duration), and what could be read is returned for
//! the graph checks in `validate`.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};
pub use tidemark_storage::line_protocol::Precision;

/// A place in the YAML file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Loc {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with a topology: where, in which part, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub loc: Loc,
    /// Like `transforms.per_1m.window`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.loc, self.path, self.message)
    }
}

/// Problems in file order, each once.
pub fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| p.loc);
    problems.dedup();
    problems
}

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub loc: Loc,
}

/// Whether a node produces, transforms or consumes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Transform,
    Sink,
}

impl Role {
    pub fn section(self) -> &'static str {
        match self {
            Role::Source => "sources",
            Role::Transform => "transforms",
            Role::Sink => "sinks",
        }
    }
}

/// An input of a node: another node, or one of its named outputs (`per_1m.late`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub node: String,
    pub output: Option<String>,
    pub loc: Loc,
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{o}", self.node),
            None => write!(f, "{}", self.node),
        }
    }
}

/// Watermark settings of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// How far behind the highest event time seen rows may still arrive on time (ns).
    pub max_out_of_orderness: i64,
    /// A source that sent nothing for this long stops holding the watermark back (ns).
    pub idle_timeout: Option<i64>,
}

/// Where a `table_stream` source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Synthetic data a `generator` source makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorKind {
    /// `value` (integer) and `time`.
    Sequence,
    /// Nexmark bids.
    Bids,
    /// Nexmark auctions.
    Auctions,
    /// Nexmark people.
    Persons,
}

impl GeneratorKind {
    const NAMES: &'static [&'static str] = &["sequence", "bids", "auctions", "persons"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sequence" => GeneratorKind::Sequence,
            "bids" => GeneratorKind::Bids,
            "auctions" => GeneratorKind::Auctions,
            "persons" => GeneratorKind::Persons,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            GeneratorKind::Sequence => "sequence",
            GeneratorKind::Bids => "bids",
            GeneratorKind::Auctions => "auctions",
            GeneratorKind::Persons => "persons",
        }
    }
}

/// The shape of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// An aggregate function of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    /// Percentile by nearest rank over the window's values (exact), `p` in 0..=1.
    Percentile(f64),
    /// Percentile estimated by a t-digest of at most 100 centroids: memory per window is
    /// bounded whatever its row count. `p` in 0..=1.
    ApproxPercentile(f64),
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::First => "first",
            AggFunc::Last => "last",
            AggFunc::Percentile(_) => "percentile",
            AggFunc::ApproxPercentile(_) => "approx_percentile",
        }
    }
}

/// `name: func(column)` of a window's `aggregates`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub output: String,
    pub func: AggFunc,
    /// `None` for `count(*)`.
    pub column: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    pub key_by: Vec<Named>,
    pub kind: WindowKind,
    pub aggregates: Vec<Aggregate>,
    /// Rows up to this late (ns) still update a fired window.
    pub allowed_lateness: i64,
}

/// What a node does.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Generator {
        generator: GeneratorKind,
        /// Stop after this many rows (none: run until stopped).
        rows: Option<u64>,
        /// Rows per second of event time.
        rate: u64,
        seed: u64,
        /// Emit `rate` rows per second of wall time (`None`: yes in a server, where an
        /// unpaced generator would flood it, no in `tidemark topology run`).
        throttle: Option<bool>,
    },
    TableStream {
        database: String,
        table: String,
        from: StartFrom,
    },
    FileSource {
        path: String,
        format: FileFormat,
        /// Line protocol only: how to read timestamps, and the measurement whose rows the
        /// source emits (optional when the file holds one).
        precision: Precision,
        measurement: Option<String>,
        /// Keep reading what is appended to the file, as `tail -f` does (jsonl and line
        /// protocol): the source never ends by itself.
        follow: bool,
    },
    Sql {
        sql: String,
        loc: Loc,
    },
    Window(WindowSpec),
    KeyBy {
        columns: Vec<Named>,
    },
    Union,
    Dedup {
        key: Vec<Named>,
        within: i64,
    },
    /// Interval join: rows of the two inputs with equal keys whose times differ by at
    /// most `within`.
    Join {
        on: Vec<Named>,
        within: i64,
    },
    TableSink {
        database: String,
        table: String,
    },
    FileSink {
        path: String,
        format: FileFormat,
    },
    Stdout,
    /// Counts and drops rows (for benchmarks).
    Blackhole,
    Http {
        url: String,
        max_retries: u32,
        /// A PEM file of certificates trusted besides the system's roots (https).
        ca_file: Option<Named>,
        /// Set by a server's sandbox: the addresses this sink may connect to.
        allow: Option<std::sync::Arc<super::policy::HostAllow>>,
    },
}

impl Kind {
    /// The `type:` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::Generator { .. } => "generator",
            Kind::TableStream { .. } => "table_stream",
            Kind::FileSource { .. } | Kind::FileSink { .. } => "file",
            Kind::Sql { .. } => "sql",
            Kind::Window(_) => "window",
            Kind::KeyBy { .. } => "key_by",
            Kind::Union => "union",
            Kind::Dedup { .. } => "dedup",
            Kind::Join { .. } => "join",
            Kind::TableSink { .. } => "table",
            Kind::Stdout => "stdout",
            Kind::Blackhole => "blackhole",
            Kind::Http { .. } => "http",
        }
    }
}

/// Files a `file` source reads and a `file` sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    LineProtocol,
    Csv,
    Parquet,
    Jsonl,
}

impl FileFormat {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lp" | "line_protocol" => FileFormat::LineProtocol,
            "csv" => FileFormat::Csv,
            "parquet" => FileFormat::Parquet,
            "jsonl" | "json" => FileFormat::Jsonl,
            _ => return None,
        })
    }
}

/// One node of the topology as written.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub loc: Loc,
    pub role: Role,
    pub inputs: Vec<InputRef>,
    pub parallelism: usize,
    pub parallelism_loc: Option<Loc>,
    /// Sources: the column of event time.
    pub event_time: Option<Named>,
    pub watermark: Option<Watermark>,
    /// File sources: rows per batch read (watermarks follow each batch).
    pub batch_rows: Option<usize>,
    pub kind: Kind,
}

impl NodeSpec {
    pub fn path(&self) -> String {
        format!("{}.{}", self.role.section(), self.name)
    }
}

/// A topology as written, in file order (sources, transforms, sinks).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    /// Nodes left out because of their own problems: inputs naming them are not reported
    /// again as unknown.
    pub broken: Vec<String>,
    /// Deployed to a server (see `policy`): problems never quote a file's contents.
    pub confined: bool,
}

impl Spec {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn loc_of_span(span: &marked_yaml::Span) -> Loc {
    span.start().map_or(Loc::default(), |m| Loc {
        line: m.line(),
        column: m.column(),
    })
}

fn loc_of(node: &Node) -> Loc {
    loc_of_span(node.span())
}

fn loc_of_key(key: &MarkedScalarNode) -> Loc {
    loc_of_span(key.span())
}

/// Collects problems while reading.
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, loc: Loc, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            loc,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Reports keys of `map` not in `allowed`.
    fn check_keys(&mut self, map: &MarkedMappingNode, path: &str, allowed: &[&str]) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    loc_of_key(key),
                    path,
                    format!(
                        "unknown key {:?}; expected one of: {}",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn string(&mut self, map: &MarkedMappingNode, key: &str, path: &str) -> Option<Named> {
        let node = map.get_node(key)?;
        match node.as_scalar() {
            Some(s) if !s.as_str().is_empty() => Some(Named {
                name: s.as_str().to_string(),
                loc: loc_of(node),
            }),
            _ => {
                self.problem(
                    loc_of(node),
                    path,
                    format!("{key:?} must be a non-empty string"),
                );
                None
            }
        }
    }

    fn required(
        &mut self,
        map: &MarkedMappingNode,
        map_loc: Loc,
        key: &str,
        path: &str,
    ) -> Option<Named> {
        if map.get_node(key).is_none() {
            self.problem(map_loc, path, format!("missing {key:?}"));
            return None;
        }
        self.string(map, key, path)
    }

    fn duration(&mut self, map: &MarkedMappingNode, key: &str, path: &str) -> Option<i64> {
        let named = self.string(map, key, path)?;
        match tidemark_storage::duration::parse(&named.name) {
            Some(d) if d > 0 => Some(d),
            _ => {
                self.problem(
                    named.loc,
                    path,
                    format!(
                        "{key:?} is {:?}: expected a positive duration: {}",
                        named.name,
                        tidemark_storage::duration::EXPECTED
                    ),
                );
                None
            }
        }
    }

    /// A duration that must be given; `missing` is the problem when it is not.
    fn required_duration(
        &mut self,
        map: &MarkedMappingNode,
        map_loc: Loc,
        key: &str,
        path: &str,
        missing: &str,
    ) -> Option<i64> {
        if map.get_node(key).is_none() {
            self.problem(map_loc, path, missing);
            return None;
        }
        self.duration(map, key, path)
    }

    fn number(&mut self, map: &MarkedMappingNode, key: &str, path: &str) -> Option<u64> {
        let named = self.string(map, key, path)?;
        match named.name.replace('_', "").parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(
                    named.loc,
                    path,
                    format!("{key:?} is {:?}: expected a whole number", named.name),
                );
                None
            }
        }
    }

    /// `true` or `false`, with where it was written.
    fn boolean(&mut self, map: &MarkedMappingNode, key: &str, path: &str) -> Option<(bool, Loc)> {
        let named = self.string(map, key, path)?;
        match named.name.as_str() {
            "true" => Some((true, named.loc)),
            "false" => Some((false, named.loc)),
            other => {
                self.problem(
                    named.loc,
                    path,
                    format!("{key:?} is {other:?}: expected true or false"),
                );
                None
            }
        }
    }

    /// A list of names, written `[a, b]` or as one name `a`.
    fn names(&mut self, map: &MarkedMappingNode, key: &str, path: &str) -> Vec<Named> {
        let Some(node) = map.get_node(key) else {
            return Vec::new();
        };
        let items: Vec<&Node> = match node {
            Node::Sequence(seq) => seq.iter().collect(),
            Node::Scalar(_) => vec![node],
            Node::Mapping(_) => {
                self.problem(
                    loc_of(node),
                    path,
                    format!("{key:?} must be a list of names"),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_scalar() {
                Some(s) if !s.as_str().is_empty() => out.push(Named {
                    name: s.as_str().to_string(),
                    loc: loc_of(item),
                }),
                _ => self.problem(
                    loc_of(item),
                    path,
                    format!("{key:?} must be a list of names"),
                ),
            }
        }
        out
    }
}

const COMMON: &[&str] = &["type", "inputs", "parallelism"];

/// The deepest nesting of mappings and sequences a topology file may have. A topology
/// needs about six levels; the limit is far above that and far below what the recursive
/// tree building and dropping of a YAML document can take on a thread's stack.
pub const MAX_YAML_DEPTH: usize = 64;

/// Refuses a document nested deeper than [`MAX_YAML_DEPTH`], reading its events (a loop,
/// no recursion) before anything builds a tree of it. YAML errors pass: the loader reports
/// them with its own message.
fn check_nesting(text: &str) -> Option<Problem> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return None;
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Some(Problem {
                        loc: Loc {
                            line: mark.line(),
                            column: mark.col() + 1,
                        },
                        path: "(file)".into(),
                        message: format!(
                            "mappings and sequences nest deeper than {MAX_YAML_DEPTH} levels"
                        ),
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => return None,
            _ => {}
        }
    }
}

/// Reads a topology file. Returns what could be read and every problem found.
pub fn parse(text: &str) -> (Option<Spec>, Vec<Problem>) {
    if let Some(problem) = check_nesting(text) {
        return (None, vec![problem]);
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            let problem = Problem {
                loc: load_error_loc(&e),
                path: "(file)".into(),
                message: format!("not a valid YAML mapping: {e}"),
            };
            return (None, vec![problem]);
        }
    };
    let mut r = Reader {
        problems: Vec::new(),
    };
    let Some(top) = root.as_mapping() else {
        r.problem(
            loc_of(&root),
            "(file)",
            "the file must be a mapping with name, sources, transforms and sinks",
        );
        return (None, r.problems);
    };
    r.check_keys(top, "(file)", &["name", "sources", "transforms", "sinks"]);
    // What is missing at the top is reported at the top of the file.
    let file_start = Loc { line: 1, column: 1 };
    let name = match r.required(top, file_start, "name", "name") {
        Some(n) => {
            if !n
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                r.problem(
                    n.loc,
                    "name",
                    "a topology name may hold letters, digits, _ and - only",
                );
            }
            n.name
        }
        None => String::new(),
    };
    let mut nodes = Vec::new();
    let mut broken = Vec::new();
    for role in [Role::Source, Role::Transform, Role::Sink] {
        let section = role.section();
        let Some(node) = top.get_node(section) else {
            if role != Role::Transform {
                r.problem(
                    file_start,
                    section,
                    format!("missing {section:?}: a topology needs at least one"),
                );
            }
            continue;
        };
        let Some(map) = node.as_mapping() else {
            r.problem(
                loc_of(node),
                section,
                "must be a mapping of node names to nodes",
            );
            continue;
        };
        for (key, value) in map.iter() {
            let path = format!("{section}.{}", key.as_str());
            let Some(body) = value.as_mapping() else {
                r.problem(
                    loc_of(value),
                    &path,
                    "a node must be a mapping (like { type: stdout, inputs: [a] })",
                );
                broken.push(key.as_str().to_string());
                continue;
            };
            match read_node(&mut r, role, key, body, &path) {
                Some(n) => nodes.push(n),
                None => broken.push(key.as_str().to_string()),
            }
        }
    }
    (
        Some(Spec {
            name,
            nodes,
            broken,
            confined: false,
        }),
        r.problems,
    )
}

fn load_error_loc(e: &marked_yaml::LoadError) -> Loc {
    use marked_yaml::LoadError as E;
    let marker = match e {
        E::TopLevelMustBeMapping(m)
        | E::TopLevelMustBeSequence(m)
        | E::UnexpectedAnchor(m)
        | E::MappingKeyMustBeScalar(m)
        | E::UnexpectedTag(m) => Some(*m),
        E::ScanError(m, _) => Some(*m),
        _ => None,
    };
    marker.map_or(Loc::default(), |m| Loc {
        line: m.line(),
        column: m.column(),
    })
}

fn read_node(
    r: &mut Reader,
    role: Role,
    key: &MarkedScalarNode,
    body: &MarkedMappingNode,
    path: &str,
) -> Option<NodeSpec> {
    let loc = loc_of_key(key);
    let type_name = match body.get_scalar("type") {
        Some(t) => t.as_str().to_string(),
        None if role == Role::Transform && body.get_node("sql").is_some() => "sql".to_string(),
        None => {
            r.problem(loc, path, "missing \"type\"");
            return None;
        }
    };
    let type_loc = body.get_node("type").map_or(loc, loc_of);
    let inputs = r
        .names(body, "inputs", path)
        .into_iter()
        .map(|n| match n.name.split_once('.') {
            Some((node, output)) => InputRef {
                node: node.to_string(),
                output: Some(output.to_string()),
                loc: n.loc,
            },
            None => InputRef {
                node: n.name,
                output: None,
                loc: n.loc,
            },
        })
        .collect();
    let parallelism_loc = body.get_node("parallelism").map(loc_of);
    let parallelism = match r.number(body, "parallelism", path) {
        Some(0) => {
            r.problem(
                parallelism_loc.unwrap_or(loc),
                path,
                "parallelism must be at least 1",
            );
            1
        }
        Some(p) => p as usize,
        None => 1,
    };
    let mut event_time = None;
    let mut watermark = None;
    let source_keys = ["event_time", "watermark"];
    let kind = match (role, type_name.as_str()) {
        (Role::Source, "generator") => {
            r.check_keys(
                body,
                path,
                &[
                    COMMON,
                    &source_keys,
                    &["generator", "rows", "rate", "seed", "throttle"],
                ]
                .concat(),
            );
            let generator = match r.required(body, loc, "generator", path) {
                Some(g) => GeneratorKind::parse(&g.name).or_else(|| {
                    r.problem(
                        g.loc,
                        path,
                        format!(
                            "unknown generator {:?}; expected one of: {}",
                            g.name,
                            GeneratorKind::NAMES.join(", ")
                        ),
                    );
                    None
                })?,
                None => return None,
            };
            Kind::Generator {
                generator,
                rows: r.number(body, "rows", path),
                rate: r.number(body, "rate", path).unwrap_or(1000).max(1),
                seed: r.number(body, "seed", path).unwrap_or(1),
                throttle: r.boolean(body, "throttle", path).map(|(t, _)| t),
            }
        }
        (Role::Source, "table_stream") => {
            r.check_keys(
                body,
                path,
                &[COMMON, &source_keys, &["database", "table", "from"]].concat(),
            );
            let database = r.required(body, loc, "database", path);
            let table = r.required(body, loc, "table", path);
            let from = match r.string(body, "from", path) {
                None => StartFrom::Latest,
                Some(f) if f.name == "earliest" => StartFrom::Earliest,
                Some(f) if f.name == "latest" => StartFrom::Latest,
                Some(f) => {
                    r.problem(
                        f.loc,
                        path,
                        format!("\"from\" is {:?}: expected earliest or latest", f.name),
                    );
                    StartFrom::Latest
                }
            };
            Kind::TableStream {
                database: database?.name,
                table: table?.name,
                from,
            }
        }
        (Role::Source, "file") | (Role::Sink, "file") => {
            let source = role == Role::Source;
            if source {
                r.check_keys(
                    body,
                    path,
                    &[
                        COMMON,
                        &source_keys,
                        &[
                            "path",
                            "format",
                            "batch_rows",
                            "precision",
                            "measurement",
                            "follow",
                        ],
                    ]
                    .concat(),
                );
            } else {
                r.check_keys(body, path, &[COMMON, &["path", "format"][..]].concat());
            }
            let file = r.required(body, loc, "path", path)?;
            let format = match r.string(body, "format", path) {
                Some(f) => FileFormat::parse(&f.name).or_else(|| {
                    r.problem(
                        f.loc,
                        path,
                        format!(
                            "unknown format {:?}; expected lp, csv, parquet or jsonl",
                            f.name
                        ),
                    );
                    None
                })?,
                None => {
                    let ext = file.name.rsplit('.').next().unwrap_or_default();
                    match FileFormat::parse(ext) {
                        Some(f) => f,
                        None => {
                            r.problem(
                                file.loc,
                                path,
                                "cannot tell the format from the file name: give \"format\"",
                            );
                            return None;
                        }
                    }
                }
            };
            if source {
                let precision = r.string(body, "precision", path);
                let measurement = r.string(body, "measurement", path);
                if format != FileFormat::LineProtocol {
                    for given in [&precision, &measurement].into_iter().flatten() {
                        r.problem(
                            given.loc,
                            path,
                            "\"precision\" and \"measurement\" apply to line protocol files",
                        );
                    }
                }
                let precision = match precision {
                    None => Precision::Nanosecond,
                    Some(p) => Precision::parse(&p.name).or_else(|| {
                        r.problem(
                            p.loc,
                            path,
                            format!("unknown precision {:?}; expected ns, us, ms or s", p.name),
                        );
                        None
                    })?,
                };
                let follow = r.boolean(body, "follow", path);
                if let Some((true, loc)) = follow
                    && !matches!(format, FileFormat::Jsonl | FileFormat::LineProtocol)
                {
                    r.problem(
                        loc,
                        path,
                        "\"follow\" reads jsonl and line protocol files (a csv or parquet file is read once)",
                    );
                }
                Kind::FileSource {
                    path: file.name,
                    format,
                    precision,
                    measurement: measurement.map(|m| m.name),
                    follow: follow.is_some_and(|(f, _)| f),
                }
            } else {
                Kind::FileSink {
                    path: file.name,
                    format,
                }
            }
        }
        (Role::Transform, "sql") => {
            r.check_keys(body, path, &[COMMON, &["sql"][..]].concat());
            let sql = r.required(body, loc, "sql", path)?;
            Kind::Sql {
                sql: sql.name,
                loc: sql.loc,
            }
        }
        (Role::Transform, "window") => {
            r.check_keys(
                body,
                path,
                &[
                    COMMON,
                    &["key_by", "window", "aggregates", "allowed_lateness"][..],
                ]
                .concat(),
            );
            Kind::Window(read_window(r, body, loc, path)?)
        }
        (Role::Transform, "key_by") => {
            r.check_keys(body, path, &[COMMON, &["columns"][..]].concat());
            let columns = r.names(body, "columns", path);
            if columns.is_empty() {
                r.problem(loc, path, "key_by needs \"columns\"");
            }
            Kind::KeyBy { columns }
        }
        (Role::Transform, "union") => {
            r.check_keys(body, path, COMMON);
            Kind::Union
        }
        (Role::Transform, "dedup") => {
            r.check_keys(body, path, &[COMMON, &["key", "within"][..]].concat());
            let key = r.names(body, "key", path);
            if key.is_empty() {
                r.problem(loc, path, "dedup needs \"key\"");
            }
            let within = r.required_duration(body, loc, "within", path, "missing \"within\"");
            Kind::Dedup {
                key,
                within: within?,
            }
        }
        (Role::Transform, "join") => {
            r.check_keys(body, path, &[COMMON, &["on", "within"][..]].concat());
            let on = r.names(body, "on", path);
            if on.is_empty() {
                r.problem(
                    loc,
                    path,
                    "join needs \"on\": the key columns of both inputs",
                );
            }
            let within = r.required_duration(
                body,
                loc,
                "within",
                path,
                "missing \"within\": how far apart in time joined rows may be",
            );
            Kind::Join {
                on,
                within: within?,
            }
        }
        (Role::Sink, "table") => {
            r.check_keys(body, path, &[COMMON, &["database", "table"][..]].concat());
            let database = r.required(body, loc, "database", path);
            let table = r.required(body, loc, "table", path);
            Kind::TableSink {
                database: database?.name,
                table: table?.name,
            }
        }
        (Role::Sink, "stdout") => {
            r.check_keys(body, path, COMMON);
            Kind::Stdout
        }
        (Role::Sink, "blackhole") => {
            r.check_keys(body, path, COMMON);
            Kind::Blackhole
        }
        (Role::Sink, "http") => {
            r.check_keys(
                body,
                path,
                &[COMMON, &["url", "max_retries", "ca_file"][..]].concat(),
            );
            let url = r.required(body, loc, "url", path)?;
            if !(url.name.starts_with("http://") || url.name.starts_with("https://")) {
                r.problem(url.loc, path, "\"url\" must start with http:// or https://");
            }
            let ca_file = r.string(body, "ca_file", path);
            if let Some(ca) = &ca_file
                && !url.name.starts_with("https://")
            {
                r.problem(ca.loc, path, "\"ca_file\" applies to https:// URLs");
            }
            Kind::Http {
                url: url.name,
                max_retries: r.number(body, "max_retries", path).unwrap_or(5).min(100) as u32,
                ca_file,
                allow: None,
            }
        }
        (role, other) => {
            let expected = match role {
                Role::Source => "generator, table_stream, file",
                Role::Transform => "sql, window, key_by, union, dedup, join",
                Role::Sink => "table, file, stdout, blackhole, http",
            };
            r.problem(
                type_loc,
                path,
                format!(
                    "unknown {} type {other:?}; expected one of: {expected}",
                    match role {
                        Role::Source => "source",
                        Role::Transform => "transform",
                        Role::Sink => "sink",
                    }
                ),
            );
            return None;
        }
    };
    if role == Role::Source {
        event_time = r.string(body, "event_time", path);
        if let Some(w) = body.get_node("watermark") {
            match w.as_mapping() {
                Some(wm) => {
                    r.check_keys(
                        wm,
                        &format!("{path}.watermark"),
                        &["max_out_of_orderness", "idle_timeout"],
                    );
                    let wpath = format!("{path}.watermark");
                    let max = if wm.get_node("max_out_of_orderness").is_some() {
                        r.duration(wm, "max_out_of_orderness", &wpath)
                    } else {
                        Some(0)
                    };
                    let idle = if wm.get_node("idle_timeout").is_some() {
                        r.duration(wm, "idle_timeout", &wpath)
                    } else {
                        None
                    };
                    watermark = max.map(|m| Watermark {
                        max_out_of_orderness: m,
                        idle_timeout: idle,
                    });
                    if event_time.is_none() {
                        r.problem(
                            loc_of(w),
                            path,
                            "a watermark needs \"event_time\": the column it follows",
                        );
                    }
                }
                None => r.problem(loc_of(w), path, "\"watermark\" must be a mapping"),
            }
        }
    }
    Some(NodeSpec {
        name: key.as_str().to_string(),
        loc,
        role,
        inputs,
        parallelism,
        parallelism_loc,
        event_time,
        watermark,
        batch_rows: r
            .number(body, "batch_rows", path)
            .map(|n| n.max(1) as usize),
        kind,
    })
}

fn read_window(
    r: &mut Reader,
    body: &MarkedMappingNode,
    loc: Loc,
    path: &str,
) -> Option<WindowSpec> {
    let key_by = r.names(body, "key_by", path);
    let wpath = format!("{path}.window");
    let kind = match body.get_node("window") {
        None => {
            r.problem(loc, path, "missing \"window\": { tumbling: 1m }, { sliding: { size: 5m, slide: 1m } } or { session: { gap: 30s } }");
            None
        }
        Some(w) => match w.as_mapping() {
            None => {
                r.problem(loc_of(w), &wpath, "must be a mapping like { tumbling: 1m }");
                None
            }
            Some(wm) => {
                r.check_keys(wm, &wpath, &["tumbling", "sliding", "session"]);
                if wm.len() != 1 {
                    r.problem(
                        loc_of(w),
                        &wpath,
                        "give exactly one of tumbling, sliding, session",
                    );
                }
                if wm.get_node("tumbling").is_some() {
                    r.duration(wm, "tumbling", &wpath)
                        .map(|size| WindowKind::Tumbling { size })
                } else if let Some(s) = wm.get_node("sliding") {
                    match s.as_mapping() {
                        Some(sm) => {
                            let spath = format!("{wpath}.sliding");
                            r.check_keys(sm, &spath, &["size", "slide"]);
                            let size = r.duration(sm, "size", &spath);
                            let slide = r.duration(sm, "slide", &spath);
                            if sm.get_node("size").is_none() || sm.get_node("slide").is_none() {
                                r.problem(
                                    loc_of(s),
                                    &spath,
                                    "a sliding window needs size and slide",
                                );
                            }
                            match (size, slide) {
                                (Some(size), Some(slide)) if slide > size => {
                                    r.problem(
                                        loc_of(s),
                                        &spath,
                                        "slide must not be longer than size",
                                    );
                                    None
                                }
                                (Some(size), Some(slide)) => {
                                    Some(WindowKind::Sliding { size, slide })
                                }
                                _ => None,
                            }
                        }
                        None => {
                            r.problem(
                                loc_of(s),
                                &wpath,
                                "sliding must be a mapping like { size: 5m, slide: 1m }",
                            );
                            None
                        }
                    }
                } else if let Some(s) = wm.get_node("session") {
                    match s.as_mapping() {
                        Some(sm) => {
                            let spath = format!("{wpath}.session");
                            r.check_keys(sm, &spath, &["gap"]);
                            if sm.get_node("gap").is_none() {
                                r.problem(loc_of(s), &spath, "a session window needs gap");
                            }
                            r.duration(sm, "gap", &spath)
                                .map(|gap| WindowKind::Session { gap })
                        }
                        None => {
                            r.problem(
                                loc_of(s),
                                &wpath,
                                "session must be a mapping like { gap: 30s }",
                            );
                            None
                        }
                    }
                } else {
                    None
                }
            }
        },
    };
    let mut aggregates = Vec::new();
    match body.get_node("aggregates").map(|a| (a, a.as_mapping())) {
        None => r.problem(
            loc,
            path,
            "missing \"aggregates\", like { n: count(*), avg_user: avg(usage_user) }",
        ),
        Some((a, None)) => r.problem(
            loc_of(a),
            path,
            "\"aggregates\" must be a mapping of output names to functions",
        ),
        Some((_, Some(am))) => {
            for (k, v) in am.iter() {
                let apath = format!("{path}.aggregates.{}", k.as_str());
                let Some(text) = v.as_scalar() else {
                    r.problem(
                        loc_of(v),
                        &apath,
                        "expected a function call like avg(usage_user)",
                    );
                    continue;
                };
                match parse_aggregate(text.as_str()) {
                    Ok((func, column)) => aggregates.push(Aggregate {
                        output: k.as_str().to_string(),
                        func,
                        column,
                        loc: loc_of(v),
                    }),
                    Err(e) => r.problem(loc_of(v), &apath, e),
                }
            }
        }
    }
    let allowed_lateness = if body.get_node("allowed_lateness").is_some() {
        r.duration(body, "allowed_lateness", path).unwrap_or(0)
    } else {
        0
    };
    Some(WindowSpec {
        key_by,
        kind: kind?,
        aggregates,
        allowed_lateness,
    })
}

/// `count(*)`, `avg(x)`, `percentile(x, 0.99)`.
fn parse_aggregate(text: &str) -> Result<(AggFunc, Option<String>), String> {
    let usage = "expected count(*), count(x), sum(x), avg(x), min(x), max(x), first(x), last(x) or percentile(x, 0.99)";
    let text = text.trim();
    let (name, rest) = text
        .split_once('(')
        .ok_or_else(|| format!("{text:?}: {usage}"))?;
    let args = rest.strip_suffix(')').ok_or_else(|| {
        format!(
            "{text:?}: missing \")\" (in a {{ ... }} mapping a comma ends the value: quote it, \"percentile(x, 0.99)\")"
        )
    })?;
    let args: Vec<&str> = args.split(',').map(str::trim).collect();
    let column = |a: &str| -> Result<Option<String>, String> {
        if a.is_empty() {
            Err(format!("{text:?}: missing the column; {usage}"))
        } else {
            Ok(Some(a.to_string()))
        }
    };
    let func = match name.trim().to_ascii_lowercase().as_str() {
        "count" => {
            return Ok((
                AggFunc::Count,
                if args[0] == "*" {
                    None
                } else {
                    column(args[0])?
                },
            ));
        }
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "first" => AggFunc::First,
        "last" => AggFunc::Last,
        name @ ("percentile" | "approx_percentile" | "approx_percentile_cont") => {
            let p: f64 = args
                .get(1)
                .and_then(|p| p.parse().ok())
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("{text:?}: percentile needs a fraction between 0 and 1, like percentile(latency, 0.99)"))?;
            let func = if name == "percentile" {
                AggFunc::Percentile(p)
            } else {
                AggFunc::ApproxPercentile(p)
            };
            return Ok((func, column(args[0])?));
        }
        other => return Err(format!("unknown aggregate {other:?}; {usage}")),
    };
    if args.len() != 1 {
        return Err(format!("{text:?}: {} takes one column", func.name()));
    }
    Ok((func, column(args[0])?))
}
