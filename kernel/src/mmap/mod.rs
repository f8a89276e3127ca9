//! gfs2 file mappings: the fault operation that serves [`crate::vm`]'s page faults from the
//! page cache, without the inode glock when the page is cached.
//!
//! [`map_file`] maps a byte range of a file of the mounted volume ([`crate::fscache`]) into
//! the file-mapping window with a [`GfsFileFaults`] as its [`FaultHandler`]. A page fault in
//! the range runs gfs2's fault operation ([`fs::gfs2::Mount::fault`]) in the two steps of
//! [`crate::vm`]:
//!
//! 1. with `FAULT_CACHED`, no glock: the page cache's lookup maps the page if it is cached,
//!    and otherwise answers `Retry` without I/O;
//! 2. only on `Retry`, without the flag: the inode glock in SH (whose first grant after a
//!    demote re-reads the dinode), the page read in (with readahead), the glock released.
//!
//! The page stays pinned in the cache while it is mapped; the pin is dropped in
//! [`FaultHandler::release`], once the page is unmapped. A page past the end of the file is
//! [`FaultError::OutOfRange`]: the access fails and the kernel goes on.
//!
//! Coherence: [`install_unmap_hook`] (which [`crate::fscache::install`] calls for the mounted
//! volume) makes the glock's `go_inval` unmap the inode's pages from every mapping
//! ([`vm::unmap_file_pages`], which flushes each from the TLB) before the cache drops them,
//! so the first access after a demote faults, takes the glock and sees the data as the other
//! node left it.
//!
//! # Reading into a mapping: Linux 5.16's mmap + page fault deadlock
//!
//! A [`MappingBuffer`] is part of a private mapping as the destination of a gfs2 read
//! ([`fs::gfs2::Mount::read_into`]). The read may hold the inode glock while it copies, and
//! the destination may be a mapping of the *same* file: a fault there whose second step
//! asked for the glock again would queue behind a demote another node is waiting for, and
//! the demote waits for the read's holder (the deadlock Linux fixed in 5.16: "gfs2: Fix
//! mmap + page fault deadlocks"). So [`MappingBuffer`] copies under [`vm::cached_only_faults`]:
//! a fault maps a cached page (or its private copy) with no lock, and a page that is not
//! cached stops the copy. The read then drops its glock (the demote runs, the other node
//! gets EX), calls [`MappingBuffer`]'s `fault_in` ([`vm::fault_in_writable`], whose faults
//! take the glock like any new holder) and reads on.
//!
//! `mmap-selftest` on the command line runs [`selftest::run`], which the runner's
//! `tests/mmap.rs` checks on both architectures.
//!
//! # Limitations
//!
//! - A mapping is named for [`vm::unmap_file_pages`] by its inode number (its dinode
//!   address): one volume is mounted per boot, so the number is unique.
//! - No shared writable mappings: the filesystem is read-only, so a write through a mapping
//!   only changes the mapping's private copy.

pub mod selftest;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::ops::Range;

use fs::gfs2::CachedInode;
use fs::pagecache::{self, PinnedPage, ReadBuffer};
use spin::Mutex;

use crate::fscache::KernelMount;
use crate::vm::{
    self, FaultError, FaultFlags, FaultHandler, FileId, FileMapping, MapMode, MapRangeError,
    PhysFrame,
};

/// The name of `inode`'s pages for [`vm`]: its inode number.
pub fn file_id(inode: &CachedInode) -> FileId {
    FileId(inode.addr())
}

/// Makes the mount's `go_inval` unmap an inode's pages from every mapping before the page
/// cache drops them.
pub fn install_unmap_hook(mount: &KernelMount) {
    mount.set_unmap_hook(Box::new(|inode| {
        let unmapped = vm::unmap_file_pages(FileId(inode), 0..u64::MAX);
        defmt::debug!(
            "go_inval of inode {=u64} unmapped {=usize} mapped pages",
            inode,
            unmapped
        );
    }));
}

/// Maps `len` bytes of `inode` from `file_offset` (page aligned), read-only or private as
/// `mode` says; no page is mapped until it is touched.
pub fn map_file(
    mount: &Arc<KernelMount>,
    inode: &Arc<CachedInode>,
    file_offset: u64,
    len: usize,
    mode: MapMode,
) -> Result<FileMapping, MapRangeError> {
    let handler = Arc::new(GfsFileFaults {
        mount: Arc::clone(mount),
        inode: Arc::clone(inode),
        pins: Mutex::new(BTreeMap::new()),
    });
    vm::map_file_range(file_id(inode), handler, file_offset, len, mode)
}

/// The [`FaultHandler`] of one gfs2 file mapping.
pub struct GfsFileFaults {
    mount: Arc<KernelMount>,
    inode: Arc<CachedInode>,
    /// The pins of the mapped pages, by file page and frame address: a page is mapped at
    /// most once per mapping, but the handler is told only the page and frame on release.
    pins: Mutex<BTreeMap<(u64, u64), Vec<PinnedPage>>>,
}

impl FaultHandler for GfsFileFaults {
    fn fault(&self, file_page: u64, flags: FaultFlags) -> Result<PhysFrame, FaultError> {
        let flags = if flags.contains(FaultFlags::FAULT_CACHED) {
            pagecache::FaultFlags::FAULT_CACHED
        } else {
            pagecache::FaultFlags::NONE
        };

        let page = match self.mount.fault(&self.inode, file_page, flags) {
            Ok(page) => page,
            Err(pagecache::FaultError::Retry) => return Err(FaultError::Retry),
            Err(pagecache::FaultError::BeyondEnd(page)) => {
                return Err(FaultError::OutOfRange(page));
            }
            Err(error) => {
                defmt::warn!(
                    "fault on page {=u64} of inode {=u64}: {}",
                    file_page,
                    self.inode.addr(),
                    error
                );
                return Err(FaultError::Unavailable(file_page));
            }
        };
        let address = page.with_memory(|memory| memory.physical_address());
        let Some(frame) = PhysFrame::new(address) else {
            // Page-cache frames come from the frame allocator: always page aligned.
            defmt::error!("page-cache frame {=u64:#x} is not page aligned", address);
            return Err(FaultError::Unavailable(file_page));
        };

        let pinned = page.keep();
        self.pins
            .lock()
            .entry((file_page, address))
            .or_default()
            .push(pinned);
        Ok(frame)
    }

    fn release(&self, file_page: u64, frame: PhysFrame) {
        let key = (file_page, frame.address());
        let pinned = {
            let mut pins = self.pins.lock();
            let pinned = pins.get_mut(&key).and_then(Vec::pop);
            if pins.get(&key).is_some_and(Vec::is_empty) {
                pins.remove(&key);
            }
            pinned
        };
        match pinned {
            Some(pinned) => self.mount.page_cache().unpin(pinned),
            None => defmt::error!(
                "released page {=u64} (frame {=u64:#x}) of inode {=u64} was never pinned",
                file_page,
                frame.address(),
                self.inode.addr()
            ),
        }
    }
}

/// Bytes `range` of a private [`FileMapping`] as the destination of a gfs2 read (see the
/// module doc): copies with cached-only faults, faults pages in for writing.
pub struct MappingBuffer<'a> {
    mapping: &'a mut FileMapping,
    range: Range<usize>,
}

impl<'a> MappingBuffer<'a> {
    /// Bytes `range` of `mapping` (offsets in the mapping), or `None` if they do not lie in
    /// it.
    pub fn new(mapping: &'a mut FileMapping, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= mapping.len()).then_some(Self { mapping, range })
    }
}

impl ReadBuffer for MappingBuffer<'_> {
    fn len(&self) -> usize {
        self.range.len()
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        let room = self.range.len().saturating_sub(at);
        let bytes = &bytes[..bytes.len().min(room)];
        let _cached_only = vm::cached_only_faults();
        vm::copy_to_mapping(self.mapping, self.range.start + at, bytes)
    }

    fn fault_in(&mut self, range: Range<usize>) -> usize {
        let end = range.end.min(self.range.len());
        if range.start >= end {
            return 0;
        }
        let base = self.mapping.start() + self.range.start;
        vm::fault_in_writable(base + range.start..base + end)
    }
}
