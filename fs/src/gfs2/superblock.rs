//! The superblock, and the geometry that follows from its block size.
//!
//! The superblock sits at byte 65536 whatever the block size. It names the block size, the
//! locking protocol and table, and the two directories everything else hangs from: the root
//! and the hidden master directory of system files. [`Geometry`] holds the numbers every
//! other module derives from the block size: how many pointers a dinode and an indirect block
//! hold, and how far a metadata tree of each height reaches.

use super::ondisk::{
    DINODE_SIZE, FS_FORMATS, GFS2_MAGIC, Inum, MAX_BLOCK_SIZE, MAX_META_HEIGHT, META_HEADER_SIZE,
    MIN_BLOCK_SIZE, MULTIHOST_FORMAT, MetaType, RawSuperblock, SUPERBLOCK_OFFSET,
};
use super::{Corruption, Error};

/// The validated superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    raw: RawSuperblock,
}

impl Superblock {
    /// Validates a decoded superblock: magic, type, formats and block size.
    pub fn validate<E>(raw: RawSuperblock) -> Result<Self, Error<E>> {
        let block = SUPERBLOCK_OFFSET / u64::from(raw.bsize.max(1));
        if raw.header.magic != GFS2_MAGIC {
            return Err(Corruption::BadMagic {
                block,
                found: raw.header.magic,
            }
            .into());
        }
        if raw.header.meta_type != MetaType::Superblock as u32 {
            let expected = MetaType::Superblock;
            return Err(Corruption::WrongMetaType {
                block,
                expected,
                found: raw.header.meta_type,
            }
            .into());
        }
        if !FS_FORMATS.contains(&raw.fs_format) {
            return Err(Corruption::UnsupportedFormat(raw.fs_format).into());
        }
        if raw.multihost_format != MULTIHOST_FORMAT {
            return Err(Corruption::UnsupportedMultihostFormat(raw.multihost_format).into());
        }

        let size_ok = raw.bsize.is_power_of_two()
            && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&raw.bsize)
            && raw.bsize.trailing_zeros() == raw.bsize_shift;
        if !size_ok {
            return Err(Corruption::BadBlockSize {
                bsize: raw.bsize,
                shift: raw.bsize_shift,
            }
            .into());
        }

        Ok(Self { raw })
    }

    /// The block size in bytes: a power of two from 512 to 4096.
    pub fn block_size(&self) -> u32 {
        self.raw.bsize
    }

    /// The filesystem block that holds the superblock.
    pub fn block(&self) -> u64 {
        SUPERBLOCK_OFFSET >> self.raw.bsize_shift
    }

    /// `sb_fs_format`: 1801 or 1802.
    pub fn fs_format(&self) -> u32 {
        self.raw.fs_format
    }

    /// `sb_multihost_format`: 1900.
    pub fn multihost_format(&self) -> u32 {
        self.raw.multihost_format
    }

    /// The root directory.
    pub fn root_dir(&self) -> Inum {
        self.raw.root_dir
    }

    /// The master directory of system files.
    pub fn master_dir(&self) -> Inum {
        self.raw.master_dir
    }

    /// The locking protocol, such as `lock_nolock` or `lock_dlm`, up to its first NUL.
    pub fn lock_protocol(&self) -> &[u8] {
        until_nul(&self.raw.lock_protocol)
    }

    /// The lock table (`cluster:fsname` for `lock_dlm`), up to its first NUL.
    pub fn lock_table(&self) -> &[u8] {
        until_nul(&self.raw.lock_table)
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.raw.uuid
    }

    /// Every field as decoded.
    pub fn raw(&self) -> &RawSuperblock {
        &self.raw
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Numbers derived from the block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Block size in bytes.
    pub bsize: u32,
    /// log2 of the block size.
    pub bsize_shift: u32,
    /// Pointers held in a dinode (`sd_diptrs`).
    pub diptrs: u64,
    /// Pointers held in an indirect block (`sd_inptrs`).
    pub inptrs: u64,
    /// Payload bytes of a journaled-data block (`sd_jbsize`).
    pub jbsize: u64,
    /// The highest tree height the block size allows (`sd_max_height`).
    pub max_height: u16,
}

impl Geometry {
    /// The geometry of a valid block size (512 to 4096).
    pub fn new(bsize: u32) -> Self {
        let diptrs = (u64::from(bsize) - DINODE_SIZE as u64) / 8;
        let inptrs = (u64::from(bsize) - META_HEADER_SIZE as u64) / 8;
        let mut geometry = Self {
            bsize,
            bsize_shift: bsize.trailing_zeros(),
            diptrs,
            inptrs,
            jbsize: u64::from(bsize) - META_HEADER_SIZE as u64,
            max_height: 0,
        };

        // As Linux: the number of heights whose reach in bytes fits a u64.
        let mut height = 1;
        while height <= MAX_META_HEIGHT && geometry.tree_blocks(height).is_some() {
            height += 1;
        }
        geometry.max_height = height.min(MAX_META_HEIGHT);
        geometry
    }

    /// Logical blocks a tree of `height` (at least 1) addresses, if their bytes fit a u64.
    pub fn tree_blocks(&self, height: u16) -> Option<u64> {
        let mut blocks = self.diptrs;
        for _ in 1..height {
            blocks = blocks.checked_mul(self.inptrs)?;
        }
        blocks.checked_mul(u64::from(self.bsize))?;
        Some(blocks)
    }

    /// Bytes the stuffed area of a dinode holds.
    pub fn stuffed_capacity(&self) -> u64 {
        u64::from(self.bsize) - DINODE_SIZE as u64
    }

    /// The most bytes a dinode of `height` can hold when each logical block carries
    /// `unit` bytes (the block size for files, `jbsize` for a directory's hash table).
    pub fn reach(&self, height: u16, unit: u64) -> u64 {
        if height == 0 {
            return self.stuffed_capacity();
        }

        let mut blocks = self.diptrs;
        for _ in 1..height {
            blocks = blocks.saturating_mul(self.inptrs);
        }
        blocks.saturating_mul(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_linux_for_every_block_size() {
        // (bsize, diptrs, inptrs, jbsize, max_height, bytes a height-1 tree reaches)
        let expected = [
            (512, 35, 61, 488, 10, 17920),
            (1024, 99, 125, 1000, 8, 101_376),
            (2048, 227, 253, 2024, 7, 464_896),
            (4096, 483, 509, 4072, 6, 1_978_368),
        ];

        for (bsize, diptrs, inptrs, jbsize, max_height, reach1) in expected {
            let geometry = Geometry::new(bsize);
            assert_eq!(geometry.diptrs, diptrs, "bsize {bsize}");
            assert_eq!(geometry.inptrs, inptrs, "bsize {bsize}");
            assert_eq!(geometry.jbsize, jbsize, "bsize {bsize}");
            assert_eq!(geometry.max_height, max_height, "bsize {bsize}");
            assert_eq!(geometry.reach(1, bsize.into()), reach1, "bsize {bsize}");
        }
    }

    #[test]
    fn reach_follows_the_kernel_heightsize_table() {
        let geometry = Geometry::new(4096);

        assert_eq!(geometry.reach(0, 4096), 3864);
        assert_eq!(geometry.reach(2, 4096), 1_006_989_312);
        assert_eq!(geometry.reach(3, 4096), 512_557_559_808);
        assert_eq!(geometry.reach(5, 4096), 132_793_925_152_616_448);
        assert_eq!(geometry.reach(6, 4096), u64::MAX);
    }

    fn raw_superblock() -> RawSuperblock {
        let mut bytes = [0u8; RawSuperblock::SIZE];
        bytes[..4].copy_from_slice(&GFS2_MAGIC.to_be_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_be_bytes());
        bytes[24..28].copy_from_slice(&1802u32.to_be_bytes());
        bytes[28..32].copy_from_slice(&1900u32.to_be_bytes());
        bytes[36..40].copy_from_slice(&4096u32.to_be_bytes());
        bytes[40..44].copy_from_slice(&12u32.to_be_bytes());
        bytes[96..107].copy_from_slice(b"lock_nolock");
        RawSuperblock::decode(&bytes)
    }

    fn validate(raw: RawSuperblock) -> Result<Superblock, Error<core::convert::Infallible>> {
        Superblock::validate(raw)
    }

    #[test]
    fn accepts_a_good_superblock() {
        let superblock = validate(raw_superblock()).unwrap();

        assert_eq!(superblock.block(), 16);
        assert_eq!(superblock.lock_protocol(), b"lock_nolock");
        assert_eq!(superblock.lock_table(), b"");
    }

    #[test]
    fn rejects_bad_magic_formats_and_block_sizes() {
        let corruption = |raw| match validate(raw) {
            Err(Error::Corrupt(corruption)) => corruption,
            other => panic!("expected a corruption, got {other:?}"),
        };

        let mut raw = raw_superblock();
        raw.header.magic = 0x0116_1971;
        assert!(matches!(
            corruption(raw),
            Corruption::BadMagic { block: 16, .. }
        ));

        let mut raw = raw_superblock();
        raw.header.meta_type = 4;
        assert!(matches!(
            corruption(raw),
            Corruption::WrongMetaType { found: 4, .. }
        ));

        for format in [1800, 1803, 1309] {
            let mut raw = raw_superblock();
            raw.fs_format = format;
            assert_eq!(corruption(raw), Corruption::UnsupportedFormat(format));
        }

        let mut raw = raw_superblock();
        raw.multihost_format = 1401;
        assert_eq!(
            corruption(raw),
            Corruption::UnsupportedMultihostFormat(1401)
        );

        for (bsize, shift) in [(3000, 12), (256, 8), (8192, 13), (0, 0), (4096, 11)] {
            let mut raw = raw_superblock();
            raw.bsize = bsize;
            raw.bsize_shift = shift;
            assert_eq!(corruption(raw), Corruption::BadBlockSize { bsize, shift });
        }
    }
}
