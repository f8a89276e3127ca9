//! The mounted gfs2 volume as the kernel reads it: a page cache over frames of the frame
//! allocator, the node's inode glocks, and the disk under them.
//!
//! [`install`] wraps the disk gfs2 was found on in a [`ClusterDisk`], joins the filesystem to
//! a [`PageCache`] whose frames come from the frame allocator ([`FrameMemory`]; the capacity
//! is fixed at boot, see [`Capacity`]) and to glocks over a lock module ([`Locking`]), and
//! keeps the resulting [`KernelMount`] for the rest of the run: [`install`] returns it, and
//! [`mount_arc`] gives it to code that keeps it.
//! Reads through [`KernelMount::read`](fs::gfs2::Mount::read) try the cache without any lock
//! first and take the inode glock only on a miss (see `fs::gfs2::read`).
//!
//! With [`Locking::SimulatedCluster`] this machine is node 1 of a simulated two-node cluster
//! ([`fs::gfs2::glock::SimCluster`]), and [`other_node`] is node 2's lock module. The kernel
//! has one CPU and no scheduler, so node 2 is driven synchronously by the code that wants it
//! to act: it asks for EX (which sends node 1 its demote callback and runs the demote at once
//! when node 1 holds no holder), writes through [`ClusterDisk::write`] as that machine would
//! write the shared disk, and releases.
//!
//! [`counters`] gathers what the glocks, the cache and the disk did, so that a log line can
//! show what one read cost.
//!
//! # Limitations
//!
//! - The disk drivers are read-only. Node 2's writes go to an overlay of changed disk blocks
//!   in memory ([`ClusterDisk`]), which every later read of the disk sees, as the shared disk
//!   of a cluster would; the disk itself (or its image file) never changes.
//! - The cache's frames are taken once at boot and never given back.
//! - One mount per boot: [`install`] succeeds once.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::collections::btree_map::Entry;
use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use drivers::block::BlockDevice;
use fs::gfs2::glock::{
    DemoteHandler, GlockStats, LockError, LockModule, Nolock, SimCluster, SimNode,
};
use fs::gfs2::{Filesystem, GlockName, LockState, Mount};
use fs::pagecache::{CacheStats, PageCache};
use spin::{Mutex, Once};

use crate::block::{Disk, DiskError};
use crate::mem::frame::{self, FRAME_SIZE};
pub use frame_memory::FrameMemory;

/// The kernel's mounted gfs2 volume: read through the page cache under inode glocks.
pub type KernelMount = Mount<&'static ClusterDisk, ClusterLock, FrameMemory>;

/// The number of this machine in a simulated cluster.
pub const THIS_NODE: u32 = 1;

/// The number of the simulated other machine.
pub const OTHER_NODE: u32 = 2;

/// Frames the cache takes at most when the command line does not say (256 MiB).
const DEFAULT_MAX_PAGES: u64 = 65536;

/// Frames the page cache always leaves to the rest of the kernel (DMA queues, bounce
/// buffers): 16 MiB.
const KEPT_FREE_FRAMES: u64 = 4096;

/// Frames taken from the allocator in one request when building the cache.
const FRAME_CHUNK: u64 = 512;

/// Which lock module the glocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    /// `lock_nolock`: every glock is granted at once and never demoted.
    Nolock,
    /// Node 1 of a simulated two-node cluster; [`other_node`] is node 2.
    SimulatedCluster,
}

impl defmt::Format for Locking {
    fn format(&self, f: defmt::Formatter) {
        let name = match self {
            Self::Nolock => "lock_nolock",
            Self::SimulatedCluster => "node 1 of a simulated two-node cluster",
        };
        defmt::write!(f, "{=str}", name)
    }
}

/// How many pages the cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Capacity {
    /// Half the free frames, at most 256 MiB.
    Default,
    /// This many pages (`cache_pages=N` on the command line), at most all free frames but
    /// 16 MiB.
    Pages(u64),
}

/// Why the volume could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// A volume is already mounted.
    #[error("a gfs2 volume is already mounted")]
    AlreadyMounted,
    /// Not one frame was free for the page cache.
    #[error("no free frame for the page cache (asked for {0} pages)")]
    NoFrames(u64),
}

impl defmt::Format for InstallError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The lock module of the kernel's glocks: one of the two [`Locking`] choices.
#[derive(Clone, Debug)]
pub enum ClusterLock {
    /// A cluster of one.
    Nolock(Nolock),
    /// This node of a simulated cluster.
    Simulated(SimNode),
}

impl LockModule for ClusterLock {
    fn lock(&self, name: GlockName, from: LockState, to: LockState) -> Result<(), LockError> {
        match self {
            Self::Nolock(module) => module.lock(name, from, to),
            Self::Simulated(module) => module.lock(name, from, to),
        }
    }

    fn demote(&self, name: GlockName, from: LockState, to: LockState) {
        match self {
            Self::Nolock(module) => module.demote(name, from, to),
            Self::Simulated(module) => module.demote(name, from, to),
        }
    }

    fn attach(&self, handler: alloc::sync::Weak<dyn DemoteHandler>) {
        match self {
            Self::Nolock(module) => module.attach(handler),
            Self::Simulated(module) => module.attach(handler),
        }
    }
}

/// Why [`ClusterDisk::write`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The bytes do not lie on the disk.
    #[error("a write of {len} bytes at byte {offset} runs past the disk's end")]
    OutOfRange {
        /// Byte offset of the write.
        offset: u64,
        /// Its length.
        len: usize,
    },
    /// Reading the block to change failed.
    #[error(transparent)]
    Read(#[from] DiskError),
}

impl defmt::Format for WriteError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The disk a cluster shares, as the kernel sees it: a probed [`Disk`] whose reads are
/// counted, with the blocks other nodes wrote kept in memory over it.
pub struct ClusterDisk {
    disk: &'static Disk,
    /// Disk blocks written by other nodes, by block number.
    written: Mutex<BTreeMap<u64, Box<[u8]>>>,
    requests: AtomicU64,
    blocks_read: AtomicU64,
}

impl ClusterDisk {
    /// Wraps `disk`; nothing is written yet.
    pub fn new(disk: &'static Disk) -> Self {
        Self {
            disk,
            written: Mutex::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            blocks_read: AtomicU64::new(0),
        }
    }

    /// The disk under the overlay.
    pub fn disk(&self) -> &'static Disk {
        self.disk
    }

    /// Writes `data` at byte `offset`, as another node of the cluster writes the shared disk.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        let block_size = self.disk.block_size() as u64;
        let out_of_range = WriteError::OutOfRange {
            offset,
            len: data.len(),
        };
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= self.disk.size())
            .ok_or(out_of_range)?;

        let mut position = offset;
        while position < end {
            let block = position / block_size;
            let start_in_block = (position % block_size) as usize;
            let len = ((block_size - start_in_block as u64).min(end - position)) as usize;
            let source = &data[(position - offset) as usize..][..len];

            let mut written = self.written.lock();
            let bytes = match written.entry(block) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let mut bytes = vec![0; block_size as usize].into_boxed_slice();
                    self.disk.read_blocks(block, &mut bytes)?;
                    entry.insert(bytes)
                }
            };
            bytes[start_in_block..start_in_block + len].copy_from_slice(source);
            position += len as u64;
        }
        Ok(())
    }

    /// The disk's counters.
    pub fn stats(&self) -> DiskStats {
        DiskStats {
            requests: self.requests.load(Ordering::Relaxed),
            blocks_read: self.blocks_read.load(Ordering::Relaxed),
        }
    }
}

impl BlockDevice for ClusterDisk {
    type Error = DiskError;

    fn block_size(&self) -> usize {
        self.disk.block_size()
    }

    fn block_count(&self) -> u64 {
        self.disk.block_count()
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let block_size = self.disk.block_size();
        let count = (buf.len() / block_size) as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.blocks_read.fetch_add(count, Ordering::Relaxed);

        self.disk.read_blocks(first, buf)?;

        let written = self.written.lock();
        for (&block, bytes) in written.range(first..first.saturating_add(count)) {
            let start = (block - first) as usize * block_size;
            buf[start..start + block_size].copy_from_slice(bytes);
        }
        Ok(())
    }
}

/// What the disk under the mount did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct DiskStats {
    /// Read requests.
    pub requests: u64,
    /// Disk blocks read.
    pub blocks_read: u64,
}

/// The counters of the glocks, the page cache and the disk, taken together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct Counters {
    /// The glocks of this node.
    pub glocks: GlockStats,
    /// The page cache.
    pub cache: CacheStats,
    /// The disk.
    pub disk: DiskStats,
}

impl Counters {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        let (now, then) = (&self.glocks, &before.glocks);
        let glocks = GlockStats {
            shared: now.shared - then.shared,
            deferred: now.deferred - then.deferred,
            exclusive: now.exclusive - then.exclusive,
            cluster_requests: now.cluster_requests - then.cluster_requests,
            go_locks: now.go_locks - then.go_locks,
            demotes: now.demotes - then.demotes,
            pages_invalidated: now.pages_invalidated - then.pages_invalidated,
        };
        let (now, then) = (&self.cache, &before.cache);
        let cache = CacheStats {
            hits: now.hits - then.hits,
            misses: now.misses - then.misses,
            evictions: now.evictions - then.evictions,
            readahead_pages: now.readahead_pages - then.readahead_pages,
            pages_read: now.pages_read - then.pages_read,
            invalidated: now.invalidated - then.invalidated,
        };
        let disk = DiskStats {
            requests: self.disk.requests - before.disk.requests,
            blocks_read: self.disk.blocks_read - before.disk.blocks_read,
        };
        Self {
            glocks,
            cache,
            disk,
        }
    }
}

struct Installed {
    mount: Arc<KernelMount>,
    disk: &'static ClusterDisk,
    other_node: Option<SimNode>,
}

static INSTALLED: Once<Installed> = Once::new();

/// Mounts `filesystem`, found on `disk`, through a page cache of `capacity` pages under
/// glocks of `locking`.
pub fn install(
    disk: &'static ClusterDisk,
    filesystem: Filesystem<&'static ClusterDisk>,
    locking: Locking,
    capacity: Capacity,
) -> Result<&'static KernelMount, InstallError> {
    if INSTALLED.is_completed() {
        return Err(InstallError::AlreadyMounted);
    }

    let free = frame::snapshot().free_frames();
    let available = free.saturating_sub(KEPT_FREE_FRAMES).max(1);
    let wanted = match capacity {
        Capacity::Pages(pages) if pages > available => {
            defmt::warn!(
                "cache_pages={=u64}: only {=u64} frames can be spared; the page cache takes those",
                pages,
                available
            );
            available
        }
        Capacity::Pages(pages) => pages.max(1),
        Capacity::Default => (free / 2).clamp(1, DEFAULT_MAX_PAGES),
    };
    let frames = take_frames(wanted);
    if frames.is_empty() {
        return Err(InstallError::NoFrames(wanted));
    }
    let pages = frames.len();
    let page_cache = Arc::new(PageCache::with_frames(frames));

    let (lock_module, other_node) = match locking {
        Locking::Nolock => (ClusterLock::Nolock(Nolock), None),
        Locking::SimulatedCluster => {
            let cluster = SimCluster::new();
            (
                ClusterLock::Simulated(cluster.node(THIS_NODE)),
                Some(cluster.node(OTHER_NODE)),
            )
        }
    };
    let mount = Mount::new(filesystem, page_cache, lock_module);
    // A demote unmaps the inode's pages from every file mapping before the cache drops them.
    crate::mmap::install_unmap_hook(&mount);
    defmt::info!(
        "page cache: {=usize} pages ({=usize} MiB) of frames; glocks: {}",
        pages,
        (pages * FRAME_SIZE as usize) >> 20,
        locking
    );

    let installed = INSTALLED.call_once(|| Installed {
        mount,
        disk,
        other_node,
    });
    Ok(&installed.mount)
}

/// The mounted volume's `Arc`, for code that keeps it (a demote handler, a fault handler).
pub fn mount_arc() -> Option<Arc<KernelMount>> {
    INSTALLED
        .get()
        .map(|installed| Arc::clone(&installed.mount))
}

/// The disk under the mounted volume.
pub fn disk() -> Option<&'static ClusterDisk> {
    INSTALLED.get().map(|installed| installed.disk)
}

/// Node 2's lock module, when the volume was mounted with [`Locking::SimulatedCluster`].
pub fn other_node() -> Option<&'static SimNode> {
    INSTALLED.get()?.other_node.as_ref()
}

/// The counters of the mounted volume (all zero before [`install`]).
pub fn counters() -> Counters {
    let Some(installed) = INSTALLED.get() else {
        return Counters::default();
    };
    Counters {
        glocks: installed.mount.glocks().stats(),
        cache: installed.mount.page_cache().stats(),
        disk: installed.disk.stats(),
    }
}

/// Takes up to `wanted` frames from the frame allocator, in runs as long as it has.
fn take_frames(wanted: u64) -> alloc::vec::Vec<FrameMemory> {
    let mut frames = alloc::vec::Vec::with_capacity(wanted as usize);
    let mut chunk = FRAME_CHUNK;
    while (frames.len() as u64) < wanted && chunk > 0 {
        let count = chunk.min(wanted - frames.len() as u64);
        match frame::allocate(count, 1) {
            Some(range) => {
                let mut address = range.start;
                while address < range.end {
                    frames.push(FrameMemory::take(address));
                    address += FRAME_SIZE;
                }
            }
            None => chunk /= 2,
        }
    }
    frames
}

pub mod tests {
    //! In-kernel tests of the page cache over frames of the frame allocator.

    use fs::pagecache::{AddressSpaceOps, Mapping, PAGE_SIZE, ReadFlags, ReadOutcome};

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::{arch, ktest_assert, ktest_assert_eq};

    pub const TESTS: &[KernelTest] = &[KernelTest::new(
        "fscache::frames_hold_pages_and_evict",
        frames_hold_pages_and_evict,
    )];

    /// A file whose byte at offset `o` is `o % 251`, counting the pages it reads in.
    struct PatternFile {
        pages_read: AtomicU64,
    }

    impl AddressSpaceOps for PatternFile {
        type Error = core::convert::Infallible;

        fn read_page(&self, index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Self::Error> {
            self.pages_read.fetch_add(1, Ordering::Relaxed);
            let start = index * PAGE_SIZE as u64;
            for (offset, byte) in (start..).zip(page.iter_mut()) {
                *byte = (offset % 251) as u8;
            }
            Ok(())
        }
    }

    /// Four frames hold a file's pages: what is read through the cache is what the frames
    /// hold at their direct-map addresses, a fifth page evicts one, and a cached-only read
    /// of an evicted page reads nothing in. (The four frames stay taken: the cache never
    /// gives frames back.)
    fn frames_hold_pages_and_evict() -> TestResult {
        let frames = take_frames(4);
        ktest_assert_eq!(frames.len(), 4);
        let addresses: alloc::vec::Vec<u64> =
            frames.iter().map(FrameMemory::physical_address).collect();
        let cache = PageCache::with_frames(frames);
        cache.set_readahead(1);
        let mapping = Mapping::new();
        mapping.set_size(5 * PAGE_SIZE as u64);
        let file = PatternFile {
            pages_read: AtomicU64::new(0),
        };
        let mut page = [0; PAGE_SIZE];

        for index in 0..4u64 {
            let offset = index * PAGE_SIZE as u64;
            let read = cache.read(&mapping, &file, offset, &mut page, ReadFlags::NONE);
            ktest_assert!(read.is_ok(), "a cold read");
            ktest_assert_eq!(page[7], ((offset + 7) % 251) as u8);
        }
        let in_frames = addresses.iter().filter(|&&address| {
            // SAFETY: the frame belongs to `cache`, which is not being written: reading a
            // byte of it through the direct map races with nothing.
            let byte = unsafe { *(arch::phys_to_virt(address) as *const u8).add(7) };
            (0..4u64).any(|index| byte == ((index * PAGE_SIZE as u64 + 7) % 251) as u8)
        });
        ktest_assert_eq!(in_frames.count(), 4);
        ktest_assert_eq!(file.pages_read.load(Ordering::Relaxed), 4);

        let fifth = cache.read(
            &mapping,
            &file,
            4 * PAGE_SIZE as u64,
            &mut page,
            ReadFlags::NONE,
        );
        ktest_assert!(fifth.is_ok(), "a read past the capacity");
        ktest_assert_eq!(cache.stats().evictions, 1);
        ktest_assert_eq!(cache.cached_pages(), 4);

        let mut again = 0;
        for index in 0..5u64 {
            let read = cache.read(
                &mapping,
                &file,
                index * PAGE_SIZE as u64,
                &mut page,
                ReadFlags::CACHED,
            );
            if let Ok(ReadOutcome { bytes, .. }) = read
                && bytes == PAGE_SIZE
            {
                again += 1;
            }
        }
        ktest_assert_eq!(again, 4);
        ktest_assert_eq!(file.pages_read.load(Ordering::Relaxed), 5);
        Ok(())
    }
}

mod frame_memory {
    //! One page frame of the frame allocator as page-cache memory, reached through the
    //! direct map.

    use fs::pagecache::{PAGE_SIZE, PageMemory};

    use crate::arch;
    use crate::mem::frame::FRAME_SIZE;

    /// A frame the page cache owns: given by the frame allocator and never freed.
    #[derive(Debug)]
    pub struct FrameMemory {
        physical: u64,
    }

    impl FrameMemory {
        /// Takes ownership of the frame at `physical`, which the frame allocator just handed
        /// out and which lies in the direct map (the allocator only holds such RAM).
        pub(super) fn take(physical: u64) -> Self {
            const _: () = assert!(FRAME_SIZE as usize == PAGE_SIZE);
            debug_assert!(physical.is_multiple_of(FRAME_SIZE));
            Self { physical }
        }

        /// The frame's physical address, to map it into an address space.
        pub fn physical_address(&self) -> u64 {
            self.physical
        }
    }

    impl PageMemory for FrameMemory {
        fn bytes(&self) -> &[u8; PAGE_SIZE] {
            // SAFETY: the frame is this value's alone (the allocator gave it out once and it
            // is never freed), page-aligned, and readable through the direct map, which maps
            // all RAM the allocator hands out; RAM always holds some bytes. The borrow of
            // `self` keeps the frame from being written through `bytes_mut` meanwhile.
            unsafe { &*(arch::phys_to_virt(self.physical) as *const [u8; PAGE_SIZE]) }
        }

        fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
            // SAFETY: as in `bytes`; `&mut self` makes this the only reference to the frame.
            unsafe { &mut *(arch::phys_to_virt(self.physical) as *mut [u8; PAGE_SIZE]) }
        }
    }
}
