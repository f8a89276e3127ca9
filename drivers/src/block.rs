//! Block devices: the interface filesystems read through, and a RAM disk.
//!
//! A filesystem sees a disk as an array of equal-sized blocks that it reads a contiguous run
//! at a time. [`BlockDevice`] is that view. The virtio-blk driver and the initrd RAM disk of
//! the kernel implement it; so does [`RamDisk`], a disk held in a byte slice, which the host
//! tools, tests and benchmarks use to read image files.
//!
//! Reads take `&self`: a filesystem shares one device among many open files. A device whose
//! requests need exclusive access (a virtqueue) serializes them inside its implementation.

/// A disk read in whole blocks.
pub trait BlockDevice {
    /// Why a read failed.
    type Error: core::error::Error + 'static;

    /// Bytes in one block: a power of two, at least 512.
    fn block_size(&self) -> usize;

    /// Number of blocks on the device.
    fn block_count(&self) -> u64;

    /// Reads `buf.len() / block_size()` contiguous blocks, starting at block `first`, into
    /// `buf`.
    ///
    /// `buf.len()` must be a multiple of the block size, and the blocks must lie on the device.
    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &T {
    type Error = T::Error;

    fn block_size(&self) -> usize {
        (**self).block_size()
    }

    fn block_count(&self) -> u64 {
        (**self).block_count()
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_blocks(first, buf)
    }
}

/// Why a [`RamDisk`] could not be made or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlockError {
    /// The block size is not a power of two of at least 512 bytes.
    #[error("block size {0} is not a power of two of at least 512 bytes")]
    BadBlockSize(usize),
    /// The buffer length is not a whole number of blocks.
    #[error("a read of {len} bytes is not a whole number of {block_size}-byte blocks")]
    PartialBlock {
        /// Length of the buffer.
        len: usize,
        /// Block size of the device.
        block_size: usize,
    },
    /// The read runs past the last block of the device.
    #[error("blocks {first}..+{count} lie past the device end ({block_count} blocks)")]
    OutOfRange {
        /// First block asked for.
        first: u64,
        /// Number of blocks asked for.
        count: u64,
        /// Number of blocks on the device.
        block_count: u64,
    },
}

/// A disk held in memory: an image file read by a host tool, or the kernel's initrd.
///
/// Bytes past the last whole block are not part of the device.
#[derive(Clone, Copy, Debug)]
pub struct RamDisk<'a> {
    bytes: &'a [u8],
    block_size: usize,
}

impl<'a> RamDisk<'a> {
    /// A disk of `block_size`-byte blocks over `bytes`.
    pub fn new(bytes: &'a [u8], block_size: usize) -> Result<Self, BlockError> {
        if !block_size.is_power_of_two() || block_size < 512 {
            return Err(BlockError::BadBlockSize(block_size));
        }

        Ok(Self { bytes, block_size })
    }

    /// The bytes of the disk.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl BlockDevice for RamDisk<'_> {
    type Error = BlockError;

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        (self.bytes.len() / self.block_size) as u64
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        if !buf.len().is_multiple_of(self.block_size) {
            return Err(BlockError::PartialBlock {
                len: buf.len(),
                block_size: self.block_size,
            });
        }

        let count = (buf.len() / self.block_size) as u64;
        let block_count = self.block_count();
        let out_of_range = BlockError::OutOfRange {
            first,
            count,
            block_count,
        };
        let end = first.checked_add(count).ok_or(out_of_range)?;
        if end > block_count {
            return Err(out_of_range);
        }

        // Both fit in usize: `end <= block_count`, and the device's bytes are in memory.
        let start = first as usize * self.block_size;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn numbered_disk() -> Vec<u8> {
        (0..4 * 512).map(|i| (i / 512) as u8).collect()
    }

    #[test]
    fn reads_contiguous_blocks() {
        let bytes = numbered_disk();
        let disk = RamDisk::new(&bytes, 512).unwrap();
        let mut buf = [0xffu8; 1024];

        disk.read_blocks(2, &mut buf).unwrap();

        assert_eq!(disk.block_count(), 4);
        assert!(buf[..512].iter().all(|&b| b == 2));
        assert!(buf[512..].iter().all(|&b| b == 3));
    }

    #[test]
    fn rejects_reads_past_the_end() {
        let bytes = numbered_disk();
        let disk = RamDisk::new(&bytes, 512).unwrap();
        let mut buf = [0u8; 1024];

        assert_eq!(
            disk.read_blocks(3, &mut buf),
            Err(BlockError::OutOfRange {
                first: 3,
                count: 2,
                block_count: 4
            })
        );
        assert!(matches!(
            disk.read_blocks(u64::MAX, &mut buf),
            Err(BlockError::OutOfRange { .. })
        ));
    }

    #[test]
    fn rejects_partial_blocks_and_bad_sizes() {
        let bytes = numbered_disk();
        let disk = RamDisk::new(&bytes, 512).unwrap();
        let mut buf = [0u8; 100];

        assert_eq!(
            disk.read_blocks(0, &mut buf),
            Err(BlockError::PartialBlock {
                len: 100,
                block_size: 512
            })
        );
        assert_eq!(
            RamDisk::new(&bytes, 1000).unwrap_err(),
            BlockError::BadBlockSize(1000)
        );
        assert_eq!(
            RamDisk::new(&bytes, 256).unwrap_err(),
            BlockError::BadBlockSize(256)
        );
    }

    #[test]
    fn ignores_a_trailing_partial_block() {
        let bytes = [0u8; 1500];
        let disk = RamDisk::new(&bytes, 512).unwrap();

        assert_eq!(disk.block_count(), 2);
    }

    #[test]
    fn reads_through_a_reference() {
        let bytes = numbered_disk();
        let disk = RamDisk::new(&bytes, 1024).unwrap();
        let by_ref: &dyn BlockDevice<Error = BlockError> = &disk;
        let mut buf = [0u8; 1024];

        (&by_ref).read_blocks(1, &mut buf).unwrap();

        assert_eq!(by_ref.block_size(), 1024);
        assert_eq!(buf[0], 2);
        assert_eq!(buf[1023], 3);
    }
}
