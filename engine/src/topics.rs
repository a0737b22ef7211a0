//! User topics: named, partitioned, durable logs of keyed records, as Kafka has them.
//!
//! A topic is a set of partition logs (`storage::log`, the same segments as a database's
//! write-ahead log, records of kind [`KIND_TOPIC_RECORD`]) under
//! `<data-dir>/topics/<name>/<partition>/`. Topics live beside the databases' logs, not
//! among them, so that a topic and a database may share a name.
//!
//! Produce: each record goes to a partition (the hash of its key, or round robin when it has
//! none) and gets one log append; the node's single log writer group-commits them with the
//! database writes, and the call returns each record's partition and offset once it is
//! durable. Consume: read one partition from an offset, waiting (bounded) for new records
//! when the reader is caught up.
//!
//! A topic directory is created complete under `.tmp-create-<name>` and renamed into place, so
//! its partition count is its number of partition directories; a delete renames it to
//! `.tmp-delete-<name>` before removing it. A start removes any `.tmp-*` left by a crash.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidemark_storage::catalog::validate_database_name;
use tidemark_storage::log::{Append, PartitionLog};
use tidemark_storage::topic::{self as codec, KIND_TOPIC_RECORD};

use crate::error::{Error, Result};
use crate::node::{
    Durability, Node, count_partitions, create_partition_logs, io, open_partition_logs, sync_dir,
};

/// Limits on topics.
#[derive(Debug, Clone, Copy)]
pub struct TopicLimits {
    pub max_topics: usize,
    pub max_partitions: u32,
    /// Largest key of a record, in bytes.
    pub max_key_bytes: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        Self {
            max_topics: 100,
            max_partitions: 256,
            max_key_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug)]
struct Topic {
    partitions: Vec<Arc<PartitionLog>>,
    /// Spreads keyless records over the partitions.
    round_robin: AtomicU64,
}

/// The topics of a node.
#[derive(Debug)]
pub(crate) struct Topics {
    root: PathBuf,
    map: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes creates and deletes (each renames directories).
    admin: Mutex<()>,
    /// Shared by produces until their records are written; exclusive for a delete, so no
    /// append is in flight into a topic whose directory goes away (a segment roll there
    /// would fail, and a failed append poisons the node's one log writer).
    appends: Arc<tokio::sync::RwLock<()>>,
    /// Bumped after every produce; caught-up consumers wait on it.
    produced: Arc<tokio::sync::watch::Sender<u64>>,
    /// Set at shutdown: consumers stop waiting for records.
    closing: AtomicBool,
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Nanoseconds since the Unix epoch; the time the log writer writes it when absent.
    pub timestamp: Option<i64>,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record the partition holds.
    Earliest,
    /// After the newest record: only records produced from now on.
    Latest,
    Offset(u64),
}

/// What one read of a partition returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub records: Vec<ConsumedRecord>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// The offset the next produced record of the partition will get.
    pub end_offset: u64,
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_records: usize,
    /// Stop after the record that reaches this many key and value bytes (at least one
    /// record is returned, whatever its size).
    pub max_bytes: usize,
    /// How long to wait for a record when the partition has none past the start.
    pub wait: Duration,
}

/// A partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Oldest offset still held.
    pub first_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

impl Topic {
    fn info(&self, name: &str) -> TopicInfo {
        TopicInfo {
            name: name.to_string(),
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition(),
                    first_offset: p.first_offset(),
                    end_offset: p.next_offset(),
                })
                .collect(),
        }
    }

    fn partition(&self, name: &str, partition: u32) -> Result<&Arc<PartitionLog>> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            Error::Invalid(format!(
                "topic {name:?} has partitions 0..{}, not {partition}",
                self.partitions.len()
            ))
        })
    }
}

fn validate_topic_name(name: &str) -> Result<()> {
    validate_database_name(name).map_err(|e| match e {
        tidemark_storage::Error::InvalidDatabaseName { reason, .. } => {
            Error::Invalid(format!("invalid topic name {name:?}: {reason}"))
        }
        other => other.into(),
    })
}

impl Topics {
    /// Opens every topic under `root`, removing what a crash left of a create or delete.
    pub(crate) fn open(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir(&root).map_err(|e| io(&root, e))? {
            let entry = entry.map_err(|e| io(&root, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
                continue;
            }
            if !entry.file_type().map_err(|e| io(&path, e))?.is_dir() {
                continue;
            }
            validate_topic_name(&name)?;
            let partitions = count_partitions(&path, &name)?;
            let topic = Topic {
                // Topic records need no replay: reads go to the log itself.
                partitions: open_partition_logs(&path, partitions)?,
                round_robin: AtomicU64::new(0),
            };
            map.insert(name, Arc::new(topic));
        }
        Ok(Self {
            root,
            map: RwLock::new(map),
            admin: Mutex::new(()),
            appends: Arc::default(),
            produced: Arc::new(tokio::sync::watch::Sender::new(0)),
            closing: AtomicBool::new(false),
        })
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.map.read().keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Result<Arc<Topic>> {
        self.map
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TopicNotFound(name.to_string()))
    }
}

impl Node {
    /// Creates a topic of `partitions` partitions.
    ///
    /// # Errors
    /// `TopicExists`, an invalid name or partition count, the topic limit, I/O errors.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        let limits = self.config.topics;
        if partitions == 0 || partitions > limits.max_partitions {
            return Err(Error::Invalid(format!(
                "a topic has 1 to {} partitions, not {partitions}",
                limits.max_partitions
            )));
        }
        let topics = &self.topics;
        let _admin = topics.admin.lock();
        {
            let map = topics.map.read();
            if map.contains_key(name) {
                return Err(Error::TopicExists(name.to_string()));
            }
            if map.len() >= limits.max_topics {
                return Err(Error::TooManyTopics {
                    name: name.to_string(),
                    max: limits.max_topics,
                });
            }
        }
        let topic = Arc::new(Topic {
            partitions: create_partition_logs(
                &topics.root,
                &format!(".tmp-create-{name}"),
                name,
                partitions,
            )?,
            round_robin: AtomicU64::new(0),
        });
        let info = topic.info(name);
        topics.map.write().insert(name.to_string(), topic);
        self.metrics.register_topic(name);
        tracing::info!(topic = name, partitions, "created topic");
        Ok(info)
    }

    /// Deletes a topic and every record in it.
    ///
    /// # Errors
    /// `TopicNotFound`, I/O errors (the topic is gone from the node either way once its
    /// directory was renamed; a restart removes what is left).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let topics = &self.topics;
        let _appends = topics.appends.write().await;
        let _admin = topics.admin.lock();
        if !topics.map.read().contains_key(name) {
            return Err(Error::TopicNotFound(name.to_string()));
        }
        let dir = topics.root.join(name);
        let doomed = topics.root.join(format!(".tmp-delete-{name}"));
        std::fs::rename(&dir, &doomed).map_err(|e| io(&dir, e))?;
        topics.map.write().remove(name);
        self.metrics.forget_topic(name);
        sync_dir(&topics.root)?;
        // No append is in flight (the `appends` lock), so nothing writes here any more.
        std::fs::remove_dir_all(&doomed).map_err(|e| io(&doomed, e))?;
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.topics
            .map
            .read()
            .iter()
            .map(|(name, t)| t.info(name))
            .collect()
    }

    /// One topic.
    ///
    /// # Errors
    /// `TopicNotFound`.
    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.topics.get(name)?.info(name))
    }

    /// Appends records to a topic and returns each one's (partition, offset), in order.
    /// `durable` waits for the fsync (ignored in `async` durability, as for writes).
    ///
    /// # Errors
    /// `TopicNotFound`, a key over the limit (nothing is appended then), log errors.
    ///
    /// # Cancellation
    /// Once handed to the log writer the records are appended even if the future is dropped.
    pub async fn produce(
        &self,
        name: &str,
        records: Vec<ProducerRecord>,
        durable: bool,
    ) -> Result<Vec<(u32, u64)>> {
        let appending = Arc::clone(&self.topics.appends).read_owned().await;
        let topic = self.topics.get(name)?;
        let count = topic.partitions.len() as u32;
        let max_key = self.config.topics.max_key_bytes;
        let mut appends = Vec::with_capacity(records.len());
        let mut partitions = Vec::with_capacity(records.len());
        let mut bytes = 0u64;
        for (i, r) in records.iter().enumerate() {
            let p = match &r.key {
                Some(key) if key.len() > max_key => {
                    return Err(Error::Invalid(format!(
                        "record {}: its key is {} bytes, more than the {max_key} a key may have",
                        i + 1,
                        key.len()
                    )));
                }
                Some(key) => codec::partition_of(key, count),
                None => {
                    (topic.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(count)) as u32
                }
            };
            bytes += (r.value.len() + r.key.as_ref().map_or(0, Vec::len)) as u64;
            appends.push(Append {
                log: Arc::clone(topic.partition(name, p)?),
                kind: KIND_TOPIC_RECORD,
                timestamp: r.timestamp,
                payload: codec::encode(r.key.as_deref(), &r.value)?,
            });
            partitions.push(p);
        }
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let durable = durable && self.config.durability == Durability::Sync;
        let rx = self.writer.submit(appends, durable)?;
        // Counted and announced in a task of its own, so that a producer hanging up cannot
        // leave written records uncounted or waiting readers asleep.
        let (count_records, count_bytes) = self.metrics.topic_produced(name);
        let produced = Arc::clone(&self.topics.produced);
        let records = partitions.len() as u64;
        let written = tokio::spawn(async move {
            let offsets = rx
                .await
                .map_err(|_| tidemark_storage::Error::WriterClosed)??;
            count_records.inc_by(records);
            count_bytes.inc_by(bytes);
            produced.send_modify(|n| *n = n.wrapping_add(1));
            drop(appending);
            Ok::<_, tidemark_storage::Error>(offsets)
        });
        let offsets = written.await.map_err(|e| {
            tidemark_storage::Error::Internal(format!("produce task failed: {e}"))
        })??;
        Ok(partitions.into_iter().zip(offsets).collect())
    }

    /// Makes every consumer waiting for records answer now, and later ones not wait: the
    /// node is shutting down.
    pub fn end_topic_waits(&self) {
        self.topics.closing.store(true, Ordering::Release);
        self.topics.produced.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reads records of one partition from `start`, waiting up to `limits.wait` for the
    /// first one when there is none yet.
    ///
    /// # Errors
    /// `TopicNotFound`, a partition that does not exist, an offset past the partition's
    /// end, log errors (corruption found while reading).
    pub async fn consume(
        &self,
        name: &str,
        partition: u32,
        start: StartAt,
        limits: FetchLimits,
    ) -> Result<Fetch> {
        let topic = self.topics.get(name)?;
        let log = Arc::clone(topic.partition(name, partition)?);
        let mut from = match start {
            StartAt::Earliest => log.first_offset(),
            StartAt::Latest => log.next_offset(),
            StartAt::Offset(o) => {
                let end = log.next_offset();
                if o > end {
                    return Err(Error::Invalid(format!(
                        "offset {o} is past the end of partition {partition} of topic \
                         {name:?}, whose next offset is {end}"
                    )));
                }
                // Records below the first offset are gone; read on from the oldest kept.
                o.max(log.first_offset())
            }
        };
        let deadline = Instant::now() + limits.wait;
        let mut produced = self.topics.produced.subscribe();
        loop {
            produced.mark_unchanged();
            let (records, next, bytes) = read_partition(&log, from, limits)?;
            from = next;
            let mut left = deadline.saturating_duration_since(Instant::now());
            if self.topics.closing.load(Ordering::Acquire) {
                left = Duration::ZERO;
            }
            if !records.is_empty() || left.is_zero() {
                self.metrics
                    .topic_consumed(name, records.len() as u64, bytes as u64);
                return Ok(Fetch {
                    records,
                    next_offset: from,
                    end_offset: log.next_offset(),
                });
            }
            // A produce to another partition wakes this too; it then reads nothing and
            // waits again.
            if tokio::time::timeout(left, produced.changed())
                .await
                .is_err()
            {
                continue;
            }
        }
    }
}

/// Reads up to the limits from `from`; returns the records, the offset to read from next
/// and the records' key and value bytes.
fn read_partition(
    log: &PartitionLog,
    from: u64,
    limits: FetchLimits,
) -> Result<(Vec<ConsumedRecord>, u64, usize)> {
    const CHUNK: usize = 256;
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut next = from;
    while records.len() < limits.max_records && bytes < limits.max_bytes {
        let want = CHUNK.min(limits.max_records - records.len());
        let before = records.len();
        log.read_some(next, want, &mut |r| {
            // Records of the chunk past the byte bound are left for the next read.
            if bytes >= limits.max_bytes {
                return Ok(());
            }
            let decoded = codec::decode(r.payload)?;
            bytes += decoded.value.len() + decoded.key.map_or(0, <[u8]>::len);
            records.push(ConsumedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: decoded.key.map(<[u8]>::to_vec),
                value: decoded.value.to_vec(),
            });
            next = r.offset + 1;
            Ok(())
        })?;
        if records.len() == before {
            break;
        }
    }
    Ok((records, next, bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::NodeConfig;

    fn record(key: Option<&str>, value: &str) -> ProducerRecord {
        ProducerRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            timestamp: Some(7),
        }
    }

    fn limits(max_records: usize, max_bytes: usize) -> FetchLimits {
        FetchLimits {
            max_records,
            max_bytes,
            wait: Duration::ZERO,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_bounded_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::open(NodeConfig::new(dir.path())).unwrap();
        node.create_topic("t", 2).unwrap();
        // 600 records of one key: more than one read chunk, all in one partition.
        let records: Vec<_> = (0..600)
            .map(|i| record(Some("k"), &format!("{i:04}")))
            .collect();
        let placed = node.produce("t", records, true).await.unwrap();
        let p = placed[0].0;
        assert!(placed.iter().all(|(q, _)| *q == p));
        assert_eq!(
            placed.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            (0..600).collect::<Vec<_>>()
        );

        // A byte bound cuts after the record that reaches it (key 1 + value 4 bytes each).
        let f = node
            .consume("t", p, StartAt::Earliest, limits(1000, 12))
            .await
            .unwrap();
        assert_eq!(f.records.len(), 3);
        assert_eq!(f.next_offset, 3);
        assert_eq!(f.end_offset, 600);
        let f = node
            .consume("t", p, StartAt::Offset(3), limits(1000, 1))
            .await
            .unwrap();
        assert_eq!(
            (f.records.len(), f.records[0].value.as_slice()),
            (1, &b"0003"[..])
        );
        // A record bound over several chunks.
        let f = node
            .consume("t", p, StartAt::Offset(10), limits(590, usize::MAX))
            .await
            .unwrap();
        assert_eq!(f.records.len(), 590);
        assert_eq!(f.records[589].offset, 599);
        assert_eq!(f.records[0].timestamp, 7);
        assert_eq!(f.records[0].key.as_deref(), Some(&b"k"[..]));
        // Latest is the end: nothing yet, and no wait asked for.
        let f = node
            .consume("t", p, StartAt::Latest, limits(10, 100))
            .await
            .unwrap();
        assert!(f.records.is_empty());
        assert_eq!(f.next_offset, 600);
        // A producer's timestamp is kept even when it is the epoch; without one, the record
        // gets the time it was written.
        let before = chrono::Utc::now().timestamp_nanos_opt().unwrap();
        let epoch = ProducerRecord {
            timestamp: Some(0),
            ..record(Some("k"), "epoch")
        };
        let unstamped = ProducerRecord {
            timestamp: None,
            ..record(Some("k"), "now")
        };
        node.produce("t", vec![epoch, unstamped], true)
            .await
            .unwrap();
        let f = node
            .consume("t", p, StartAt::Offset(600), limits(10, 100))
            .await
            .unwrap();
        assert_eq!(f.records[0].timestamp, 0);
        assert!(f.records[1].timestamp >= before, "{:?}", f.records[1]);
        node.shutdown().await;
        drop(node);

        let node = Arc::new(Node::open(NodeConfig::new(dir.path())).unwrap());
        assert_eq!(
            node.topic("t").unwrap().partitions[p as usize].end_offset,
            602
        );
        // A caught-up reader is woken by the next produce.
        let reader = Arc::clone(&node);
        let waiting = tokio::spawn(async move {
            let wait = FetchLimits {
                wait: Duration::from_secs(30),
                ..limits(10, 100)
            };
            reader.consume("t", p, StartAt::Offset(602), wait).await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.produce("t", vec![record(Some("k"), "next")], true)
            .await
            .unwrap();
        let f = waiting.await.unwrap().unwrap();
        assert_eq!(f.records[0].offset, 602);
        assert_eq!(f.records[0].value, b"next");

        // At shutdown a waiting reader answers (empty) instead of waiting out its 10 minutes.
        let reader = Arc::clone(&node);
        let waiting = tokio::spawn(async move {
            let wait = FetchLimits {
                wait: Duration::from_secs(600),
                ..limits(10, 100)
            };
            reader.consume("t", p, StartAt::Latest, wait).await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.end_topic_waits();
        let f = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the reader kept waiting after end_topic_waits")
            .unwrap()
            .unwrap();
        assert!(f.records.is_empty());
    }
}
