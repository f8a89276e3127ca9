//! The on-disk structures of gfs2, decoded from big-endian bytes.
//!
//! Every structure is decoded field by field from a byte slice with explicit big-endian
//! loads; nothing is transmuted. The decoders here check only that the slice is long enough
//! (callers pass whole blocks, which always are); what the values mean and whether they are
//! sane is decided by the modules that use them. Offsets and sizes follow Linux's
//! `include/uapi/linux/gfs2_ondisk.h`.
//!
//! The `encode` methods are the inverse, for the host-side image writer (`runner gfs2 mkfs`):
//! each writes the fields its decoder reads, and zeroes (or sets to the conventional value)
//! the padding and the fields the decoder skips, so one definition of each offset serves both.

/// Magic number at the start of every metadata block.
pub const GFS2_MAGIC: u32 = 0x0116_1970;

/// The superblock starts at this byte offset, whatever the block size.
pub const SUPERBLOCK_OFFSET: u64 = 65536;

/// Smallest block size gfs2 supports.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// Largest block size this reader supports (Linux: the page size).
pub const MAX_BLOCK_SIZE: u32 = 4096;

/// Height limit of a metadata tree that Linux enforces whatever the block size.
pub const MAX_META_HEIGHT: u16 = 10;

/// Depth limit of an exhash directory's hash table.
pub const MAX_DIR_DEPTH: u16 = 17;

/// Longest file name.
pub const MAX_NAME_LEN: usize = 255;

/// Size of `struct gfs2_meta_header`.
pub const META_HEADER_SIZE: usize = 24;

/// Size of `struct gfs2_dinode`; stuffed data and level-0 pointers follow it.
pub const DINODE_SIZE: usize = 232;

/// Size of `struct gfs2_leaf`; dirents follow it.
pub const LEAF_HEADER_SIZE: usize = 104;

/// Size of `struct gfs2_dirent` without the name.
pub const DIRENT_HEADER_SIZE: usize = 40;

/// Size of `struct gfs2_rindex`.
pub const RINDEX_ENTRY_SIZE: usize = 96;

/// Size of `struct gfs2_rgrp`; the bitmap follows it in the first block of an rgrp.
pub const RGRP_HEADER_SIZE: usize = 128;

/// Offset of `rg_crc` in `struct gfs2_rgrp`.
const RGRP_CRC_OFFSET: usize = 64;

/// The filesystem formats this reader accepts (`sb_fs_format`).
pub const FS_FORMATS: core::ops::RangeInclusive<u32> = 1801..=1802;

/// The only multihost format Linux accepts (`sb_multihost_format`).
pub const MULTIHOST_FORMAT: u32 = 1900;

/// Dinode flag: journaled data (set on every directory).
pub const DIF_JDATA: u32 = 0x0000_0001;
/// Dinode flag: the directory is hashed (exhash).
pub const DIF_EXHASH: u32 = 0x0000_0002;
/// Dinode flag: a system (metafs) inode.
pub const DIF_SYSTEM: u32 = 0x0000_0200;

/// The type of a metadata block (`mh_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum MetaType {
    /// Superblock.
    Superblock = 1,
    /// Resource-group header: the first block of an rgrp.
    Rgrp = 2,
    /// Further rgrp bitmap blocks.
    RgrpBitmap = 3,
    /// Dinode.
    Dinode = 4,
    /// Indirect block of a metadata tree.
    Indirect = 5,
    /// Directory leaf.
    Leaf = 6,
    /// Journaled-data block: holds a directory's hash table.
    JournaledData = 7,
}

/// Reads a big-endian `u16` at `offset`.
pub fn be16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

/// Reads a big-endian `u32` at `offset`.
pub fn be32(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(raw)
}

/// Reads a big-endian `u64` at `offset`.
pub fn be64(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_be_bytes(raw)
}

/// Writes a big-endian `u16` at `offset`.
pub fn put16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u32` at `offset`.
pub fn put32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u64` at `offset`.
pub fn put64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_be_bytes());
}

/// `struct gfs2_meta_header`: the first 24 bytes of every metadata block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaHeader {
    /// `mh_magic`: [`GFS2_MAGIC`] in a metadata block.
    pub magic: u32,
    /// `mh_type`: a [`MetaType`] value.
    pub meta_type: u32,
    /// `mh_format`: type × 100 by convention; nobody checks it.
    pub format: u32,
}

impl MetaHeader {
    /// Decodes the header at the start of `block`.
    pub fn decode(block: &[u8]) -> Self {
        Self {
            magic: be32(block, 0),
            meta_type: be32(block, 4),
            format: be32(block, 16),
        }
    }

    /// Writes the header of a block of type `meta_type` at the start of `block`, with the
    /// conventional format (type × 100) and zero padding.
    pub fn encode(meta_type: MetaType, block: &mut [u8]) {
        block[..META_HEADER_SIZE].fill(0);
        put32(block, 0, GFS2_MAGIC);
        put32(block, 4, meta_type as u32);
        put32(block, 16, meta_type.format());
    }
}

impl MetaType {
    /// The conventional `mh_format` of a block of this type: the type × 100.
    pub fn format(self) -> u32 {
        self as u32 * 100
    }
}

/// `struct gfs2_inum`: how directory entries and the superblock name a dinode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Inum {
    /// `no_formal_ino`: a second identifier that must match the dinode's.
    pub formal_ino: u64,
    /// `no_addr`: the block number of the dinode, also the inode number.
    pub addr: u64,
}

impl Inum {
    fn decode(bytes: &[u8], offset: usize) -> Self {
        Self {
            formal_ino: be64(bytes, offset),
            addr: be64(bytes, offset + 8),
        }
    }

    fn encode(&self, bytes: &mut [u8], offset: usize) {
        put64(bytes, offset, self.formal_ino);
        put64(bytes, offset + 8, self.addr);
    }
}

/// `struct gfs2_sb`, undecoded values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSuperblock {
    /// The metadata header (type 1).
    pub header: MetaHeader,
    /// `sb_fs_format`: 1801 or 1802.
    pub fs_format: u32,
    /// `sb_multihost_format`: 1900.
    pub multihost_format: u32,
    /// `sb_bsize`: block size in bytes.
    pub bsize: u32,
    /// `sb_bsize_shift`: log2 of the block size.
    pub bsize_shift: u32,
    /// `sb_master_dir`: the master (system) directory.
    pub master_dir: Inum,
    /// `sb_root_dir`: the root directory.
    pub root_dir: Inum,
    /// `sb_lockproto`, NUL-padded.
    pub lock_protocol: [u8; 64],
    /// `sb_locktable`, NUL-padded.
    pub lock_table: [u8; 64],
    /// `sb_uuid`.
    pub uuid: [u8; 16],
}

impl RawSuperblock {
    /// Bytes the superblock occupies.
    pub const SIZE: usize = 272;

    /// Decodes a superblock from at least [`Self::SIZE`] bytes.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut lock_protocol = [0; 64];
        lock_protocol.copy_from_slice(&bytes[96..160]);
        let mut lock_table = [0; 64];
        lock_table.copy_from_slice(&bytes[160..224]);
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&bytes[256..272]);

        Self {
            header: MetaHeader::decode(bytes),
            fs_format: be32(bytes, 24),
            multihost_format: be32(bytes, 28),
            bsize: be32(bytes, 36),
            bsize_shift: be32(bytes, 40),
            master_dir: Inum::decode(bytes, 48),
            root_dir: Inum::decode(bytes, 80),
            lock_protocol,
            lock_table,
            uuid,
        }
    }

    /// Writes the superblock into the first [`Self::SIZE`] bytes of `bytes` (the header's
    /// magic, type and format come from [`MetaHeader::encode`], not from `self.header`).
    pub fn encode(&self, bytes: &mut [u8]) {
        bytes[..Self::SIZE].fill(0);
        MetaHeader::encode(MetaType::Superblock, bytes);
        put32(bytes, 24, self.fs_format);
        put32(bytes, 28, self.multihost_format);
        put32(bytes, 36, self.bsize);
        put32(bytes, 40, self.bsize_shift);
        self.master_dir.encode(bytes, 48);
        self.root_dir.encode(bytes, 80);
        bytes[96..160].copy_from_slice(&self.lock_protocol);
        bytes[160..224].copy_from_slice(&self.lock_table);
        bytes[256..272].copy_from_slice(&self.uuid);
    }
}

/// A time stamp of a dinode: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timestamp {
    /// Seconds since 1970-01-01 00:00 UTC.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

/// `struct gfs2_dinode`: every field, undecoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dinode {
    /// `mh_magic` of the header.
    pub magic: u32,
    /// `mh_type` of the header (4 for a dinode).
    pub meta_type: u32,
    /// `mh_format` of the header.
    pub format: u32,
    /// `di_num`: formal inode number and own block address.
    pub num: Inum,
    /// `di_mode`: the Unix mode, file type included.
    pub mode: u32,
    /// `di_uid`.
    pub uid: u32,
    /// `di_gid`.
    pub gid: u32,
    /// `di_nlink`.
    pub nlink: u32,
    /// `di_size`: bytes.
    pub size: u64,
    /// `di_blocks`: filesystem blocks owned, the dinode included.
    pub blocks: u64,
    /// `di_atime` with `di_atime_nsec`.
    pub atime: Timestamp,
    /// `di_mtime` with `di_mtime_nsec`.
    pub mtime: Timestamp,
    /// `di_ctime` with `di_ctime_nsec`.
    pub ctime: Timestamp,
    /// `di_major`: device major number (device files).
    pub major: u32,
    /// `di_minor`: device minor number (device files).
    pub minor: u32,
    /// `di_goal_meta`: allocation hint for metadata.
    pub goal_meta: u64,
    /// `di_goal_data`: allocation hint for data.
    pub goal_data: u64,
    /// `di_generation`: NFS generation.
    pub generation: u64,
    /// `di_flags`: `GFS2_DIF_*`.
    pub flags: u32,
    /// `di_payload_format`: 1200 on linear directories, else 0 (or 1100/1500 on system files).
    pub payload_format: u32,
    /// `di_height`: metadata tree height, 0 when stuffed.
    pub height: u16,
    /// `di_depth`: log2 of the hash-table slots of an exhash directory.
    pub depth: u16,
    /// `di_entries`: live directory entries, `.` and `..` included.
    pub entries: u32,
    /// `di_eattr`: block of the extended attributes, 0 for none.
    pub eattr: u64,
}

impl Dinode {
    /// Decodes a dinode from at least [`DINODE_SIZE`] bytes.
    pub fn decode(bytes: &[u8]) -> Self {
        let header = MetaHeader::decode(bytes);
        let time = |seconds, nanoseconds| Timestamp {
            seconds: be64(bytes, seconds) as i64,
            nanoseconds: be32(bytes, nanoseconds),
        };

        Self {
            magic: header.magic,
            meta_type: header.meta_type,
            format: header.format,
            num: Inum::decode(bytes, 24),
            mode: be32(bytes, 40),
            uid: be32(bytes, 44),
            gid: be32(bytes, 48),
            nlink: be32(bytes, 52),
            size: be64(bytes, 56),
            blocks: be64(bytes, 64),
            atime: time(72, 176),
            mtime: time(80, 180),
            ctime: time(88, 184),
            major: be32(bytes, 96),
            minor: be32(bytes, 100),
            goal_meta: be64(bytes, 104),
            goal_data: be64(bytes, 112),
            generation: be64(bytes, 120),
            flags: be32(bytes, 128),
            payload_format: be32(bytes, 132),
            height: be16(bytes, 138),
            depth: be16(bytes, 146),
            entries: be32(bytes, 148),
            eattr: be64(bytes, 168),
        }
    }

    /// Writes the dinode into the first [`DINODE_SIZE`] bytes of `bytes`, padding zeroed.
    /// The header gets [`GFS2_MAGIC`], type 4 and format 400 whatever `self` holds.
    pub fn encode(&self, bytes: &mut [u8]) {
        bytes[..DINODE_SIZE].fill(0);
        MetaHeader::encode(MetaType::Dinode, bytes);
        self.num.encode(bytes, 24);
        put32(bytes, 40, self.mode);
        put32(bytes, 44, self.uid);
        put32(bytes, 48, self.gid);
        put32(bytes, 52, self.nlink);
        put64(bytes, 56, self.size);
        put64(bytes, 64, self.blocks);
        for (time, seconds, nanoseconds) in [
            (self.atime, 72, 176),
            (self.mtime, 80, 180),
            (self.ctime, 88, 184),
        ] {
            put64(bytes, seconds, time.seconds as u64);
            put32(bytes, nanoseconds, time.nanoseconds);
        }
        put32(bytes, 96, self.major);
        put32(bytes, 100, self.minor);
        put64(bytes, 104, self.goal_meta);
        put64(bytes, 112, self.goal_data);
        put64(bytes, 120, self.generation);
        put32(bytes, 128, self.flags);
        put32(bytes, 132, self.payload_format);
        put16(bytes, 138, self.height);
        put16(bytes, 146, self.depth);
        put32(bytes, 148, self.entries);
        put64(bytes, 168, self.eattr);
    }
}

/// `struct gfs2_dirent` without the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDirent {
    /// `de_inum`: the dinode the entry names; a zero field marks a sentinel.
    pub inum: Inum,
    /// `de_hash`: CRC-32 of the name.
    pub hash: u32,
    /// `de_rec_len`: bytes from this entry to the next.
    pub rec_len: u16,
    /// `de_name_len`: bytes of the name that follows the header.
    pub name_len: u16,
    /// `de_type`: the `DT_*` file type.
    pub file_type: u16,
}

impl RawDirent {
    /// Decodes the dirent header at `offset`; `offset + 40` must lie within `bytes`.
    pub fn decode(bytes: &[u8], offset: usize) -> Self {
        Self {
            inum: Inum::decode(bytes, offset),
            hash: be32(bytes, offset + 16),
            rec_len: be16(bytes, offset + 20),
            name_len: be16(bytes, offset + 22),
            file_type: be16(bytes, offset + 24),
        }
    }

    /// Bytes an entry with a name of `name_len` bytes needs (`GFS2_DIRENT_SIZE`): the header
    /// and the name, rounded up to 8.
    pub const fn size_for(name_len: usize) -> usize {
        (DIRENT_HEADER_SIZE + name_len + 7) & !7
    }

    /// Writes the entry's header at `offset` and `name` after it; the padding and the rest of
    /// the record are zeroed. `self.name_len` must be `name.len()`, and `rec_len` must cover
    /// both and stay within `bytes`.
    pub fn encode(&self, bytes: &mut [u8], offset: usize, name: &[u8]) {
        let record = &mut bytes[offset..offset + usize::from(self.rec_len)];
        record.fill(0);
        self.inum.encode(record, 0);
        put32(record, 16, self.hash);
        put16(record, 20, self.rec_len);
        put16(record, 22, self.name_len);
        put16(record, 24, self.file_type);
        record[DIRENT_HEADER_SIZE..DIRENT_HEADER_SIZE + name.len()].copy_from_slice(name);
    }

    /// Whether this is a sentinel (a deleted first entry) rather than a live entry.
    pub fn is_sentinel(&self) -> bool {
        self.inum.addr == 0 || self.inum.formal_ino == 0
    }
}

/// `struct gfs2_leaf`: the header of a directory leaf block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLeaf {
    /// `lf_depth`: the leaf covers `2^(di_depth - lf_depth)` hash-table slots.
    pub depth: u16,
    /// `lf_entries`: live entries in this block.
    pub entries: u16,
    /// `lf_next`: next leaf of the chain, 0 at the end.
    pub next: u64,
}

impl RawLeaf {
    /// Decodes the leaf header of a leaf block.
    pub fn decode(block: &[u8]) -> Self {
        Self {
            depth: be16(block, 24),
            entries: be16(block, 26),
            next: be64(block, 32),
        }
    }

    /// Writes the header and leaf header of a leaf block owned by the directory at
    /// `owner`; `distance` is 1 for a leaf the hash table names, 2, 3, ... along its chain.
    pub fn encode(&self, block: &mut [u8], owner: u64, distance: u32) {
        block[..LEAF_HEADER_SIZE].fill(0);
        MetaHeader::encode(MetaType::Leaf, block);
        put16(block, 24, self.depth);
        put16(block, 26, self.entries);
        put32(block, 28, DIRENT_FORMAT);
        put64(block, 32, self.next);
        put64(block, 40, owner);
        put32(block, 48, distance);
    }
}

/// `lf_dirent_format` and the `di_payload_format` of a linear directory.
pub const DIRENT_FORMAT: u32 = 1200;

/// `struct gfs2_rindex`: where one resource group lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RindexEntry {
    /// `ri_addr`: block of the rgrp header.
    pub addr: u64,
    /// `ri_length`: header and bitmap blocks.
    pub length: u32,
    /// `ri_data0`: first data block.
    pub data0: u64,
    /// `ri_data`: number of data blocks.
    pub data: u32,
    /// `ri_bitbytes`: bytes of bitmap (4 blocks per byte).
    pub bitbytes: u32,
}

impl RindexEntry {
    /// Decodes a rindex entry from at least [`RINDEX_ENTRY_SIZE`] bytes.
    pub fn decode(bytes: &[u8]) -> Self {
        Self {
            addr: be64(bytes, 0),
            length: be32(bytes, 8),
            data0: be64(bytes, 16),
            data: be32(bytes, 24),
            bitbytes: be32(bytes, 28),
        }
    }

    /// Writes the entry into the first [`RINDEX_ENTRY_SIZE`] bytes of `bytes`.
    pub fn encode(&self, bytes: &mut [u8]) {
        bytes[..RINDEX_ENTRY_SIZE].fill(0);
        put64(bytes, 0, self.addr);
        put32(bytes, 8, self.length);
        put64(bytes, 16, self.data0);
        put32(bytes, 24, self.data);
        put32(bytes, 28, self.bitbytes);
    }
}

/// `struct gfs2_rgrp`: the header of a resource group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RgrpHeader {
    /// `rg_flags`: `GFS2_RGF_*`.
    pub flags: u32,
    /// `rg_free`: data blocks in state FREE.
    pub free: u32,
    /// `rg_dinodes`: data blocks in state DINODE.
    pub dinodes: u32,
    /// `rg_skip`: blocks to the next rgrp header, 0 in the last one.
    pub skip: u32,
    /// `rg_igeneration`: generation counter for new inodes.
    pub igeneration: u64,
    /// `rg_data0`: copy of `ri_data0`.
    pub data0: u64,
    /// `rg_data`: copy of `ri_data`.
    pub data: u32,
    /// `rg_bitbytes`: copy of `ri_bitbytes`.
    pub bitbytes: u32,
    /// `rg_crc`: CRC-32 of the header with this field zeroed; 0 means unchecked.
    pub crc: u32,
}

impl RgrpHeader {
    /// Decodes an rgrp header from the first [`RGRP_HEADER_SIZE`] bytes of an rgrp block.
    pub fn decode(block: &[u8]) -> Self {
        Self {
            flags: be32(block, 24),
            free: be32(block, 28),
            dinodes: be32(block, 32),
            skip: be32(block, 36),
            igeneration: be64(block, 40),
            data0: be64(block, 48),
            data: be32(block, 56),
            bitbytes: be32(block, 60),
            crc: be32(block, RGRP_CRC_OFFSET),
        }
    }

    /// Writes the header into the first [`RGRP_HEADER_SIZE`] bytes of `block` and stores
    /// the CRC it computes in `rg_crc` (ignoring `self.crc`).
    pub fn encode(&self, block: &mut [u8]) {
        block[..RGRP_HEADER_SIZE].fill(0);
        MetaHeader::encode(MetaType::Rgrp, block);
        put32(block, 24, self.flags);
        put32(block, 28, self.free);
        put32(block, 32, self.dinodes);
        put32(block, 36, self.skip);
        put64(block, 40, self.igeneration);
        put64(block, 48, self.data0);
        put32(block, 56, self.data);
        put32(block, 60, self.bitbytes);
        let crc = Self::compute_crc(block);
        put32(block, RGRP_CRC_OFFSET, crc);
    }

    /// The CRC-32 that `rg_crc` should hold for the header at the start of `block`.
    pub fn compute_crc(block: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&block[..RGRP_CRC_OFFSET]);
        hasher.update(&[0; 4]);
        hasher.update(&block[RGRP_CRC_OFFSET + 4..RGRP_HEADER_SIZE]);
        hasher.finalize()
    }
}

/// The name hash of gfs2 directories (`gfs2_disk_hash`): the standard CRC-32 of the name.
pub fn name_hash(name: &[u8]) -> u32 {
    crc32fast::hash(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_matches_the_values_mkfs_stored() {
        let vectors: [(&[u8], u32); 13] = [
            (b"", 0x0000_0000),
            (b".", 0x0ED4_E242),
            (b"..", 0x9608_161C),
            (b"jindex", 0x5EFC_1D83),
            (b"per_node", 0x486E_EE32),
            (b"inum", 0x4468_11E9),
            (b"statfs", 0x1AEF_248E),
            (b"rindex", 0xB179_9D75),
            (b"quota", 0x6C1C_0FED),
            (b"journal0", 0xFC77_45EB),
            (b"hello", 0x3610_A686),
            (b"lost+found", 0x6AB4_7928),
            (b"123456789", 0xCBF4_3926),
        ];

        for (name, hash) in vectors {
            assert_eq!(name_hash(name), hash, "{:?}", core::str::from_utf8(name));
        }
    }

    fn rgrp_block(fields: [u64; 8]) -> [u8; RGRP_HEADER_SIZE] {
        let [
            flags,
            free,
            dinodes,
            skip,
            igeneration,
            data0,
            data,
            bitbytes,
        ] = fields;
        let mut block = [0; RGRP_HEADER_SIZE];
        block[..4].copy_from_slice(&GFS2_MAGIC.to_be_bytes());
        block[4..8].copy_from_slice(&2u32.to_be_bytes());
        block[16..20].copy_from_slice(&200u32.to_be_bytes());
        for (offset, value) in [(24, flags), (28, free), (32, dinodes), (36, skip)] {
            block[offset..offset + 4].copy_from_slice(&(value as u32).to_be_bytes());
        }
        block[40..48].copy_from_slice(&igeneration.to_be_bytes());
        block[48..56].copy_from_slice(&data0.to_be_bytes());
        block[56..60].copy_from_slice(&(data as u32).to_be_bytes());
        block[60..64].copy_from_slice(&(bitbytes as u32).to_be_bytes());
        block
    }

    #[test]
    fn rgrp_crc_matches_mkfs() {
        let first = rgrp_block([0, 14043, 9, 0, 0, 2075, 14308, 3577]);
        let second = rgrp_block([0, 0, 3, 2057, 0, 18, 2056, 514]);

        assert_eq!(RgrpHeader::compute_crc(&first), 0x16F7_CA2F);
        assert_eq!(RgrpHeader::compute_crc(&second), 0x2491_348D);
    }

    #[test]
    fn encoded_rgrp_header_carries_mkfs_crc() {
        let header = RgrpHeader {
            flags: 0,
            free: 14043,
            dinodes: 9,
            skip: 0,
            igeneration: 0,
            data0: 2075,
            data: 14308,
            bitbytes: 3577,
            crc: 0,
        };
        let mut block = [0xAA; RGRP_HEADER_SIZE];

        header.encode(&mut block);

        assert_eq!(RgrpHeader::decode(&block).crc, 0x16F7_CA2F);
        assert_eq!(RgrpHeader::decode(&block).free, 14043);
        assert_eq!(MetaHeader::decode(&block).format, 200);
    }

    #[test]
    fn encoded_structures_decode_to_themselves() {
        let mut bytes = [0u8; DINODE_SIZE];
        bytes[40..44].copy_from_slice(&0o100644u32.to_be_bytes());
        bytes[..4].copy_from_slice(&GFS2_MAGIC.to_be_bytes());
        bytes[4..8].copy_from_slice(&4u32.to_be_bytes());
        bytes[16..20].copy_from_slice(&400u32.to_be_bytes());
        let mut dinode = Dinode::decode(&bytes);
        dinode.num = Inum {
            formal_ino: 7,
            addr: 1234,
        };
        dinode.size = 1 << 40;
        dinode.mtime = Timestamp {
            seconds: -5,
            nanoseconds: 17,
        };
        dinode.height = 3;
        dinode.entries = 9;
        let mut encoded = [0xFF; DINODE_SIZE];
        dinode.encode(&mut encoded);
        assert_eq!(Dinode::decode(&encoded), dinode);

        let dirent = RawDirent {
            inum: Inum {
                formal_ino: 3,
                addr: 99,
            },
            hash: name_hash(b"hello"),
            rec_len: 56,
            name_len: 5,
            file_type: 8,
        };
        let mut block = [0xFF; 64];
        dirent.encode(&mut block, 8, b"hello");
        assert_eq!(RawDirent::decode(&block, 8), dirent);
        assert_eq!(&block[48..53], b"hello");
        assert_eq!(RawDirent::size_for(5), 48);
        assert_eq!(RawDirent::size_for(8), 48);
        assert_eq!(RawDirent::size_for(9), 56);

        let leaf = RawLeaf {
            depth: 2,
            entries: 4,
            next: 77,
        };
        let mut block = [0xFF; LEAF_HEADER_SIZE];
        leaf.encode(&mut block, 500, 1);
        assert_eq!(RawLeaf::decode(&block), leaf);
        assert_eq!(be64(&block, 40), 500);

        let entry = RindexEntry {
            addr: 17,
            length: 1,
            data0: 18,
            data: 2056,
            bitbytes: 514,
        };
        let mut bytes = [0xFF; RINDEX_ENTRY_SIZE];
        entry.encode(&mut bytes);
        assert_eq!(RindexEntry::decode(&bytes), entry);
        assert!(bytes[32..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn decodes_big_endian_fields() {
        let mut bytes = [0u8; DINODE_SIZE];
        bytes[40..44].copy_from_slice(&0o100644u32.to_be_bytes());
        bytes[56..64].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        bytes[138..140].copy_from_slice(&3u16.to_be_bytes());
        bytes[180..184].copy_from_slice(&999u32.to_be_bytes());

        let dinode = Dinode::decode(&bytes);

        assert_eq!(dinode.mode, 0o100644);
        assert_eq!(dinode.size, 0x0102_0304_0506_0708);
        assert_eq!(dinode.height, 3);
        assert_eq!(dinode.mtime.nanoseconds, 999);
    }
}
