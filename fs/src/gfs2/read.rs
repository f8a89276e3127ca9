//! gfs2's read path: the page cache first without any lock, the inode glock only on a miss.
//!
//! A [`Mount`] is a gfs2 [`Filesystem`] joined to a [`PageCache`] and to the node's glocks.
//! [`Mount::read`] (and [`Mount::read_into`], for a buffer that may fault) is Linux's
//! `gfs2_file_read_iter` as merged in 5.8 and fixed in 5.16:
//!
//! 1. the generic read with [`ReadFlags::CACHED`] and no glock: if every page it needs is
//!    cached (and so is the size) and the buffer takes every byte, it is done: no lock, no
//!    I/O;
//! 2. on [`ReadError::NotCached`], a read that stopped at a missing page, or one whose copy
//!    stopped at a buffer fault, take the inode glock in SH (the first grant after a demote
//!    runs `go_lock`, which re-reads the dinode: size and pointers);
//! 3. continue the generic read without the flag from where the last step stopped (from the
//!    start if an invalidation came in between, so a read never joins data of before and
//!    after a remote write); missing pages are read in by readahead through the metadata
//!    tree;
//! 4. if the copy stopped at a buffer fault, release the glock (a demote another node asked
//!    for runs now), fault the buffer in ([`ReadBuffer::fault_in`], up to
//!    [`FAULT_IN_PAGES`] pages, which may take this very glock in its own holder) and go
//!    back to step 2; else release the glock (it stays in SH in the cluster until another
//!    node asks for it).
//!
//! The glock's [`GlockOps`] are the mount's: `go_lock` re-reads the dinode, checks its tree
//! and sets the mapping's size; `go_inval` drops the inode's pages and marks the size stale.
//! The demote callback of the lock module reaches the mount as its [`DemoteHandler`].
//!
//! | path | glock | page-cache locks | block I/O |
//! | --- | --- | --- | --- |
//! | read, all pages cached | none | cache spinlock, page read locks | none |
//! | read, a page missing | inode glock SH, once per round | as above, plus fills | readahead of the missing run |
//! | read, the copy stops at a buffer fault | none while [`ReadBuffer::fault_in`] runs; SH again after | none of the read's | what the buffer's faults read |
//! | [`Mount::fault`] with `FAULT_CACHED` | none | cache spinlock | none; `Retry` on a miss |
//! | [`Mount::fault`] without flags | inode glock SH, for the call | as above, plus a fill | the page |
//! | demote (another node wants EX) | waits for holders, then drops to UN | cache spinlock (`invalidate`) | none |
//! | first read after a demote | inode glock SH: `go_lock` | as a miss | dinode, its indirect blocks, data |
//!
//! Linux 5.16 fixed deadlocks in which a read holding the glock faulted on a user buffer
//! mapped from the same file while another node waited for EX: the fault's own glock
//! request queued behind the pending demote, which waited for the read's holder. Here too the
//! copy under the glock may only take faults that need no lock and no I/O
//! ([`ReadBuffer::copy_at`] stops short otherwise), and every fault that may lock runs in
//! [`ReadBuffer::fault_in`] with no holder of this read granted, so the demote runs first
//! and the fault waits for the other node like any new holder. [`Mount::read_stats`] counts
//! the rounds that had to fault the buffer in and the reads that restarted.
//!
//! # Limitations
//!
//! - Only regular files' data is read through the cache and the glocks. Lookups and
//!   directory reads ([`Mount::open`]) read the disk directly without an inode glock, as
//!   the reader did before glocks existed: a remote rename is not seen safely.
//! - Inodes are never forgotten: the mount keeps every inode it opened, with its mapping.
//! - A [`PageCache`] shared by several mounts has no fair share: one mount may evict all
//!   pages of another.
//! - A read whose buffer faults is not bounded: if another node takes EX between every
//!   fault-in and the retry, the read starts over each time (Linux, too, assumes that
//!   progress is made). It ends only when a round copies to the end or the buffer cannot be
//!   faulted in any more.
//! - A read that faults its buffer in may return bytes of a later version of the file than
//!   the one it began on (never a mix): the version under its last glock holder.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec;

use drivers::block::BlockDevice;

use super::glock::{
    DemoteHandler, GlockError, GlockManager, GlockName, GlockOps, LockError, LockModule, LockState,
};
use super::{Error, FileType, Filesystem, Inode};
use crate::pagecache::{
    AddressSpaceOps, FaultError, FaultFlags, Mapping, PAGE_SIZE, PageBuf, PageCache, PageMemory,
    PageRef, ReadBuffer, ReadEnd, ReadError, ReadFlags, ReadOutcome,
};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};

/// Why a read through a [`Mount`] failed; `E` is the block device's error.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MountError<E> {
    /// Reading the filesystem failed (the device, or a corrupt disk).
    #[error(transparent)]
    Filesystem(#[from] Error<E>),
    /// The lock module did not grant the inode glock.
    #[error("taking the inode glock failed: {0}")]
    Lock(#[from] LockError),
    /// Every frame of the page cache is in use.
    #[error("no free page in the page cache")]
    NoFreePage,
    /// Pages of inode `0` were to be read without its glock (a bug, not bad input).
    #[error("inode {0} was read without its glock")]
    NotLocked(u64),
    /// The read's buffer faulted at byte `at` and could not be faulted in: nothing was read.
    #[error("the read's buffer is not writable at byte {at}")]
    BufferFault {
        /// The first byte of the buffer that is not writable.
        at: usize,
    },
}

impl<E> From<ReadError<MountError<E>>> for MountError<E> {
    fn from(error: ReadError<MountError<E>>) -> Self {
        match error {
            ReadError::Fill { source, .. } => source,
            ReadError::NoFreePage => Self::NoFreePage,
            // Only a read with `CACHED` reports `NotCached`, and `Mount::read` handles it.
            ReadError::NotCached | ReadError::SizeStale => Self::NotLocked(0),
        }
    }
}

impl<E> From<GlockError<Error<E>>> for MountError<E> {
    fn from(error: GlockError<Error<E>>) -> Self {
        match error {
            GlockError::Lock(error) => Self::Lock(error),
            GlockError::GoLock(error) => Self::Filesystem(error),
            // `Mount` asks for SH only.
            GlockError::UnlockedRequest => Self::NotLocked(0),
        }
    }
}

/// An inode a [`Mount`] opened: its mapping in the page cache and its latest dinode.
#[derive(Debug)]
pub struct CachedInode {
    addr: u64,
    mapping: Mapping,
    /// The dinode `go_lock` read; `None` after `go_inval`.
    dinode: Mutex<Option<Arc<Inode>>>,
}

impl CachedInode {
    /// The inode number (dinode address).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The inode's pages in the cache, and its size while valid.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

/// How [`Mount::read`] uses the glock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReadPolicy {
    /// Cached pages first without the glock; the glock only on a miss.
    CachedFirst,
    /// The glock on every read (what gfs2 did before the cached-only step).
    AlwaysLock,
}

/// Pages of a read's buffer faulted in at most per round, when a copy under the glock
/// stopped at a buffer fault (Linux caps its window alike: `should_fault_in_pages`).
pub const FAULT_IN_PAGES: usize = 16;

/// What the reads of a [`Mount`] did, counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadStats {
    /// Rounds in which a read dropped the glock to fault its buffer in.
    pub fault_in_rounds: u64,
    /// Reads that threw away bytes they had copied and began again, because an invalidation
    /// came in before they went on under the glock.
    pub restarts: u64,
}

#[derive(Debug, Default)]
struct ReadCounters {
    fault_in_rounds: AtomicU64,
    restarts: AtomicU64,
}

fn count(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Called by `go_inval` with an inode number before the inode's pages leave the cache: the
/// kernel unmaps them from every address space there.
pub type UnmapHook = Box<dyn Fn(u64) + Send + Sync>;

/// A gfs2 filesystem read through a page cache under inode glocks.
///
/// `M` is the memory of the page cache's frames.
pub struct Mount<D: BlockDevice, L: LockModule, M: PageMemory = PageBuf> {
    filesystem: Filesystem<D>,
    page_cache: Arc<PageCache<M>>,
    glocks: GlockManager<L>,
    inodes: Mutex<BTreeMap<u64, Arc<CachedInode>>>,
    always_lock: AtomicBool,
    unmap_hook: Mutex<Option<UnmapHook>>,
    read_counters: ReadCounters,
}

impl<D, L, M> Mount<D, L, M>
where
    D: BlockDevice + Send + Sync + 'static,
    L: LockModule + 'static,
    M: PageMemory + 'static,
{
    /// Joins `filesystem` to `page_cache` and to glocks over `lock_module`, which then
    /// sends this mount its demote callbacks.
    pub fn new(
        filesystem: Filesystem<D>,
        page_cache: Arc<PageCache<M>>,
        lock_module: L,
    ) -> Arc<Self> {
        let mount = Arc::new(Self {
            filesystem,
            page_cache,
            glocks: GlockManager::new(lock_module),
            inodes: Mutex::new(BTreeMap::new()),
            always_lock: AtomicBool::new(false),
            unmap_hook: Mutex::new(None),
            read_counters: ReadCounters::default(),
        });
        let handler: Weak<dyn DemoteHandler> = Arc::downgrade(&mount) as Weak<dyn DemoteHandler>;
        mount.glocks.lock_module().attach(handler);
        mount
    }
}

impl<D: BlockDevice, L: LockModule, M: PageMemory> Mount<D, L, M> {
    /// The filesystem.
    pub fn filesystem(&self) -> &Filesystem<D> {
        &self.filesystem
    }

    /// The page cache.
    pub fn page_cache(&self) -> &PageCache<M> {
        &self.page_cache
    }

    /// The glocks of this node.
    pub fn glocks(&self) -> &GlockManager<L> {
        &self.glocks
    }

    /// Sets how reads use the glock; [`ReadPolicy::CachedFirst`] at first.
    pub fn set_read_policy(&self, policy: ReadPolicy) {
        self.always_lock
            .store(policy == ReadPolicy::AlwaysLock, Ordering::Relaxed);
    }

    /// Sets what `go_inval` calls, with the inode number, before it drops an inode's pages:
    /// where pages are mapped into address spaces, they must be unmapped first.
    pub fn set_unmap_hook(&self, hook: UnmapHook) {
        *self.unmap_hook.lock() = Some(hook);
    }

    /// Opens the regular file at `path` (following symlinks).
    ///
    /// The lookup reads directories without glocks (see the limitations); the dinode itself
    /// is read under the inode glock by the first read.
    pub fn open(&self, path: impl AsRef<[u8]>) -> Result<Arc<CachedInode>, MountError<D::Error>> {
        let inode = self.filesystem.lookup(path)?;
        match inode.file_type() {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsADirectory.into()),
            _ => return Err(Error::NotARegularFile.into()),
        }

        let mut inodes = self.inodes.lock();
        let cached = inodes.entry(inode.addr()).or_insert_with(|| {
            Arc::new(CachedInode {
                addr: inode.addr(),
                mapping: Mapping::new(),
                dinode: Mutex::new(None),
            })
        });
        Ok(Arc::clone(cached))
    }

    /// The size of `inode`: from the cache if valid, else under the glock.
    pub fn size(&self, inode: &CachedInode) -> Result<u64, MountError<D::Error>> {
        if let Some(size) = inode.mapping.size() {
            return Ok(size);
        }
        let _holder = self
            .glocks
            .acquire(GlockName::inode(inode.addr), LockState::Shared, self)?;
        inode
            .mapping
            .size()
            .ok_or(MountError::NotLocked(inode.addr))
    }

    /// Reads bytes of `inode` from byte `offset` into `buf`; returns how many (0 at or past
    /// the end). Takes the inode glock only if some page is not cached.
    pub fn read(
        &self,
        inode: &CachedInode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, MountError<D::Error>> {
        self.read_into(inode, offset, buf)
    }

    /// Reads bytes of `inode` from byte `offset` into `buf`, a buffer that may fault (see
    /// [`ReadBuffer`]); returns how many (0 at or past the end). Takes the inode glock only
    /// if some page is not cached, and never faults the buffer in while it holds it.
    ///
    /// A copy that stops at a buffer fault under the glock drops the holder (a demote another
    /// node asked for runs then), faults in up to [`FAULT_IN_PAGES`] pages of the buffer with
    /// no glock held, and reads on under a new holder; from the start if an invalidation
    /// came in between. If the buffer cannot be faulted in at all, the read returns what it
    /// copied, or [`MountError::BufferFault`] if nothing.
    pub fn read_into<B: ReadBuffer + ?Sized>(
        &self,
        inode: &CachedInode,
        offset: u64,
        buf: &mut B,
    ) -> Result<usize, MountError<D::Error>> {
        let pages = InodePages {
            filesystem: &self.filesystem,
            inode,
        };
        // The sequence count under which the bytes in `buf[..done]` were read.
        let mut sequence = inode.mapping.sequence();
        let mut done = 0;

        if !self.always_lock.load(Ordering::Relaxed) {
            let cached =
                self.page_cache
                    .read(&inode.mapping, &pages, offset, buf, ReadFlags::CACHED);
            match cached {
                Ok(ReadOutcome {
                    bytes,
                    end: ReadEnd::Complete,
                }) => return Ok(bytes),
                // A buffer fault goes on under the glock as a miss does: the copy there stops
                // at the same byte, and the fault-in follows with the glock dropped.
                Ok(ReadOutcome { bytes, .. }) => done = bytes,
                Err(ReadError::NotCached) => {}
                Err(error) => return Err(error.into()),
            }
        }

        loop {
            let holder =
                self.glocks
                    .acquire(GlockName::inode(inode.addr), LockState::Shared, self)?;
            // No invalidation runs while the holder is granted: the count is stable here.
            let now = inode.mapping.sequence();
            if now != sequence {
                // The bytes copied so far may be older than the size and pages now valid.
                if done > 0 {
                    count(&self.read_counters.restarts, 1);
                }
                done = 0;
                sequence = now;
            }
            let outcome = self.page_cache.read(
                &inode.mapping,
                &pages,
                offset + done as u64,
                &mut BufferTail { buf, from: done },
                ReadFlags::NONE,
            )?;
            done += outcome.bytes;
            if outcome.end != ReadEnd::BufferFault {
                return Ok(done);
            }

            drop(holder);
            count(&self.read_counters.fault_in_rounds, 1);
            let window = (buf.len() - done).min(FAULT_IN_PAGES * PAGE_SIZE);
            let writable = buf.fault_in(done..done + window);
            #[cfg(feature = "defmt")]
            defmt::trace!(
                "gfs2: read of inode {} faulted its buffer in at byte {}: {} of {} bytes writable",
                inode.addr,
                done,
                writable,
                window
            );
            if writable == 0 {
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(MountError::BufferFault { at: done })
                };
            }
        }
    }

    /// What the reads of this mount did, counted since it was made.
    pub fn read_stats(&self) -> ReadStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ReadStats {
            fault_in_rounds: load(&self.read_counters.fault_in_rounds),
            restarts: load(&self.read_counters.restarts),
        }
    }

    /// Pins page `index` of `inode` for a page fault: gfs2's fault operation.
    ///
    /// With [`FaultFlags::FAULT_CACHED`] it is the page cache's lookup alone, without the
    /// glock: the cached page, or [`FaultError::Retry`] with no I/O. Without the flag it
    /// takes the inode glock in SH (the first grant after a demote re-reads the dinode),
    /// pins the page (reading it in if it is missing) and releases the glock; the pin keeps
    /// the page until the caller unmaps it, and a demote unmaps it through the unmap hook
    /// before the cache drops it.
    pub fn fault(
        &self,
        inode: &CachedInode,
        index: u64,
        flags: FaultFlags,
    ) -> Result<PageRef<'_, M>, FaultError<MountError<D::Error>>> {
        let pages = InodePages {
            filesystem: &self.filesystem,
            inode,
        };
        if flags.contains(FaultFlags::FAULT_CACHED) {
            return self
                .page_cache
                .fault(&inode.mapping, &pages, index, FaultFlags::FAULT_CACHED);
        }

        let _holder = self
            .glocks
            .acquire(GlockName::inode(inode.addr), LockState::Shared, self)
            .map_err(|error| FaultError::Fill {
                index,
                source: error.into(),
            })?;
        self.page_cache
            .fault(&inode.mapping, &pages, index, FaultFlags::NONE)
    }

    fn cached_inode(&self, addr: u64) -> Option<Arc<CachedInode>> {
        self.inodes.lock().get(&addr).cloned()
    }
}

impl<D: BlockDevice, L: LockModule, M: PageMemory> GlockOps for Mount<D, L, M> {
    type Error = Error<D::Error>;

    /// Re-reads the dinode (size and pointers) and checks its metadata tree.
    fn go_lock(&self, name: GlockName, _state: LockState) -> Result<(), Self::Error> {
        let Some(cached) = self.cached_inode(name.number) else {
            return Ok(());
        };
        let inode = self.filesystem.read_inode(name.number)?;
        if inode.file_type() != FileType::Regular {
            return Err(Error::NotARegularFile);
        }
        self.filesystem.verify_tree(&inode)?;

        let size = inode.size();
        *cached.dinode.lock() = Some(Arc::new(inode));
        cached.mapping.set_size(size);
        #[cfg(feature = "defmt")]
        defmt::debug!(
            "gfs2: go_lock re-read inode {}: {} bytes",
            name.number,
            size
        );
        Ok(())
    }

    /// Unmaps the inode's pages (through the unmap hook), drops them from the cache and
    /// marks the size stale.
    fn go_inval(&self, name: GlockName) -> usize {
        let Some(cached) = self.cached_inode(name.number) else {
            return 0;
        };
        *cached.dinode.lock() = None;
        if let Some(unmap) = &*self.unmap_hook.lock() {
            unmap(name.number);
        }
        let pages = self.page_cache.invalidate(&cached.mapping);
        #[cfg(feature = "defmt")]
        defmt::debug!(
            "gfs2: go_inval dropped {} pages of inode {}",
            pages,
            name.number
        );
        pages
    }
}

impl<D, L, M> DemoteHandler for Mount<D, L, M>
where
    D: BlockDevice + Send + Sync,
    L: LockModule,
    M: PageMemory,
{
    fn demote_requested(&self, name: GlockName, to: LockState) {
        self.glocks.request_demote(name, to, self);
    }
}

impl<D: BlockDevice, L: LockModule, M: PageMemory> core::fmt::Debug for Mount<D, L, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mount")
            .field("filesystem", &self.filesystem)
            .field("page_cache", &self.page_cache)
            .field("glocks", &self.glocks)
            .finish_non_exhaustive()
    }
}

/// The part of a read's buffer from byte `from` on, for a read that goes on where an
/// earlier one stopped.
struct BufferTail<'a, B: ReadBuffer + ?Sized> {
    buf: &'a mut B,
    from: usize,
}

impl<B: ReadBuffer + ?Sized> ReadBuffer for BufferTail<'_, B> {
    fn len(&self) -> usize {
        self.buf.len() - self.from
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        self.buf.copy_at(self.from + at, bytes)
    }

    fn fault_in(&mut self, range: core::ops::Range<usize>) -> usize {
        self.buf
            .fault_in(self.from + range.start..self.from + range.end)
    }
}

/// Reads an inode's pages in for the page cache, through its metadata tree.
struct InodePages<'a, D: BlockDevice> {
    filesystem: &'a Filesystem<D>,
    inode: &'a CachedInode,
}

impl<D: BlockDevice> AddressSpaceOps for InodePages<'_, D> {
    type Error = MountError<D::Error>;

    fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Self::Error> {
        self.readahead(index, &mut [page])
    }

    /// Reads the run with one [`Filesystem::read_at`]: one device request per extent.
    fn readahead(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), Self::Error> {
        let inode = self
            .inode
            .dinode
            .lock()
            .clone()
            .ok_or(MountError::NotLocked(self.inode.addr))?;

        // Zeroed: bytes past the end of the file stay zero.
        let mut run = vec![0; pages.len() * PAGE_SIZE];
        self.filesystem
            .read_at(&inode, first * PAGE_SIZE as u64, &mut run)?;
        for (page, bytes) in pages.iter_mut().zip(run.chunks_exact(PAGE_SIZE)) {
            page.copy_from_slice(bytes);
        }
        Ok(())
    }
}
