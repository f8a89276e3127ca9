use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::*;

/// A file in memory whose page reads are counted, and can be made to fail or to wait.
#[derive(Default)]
struct TestFile {
    data: Vec<u8>,
    /// Pages read in.
    pages_read: AtomicUsize,
    /// Calls of `read_page` or `readahead`: device requests.
    requests: AtomicUsize,
    fail: AtomicBool,
    /// While set, a fill waits before returning.
    hold: AtomicBool,
    /// Set by a fill once it started.
    started: AtomicBool,
}

#[derive(Debug, PartialEq, Eq)]
struct Failed;

impl TestFile {
    fn new(len: usize) -> Self {
        Self {
            data: (0..len).map(|i| (i % 251) as u8).collect(),
            ..Self::default()
        }
    }

    fn mapping(&self) -> Mapping {
        let mapping = Mapping::new();
        mapping.set_size(self.data.len() as u64);
        mapping
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn fill(&self, index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Failed> {
        self.started.store(true, Ordering::SeqCst);
        wait_until("the test lets the fill finish", || {
            !self.hold.load(Ordering::SeqCst)
        });
        if self.fail.load(Ordering::SeqCst) {
            return Err(Failed);
        }

        let start = (index as usize * PAGE_SIZE).min(self.data.len());
        let end = (start + PAGE_SIZE).min(self.data.len());
        page.fill(0);
        page[..end - start].copy_from_slice(&self.data[start..end]);
        self.pages_read.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl AddressSpaceOps for TestFile {
    type Error = Failed;

    fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Failed> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.fill(index, page)
    }

    fn readahead(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), Failed> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        for (index, page) in (first..).zip(pages.iter_mut()) {
            self.fill(index, page)?;
        }
        Ok(())
    }
}

/// Spins until `condition` holds; panics after ten seconds.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

fn read_all(
    cache: &PageCache,
    mapping: &Mapping,
    file: &TestFile,
    offset: u64,
    len: usize,
    flags: ReadFlags,
) -> Result<(ReadOutcome, Vec<u8>), ReadError<Failed>> {
    let mut buf = std::vec![0xee; len];
    let outcome = cache.read(mapping, file, offset, &mut buf, flags)?;
    buf.truncate(outcome.bytes);
    Ok((outcome, buf))
}

#[test]
fn a_cached_only_read_of_nothing_cached_does_no_io() {
    let cache = PageCache::new(16);
    let file = TestFile::new(3 * PAGE_SIZE);
    let mapping = file.mapping();

    let result = read_all(&cache, &mapping, &file, 0, 100, ReadFlags::CACHED);

    assert_eq!(result.unwrap_err(), ReadError::NotCached);
    assert_eq!(file.requests(), 0);
    assert_eq!(cache.stats().misses, 1);
    assert_eq!(cache.cached_pages(), 0);
}

#[test]
fn a_miss_reads_a_run_in_one_request_and_then_hits() {
    let cache = PageCache::new(64);
    let file = TestFile::new(10 * PAGE_SIZE + 5);
    let mapping = file.mapping();

    let (outcome, bytes) =
        read_all(&cache, &mapping, &file, 100, PAGE_SIZE, ReadFlags::NONE).unwrap();
    assert_eq!(bytes, file.data[100..100 + PAGE_SIZE]);
    assert_eq!(outcome.end, ReadEnd::Complete);
    // The window (32 pages) is cut at the end of the file: 11 pages, one request.
    assert_eq!(file.requests(), 1);
    assert_eq!(cache.stats().pages_read, 11);
    assert_eq!(cache.stats().readahead_pages, 10);

    let before = cache.stats();
    let (_, bytes) = read_all(&cache, &mapping, &file, 0, 1 << 20, ReadFlags::CACHED).unwrap();
    assert_eq!(bytes, file.data);
    assert_eq!(file.requests(), 1);
    assert_eq!(cache.stats().hits - before.hits, 11);
    assert_eq!(cache.stats().misses, before.misses);
}

#[test]
fn a_cached_only_read_stops_at_the_first_missing_page() {
    let cache = PageCache::new(16);
    cache.set_readahead(1);
    let file = TestFile::new(4 * PAGE_SIZE);
    let mapping = file.mapping();
    read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE).unwrap();

    let (outcome, bytes) = read_all(
        &cache,
        &mapping,
        &file,
        10,
        3 * PAGE_SIZE,
        ReadFlags::CACHED,
    )
    .unwrap();

    assert_eq!(outcome.bytes, PAGE_SIZE - 10);
    assert_eq!(outcome.end, ReadEnd::Miss);
    assert_eq!(bytes, file.data[10..PAGE_SIZE]);
    assert_eq!(file.requests(), 1);
}

#[test]
fn reads_stop_at_the_size_and_need_a_valid_one() {
    let cache = PageCache::new(16);
    let file = TestFile::new(PAGE_SIZE + 7);
    let mapping = file.mapping();

    let (outcome, bytes) = read_all(&cache, &mapping, &file, 4000, 500, ReadFlags::NONE).unwrap();
    assert_eq!(bytes, file.data[4000..]);
    assert_eq!(outcome.end, ReadEnd::Complete);
    let (outcome, _) = read_all(&cache, &mapping, &file, 9000, 10, ReadFlags::CACHED).unwrap();
    assert_eq!(outcome.bytes, 0);

    // The size as the lock holder sets it, not the file's: a shorter size hides bytes.
    mapping.set_size(10);
    let (_, bytes) = read_all(&cache, &mapping, &file, 0, 100, ReadFlags::CACHED).unwrap();
    assert_eq!(bytes, file.data[..10]);

    cache.invalidate(&mapping);
    let cached = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::CACHED);
    assert_eq!(cached.unwrap_err(), ReadError::NotCached);
    let locked = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE);
    assert_eq!(locked.unwrap_err(), ReadError::SizeStale);
}

#[test]
fn invalidation_drops_every_page_of_one_mapping_only() {
    let cache = PageCache::new(32);
    let file = TestFile::new(3 * PAGE_SIZE);
    let (first, second) = (file.mapping(), file.mapping());
    read_all(&cache, &first, &file, 0, 3 * PAGE_SIZE, ReadFlags::NONE).unwrap();
    read_all(&cache, &second, &file, 0, 3 * PAGE_SIZE, ReadFlags::NONE).unwrap();

    assert_eq!(cache.invalidate(&first), 3);

    assert_eq!(cache.cached_pages(), 3);
    assert_eq!(cache.stats().invalidated, 3);
    assert_eq!(first.size(), None);
    assert_eq!(first.invalidations(), 1);
    assert_eq!(cache.page_state(&first, 0), None);
    assert_eq!(cache.page_state(&second, 0), Some(PageState::UpToDate));
}

#[test]
fn eviction_makes_room_but_never_takes_a_pinned_page() {
    let cache = PageCache::new(4);
    cache.set_readahead(1);
    let file = TestFile::new(16 * PAGE_SIZE);
    let mapping = file.mapping();
    let pinned = cache.fault(&mapping, &file, 0, FaultFlags::NONE).unwrap();

    let (_, bytes) = read_all(
        &cache,
        &mapping,
        &file,
        PAGE_SIZE as u64,
        15 * PAGE_SIZE,
        ReadFlags::NONE,
    )
    .unwrap();

    assert_eq!(bytes, file.data[PAGE_SIZE..]);
    assert!(cache.stats().evictions >= 12);
    assert_eq!(cache.page_state(&mapping, 0), Some(PageState::UpToDate));
    pinned.with_bytes(|page| assert_eq!(page[..], file.data[..PAGE_SIZE]));
    assert_eq!(cache.cached_pages(), 4);
}

#[test]
fn a_failed_fill_leaves_an_error_page_that_the_next_read_retries() {
    let cache = PageCache::new(8);
    cache.set_readahead(1);
    let file = TestFile::new(2 * PAGE_SIZE);
    let mapping = file.mapping();
    file.fail.store(true, Ordering::SeqCst);

    let failed = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE);
    assert_eq!(
        failed.unwrap_err(),
        ReadError::Fill {
            index: 0,
            source: Failed
        }
    );
    assert_eq!(cache.page_state(&mapping, 0), Some(PageState::Error));
    let cached = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::CACHED);
    assert_eq!(cached.unwrap_err(), ReadError::NotCached);

    file.fail.store(false, Ordering::SeqCst);
    let (_, bytes) = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE).unwrap();
    assert_eq!(bytes, file.data[..10]);
    assert_eq!(cache.page_state(&mapping, 0), Some(PageState::UpToDate));
    assert_eq!(file.requests(), 2);
}

#[test]
fn a_page_being_read_in_is_a_miss_for_cached_reads_and_waited_for_by_others() {
    let cache = PageCache::new(8);
    let file = TestFile::new(PAGE_SIZE);
    let mapping = file.mapping();
    file.hold.store(true, Ordering::SeqCst);

    std::thread::scope(|scope| {
        let filler = scope.spawn(|| read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE));
        wait_until("the fill started", || file.started.load(Ordering::SeqCst));
        assert_eq!(cache.page_state(&mapping, 0), Some(PageState::Locked));

        let cached = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::CACHED);
        assert_eq!(cached.unwrap_err(), ReadError::NotCached);
        let waiter = scope.spawn(|| read_all(&cache, &mapping, &file, 5, 10, ReadFlags::NONE));
        file.hold.store(false, Ordering::SeqCst);

        assert_eq!(filler.join().unwrap().unwrap().1, file.data[..10]);
        assert_eq!(waiter.join().unwrap().unwrap().1, file.data[5..15]);
    });
    assert_eq!(file.requests(), 1);
}

#[test]
fn a_cached_fault_retries_instead_of_reading() {
    let cache = PageCache::new(8);
    let file = TestFile::new(PAGE_SIZE + 1);
    let mapping = file.mapping();

    let retry = cache.fault(&mapping, &file, 1, FaultFlags::FAULT_CACHED);
    assert!(matches!(retry, Err(FaultError::Retry)));
    assert_eq!(file.requests(), 0);

    let page = cache.fault(&mapping, &file, 1, FaultFlags::NONE).unwrap();
    page.with_bytes(|bytes| {
        assert_eq!(bytes[0], file.data[PAGE_SIZE]);
        assert!(bytes[1..].iter().all(|&b| b == 0));
    });
    drop(page);
    assert!(
        cache
            .fault(&mapping, &file, 1, FaultFlags::FAULT_CACHED)
            .is_ok()
    );
    assert!(matches!(
        cache.fault(&mapping, &file, 2, FaultFlags::NONE),
        Err(FaultError::BeyondEnd(2))
    ));
}

#[test]
fn a_page_invalidated_while_pinned_is_freed_when_unpinned() {
    let cache = PageCache::new(2);
    let file = TestFile::new(PAGE_SIZE);
    let mapping = file.mapping();
    let page = cache.fault(&mapping, &file, 0, FaultFlags::NONE).unwrap();

    assert_eq!(cache.invalidate(&mapping), 1);
    assert_eq!(cache.cached_pages(), 0);
    page.with_bytes(|bytes| assert_eq!(bytes[..10], file.data[..10]));
    drop(page);

    // Both frames are free again: two new pages fit without evicting.
    mapping.set_size(2 * PAGE_SIZE as u64);
    let other = TestFile::new(2 * PAGE_SIZE);
    read_all(&cache, &mapping, &other, 0, 2 * PAGE_SIZE, ReadFlags::NONE).unwrap();
    assert_eq!(cache.stats().evictions, 0);
}

#[test]
fn a_kept_pin_outlives_its_borrow_and_an_invalidation() {
    let cache = PageCache::new(1);
    let file = TestFile::new(2 * PAGE_SIZE);
    let mapping = file.mapping();
    let pinned = cache
        .fault(&mapping, &file, 0, FaultFlags::NONE)
        .unwrap()
        .keep();

    // The only frame is pinned: nothing can be read in.
    let full = read_all(
        &cache,
        &mapping,
        &file,
        PAGE_SIZE as u64,
        10,
        ReadFlags::NONE,
    );
    assert_eq!(full.unwrap_err(), ReadError::NoFreePage);
    cache.invalidate(&mapping);
    mapping.set_size(2 * PAGE_SIZE as u64);
    let still_full = read_all(&cache, &mapping, &file, 0, 10, ReadFlags::NONE);
    assert_eq!(still_full.unwrap_err(), ReadError::NoFreePage);

    cache.unpin(pinned);
    let (_, bytes) = read_all(
        &cache,
        &mapping,
        &file,
        PAGE_SIZE as u64,
        10,
        ReadFlags::NONE,
    )
    .unwrap();
    assert_eq!(bytes, file.data[PAGE_SIZE..PAGE_SIZE + 10]);
}

/// A buffer whose pages are writable or not, as a kernel's mapping may be: a copy stops at
/// the first byte of a page that is not, and a fault-in makes pages writable.
struct FaultingBuffer {
    bytes: Vec<u8>,
    writable: Vec<bool>,
}

impl FaultingBuffer {
    fn new(pages: usize, writable: &[usize]) -> Self {
        Self {
            bytes: std::vec![0xee; pages * PAGE_SIZE],
            writable: (0..pages).map(|page| writable.contains(&page)).collect(),
        }
    }
}

impl ReadBuffer for FaultingBuffer {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        let writable = (at..at + bytes.len())
            .take_while(|&byte| self.writable[byte / PAGE_SIZE])
            .count();
        self.bytes[at..at + writable].copy_from_slice(&bytes[..writable]);
        writable
    }

    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize {
        let pages = range.start / PAGE_SIZE..range.end.div_ceil(PAGE_SIZE);
        self.writable[pages].fill(true);
        range.len()
    }
}

fn pins(cache: &PageCache) -> u32 {
    cache.state.lock().slots.iter().map(|slot| slot.pins).sum()
}

#[test]
fn a_copy_that_faults_stops_the_read_there_and_drops_the_pin() {
    let cache = PageCache::new(16);
    let file = TestFile::new(4 * PAGE_SIZE);
    let mapping = file.mapping();
    let mut buf = FaultingBuffer::new(3, &[0]);

    let outcome = cache
        .read(&mapping, &file, 100, &mut buf, ReadFlags::NONE)
        .unwrap();

    // Buffer page 0 takes file bytes 100..4196; the copy of the rest of file page 1 stops
    // at buffer page 1.
    assert_eq!(
        outcome,
        ReadOutcome {
            bytes: PAGE_SIZE,
            end: ReadEnd::BufferFault
        }
    );
    assert_eq!(buf.bytes[..PAGE_SIZE], file.data[100..100 + PAGE_SIZE]);
    assert!(buf.bytes[PAGE_SIZE..].iter().all(|&byte| byte == 0xee));
    assert_eq!(pins(&cache), 0);

    // Faulted in, the read goes on from there.
    assert_eq!(buf.fault_in(PAGE_SIZE..3 * PAGE_SIZE), 2 * PAGE_SIZE);
    let rest = cache
        .read(
            &mapping,
            &file,
            100 + PAGE_SIZE as u64,
            &mut buf.bytes[PAGE_SIZE..],
            ReadFlags::NONE,
        )
        .unwrap();
    assert_eq!(rest.bytes, 2 * PAGE_SIZE);
    assert_eq!(buf.bytes, file.data[100..100 + 3 * PAGE_SIZE]);
}

#[test]
fn a_cached_only_read_tells_a_buffer_fault_from_a_miss() {
    let cache = PageCache::new(16);
    let file = TestFile::new(4 * PAGE_SIZE);
    let mapping = file.mapping();
    read_all(&cache, &mapping, &file, 0, 4 * PAGE_SIZE, ReadFlags::NONE).unwrap();

    // Nothing copied: a buffer fault, not `NotCached`, though the pages are there.
    let mut unwritable = FaultingBuffer::new(2, &[]);
    let outcome = cache
        .read(&mapping, &file, 0, &mut unwritable, ReadFlags::CACHED)
        .unwrap();
    assert_eq!(
        outcome,
        ReadOutcome {
            bytes: 0,
            end: ReadEnd::BufferFault
        }
    );

    // Some copied: the bytes up to the fault count, and no more.
    let mut half = FaultingBuffer::new(2, &[0]);
    let outcome = cache
        .read(&mapping, &file, 10, &mut half, ReadFlags::CACHED)
        .unwrap();
    assert_eq!(
        outcome,
        ReadOutcome {
            bytes: PAGE_SIZE,
            end: ReadEnd::BufferFault
        }
    );
    assert_eq!(half.bytes[..PAGE_SIZE], file.data[10..10 + PAGE_SIZE]);
    assert_eq!(pins(&cache), 0);
    assert_eq!(file.requests(), 1, "a cached-only read did I/O");

    // An invalidation during the read still discards it.
    cache.invalidate(&mapping);
    let mut whole = FaultingBuffer::new(2, &[0, 1]);
    let stale = cache.read(&mapping, &file, 0, &mut whole, ReadFlags::CACHED);
    assert_eq!(stale.unwrap_err(), ReadError::NotCached);
}

#[test]
fn a_buffer_fault_mid_page_counts_only_the_bytes_copied() {
    let cache = PageCache::new(16);
    let file = TestFile::new(2 * PAGE_SIZE);
    let mapping = file.mapping();
    let mut buf = FaultingBuffer::new(2, &[0]);

    // File bytes 2000.. land at buffer byte 0: buffer page 1 starts within file page 0.
    let outcome = cache
        .read(&mapping, &file, 2000, &mut buf, ReadFlags::NONE)
        .unwrap();

    assert_eq!(outcome.bytes, PAGE_SIZE);
    assert_eq!(outcome.end, ReadEnd::BufferFault);
    assert_eq!(buf.bytes[..PAGE_SIZE], file.data[2000..2000 + PAGE_SIZE]);
    assert_eq!(buf.bytes[PAGE_SIZE], 0xee);
    assert_eq!(pins(&cache), 0);
}

#[test]
fn byte_buffers_never_fault() {
    let mut slice = [0u8; 10];
    assert_eq!(ReadBuffer::fault_in(&mut slice[..], 3..8), 5);
    assert_eq!(ReadBuffer::copy_at(&mut slice[..], 2, &[1, 2, 3]), 3);
    assert_eq!(slice[..6], [0, 0, 1, 2, 3, 0]);
    let mut vec = std::vec![0u8; 4];
    assert_eq!(vec.copy_at(1, &[9]), 1);
    assert_eq!(vec, [0, 9, 0, 0]);
    assert!(!ReadBuffer::is_empty(&vec));
}
