//! A block device that records every read, for counting what an operation costs.

use std::cell::RefCell;

use drivers::block::BlockDevice;

/// Wraps a device and records the blocks of each read.
pub struct CountingDisk<D> {
    inner: D,
    reads: RefCell<Vec<u64>>,
}

impl<D: BlockDevice> CountingDisk<D> {
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// The device blocks read since the last call, in order; forgets them.
    pub fn take_reads(&self) -> Vec<u64> {
        std::mem::take(&mut self.reads.borrow_mut())
    }
}

impl<D: BlockDevice> BlockDevice for CountingDisk<D> {
    type Error = D::Error;

    fn block_size(&self) -> usize {
        self.inner.block_size()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), D::Error> {
        let count = (buf.len() / self.inner.block_size()) as u64;
        self.reads.borrow_mut().extend(first..first + count);
        self.inner.read_blocks(first, buf)
    }
}
