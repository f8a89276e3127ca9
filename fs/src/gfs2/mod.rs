//! A read-only reader of gfs2, the cluster filesystem of Linux.
//!
//! [`Filesystem::open`] reads the superblock of a [`BlockDevice`], the master directory and
//! its `rindex` (the index of resource groups, which says which blocks may hold filesystem
//! data), and the root directory. From there:
//!
//! - [`Filesystem::lookup`] resolves a path, following symlinks; an exhash directory is
//!   searched by the hash of the name: one hash-table slot, then the leaf chain it names;
//! - [`Filesystem::read_dir`] lists a directory with the file type of each entry;
//! - [`Inode::stat`] gives mode, owner, link count, size, blocks and time stamps;
//! - [`Filesystem::read_link`] gives a symlink's target;
//! - [`Filesystem::open_file`] gives a [`File`] that implements `embedded_io::Read + Seek`;
//! - [`Filesystem::map_block`] and [`Filesystem::map_extent`] map a file's logical blocks to
//!   device blocks through its metadata tree (the metapath), for a page cache;
//! - [`Filesystem::rgrps`], [`Filesystem::rgrp_header`] and [`Filesystem::rgrp_bitmap`]
//!   describe the resource groups and their free and used blocks;
//! - a [`Mount`] reads files through the [page cache](crate::pagecache) under inode
//!   [`glock`]s, taking a glock only when a page is not cached ([`read`](mod@read)).
//!
//! The disk is input: every field is checked before it is used to address memory, a loop
//! bound or an allocation, and bad contents end in a typed [`Corruption`], never a panic or a
//! hang. The modules follow the on-disk format: [`ondisk`] decodes the raw structures,
//! [`superblock`], [`rgrp`], [`inode`] (dinodes), [`metapath`] (metadata trees), [`dir`]
//! (linear and exhash directories) and [`file`](mod@file) build on it.
//!
//! # Limitations
//!
//! - Read-only. The journal is neither replayed nor checked: an image that was not unmounted
//!   cleanly may have newer metadata in its log than in place, and this reader sees the
//!   in-place version.
//! - Extended attributes are not read (their block is reported in [`Dinode::eattr`]).
//! - Block sizes above 4096 bytes are refused, as by Linux on 4 KiB-page machines.
//! - [`Filesystem::read_dir`] lists entries in on-disk order (hash-table slot, then leaf
//!   chain), not sorted by hash as Linux's readdir is, and offers no resumable position.
//! - An [`Extent`] ends where the bottom-level pointer block it was found in ends, even when
//!   the next block continues the run.
//! - [`Filesystem::open_inode`] checks the whole metadata tree of a file before reading it,
//!   which reads every indirect block once and keeps a set of the tree's block numbers
//!   (roughly 16 bytes per block of the file) while it runs.

mod error;

pub mod dir;
pub mod file;
pub mod glock;
pub mod inode;
pub mod metapath;
pub mod ondisk;
pub mod read;
pub mod rgrp;
pub mod superblock;

use alloc::vec;
use alloc::vec::Vec;

use drivers::block::BlockDevice;

pub use dir::DirEntry;
pub use error::{Corruption, DirentProblem, Error, RgrpProblem, RindexProblem};
pub use file::File;
pub use glock::{GlockManager, GlockName, LockState};
pub use inode::{FileType, Inode, Stat};
pub use metapath::Extent;
pub use ondisk::{Dinode, Inum, MetaType, RgrpHeader, RindexEntry, Timestamp};
pub use read::{CachedInode, FAULT_IN_PAGES, Mount, MountError, ReadPolicy, ReadStats, UnmapHook};
pub use rgrp::BitmapCounts;
pub use superblock::{Geometry, Superblock};

use ondisk::{
    GFS2_MAGIC, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, MetaHeader, RawSuperblock, SUPERBLOCK_OFFSET,
};

/// The result of a gfs2 operation on a device whose reads fail with `E`.
pub type Result<T, E> = core::result::Result<T, Error<E>>;

/// How many symlinks one path resolution follows before giving up (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// A gfs2 filesystem on a block device, open for reading.
pub struct Filesystem<D: BlockDevice> {
    device: D,
    superblock: Superblock,
    geometry: Geometry,
    /// Filesystem blocks on the device.
    block_count: u64,
    /// Device blocks per filesystem block.
    device_blocks_per_block: u64,
    /// The resource groups, sorted by address; empty while the rindex is being read.
    rgrps: Vec<RindexEntry>,
    master: Inode,
    root: Inode,
}

impl<D: BlockDevice> Filesystem<D> {
    /// Opens the gfs2 filesystem on `device`: reads and checks the superblock, the master
    /// directory, the resource-group index and the root directory.
    pub fn open(device: D) -> Result<Self, D::Error> {
        let device_block_size = device.block_size();
        if !device_block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE as usize..=MAX_BLOCK_SIZE as usize).contains(&device_block_size)
        {
            return Err(Error::DeviceBlockSize(device_block_size));
        }
        let bytes = device
            .block_count()
            .saturating_mul(device_block_size as u64);
        if bytes < SUPERBLOCK_OFFSET + RawSuperblock::SIZE as u64 {
            return Err(Corruption::DeviceTooSmall { bytes }.into());
        }

        // The superblock fits in the first device block at its offset: device blocks are
        // at least 512 bytes and divide 65536.
        let superblock_device_block = SUPERBLOCK_OFFSET / device_block_size as u64;
        let mut first = vec![0; device_block_size];
        device
            .read_blocks(superblock_device_block, &mut first)
            .map_err(|source| Error::Device {
                block: superblock_device_block,
                source,
            })?;
        let superblock = Superblock::validate(RawSuperblock::decode(&first))?;

        let bsize = superblock.block_size();
        if device_block_size > bsize as usize {
            return Err(Error::DeviceBlockSize(device_block_size));
        }
        let device_blocks_per_block = u64::from(bsize) / device_block_size as u64;
        let block_count = device.block_count() / device_blocks_per_block;
        if superblock.block() >= block_count {
            return Err(Corruption::DeviceTooSmall { bytes }.into());
        }

        // Read the master directory and the rindex with pointers checked against the device
        // end only; then check the master and root against the resource groups too.
        let mut filesystem = Self {
            device,
            geometry: Geometry::new(bsize),
            block_count,
            device_blocks_per_block,
            rgrps: Vec::new(),
            master: Inode::placeholder(),
            root: Inode::placeholder(),
            superblock,
        };
        let master = filesystem.read_system_dir(filesystem.superblock.master_dir())?;
        filesystem.rgrps = filesystem.read_rindex(&master)?;
        filesystem.master = filesystem.read_system_dir(filesystem.superblock.master_dir())?;
        filesystem.root = filesystem.read_system_dir(filesystem.superblock.root_dir())?;

        #[cfg(feature = "defmt")]
        defmt::info!(
            "gfs2: opened a filesystem of {} {}-byte blocks in {} resource groups",
            filesystem.block_count,
            bsize,
            filesystem.rgrps.len()
        );
        Ok(filesystem)
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Numbers derived from the block size.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.geometry.bsize
    }

    /// Filesystem blocks on the device.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// The device the filesystem reads.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The root directory.
    pub fn root(&self) -> &Inode {
        &self.root
    }

    /// The master directory of system files (`jindex`, `rindex`, `statfs`, ...).
    pub fn master(&self) -> &Inode {
        &self.master
    }

    /// Reads a directory named by the superblock and checks its formal number.
    fn read_system_dir(&self, inum: Inum) -> Result<Inode, D::Error> {
        self.check_pointer(self.superblock.block(), inum.addr)?;
        let inode = self.read_inode(inum.addr)?;
        if inode.inum().formal_ino != inum.formal_ino {
            let (expected, found) = (inum.formal_ino, inode.inum().formal_ino);
            return Err(Corruption::FormalInoMismatch {
                inode: inum.addr,
                expected,
                found,
            }
            .into());
        }
        if !inode.is_dir() {
            return Err(Error::NotADirectory);
        }
        Ok(inode)
    }

    /// Checks that `pointer`, found in block `from`, names a block that may hold metadata or
    /// data: on the device and, once the rindex is read, in the data area of an rgrp.
    pub(crate) fn check_pointer(
        &self,
        from: u64,
        pointer: u64,
    ) -> core::result::Result<(), Corruption> {
        if pointer == 0 || pointer >= self.block_count {
            return Err(Corruption::BlockPastEnd {
                block: from,
                pointer,
                limit: self.block_count,
            });
        }
        if !self.rgrps.is_empty() && !self.in_rgrp_data(pointer) {
            return Err(Corruption::BlockOutsideRgrps {
                block: from,
                pointer,
            });
        }
        Ok(())
    }

    /// Reads `buf.len() / block_size` blocks from `first`; the caller has checked them.
    pub(crate) fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), D::Error> {
        let count = (buf.len() >> self.geometry.bsize_shift) as u64;
        let in_range = first
            .checked_add(count)
            .is_some_and(|end| end <= self.block_count);
        if !in_range {
            return Err(Corruption::BlockPastEnd {
                block: 0,
                pointer: first,
                limit: self.block_count,
            }
            .into());
        }

        self.device
            .read_blocks(first * self.device_blocks_per_block, buf)
            .map_err(|source| Error::Device {
                block: first,
                source,
            })
    }

    /// Reads one block into a new buffer.
    pub(crate) fn read_block(&self, block: u64) -> Result<Vec<u8>, D::Error> {
        let mut buf = vec![0; self.geometry.bsize as usize];
        self.read_blocks(block, &mut buf)?;
        Ok(buf)
    }

    /// Reads one metadata block and checks its magic and type.
    pub(crate) fn read_meta(&self, block: u64, expected: MetaType) -> Result<Vec<u8>, D::Error> {
        let buf = self.read_block(block)?;
        check_header(&buf, block, expected)?;
        Ok(buf)
    }
}

impl<D: BlockDevice> core::fmt::Debug for Filesystem<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Filesystem")
            .field("superblock", &self.superblock)
            .field("block_count", &self.block_count)
            .field("rgrps", &self.rgrps)
            .finish_non_exhaustive()
    }
}

/// Checks the magic and type of the metadata block `block`, whose bytes are `buf`.
pub(crate) fn check_header(
    buf: &[u8],
    block: u64,
    expected: MetaType,
) -> core::result::Result<(), Corruption> {
    let header = MetaHeader::decode(buf);
    if header.magic != GFS2_MAGIC {
        return Err(Corruption::BadMagic {
            block,
            found: header.magic,
        });
    }
    if header.meta_type != expected as u32 {
        return Err(Corruption::WrongMetaType {
            block,
            expected,
            found: header.meta_type,
        });
    }
    Ok(())
}
