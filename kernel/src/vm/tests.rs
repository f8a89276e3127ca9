//! In-kernel tests of file mappings, with a made-up file whose handler fills frames with a
//! pattern and acts as a small page cache: a page it has read stays cached, and only the
//! step without `FAULT_CACHED` reads one in (where gfs2 takes the glock).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

use super::*;
use crate::arch::{FaultKind, probe_read};
use crate::ktest::{KernelTest, TestFailure, TestResult};
use crate::mem::frame;
use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

pub const TESTS: &[KernelTest] = &[
    KernelTest::new(
        "vm::page_map_read_unmap_round_trip",
        page_map_read_unmap_round_trip,
    ),
    KernelTest::new(
        "vm::pages_outside_the_window_are_refused",
        pages_outside_the_window_are_refused,
    ),
    KernelTest::new(
        "vm::reads_through_memory_see_the_file",
        reads_through_memory_see_the_file,
    ),
    KernelTest::new(
        "vm::a_miss_takes_two_handler_calls",
        a_miss_takes_two_handler_calls,
    ),
    KernelTest::new(
        "vm::unmapped_pages_fault_again_and_see_new_data",
        unmapped_pages_fault_again_and_see_new_data,
    ),
    KernelTest::new(
        "vm::access_past_the_end_is_an_error",
        access_past_the_end_is_an_error,
    ),
    KernelTest::new("vm::writes_are_refused", writes_are_refused),
    KernelTest::new(
        "vm::private_writes_copy_the_page_and_survive_a_demote",
        private_writes_copy_the_page_and_survive_a_demote,
    ),
    KernelTest::new(
        "vm::a_copy_stops_where_cached_only_faults_miss",
        a_copy_stops_where_cached_only_faults_miss,
    ),
    KernelTest::new(
        "vm::probe_write_faults_in_without_changing_data",
        probe_write_faults_in_without_changing_data,
    ),
    KernelTest::new(
        "vm::unmap_frees_addresses_for_reuse",
        unmap_frees_addresses_for_reuse,
    ),
    KernelTest::new("vm::bad_ranges_are_refused", bad_ranges_are_refused),
    KernelTest::new(
        "vm::cached_only_faults_never_take_the_second_step",
        cached_only_faults_never_take_the_second_step,
    ),
    KernelTest::new(
        "vm::a_fault_racing_an_invalidation_starts_over",
        a_fault_racing_an_invalidation_starts_over,
    ),
];

const WORDS_PER_PAGE: usize = PAGE_SIZE / 8;

/// The word at byte `offset` of file page `file_page` of `file`, in data generation
/// `generation` (a new generation is what another node wrote).
fn pattern(file: FileId, generation: u64, file_page: u64, offset: usize) -> u64 {
    0x6669_6c65_0000_0000 ^ (file.0 << 40) ^ (generation << 32) ^ (file_page << 16) ^ offset as u64
}

/// A file of `pages` pages whose contents are [`pattern`], cached in frames of the frame
/// allocator.
struct PatternFile {
    file: FileId,
    pages: u64,
    generation: AtomicU64,
    cache: Mutex<BTreeMap<u64, PhysFrame>>,
    /// Frames dropped from the cache; freed when the file is dropped, since a fault may still
    /// hold one.
    retired: Mutex<Vec<PhysFrame>>,
    /// Every call of `fault`, with its flags.
    calls: Mutex<Vec<(u64, FaultFlags)>>,
    /// Pages read in (calls without `FAULT_CACHED` that found no cached page).
    reads: AtomicU64,
    releases: AtomicU64,
    /// Makes the next read-in invalidate the file (as a demote would) before it returns.
    invalidate_during_next_read: AtomicBool,
}

impl PatternFile {
    fn new(file: FileId, pages: u64) -> Arc<Self> {
        Arc::new(Self {
            file,
            pages,
            generation: AtomicU64::new(0),
            cache: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            invalidate_during_next_read: AtomicBool::new(false),
        })
    }

    fn handler(self: &Arc<Self>) -> Arc<dyn FaultHandler> {
        self.clone()
    }

    /// Maps `len` bytes of the file from `file_offset`, or fails the test at the caller.
    #[track_caller]
    fn map(
        self: &Arc<Self>,
        file_offset: u64,
        len: usize,
        mode: MapMode,
    ) -> Result<FileMapping, TestFailure> {
        match map_file_range(self.file, self.handler(), file_offset, len, mode) {
            Ok(mapping) => Ok(mapping),
            Err(error) => {
                defmt::error!("mapping file {} failed: {}", self.file, error);
                Err(TestFailure::at_caller("map_file_range failed"))
            }
        }
    }

    fn expected(&self, file_page: u64, offset: usize) -> u64 {
        let generation = self.generation.load(Ordering::Relaxed);
        pattern(self.file, generation, file_page, offset)
    }

    /// What a glock's `go_inval` does: unmap the file's pages everywhere, drop them from the
    /// cache; then the data changes (the other node writes).
    fn invalidate(&self) {
        unmap_file_pages(self.file, 0..u64::MAX);
        let dropped = core::mem::take(&mut *self.cache.lock());
        self.retired.lock().extend(dropped.into_values());
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn calls(&self) -> Vec<(u64, FaultFlags)> {
        self.calls.lock().clone()
    }

    fn read_in(&self, file_page: u64) -> Result<PhysFrame, FaultError> {
        let range = frame::allocate(1, 1).ok_or(FaultError::Unavailable(file_page))?;
        let frame = PhysFrame::new(range.start).ok_or(FaultError::Unavailable(file_page))?;
        let generation = self.generation.load(Ordering::Relaxed);
        let words = raw::frame_words(frame);
        for (index, word) in words.iter_mut().enumerate() {
            *word = pattern(self.file, generation, file_page, index * 8);
        }
        self.cache.lock().insert(file_page, frame);
        self.reads.fetch_add(1, Ordering::Relaxed);

        if self
            .invalidate_during_next_read
            .swap(false, Ordering::Relaxed)
        {
            self.invalidate();
        }
        Ok(frame)
    }
}

impl FaultHandler for PatternFile {
    fn fault(&self, file_page: u64, flags: FaultFlags) -> Result<PhysFrame, FaultError> {
        self.calls.lock().push((file_page, flags));
        if file_page >= self.pages {
            return Err(FaultError::OutOfRange(file_page));
        }
        if let Some(frame) = self.cache.lock().get(&file_page) {
            return Ok(*frame);
        }
        if flags.contains(FaultFlags::FAULT_CACHED) {
            return Err(FaultError::Retry);
        }
        self.read_in(file_page)
    }

    fn release(&self, _file_page: u64, _frame: PhysFrame) {
        self.releases.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for PatternFile {
    fn drop(&mut self) {
        let cached = core::mem::take(&mut *self.cache.lock()).into_values();
        let retired = core::mem::take(&mut *self.retired.lock());
        for frame in cached.chain(retired) {
            let range = crate::boot::PhysRange {
                start: frame.address(),
                end: frame.address() + PAGE_SIZE as u64,
            };
            if let Err(error) = frame::free(range) {
                defmt::error!("freeing a test frame: {}", error);
            }
        }
    }
}

/// Reads every word of `pages` pages from `start` with plain loads (each first touch takes a
/// page fault) and checks them against `file`; returns the first wrong word's address (as
/// `u64`: defmt sends a `usize` as 32 bits).
fn check_pages(file: &PatternFile, mapping: &FileMapping, pages: Range<usize>) -> Option<u64> {
    for page in pages {
        let file_page = mapping.first_file_page() + page as u64;
        for word in 0..WORDS_PER_PAGE {
            let offset = word * 8;
            let address = mapping.start() + page * PAGE_SIZE + offset;
            if raw::read_mapped(address) != file.expected(file_page, offset) {
                return Some(address as u64);
            }
        }
    }
    None
}

fn delta(before: Counters) -> Counters {
    let now = counters();
    Counters {
        faults: now.faults - before.faults,
        pages_mapped: now.pages_mapped - before.pages_mapped,
        retries: now.retries - before.retries,
        failed: now.failed - before.failed,
        pages_unmapped: now.pages_unmapped - before.pages_unmapped,
        pages_copied: now.pages_copied - before.pages_copied,
    }
}

fn reads_through_memory_see_the_file() -> TestResult {
    let file = PatternFile::new(FileId(1), 6);
    let mapping = file.map(2 * PAGE_SIZE as u64, 4 * PAGE_SIZE, MapMode::ReadOnly)?;
    ktest_assert_eq!(mapping.first_file_page(), 2);
    ktest_assert_eq!(mapping.file(), FileId(1));
    ktest_assert_eq!(mapping.len(), 4 * PAGE_SIZE);
    let window =
        arch::FILE_MAP_WINDOW_START..arch::FILE_MAP_WINDOW_START + arch::FILE_MAP_WINDOW_SIZE;
    ktest_assert!(
        window.contains(&mapping.virtual_range().start)
            && window.contains(&(mapping.virtual_range().end - 1)),
        "the mapping lies outside the window",
        mapping.start() as u64
    );
    for page in 0..4 {
        ktest_assert_eq!(
            arch::translate_page(mapping.start() + page * PAGE_SIZE),
            None
        );
    }

    let before = counters();
    ktest_assert_eq!(check_pages(&file, &mapping, 0..4), None);
    let first_pass = delta(before);

    let before = counters();
    ktest_assert_eq!(check_pages(&file, &mapping, 0..4), None);
    let second_pass = delta(before);
    let calls = file.calls().len();

    let start = mapping.start();
    unmap(mapping);

    ktest_assert_eq!(first_pass.faults, 4);
    ktest_assert_eq!(first_pass.pages_mapped, 4);
    ktest_assert_eq!(first_pass.failed, 0);
    ktest_assert_eq!(second_pass, Counters::default());
    ktest_assert_eq!(calls, 8);
    ktest_assert_eq!(file.releases.load(Ordering::Relaxed), 4);
    ktest_assert_eq!(arch::translate_page(start), None);
    Ok(())
}

fn a_miss_takes_two_handler_calls() -> TestResult {
    let file = PatternFile::new(FileId(2), 2);
    let mapping = file.map(0, 2 * PAGE_SIZE, MapMode::ReadOnly)?;

    // Cold: the cached-only step misses, the second step reads the page in.
    let before = counters();
    ktest_assert_eq!(check_pages(&file, &mapping, 0..1), None);
    let cold = delta(before);
    let cold_calls = file.calls();

    // Unmapped but still cached: the cached-only step maps it, nothing is read (for gfs2: no
    // glock taken).
    let unmapped = unmap_file_pages(file.file, 0..1);
    let reads_before = file.reads.load(Ordering::Relaxed);
    let before = counters();
    ktest_assert_eq!(check_pages(&file, &mapping, 0..1), None);
    let warm = delta(before);
    let warm_calls = file.calls();
    let reads_after = file.reads.load(Ordering::Relaxed);
    unmap(mapping);

    ktest_assert_eq!(cold.faults, 1);
    ktest_assert_eq!(cold.retries, 1);
    ktest_assert_eq!(
        cold_calls.as_slice(),
        [(0, FaultFlags::FAULT_CACHED), (0, FaultFlags::NONE)].as_slice()
    );
    ktest_assert_eq!(unmapped, 1);
    ktest_assert_eq!(warm.faults, 1);
    ktest_assert_eq!(warm.retries, 0);
    ktest_assert_eq!(warm.pages_mapped, 1);
    ktest_assert_eq!(warm_calls.len(), 3);
    ktest_assert_eq!(warm_calls.get(2), Some(&(0, FaultFlags::FAULT_CACHED)));
    ktest_assert_eq!(reads_after, reads_before);
    Ok(())
}

fn unmapped_pages_fault_again_and_see_new_data() -> TestResult {
    let file = PatternFile::new(FileId(3), 3);
    let mapping = file.map(0, 3 * PAGE_SIZE, MapMode::ReadOnly)?;
    // A second mapping of the same file: invalidation must reach it too.
    let other = file.map(PAGE_SIZE as u64, PAGE_SIZE, MapMode::ReadOnly)?;
    let old_word = file.expected(1, 0);
    ktest_assert_eq!(check_pages(&file, &mapping, 0..3), None);
    ktest_assert_eq!(check_pages(&file, &other, 0..1), None);

    // Only file page 1: unmapped in both mappings, its neighbours stay.
    let before = counters();
    let unmapped = unmap_file_pages(file.file, 1..2);
    let after_partial = delta(before);
    let page_1 = mapping.start() + PAGE_SIZE;
    let translations = [
        arch::translate_page(mapping.start()).is_some(),
        arch::translate_page(page_1).is_some(),
        arch::translate_page(mapping.start() + 2 * PAGE_SIZE).is_some(),
        arch::translate_page(other.start()).is_some(),
    ];

    // A demote: everything unmapped and dropped, and the data changes.
    file.invalidate();
    let before = counters();
    let new_data = check_pages(&file, &mapping, 0..3);
    let new_data_other = check_pages(&file, &other, 0..1);
    let after_invalidate = delta(before);
    let new_word = raw::read_mapped(page_1);
    unmap(mapping);
    unmap(other);

    ktest_assert_eq!(unmapped, 2);
    ktest_assert_eq!(after_partial.pages_unmapped, 2);
    ktest_assert_eq!(translations, [true, false, true, false]);
    ktest_assert_eq!(new_data, None);
    ktest_assert_eq!(new_data_other, None);
    ktest_assert_eq!(after_invalidate.faults, 4);
    ktest_assert!(new_word != old_word, "page 1 still shows the old data");
    Ok(())
}

fn access_past_the_end_is_an_error() -> TestResult {
    let file = PatternFile::new(FileId(4), 2);
    let mapping = file.map(0, 3 * PAGE_SIZE, MapMode::ReadOnly)?;
    let past_the_end = mapping.start() + 2 * PAGE_SIZE + 16;
    let guard_page = mapping.start() + 3 * PAGE_SIZE;

    let before = counters();
    let result = probe_read(past_the_end);
    let guard_result = probe_read(guard_page);
    let after = delta(before);
    // The kernel goes on: the pages inside the file still read.
    let inside = probe_read(mapping.start() + PAGE_SIZE);
    let expected_inside = file.expected(1, 0);
    let calls = file.calls();
    unmap(mapping);

    let Err(fault) = result else {
        ktest_fail!("a read past the end of the file returned", result.ok())
    };
    ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
    ktest_assert_eq!(fault.address, past_the_end);
    ktest_assert!(
        guard_result.is_err(),
        "the guard page after a mapping reads"
    );
    ktest_assert_eq!(after.faults, 2);
    ktest_assert_eq!(after.failed, 2);
    ktest_assert_eq!(after.pages_mapped, 0);
    ktest_assert_eq!(inside, Ok(expected_inside));
    ktest_assert_eq!(calls.first(), Some(&(2, FaultFlags::FAULT_CACHED)));
    Ok(())
}

fn writes_are_refused() -> TestResult {
    let file = PatternFile::new(FileId(5), 1);
    let mapping = file.map(0, PAGE_SIZE, MapMode::ReadOnly)?;
    let write = handle_page_fault(mapping.start(), Access::Write);
    let execute = handle_page_fault(mapping.start(), Access::Execute);
    let outside = handle_page_fault(crate::fault_tests::UNMAPPED_ADDRESS, Access::Read);
    let calls = file.calls().len();
    unmap(mapping);

    ktest_assert_eq!(
        write,
        PageFaultOutcome::Failed(FaultFailure::AccessDenied(Access::Write))
    );
    ktest_assert_eq!(
        execute,
        PageFaultOutcome::Failed(FaultFailure::AccessDenied(Access::Execute))
    );
    ktest_assert_eq!(outside, PageFaultOutcome::NotInWindow);
    ktest_assert_eq!(calls, 0);
    Ok(())
}

fn unmap_frees_addresses_for_reuse() -> TestResult {
    let file = PatternFile::new(FileId(6), 4);
    let first = file.map(0, 2 * PAGE_SIZE, MapMode::ReadOnly)?;
    let second = file.map(0, PAGE_SIZE, MapMode::ReadOnly)?;
    let first_start = first.start();
    ktest_assert!(
        second.start() >= first_start + 3 * PAGE_SIZE,
        "mappings overlap or share a guard page",
        second.start() as u64
    );
    ktest_assert_eq!(check_pages(&file, &first, 0..2), None);
    unmap(first);
    let released = file.releases.load(Ordering::Relaxed);
    let second_page_of_first = probe_read(first_start + PAGE_SIZE);

    let third = map_file_range(
        file.file,
        file.handler(),
        3 * PAGE_SIZE as u64,
        PAGE_SIZE,
        MapMode::ReadOnly,
    );
    let third_start = third
        .as_ref()
        .map(FileMapping::start)
        .map_err(|error| *error);
    let reads_at_reuse = third
        .as_ref()
        .map(|third| check_pages(&file, third, 0..1))
        .ok();
    if let Ok(third) = third {
        unmap(third);
    }
    unmap(second);

    ktest_assert_eq!(released, 2);
    ktest_assert!(
        second_page_of_first.is_err(),
        "an unmapped mapping still reads"
    );
    ktest_assert_eq!(third_start, Ok(first_start));
    ktest_assert_eq!(reads_at_reuse, Some(None));
    Ok(())
}

fn bad_ranges_are_refused() -> TestResult {
    let file = PatternFile::new(FileId(7), 1);
    ktest_assert_eq!(
        map_file_range(file.file, file.handler(), 100, PAGE_SIZE, MapMode::ReadOnly),
        Err(MapRangeError::MisalignedOffset(100))
    );
    ktest_assert_eq!(
        map_file_range(file.file, file.handler(), 0, 0, MapMode::ReadOnly),
        Err(MapRangeError::Empty)
    );
    ktest_assert_eq!(
        map_file_range(file.file, file.handler(), 0, usize::MAX, MapMode::ReadOnly),
        Err(MapRangeError::Overflow {
            offset: 0,
            len: usize::MAX
        })
    );
    let last_page = u64::MAX / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    ktest_assert_eq!(
        map_file_range(
            file.file,
            file.handler(),
            last_page,
            2 * PAGE_SIZE,
            MapMode::ReadOnly
        ),
        Err(MapRangeError::Overflow {
            offset: last_page,
            len: 2 * PAGE_SIZE
        })
    );
    ktest_assert_eq!(
        map_file_range(
            file.file,
            file.handler(),
            0,
            arch::FILE_MAP_WINDOW_SIZE,
            MapMode::ReadOnly
        ),
        Err(MapRangeError::WindowFull(arch::FILE_MAP_WINDOW_SIZE))
    );
    Ok(())
}

fn a_fault_racing_an_invalidation_starts_over() -> TestResult {
    let file = PatternFile::new(FileId(8), 1);
    let mapping = file.map(0, PAGE_SIZE, MapMode::ReadOnly)?;
    file.invalidate_during_next_read
        .store(true, Ordering::Relaxed);

    let before = counters();
    let result = check_pages(&file, &mapping, 0..1);
    let after = delta(before);
    let calls = file.calls();
    let releases = file.releases.load(Ordering::Relaxed);
    unmap(mapping);

    // The page read before the invalidation was not mapped: the fault started over and
    // read the page of the new generation.
    ktest_assert_eq!(result, None);
    ktest_assert_eq!(file.generation.load(Ordering::Relaxed), 1);
    ktest_assert_eq!(after.faults, 1);
    ktest_assert_eq!(after.pages_mapped, 1);
    ktest_assert_eq!(after.retries, 2);
    ktest_assert_eq!(calls.len(), 4);
    ktest_assert_eq!(file.reads.load(Ordering::Relaxed), 2);
    ktest_assert_eq!(releases, 1);
    Ok(())
}

/// A private mapping: a write to a mapped page and to an unmapped one each give the mapping
/// its copy (the file's page goes back to the handler and is unchanged); a demote leaves the
/// copies; unmapping frees them.
fn private_writes_copy_the_page_and_survive_a_demote() -> TestResult {
    let file = PatternFile::new(FileId(10), 2);
    let free_before = frame::snapshot().free_frames();
    let mut mapping = file.map(0, 2 * PAGE_SIZE, MapMode::Private)?;
    let shared = file.map(0, 2 * PAGE_SIZE, MapMode::ReadOnly)?;
    let message = *b"private copy on write";

    // Page 0 is mapped from a read first; page 1 is first touched by the write.
    let read_first = raw::read_mapped(mapping.start());
    let before = counters();
    let at_page_0 = 100;
    let at_page_1 = PAGE_SIZE + 8;
    let copied_0 = copy_to_mapping(&mut mapping, at_page_0, &message);
    let copied_1 = copy_to_mapping(&mut mapping, at_page_1, &message);
    let after_writes = delta(before);
    let releases_after_writes = file.releases.load(Ordering::Relaxed);

    let written_0 = raw::read_bytes::<21>(mapping.start() + at_page_0);
    let written_1 = raw::read_bytes::<21>(mapping.start() + at_page_1);
    let rest_of_page_0 = check_word(&file, &mapping, 0, 512);
    let file_pages_unchanged = check_pages(&file, &shared, 0..2);

    // A demote unmaps the file's pages everywhere, but the copies are the mapping's own.
    let generation = file.generation.load(Ordering::Relaxed);
    file.invalidate();
    let copy_mapped_after_demote = arch::translate_page(mapping.start()).is_some();
    let shared_mapped_after_demote = arch::translate_page(shared.start()).is_some();
    let written_after_demote = raw::read_bytes::<21>(mapping.start() + at_page_0);
    let rest_after_demote = raw::read_mapped(mapping.start() + 512);
    unmap(mapping);
    unmap(shared);
    drop(file);
    let free_after = frame::snapshot().free_frames();

    ktest_assert_eq!(read_first, pattern(FileId(10), 0, 0, 0));
    ktest_assert_eq!(copied_0, message.len());
    ktest_assert_eq!(copied_1, message.len());
    ktest_assert_eq!(after_writes.pages_copied, 2);
    // Page 1's write faulted once (the handler's cached step failed: a read-in), page 0's
    // once (the copy of the mapped page, no handler call).
    ktest_assert_eq!(after_writes.faults, 2);
    ktest_assert_eq!(after_writes.retries, 1);
    ktest_assert_eq!(releases_after_writes, 2);
    ktest_assert_eq!(written_0, message);
    ktest_assert_eq!(written_1, message);
    ktest_assert_eq!(rest_of_page_0, None);
    ktest_assert_eq!(file_pages_unchanged, None);
    ktest_assert!(copy_mapped_after_demote, "a demote unmapped a private copy");
    ktest_assert!(
        !shared_mapped_after_demote,
        "a demote left the file's page mapped"
    );
    ktest_assert_eq!(written_after_demote, message);
    ktest_assert_eq!(rest_after_demote, pattern(FileId(10), generation, 0, 512));
    ktest_assert_eq!(free_after, free_before);
    Ok(())
}

/// Under cached-only faults a copy into a private mapping goes through the cached page and
/// stops at the first byte of a page that is not cached; `fault_in_writable` then brings it
/// in (with the handler's second step) and the copy completes. A read-only mapping takes no
/// byte, and `fault_in_writable` stops at the end of the file.
fn a_copy_stops_where_cached_only_faults_miss() -> TestResult {
    let file = PatternFile::new(FileId(11), 2);
    let mut mapping = file.map(0, 3 * PAGE_SIZE, MapMode::Private)?;
    let mut read_only = file.map(0, PAGE_SIZE, MapMode::ReadOnly)?;
    // Page 0 cached (read through the read-only mapping), page 1 not.
    let _ = raw::read_mapped(read_only.start());
    let bytes = [0x5a; 2 * PAGE_SIZE];
    let start = PAGE_SIZE / 2;

    let before = counters();
    let short = {
        let _cached_only = cached_only_faults();
        copy_to_mapping(&mut mapping, start, &bytes[..PAGE_SIZE])
    };
    let under_guard = delta(before);
    let faulted_in =
        fault_in_writable(mapping.start() + start..mapping.start() + start + PAGE_SIZE);
    let whole = {
        let _cached_only = cached_only_faults();
        copy_to_mapping(&mut mapping, start, &bytes[..PAGE_SIZE])
    };
    let past_the_file =
        fault_in_writable(mapping.start() + PAGE_SIZE..mapping.start() + 3 * PAGE_SIZE);
    let into_read_only = copy_to_mapping(&mut read_only, 0, &bytes[..8]);
    let beyond_the_mapping = copy_to_mapping(&mut mapping, 3 * PAGE_SIZE - 4, &bytes[..8]);
    let last_bytes = raw::read_bytes::<8>(mapping.start() + start + PAGE_SIZE - 8);
    unmap(mapping);
    unmap(read_only);

    ktest_assert_eq!(short, PAGE_SIZE / 2);
    ktest_assert_eq!(under_guard.retries, 0);
    ktest_assert_eq!(under_guard.failed, 1);
    ktest_assert_eq!(under_guard.pages_copied, 1);
    ktest_assert_eq!(faulted_in, PAGE_SIZE);
    ktest_assert_eq!(whole, PAGE_SIZE);
    ktest_assert_eq!(last_bytes, [0x5a; 8]);
    ktest_assert_eq!(past_the_file, PAGE_SIZE);
    ktest_assert_eq!(into_read_only, 0);
    // Four bytes lie in the mapping's last page, which is past the end of the file.
    ktest_assert_eq!(beyond_the_mapping, 0);
    Ok(())
}

/// `arch::probe_write` on a read-only page fails with a write fault and leaves the data; on
/// a private mapping it maps the page's copy without changing a byte.
fn probe_write_faults_in_without_changing_data() -> TestResult {
    let file = PatternFile::new(FileId(12), 1);
    let read_only = file.map(0, PAGE_SIZE, MapMode::ReadOnly)?;
    let private = file.map(0, PAGE_SIZE, MapMode::Private)?;

    let denied = arch::probe_write(read_only.start() + 24);
    let before = counters();
    let allowed = arch::probe_write(private.start() + 24);
    let cost = delta(before);
    let word = raw::read_mapped(private.start() + 24);
    let read_only_word = raw::read_mapped(read_only.start() + 24);
    let copy_is_distinct =
        arch::translate_page(private.start()) != arch::translate_page(read_only.start());
    unmap(read_only);
    unmap(private);

    let Err(fault) = denied else {
        ktest_fail!("a write probe of a read-only mapping worked")
    };
    ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Write));
    ktest_assert_eq!(allowed.ok(), Some(()));
    ktest_assert_eq!(cost.pages_copied, 1);
    ktest_assert_eq!(word, pattern(FileId(12), 0, 0, 24));
    ktest_assert_eq!(read_only_word, word);
    ktest_assert!(copy_is_distinct, "the private copy is the file's frame");
    Ok(())
}

/// The words of page `page` of `mapping` from byte `from` on, checked against `file`; the
/// first wrong word's address.
fn check_word(file: &PatternFile, mapping: &FileMapping, page: usize, from: usize) -> Option<u64> {
    let file_page = mapping.first_file_page() + page as u64;
    (from..PAGE_SIZE).step_by(8).find_map(|offset| {
        let address = mapping.start() + page * PAGE_SIZE + offset;
        (raw::read_mapped(address) != file.expected(file_page, offset)).then_some(address as u64)
    })
}

mod raw {
    //! The test's direct memory accesses: filling a frame and reading through a mapping.

    use super::{PAGE_SIZE, PhysFrame, WORDS_PER_PAGE};
    use crate::arch;

    /// The words of `frame`, to fill it.
    ///
    /// Only for a frame the caller just took from the frame allocator and has not handed to
    /// anyone yet.
    pub(super) fn frame_words(frame: PhysFrame) -> &'static mut [u64; WORDS_PER_PAGE] {
        const _: () = assert!(WORDS_PER_PAGE * 8 == PAGE_SIZE);
        let words = arch::phys_to_virt(frame.address()) as *mut [u64; WORDS_PER_PAGE];

        // SAFETY: the frame is RAM in the direct map, page aligned, fresh from the frame
        // allocator (the callers' contract), so no other reference to it exists; it stays
        // allocated until the test file is dropped, after its mappings are gone, and the
        // reference is only used to fill it before it is handed out.
        unsafe { &mut *words }
    }

    /// Reads the word at `address`, in a live file mapping, with a plain load: the first
    /// touch of a page takes a page fault that maps it.
    pub(super) fn read_mapped(address: usize) -> u64 {
        // SAFETY: `address` is 8-aligned and lies in a live file mapping whose handler
        // supplies every page the tests touch: the load faults, the fault maps a readable
        // frame, and the load runs again. The frames are never written while mapped, and
        // the value is read as a plain integer.
        unsafe { (address as *const u64).read_volatile() }
    }

    /// Reads `N` bytes at `address`, in a live file mapping, with plain loads (a first touch
    /// faults the page in).
    pub(super) fn read_bytes<const N: usize>(address: usize) -> [u8; N] {
        let mut bytes = [0; N];
        for (index, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: as for `read_mapped`: the bytes lie in a live mapping whose handler
            // supplies the pages the tests touch; they are read as plain integers.
            *byte = unsafe { ((address + index) as *const u8).read_volatile() };
        }
        bytes
    }
}

/// Under a lock, a fault must not take the lock again: with cached-only faults a cold page
/// fails the access after the `FAULT_CACHED` step alone, a cached one maps; after the guard
/// is gone, `fault_in` brings the cold page in.
fn cached_only_faults_never_take_the_second_step() -> TestResult {
    let file = PatternFile::new(FileId(9), 2);
    let mapping = file.map(0, 2 * PAGE_SIZE, MapMode::ReadOnly)?;
    let (cold, warm) = (mapping.start(), mapping.start() + PAGE_SIZE);
    ktest_assert_eq!(check_pages(&file, &mapping, 1..2), None);
    unmap_file_pages(file.file, 1..2);
    let calls_before = file.calls().len();

    let before = counters();
    let guard = cached_only_faults();
    let nested = cached_only_faults();
    drop(nested);
    let cold_result = probe_read(cold);
    let warm_result = probe_read(warm);
    drop(guard);
    let under_guard = delta(before);
    let calls_under_guard = file.calls()[calls_before..].to_vec();

    let faulted_in = fault_in(mapping.virtual_range());
    let reads = file.reads.load(Ordering::Relaxed);
    let cold_mapped = arch::translate_page(cold).is_some();
    unmap(mapping);

    ktest_assert!(
        cold_result.is_err(),
        "a cold page mapped under cached-only faults"
    );
    ktest_assert_eq!(warm_result, Ok(file.expected(1, 0)));
    ktest_assert_eq!(
        calls_under_guard.as_slice(),
        [(0, FaultFlags::FAULT_CACHED), (1, FaultFlags::FAULT_CACHED)].as_slice()
    );
    ktest_assert_eq!(under_guard.retries, 0);
    ktest_assert_eq!(under_guard.failed, 1);
    ktest_assert_eq!(faulted_in, Ok(()));
    ktest_assert!(cold_mapped, "fault_in left the cold page unmapped");
    ktest_assert_eq!(reads, 2);
    Ok(())
}

/// A page near the end of the window, far from where [`map_file_range`] places mappings.
const TEST_PAGE: usize = arch::FILE_MAP_WINDOW_START + arch::FILE_MAP_WINDOW_SIZE - 16 * PAGE_SIZE;

/// The architecture's page API on its own: map a frame, read it through the window, unmap.
fn page_map_read_unmap_round_trip() -> TestResult {
    let Some(range) = frame::allocate(1, 1) else {
        ktest_fail!("no free frame")
    };
    let marker = 0x7061_6765_2d6d_6170;
    let direct = arch::phys_to_virt(range.start) as *mut u64;
    // SAFETY: the frame was just allocated, so it is ours alone, RAM in the direct map.
    unsafe { direct.write_volatile(marker) };

    let mapped = arch::map_page(TEST_PAGE, range.start, Protection::ReadOnly);
    let twice = arch::map_page(TEST_PAGE, range.start, Protection::ReadOnly);
    let through_window = probe_read(TEST_PAGE);
    let unmapped = arch::unmap_page(TEST_PAGE);
    let after_unmap = probe_read(TEST_PAGE);
    let _ = frame::free(range);

    ktest_assert_eq!(mapped, Ok(()));
    ktest_assert_eq!(twice, Err(arch::MapError::AlreadyMapped(TEST_PAGE)));
    ktest_assert_eq!(through_window, Ok(marker));
    ktest_assert_eq!(unmapped, Some(range.start));
    ktest_assert!(after_unmap.is_err(), "the page still reads after unmap");
    ktest_assert_eq!(arch::unmap_page(TEST_PAGE), None);
    Ok(())
}

fn pages_outside_the_window_are_refused() -> TestResult {
    // Any page-aligned RAM address does as the target: nothing is mapped.
    let physical = frame::snapshot()
        .free_ranges()
        .first()
        .map_or(0x10_0000, |r| r.start);
    let direct_map_page = arch::phys_to_virt(physical);
    ktest_assert_eq!(
        arch::map_page(direct_map_page, physical, Protection::ReadOnly),
        Err(arch::MapError::NotInWindow(direct_map_page))
    );
    ktest_assert_eq!(
        arch::map_page(
            arch::FILE_MAP_WINDOW_START + 8,
            physical,
            Protection::ReadOnly
        ),
        Err(arch::MapError::Misaligned(
            arch::FILE_MAP_WINDOW_START as u64 + 8
        ))
    );
    ktest_assert_eq!(
        arch::map_page(
            arch::FILE_MAP_WINDOW_START,
            physical + 1,
            Protection::ReadOnly
        ),
        Err(arch::MapError::Misaligned(physical + 1))
    );
    ktest_assert_eq!(arch::unmap_page(direct_map_page), None);
    Ok(())
}
