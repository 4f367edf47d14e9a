//! Append-only segment files for large immutable values (raw webhooks, events).
//!
//! sled 0.34 rewrites whole leaves when a value changes its page, so a 4 KB body stored in a tree
//! was written to disk many times over (BENCHMARKS.md, section 2a). Bodies are written here once
//! instead, and sled keeps only a small [`Loc`] pointing at them.
//!
//! A segment is a file `NNNNNNNNNN.seg` of records `[len: u32 LE][crc32: u32 LE][payload]`, where
//! the payload is the value compressed with LZ4 (its size prepended) and the checksum covers the
//! payload. Appends go to the newest segment with one `pwrite` each (so a
//! record is in the OS before the index that points at it is written: a killed process keeps
//! both); a segment past its size (`store_segment_kb`, default [`MAX_SEGMENT_BYTES`]) is synced and closed, and a new one started. The
//! group commit calls [`Segments::sync`] before it flushes sled, so everything an acknowledged
//! write points at is on disk first. At open the newest segment is read through: a record that is
//! short or fails its checksum (a write torn by a crash or a full disk) and everything after it is
//! cut off, never read as data. Retention deletes whole segments.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::StoreError;

/// A segment grows to about this size before the next one starts (the default).
pub(crate) const MAX_SEGMENT_BYTES: u64 = 64 << 20;

/// No record is larger (a header announcing more is a torn write).
const MAX_RECORD_BYTES: u64 = 1 << 30;

const HEADER_BYTES: u64 = 8;

/// Where a record lives: segment number, offset of its header, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The segment files of one store.
#[derive(Clone)]
pub(crate) struct Segments {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    active: Mutex<Active>,
    /// Open read handles by segment number (the active one included).
    readers: Mutex<BTreeMap<u32, Arc<File>>>,
}

struct Active {
    number: u32,
    file: Arc<File>,
    len: u64,
}

/// What [`Segments::open`] found at the tail of the newest segment.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// The newest segment's number and its length once torn records were cut.
    pub(crate) segment: u32,
    pub(crate) valid_len: u64,
    /// Bytes cut off (a torn write).
    pub(crate) cut_bytes: u64,
}

impl Recovery {
    /// Whether `loc` points at data that did not survive (past the cut in the newest segment, or
    /// in a segment that no longer exists).
    pub(crate) fn lost(&self, loc: &Loc) -> bool {
        loc.segment > self.segment || (loc.segment == self.segment && loc.offset + HEADER_BYTES + u64::from(loc.len) > self.valid_len)
    }
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {error}", path.display()))
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:010}.seg"))
}

fn segment_number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

impl Segments {
    /// Open the segments in `dir` (created if missing), cutting a torn tail off the newest.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovery), StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| io_error("creating", dir, error))?;
        let numbers = list(dir)?;
        let number = numbers.last().copied().unwrap_or(1);
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| io_error("opening", &path, error))?;
        let on_disk = file.metadata().map_err(|error| io_error("reading", &path, error))?.len();
        let valid_len = valid_prefix(&file, &path)?;
        if valid_len < on_disk {
            tracing::warn!(segment = %path.display(), cut_bytes = on_disk - valid_len, "cutting a torn record off the newest segment (a write interrupted by a crash or a full disk)");
            file.set_len(valid_len).map_err(|error| io_error("truncating", &path, error))?;
            file.sync_all().map_err(|error| io_error("syncing", &path, error))?;
        }
        let file = Arc::new(file);
        let mut readers = BTreeMap::new();
        readers.insert(number, file.clone());
        let recovery = Recovery { segment: number, valid_len, cut_bytes: on_disk - valid_len };
        let inner = Inner {
            dir: dir.to_path_buf(),
            max_bytes,
            active: Mutex::new(Active { number, file, len: valid_len }),
            readers: Mutex::new(readers),
        };
        Ok((Self { inner: Arc::new(inner) }, recovery))
    }

    /// Append one record; where it is. In the OS when this returns, on disk after [`Segments::sync`].
    pub(crate) fn append(&self, value: &[u8]) -> Result<Loc, StoreError> {
        let payload = lz4_flex::block::compress_prepend_size(value);
        let len = u32::try_from(payload.len())
            .map_err(|_| StoreError::Backend(format!("a value of {} bytes is too large to store", payload.len())))?;
        let mut record = Vec::with_capacity(payload.len() + HEADER_BYTES as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let mut active = self.inner.active.lock().expect("segment lock poisoned");
        if active.len > 0 && active.len + record.len() as u64 > self.inner.max_bytes {
            self.rotate(&mut active)?;
        }
        let offset = active.len;
        if let Err(error) = active.file.write_all_at(&record, offset) {
            // The next append writes over whatever part of this one reached the file.
            return Err(io_error("writing", &segment_path(&self.inner.dir, active.number), error));
        }
        active.len += record.len() as u64;
        Ok(Loc { segment: active.number, offset, len })
    }

    fn rotate(&self, active: &mut Active) -> Result<(), StoreError> {
        let path = segment_path(&self.inner.dir, active.number);
        active.file.sync_data().map_err(|error| io_error("syncing", &path, error))?;
        let number = active.number + 1;
        let path = segment_path(&self.inner.dir, number);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| io_error("creating", &path, error))?;
        let file = Arc::new(file);
        self.inner.readers.lock().expect("segment readers lock poisoned").insert(number, file.clone());
        active.file = file;
        active.number = number;
        active.len = 0;
        sync_dir(&self.inner.dir)
    }

    /// Make every record appended before the call durable (a closed segment was synced when it
    /// was closed).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let (file, number) = {
            let active = self.inner.active.lock().expect("segment lock poisoned");
            (active.file.clone(), active.number)
        };
        file.sync_data().map_err(|error| io_error("syncing", &segment_path(&self.inner.dir, number), error))
    }

    /// Read a record's value, checking its length and checksum.
    pub(crate) fn read(&self, loc: Loc) -> Result<Vec<u8>, StoreError> {
        let file = self.reader(loc.segment)?;
        let mut record = vec![0; HEADER_BYTES as usize + loc.len as usize];
        let path = segment_path(&self.inner.dir, loc.segment);
        file.read_exact_at(&mut record, loc.offset).map_err(|error| corrupt(&path, loc, &error.to_string()))?;
        match check(&record) {
            Some(payload) if payload.len() == loc.len as usize => {
                lz4_flex::block::decompress_size_prepended(payload).map_err(|error| corrupt(&path, loc, &error.to_string()))
            }
            _ => Err(corrupt(&path, loc, "length or checksum does not match")),
        }
    }

    fn reader(&self, number: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self.inner.readers.lock().expect("segment readers lock poisoned");
        if let Some(file) = readers.get(&number) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.inner.dir, number);
        let file = Arc::new(
            File::open(&path).map_err(|error| StoreError::Codec { tree: "segments", message: format!("{}: {error}", path.display()) })?,
        );
        readers.insert(number, file.clone());
        Ok(file)
    }

    /// Segment numbers on disk, oldest first, and the active one.
    pub(crate) fn numbers(&self) -> Result<(Vec<u32>, u32), StoreError> {
        let active = self.inner.active.lock().expect("segment lock poisoned").number;
        Ok((list(&self.inner.dir)?, active))
    }

    /// Delete a closed segment (retention). The active segment is never deleted.
    pub(crate) fn delete(&self, number: u32) -> Result<u64, StoreError> {
        if number >= self.inner.active.lock().expect("segment lock poisoned").number {
            return Ok(0);
        }
        self.inner.readers.lock().expect("segment readers lock poisoned").remove(&number);
        let path = segment_path(&self.inner.dir, number);
        let size = std::fs::metadata(&path).map(|metadata| metadata.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(io_error("deleting", &path, error)),
        }
    }

    /// When a segment was last written (Unix ms).
    pub(crate) fn modified_ms(&self, number: u32) -> Option<u64> {
        let modified = std::fs::metadata(segment_path(&self.inner.dir, number)).ok()?.modified().ok()?;
        modified.duration_since(std::time::UNIX_EPOCH).ok().map(|elapsed| elapsed.as_millis() as u64)
    }

    /// Bytes in all segments.
    pub(crate) fn bytes(&self) -> u64 {
        list(&self.inner.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|number| std::fs::metadata(segment_path(&self.inner.dir, number)).ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

fn corrupt(path: &Path, loc: Loc, message: &str) -> StoreError {
    StoreError::Codec { tree: "segments", message: format!("{} at {}: {message}", path.display(), loc.offset) }
}

/// The payload of a whole record, if its header and checksum hold.
fn check(record: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(record.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(record.get(4..8)?.try_into().ok()?);
    let payload = record.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// The length of the longest prefix of whole, valid records.
fn valid_prefix(file: &File, path: &Path) -> Result<u64, StoreError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut valid = 0u64;
    let mut header = [0u8; HEADER_BYTES as usize];
    let mut payload = Vec::new();
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(valid),
            Err(error) => return Err(io_error("reading", path, error)),
        }
        let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as u64;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        if len > MAX_RECORD_BYTES {
            return Ok(valid);
        }
        payload.resize(len as usize, 0);
        match reader.read_exact(&mut payload) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(valid),
            Err(error) => return Err(io_error("reading", path, error)),
        }
        if crc32fast::hash(&payload) != crc {
            return Ok(valid);
        }
        valid += HEADER_BYTES + len;
    }
}

fn list(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut numbers: Vec<u32> = std::fs::read_dir(dir)
        .map_err(|error| io_error("listing", dir, error))?
        .filter_map(|entry| entry.ok().and_then(|entry| segment_number(&entry.path())))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|dir_handle| dir_handle.sync_all()).map_err(|error| io_error("syncing", dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, recovery) = Segments::open(dir.path(), MAX_SEGMENT_BYTES).unwrap();
        assert_eq!(recovery.cut_bytes, 0);
        let first = segments.append(b"first record").unwrap();
        let second = segments.append(&[7u8; 5000]).unwrap();
        assert_eq!(segments.read(first).unwrap(), b"first record");
        assert_eq!(segments.read(second).unwrap(), vec![7u8; 5000]);
        segments.sync().unwrap();
        drop(segments);

        // A crash in the middle of a third append: its header and half its payload reached the file.
        let path = segment_path(dir.path(), first.segment);
        let mut torn = Vec::new();
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&crc32fast::hash(&[1u8; 100]).to_le_bytes());
        torn.extend_from_slice(&[1u8; 50]);
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, &torn).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();

        let (segments, recovery) = Segments::open(dir.path(), MAX_SEGMENT_BYTES).unwrap();
        assert_eq!(recovery.cut_bytes, torn.len() as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before - torn.len() as u64);
        assert!(!recovery.lost(&second));
        let end_of_second = second.offset + HEADER_BYTES + u64::from(second.len);
        assert!(recovery.lost(&Loc { segment: first.segment, offset: end_of_second, len: 100 }));
        assert_eq!(segments.read(second).unwrap(), vec![7u8; 5000]);
        // The next record goes where the torn one was and reads back whole.
        let third = segments.append(b"third").unwrap();
        assert_eq!(third.offset, end_of_second);
        assert_eq!(segments.read(third).unwrap(), b"third");
    }

    #[test]
    fn a_flipped_byte_is_detected_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, _) = Segments::open(dir.path(), MAX_SEGMENT_BYTES).unwrap();
        let loc = segments.append(b"payload that will be damaged").unwrap();
        let path = segment_path(dir.path(), loc.segment);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", loc.offset + HEADER_BYTES + 3).unwrap();
        let error = segments.read(loc).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        drop(segments);
        // At open the damaged (newest) record is cut: it could be a torn write.
        let (_, recovery) = Segments::open(dir.path(), MAX_SEGMENT_BYTES).unwrap();
        assert!(recovery.lost(&loc));
    }

    #[test]
    fn a_full_segment_rotates_and_old_segments_delete_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, _) = Segments::open(dir.path(), 1 << 20).unwrap();
        // Values that do not compress: a record of half a segment.
        let big: Vec<u8> = (0..1u32 << 17).flat_map(|n| n.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
        let a = segments.append(&big).unwrap();
        let b = segments.append(&big).unwrap();
        assert_eq!(a.segment + 1, b.segment, "the second half-segment record starts a new segment");
        segments.sync().unwrap();
        assert_eq!(segments.read(a).unwrap().len(), big.len());
        assert!(segments.delete(a.segment).unwrap() > 0);
        assert!(segments.read(a).is_err());
        assert_eq!(segments.delete(b.segment).unwrap(), 0, "the active segment is never deleted");
        assert_eq!(segments.read(b).unwrap().len(), big.len());
    }
}
