//! The page cache: file data kept in memory in 4 KiB pages, and the generic read helper that
//! can be told to use cached pages only.
//!
//! A page is named by its [`Mapping`] (the address space of one inode) and its page index
//! (the byte offset in the file divided by [`PAGE_SIZE`]). The cache has a fixed number of
//! page frames, given when it is made; when all are in use, a clock sweep evicts a page that
//! was not used since the hand last passed it. A page that someone is copying from or reading
//! into is pinned and never evicted.
//!
//! Each page is in one of three [`PageState`]s: `Locked` while its data is being read in
//! (lookups that may not wait treat it as missing), `UpToDate` once the data is there, or
//! `Error` when the read failed (the next read that may do I/O tries again).
//!
//! [`PageCache::read`] copies a byte range of a mapping into a buffer. Missing pages come in
//! through the filesystem's [`AddressSpaceOps`]: a run of consecutive missing pages is handed
//! to [`AddressSpaceOps::readahead`] as one request. With [`ReadFlags::CACHED`] it never does
//! I/O and never calls the filesystem: the first missing page ends the read.
//! [`PageCache::fault`] is the page-fault counterpart: it pins one page, and with
//! [`FaultFlags::FAULT_CACHED`] it returns [`FaultError::Retry`] instead of reading.
//!
//! The buffer of a read is a [`ReadBuffer`]: a byte slice, or memory that may fault (a
//! kernel's mapping of a file, maybe of the one being read). The read copies into it with a
//! page pinned and maybe a filesystem lock held, so a copy only takes faults that need no
//! lock and no I/O; when it stops short the read ends with [`ReadEnd::BufferFault`] and the
//! bytes copied so far, and the caller faults the buffer in ([`ReadBuffer::fault_in`]) with
//! its locks released before it reads on (Linux 5.16's `fault_in_iov_iter_writeable`).
//!
//! # The invariant, and why a read may skip the cluster lock
//!
//! > While a page of a mapping is in the cache, that page and the mapping's size are valid.
//!
//! The filesystem keeps it true: before it gives up the lock that made the data valid (a
//! gfs2 glock leaving SH or EX) it calls [`PageCache::invalidate`], which marks the size
//! stale and drops every page of the mapping; it sets the size again ([`Mapping::set_size`])
//! only once it holds the lock again and has re-read the inode. So a read that finds its
//! pages needs no lock at all, and only a miss costs a lock.
//!
//! A cached-only read that overlaps an invalidation could copy old pages and then new ones.
//! [`Mapping`] keeps a sequence count, as a seqlock does: odd while an invalidation runs,
//! and up by two for each. A cached-only read notes the count before it starts and checks it
//! when it is done; if it was odd, or changed, the read reports [`ReadError::NotCached`] so
//! that the caller repeats it under the lock. (A single counter bumped once per invalidation
//! is not enough: a read that notes it just after the bump can still find old pages not yet
//! dropped, then new ones; the loom model found that interleaving.) Hence a read that starts after [`PageCache::invalidate`] returned never
//! sees a page of before the invalidation, and no read mixes both.
//!
//! | path | locks taken | I/O |
//! | --- | --- | --- |
//! | `read` with `CACHED`, every page cached | cache spinlock per lookup; page read lock per copy | none |
//! | `read` with `CACHED`, a page missing or locked | as above, up to the miss | none; `NotCached` or a short read |
//! | `read` without flags, a miss | cache spinlock to insert `Locked` pages; their write locks during the fill | `readahead`/`read_page` of the filesystem |
//! | `read`, the copy stops at a buffer fault | as above, up to the fault; the page's pin and read lock are dropped | none; a short read, `BufferFault` |
//! | `fault` with `FAULT_CACHED`, page missing | cache spinlock | none; `Retry` |
//! | `invalidate` | cache spinlock | none |
//!
//! | flag | meaning |
//! | --- | --- |
//! | [`ReadFlags::CACHED`] | use cached pages only: stop at the first missing page, do no I/O, never call the filesystem (upstream Linux: `IOCB_NOIO`) |
//! | [`FaultFlags::FAULT_CACHED`] | map the page only if it is cached, else ask the caller to retry after taking its lock |
//!
//! The caller of a read without flags must hold the lock that makes the mapping's data and
//! size valid (in gfs2: the inode glock in SH or EX); the cache itself takes only its own
//! spinlocks, never a filesystem lock, so it cannot invert lock order.
//!
//! # Page memory
//!
//! Frames are given to [`PageCache::with_frames`] as values of a type that implements
//! [`PageMemory`]: the kernel can back them with frames of its frame allocator, and the host
//! uses [`PageBuf`], a boxed 4 KiB array ([`PageCache::new`]). All frames are given at once,
//! so the cache never allocates page memory while it runs.
//!
//! # Limitations
//!
//! - The index is one `BTreeMap` behind one spinlock: lookups from many CPUs contend on it.
//! - A readahead fills its pages from one contiguous buffer that the filesystem reads into
//!   and the cache then copies out of (the block trait has no scatter-gather read).
//! - The readahead window is fixed ([`PageCache::set_readahead`]); it does not grow with
//!   sequential access as Linux's does.
//! - Waiting for a page that another thread is reading in spins: the kernel has no
//!   scheduler to sleep on yet.

mod read;

pub use read::{
    AddressSpaceOps, FaultError, FaultFlags, PageRef, PinnedPage, ReadBuffer, ReadEnd, ReadError,
    ReadFlags, ReadOutcome,
};

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, RwLock};

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;

/// Memory for one page frame.
pub trait PageMemory: Send + Sync {
    /// The bytes of the frame.
    fn bytes(&self) -> &[u8; PAGE_SIZE];

    /// The bytes of the frame, to fill it.
    fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE];
}

/// A page frame on the heap.
pub type PageBuf = Box<[u8; PAGE_SIZE]>;

impl PageMemory for PageBuf {
    fn bytes(&self) -> &[u8; PAGE_SIZE] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        self
    }
}

/// Names a mapping in the cache; unique among all mappings made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MappingId(u64);

/// The address space of one file: what names its pages, its size and its invalidations.
///
/// The size is valid only between [`Mapping::set_size`] (the filesystem re-read the inode
/// under its lock) and the next [`PageCache::invalidate`].
#[derive(Debug)]
pub struct Mapping {
    id: MappingId,
    size: AtomicU64,
    size_valid: AtomicBool,
    /// A sequence count: odd while an invalidation runs, up by two for each one done. A
    /// cached-only read that starts on an odd count or sees it change discards its copy.
    sequence: AtomicU64,
}

impl Mapping {
    /// A new mapping with no pages and a stale size.
    pub fn new() -> Self {
        // Only unique numbers are needed, not an order: core's atomic even under loom.
        static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        Self {
            id: MappingId(id),
            size: AtomicU64::new(0),
            size_valid: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
        }
    }

    /// The mapping's name in the cache.
    pub fn id(&self) -> MappingId {
        self.id
    }

    /// The size in bytes, or `None` while it is stale.
    pub fn size(&self) -> Option<u64> {
        let size = self.size.load(Ordering::SeqCst);
        self.size_valid.load(Ordering::SeqCst).then_some(size)
    }

    /// Records the size the filesystem just read under its lock, and marks it valid.
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::SeqCst);
        self.size_valid.store(true, Ordering::SeqCst);
    }

    /// How many invalidations of the mapping started.
    pub fn invalidations(&self) -> u64 {
        self.sequence().div_ceil(2)
    }

    /// The invalidation sequence count: odd while an invalidation runs, and different
    /// after any invalidation started. A reader that notes it before copying and finds it
    /// unchanged and even afterwards copied from one state of the mapping.
    pub fn sequence(&self) -> u64 {
        self.sequence.load(Ordering::SeqCst)
    }
}

impl Default for Mapping {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of a cached page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PageState {
    /// Being read in; its data is not there yet.
    Locked,
    /// Holds the file's data.
    UpToDate,
    /// Reading it in failed; a read that may do I/O tries again.
    Error,
}

/// What the cache did, counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CacheStats {
    /// Lookups that found the page up to date.
    pub hits: u64,
    /// Lookups that did not (missing, locked or in error).
    pub misses: u64,
    /// Pages dropped to make room for others.
    pub evictions: u64,
    /// Pages read in ahead: those of a fill beyond the page that was asked for.
    pub readahead_pages: u64,
    /// Pages read in (by `read_page` or `readahead`).
    pub pages_read: u64,
    /// Pages dropped by [`PageCache::invalidate`].
    pub invalidated: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    readahead_pages: AtomicU64,
    pages_read: AtomicU64,
    invalidated: AtomicU64,
}

fn count(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A page's place in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PageKey {
    mapping: MappingId,
    index: u64,
}

/// The bookkeeping of one frame.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The page it holds, `None` when free.
    key: Option<PageKey>,
    state: PageState,
    /// Readers copying from it and fills writing it: a pinned page is never evicted.
    pins: u32,
    /// Used since the clock hand last passed.
    referenced: bool,
    /// Dropped from the index while pinned: freed when the last pin goes.
    detached: bool,
}

impl Slot {
    const FREE: Self = Self {
        key: None,
        state: PageState::Error,
        pins: 0,
        referenced: false,
        detached: false,
    };
}

#[derive(Debug)]
struct CacheState {
    index: BTreeMap<PageKey, usize>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    clock_hand: usize,
}

impl CacheState {
    /// A free slot, evicting an unpinned page not referenced lately if needed.
    fn allocate(&mut self, counters: &Counters) -> Option<usize> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }

        // Two turns of the hand: the first may only clear referenced bits.
        let frames = self.slots.len();
        for _ in 0..2 * frames {
            let slot = self.clock_hand;
            self.clock_hand = (self.clock_hand + 1) % frames;
            let page = &mut self.slots[slot];
            if page.pins > 0 || page.state == PageState::Locked {
                continue;
            }
            if page.referenced {
                page.referenced = false;
                continue;
            }

            if let Some(key) = page.key {
                self.index.remove(&key);
            }
            *page = Slot::FREE;
            count(&counters.evictions, 1);
            return Some(slot);
        }
        None
    }

    /// Drops one pin of `slot`, freeing it if it was detached and this was the last pin.
    fn unpin(&mut self, slot: usize) {
        let page = &mut self.slots[slot];
        page.pins -= 1;
        if page.pins == 0 && page.detached {
            *page = Slot::FREE;
            self.free.push(slot);
        }
    }
}

/// A cache of file pages over a fixed set of frames.
pub struct PageCache<M: PageMemory = PageBuf> {
    state: Mutex<CacheState>,
    frames: Vec<RwLock<M>>,
    counters: Counters,
    /// Pages a fill reads at most, the asked-for page included.
    readahead_pages: AtomicU64,
}

/// The readahead window of a new cache, in pages (128 KiB, Linux's default).
pub const DEFAULT_READAHEAD_PAGES: usize = 32;

impl PageCache<PageBuf> {
    /// A cache of `capacity` pages on the heap (at least one).
    pub fn new(capacity: usize) -> Self {
        let frames = (0..capacity.max(1)).map(|_| Box::new([0; PAGE_SIZE]));
        Self::with_frames(frames)
    }
}

impl<M: PageMemory> PageCache<M> {
    /// A cache over the given frames; it holds as many pages as there are frames.
    ///
    /// # Panics
    ///
    /// If `frames` is empty.
    pub fn with_frames(frames: impl IntoIterator<Item = M>) -> Self {
        let frames: Vec<RwLock<M>> = frames.into_iter().map(RwLock::new).collect();
        assert!(!frames.is_empty(), "a page cache needs at least one frame");
        let capacity = frames.len();
        Self {
            state: Mutex::new(CacheState {
                index: BTreeMap::new(),
                slots: alloc::vec![Slot::FREE; capacity],
                free: (0..capacity).rev().collect(),
                clock_hand: 0,
            }),
            frames,
            counters: Counters::default(),
            readahead_pages: AtomicU64::new(DEFAULT_READAHEAD_PAGES as u64),
        }
    }

    /// Pages the cache can hold.
    pub fn capacity(&self) -> usize {
        self.frames.len()
    }

    /// Pages it holds now.
    pub fn cached_pages(&self) -> usize {
        self.state.lock().index.len()
    }

    /// Sets how many pages one fill reads at most (at least 1: no readahead).
    pub fn set_readahead(&self, pages: usize) {
        self.readahead_pages
            .store(pages.max(1) as u64, Ordering::Relaxed);
    }

    /// The state of page `index` of `mapping`, if it is cached.
    pub fn page_state(&self, mapping: &Mapping, index: u64) -> Option<PageState> {
        let state = self.state.lock();
        let key = PageKey {
            mapping: mapping.id,
            index,
        };
        state.index.get(&key).map(|&slot| state.slots[slot].state)
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        CacheStats {
            hits: load(&counters.hits),
            misses: load(&counters.misses),
            evictions: load(&counters.evictions),
            readahead_pages: load(&counters.readahead_pages),
            pages_read: load(&counters.pages_read),
            invalidated: load(&counters.invalidated),
        }
    }

    /// Marks the size of `mapping` stale and drops all its pages; returns how many.
    ///
    /// Once it returns, no read that starts later sees a page or size of before: reads find
    /// the size stale until [`Mapping::set_size`], and a cached-only read still running
    /// discards what it copied. A page pinned by a reader still copying from it leaves the
    /// index at once and is freed when the reader is done.
    pub fn invalidate(&self, mapping: &Mapping) -> usize {
        // The sequence count goes odd first: a cached-only read that started before sees it
        // change, and one that starts now gives up at once. Even again once the pages are
        // gone.
        mapping.sequence.fetch_add(1, Ordering::SeqCst);
        mapping.size_valid.store(false, Ordering::SeqCst);

        let mut state = self.state.lock();
        let first = PageKey {
            mapping: mapping.id,
            index: 0,
        };
        let keys: Vec<PageKey> = state
            .index
            .range(first..)
            .take_while(|(key, _)| key.mapping == mapping.id)
            .map(|(&key, _)| key)
            .collect();
        for key in &keys {
            let Some(slot) = state.index.remove(key) else {
                continue;
            };
            if state.slots[slot].pins > 0 {
                state.slots[slot].detached = true;
            } else {
                state.slots[slot] = Slot::FREE;
                state.free.push(slot);
            }
        }
        drop(state);
        mapping.sequence.fetch_add(1, Ordering::SeqCst);

        count(&self.counters.invalidated, keys.len() as u64);
        #[cfg(feature = "defmt")]
        defmt::debug!(
            "page cache: invalidated {} pages of mapping {}",
            keys.len(),
            mapping.id
        );
        keys.len()
    }
}

impl<M: PageMemory> core::fmt::Debug for PageCache<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageCache")
            .field("capacity", &self.capacity())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod loom_models;
#[cfg(all(test, not(loom)))]
mod tests;
