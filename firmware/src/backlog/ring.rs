//! The on-disk ring: GOP records in append-only chunk files, oldest chunk
//! deleted first when the budget is reached. Invariants and the order of
//! syncs: docs/design/backlog.md.
//!
//! ```text
//! <dir>/<chunk number, 16 hex digits>.log   records (see super::record), appended
//! <dir>/cursor                              highest record id acknowledged contiguously
//! ```
//!
//! Plain blocking file I/O; [`super::Backlog`] runs it on the blocking pool.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Gop, RecordError, RECORD_HEADER_LEN};

/// Smallest chunk file the ring rolls at.
pub const MIN_CHUNK_BYTES: u64 = 64 * 1024;
/// Largest chunk file the ring rolls at.
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;
/// Chunks per ring: eviction frees about 1/16 of the budget at a time, so
/// "oldest first" stays fine-grained while the directory stays small.
const CHUNKS_PER_RING: u64 = 16;
/// The cursor file is rewritten after this many acknowledgements (and when a
/// chunk is deleted, and at close). A crash re-uploads at most this many
/// GOPs, which the server recognises and skips.
const CURSOR_EVERY: u32 = 8;

const CURSOR_FILE: &str = "cursor";

/// Why a ring operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// A file operation failed.
    #[error("backlog {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The GOP cannot become a record (empty, no keyframe first, too large
    /// for the record format or for the whole ring).
    #[error("GOP not stored: {0}")]
    Record(#[from] RecordError),
    /// The GOP alone is larger than the ring's budget.
    #[error("a {len}-byte GOP does not fit a {max}-byte backlog")]
    TooLarge {
        /// Encoded length.
        len: u64,
        /// The budget.
        max: u64,
    },
    /// No pending record has this id.
    #[error("no pending backlog record {0}")]
    Unknown(u64),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RingError + '_ {
    move |source| RingError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What recovery found at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Chunk files read.
    pub chunks: usize,
    /// Records still to upload.
    pub pending: usize,
    /// Records already acknowledged before the restart (skipped).
    pub acknowledged: usize,
    /// Bytes cut off chunk tails that held a torn or corrupt record.
    pub torn_bytes: u64,
    /// Chunk files whose tail was cut.
    pub torn_chunks: usize,
    /// Leftover temporary files removed.
    pub temp_removed: usize,
    /// Chunk files holding records of a newer format than this firmware
    /// reads (written before a rollback): left as they are, counted in the
    /// budget, and deleted only by eviction.
    pub foreign_chunks: usize,
}

/// Counters since open (plus what recovery found pending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RingStatus {
    /// GOPs waiting for upload.
    pub gops: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Bytes the chunk files take on disk (pending plus acknowledged records
    /// in a chunk not yet deleted).
    pub disk_bytes: u64,
    /// The budget.
    pub capacity_bytes: u64,
    /// Capture time of the oldest waiting GOP's keyframe (µs, camera clock).
    pub oldest_capture_us: Option<u64>,
    /// GOPs appended since start.
    pub stored_gops: u64,
    /// GOPs the server acknowledged since start.
    pub uploaded_gops: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// GOPs deleted unsent because the ring was full (oldest first) or a
    /// record was unreadable.
    pub dropped_gops: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordMeta {
    id: u64,
    offset: u64,
    len: u64,
    capture_us: u64,
}

#[derive(Debug)]
struct Chunk {
    number: u64,
    /// File length (every record in it, acknowledged or not).
    bytes: u64,
    /// Records not yet acknowledged, in id order.
    pending: VecDeque<RecordMeta>,
    /// From some offset on it holds records of a newer format version:
    /// kept until evicted, never cut or deleted for being acknowledged.
    foreign: bool,
}

/// The ring; see the module docs.
#[derive(Debug)]
pub struct Ring {
    dir: PathBuf,
    max_bytes: u64,
    chunk_bytes: u64,
    chunks: VecDeque<Chunk>,
    /// Append handle of the newest chunk, if it is still being filled.
    tail: Option<File>,
    next_id: u64,
    next_chunk: u64,
    /// Acknowledged ids that are not at the front yet (acks out of order).
    acked: BTreeSet<u64>,
    cursor: Option<u64>,
    acks_since_cursor: u32,
    status: RingStatus,
}

fn chunk_name(number: u64) -> String {
    format!("{number:016x}.log")
}

fn parse_chunk_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> Result<(), RingError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Ring {
    /// The chunk size for a budget.
    pub fn chunk_bytes_for(max_bytes: u64) -> u64 {
        (max_bytes / CHUNKS_PER_RING).clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    }

    /// Opens (creating) the ring in `dir` with a budget of `max_bytes`,
    /// recovering from whatever a crash or power cut left (see
    /// docs/design/backlog.md, "Recovery").
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Ring, Recovery), RingError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut recovery = Recovery::default();
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                recovery.temp_removed += 1;
            } else if let Some(n) = parse_chunk_name(&name) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let cursor = read_cursor(&dir.join(CURSOR_FILE));
        let mut ring = Ring {
            dir: dir.to_owned(),
            max_bytes,
            chunk_bytes: Self::chunk_bytes_for(max_bytes),
            chunks: VecDeque::new(),
            tail: None,
            next_id: cursor.map_or(0, |c| c + 1),
            next_chunk: numbers.last().map_or(0, |n| n + 1),
            acked: BTreeSet::new(),
            cursor,
            acks_since_cursor: 0,
            status: RingStatus {
                capacity_bytes: max_bytes,
                ..RingStatus::default()
            },
        };
        let mut removed = false;
        for number in numbers {
            recovery.chunks += 1;
            let chunk = ring.scan_chunk(number, &mut recovery)?;
            if chunk.pending.is_empty() && !chunk.foreign {
                let path = ring.chunk_path(number);
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed = true;
            } else {
                ring.chunks.push_back(chunk);
            }
        }
        if removed || recovery.temp_removed > 0 {
            sync_dir(dir)?;
        }
        recovery.pending = ring.chunks.iter().map(|c| c.pending.len()).sum();
        // A smaller budget than last time: the oldest go first, as always.
        while ring.disk_bytes() > ring.max_bytes && !ring.chunks.is_empty() {
            ring.evict_oldest()?;
        }
        ring.refresh_status();
        Ok((ring, recovery))
    }

    fn chunk_path(&self, number: u64) -> PathBuf {
        self.dir.join(chunk_name(number))
    }

    /// Reads a chunk record by record; cuts it at the first record that is
    /// torn (incomplete) or corrupt (bad magic, length or checksum).
    fn scan_chunk(&mut self, number: u64, recovery: &mut Recovery) -> Result<Chunk, RingError> {
        let path = self.chunk_path(number);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        let mut chunk = Chunk {
            number,
            bytes: 0,
            pending: VecDeque::new(),
            foreign: false,
        };
        let mut offset = 0u64;
        let mut buf = Vec::new();
        let mut reader = std::io::BufReader::new(&mut file);
        loop {
            if offset == file_len {
                break;
            }
            match read_record(&mut reader, file_len - offset, &mut buf) {
                Ok(Some((summary, len))) => {
                    self.next_id = self.next_id.max(summary.id + 1);
                    if self.cursor.is_some_and(|c| summary.id <= c) {
                        recovery.acknowledged += 1;
                    } else {
                        chunk.pending.push_back(RecordMeta {
                            id: summary.id,
                            offset,
                            len,
                            capture_us: summary.capture_us,
                        });
                    }
                    offset += len;
                }
                Err(RecordError::UnsupportedVersion { version }) => {
                    // Not damage: newer firmware wrote it before a rollback.
                    // Cutting it off would lose video an update could
                    // still upload.
                    tracing::warn!(
                        chunk = %path.display(),
                        offset,
                        version,
                        "backlog chunk holds records of format version {version}, newer than this firmware reads; leaving them on disk (the oldest go first when the backlog is full)"
                    );
                    chunk.foreign = true;
                    recovery.foreign_chunks += 1;
                    offset = file_len;
                    break;
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        chunk = %path.display(),
                        offset,
                        cut = file_len - offset,
                        "backlog chunk ends in a torn or corrupt record; cutting it off"
                    );
                    drop(reader);
                    file.set_len(offset).map_err(io_err(&path))?;
                    file.sync_data().map_err(io_err(&path))?;
                    recovery.torn_bytes += file_len - offset;
                    recovery.torn_chunks += 1;
                    break;
                }
            }
        }
        chunk.bytes = offset;
        Ok(chunk)
    }

    /// Bytes on disk in chunk files.
    pub fn disk_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.bytes).sum()
    }

    /// Counters and sizes.
    pub fn status(&self) -> RingStatus {
        self.status
    }

    fn refresh_status(&mut self) {
        let pending = self
            .chunks
            .iter()
            .flat_map(|c| c.pending.iter())
            .filter(|r| !self.acked.contains(&r.id));
        let (mut gops, mut bytes) = (0, 0);
        for r in pending {
            gops += 1;
            bytes += r.len;
        }
        self.status.gops = gops;
        self.status.bytes = bytes;
        self.status.disk_bytes = self.disk_bytes();
        self.status.oldest_capture_us = self
            .chunks
            .iter()
            .find_map(|c| c.pending.front())
            .map(|r| r.capture_us);
    }

    /// Appends a GOP durably (written and `fdatasync`ed before this returns);
    /// returns its record id. Deletes the oldest chunks first if the budget
    /// requires.
    pub fn append(&mut self, gop: &Gop) -> Result<u64, RingError> {
        let id = self.next_id;
        let bytes = record::encode(id, gop)?;
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            self.status.dropped_gops += 1;
            self.status.dropped_bytes += len;
            return Err(RingError::TooLarge {
                len,
                max: self.max_bytes,
            });
        }
        while self.disk_bytes() + len > self.max_bytes && !self.chunks.is_empty() {
            self.evict_oldest()?;
        }
        let result = self.write_record(id, &bytes, gop.capture_us());
        if let Err(RingError::Io { source, .. }) = &result {
            // The data partition is shared: when it is full, make room at
            // our own oldest end and try once more.
            if is_no_space(source) && self.chunks.len() > 1 {
                self.evict_oldest()?;
                self.write_record(id, &bytes, gop.capture_us())?;
            } else {
                result?;
            }
        }
        self.next_id += 1;
        self.status.stored_gops += 1;
        self.refresh_status();
        Ok(id)
    }

    fn write_record(&mut self, id: u64, bytes: &[u8], capture_us: u64) -> Result<(), RingError> {
        let roll = match (self.tail.as_ref(), self.chunks.back()) {
            (Some(_), Some(c)) => c.bytes >= self.chunk_bytes,
            _ => true,
        };
        if roll {
            let number = self.next_chunk;
            let path = self.chunk_path(number);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // The new name must be durable before records in it count.
            sync_dir(&self.dir)?;
            self.next_chunk += 1;
            self.tail = Some(file);
            self.chunks.push_back(Chunk {
                number,
                bytes: 0,
                pending: VecDeque::new(),
                foreign: false,
            });
        }
        let (Some(file), Some(chunk)) = (self.tail.as_mut(), self.chunks.back_mut()) else {
            return Err(RingError::Unknown(id));
        };
        let path = self.dir.join(chunk_name(chunk.number));
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial record behind a later good one: cut back.
            let _ = file.set_len(chunk.bytes);
            let _ = file.sync_data();
            return Err(RingError::Io { path, source: e });
        }
        chunk.pending.push_back(RecordMeta {
            id,
            offset: chunk.bytes,
            len: bytes.len() as u64,
            capture_us,
        });
        chunk.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Deletes the oldest chunk, counting its unsent GOPs as dropped.
    fn evict_oldest(&mut self) -> Result<(), RingError> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(());
        };
        if self.chunks.is_empty() {
            self.tail = None;
        }
        let lost: Vec<&RecordMeta> = chunk
            .pending
            .iter()
            .filter(|r| !self.acked.contains(&r.id))
            .collect();
        let lost_bytes: u64 = lost.iter().map(|r| r.len).sum();
        if !lost.is_empty() {
            tracing::warn!(
                gops = lost.len(),
                bytes = lost_bytes,
                oldest_capture_us = lost.first().map(|r| r.capture_us),
                "backlog full: deleting the oldest recorded GOPs"
            );
        }
        self.status.dropped_gops += lost.len() as u64;
        self.status.dropped_bytes += lost_bytes;
        if let Some(last) = chunk.pending.back() {
            self.acked.retain(|&id| id > last.id);
            self.cursor = Some(self.cursor.map_or(last.id, |c| c.max(last.id)));
        }
        let path = self.chunk_path(chunk.number);
        fs::remove_file(&path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.persist_cursor()
    }

    /// The first pending record with an id above `after` (all of them when
    /// `after` is `None`), in upload order.
    pub fn next_pending(&self, after: Option<u64>) -> Option<u64> {
        self.chunks
            .iter()
            .flat_map(|c| c.pending.iter())
            .map(|r| r.id)
            .find(|&id| after.is_none_or(|a| id > a) && !self.acked.contains(&id))
    }

    fn find(&self, id: u64) -> Option<(&Chunk, &RecordMeta)> {
        self.chunks
            .iter()
            .find(|c| c.pending.back().is_some_and(|r| r.id >= id))
            .and_then(|c| c.pending.iter().find(|r| r.id == id).map(|r| (c, r)))
    }

    /// Reads a pending record back. A record that no longer verifies (the
    /// card corrupted it after it was written) is dropped and counted.
    pub fn read(&mut self, id: u64) -> Result<Gop, RingError> {
        let Some((chunk, meta)) = self.find(id) else {
            return Err(RingError::Unknown(id));
        };
        let meta = *meta;
        let path = self.chunk_path(chunk.number);
        let mut buf = vec![0u8; meta.len as usize];
        let read = File::open(&path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(meta.offset))?;
                f.read_exact(&mut buf)
            })
            .map_err(io_err(&path));
        let decoded = read.and_then(|()| Ok(record::decode(&buf)?));
        match decoded {
            Ok((summary, gop)) if summary.id == id => Ok(gop),
            Ok(_) => self.drop_unreadable(id, RecordError::Malformed("record id differs")),
            Err(RingError::Record(e)) => self.drop_unreadable(id, e),
            Err(e) => Err(e),
        }
    }

    fn drop_unreadable(&mut self, id: u64, why: RecordError) -> Result<Gop, RingError> {
        tracing::warn!(id, "backlog record unreadable ({why}); dropping it");
        let len = self.find(id).map_or(0, |(_, r)| r.len);
        self.status.dropped_gops += 1;
        self.status.dropped_bytes += len;
        self.remove_acked(id)?;
        Err(RingError::Record(why))
    }

    /// The server has recorded record `id`: forget it. Chunks whose records
    /// are all acknowledged are deleted.
    pub fn ack(&mut self, id: u64) -> Result<bool, RingError> {
        let Some(len) = self.find(id).map(|(_, r)| r.len) else {
            return Ok(false);
        };
        self.status.uploaded_gops += 1;
        self.status.uploaded_bytes += len;
        self.remove_acked(id)?;
        Ok(true)
    }

    fn remove_acked(&mut self, id: u64) -> Result<(), RingError> {
        self.acked.insert(id);
        let mut deleted = false;
        // Foreign chunks (a newer format's records) are passed over: only
        // eviction deletes them.
        let mut at = 0;
        while let Some(front) = self.chunks.get_mut(at) {
            while let Some(r) = front.pending.front() {
                if !self.acked.remove(&r.id) {
                    break;
                }
                self.cursor = Some(r.id);
                self.acks_since_cursor += 1;
                front.pending.pop_front();
            }
            if !front.pending.is_empty() {
                break;
            }
            if front.foreign {
                at += 1;
                continue;
            }
            let number = front.number;
            self.chunks.remove(at);
            if at == self.chunks.len() {
                // The newest chunk went: the next append starts another.
                self.tail = None;
            }
            let path = self.chunk_path(number);
            fs::remove_file(&path).map_err(io_err(&path))?;
            deleted = true;
        }
        if deleted {
            sync_dir(&self.dir)?;
            self.persist_cursor()?;
        } else if self.acks_since_cursor >= CURSOR_EVERY {
            self.persist_cursor()?;
        }
        self.refresh_status();
        Ok(())
    }

    /// Writes the cursor durably (temporary file, sync, rename, sync dir).
    pub fn persist_cursor(&mut self) -> Result<(), RingError> {
        self.acks_since_cursor = 0;
        let Some(cursor) = self.cursor else {
            return Ok(());
        };
        let tmp = self.dir.join("cursor.tmp");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(format!("{cursor}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        let path = self.dir.join(CURSOR_FILE);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)
    }
}

fn read_cursor(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    match text.trim().parse() {
        Ok(c) => Some(c),
        Err(_) => {
            // Only costs re-uploads (the server skips what it has).
            tracing::warn!(path = %path.display(), "backlog cursor unreadable; ignoring it");
            None
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Reads one record from `r` (at most `left` bytes remain in the file):
/// `Ok(None)` when the record is torn (the file ends inside it).
fn read_record(
    r: &mut impl Read,
    left: u64,
    buf: &mut Vec<u8>,
) -> Result<Option<(record::RecordSummary, u64)>, RecordError> {
    if left < RECORD_HEADER_LEN as u64 {
        return Ok(None);
    }
    buf.resize(RECORD_HEADER_LEN, 0);
    if r.read_exact(buf).is_err() {
        return Ok(None);
    }
    let len = record::record_len(buf)? as u64;
    if len > left {
        return Ok(None);
    }
    buf.resize(len as usize, 0);
    if r.read_exact(&mut buf[RECORD_HEADER_LEN..]).is_err() {
        return Ok(None);
    }
    let (summary, _) = record::decode(buf)?;
    Ok(Some((summary, len)))
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::gop;
    use super::*;

    fn open(dir: &Path, max: u64) -> Ring {
        Ring::open(dir, max).expect("opens").0
    }

    #[test]
    fn appends_survive_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 10 << 20);
        let ids: Vec<u64> = (0..5)
            .map(|i| ring.append(&gop(i * 30, 30, 100)).expect("append"))
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4]);
        drop(ring);
        let (mut ring, rec) = Ring::open(dir.path(), 10 << 20).expect("reopen");
        assert_eq!(rec.pending, 5);
        assert_eq!(rec.torn_bytes, 0);
        let mut after = None;
        let mut seen = Vec::new();
        while let Some(id) = ring.next_pending(after) {
            let g = ring.read(id).expect("read");
            seen.push(g.frames[0].sequence);
            after = Some(id);
        }
        assert_eq!(seen, vec![0, 30, 60, 90, 120]);
        // New records continue the numbering.
        assert_eq!(ring.append(&gop(150, 30, 100)).expect("append"), 5);
    }

    #[test]
    fn acknowledged_records_stay_forgotten_after_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 10 << 20);
        for i in 0..4 {
            ring.append(&gop(i * 10, 10, 50)).expect("append");
        }
        // Out of order: 1 alone does not move the front.
        assert!(ring.ack(1).expect("ack"));
        assert_eq!(ring.status().gops, 3);
        assert_eq!(ring.next_pending(None), Some(0));
        assert_eq!(ring.next_pending(Some(0)), Some(2));
        ring.ack(0).expect("ack");
        ring.persist_cursor().expect("cursor");
        drop(ring);
        let (ring, rec) = Ring::open(dir.path(), 10 << 20).expect("reopen");
        assert_eq!((rec.pending, rec.acknowledged), (2, 2));
        assert_eq!(ring.next_pending(None), Some(2));
        assert!(!open_ack_unknown(ring));
    }

    fn open_ack_unknown(mut ring: Ring) -> bool {
        ring.ack(99).expect("unknown ids are ignored")
    }

    #[test]
    fn fully_acknowledged_chunks_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 64 KiB chunks; each GOP ~31 KiB: a chunk rolls after its third.
        let mut ring = open(dir.path(), 1 << 20);
        for i in 0..6 {
            ring.append(&gop(i * 30, 30, 1000)).expect("append");
        }
        let files = |d: &Path| {
            fs::read_dir(d)
                .expect("dir")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
                })
                .count()
        };
        assert_eq!(files(dir.path()), 2);
        for id in 0..6 {
            ring.ack(id).expect("ack");
        }
        assert_eq!(files(dir.path()), 0);
        assert_eq!(ring.status().gops, 0);
        assert_eq!(ring.status().uploaded_gops, 6);
    }

    #[test]
    fn full_ring_drops_oldest_first_and_counts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 256 * 1024; // four 64 KiB chunks
        let mut ring = open(dir.path(), max);
        for i in 0..40 {
            ring.append(&gop(i * 30, 30, 1000)).expect("append");
            assert!(ring.disk_bytes() <= max, "budget kept at {i}");
        }
        let s = ring.status();
        assert!(s.dropped_gops > 0, "{s:?}");
        assert_eq!(s.gops + s.dropped_gops, 40);
        // What is left is the newest, contiguous.
        let first = ring.next_pending(None).expect("some left");
        assert_eq!(first, s.dropped_gops);
        let g = ring.read(39).expect("newest kept");
        assert_eq!(g.frames[0].sequence, 39 * 30);
        let too_big = gop(0, 1, 300 * 1024);
        assert!(matches!(
            ring.append(&too_big),
            Err(RingError::TooLarge { .. })
        ));
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 10 << 20);
        for i in 0..3 {
            ring.append(&gop(i * 10, 10, 200)).expect("append");
        }
        drop(ring);
        let chunk = dir.path().join(chunk_name(0));
        let full = fs::read(&chunk).expect("read");
        let one = full.len() / 3;
        // A power cut in the middle of the third record's write, at every
        // interesting cut point: header, body, checksum-covered tail.
        for cut in [2 * one + 3, 2 * one + 20, full.len() - 1] {
            fs::write(&chunk, &full[..cut]).expect("tear");
            let (ring, rec) = Ring::open(dir.path(), 10 << 20).expect("recovers");
            assert_eq!(rec.pending, 2, "cut at {cut}");
            assert_eq!(rec.torn_bytes, (cut - 2 * one) as u64);
            assert_eq!(
                fs::metadata(&chunk).expect("meta").len(),
                2 * one as u64,
                "file cut back to the last whole record"
            );
            assert_eq!(ring.next_pending(Some(0)), Some(1));
            drop(ring);
            fs::write(&chunk, &full).expect("restore");
        }
        // Garbage (a sector of zeros) where the third record was.
        let mut bad = full.clone();
        for b in &mut bad[2 * one + 40..2 * one + 80] {
            *b = 0;
        }
        fs::write(&chunk, &bad).expect("corrupt");
        let (mut ring, rec) = Ring::open(dir.path(), 10 << 20).expect("recovers");
        assert_eq!((rec.pending, rec.torn_chunks), (2, 1));
        // Appending after recovery goes to a new chunk and reads back.
        let id = ring.append(&gop(100, 5, 10)).expect("append");
        assert_eq!(id, 2, "ids continue after the last valid record");
        assert_eq!(ring.read(id).expect("read").frames.len(), 5);
        // Leftover temporary files are removed.
        fs::write(dir.path().join("cursor.tmp"), b"1").expect("tmp");
        drop(ring);
        let (_, rec) = Ring::open(dir.path(), 10 << 20).expect("reopen");
        assert_eq!(rec.temp_removed, 1);
    }

    #[test]
    fn record_corrupted_after_writing_is_dropped_not_uploaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 10 << 20);
        ring.append(&gop(0, 10, 200)).expect("append");
        ring.append(&gop(10, 10, 200)).expect("append");
        let chunk = dir.path().join(chunk_name(0));
        let mut bytes = fs::read(&chunk).expect("read");
        bytes[100] ^= 0xff;
        fs::write(&chunk, &bytes).expect("corrupt");
        assert!(matches!(ring.read(0), Err(RingError::Record(_))));
        assert_eq!(ring.status().dropped_gops, 1);
        assert_eq!(ring.next_pending(None), Some(1));
        assert!(ring.read(1).is_ok());
    }

    #[test]
    fn smaller_budget_at_open_evicts_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 4 << 20);
        for i in 0..20 {
            ring.append(&gop(i * 30, 30, 1000)).expect("append");
        }
        drop(ring);
        let (ring, _) = Ring::open(dir.path(), 200 * 1024).expect("reopen");
        assert!(ring.disk_bytes() <= 200 * 1024);
        assert!(ring.status().dropped_gops > 0);
        assert_eq!(ring.status().gops + ring.status().dropped_gops, 20);
    }

    #[test]
    fn gops_with_audio_round_trip_through_the_ring() {
        use super::super::record::tests::gop_with_audio;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ring = open(dir.path(), 10 << 20);
        let g = gop_with_audio(0, 30, 500, 0, 50);
        let id = ring.append(&g).expect("append");
        drop(ring);
        let (mut ring, rec) = Ring::open(dir.path(), 10 << 20).expect("reopen");
        assert_eq!(rec.pending, 1);
        assert_eq!(ring.read(id).expect("read"), g);
        // Audio bytes count toward the budget like video.
        assert!(ring.status().bytes >= g.payload_bytes() as u64);
    }

    #[test]
    fn records_of_a_newer_format_are_left_alone_until_evicted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 256 * 1024; // four 64 KiB chunks
        let mut ring = open(dir.path(), max);
        for i in 0..3 {
            ring.append(&gop(i * 10, 10, 200)).expect("append");
        }
        drop(ring);
        // Newer firmware (before a rollback) wrote the last record.
        let chunk = dir.path().join(chunk_name(0));
        let mut bytes = fs::read(&chunk).expect("read");
        let one = bytes.len() / 3;
        bytes[2 * one + 3] = b'3';
        fs::write(&chunk, &bytes).expect("write");
        let (mut ring, rec) = Ring::open(dir.path(), max).expect("recovers");
        assert_eq!((rec.pending, rec.foreign_chunks, rec.torn_bytes), (2, 1, 0));
        assert_eq!(
            fs::metadata(&chunk).expect("meta").len(),
            bytes.len() as u64,
            "not cut off"
        );
        // Our records upload and are forgotten; the chunk stays.
        ring.ack(0).expect("ack");
        ring.ack(1).expect("ack");
        assert!(chunk.exists());
        let id = ring.append(&gop(100, 10, 200)).expect("append");
        ring.ack(id).expect("ack");
        assert!(chunk.exists(), "acknowledging later records keeps it");
        drop(ring);
        let (mut ring, rec) = Ring::open(dir.path(), max).expect("reopen");
        assert_eq!((rec.pending, rec.foreign_chunks), (0, 1));
        // A full backlog evicts it first, like any oldest chunk.
        for i in 0..40 {
            ring.append(&gop(i * 30, 30, 1000)).expect("append");
        }
        assert!(!chunk.exists());
        assert!(ring.disk_bytes() <= max);
    }
}
