//! A block device over an image with some blocks replaced, for corrupting images cheaply.

use std::collections::BTreeMap;

use drivers::block::{BlockDevice, BlockError, RamDisk};

/// An image seen through 4096-byte blocks, some of them replaced.
pub struct PatchedDisk<'a> {
    base: RamDisk<'a>,
    patches: BTreeMap<u64, Vec<u8>>,
}

impl<'a> PatchedDisk<'a> {
    pub const BLOCK_SIZE: usize = 4096;

    pub fn new(image: &'a [u8]) -> Self {
        Self {
            base: RamDisk::new(image, Self::BLOCK_SIZE).unwrap(),
            patches: BTreeMap::new(),
        }
    }

    /// The bytes of `block`, copied into the patch set on first use.
    pub fn block_mut(&mut self, block: u64) -> &mut [u8] {
        let base = self.base;
        self.patches.entry(block).or_insert_with(|| {
            let mut bytes = vec![0; Self::BLOCK_SIZE];
            base.read_blocks(block, &mut bytes).unwrap();
            bytes
        })
    }

    /// The current bytes of `block`.
    pub fn block(&self, block: u64) -> Vec<u8> {
        let mut bytes = vec![0; Self::BLOCK_SIZE];
        self.read_blocks(block, &mut bytes).unwrap();
        bytes
    }

    /// Writes a big-endian value at byte `offset` of `block`.
    pub fn put_be(&mut self, block: u64, offset: usize, value: u64, width: usize) {
        let bytes = value.to_be_bytes();
        self.block_mut(block)[offset..offset + width].copy_from_slice(&bytes[8 - width..]);
    }

    /// Reads a big-endian value at byte `offset` of `block`.
    pub fn get_be(&self, block: u64, offset: usize, width: usize) -> u64 {
        let bytes = self.block(block);
        let mut raw = [0; 8];
        raw[8 - width..].copy_from_slice(&bytes[offset..offset + width]);
        u64::from_be_bytes(raw)
    }
}

impl BlockDevice for PatchedDisk<'_> {
    type Error = BlockError;

    fn block_size(&self) -> usize {
        Self::BLOCK_SIZE
    }

    fn block_count(&self) -> u64 {
        self.base.block_count()
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.base.read_blocks(first, buf)?;
        let count = (buf.len() / Self::BLOCK_SIZE) as u64;
        for (&block, bytes) in self.patches.range(first..first + count) {
            let at = (block - first) as usize * Self::BLOCK_SIZE;
            buf[at..at + Self::BLOCK_SIZE].copy_from_slice(bytes);
        }
        Ok(())
    }
}
