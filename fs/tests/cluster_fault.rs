//! gfs2's fault operation ([`Mount::fault`]) through the page cache and the inode glock: the
//! `FAULT_CACHED` step never takes the glock or reads, the step without it takes the glock
//! once and reads the page in, and a demote unmaps through the hook and drops the pages.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::generated;
use drivers::block::{BlockDevice, BlockError, RamDisk};
use fs::gfs2::glock::{LockModule, Nolock, SimCluster};
use fs::gfs2::{Filesystem, GlockName, LockState, Mount};
use fs::pagecache::{FaultError, FaultFlags, PAGE_SIZE, PageCache};

const BLOCK_SIZE: usize = 4096;

/// The 4 KiB fixture as a disk whose block reads are counted.
struct CountingDisk {
    blocks_read: AtomicU64,
}

impl BlockDevice for CountingDisk {
    type Error = BlockError;

    fn block_size(&self) -> usize {
        BLOCK_SIZE
    }

    fn block_count(&self) -> u64 {
        (common::image_4k().len() / BLOCK_SIZE) as u64
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.blocks_read
            .fetch_add((buf.len() / BLOCK_SIZE) as u64, Ordering::SeqCst);
        RamDisk::new(common::image_4k(), BLOCK_SIZE)?.read_blocks(first, buf)
    }
}

fn mount<L: LockModule + 'static>(
    lock_module: L,
) -> (Arc<Mount<&'static CountingDisk, L>>, &'static CountingDisk) {
    let disk: &'static CountingDisk = Box::leak(Box::new(CountingDisk {
        blocks_read: AtomicU64::new(0),
    }));
    let filesystem = Filesystem::open(disk).unwrap();
    let mount = Mount::new(filesystem, Arc::new(PageCache::new(1024)), lock_module);
    (mount, disk)
}

#[test]
fn the_cached_step_takes_no_glock_and_the_other_reads_under_one() {
    let (mount, disk) = mount(Nolock);
    let inode = mount.open("/one-mib").unwrap();
    let opened = disk.blocks_read.load(Ordering::SeqCst);

    // Cold: the cached-only step answers Retry with no glock and no I/O.
    let cold = mount.fault(&inode, 3, FaultFlags::FAULT_CACHED);
    assert!(matches!(cold, Err(FaultError::Retry)));
    assert_eq!(mount.glocks().stats().acquisitions(), 0);
    assert_eq!(disk.blocks_read.load(Ordering::SeqCst), opened);

    // The step without the flag: one glock, the page read in with its data.
    let page = mount.fault(&inode, 3, FaultFlags::NONE).unwrap();
    page.with_bytes(|bytes| {
        assert_eq!(bytes[..], generated(6, 3 * PAGE_SIZE as u64, PAGE_SIZE)[..])
    });
    drop(page);
    assert_eq!(mount.glocks().stats().acquisitions(), 1);
    let blocks = disk.blocks_read.load(Ordering::SeqCst);
    assert!(blocks > opened);

    // Warm: the cached-only step maps it, and readahead brought the next page too.
    for index in [3, 4] {
        let page = mount
            .fault(&inode, index, FaultFlags::FAULT_CACHED)
            .unwrap();
        page.with_bytes(|bytes| {
            assert_eq!(
                bytes[..],
                generated(6, index * PAGE_SIZE as u64, PAGE_SIZE)[..]
            );
        });
    }
    assert_eq!(mount.glocks().stats().acquisitions(), 1);
    assert_eq!(disk.blocks_read.load(Ordering::SeqCst), blocks);

    // Past the end of the 1 MiB file, under either step.
    assert!(matches!(
        mount.fault(&inode, 256, FaultFlags::FAULT_CACHED),
        Err(FaultError::BeyondEnd(256))
    ));
    assert!(matches!(
        mount.fault(&inode, 256, FaultFlags::NONE),
        Err(FaultError::BeyondEnd(256))
    ));
}

#[test]
fn a_demote_calls_the_unmap_hook_and_the_next_fault_takes_the_glock_again() {
    let cluster = SimCluster::new();
    let (node_1, _) = mount(cluster.node(1));
    let node_2 = cluster.node(2);
    let inode = node_1.open("/one-mib").unwrap();
    let name = GlockName::inode(inode.addr());
    let unmapped = Arc::new(Mutex::new(Vec::new()));
    let hook_log = Arc::clone(&unmapped);
    node_1.set_unmap_hook(Box::new(move |inode| hook_log.lock().unwrap().push(inode)));

    let page = node_1.fault(&inode, 0, FaultFlags::NONE).unwrap();
    let pinned = page.keep();

    // Node 2 takes EX: node 1 holds no holder (the fault released its glock), so the demote
    // runs in the callback, tells the hook, and drops the pages; the kept one stays pinned.
    node_2
        .lock(name, LockState::Unlocked, LockState::Exclusive)
        .unwrap();
    assert_eq!(*unmapped.lock().unwrap(), [inode.addr()]);
    assert_eq!(cluster.state_of(1, name), LockState::Unlocked);
    assert!(matches!(
        node_1.fault(&inode, 0, FaultFlags::FAULT_CACHED),
        Err(FaultError::Retry)
    ));
    node_1.page_cache().unpin(pinned);
    node_2.demote(name, LockState::Exclusive, LockState::Unlocked);

    // The next fault takes the glock again (re-reading the dinode) and finds the data.
    let page = node_1.fault(&inode, 0, FaultFlags::NONE).unwrap();
    page.with_bytes(|bytes| assert_eq!(bytes[..], generated(6, 0, PAGE_SIZE)[..]));
    let stats = node_1.glocks().stats();
    assert_eq!((stats.shared, stats.go_locks, stats.demotes), (2, 2, 1));
}
