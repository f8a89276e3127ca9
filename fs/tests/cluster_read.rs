//! gfs2's read path through the page cache and the inode glock, counted: a cached read
//! takes no glock and does no I/O, a cold one takes one glock per call, and after another
//! node wrote under EX this node sees the new size and data, never a mix.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{BLOCK_SIZE, FileLayout, SharedDisk, layout};
use common::generated;
use drivers::block::RamDisk;
use fs::gfs2::glock::{LockModule, Nolock, SimCluster, SimNode};
use fs::gfs2::{Filesystem, GlockName, LockState, Mount, ReadPolicy};
use fs::pagecache::PageCache;

const MIB: usize = 1 << 20;

fn mount<L: LockModule + 'static>(
    disk: &'static SharedDisk,
    lock_module: L,
) -> Arc<Mount<&'static SharedDisk, L>> {
    let filesystem = Filesystem::open(disk).unwrap();
    // 16 MiB: every test's data fits, so nothing is evicted.
    Mount::new(filesystem, Arc::new(PageCache::new(4096)), lock_module)
}

fn read_range<L: LockModule>(
    mount: &Mount<&'static SharedDisk, L>,
    path: &str,
    offset: u64,
    len: usize,
) -> Vec<u8> {
    let inode = mount.open(path).unwrap();
    let mut buf = vec![0; len];
    let read = mount.read(&inode, offset, &mut buf).unwrap();
    buf.truncate(read);
    buf
}

#[test]
fn a_hot_read_takes_no_glock_and_does_no_io() {
    let disk = SharedDisk::new();
    let mount = mount(disk, Nolock);
    let inode = mount.open("/one-mib").unwrap();
    let mut buf = vec![0; MIB];

    assert_eq!(mount.read(&inode, 0, &mut buf).unwrap(), MIB);
    assert_eq!(buf, generated(6, 0, MIB));
    assert_eq!(mount.glocks().stats().shared, 1);
    let (blocks, glocks, cache) = (
        disk.blocks_read(),
        mount.glocks().stats(),
        mount.page_cache().stats(),
    );

    buf.fill(0);
    assert_eq!(mount.read(&inode, 0, &mut buf).unwrap(), MIB);
    for offset in (0..MIB as u64).step_by(100_003) {
        let mut small = [0; 5000];
        let read = mount.read(&inode, offset, &mut small).unwrap();
        assert_eq!(small[..read], generated(6, offset, read)[..]);
    }

    assert_eq!(buf, generated(6, 0, MIB));
    assert_eq!(disk.blocks_read(), blocks, "a hot read did I/O");
    assert_eq!(mount.glocks().stats(), glocks, "a hot read took a glock");
    let hot = mount.page_cache().stats();
    assert_eq!(hot.misses, cache.misses);
    assert!(hot.hits >= cache.hits + 256);
}

#[test]
fn a_cold_read_takes_one_glock_per_call() {
    let disk = SharedDisk::new();
    let mount = mount(disk, Nolock);
    let inode = mount.open("/nine-mib").unwrap();

    // Ranges 1 MiB apart: the readahead of one call (128 KiB) never reaches the next.
    for call in 0..8u64 {
        let offset = call * MIB as u64 + 12345;
        let before = disk.blocks_read();
        let mut buf = vec![0; 200_000];

        assert_eq!(mount.read(&inode, offset, &mut buf).unwrap(), 200_000);

        assert_eq!(buf, generated(7, offset, 200_000));
        assert_eq!(mount.glocks().stats().shared, call + 1);
        assert!(disk.blocks_read() > before);
    }
    let stats = mount.glocks().stats();
    assert_eq!(stats.acquisitions(), 8);
    assert_eq!((stats.cluster_requests, stats.go_locks), (1, 1));
}

#[test]
fn reads_through_the_cache_match_the_reader() {
    let disk = SharedDisk::new();
    let mount = mount(disk, Nolock);
    let reader = Filesystem::open(RamDisk::new(common::image_4k(), BLOCK_SIZE).unwrap()).unwrap();
    let cases: [(&str, u64, usize); 8] = [
        ("/hello.txt", 0, 100),
        ("/stuffed-max", 1, 10_000),
        ("/three-blocks-plus-17", 4000, 20_000),
        ("/sparse", 3000, 70_000),
        ("/sparse", 40 * MIB as u64 - 4000, 20_000),
        ("/sparse-1g", (1 << 30) - 10, 4200),
        ("/all-hole", 77, MIB),
        ("/jdata-big", 199_990, 100),
    ];

    for (path, offset, len) in cases {
        let inode = reader.lookup(path).unwrap();
        let mut expected = vec![0; len];
        let read = reader.read_at(&inode, offset, &mut expected).unwrap();
        expected.truncate(read);

        assert_eq!(
            read_range(&mount, path, offset, len),
            expected,
            "{path} at {offset}"
        );
        // Again, from the cache.
        assert_eq!(
            read_range(&mount, path, offset, len),
            expected,
            "{path} at {offset}"
        );
    }
}

#[test]
fn always_locking_reads_the_same_data_and_only_the_counters_differ() {
    let reads: Vec<(u64, usize)> = (0..40u64)
        .map(|i| {
            (
                (i * 7919 * 4096 + i * 13) % (9 * MIB as u64),
                1000 + (i as usize * 3001) % 70_000,
            )
        })
        .collect();
    let mut results = Vec::new();

    for policy in [ReadPolicy::CachedFirst, ReadPolicy::AlwaysLock] {
        let disk = SharedDisk::new();
        let mount = mount(disk, Nolock);
        mount.set_read_policy(policy);
        let inode = mount.open("/nine-mib").unwrap();
        let mut data = Vec::new();
        let mut glocks_per_pass = Vec::new();
        for _ in 0..2 {
            for &(offset, len) in &reads {
                let mut buf = vec![0; len];
                let read = mount.read(&inode, offset, &mut buf).unwrap();
                data.extend_from_slice(&buf[..read]);
            }
            glocks_per_pass.push(mount.glocks().stats().shared);
        }
        results.push((data, glocks_per_pass, disk.blocks_read()));
    }

    let (cached_first, always) = (&results[0], &results[1]);
    assert_eq!(cached_first.0, always.0);
    assert_eq!(always.1, [40, 80], "one glock per read when always locking");
    let first_pass = cached_first.1[0];
    assert!(first_pass <= 40);
    assert_eq!(
        cached_first.1,
        [first_pass, first_pass],
        "the second pass took no glock"
    );
    assert_eq!(cached_first.2, always.2, "the same blocks were read");
}

/// Version `version` of `/one-mib` as node 2 writes it: its size and content.
fn version(version: u8) -> Vec<u8> {
    generated(0x40 + version, 0, MIB - 1000 * version as usize)
}

/// Writes `content` into the file's blocks and its length into the dinode, as node 2.
fn write_as_node_2(disk: &SharedDisk, file: &FileLayout, content: &[u8]) {
    for (chunk, &block) in content.chunks(BLOCK_SIZE).zip(&file.blocks) {
        disk.write(block, 0, chunk);
    }
    // di_size: a big-endian u64 at byte 56 of the dinode.
    disk.write(file.dinode, 56, &(content.len() as u64).to_be_bytes());
}

#[test]
fn after_another_node_writes_under_ex_the_reader_sees_the_new_size_and_data() {
    let cluster = SimCluster::new();
    let disk = SharedDisk::new();
    let node_1 = mount(disk, cluster.node(1));
    let node_2: SimNode = cluster.node(2);
    let file = layout("/one-mib");
    let name = GlockName::inode(file.dinode);
    let inode = node_1.open("/one-mib").unwrap();
    let unmapped = Arc::new(Mutex::new(Vec::new()));
    let hook_log = Arc::clone(&unmapped);
    node_1.set_unmap_hook(Box::new(move |inode| hook_log.lock().unwrap().push(inode)));
    let mut buf = vec![0; 2 * MIB];

    assert_eq!(node_1.read(&inode, 0, &mut buf).unwrap(), MIB);
    assert_eq!(node_1.page_cache().cached_pages(), 256);

    // Node 2 asks for EX: node 1 has no holder, so its demote runs in the callback.
    node_2
        .lock(name, LockState::Unlocked, LockState::Exclusive)
        .unwrap();
    assert_eq!(cluster.state_of(1, name), LockState::Unlocked);
    assert_eq!(node_1.page_cache().cached_pages(), 0);
    assert_eq!(inode.mapping().size(), None);
    assert_eq!(*unmapped.lock().unwrap(), [file.dinode]);
    let new = version(1);
    write_as_node_2(disk, &file, &new);
    node_2.demote(name, LockState::Exclusive, LockState::Unlocked);

    let read = node_1.read(&inode, 0, &mut buf).unwrap();

    assert_eq!(read, new.len());
    assert_eq!(buf[..read], new[..]);
    assert_eq!(node_1.size(&inode).unwrap(), new.len() as u64);
    let stats = node_1.glocks().stats();
    assert_eq!((stats.demotes, stats.pages_invalidated), (1, 256));
    assert_eq!(
        (stats.shared, stats.go_locks, stats.cluster_requests),
        (2, 2, 2)
    );
}

#[test]
fn reads_racing_remote_writes_see_one_version_whole() {
    let cluster = SimCluster::new();
    let disk = SharedDisk::new();
    let node_1 = mount(disk, cluster.node(1));
    let node_2 = cluster.node(2);
    let file = layout("/one-mib");
    let name = GlockName::inode(file.dinode);
    let inode = node_1.open("/one-mib").unwrap();
    let versions: Vec<Vec<u8>> = std::iter::once(generated(6, 0, MIB))
        .chain((1..=4).map(version))
        .collect();
    let writing = AtomicBool::new(true);
    let seen = Mutex::new(Vec::new());

    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = vec![0; 2 * MIB];
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let read = node_1.read(&inode, 0, &mut buf).unwrap();
                let version = versions
                    .iter()
                    .position(|version| version.len() == read)
                    .unwrap_or_else(|| panic!("a size no node wrote: {read}"));
                assert!(
                    buf[..read] == versions[version][..],
                    "a read mixed versions"
                );
                seen.lock().unwrap().push(version);
                if done {
                    return version;
                }
                assert!(Instant::now() < deadline, "the writer did not finish");
            }
        });

        for (number, content) in versions.iter().enumerate().skip(1) {
            // Let node 1 read the previous version before the next write.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !seen.lock().unwrap().contains(&(number - 1)) {
                assert!(
                    Instant::now() < deadline,
                    "node 1 never read version {number}"
                );
                std::thread::yield_now();
            }
            node_2
                .lock(name, LockState::Unlocked, LockState::Exclusive)
                .unwrap();
            write_as_node_2(disk, &file, content);
            node_2.demote(name, LockState::Exclusive, LockState::Unlocked);
        }
        writing.store(false, Ordering::SeqCst);

        assert_eq!(reader.join().unwrap(), 4, "the last read after the writes");
    });
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.windows(2).all(|pair| pair[0] <= pair[1]),
        "versions went back"
    );
    assert_eq!(node_1.glocks().stats().demotes, 4);
}
