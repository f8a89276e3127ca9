//! A disk that the simulated cluster's nodes share and that a test writes as node 2, and the
//! layout of a fixture file, to know which blocks node 2 writes.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use drivers::block::{BlockDevice, BlockError, RamDisk};
use fs::gfs2::Filesystem;

/// The block size of the 4 KiB fixture.
pub const BLOCK_SIZE: usize = 4096;

/// A disk shared by the simulated nodes, which the test writes as node 2; reads counted.
pub struct SharedDisk {
    bytes: RwLock<Vec<u8>>,
    /// Read requests.
    requests: AtomicU64,
    /// Blocks read.
    blocks_read: AtomicU64,
}

impl SharedDisk {
    /// The 4 KiB fixture, leaked so that mounts can borrow it for the whole test.
    pub fn new() -> &'static Self {
        Box::leak(Box::new(Self {
            bytes: RwLock::new(super::image_4k().to_vec()),
            requests: AtomicU64::new(0),
            blocks_read: AtomicU64::new(0),
        }))
    }

    /// Writes `data` at byte `offset` of block `block`, as node 2.
    pub fn write(&self, block: u64, offset: usize, data: &[u8]) {
        let start = block as usize * BLOCK_SIZE + offset;
        self.bytes.write().unwrap()[start..start + data.len()].copy_from_slice(data);
    }

    /// Read requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Blocks read so far.
    pub fn blocks_read(&self) -> u64 {
        self.blocks_read.load(Ordering::SeqCst)
    }
}

impl BlockDevice for SharedDisk {
    type Error = BlockError;

    fn block_size(&self) -> usize {
        BLOCK_SIZE
    }

    fn block_count(&self) -> u64 {
        (self.bytes.read().unwrap().len() / BLOCK_SIZE) as u64
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.blocks_read
            .fetch_add((buf.len() / BLOCK_SIZE) as u64, Ordering::SeqCst);
        let bytes = self.bytes.read().unwrap();
        RamDisk::new(&bytes, BLOCK_SIZE)?.read_blocks(first, buf)
    }
}

/// The dinode address and data blocks of a file, to write it as node 2 does.
pub struct FileLayout {
    pub dinode: u64,
    pub blocks: Vec<u64>,
}

/// The layout of the fixture file at `path` (every block allocated).
pub fn layout(path: &str) -> FileLayout {
    let reader = Filesystem::open(RamDisk::new(super::image_4k(), BLOCK_SIZE).unwrap()).unwrap();
    let inode = reader.lookup(path).unwrap();
    let count = inode.size().div_ceil(BLOCK_SIZE as u64);
    let blocks = (0..count)
        .map(|lblock| reader.map_block(&inode, lblock).unwrap().unwrap())
        .collect();
    FileLayout {
        dinode: inode.addr(),
        blocks,
    }
}
