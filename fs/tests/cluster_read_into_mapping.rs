//! A gfs2 read whose buffer is a private mapping of the file it reads (Linux 5.16, "gfs2: Fix
//! mmap + page fault deadlocks"): while the read holds the inode glock another node asks for
//! EX, and a copy into the mapping faults on a page that is not cached. The read drops the
//! glock, faults the buffer in once the other node wrote, and returns the new data whole.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::cluster::{BLOCK_SIZE, SharedDisk, layout};
use common::generated;
use fs::gfs2::glock::{DemoteHandler, LockError, LockModule, Nolock, SimCluster, SimNode};
use fs::gfs2::{CachedInode, Filesystem, GlockName, LockState, Mount, MountError};
use fs::pagecache::{FaultFlags, PAGE_SIZE, PageCache, ReadBuffer};

const MIB: usize = 1 << 20;
/// How long any wait of these tests may take before it counts as a deadlock.
const DEADLINE: Duration = Duration::from_secs(60);

type TestMount<L> = Mount<&'static SharedDisk, L>;

/// A node's lock module that counts the demote requests the node heard.
struct CountingNode {
    node: SimNode,
    demotes_requested: Arc<AtomicU64>,
    /// Kept alive here: the cluster holds it weakly.
    handler: Mutex<Option<Arc<CountingHandler>>>,
}

struct CountingHandler {
    mount: Weak<dyn DemoteHandler>,
    demotes_requested: Arc<AtomicU64>,
}

impl DemoteHandler for CountingHandler {
    fn demote_requested(&self, name: GlockName, to: LockState) {
        if let Some(mount) = self.mount.upgrade() {
            mount.demote_requested(name, to);
        }
        // After the mount heard it: from now on the demote is pending (or done).
        self.demotes_requested.fetch_add(1, Ordering::SeqCst);
    }
}

impl LockModule for CountingNode {
    fn lock(&self, name: GlockName, from: LockState, to: LockState) -> Result<(), LockError> {
        self.node.lock(name, from, to)
    }

    fn demote(&self, name: GlockName, from: LockState, to: LockState) {
        self.node.demote(name, from, to);
    }

    fn attach(&self, mount: Weak<dyn DemoteHandler>) {
        let handler = Arc::new(CountingHandler {
            mount,
            demotes_requested: Arc::clone(&self.demotes_requested),
        });
        let weak: Weak<dyn DemoteHandler> = Arc::downgrade(&handler) as Weak<dyn DemoteHandler>;
        self.node.attach(weak);
        *self.handler.lock().unwrap() = Some(handler);
    }
}

fn mount<L: LockModule + 'static>(disk: &'static SharedDisk, lock_module: L) -> Arc<TestMount<L>> {
    let filesystem = Filesystem::open(disk).unwrap();
    let cache = Arc::new(PageCache::new(1024));
    // No readahead: a page is cached only once it was read itself.
    cache.set_readahead(1);
    Mount::new(filesystem, cache, lock_module)
}

/// A private (copy-on-write) mapping of file pages `first_page..` as the destination of a
/// read, as a kernel would have it: its pages start not writable. A copy into a page that is
/// not writable takes the fault a kernel may take under the glock: if the file page is
/// cached (a `FAULT_CACHED` lookup, no lock) the page is copied and becomes writable, else
/// the copy stops. `fault_in` takes the full fault, which locks the glock and reads.
struct PrivateMapping<L: LockModule + 'static> {
    mount: Arc<TestMount<L>>,
    inode: Arc<CachedInode>,
    first_page: u64,
    bytes: Vec<u8>,
    writable: Vec<bool>,
    /// Run at the first copy into the mapping (under the read's glock).
    at_first_copy: Option<Box<dyn FnOnce() + Send>>,
    /// Pages made writable by a fault under the read's glock (their file page was cached).
    cached_faults: u64,
    /// Pages made writable by `fault_in`.
    faulted_in: u64,
}

impl<L: LockModule + 'static> PrivateMapping<L> {
    fn new(mount: &Arc<TestMount<L>>, inode: &Arc<CachedInode>, pages: Range<u64>) -> Self {
        let count = (pages.end - pages.start) as usize;
        Self {
            mount: Arc::clone(mount),
            inode: Arc::clone(inode),
            first_page: pages.start,
            bytes: vec![0; count * PAGE_SIZE],
            writable: vec![false; count],
            at_first_copy: None,
            cached_faults: 0,
            faulted_in: 0,
        }
    }

    /// The write fault of page `page`: a private copy of the file page.
    fn fault(&mut self, page: usize, flags: FaultFlags) -> bool {
        let Ok(file_page) = self
            .mount
            .fault(&self.inode, self.first_page + page as u64, flags)
        else {
            return false;
        };
        let private = &mut self.bytes[page * PAGE_SIZE..(page + 1) * PAGE_SIZE];
        file_page.with_bytes(|bytes| private.copy_from_slice(bytes));
        self.writable[page] = true;
        true
    }
}

impl<L: LockModule + 'static> ReadBuffer for PrivateMapping<L> {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        if let Some(hook) = self.at_first_copy.take() {
            hook();
        }

        let mut copied = 0;
        while copied < bytes.len() {
            let byte = at + copied;
            let page = byte / PAGE_SIZE;
            if !self.writable[page] {
                if !self.fault(page, FaultFlags::FAULT_CACHED) {
                    return copied;
                }
                self.cached_faults += 1;
            }
            let run = (PAGE_SIZE - byte % PAGE_SIZE).min(bytes.len() - copied);
            self.bytes[byte..byte + run].copy_from_slice(&bytes[copied..copied + run]);
            copied += run;
        }
        copied
    }

    fn fault_in(&mut self, range: Range<usize>) -> usize {
        for page in range.start / PAGE_SIZE..range.end.div_ceil(PAGE_SIZE) {
            if !self.writable[page] {
                if !self.fault(page, FaultFlags::NONE) {
                    return (page * PAGE_SIZE).max(range.start) - range.start;
                }
                self.faulted_in += 1;
            }
        }
        range.len()
    }
}

/// `/one-mib` as the fixture has it, and as node 2 writes it.
fn old_content() -> Vec<u8> {
    generated(6, 0, MIB)
}

fn new_content() -> Vec<u8> {
    generated(0x41, 0, MIB)
}

/// What [`read_while_node_2_writes`] saw.
struct Outcome {
    read: usize,
    mapping: PrivateMapping<CountingNode>,
    /// Node 2 got EX before the read returned.
    ex_during_read: bool,
    demotes_requested: u64,
}

/// Node 1 reads file pages `read` of `/one-mib` into a private mapping of its pages
/// `mapped` (of which the first `writable` are already written to); at the first copy, node
/// 2 asks for EX, and once it has it writes new content into the file and releases it. The
/// read runs on its own thread; a read that does not finish before the deadline fails the
/// test (the thread is left spinning: a deadlock cannot be undone).
fn read_while_node_2_writes(read: Range<u64>, mapped: Range<u64>, writable: usize) -> Outcome {
    let cluster = SimCluster::new();
    let disk = SharedDisk::new();
    let demotes_requested = Arc::new(AtomicU64::new(0));
    let node_1 = mount(
        disk,
        CountingNode {
            node: cluster.node(1),
            demotes_requested: Arc::clone(&demotes_requested),
            handler: Mutex::new(None),
        },
    );
    let node_2 = cluster.node(2);
    let file = layout("/one-mib");
    let name = GlockName::inode(file.dinode);
    let inode = node_1.open("/one-mib").unwrap();
    assert_ne!(old_content()[..PAGE_SIZE], new_content()[..PAGE_SIZE]);

    let mut mapping = PrivateMapping::new(&node_1, &inode, mapped);
    for page in 0..writable {
        // Written to before: a private page, no longer the file's.
        mapping.writable[page] = true;
    }
    let (ask_for_ex, asked) = mpsc::channel();
    let heard = Arc::clone(&demotes_requested);
    mapping.at_first_copy = Some(Box::new(move || {
        ask_for_ex.send(()).unwrap();
        // Until node 1 heard node 2: then the demote waits for this read's holder.
        let deadline = Instant::now() + DEADLINE;
        while heard.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "node 2's request never came");
            std::thread::yield_now();
        }
    }));
    let read_done = Arc::new(AtomicBool::new(false));

    let node_2_thread = {
        let read_done = Arc::clone(&read_done);
        std::thread::spawn(move || {
            asked.recv_timeout(DEADLINE).expect("the read never copied");
            node_2
                .lock(name, LockState::Unlocked, LockState::Exclusive)
                .unwrap();
            let ex_during_read = !read_done.load(Ordering::SeqCst);
            for (chunk, &block) in new_content().chunks(BLOCK_SIZE).zip(&file.blocks) {
                disk.write(block, 0, chunk);
            }
            node_2.demote(name, LockState::Exclusive, LockState::Unlocked);
            ex_during_read
        })
    };
    let (send_result, result) = mpsc::channel();
    {
        let node_1 = Arc::clone(&node_1);
        let read_done = Arc::clone(&read_done);
        std::thread::spawn(move || {
            let offset = read.start * PAGE_SIZE as u64;
            let len = ((read.end - read.start) as usize * PAGE_SIZE).min(mapping.len());
            let mut window = Window {
                mapping: &mut mapping,
                len,
            };
            let read = node_1.read_into(&inode, offset, &mut window);
            read_done.store(true, Ordering::SeqCst);
            send_result.send((read.unwrap(), mapping)).unwrap();
        });
    }

    let (read, mapping) = result
        .recv_timeout(DEADLINE)
        .expect("the read did not finish: a deadlock");
    let ex_during_read = node_2_thread.join().unwrap();
    Outcome {
        read,
        mapping,
        ex_during_read,
        demotes_requested: demotes_requested.load(Ordering::SeqCst),
    }
}

/// The first `len` bytes of a mapping, as a read's buffer.
struct Window<'a, L: LockModule + 'static> {
    mapping: &'a mut PrivateMapping<L>,
    len: usize,
}

impl<L: LockModule + 'static> ReadBuffer for Window<'_, L> {
    fn len(&self) -> usize {
        self.len
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        self.mapping.copy_at(at, bytes)
    }

    fn fault_in(&mut self, range: Range<usize>) -> usize {
        self.mapping.fault_in(range)
    }
}

#[test]
fn a_read_into_a_mapping_of_its_file_lets_a_remote_ex_through_and_returns_the_new_data() {
    let outcome = read_while_node_2_writes(0..1, 1..2, 0);

    assert_eq!(outcome.read, PAGE_SIZE);
    assert_eq!(outcome.mapping.bytes, new_content()[..PAGE_SIZE]);
    assert!(outcome.ex_during_read, "node 2 got EX only after the read");
    assert!(outcome.demotes_requested >= 1);
    let mount = &outcome.mapping.mount;
    let stats = mount.read_stats();
    assert_eq!(stats.fault_in_rounds, 1);
    assert_eq!(stats.restarts, 0, "nothing was copied before the demote");
    assert_eq!(outcome.mapping.faulted_in, 1);
    assert_eq!(outcome.mapping.cached_faults, 0);
    let glocks = mount.glocks().stats();
    // The read's holder, the fault-in's, the read's again after it.
    assert_eq!((glocks.shared, glocks.demotes), (3, 1));
}

#[test]
fn a_read_that_copied_before_the_remote_write_starts_over_and_never_mixes() {
    // File pages 0 and 1 into a mapping of pages 5 and 6, page 5 already private: page 0 is
    // copied under the old version, the copy of page 1 faults.
    let outcome = read_while_node_2_writes(0..2, 5..7, 1);

    assert_eq!(outcome.read, 2 * PAGE_SIZE);
    assert_eq!(outcome.mapping.bytes, new_content()[..2 * PAGE_SIZE]);
    assert!(outcome.ex_during_read, "node 2 got EX only after the read");
    let stats = outcome.mapping.mount.read_stats();
    assert_eq!((stats.fault_in_rounds, stats.restarts), (1, 1));
    assert_eq!(outcome.mapping.faulted_in, 1);
}

#[test]
fn a_copy_into_a_mapping_of_a_cached_page_needs_no_fault_in() {
    let disk = SharedDisk::new();
    let node = mount(disk, Nolock);
    let inode = node.open("/one-mib").unwrap();
    // Page 0 into a mapping of page 0 itself: read in under the glock, then copied.
    let mut mapping = PrivateMapping::new(&node, &inode, 0..1);

    assert_eq!(node.read_into(&inode, 0, &mut mapping).unwrap(), PAGE_SIZE);

    assert_eq!(mapping.bytes, old_content()[..PAGE_SIZE]);
    assert_eq!((mapping.cached_faults, mapping.faulted_in), (1, 0));
    assert_eq!(node.read_stats().fault_in_rounds, 0);
}

/// A buffer that takes its first `good` bytes and faults, and whose fault-in fails.
struct BadBuffer {
    bytes: Vec<u8>,
    good: usize,
    /// The ranges `fault_in` was asked for: (start, end).
    fault_ins: Vec<(usize, usize)>,
}

impl ReadBuffer for BadBuffer {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn copy_at(&mut self, at: usize, bytes: &[u8]) -> usize {
        let copied = self.good.saturating_sub(at).min(bytes.len());
        self.bytes[at..at + copied].copy_from_slice(&bytes[..copied]);
        copied
    }

    fn fault_in(&mut self, range: Range<usize>) -> usize {
        self.fault_ins.push((range.start, range.end));
        0
    }
}

#[test]
fn a_buffer_that_cannot_be_faulted_in_ends_the_read() {
    let disk = SharedDisk::new();
    let node = mount(disk, Nolock);
    let inode = node.open("/one-mib").unwrap();
    let bad = |good| BadBuffer {
        bytes: vec![0; 40 * PAGE_SIZE],
        good,
        fault_ins: Vec::new(),
    };

    let mut nothing = bad(0);
    let error = node.read_into(&inode, 0, &mut nothing).unwrap_err();
    assert!(
        matches!(error, MountError::BufferFault { at: 0 }),
        "{error}"
    );
    // One round: the window is capped at 16 pages.
    assert_eq!(nothing.fault_ins, [(0, 16 * PAGE_SIZE)]);

    let mut some = bad(5000);
    assert_eq!(node.read_into(&inode, 100, &mut some).unwrap(), 5000);
    assert_eq!(some.bytes[..5000], old_content()[100..5100]);
    assert_eq!(some.fault_ins, [(5000, 5000 + 16 * PAGE_SIZE)]);
    assert_eq!(node.read_stats().fault_in_rounds, 2);
}
