//! The generic read and fault helpers, their flags, and the operations a filesystem gives
//! them to read pages in.

use alloc::vec::Vec;

use super::{Mapping, PAGE_SIZE, PageCache, PageKey, PageMemory, PageState, count};
use crate::sync::{Ordering, relax};

/// How a filesystem reads its pages in: called by the cache on a miss of a read without
/// [`ReadFlags::CACHED`], with no lock of the cache held.
///
/// The pages passed are whole frames; bytes past the end of the file must be zeroed.
pub trait AddressSpaceOps {
    /// Why reading failed.
    type Error;

    /// Reads page `index` of the file into `page`.
    fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Self::Error>;

    /// Reads the consecutive pages from `first` on, as few device requests as the file's
    /// layout allows. By default page by page.
    fn readahead(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), Self::Error> {
        for (index, page) in (first..).zip(pages.iter_mut()) {
            self.read_page(index, page)?;
        }
        Ok(())
    }
}

/// Flags of [`PageCache::read`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadFlags(u32);

impl ReadFlags {
    /// No flags: missing pages are read in.
    pub const NONE: Self = Self(0);

    /// Cached pages only: the first missing page ends the read; no I/O, no call into the
    /// filesystem, no wait for a page being read in. (Linux 5.8 merged this as `IOCB_NOIO`.)
    pub const CACHED: Self = Self(1);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for ReadFlags {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Flags of [`PageCache::fault`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaultFlags(u32);

impl FaultFlags {
    /// No flags: a missing page is read in.
    pub const NONE: Self = Self(0);

    /// The page only if cached: otherwise [`FaultError::Retry`], without I/O.
    pub const FAULT_CACHED: Self = Self(1);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Where a read copies its bytes: a byte slice, or memory that may fault (a kernel's file
/// mapping).
///
/// [`PageCache::read`] calls [`ReadBuffer::copy_at`] with a page pinned and its frame
/// read-locked, and the caller may hold a cluster lock (a gfs2 glock): a copy may only be
/// served by faults that take no lock and do no I/O (a cached page mapped, a private copy of
/// one made). What it cannot serve stops the copy short; the caller then releases its locks
/// and calls [`ReadBuffer::fault_in`], which may do everything a fault does, and retries
/// (Linux 5.16: copies with page faults disabled, then `fault_in_iov_iter_writeable`).
pub trait ReadBuffer {
    /// Its length in bytes.
    fn len(&self) -> usize;

    /// Whether it holds no byte.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `bytes` to byte `at`; returns how many it copied: fewer than `bytes.len()`
    /// only when its memory faulted at byte `at + copied` with a fault that could not be
    /// served without I/O or locks.
    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize;

    /// Makes bytes `range` writable, doing what `copy_at` could not (in a kernel: page
    /// faults that may take the inode glock and read pages in). Called with no lock held.
    /// Returns how many bytes from `range.start` are writable now (0: the buffer is bad at
    /// `range.start`).
    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize;
}

impl ReadBuffer for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        self[at..at + bytes.len()].copy_from_slice(bytes);
        bytes.len()
    }

    /// Memory of the caller never faults: all of `range` is writable.
    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize {
        range.len()
    }
}

impl<const N: usize> ReadBuffer for [u8; N] {
    fn len(&self) -> usize {
        N
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        self.as_mut_slice().copy_at(at, bytes)
    }

    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize {
        range.len()
    }
}

impl ReadBuffer for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        self.as_mut_slice().copy_at(at, bytes)
    }

    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize {
        range.len()
    }
}

/// Why a read that did not fail ended where it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReadEnd {
    /// It reached the end of the buffer or of the file.
    Complete,
    /// It stopped at a page that was not cached ([`ReadFlags::CACHED`] only).
    Miss,
    /// The buffer faulted: [`ReadBuffer::copy_at`] copied less than it was given, and the
    /// caller should [`ReadBuffer::fault_in`] the buffer from the outcome's `bytes` on, with
    /// no lock held, and read on.
    BufferFault,
}

/// How a read ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadOutcome {
    /// Bytes copied into the buffer, from its start.
    pub bytes: usize,
    /// Why it stopped there.
    pub end: ReadEnd,
}

/// Why a read failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReadError<E> {
    /// A cached-only read found its first page (or the size) not cached, or an invalidation
    /// overlapped it; nothing it copied may be used.
    #[error("the data is not cached")]
    NotCached,
    /// A read that may do I/O found the size stale: the caller does not hold the lock that
    /// makes the mapping valid.
    #[error("the size of the mapping is stale")]
    SizeStale,
    /// Every frame is pinned or being read in.
    #[error("no free page frame: every page is in use")]
    NoFreePage,
    /// The filesystem failed to read a page in.
    #[error("reading page {index} failed: {source}")]
    Fill {
        /// The first page of the failed request.
        index: u64,
        /// The filesystem's error.
        #[source]
        source: E,
    },
}

/// Why a fault got no page.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FaultError<E> {
    /// [`FaultFlags::FAULT_CACHED`] and the page (or the size) is not cached: take the lock
    /// and fault again without the flag.
    #[error("the page is not cached: retry under the lock")]
    Retry,
    /// The page lies wholly past the end of the file.
    #[error("page {0} lies past the end of the file")]
    BeyondEnd(u64),
    /// A fault without flags found the size stale (the caller holds no lock).
    #[error("the size of the mapping is stale")]
    SizeStale,
    /// Every frame is pinned or being read in.
    #[error("no free page frame: every page is in use")]
    NoFreePage,
    /// The filesystem failed to read the page in.
    #[error("reading page {index} failed: {source}")]
    Fill {
        /// The first page of the failed request.
        index: u64,
        /// The filesystem's error.
        #[source]
        source: E,
    },
}

impl<E> From<ReadError<E>> for FaultError<E> {
    fn from(error: ReadError<E>) -> Self {
        match error {
            ReadError::NotCached => Self::Retry,
            ReadError::SizeStale => Self::SizeStale,
            ReadError::NoFreePage => Self::NoFreePage,
            ReadError::Fill { index, source } => Self::Fill { index, source },
        }
    }
}

/// A page pinned in the cache: it is not evicted or reused while this lives.
pub struct PageRef<'a, M: PageMemory> {
    cache: &'a PageCache<M>,
    slot: usize,
}

impl<M: PageMemory> PageRef<'_, M> {
    /// Calls `f` with the page's bytes.
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8; PAGE_SIZE]) -> R) -> R {
        self.with_memory(|memory| f(memory.bytes()))
    }

    /// Calls `f` with the page's frame (the kernel finds its physical address there).
    pub fn with_memory<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        f(&self.cache.frames[self.slot].read())
    }

    /// Keeps the pin beyond this borrow, for a page mapped into an address space; hand the
    /// pin back with [`PageCache::unpin`] once the page is unmapped.
    pub fn keep(self) -> PinnedPage {
        let pinned = PinnedPage { slot: self.slot };
        core::mem::forget(self);
        pinned
    }
}

/// A pin [`PageRef::keep`] kept: the page is not evicted or reused until
/// [`PageCache::unpin`]. An invalidation still drops it from the index, so no new lookup
/// finds it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a pinned page stays in memory until it is handed to PageCache::unpin"]
pub struct PinnedPage {
    slot: usize,
}

impl<M: PageMemory> Drop for PageRef<'_, M> {
    fn drop(&mut self) {
        self.cache.state.lock().unpin(self.slot);
    }
}

/// What a lookup found.
enum Lookup {
    /// Up to date, and now pinned.
    Hit(usize),
    /// Missing, or not usable without I/O.
    Miss,
}

impl<M: PageMemory> PageCache<M> {
    /// Copies bytes of `mapping` from byte `offset` into `buf`, up to the mapping's size.
    ///
    /// Without flags, missing pages are read in through `ops` (a run of them as one
    /// [`AddressSpaceOps::readahead`]); the caller must hold the lock that makes the mapping
    /// valid. With [`ReadFlags::CACHED`] the first missing page ends the read: the outcome
    /// says so, or, when nothing was copied, the read fails with [`ReadError::NotCached`];
    /// `ops` is never called, and a read that overlapped an invalidation also fails with
    /// `NotCached`.
    ///
    /// A copy into `buf` that stops short ends the read with [`ReadEnd::BufferFault`] and the
    /// bytes copied so far, under either flag (with nothing copied too: that is no miss).
    pub fn read<O: AddressSpaceOps, B: ReadBuffer + ?Sized>(
        &self,
        mapping: &Mapping,
        ops: &O,
        offset: u64,
        buf: &mut B,
        flags: ReadFlags,
    ) -> Result<ReadOutcome, ReadError<O::Error>> {
        let cached_only = flags.contains(ReadFlags::CACHED);
        let sequence = mapping.sequence();
        if cached_only && sequence % 2 == 1 {
            count(&self.counters.misses, 1);
            return Err(ReadError::NotCached);
        }
        let Some(size) = mapping.size() else {
            return Err(if cached_only {
                ReadError::NotCached
            } else {
                ReadError::SizeStale
            });
        };

        let len = size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let last_page = (offset + len as u64).div_ceil(PAGE_SIZE as u64);
        let mut done = 0;
        let mut end = ReadEnd::Complete;
        while done < len {
            let position = offset + done as u64;
            let index = position / PAGE_SIZE as u64;
            let within = (position % PAGE_SIZE as u64) as usize;
            let bytes = (PAGE_SIZE - within).min(len - done);
            let key = PageKey {
                mapping: mapping.id,
                index,
            };

            let slot = match self.lookup(key, !cached_only) {
                Lookup::Hit(slot) => slot,
                Lookup::Miss if cached_only => {
                    end = ReadEnd::Miss;
                    break;
                }
                Lookup::Miss => self.fill(mapping, ops, index, last_page, size)?,
            };
            let copied = {
                let frame = self.frames[slot].read();
                buf.copy_at(done, &frame.bytes()[within..within + bytes])
            };
            self.state.lock().unpin(slot);
            done += copied.min(bytes);
            if copied < bytes {
                end = ReadEnd::BufferFault;
                break;
            }
        }

        // A cached-only read that overlapped an invalidation may hold pages of before it
        // and after it (or a size of before): its caller must repeat it under the lock.
        let missed_first = done == 0 && end == ReadEnd::Miss;
        if cached_only && (mapping.sequence() != sequence || missed_first) {
            return Err(ReadError::NotCached);
        }
        Ok(ReadOutcome { bytes: done, end })
    }

    /// Pins page `index` of `mapping` for a page fault.
    ///
    /// Without flags a missing page is read in through `ops` (the caller holds the lock
    /// that makes the mapping valid); with [`FaultFlags::FAULT_CACHED`] it is
    /// [`FaultError::Retry`] instead, without I/O.
    pub fn fault<O: AddressSpaceOps>(
        &self,
        mapping: &Mapping,
        ops: &O,
        index: u64,
        flags: FaultFlags,
    ) -> Result<PageRef<'_, M>, FaultError<O::Error>> {
        let cached_only = flags.contains(FaultFlags::FAULT_CACHED);
        let Some(size) = mapping.size() else {
            return Err(if cached_only {
                FaultError::Retry
            } else {
                FaultError::SizeStale
            });
        };
        if index >= size.div_ceil(PAGE_SIZE as u64) {
            return Err(FaultError::BeyondEnd(index));
        }

        let key = PageKey {
            mapping: mapping.id,
            index,
        };
        let slot = match self.lookup(key, !cached_only) {
            Lookup::Hit(slot) => slot,
            Lookup::Miss if cached_only => return Err(FaultError::Retry),
            Lookup::Miss => self.fill(mapping, ops, index, index + 1, size)?,
        };
        Ok(PageRef { cache: self, slot })
    }

    /// Drops a pin that [`PageRef::keep`] kept.
    pub fn unpin(&self, pinned: PinnedPage) {
        self.state.lock().unpin(pinned.slot);
    }

    /// Finds and pins an up-to-date page; waits for one being read in if `may_wait`.
    fn lookup(&self, key: PageKey, may_wait: bool) -> Lookup {
        loop {
            let mut state = self.state.lock();
            let Some(&slot) = state.index.get(&key) else {
                count(&self.counters.misses, 1);
                return Lookup::Miss;
            };
            let page = &mut state.slots[slot];
            match page.state {
                PageState::UpToDate => {
                    page.pins += 1;
                    page.referenced = true;
                    count(&self.counters.hits, 1);
                    return Lookup::Hit(slot);
                }
                PageState::Locked if may_wait => {
                    drop(state);
                    relax();
                }
                PageState::Locked | PageState::Error => {
                    count(&self.counters.misses, 1);
                    return Lookup::Miss;
                }
            }
        }
    }

    /// Reads page `index` in, with the missing pages after it up to the readahead window
    /// (or to `wanted_end`, the end of the request, if further), and returns its slot pinned.
    fn fill<O: AddressSpaceOps>(
        &self,
        mapping: &Mapping,
        ops: &O,
        index: u64,
        wanted_end: u64,
        size: u64,
    ) -> Result<usize, ReadError<O::Error>> {
        let file_pages = size.div_ceil(PAGE_SIZE as u64);
        let window = self.readahead_pages.load(Ordering::Relaxed);
        // At most half the cache, so that a fill cannot pin every frame.
        let most = (self.capacity() as u64 / 2).max(1);
        let run_limit = (wanted_end - index)
            .max(window)
            .min(most)
            .min(file_pages - index)
            .max(1);
        let key = |index| PageKey {
            mapping: mapping.id,
            index,
        };

        let slots = loop {
            let mut state = self.state.lock();
            let first = match state.index.get(&key(index)) {
                // Another reader filled it since the lookup.
                Some(&slot) if state.slots[slot].state == PageState::UpToDate => {
                    state.slots[slot].pins += 1;
                    state.slots[slot].referenced = true;
                    return Ok(slot);
                }
                Some(&slot) if state.slots[slot].state == PageState::Locked => {
                    drop(state);
                    relax();
                    continue;
                }
                // In error: read it again in the same frame.
                Some(&slot) => slot,
                None => {
                    let slot = state
                        .allocate(&self.counters)
                        .ok_or(ReadError::NoFreePage)?;
                    state.index.insert(key(index), slot);
                    slot
                }
            };
            state.slots[first] = super::Slot {
                key: Some(key(index)),
                state: PageState::Locked,
                pins: state.slots[first].pins + 1,
                referenced: true,
                detached: false,
            };

            let mut slots = Vec::with_capacity(run_limit as usize);
            slots.push(first);
            for next in index + 1..index + run_limit {
                if state.index.contains_key(&key(next)) {
                    break;
                }
                let Some(slot) = state.allocate(&self.counters) else {
                    break;
                };
                state.index.insert(key(next), slot);
                state.slots[slot] = super::Slot {
                    key: Some(key(next)),
                    state: PageState::Locked,
                    pins: 1,
                    referenced: false,
                    detached: false,
                };
                slots.push(slot);
            }
            break slots;
        };

        // The pages are Locked and pinned: nobody else reads or writes their frames.
        let result = {
            let mut guards: Vec<_> = slots
                .iter()
                .map(|&slot| self.frames[slot].write())
                .collect();
            let mut pages: Vec<&mut [u8; PAGE_SIZE]> =
                guards.iter_mut().map(|frame| frame.bytes_mut()).collect();
            if let [page] = pages.as_mut_slice() {
                ops.read_page(index, page)
            } else {
                ops.readahead(index, &mut pages)
            }
        };

        let new_state = if result.is_ok() {
            PageState::UpToDate
        } else {
            PageState::Error
        };
        let mut state = self.state.lock();
        for &slot in &slots {
            state.slots[slot].state = new_state;
        }
        for &slot in &slots[1..] {
            state.unpin(slot);
        }

        match result {
            Ok(()) => {
                count(&self.counters.pages_read, slots.len() as u64);
                count(&self.counters.readahead_pages, slots.len() as u64 - 1);
                Ok(slots[0])
            }
            Err(source) => {
                state.unpin(slots[0]);
                Err(ReadError::Fill { index, source })
            }
        }
    }
}
