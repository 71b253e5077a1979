//! The embedded store's facts on disk: append-only segment files, one checksummed group of
//! facts per commit, one `pwrite` and one `fdatasync` each.
//!
//! Why not redb's B-tree, which held the facts before (schema version 2): measured at 256 calls
//! in flight, redb's commit was the largest single cost of the embedded store, 13.5 % of the
//! sidecar's CPU (~150 µs per commit whatever it carries: the tree's pages, its allocator state
//! and a header are written each time). A fact is only ever appended, read back in order at
//! start, and dropped wholesale once a compaction's snapshots cover it; a log of segment files
//! does exactly that. redb keeps what is small and rarely written: the schema version, each
//! org's snapshot, and the directory's lock.
//!
//! **Layout.** `journal/<number of its first fact, 20 digits>.facts`. A segment starts with a
//! 32-byte header (magic, format version, its first fact's number, CRC-32 of those) and then
//! holds groups, each at an 8-byte boundary:
//!
//! ```text
//! len: u32 | crc: u32 | first: u64 | records (len bytes: a u32 length and the fact's bytes (`fact_codec.rs`), each; zero padding to 8)
//! ```
//!
//! `crc` covers `first` and the records; the facts of a group are numbered from `first` on.
//! The file is zeroed ahead of the writes, in 1 MiB steps, so that a commit's `fdatasync` rarely
//! has to change the file's size (measured here: 50 µs of CPU per commit against 75 µs for
//! appending past the end), and a zero length marks the end of what was written.
//!
//! **Torn writes.** A crash may leave the group being written partly on disk. It was never
//! acknowledged (a caller hears ALLOW only after its group's `fdatasync`). So a damaged group is
//! taken for a torn write, and dropped with a warning, only where it can be one: in the last
//! segment, with no intact group after it. Anywhere else it is corruption, and the store refuses
//! to start ([`FactLogError::Corrupt`], naming the file and the offset) rather than replay a
//! history with a hole in it. The one case no log can tell apart: damage to the very last group
//! written reads as a torn write.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A segment's first bytes.
const MAGIC: &[u8; 8] = b"TGFACTS\0";
/// The segment format this build writes and reads.
const FORMAT: u32 = 1;
const HEADER: u64 = 32;
const GROUP_HEADER: usize = 16;
/// How far ahead of the writes a segment is zeroed.
const ZERO_STEP: u64 = 1 << 20;
const SUFFIX: &str = ".facts";
/// A segment being created, renamed to its `.facts` name once its header is durable.
const TMP_SUFFIX: &str = ".facts.tmp";
/// The writer starts a new segment past this size, so that a start never reads more than about
/// this much of one file into memory at once, even when compaction is off.
const SEGMENT_MAX: u64 = 64 << 20;
/// Fact numbers start at 1 and grow by one per fact; a segment claiming to start beyond this is
/// not one of ours (and its numbers could overflow).
const MAX_FIRST: u64 = 1 << 62;

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FactLogError {
    /// An I/O call on a journal file or its directory failed.
    #[error("journal {path}: {during}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the store was doing.
        during: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A segment is damaged where a torn write cannot explain it, or its facts are not
    /// numbered on from the segment before: the store refuses to start rather than replay a
    /// history with a hole in it.
    #[error(
        "journal {path}: corrupt at byte {offset}: {reason}; refusing to start (the file is left as it is)"
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A segment was written by a newer tiergate.
    #[error(
        "journal {path} has format {found}; this tiergate reads up to {FORMAT}: refusing to touch it"
    )]
    NewerFormat {
        /// The segment.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
}

fn io(path: &Path, during: &'static str) -> impl FnOnce(std::io::Error) -> FactLogError {
    move |source| FactLogError::Io {
        path: path.to_owned(),
        during,
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> FactLogError {
    FactLogError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}

/// One segment file, by the number of its first fact.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) first: u64,
}

/// The segments in `dir`, oldest first. Files of other names are left alone.
pub(crate) fn segments(dir: &Path) -> Result<Vec<Segment>, FactLogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir, "listing the segments"))? {
        let entry = entry.map_err(io(dir, "listing the segments"))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            path: entry.path(),
            first,
        });
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn header(first: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The group at `at` if it is intact: (its first fact's number, its records, where the next
/// group starts).
fn intact_group(b: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let head = b.get(at..at + GROUP_HEADER)?;
    let len = u32_at(head, 0) as usize;
    if len == 0 || len % 8 != 0 {
        return None;
    }
    let end = at.checked_add(GROUP_HEADER)?.checked_add(len)?;
    let body = b.get(at + 8..end)?;
    (crc32fast::hash(body) == u32_at(head, 4)).then(|| (u64_at(head, 8), &body[8..], end))
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// The number of the last intact fact (or one before the last segment's first, when it
    /// holds none); 0 when there are no segments.
    pub(crate) last: u64,
    /// A torn write dropped at the end of the last segment: (the segment, the offset).
    pub(crate) torn: Option<(PathBuf, u64)>,
}

/// Reads every segment in `dir` in order and hands each fact's number and bytes to `each`.
/// Checks that the numbers run on without a gap from segment to segment; see the module docs
/// for what a damaged group means.
pub(crate) fn replay<E: From<FactLogError>>(
    dir: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Replayed, E> {
    let segs = segments(dir)?;
    let mut out = Replayed::default();
    let mut next: Option<u64> = None;
    for (i, seg) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        let b = std::fs::read(&seg.path).map_err(io(&seg.path, "reading a segment"))?;
        check_header(seg, &b)?;
        if let Some(n) = next
            && n != seg.first
        {
            return Err(corrupt(
                &seg.path,
                0,
                format!(
                    "it starts at fact {}, the segment before ends at {}",
                    seg.first,
                    n.saturating_sub(1)
                ),
            )
            .into());
        }
        let mut expect = seg.first;
        let mut at = HEADER as usize;
        loop {
            match intact_group(&b, at) {
                Some((first, records, end)) => {
                    if first != expect {
                        return Err(corrupt(
                            &seg.path,
                            at as u64,
                            format!("a group starts at fact {first}, expected {expect}"),
                        )
                        .into());
                    }
                    let mut r = 0usize;
                    while r + 4 <= records.len() {
                        let len = u32_at(records, r) as usize;
                        if len == 0 {
                            break; // padding
                        }
                        let Some(fact) = records.get(r + 4..r + 4 + len) else {
                            return Err(corrupt(
                                &seg.path,
                                at as u64,
                                "a record runs past its group",
                            )
                            .into());
                        };
                        each(expect, fact)?;
                        expect = expect.checked_add(1).ok_or_else(|| {
                            corrupt(&seg.path, at as u64, "fact numbers overflow")
                        })?;
                        r += 4 + len;
                    }
                    at = end;
                }
                None => {
                    // Where the written part ends: zeros to the end (a clean end), or damage.
                    let rest = b.get(at..).unwrap_or_default();
                    if rest.iter().all(|&x| x == 0) {
                        break;
                    }
                    if let Some(later) = (at + 8..b.len())
                        .step_by(8)
                        .find(|&y| intact_group(&b, y).is_some())
                    {
                        return Err(corrupt(
                            &seg.path,
                            at as u64,
                            format!("a damaged group, with an intact one after it at byte {later}"),
                        )
                        .into());
                    }
                    if !last_segment {
                        return Err(corrupt(
                            &seg.path,
                            at as u64,
                            "a damaged group at the end of a segment that is not the last",
                        )
                        .into());
                    }
                    tracing::warn!(
                        segment = %seg.path.display(),
                        offset = at,
                        "dropping a torn write at the end of the journal (it was never acknowledged)"
                    );
                    out.torn = Some((seg.path.clone(), at as u64));
                    break;
                }
            }
        }
        next = Some(expect);
        out.last = out.last.max(expect - 1);
    }
    Ok(out)
}

fn check_header(seg: &Segment, b: &[u8]) -> Result<(), FactLogError> {
    let Some(h) = b.get(..HEADER as usize) else {
        return Err(corrupt(&seg.path, 0, "shorter than a segment header"));
    };
    if &h[..8] != MAGIC || crc32fast::hash(&h[..24]) != u32_at(h, 24) {
        return Err(corrupt(&seg.path, 0, "not a segment header"));
    }
    let format = u32_at(h, 8);
    if format > FORMAT {
        return Err(FactLogError::NewerFormat {
            path: seg.path.clone(),
            found: format,
        });
    }
    let first = u64_at(h, 16);
    if first == 0 || first > MAX_FIRST {
        return Err(corrupt(
            &seg.path,
            16,
            format!("it starts at fact {first}, which no journal numbers"),
        ));
    }
    if first != seg.first {
        return Err(corrupt(
            &seg.path,
            16,
            format!("its header says it starts at fact {first}"),
        ));
    }
    Ok(())
}

/// Removes every segment whose facts are all numbered up to `upto` (a compaction's snapshots
/// cover them): each one followed by a segment that starts at or before `upto + 1`. The last
/// segment, the one being written, always stays. Returns how many were removed.
pub(crate) fn drop_covered(dir: &Path, upto: u64) -> Result<usize, FactLogError> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for pair in segs.windows(2) {
        if pair[1].first <= upto.saturating_add(1) {
            std::fs::remove_file(&pair[0].path).map_err(io(&pair[0].path, "removing a segment"))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Removes every segment, and any segment left half created (at start, once a compaction covers
/// them all, or they hold nothing intact), durably, before the writer creates its own: a crash
/// in between leaves no segment rather than an old one that could read as damaged.
pub(crate) fn drop_all(dir: &Path) -> Result<(), FactLogError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir, "listing the segments"))? {
        let entry = entry.map_err(io(dir, "listing the segments"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SUFFIX) || name.ends_with(TMP_SUFFIX) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io(&path, "removing a segment"))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), FactLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "syncing the journal directory"))
}

/// A group of facts being put together for one commit: each fact's bytes are appended with
/// [`Group::push_with`] (by the thread that records it), then [`FactLog::commit`] writes and
/// syncs the group.
#[derive(Debug, Default)]
pub(crate) struct Group {
    buf: Vec<u8>,
    first: u64,
    count: u64,
}

impl Group {
    /// Facts in it.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// The number of its last fact (meaningful once it holds one).
    pub(crate) fn last(&self) -> u64 {
        self.first + self.count.saturating_sub(1)
    }

    /// Appends fact number `seq` (the next after the group's last), written by `write`.
    pub(crate) fn push_with<E>(
        &mut self,
        seq: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.count == 0 {
            self.buf.clear();
            self.buf.resize(GROUP_HEADER, 0);
            self.first = seq;
        }
        debug_assert_eq!(seq, self.first + self.count, "facts are numbered in order");
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(at);
            return Err(e);
        }
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// The group's bytes, header filled in and padded.
    fn seal(&mut self) -> &[u8] {
        while self.buf.len() % 8 != 0 {
            self.buf.push(0);
        }
        let len = (self.buf.len() - GROUP_HEADER) as u32;
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        let first = self.first;
        self.buf[8..16].copy_from_slice(&first.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// The segment being written.
#[derive(Debug)]
pub(crate) struct FactLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Where the next group goes.
    at: u64,
    /// Bytes zeroed ahead so far.
    zeroed: u64,
    /// Whether a group was written to this segment.
    written: bool,
}

impl FactLog {
    /// Starts a new segment whose first fact is `first`, durable with its directory entry
    /// before any fact goes in. It is written under a temporary name and renamed once its
    /// header is on disk, so a crash never leaves a segment without one.
    pub(crate) fn create(dir: &Path, first: u64) -> Result<Self, FactLogError> {
        let path = segment_path(dir, first);
        let tmp = dir.join(format!("{first:020}{TMP_SUFFIX}"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp, "creating a segment"))?;
        file.write_all_at(&header(first), 0)
            .map_err(io(&tmp, "writing a segment header"))?;
        let mut log = FactLog {
            dir: dir.to_owned(),
            path: tmp,
            file,
            at: HEADER,
            zeroed: HEADER,
            written: false,
        };
        log.zero_ahead(HEADER)?;
        log.file
            .sync_all()
            .map_err(io(&log.path, "syncing a new segment"))?;
        std::fs::rename(&log.path, &path).map_err(io(&path, "naming a new segment"))?;
        log.path = path;
        sync_dir(dir)?;
        Ok(log)
    }

    /// Whether the segment is past [`SEGMENT_MAX`] and the next group should start a new one.
    pub(crate) fn is_full(&self) -> bool {
        self.at >= SEGMENT_MAX
    }

    /// The segment's file.
    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    /// Zeroes the file ahead of `upto` by at least [`ZERO_STEP`].
    fn zero_ahead(&mut self, upto: u64) -> Result<(), FactLogError> {
        if upto < self.zeroed {
            return Ok(());
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let target = upto + ZERO_STEP;
        while self.zeroed < target {
            let n = (target - self.zeroed).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..n], self.zeroed)
                .map_err(io(&self.path, "zeroing a segment ahead"))?;
            self.zeroed += n as u64;
        }
        Ok(())
    }

    /// Writes `group` and makes it durable (one `pwrite`, one `fdatasync`); the group is then
    /// empty again. Nothing is acknowledged before this returns `Ok`.
    pub(crate) fn commit(&mut self, group: &mut Group) -> Result<(), FactLogError> {
        if group.count == 0 {
            return Ok(());
        }
        let bytes = group.seal();
        let end = self.at + bytes.len() as u64;
        // Zeroed ahead of the write, so that the commit's `fdatasync` rarely changes the
        // file's size (the file was created empty: nothing stale lies beyond what was written).
        if end > self.zeroed {
            self.zero_ahead(end)?;
        }
        self.file
            .write_all_at(bytes, self.at)
            .map_err(io(&self.path, "writing facts"))?;
        self.file
            .sync_data()
            .map_err(io(&self.path, "syncing facts"))?;
        self.at = end;
        self.written = true;
        group.count = 0;
        Ok(())
    }

    /// Starts a new segment at `next` (the number the next fact will get), so that a
    /// compaction can later remove the ones before it whole. Nothing happens while the current
    /// one holds no fact.
    pub(crate) fn rotate(&mut self, next: u64) -> Result<(), FactLogError> {
        if !self.written {
            return Ok(());
        }
        *self = FactLog::create(&self.dir, next)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tiergate-fact-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes groups of facts `"f<seq>"`, one group per entry of `sizes`, from `first` on.
    fn write(log: &mut FactLog, first: u64, sizes: &[u64]) -> u64 {
        let mut seq = first;
        let mut g = Group::default();
        for &n in sizes {
            for _ in 0..n {
                g.push_with(seq, |b| {
                    b.extend_from_slice(format!("f{seq}").as_bytes());
                    Ok::<(), ()>(())
                })
                .unwrap();
                seq += 1;
            }
            log.commit(&mut g).unwrap();
        }
        seq
    }

    fn read_all(d: &Path) -> Result<(Vec<(u64, String)>, Replayed), FactLogError> {
        let mut got = Vec::new();
        let r = replay(d, |seq, b| {
            got.push((seq, String::from_utf8(b.to_vec()).unwrap()));
            Ok::<(), FactLogError>(())
        })?;
        Ok((got, r))
    }

    fn expect_seqs(got: &[(u64, String)], range: std::ops::RangeInclusive<u64>) {
        let want: Vec<(u64, String)> = range.map(|s| (s, format!("f{s}"))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn facts_come_back_in_order_across_segments() {
        let d = dir("order");
        let mut log = FactLog::create(&d, 1).unwrap();
        let next = write(&mut log, 1, &[1, 5, 3]);
        log.rotate(next).unwrap();
        log.rotate(next).unwrap(); // nothing written since: no new segment
        let next = write(&mut log, next, &[2, 7]);
        assert_eq!(segments(&d).unwrap().len(), 2);
        let (got, r) = read_all(&d).unwrap();
        expect_seqs(&got, 1..=next - 1);
        assert_eq!(r.last, next - 1);
        assert!(r.torn.is_none());
        // A segment zeroed ahead well past its writes still ends cleanly.
        assert!(std::fs::metadata(log.path()).unwrap().len() > ZERO_STEP);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_group_is_dropped_and_the_rest_kept() {
        let d = dir("torn");
        let mut log = FactLog::create(&d, 10).unwrap();
        write(&mut log, 10, &[3, 4]);
        let tail_at = log.at;
        write(&mut log, 17, &[5]);
        // The last group half written: its second half never reached the disk.
        let f = File::options().write(true).open(log.path()).unwrap();
        let half = (log.at - tail_at) / 2;
        f.write_all_at(&vec![0u8; half as usize], tail_at + half)
            .unwrap();
        let (got, r) = read_all(&d).unwrap();
        expect_seqs(&got, 10..=16);
        assert_eq!(r.torn.as_ref().map(|t| t.1), Some(tail_at));
        assert_eq!(r.last, 16);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn damage_with_an_intact_group_after_it_is_refused() {
        let d = dir("middle");
        let mut log = FactLog::create(&d, 1).unwrap();
        write(&mut log, 1, &[3]);
        let second = log.at;
        write(&mut log, 4, &[3, 3]);
        let f = File::options().write(true).open(log.path()).unwrap();
        f.write_all_at(b"X", second + GROUP_HEADER as u64 + 6)
            .unwrap();
        let err = read_all(&d).unwrap_err();
        assert!(
            matches!(&err, FactLogError::Corrupt { offset, .. } if *offset == second),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn damage_at_the_end_of_an_older_segment_is_refused() {
        let d = dir("older");
        let mut log = FactLog::create(&d, 1).unwrap();
        write(&mut log, 1, &[2, 2]);
        let old = log.path().to_owned();
        let end = log.at;
        log.rotate(5).unwrap();
        write(&mut log, 5, &[1]);
        let f = File::options().write(true).open(&old).unwrap();
        f.write_all_at(&[0xAB; 24], end - 24).unwrap();
        let err = read_all(&d).unwrap_err();
        assert!(
            matches!(&err, FactLogError::Corrupt { path, .. } if *path == old),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_segment_is_refused() {
        let d = dir("gap");
        let mut log = FactLog::create(&d, 1).unwrap();
        write(&mut log, 1, &[2]);
        let middle = {
            log.rotate(3).unwrap();
            write(&mut log, 3, &[2]);
            log.path().to_owned()
        };
        log.rotate(5).unwrap();
        write(&mut log, 5, &[2]);
        std::fs::remove_file(middle).unwrap();
        let err = read_all(&d).unwrap_err();
        assert!(matches!(err, FactLogError::Corrupt { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_newer_format_and_a_foreign_file_are_refused() {
        let d = dir("format");
        let log = FactLog::create(&d, 1).unwrap();
        let f = File::options().write(true).open(log.path()).unwrap();
        let mut h = header(1);
        h[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&h[..24]);
        h[24..28].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, 0).unwrap();
        assert!(matches!(
            read_all(&d).unwrap_err(),
            FactLogError::NewerFormat { found: 2, .. }
        ));
        f.write_all_at(b"not a segment", 0).unwrap();
        assert!(matches!(
            read_all(&d).unwrap_err(),
            FactLogError::Corrupt { offset: 0, .. }
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn implausible_fact_numbers_are_refused_not_wrapped() {
        for first in [0, u64::MAX] {
            let d = dir(&format!("numbers-{first}"));
            let path = segment_path(&d, first);
            std::fs::write(&path, header(first)).unwrap();
            let err = read_all(&d).unwrap_err();
            assert!(
                matches!(&err, FactLogError::Corrupt { offset: 16, .. }),
                "{first}: {err}"
            );
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_half_created_segment_is_ignored_and_removed_at_start() {
        let d = dir("tmp");
        let mut log = FactLog::create(&d, 1).unwrap();
        write(&mut log, 1, &[2]);
        // A crash while the next segment was being created: an empty temporary file.
        std::fs::write(d.join(format!("{:020}{TMP_SUFFIX}", 3)), b"").unwrap();
        let (got, _) = read_all(&d).unwrap();
        expect_seqs(&got, 1..=2);
        drop_all(&d).unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_removes_only_covered_segments() {
        let d = dir("covered");
        let mut log = FactLog::create(&d, 1).unwrap();
        let mut next = 1;
        for _ in 0..3 {
            next = write(&mut log, next, &[4]);
            log.rotate(next).unwrap();
        }
        // Segments start at 1, 5, 9, 13 (empty, being written).
        assert_eq!(
            drop_covered(&d, 7).unwrap(),
            1,
            "only 1..=4 is covered whole"
        );
        assert_eq!(drop_covered(&d, 12).unwrap(), 2);
        let left: Vec<u64> = segments(&d).unwrap().iter().map(|s| s.first).collect();
        assert_eq!(left, vec![13]);
        let (got, r) = read_all(&d).unwrap();
        assert!(got.is_empty());
        assert_eq!(
            r.last, 12,
            "an empty segment still says where numbering goes on"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
