//! File mappings: a file's byte range made readable (and, privately, writable) at a kernel
//! virtual address, with each page mapped only when it is first touched.
//!
//! [`map_file_range`] reserves virtual addresses in the file-mapping window the architecture
//! sets aside (`arch::FILE_MAP_WINDOW_START`, `arch::FILE_MAP_WINDOW_SIZE`) and maps no page.
//! The first access to a page raises a page fault; the architecture's trap handler hands any
//! page fault in the window to [`handle_page_fault`], which finds the [`FileMapping`] the
//! address belongs to and asks its [`FaultHandler`] (the filesystem) for the page's frame in
//! two steps:
//!
//! 1. with [`FaultFlags::FAULT_CACHED`]: the handler answers with a cached page, or
//!    [`FaultError::Retry`] without doing any I/O or taking any lock;
//! 2. only on `Retry`, again without the flag: the handler may take its locks (gfs2: the
//!    inode glock in SH) and read the page in.
//!
//! The frame is then mapped read-only and the trap returns, so the faulting instruction runs
//! again and reads it. A page the handler refuses ([`FaultError::OutOfRange`] past the end of
//! the file, [`FaultError::Unavailable`]) leaves the access failed: under `arch::probe_read`
//! or [`copy_to_mapping`] the caller learns of it, anywhere else it is an unexpected fault as
//! for any unmapped address.
//!
//! # Private mappings: copy-on-write
//!
//! A mapping made with [`MapMode::Private`] (Linux's `MAP_PRIVATE` with `PROT_WRITE`) may be
//! written. The first write to a page gives the mapping a copy of it: a frame of its own from
//! the frame allocator, filled from the file's page (the mapped one, or one the handler
//! supplies in the same two steps as a read) and mapped writable; the file's page goes back
//! to the handler. The file never sees the write, and a demote ([`unmap_file_pages`]) leaves
//! the copy mapped: it is the mapping's data now, not the file's. The copies go back to the
//! frame allocator when the mapping is unmapped.
//!
//! [`copy_to_mapping`] writes into a mapping with a copy that stops at a fault it cannot
//! serve instead of ending the kernel, and [`fault_in_writable`] brings pages in for writing:
//! the two halves of a read whose destination is a mapping (see below).
//!
//! For coherence, [`unmap_file_pages`] removes a range of a file's pages from every mapping
//! of that file and flushes each from the TLB: a gfs2 glock's `go_inval` calls it before the
//! glock is demoted, so the next access faults and sees the data as it is after the demote.
//!
//! # Frames and their owner
//!
//! The handler owns the frames it returns (the page cache's pages). Each frame stays mapped
//! until [`unmap_file_pages`] or [`unmap`] removes it, and then goes back to the handler
//! through [`FaultHandler::release`], so the handler can keep a mapped page pinned and drop
//! the pin there.
//!
//! # A fault racing an invalidation
//!
//! The handler runs without this module's lock held (it may do I/O and take its own locks).
//! Each mapping counts the invalidations of its pages; a fault notes the count before it asks
//! the handler and maps the frame only if the count is unchanged afterwards. If
//! [`unmap_file_pages`] ran in between, the frame may be one of before the invalidation: it
//! is released and the fault starts over. So once `unmap_file_pages` returns, no page of
//! before it gets mapped.
//!
//! | path | locks taken | handler called |
//! | --- | --- | --- |
//! | [`map_file_range`], [`unmap`], [`unmap_file_pages`] | the mapping registry's spinlock (and, inside, the architecture's page-table lock and the frame allocator's) | `release` after the lock is dropped |
//! | [`handle_page_fault`] | the registry's spinlock, briefly, before and after the handler | `fault` with `FAULT_CACHED`, then without it on `Retry` |
//! | [`handle_page_fault`], a write to a mapped file page of a private mapping | the registry's spinlock, for the copy | none (`release` of the file's page after) |
//!
//! # Copying under a lock: cached-only faults
//!
//! Code that holds a filesystem lock must not take a fault whose second step takes that lock
//! again: if another node is waiting for the lock in a conflicting state, the second request
//! queues behind it and nobody moves (the deadlock Linux 5.16 fixed in gfs2). While a
//! [`CachedOnlyFaults`] guard from [`cached_only_faults`] lives, a fault runs the
//! `FAULT_CACHED` step only; a miss fails the access ([`FaultFailure::NotCached`]), so a
//! [`copy_to_mapping`] stops short instead. The caller then drops its lock, brings the pages
//! in with [`fault_in_writable`] (or [`fault_in`] to read; either may take the lock in the
//! fault's second step), and tries again. A copy-on-write of a page that is cached needs no
//! lock, so it is served under the guard too.
//!
//! | counter | counts |
//! | --- | --- |
//! | `faults` | page faults in the window |
//! | `pages_mapped` | pages a fault mapped |
//! | `retries` | faults whose `FAULT_CACHED` step answered `Retry` (so the handler was called twice) |
//! | `failed` | faults that left the access failed |
//! | `pages_unmapped` | pages [`unmap`] and [`unmap_file_pages`] removed |
//! | `pages_copied` | private copies a write to a private mapping made |
//!
//! # Limitations
//!
//! - No shared writable mappings (the filesystem is read-only): a write through a
//!   [`MapMode::ReadOnly`] mapping fails, and so does an instruction fetch through any.
//! - One CPU: the TLB flushes are local, and a fault runs with interrupts off, so the handler
//!   must not wait for anything only an interrupt would bring (the drivers poll).
//! - Virtual addresses are found first fit in a list of mappings kept sorted by address, so
//!   mapping is linear in the number of live mappings.

pub mod tests;

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::arch::{self, Access, MapError, Protection};
use crate::boot::PhysRange;
use crate::mem::frame;

/// Size of a page.
pub const PAGE_SIZE: usize = 4096;

/// How many times a fault starts over because an invalidation overlapped it, before it gives
/// up (the access then fails).
const MAX_FAULT_ATTEMPTS: u32 = 8;

/// Names a file for [`unmap_file_pages`]: every mapping made with the same id maps the same
/// file (the page cache's id of the inode's address space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, defmt::Format)]
pub struct FileId(pub u64);

/// A physical, 4 KiB-aligned page frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct PhysFrame(u64);

impl PhysFrame {
    /// The frame at `address`, if it is page aligned.
    pub fn new(address: u64) -> Option<Self> {
        address
            .is_multiple_of(PAGE_SIZE as u64)
            .then_some(Self(address))
    }

    /// The frame's physical address.
    pub fn address(self) -> u64 {
        self.0
    }
}

/// Flags of [`FaultHandler::fault`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct FaultFlags(u32);

impl FaultFlags {
    /// No flags: the handler reads the page in if it must.
    pub const NONE: Self = Self(0);

    /// The page only if it is cached; otherwise [`FaultError::Retry`], with no I/O and no
    /// lock taken.
    pub const FAULT_CACHED: Self = Self(1);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Why a handler gave no page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum FaultError {
    /// `FAULT_CACHED` was set and the page is not cached: fault again without the flag.
    #[error("the page is not cached: fault again without FAULT_CACHED")]
    Retry,
    /// The file page lies past the end of the file.
    #[error("file page {0} lies past the end of the file")]
    OutOfRange(u64),
    /// The handler could not supply the file page (an I/O error, no free page).
    #[error("file page {0} could not be read")]
    Unavailable(u64),
}

/// The filesystem side of a file mapping: supplies the frames of the file's pages.
///
/// Called from the page-fault path, with interrupts off: it must not fault on the same page
/// it is asked for.
pub trait FaultHandler: Send + Sync {
    /// The frame that holds file page `file_page` (the file offset divided by
    /// [`PAGE_SIZE`]). With [`FaultFlags::FAULT_CACHED`], a page that is not cached is
    /// [`FaultError::Retry`], without I/O or locks. The frame must stay valid, holding that
    /// page, until it comes back through [`release`](Self::release).
    fn fault(&self, file_page: u64, flags: FaultFlags) -> Result<PhysFrame, FaultError>;

    /// `frame`, returned by [`fault`](Self::fault) for `file_page`, is no longer mapped
    /// (and no longer in any TLB).
    fn release(&self, file_page: u64, frame: PhysFrame);
}

/// What a mapping allows besides reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum MapMode {
    /// Every page is the file's page; a write through the mapping fails.
    ReadOnly,
    /// Reads see the file's pages until the mapping writes one: the first write to a page
    /// gives the mapping its own copy, which the file never sees (see the module doc).
    Private,
}

/// Why [`map_file_range`] made no mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum MapRangeError {
    /// The file offset is not a multiple of [`PAGE_SIZE`].
    #[error("file offset {0:#x} is not page aligned")]
    MisalignedOffset(u64),
    /// The range holds no byte.
    #[error("the range is empty")]
    Empty,
    /// The range ends past the largest file offset.
    #[error("the range at {offset:#x} of {len} bytes overflows")]
    Overflow { offset: u64, len: usize },
    /// No free virtual range of that size is left in the window.
    #[error("no {0} bytes of free virtual addresses in the file-mapping window")]
    WindowFull(usize),
}

/// A file range mapped at [`start`](Self::start): made by [`map_file_range`], ended by
/// [`unmap`]. Dropping it without `unmap` leaves the range mapped (and its frames held).
#[derive(Debug, PartialEq, Eq, defmt::Format)]
pub struct FileMapping {
    start: usize,
    len: usize,
    file: FileId,
    first_file_page: u64,
}

impl FileMapping {
    /// The first virtual address: file offset `file_offset` of [`map_file_range`].
    pub fn start(&self) -> usize {
        self.start
    }

    /// The mapped length in bytes (the requested length rounded up to whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The virtual addresses of the mapping.
    pub fn virtual_range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// The file it maps.
    pub fn file(&self) -> FileId {
        self.file
    }

    /// The file page at [`start`](Self::start).
    pub fn first_file_page(&self) -> u64 {
        self.first_file_page
    }
}

/// The counters (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct Counters {
    pub faults: u64,
    pub pages_mapped: u64,
    pub retries: u64,
    pub failed: u64,
    pub pages_unmapped: u64,
    pub pages_copied: u64,
}

/// The counters so far.
pub fn counters() -> Counters {
    Counters {
        faults: FAULTS.load(Ordering::Relaxed),
        pages_mapped: PAGES_MAPPED.load(Ordering::Relaxed),
        retries: RETRIES.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        pages_unmapped: PAGES_UNMAPPED.load(Ordering::Relaxed),
        pages_copied: PAGES_COPIED.load(Ordering::Relaxed),
    }
}

static FAULTS: AtomicU64 = AtomicU64::new(0);
static PAGES_MAPPED: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static PAGES_UNMAPPED: AtomicU64 = AtomicU64::new(0);
static PAGES_COPIED: AtomicU64 = AtomicU64::new(0);

fn count(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

/// A page of a region that is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MappedPage {
    /// The file's page, from the handler, mapped read-only.
    File(PhysFrame),
    /// The mapping's own copy (private mappings only), mapped writable; its frame comes from
    /// the frame allocator and goes back there.
    Private(PhysFrame),
}

/// A live mapping, as the registry keeps it.
struct Region {
    /// Bytes of virtual addresses, whole pages; a guard page follows them.
    len: usize,
    file: FileId,
    first_file_page: u64,
    mode: MapMode,
    handler: Arc<dyn FaultHandler>,
    /// The mapped pages, by page index in the region.
    present: BTreeMap<usize, MappedPage>,
    /// Calls of [`unmap_file_pages`] that touched this region.
    invalidations: u64,
    /// Unique among all regions ever made, so a fault can tell its region from a later one
    /// at the same address.
    serial: u64,
}

impl Region {
    fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    /// The virtual addresses the region reserves: its pages and the guard page after them.
    fn reserved_len(&self) -> usize {
        self.len + PAGE_SIZE
    }
}

/// Every live mapping, by first virtual address.
struct Registry {
    regions: BTreeMap<usize, Region>,
    next_serial: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    regions: BTreeMap::new(),
    next_serial: 0,
});

/// Reserves virtual addresses for `len` bytes of the file `file` from `file_offset` (a
/// multiple of [`PAGE_SIZE`]), served by `handler`, read-only or private as `mode` says. No
/// page is mapped: each is mapped by the first access to it.
pub fn map_file_range(
    file: FileId,
    handler: Arc<dyn FaultHandler>,
    file_offset: u64,
    len: usize,
    mode: MapMode,
) -> Result<FileMapping, MapRangeError> {
    if !file_offset.is_multiple_of(PAGE_SIZE as u64) {
        return Err(MapRangeError::MisalignedOffset(file_offset));
    }
    if len == 0 {
        return Err(MapRangeError::Empty);
    }
    let overflow = MapRangeError::Overflow {
        offset: file_offset,
        len,
    };
    let mapped_len = len.checked_next_multiple_of(PAGE_SIZE).ok_or(overflow)?;
    file_offset.checked_add(mapped_len as u64).ok_or(overflow)?;
    let reserved_len = mapped_len
        .checked_add(PAGE_SIZE)
        .ok_or(MapRangeError::WindowFull(mapped_len))?;

    let mut registry = REGISTRY.lock();
    let start =
        free_range(&registry.regions, reserved_len).ok_or(MapRangeError::WindowFull(mapped_len))?;
    let serial = registry.next_serial;
    registry.next_serial += 1;
    let first_file_page = file_offset / PAGE_SIZE as u64;
    registry.regions.insert(
        start,
        Region {
            len: mapped_len,
            file,
            first_file_page,
            mode,
            handler,
            present: BTreeMap::new(),
            invalidations: 0,
            serial,
        },
    );
    drop(registry);

    defmt::debug!(
        "mapped {=usize} bytes of file {} from offset {=u64:#x} at {=u64:#x} ({})",
        mapped_len,
        file,
        file_offset,
        start as u64,
        mode
    );
    Ok(FileMapping {
        start,
        len: mapped_len,
        file,
        first_file_page,
    })
}

/// The first free virtual range of `reserved_len` bytes in the window.
fn free_range(regions: &BTreeMap<usize, Region>, reserved_len: usize) -> Option<usize> {
    let window_end = arch::FILE_MAP_WINDOW_START + arch::FILE_MAP_WINDOW_SIZE;
    let mut candidate = arch::FILE_MAP_WINDOW_START;
    for (&start, region) in regions {
        if start - candidate >= reserved_len {
            return Some(candidate);
        }
        candidate = start + region.reserved_len();
    }
    (window_end - candidate >= reserved_len).then_some(candidate)
}

/// Unmaps every page of `mapping`, hands the file's frames back to its handler, frees its
/// private copies and its virtual addresses for the next [`map_file_range`].
pub fn unmap(mapping: FileMapping) {
    let mut registry = REGISTRY.lock();
    let Some(mut region) = registry.regions.remove(&mapping.start) else {
        // A `FileMapping` is only made by `map_file_range` and consumed here, so its region
        // is registered.
        defmt::error!(
            "unmapping {=u64:#x}: no mapping starts there",
            mapping.start as u64
        );
        return;
    };
    let released = unmap_present(mapping.start, &mut region, 0..usize::MAX, Keep::Nothing);
    drop(registry);

    count(&PAGES_UNMAPPED, released.len() as u64);
    for (file_page, frame) in &released {
        region.handler.release(*file_page, *frame);
    }
    defmt::debug!(
        "unmapped file {} at {=u64:#x} ({=usize} pages were mapped)",
        mapping.file,
        mapping.start as u64,
        released.len()
    );
}

/// Unmaps the pages `file_pages` of the file `file` from every mapping of it (flushing each
/// from the TLB) and hands their frames back to the handlers; returns how many were mapped.
/// Private copies stay: they are not the file's pages.
///
/// Once it returns, no fault that started before maps a page of before the call (see the
/// module doc). What a gfs2 glock's `go_inval` calls; `0..u64::MAX` unmaps every page.
pub fn unmap_file_pages(file: FileId, file_pages: Range<u64>) -> usize {
    let mut released = Vec::new();
    let mut registry = REGISTRY.lock();
    for (&start, region) in registry.regions.iter_mut() {
        if region.file != file {
            continue;
        }
        let first = region.first_file_page;
        let last = first + region.pages() as u64;
        if file_pages.end <= first || last <= file_pages.start {
            continue;
        }
        region.invalidations += 1;
        let pages = (file_pages.start.max(first) - first) as usize
            ..(file_pages.end.min(last) - first) as usize;
        for (file_page, frame) in unmap_present(start, region, pages, Keep::PrivateCopies) {
            released.push((region.handler.clone(), file_page, frame));
        }
    }
    drop(registry);

    count(&PAGES_UNMAPPED, released.len() as u64);
    for (handler, file_page, frame) in &released {
        handler.release(*file_page, *frame);
    }
    defmt::trace!(
        "unmapped {=usize} pages of file {} in {=u64}..{=u64}",
        released.len(),
        file,
        file_pages.start,
        file_pages.end
    );
    released.len()
}

/// Which pages [`unmap_present`] leaves mapped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    PrivateCopies,
}

/// Unmaps the mapped pages of `region` (at `start`) whose index is in `pages`, except those
/// `keep` names; frees the private copies among them and returns the file pages and frames
/// of the others, for the handler.
fn unmap_present(
    start: usize,
    region: &mut Region,
    pages: Range<usize>,
    keep: Keep,
) -> Vec<(u64, PhysFrame)> {
    let indices: Vec<usize> = region
        .present
        .range(pages)
        .filter(|(_, page)| keep == Keep::Nothing || matches!(page, MappedPage::File(_)))
        .map(|(&index, _)| index)
        .collect();
    let mut released = Vec::with_capacity(indices.len());
    for index in indices {
        let Some(page) = region.present.remove(&index) else {
            continue;
        };
        let address = start + index * PAGE_SIZE;
        let frame = match page {
            MappedPage::File(frame) | MappedPage::Private(frame) => frame,
        };
        if arch::unmap_page(address) != Some(frame.address()) {
            defmt::error!(
                "unmapping {=u64:#x}: the page table disagrees with the mapping's record",
                address as u64
            );
        }
        match page {
            MappedPage::File(frame) => {
                released.push((region.first_file_page + index as u64, frame))
            }
            MappedPage::Private(frame) => free_private_frame(frame),
        }
    }
    released
}

/// Gives a private copy's frame back to the frame allocator.
fn free_private_frame(frame: PhysFrame) {
    let range = PhysRange {
        start: frame.address(),
        end: frame.address() + PAGE_SIZE as u64,
    };
    if let Err(error) = frame::free(range) {
        defmt::error!(
            "freeing the private page frame {=u64:#x} failed: {}",
            frame.address(),
            error
        );
    }
}

/// Nesting depth of [`CachedOnlyFaults`] guards (one CPU: a global is its per-CPU state).
static CACHED_ONLY_DEPTH: AtomicU64 = AtomicU64::new(0);

/// While alive, page faults in the window are served from the cache only (see the module
/// doc): the handler's step without `FAULT_CACHED`, which may take locks and do I/O, is
/// skipped and a miss fails the access. Guards nest.
#[must_use = "faults are cached-only only while the guard lives"]
pub struct CachedOnlyFaults {
    _private: (),
}

/// Makes page faults cached-only until the guard is dropped.
pub fn cached_only_faults() -> CachedOnlyFaults {
    CACHED_ONLY_DEPTH.fetch_add(1, Ordering::Relaxed);
    CachedOnlyFaults { _private: () }
}

impl Drop for CachedOnlyFaults {
    fn drop(&mut self) {
        CACHED_ONLY_DEPTH.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Touches every page of `range` (virtual addresses) so that each is mapped, as a copy made
/// without cached-only faults would; returns the first access that failed. Call it without
/// holding the filesystem's locks: a page that is not cached is read in.
pub fn fault_in(range: Range<usize>) -> Result<(), arch::Fault> {
    for page in pages_of(range) {
        arch::probe_read(page)?;
    }
    Ok(())
}

/// Makes every page of `range` (virtual addresses) writable, as a write without cached-only
/// faults would (in a private mapping: each gets its copy), changing no byte; returns how
/// many bytes from `range.start` lie in pages that are writable now (`range.len()` if all
/// are). Call it without holding the filesystem's locks: a page that is not cached is read
/// in. Linux's `fault_in_writeable`.
pub fn fault_in_writable(range: Range<usize>) -> usize {
    for page in pages_of(range.clone()) {
        if arch::probe_write(page.max(range.start)).is_err() {
            return page.saturating_sub(range.start);
        }
    }
    range.len()
}

/// The first address of each page that `range` touches.
fn pages_of(range: Range<usize>) -> impl Iterator<Item = usize> {
    let first = if range.is_empty() {
        range.end
    } else {
        range.start & !(PAGE_SIZE - 1)
    };
    (first..range.end).step_by(PAGE_SIZE)
}

/// Copies `bytes` into `mapping` from byte `at` of it; returns how many it copied, from the
/// start: fewer than `bytes.len()` when the copy reached the end of the mapping or a write
/// fault that could not be served (past the end of the file, a page that is not cached under
/// [`cached_only_faults`], a [`MapMode::ReadOnly`] mapping). Faults in a private mapping
/// give each written page its copy.
pub fn copy_to_mapping(mapping: &mut FileMapping, at: usize, bytes: &[u8]) -> usize {
    let len = bytes.len().min(mapping.len.saturating_sub(at));
    if len == 0 {
        return 0;
    }

    // SAFETY: `at + len` lies within the mapping, so the destination is in the file-mapping
    // window; the exclusive borrow of `mapping` means no reference made through it to its
    // bytes is alive (mapped bytes are only lent out by borrowing their `FileMapping`).
    match unsafe { arch::copy_to_window(mapping.start + at, &bytes[..len]) } {
        Ok(()) => len,
        Err(short) => short.copied,
    }
}

/// What [`handle_page_fault`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum PageFaultOutcome {
    /// The page is mapped now: return, and the access runs again.
    Mapped,
    /// The address is not in the file-mapping window: not this module's fault.
    NotInWindow,
    /// The access must fail.
    Failed(FaultFailure),
}

/// Why a page fault in the window left the access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum FaultFailure {
    /// No mapping covers the address (a guard page, or an unmapped range).
    #[error("no file mapping covers the address")]
    NoMapping,
    /// A write to a read-only mapping, or an instruction fetch: mappings are never
    /// executable.
    #[error("the mapping does not allow the access")]
    AccessDenied(Access),
    /// A write to a private mapping found no free frame for the page's copy.
    #[error("no free frame for a private copy")]
    NoFreeFrame,
    /// The handler gave no page.
    #[error("the filesystem gave no page: {0}")]
    Handler(FaultError),
    /// Invalidations kept overlapping the fault.
    #[error("invalidations overlapped the fault {0} times")]
    Raced(u32),
    /// The page is not cached and faults are cached-only ([`cached_only_faults`]).
    #[error("the page is not cached and faults are cached-only")]
    NotCached,
    /// The page could not be mapped.
    #[error("mapping the page failed: {0}")]
    Map(MapError),
}

/// Serves a page fault at `address`: called by the architecture's trap handler for every
/// page fault, before it looks at its exception table.
pub fn handle_page_fault(address: usize, access: Access) -> PageFaultOutcome {
    let window =
        arch::FILE_MAP_WINDOW_START..arch::FILE_MAP_WINDOW_START + arch::FILE_MAP_WINDOW_SIZE;
    if !window.contains(&address) {
        return PageFaultOutcome::NotInWindow;
    }
    count(&FAULTS, 1);

    match serve_fault(address, access) {
        Ok(()) => PageFaultOutcome::Mapped,
        Err(failure) => {
            count(&FAILED, 1);
            defmt::debug!(
                "page fault at {=u64:#x} ({}) in the file-mapping window failed: {}",
                address as u64,
                access,
                failure
            );
            PageFaultOutcome::Failed(failure)
        }
    }
}

/// The fault's two steps, repeated while invalidations overlap them; in a private mapping a
/// write then copies the page.
fn serve_fault(address: usize, access: Access) -> Result<(), FaultFailure> {
    let page_address = address & !(PAGE_SIZE - 1);
    for _ in 0..MAX_FAULT_ATTEMPTS {
        let mut registry = REGISTRY.lock();
        let Some((&start, region)) = registry.regions.range_mut(..=page_address).next_back() else {
            return Err(FaultFailure::NoMapping);
        };
        if page_address - start >= region.len {
            return Err(FaultFailure::NoMapping);
        }
        let write = match (access, region.mode) {
            (Access::Read, _) => false,
            (Access::Write, MapMode::Private) => true,
            (Access::Write | Access::Execute, _) => return Err(FaultFailure::AccessDenied(access)),
        };
        let index = (page_address - start) / PAGE_SIZE;
        let file_page = region.first_file_page + index as u64;
        match region.present.get(&index).copied() {
            // The page is mapped as the access needs it: the access saw a translation from
            // before `map_page` flushed it, and sees the page when it runs again.
            Some(MappedPage::Private(_)) => return Ok(()),
            Some(MappedPage::File(_)) if !write => return Ok(()),
            // A write to the file's page, mapped: copy it, no need to ask the handler.
            Some(MappedPage::File(file_frame)) => {
                arch::unmap_page(page_address);
                let copied = map_private_copy(page_address, file_frame);
                let copied = match copied {
                    Ok(copy) => copy,
                    Err(failure) => {
                        // Put the file's page back as it was.
                        if arch::map_page(page_address, file_frame.address(), Protection::ReadOnly)
                            .is_err()
                        {
                            region.present.remove(&index);
                            let handler = region.handler.clone();
                            drop(registry);
                            handler.release(file_page, file_frame);
                        }
                        return Err(failure);
                    }
                };
                region.present.insert(index, MappedPage::Private(copied));
                let handler = region.handler.clone();
                drop(registry);

                copied_on_write(&*handler, file_page, file_frame, page_address, copied);
                return Ok(());
            }
            None => {}
        }
        let handler = region.handler.clone();
        let (serial, invalidations) = (region.serial, region.invalidations);
        drop(registry);

        let frame = match handler.fault(file_page, FaultFlags::FAULT_CACHED) {
            Err(FaultError::Retry) if CACHED_ONLY_DEPTH.load(Ordering::Relaxed) > 0 => {
                return Err(FaultFailure::NotCached);
            }
            Err(FaultError::Retry) => {
                count(&RETRIES, 1);
                handler
                    .fault(file_page, FaultFlags::NONE)
                    .map_err(FaultFailure::Handler)?
            }
            other => other.map_err(FaultFailure::Handler)?,
        };

        let mut registry = REGISTRY.lock();
        let region = registry
            .regions
            .get_mut(&start)
            .filter(|region| region.serial == serial && region.invalidations == invalidations);
        let Some(region) = region else {
            drop(registry);
            handler.release(file_page, frame);
            continue;
        };
        let mapped = if write {
            map_private_copy(page_address, frame).map(MappedPage::Private)
        } else {
            arch::map_page(page_address, frame.address(), Protection::ReadOnly)
                .map(|()| MappedPage::File(frame))
                .map_err(FaultFailure::Map)
        };
        let page = match mapped {
            Ok(page) => page,
            Err(failure) => {
                drop(registry);
                handler.release(file_page, frame);
                return Err(failure);
            }
        };
        region.present.insert(index, page);
        drop(registry);

        count(&PAGES_MAPPED, 1);
        if let MappedPage::Private(copy) = page {
            copied_on_write(&*handler, file_page, frame, page_address, copy);
        } else {
            defmt::trace!(
                "mapped file page {=u64} at {=u64:#x} (frame {=u64:#x})",
                file_page,
                page_address as u64,
                frame.address()
            );
        }
        return Ok(());
    }
    Err(FaultFailure::Raced(MAX_FAULT_ATTEMPTS))
}

/// After a write made the private copy `copy` of file page `file_page` (in `file_frame`) at
/// `page_address`: the copy holds the data, so the file's page goes back to the handler.
fn copied_on_write(
    handler: &dyn FaultHandler,
    file_page: u64,
    file_frame: PhysFrame,
    page_address: usize,
    copy: PhysFrame,
) {
    handler.release(file_page, file_frame);
    count(&PAGES_COPIED, 1);
    defmt::trace!(
        "copied file page {=u64} at {=u64:#x} on write (frame {=u64:#x})",
        file_page,
        page_address as u64,
        copy.address()
    );
}

/// Copies the file's page in `file_frame` into a new frame and maps that writable at
/// `page_address`, which maps nothing; returns the new frame.
fn map_private_copy(page_address: usize, file_frame: PhysFrame) -> Result<PhysFrame, FaultFailure> {
    let range = frame::allocate(1, 1).ok_or(FaultFailure::NoFreeFrame)?;
    let Some(copy) = PhysFrame::new(range.start) else {
        // The frame allocator hands out whole frames.
        let _ = frame::free(range);
        return Err(FaultFailure::NoFreeFrame);
    };
    raw::copy_frame(file_frame, copy);

    if let Err(error) = arch::map_page(page_address, copy.address(), Protection::ReadWrite) {
        free_private_frame(copy);
        return Err(FaultFailure::Map(error));
    }
    Ok(copy)
}

mod raw {
    //! Copying a whole frame through the direct map: the unsafe code of this module.

    use super::{PAGE_SIZE, PhysFrame};
    use crate::arch;

    /// Copies the 4 KiB of `from` into `to`.
    ///
    /// `from` is a file's page the handler gave (pinned, up to date: only read while it is
    /// handed out), `to` a frame just taken from the frame allocator that nothing else uses.
    pub(super) fn copy_frame(from: PhysFrame, to: PhysFrame) {
        let source = arch::phys_to_virt(from.address()) as *const u8;
        let destination = arch::phys_to_virt(to.address()) as *mut u8;
        // SAFETY: both are whole, page-aligned frames of RAM in the direct map, so both
        // ranges are valid for 4 KiB; they are different frames, so they do not overlap.
        // `to` is owned by the caller alone; `from` is only read, by anyone, while it is
        // handed out (see `FaultHandler::fault`), so reading it races with no write.
        unsafe { core::ptr::copy_nonoverlapping(source, destination, PAGE_SIZE) };
    }
}
