//! What can go wrong reading a gfs2 filesystem.
//!
//! [`Error`] is what every operation returns: a failed device read, a request that makes no
//! sense for the file it names (a lookup in a regular file), or a [`Corruption`]: something
//! on the disk that breaks the format's rules. Every corruption names the block (or inode)
//! where it was found, so a person can look at it with `gfs2_edit`.

/// An error of the gfs2 reader; `E` is the block device's error.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The block device failed to read.
    #[error("reading block {block} failed: {source}")]
    Device {
        /// First filesystem block of the failed read (a device block for the superblock).
        block: u64,
        /// The device's error.
        #[source]
        source: E,
    },
    /// The disk contents break the format's rules.
    #[error("corrupt filesystem: {0}")]
    Corrupt(#[from] Corruption),
    /// The device's block size is not a power of two from 512 bytes up to the filesystem's
    /// block size.
    #[error(
        "device blocks of {0} bytes: gfs2 needs a power of two from 512 bytes up to its block size"
    )]
    DeviceBlockSize(usize),
    /// No directory entry has that name.
    #[error("no such file or directory")]
    NotFound,
    /// A path component, or the inode asked to list, is not a directory.
    #[error("not a directory")]
    NotADirectory,
    /// A directory was asked to be read as a file.
    #[error("is a directory")]
    IsADirectory,
    /// Only regular files can be opened for reading.
    #[error("not a regular file")]
    NotARegularFile,
    /// Only symbolic links have a target.
    #[error("not a symbolic link")]
    NotASymlink,
    /// A name is longer than 255 bytes, so no entry can have it.
    #[error("file name too long")]
    NameTooLong,
    /// Resolving a path followed more than [`MAX_SYMLINKS`](super::MAX_SYMLINKS) symlinks.
    #[error("too many levels of symbolic links")]
    TooManySymlinks,
    /// A block was asked of an inode whose data is stuffed in its dinode block.
    #[error("inode {0} is stuffed: its data lives in the dinode block")]
    Stuffed(u64),
    /// A seek to before the start of the file, or past `u64::MAX`.
    #[error("seek to an invalid position")]
    InvalidSeek,
}

impl<E: core::error::Error + 'static> embedded_io::Error for Error<E> {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind;

        match self {
            Self::Device { .. } => ErrorKind::Other,
            Self::Corrupt(_) => ErrorKind::InvalidData,
            Self::DeviceBlockSize(_) | Self::Stuffed(_) => ErrorKind::Unsupported,
            Self::NotFound => ErrorKind::NotFound,
            Self::NotADirectory
            | Self::IsADirectory
            | Self::NotARegularFile
            | Self::NotASymlink
            | Self::NameTooLong
            | Self::TooManySymlinks
            | Self::InvalidSeek => ErrorKind::InvalidInput,
        }
    }
}

/// A rule of the on-disk format that the disk breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Corruption {
    /// A metadata block lacks the gfs2 magic number.
    #[error("block {block}: magic {found:#010x} is not gfs2's 0x01161970")]
    BadMagic {
        /// The block.
        block: u64,
        /// What it holds instead.
        found: u32,
    },
    /// A metadata block has the wrong type for where it was reached from.
    #[error("block {block}: metadata type {found}, expected {expected:?}")]
    WrongMetaType {
        /// The block.
        block: u64,
        /// The type its referrer implies.
        expected: super::MetaType,
        /// The type it has.
        found: u32,
    },
    /// `sb_fs_format` is not 1801 or 1802.
    #[error("filesystem format {0} is not 1801 or 1802")]
    UnsupportedFormat(u32),
    /// `sb_multihost_format` is not 1900.
    #[error("multihost format {0} is not 1900")]
    UnsupportedMultihostFormat(u32),
    /// The block size is not a power of two from 512 to 4096, or disagrees with its shift.
    #[error("block size {bsize} with shift {shift} is not a power of two from 512 to 4096")]
    BadBlockSize {
        /// `sb_bsize`.
        bsize: u32,
        /// `sb_bsize_shift`.
        shift: u32,
    },
    /// The device is too small to hold the superblock.
    #[error("the device ({bytes} bytes) is too small to hold a superblock")]
    DeviceTooSmall {
        /// Bytes on the device.
        bytes: u64,
    },
    /// A block pointer is 0 or lies past the end of the device.
    #[error("block {block} points to block {pointer}, past the device end ({limit} blocks)")]
    BlockPastEnd {
        /// Where the pointer was found; for an inode read by its number, the number.
        block: u64,
        /// The pointer.
        pointer: u64,
        /// Filesystem blocks on the device.
        limit: u64,
    },
    /// A block pointer lies outside the data area of every resource group.
    #[error("block {block} points to block {pointer}, outside every resource group")]
    BlockOutsideRgrps {
        /// Where the pointer was found; for an inode read by its number, the number.
        block: u64,
        /// The pointer.
        pointer: u64,
    },
    /// A dinode records another address than its own.
    #[error("dinode at block {block} records address {recorded}")]
    DinodeAddressMismatch {
        /// The block read.
        block: u64,
        /// `di_num.no_addr`.
        recorded: u64,
    },
    /// A directory entry or the superblock names a dinode with another formal number.
    #[error("inode {inode}: formal inode number {found}, but {expected} was expected")]
    FormalInoMismatch {
        /// The dinode.
        inode: u64,
        /// The number the referrer recorded.
        expected: u64,
        /// The number the dinode holds.
        found: u64,
    },
    /// A directory entry's type disagrees with the dinode it names.
    #[error("inode {inode}: directory entry type {dirent_type} disagrees with mode {mode:#o}")]
    DirentTypeMismatch {
        /// The dinode.
        inode: u64,
        /// `de_type`.
        dirent_type: u16,
        /// `di_mode`.
        mode: u32,
    },
    /// The mode's file type is none of the seven Unix types.
    #[error("inode {inode}: mode {mode:#o} has no valid file type")]
    BadMode {
        /// The dinode.
        inode: u64,
        /// `di_mode`.
        mode: u32,
    },
    /// The metadata tree is higher than the block size allows.
    #[error("inode {inode}: tree height {height} exceeds {max}, the limit for this block size")]
    HeightTooLarge {
        /// The dinode.
        inode: u64,
        /// `di_height`.
        height: u16,
        /// The largest height allowed.
        max: u16,
    },
    /// A directory's hash table is deeper than 17.
    #[error("inode {inode}: directory depth {depth} exceeds 17")]
    DepthTooLarge {
        /// The dinode.
        inode: u64,
        /// `di_depth`.
        depth: u16,
    },
    /// The size exceeds what the dinode's metadata tree (or stuffed area) can hold.
    #[error("inode {inode}: size {size} is beyond the reach of a height-{height} tree")]
    SizeBeyondTree {
        /// The dinode.
        inode: u64,
        /// `di_size`.
        size: u64,
        /// `di_height`.
        height: u16,
    },
    /// A block appears twice in one metadata tree.
    #[error("inode {inode}: block {block} appears twice in its metadata tree")]
    RepeatedBlock {
        /// The dinode.
        inode: u64,
        /// The block.
        block: u64,
    },
    /// A pointer leads back to a block on its own path from the dinode.
    #[error("inode {inode}: block {block} points back into its own metadata path")]
    TreeCycle {
        /// The dinode.
        inode: u64,
        /// The block pointed to.
        block: u64,
    },
    /// A linear directory is not stuffed.
    #[error("inode {inode}: linear directory with tree height {height}")]
    UnstuffedLinearDir {
        /// The dinode.
        inode: u64,
        /// `di_height`.
        height: u16,
    },
    /// An exhash directory's size is not `8 << depth`.
    #[error("inode {inode}: hash table of {size} bytes at depth {depth}, not 8 << depth")]
    HashTableSize {
        /// The dinode.
        inode: u64,
        /// `di_size`.
        size: u64,
        /// `di_depth`.
        depth: u16,
    },
    /// A hash-table slot is 0, or its block is a hole.
    #[error("inode {inode}: hash table slot {slot} has no leaf")]
    HashTableHole {
        /// The dinode.
        inode: u64,
        /// The slot.
        slot: u32,
    },
    /// The slots of a leaf do not form one aligned run of `2^(di_depth - lf_depth)`.
    #[error("inode {inode}: hash table slot {slot} breaks the run of leaf {leaf}")]
    BadLeafRun {
        /// The dinode.
        inode: u64,
        /// The slot.
        slot: u32,
        /// The leaf of the run.
        leaf: u64,
    },
    /// A leaf is deeper than its directory.
    #[error("leaf {leaf}: depth {leaf_depth} exceeds the directory's depth {dir_depth}")]
    LeafDepth {
        /// The leaf block.
        leaf: u64,
        /// `lf_depth`.
        leaf_depth: u16,
        /// `di_depth`.
        dir_depth: u16,
    },
    /// A leaf chain comes back to a leaf already read.
    #[error("inode {inode}: leaf chain loops back to block {leaf}")]
    LeafChainLoop {
        /// The directory.
        inode: u64,
        /// The leaf reached twice.
        leaf: u64,
    },
    /// A directory entry breaks the packing rules of its block.
    #[error("block {block}, offset {offset}: {problem}")]
    BadDirent {
        /// The dinode or leaf block.
        block: u64,
        /// Byte offset of the entry in the block.
        offset: u32,
        /// What is wrong.
        problem: DirentProblem,
    },
    /// A directory entry sits in a leaf whose hash range does not contain its hash.
    #[error("leaf {leaf}: entry with hash {hash:#010x} lies outside the leaf's hash range")]
    DirentOutsideLeaf {
        /// The leaf block.
        leaf: u64,
        /// `de_hash`.
        hash: u32,
    },
    /// `lf_entries` or `di_entries` disagrees with the entries found.
    #[error("block {block}: {recorded} entries recorded, {counted} found")]
    EntryCount {
        /// The leaf block, or the dinode of the directory.
        block: u64,
        /// The count on disk.
        recorded: u32,
        /// The count found.
        counted: u32,
    },
    /// A symlink target is empty, too long or not stuffed.
    #[error("inode {inode}: symlink target of {size} bytes at height {height}")]
    BadSymlink {
        /// The dinode.
        inode: u64,
        /// `di_size`.
        size: u64,
        /// `di_height`.
        height: u16,
    },
    /// The master directory lacks a file the reader needs.
    #[error("the master directory has no usable `rindex` file")]
    MissingRindex,
    /// The resource-group index breaks a rule.
    #[error("rindex entry {index}: {problem}")]
    BadRindex {
        /// The entry.
        index: u32,
        /// What is wrong.
        problem: RindexProblem,
    },
    /// A resource-group header disagrees with its rindex entry or fails its checksum.
    #[error("rgrp header at block {block}: {problem}")]
    BadRgrp {
        /// The rgrp header block.
        block: u64,
        /// What is wrong.
        problem: RgrpProblem,
    },
}

/// How a directory entry breaks the packing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DirentProblem {
    /// The 40-byte entry header runs past the end of the block.
    #[error("entry header runs past the block end")]
    HeaderPastEnd,
    /// `de_rec_len` is 0.
    #[error("record length 0")]
    RecLenZero,
    /// `de_rec_len` is smaller than the entry header.
    #[error("record length {0} is shorter than an entry header")]
    RecLenTooShort(u16),
    /// `de_rec_len` is not a multiple of 8.
    #[error("record length {0} is not a multiple of 8")]
    RecLenUnaligned(u16),
    /// `de_rec_len` runs past the end of the block.
    #[error("record length {0} runs past the block end")]
    RecLenPastEnd(u16),
    /// `de_name_len` is longer than the record.
    #[error("name length {name_len} does not fit record length {rec_len}")]
    NameLenPastRecLen {
        /// `de_name_len`.
        name_len: u16,
        /// `de_rec_len`.
        rec_len: u16,
    },
    /// `de_hash` is not the CRC-32 of the name.
    #[error("stored hash {0:#010x} is not the hash of the name")]
    HashMismatch(u32),
    /// `de_name_len` is 0 or above 255 in a live entry.
    #[error("name length {0} is not from 1 to 255")]
    BadNameLen(u16),
}

/// How the resource-group index breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RindexProblem {
    /// The rindex file's size is 0 or not a multiple of 96 bytes.
    #[error("rindex size {0} is not a positive multiple of 96")]
    Size(u64),
    /// More entries than the device has blocks for.
    #[error("more resource groups than the device can hold")]
    TooMany,
    /// The rgrp starts at or before the superblock.
    #[error("rgrp header at block {0} lies at or before the superblock")]
    BeforeSuperblock(u64),
    /// The rgrp does not start after the previous one ends.
    #[error("rgrp at block {0} overlaps or precedes the previous one")]
    Overlap(u64),
    /// The rgrp has no header block.
    #[error("length 0")]
    NoHeader,
    /// `ri_data0` is not `ri_addr + ri_length`.
    #[error("data0 {data0} is not addr {addr} + length {length}")]
    Data0 {
        /// `ri_data0`.
        data0: u64,
        /// `ri_addr`.
        addr: u64,
        /// `ri_length`.
        length: u32,
    },
    /// `ri_bitbytes` is not `ri_data / 4`, or `ri_data` is not a multiple of 4.
    #[error("{data} data blocks do not match {bitbytes} bitmap bytes")]
    Bitbytes {
        /// `ri_data`.
        data: u32,
        /// `ri_bitbytes`.
        bitbytes: u32,
    },
    /// The bitmap does not fill exactly `ri_length` blocks.
    #[error("{bitbytes} bitmap bytes do not fit exactly in {length} blocks")]
    BitmapBlocks {
        /// `ri_bitbytes`.
        bitbytes: u32,
        /// `ri_length`.
        length: u32,
    },
    /// The rgrp's data runs past the end of the device.
    #[error("data blocks end at {end}, past the device end ({limit} blocks)")]
    PastEnd {
        /// First block after the data.
        end: u64,
        /// Filesystem blocks on the device.
        limit: u64,
    },
}

/// How an rgrp header breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RgrpProblem {
    /// `rg_crc` is nonzero and not the header's CRC-32.
    #[error("checksum {recorded:#010x}, computed {computed:#010x}")]
    Checksum {
        /// `rg_crc`.
        recorded: u32,
        /// The CRC-32 of the header.
        computed: u32,
    },
    /// `rg_data0`, `rg_data` or `rg_bitbytes` disagrees with the rindex.
    #[error("its copy of the rindex entry disagrees with the rindex")]
    RindexMismatch,
    /// `rg_free + rg_dinodes` exceeds the data blocks.
    #[error("{free} free and {dinodes} dinode blocks exceed {data} data blocks")]
    Counts {
        /// `rg_free`.
        free: u32,
        /// `rg_dinodes`.
        dinodes: u32,
        /// `rg_data`.
        data: u32,
    },
}
