//! Checks a [`Spec`] as a graph and follows schemas through it.
//!
//! Graph checks: duplicate names, inputs that name nothing (or a named output a node does
//! not have), sources with inputs, transforms and sinks without, sinks used as inputs,
//! joins without exactly two inputs, and cycles. Then, in topological order, every node's
//! output schema and event-time column are derived from its inputs: sources from their
//! kind (or the table's schema when a [`TableSchemas`] knows it), `sql` by planning the
//! statement with DataFusion over an empty `input` table, windows from their keys and
//! aggregates. Unknown columns, aggregates over columns of the wrong type, windows and
//! joins without event time, unions of different schemas and sinks whose rows do not fit
//! their table are reported where they are written. Every problem is reported, not just
//! the first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::spec::{
    AggFunc, FileFormat, GeneratorKind, Kind, Loc, NodeSpec, Precision, Problem, Role, Spec,
    WindowSpec,
};

/// Where table schemas come from: the node's catalog when a topology is deployed, nothing
/// when a file is validated on its own (checks that need a table's schema are skipped).
pub trait TableSchemas: Send + Sync {
    fn table_schema(&self, database: &str, table: &str) -> Option<SchemaRef>;
}

/// No tables known.
pub struct NoTables;

impl TableSchemas for NoTables {
    fn table_schema(&self, _: &str, _: &str) -> Option<SchemaRef> {
        None
    }
}

/// What validation learned about one node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `None` when it cannot be known (a table stream of a table that does not exist yet,
    /// a file source, or a node downstream of one).
    pub schema: Option<SchemaRef>,
    pub event_time: Option<String>,
    /// The primary key of an upsert stream: columns whose values identify a row, so that
    /// a later row with the same values replaces an earlier one field by field (a
    /// `table_stream`: the table's tags and `time`; a window: its keys and bounds).
    /// `None` for an append stream, where every row is a row of its own.
    pub key: Option<Vec<String>>,
}

impl NodeInfo {
    fn unknown() -> Self {
        Self {
            schema: None,
            event_time: None,
            key: None,
        }
    }
}

/// A topology that passed validation: the spec, its nodes in topological order, and
/// what is known about each.
#[derive(Debug, Clone)]
pub struct Validated {
    pub spec: Spec,
    /// Indexes into `spec.nodes`, every node after its inputs.
    pub order: Vec<usize>,
    pub info: Vec<NodeInfo>,
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn schema_of(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), *n != "time" && *n != "date_time"))
            .collect::<Vec<_>>(),
    ))
}

/// The rows a generator makes.
pub fn generator_schema(kind: GeneratorKind) -> SchemaRef {
    use DataType::{Int64, Utf8};
    match kind {
        GeneratorKind::Sequence => schema_of(&[("value", Int64), ("time", time_type())]),
        GeneratorKind::Bids => schema_of(&[
            ("auction", Int64),
            ("bidder", Int64),
            ("price", Int64),
            ("channel", Utf8),
            ("url", Utf8),
            ("date_time", time_type()),
            ("extra", Utf8),
        ]),
        GeneratorKind::Auctions => schema_of(&[
            ("id", Int64),
            ("item_name", Utf8),
            ("description", Utf8),
            ("initial_bid", Int64),
            ("reserve", Int64),
            ("date_time", time_type()),
            ("expires", time_type()),
            ("seller", Int64),
            ("category", Int64),
            ("extra", Utf8),
        ]),
        GeneratorKind::Persons => schema_of(&[
            ("id", Int64),
            ("name", Utf8),
            ("email_address", Utf8),
            ("credit_card", Utf8),
            ("city", Utf8),
            ("state", Utf8),
            ("date_time", time_type()),
            ("extra", Utf8),
        ]),
    }
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _))
}

/// The value type of a column as a tag or field would hold it (dictionaries read as
/// their values).
fn value_type(t: &DataType) -> &DataType {
    match t {
        DataType::Dictionary(_, v) => v,
        t => t,
    }
}

struct Checker {
    problems: Vec<Problem>,
    /// A server's topology: no problem quotes a file (see `policy`).
    confined: bool,
}

impl Checker {
    fn problem(&mut self, loc: Loc, node: &NodeSpec, message: impl Into<String>) {
        self.problems.push(Problem {
            loc,
            path: node.path(),
            message: message.into(),
        });
    }

    /// Reports a column `schema` lacks, naming the ones it has.
    fn need_column(
        &mut self,
        schema: &Schema,
        name: &str,
        loc: Loc,
        node: &NodeSpec,
    ) -> Option<DataType> {
        match schema.field_with_name(name) {
            Ok(f) => Some(f.data_type().clone()),
            Err(_) => {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                self.problem(
                    loc,
                    node,
                    format!("unknown column {name:?}; the input has {}", have.join(", ")),
                );
                None
            }
        }
    }
}

/// Named outputs besides the main one.
fn named_outputs(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Window(_) => &["late"],
        _ => &[],
    }
}

/// Validates `spec`; `Err` holds every problem, sorted by place.
pub async fn validate(spec: Spec, tables: &dyn TableSchemas) -> Result<Validated, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
        confined: spec.confined,
    };
    let index: HashMap<&str, usize> = {
        let mut index = HashMap::new();
        for (i, n) in spec.nodes.iter().enumerate() {
            if let Some(&first) = index.get(n.name.as_str()) {
                let first: &NodeSpec = &spec.nodes[first];
                c.problem(
                    n.loc,
                    n,
                    format!("the name {:?} is already used by {}", n.name, first.path()),
                );
            } else {
                index.insert(n.name.as_str(), i);
            }
        }
        index
    };

    // Edges, checked.
    let mut inputs: Vec<Vec<usize>> = vec![Vec::new(); spec.nodes.len()];
    for (i, n) in spec.nodes.iter().enumerate() {
        match n.role {
            Role::Source if !n.inputs.is_empty() => {
                c.problem(n.inputs[0].loc, n, "a source takes no inputs");
            }
            Role::Transform | Role::Sink if n.inputs.is_empty() => {
                c.problem(
                    n.loc,
                    n,
                    "missing \"inputs\": the nodes whose rows this one takes",
                );
            }
            _ => {}
        }
        for input in &n.inputs {
            let Some(&j) = index.get(input.node.as_str()) else {
                if spec.broken.contains(&input.node) {
                    continue;
                }
                let names: Vec<&str> = spec
                    .nodes
                    .iter()
                    .filter(|m| m.role != Role::Sink)
                    .map(|m| m.name.as_str())
                    .collect();
                c.problem(
                    input.loc,
                    n,
                    format!(
                        "unknown input {:?}; the sources and transforms are {}",
                        input.node,
                        names.join(", ")
                    ),
                );
                continue;
            };
            let from = &spec.nodes[j];
            if from.role == Role::Sink {
                c.problem(
                    input.loc,
                    n,
                    format!("{:?} is a sink: it has no output to read", input.node),
                );
                continue;
            }
            if let Some(output) = &input.output {
                let outputs = named_outputs(&from.kind);
                if !outputs.contains(&output.as_str()) {
                    c.problem(
                        input.loc,
                        n,
                        if outputs.is_empty() {
                            format!(
                                "{:?} ({}) has no named output {output:?}",
                                from.name,
                                from.kind.type_name()
                            )
                        } else {
                            format!(
                                "{:?} has no output {output:?}; it has {}",
                                from.name,
                                outputs.join(", ")
                            )
                        },
                    );
                    continue;
                }
            }
            inputs[i].push(j);
        }
        match &n.kind {
            Kind::Join { .. } if n.inputs.len() != 2 => {
                c.problem(
                    n.loc,
                    n,
                    format!("a join takes exactly two inputs, not {}", n.inputs.len()),
                );
            }
            Kind::Union if n.inputs.len() < 2 => {
                c.problem(n.loc, n, "a union takes two inputs or more");
            }
            Kind::Sql { .. } | Kind::Window(_) | Kind::KeyBy { .. } | Kind::Dedup { .. }
                if n.inputs.len() > 1 =>
            {
                c.problem(
                    n.inputs[1].loc,
                    n,
                    format!(
                        "{} takes one input; put a union before it",
                        n.kind.type_name()
                    ),
                );
            }
            _ => {}
        }
    }

    // Topological order (Kahn); what is left over is on a cycle.
    let mut pending: Vec<usize> = inputs.iter().map(Vec::len).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); spec.nodes.len()];
    for (i, ins) in inputs.iter().enumerate() {
        for &j in ins {
            consumers[j].push(i);
        }
    }
    let mut order: Vec<usize> = (0..spec.nodes.len()).filter(|&i| pending[i] == 0).collect();
    let mut k = 0;
    while k < order.len() {
        let i = order[k];
        k += 1;
        for &m in &consumers[i] {
            pending[m] -= 1;
            if pending[m] == 0 {
                order.push(m);
            }
        }
    }
    if order.len() < spec.nodes.len() {
        let placed: HashSet<usize> = order.iter().copied().collect();
        // Unplaced nodes are on a cycle or downstream of one; peel off the downstream ones
        // (those none of the remaining nodes read from).
        let mut on_cycle: Vec<usize> = (0..spec.nodes.len())
            .filter(|i| !placed.contains(i))
            .collect();
        loop {
            let before = on_cycle.len();
            let remaining = on_cycle.clone();
            on_cycle.retain(|&i| consumers[i].iter().any(|m| remaining.contains(m)));
            if on_cycle.len() == before {
                break;
            }
        }
        let names: Vec<&str> = on_cycle
            .iter()
            .map(|&i| spec.nodes[i].name.as_str())
            .collect();
        let first = &spec.nodes[on_cycle[0]];
        c.problem(
            first.loc,
            first,
            format!("a cycle: {} read from each other", names.join(", ")),
        );
    }

    // Schemas, in order.
    let mut info: Vec<NodeInfo> = vec![NodeInfo::unknown(); spec.nodes.len()];
    for &i in &order {
        let n = &spec.nodes[i];
        let ins: Vec<&NodeInfo> = inputs[i].iter().map(|&j| &info[j]).collect();
        let derived = derive(&mut c, n, &ins, tables).await;
        info[i] = derived;
    }
    if c.problems.is_empty() {
        Ok(Validated { spec, order, info })
    } else {
        Err(super::spec::sorted(c.problems))
    }
}

async fn derive(
    c: &mut Checker,
    n: &NodeSpec,
    ins: &[&NodeInfo],
    tables: &dyn TableSchemas,
) -> NodeInfo {
    let first = ins.first().copied().cloned().unwrap_or(NodeInfo::unknown());
    let pass = first.clone();
    match &n.kind {
        Kind::Generator { generator, .. } => source_info(c, n, Some(generator_schema(*generator))),
        Kind::TableStream {
            database, table, ..
        } => {
            let schema = tables.table_schema(database, table);
            let key = schema.as_ref().map(|s| table_key(s));
            NodeInfo {
                key,
                ..source_info(c, n, schema)
            }
        }
        Kind::FileSource {
            path,
            format,
            precision,
            measurement,
            ..
        } => match file_schema(
            path,
            *format,
            (*precision, measurement.as_deref()),
            n.event_time.as_ref().map(|t| t.name.as_str()),
        ) {
            Ok(schema) => source_info(c, n, schema),
            Err(_) if c.confined => {
                // The reader's message may quote the file; an HTTP answer must not.
                c.problem(
                    n.loc,
                    n,
                    format!(
                        "cannot read {path} as {format:?}: it does not parse as that format (a deployed topology's errors never quote a file; `tidemark topology validate` on the server's machine shows the details)"
                    ),
                );
                NodeInfo::unknown()
            }
            Err(e) => {
                c.problem(n.loc, n, e);
                NodeInfo::unknown()
            }
        },
        Kind::Sql { sql, loc } => {
            let Some(schema) = first.schema else {
                return NodeInfo::unknown();
            };
            match super::sql::compile(&schema, sql).await {
                Ok(compiled) => {
                    let out = compiled.schema;
                    let event_time = first
                        .event_time
                        .filter(|t| out.field_with_name(t).is_ok_and(|f| is_time(f.data_type())));
                    // Rows stay identified only if every key column passes through as
                    // itself; a computed or renamed one makes an append stream.
                    let key = first
                        .key
                        .filter(|k| k.iter().all(|c| compiled.passthrough.contains(c)));
                    NodeInfo {
                        schema: Some(out),
                        event_time,
                        key,
                    }
                }
                Err(e) => {
                    c.problem(
                        *loc,
                        n,
                        format!("the SQL does not plan over its input: {e}"),
                    );
                    NodeInfo::unknown()
                }
            }
        }
        Kind::KeyBy { columns } => {
            if let Some(schema) = &first.schema {
                for col in columns {
                    c.need_column(schema, &col.name, col.loc, n);
                }
            }
            pass
        }
        Kind::Dedup { key, .. } => {
            if let Some(schema) = &first.schema {
                for col in key {
                    c.need_column(schema, &col.name, col.loc, n);
                }
            }
            if first.event_time.is_none() && first.schema.is_some() {
                c.problem(
                    n.loc,
                    n,
                    "dedup within a time span needs event time: set event_time on the source",
                );
            }
            pass
        }
        Kind::Union => {
            let schemas: Vec<&SchemaRef> = ins.iter().filter_map(|i| i.schema.as_ref()).collect();
            // Compared only when every input resolved and is known, so that the k-th
            // schema is the k-th input's.
            if schemas.len() == n.inputs.len()
                && let (Some(s0), Some(first_input)) = (schemas.first(), n.inputs.first())
            {
                for (s, input) in schemas.iter().zip(&n.inputs).skip(1) {
                    if !same_columns(s0, s) {
                        c.problem(
                            input.loc,
                            n,
                            format!(
                                "a union's inputs must have the same columns: {first_input} has ({}), {input} has ({})",
                                describe(s0),
                                describe(s)
                            ),
                        );
                    }
                }
            }
            let event_times: HashSet<&Option<String>> = ins.iter().map(|i| &i.event_time).collect();
            // Rows of different inputs are different rows, whatever their keys: an
            // append stream.
            NodeInfo {
                schema: if schemas.len() == ins.len() {
                    first.schema
                } else {
                    None
                },
                event_time: if event_times.len() == 1 {
                    first.event_time
                } else {
                    None
                },
                key: None,
            }
        }
        Kind::Join { on, .. } => {
            let (Some(left), Some(right)) = (ins.first(), ins.get(1)) else {
                return NodeInfo::unknown();
            };
            for (side, info) in [("left", left), ("right", right)] {
                if info.schema.is_some() && info.event_time.is_none() {
                    c.problem(n.loc, n, format!("an interval join needs event time on both inputs; the {side} one has none"));
                }
            }
            let (Some(ls), Some(rs)) = (&left.schema, &right.schema) else {
                return NodeInfo {
                    event_time: left.event_time.clone(),
                    ..NodeInfo::unknown()
                };
            };
            for col in on {
                let lt = c.need_column(ls, &col.name, col.loc, n);
                let rt = c.need_column(rs, &col.name, col.loc, n);
                if let (Some(lt), Some(rt)) = (lt, rt)
                    && value_type(&lt) != value_type(&rt)
                {
                    c.problem(
                        col.loc,
                        n,
                        format!(
                            "join key {:?} is {lt} on the left and {rt} on the right",
                            col.name
                        ),
                    );
                }
            }
            let keys: HashSet<&str> = on.iter().map(|k| k.name.as_str()).collect();
            let mut fields: Vec<Field> = ls.fields().iter().map(|f| f.as_ref().clone()).collect();
            for f in rs.fields() {
                if keys.contains(f.name().as_str()) {
                    continue;
                }
                let name = if ls.field_with_name(f.name()).is_ok() {
                    format!("{}_right", f.name())
                } else {
                    f.name().clone()
                };
                fields.push(f.as_ref().clone().with_name(name));
            }
            NodeInfo {
                schema: Some(Arc::new(Schema::new(fields))),
                event_time: left.event_time.clone(),
                key: None,
            }
        }
        Kind::Window(w) => {
            let Some(schema) = first.schema else {
                return NodeInfo {
                    schema: None,
                    event_time: Some("window_end".into()),
                    key: Some(window_key(w)),
                };
            };
            if first.event_time.is_none() {
                c.problem(
                    n.loc,
                    n,
                    "a window needs event time: set event_time on the source, and keep that column (as a timestamp) through every sql transform before the window",
                );
            }
            let mut fields = Vec::new();
            for key in &w.key_by {
                if let Some(t) = c.need_column(&schema, &key.name, key.loc, n) {
                    fields.push(Field::new(&key.name, t, true));
                }
            }
            fields.push(Field::new("window_start", time_type(), false));
            fields.push(Field::new("window_end", time_type(), false));
            for agg in &w.aggregates {
                let input = match &agg.column {
                    Some(col) => match c.need_column(&schema, col, agg.loc, n) {
                        Some(t) => Some(t),
                        None => continue,
                    },
                    None => None,
                };
                let out = match (agg.func, input.as_ref().map(value_type)) {
                    (AggFunc::Count, _) => Some(DataType::Int64),
                    (AggFunc::Sum, Some(t)) if t.is_signed_integer() => Some(DataType::Int64),
                    (AggFunc::Sum, Some(t)) if t.is_unsigned_integer() => Some(DataType::UInt64),
                    (
                        AggFunc::Sum
                        | AggFunc::Avg
                        | AggFunc::Percentile(_)
                        | AggFunc::ApproxPercentile(_),
                        Some(t),
                    ) if is_numeric(t) => Some(DataType::Float64),
                    (AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last, Some(t)) => {
                        Some(t.clone())
                    }
                    (f, t) => {
                        c.problem(
                            agg.loc,
                            n,
                            format!(
                                "{}({}) needs a numeric column; {:?} is {}",
                                f.name(),
                                agg.column.as_deref().unwrap_or("*"),
                                agg.column.as_deref().unwrap_or("*"),
                                t.map_or("missing".to_string(), ToString::to_string)
                            ),
                        );
                        None
                    }
                };
                if let Some(t) = out {
                    if fields.iter().any(|f| f.name() == &agg.output) {
                        c.problem(
                            agg.loc,
                            n,
                            format!("{:?} is already an output column", agg.output),
                        );
                    }
                    fields.push(Field::new(&agg.output, t, true));
                }
            }
            NodeInfo {
                schema: Some(Arc::new(Schema::new(fields))),
                event_time: Some("window_end".into()),
                key: Some(window_key(w)),
            }
        }
        Kind::TableSink { database, table } => {
            if let Some(schema) = &first.schema {
                check_table_sink(
                    c,
                    n,
                    schema,
                    (first.event_time.as_deref(), first.key.as_deref()),
                    tables.table_schema(database, table),
                );
            }
            NodeInfo::unknown()
        }
        // Over http:// the file is refused as such (spec), whatever it holds.
        Kind::Http {
            url,
            ca_file: Some(ca),
            ..
        } if url.starts_with("https://") => {
            if let Err(e) = super::sink::trusted_roots(&ca.name) {
                c.problem(ca.loc, n, e);
            }
            NodeInfo::unknown()
        }
        Kind::FileSink { .. } | Kind::Stdout | Kind::Blackhole | Kind::Http { .. } => {
            NodeInfo::unknown()
        }
    }
}

fn source_info(c: &mut Checker, n: &NodeSpec, schema: Option<SchemaRef>) -> NodeInfo {
    let event_time = n.event_time.as_ref().map(|t| t.name.clone());
    if let (Some(schema), Some(t)) = (&schema, &n.event_time) {
        match schema.field_with_name(&t.name) {
            Ok(f) if is_time(f.data_type()) || f.data_type() == &DataType::Int64 => {}
            Ok(f) => c.problem(
                t.loc,
                n,
                format!(
                    "event_time column {:?} is {}; expected a timestamp",
                    t.name,
                    f.data_type()
                ),
            ),
            Err(_) => {
                c.need_column(schema, &t.name, t.loc, n);
            }
        }
    }
    NodeInfo {
        schema,
        event_time,
        key: None,
    }
}

/// A table's primary key: its tags and `time`.
fn table_key(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| {
            tidemark_storage::catalog::ColumnKind::from_arrow(f.name(), f.data_type())
                == Some(tidemark_storage::catalog::ColumnKind::Tag)
        })
        .map(|f| f.name().clone())
        .chain(std::iter::once(
            tidemark_storage::catalog::TIME_COLUMN.to_string(),
        ))
        .collect()
}

/// A window's rows are identified by their key and bounds: a fired window that a late
/// row updates is emitted again with the same ones.
fn window_key(w: &WindowSpec) -> Vec<String> {
    w.key_by
        .iter()
        .map(|k| k.name.clone())
        .chain(["window_start".to_string(), "window_end".to_string()])
        .collect()
}

/// The columns of a file source, read from the file (jsonl and csv: the first 1,000
/// rows; line protocol: all of it, for the measurement). A text event-time column is read
/// as RFC 3339 timestamps.
fn file_schema(
    path: &str,
    format: FileFormat,
    (precision, measurement): (Precision, Option<&str>),
    event_time: Option<&str>,
) -> Result<Option<SchemaRef>, String> {
    let open = || {
        std::fs::File::open(path)
            .map(|f| std::io::BufReader::new(super::lines::LineBound::new(f)))
            .map_err(|e| format!("cannot read {path}: {e}"))
    };
    let schema = match format {
        FileFormat::Jsonl => {
            arrow::json::reader::infer_json_schema_from_seekable(open()?, Some(1000))
                .map(|(s, _)| s)
                .map_err(|e| format!("cannot read {path} as JSON lines: {e}"))?
        }
        FileFormat::Csv => arrow::csv::reader::Format::default()
            .with_header(true)
            .infer_schema(open()?, Some(1000))
            .map(|(s, _)| s)
            .map_err(|e| format!("cannot read {path} as CSV: {e}"))?,
        FileFormat::Parquet => {
            let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| format!("cannot read {path} as Parquet: {e}"))?
                .schema()
                .as_ref()
                .clone()
                .with_metadata(Default::default())
        }
        FileFormat::LineProtocol => {
            return super::lp_file::LpFile::open(path, precision, false)?
                .schema(measurement)
                .map(Some);
        }
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if Some(f.name().as_str()) == event_time
                && matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8)
            {
                f.as_ref().clone().with_data_type(time_type())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Some(Arc::new(Schema::new(fields))))
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| {
            x.name() == y.name() && value_type(x.data_type()) == value_type(y.data_type())
        })
}

fn describe(s: &Schema) -> String {
    s.fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows written to a table must have a time and only columns line protocol can hold,
/// typed as the table (when it exists) has them. The columns of the input's primary key
/// are written as tags (a table's rows are identified by tags and time): one the table
/// already holds as a field would make rows of different keys replace each other, so it
/// is refused.
fn check_table_sink(
    c: &mut Checker,
    n: &NodeSpec,
    schema: &Schema,
    (event_time, key): (Option<&str>, Option<&[String]>),
    table: Option<SchemaRef>,
) {
    let has_time = schema
        .field_with_name("time")
        .is_ok_and(|f| is_time(f.data_type()));
    if !has_time && event_time.is_none() {
        c.problem(
            n.loc,
            n,
            "rows written to a table need a timestamp column named \"time\" (or event time)",
        );
    }
    for f in schema.fields() {
        let t = value_type(f.data_type());
        if is_time(t) {
            continue;
        }
        if !matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Float64
                | DataType::Int64
                | DataType::UInt64
                | DataType::Boolean
        ) {
            c.problem(n.loc, n, format!("column {:?} is {t}, which a table cannot hold (cast it to DOUBLE, BIGINT, BIGINT UNSIGNED, VARCHAR or BOOLEAN in sql)", f.name()));
            continue;
        }
        let is_key = key.is_some_and(|k| k.iter().any(|k| k == f.name()));
        if let Some(table) = &table
            && let Ok(existing) = table.field_with_name(f.name())
        {
            let existing_tag = tidemark_storage::catalog::ColumnKind::from_arrow(
                existing.name(),
                existing.data_type(),
            ) == Some(tidemark_storage::catalog::ColumnKind::Tag);
            if is_key {
                if !existing_tag {
                    c.problem(
                        n.loc,
                        n,
                        format!(
                            "column {:?} identifies the input's rows (it is a key of them) and is written as a tag, but the table holds it as a {} field: rows with different {:?} and the same time would replace each other; write to another table, or drop it from the table first",
                            f.name(),
                            value_type(existing.data_type()),
                            f.name()
                        ),
                    );
                }
                continue;
            }
            if key.is_some() && existing_tag {
                c.problem(
                    n.loc,
                    n,
                    format!(
                        "column {:?} is not a key of the input's rows, so it is written as a field, but the table holds it as a tag",
                        f.name()
                    ),
                );
                continue;
            }
            let want = value_type(existing.data_type());
            let string = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            };
            if want != t && !(string(want) && string(t)) {
                c.problem(
                    n.loc,
                    n,
                    format!("column {:?} is {t} here but {want} in the table", f.name()),
                );
            }
        }
    }
}
