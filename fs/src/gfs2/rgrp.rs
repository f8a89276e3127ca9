//! Resource groups (rgrps): where data may live, and how much of it is free.
//!
//! gfs2 splits the device into resource groups. Each starts with a header block and bitmap
//! blocks, then its data blocks; the bitmap holds two bits of allocation state per data
//! block. The master directory's `rindex` file lists the rgrps. The reader uses that list to
//! check every block pointer: metadata and data can only live in some rgrp's data blocks.
//! The headers and bitmaps give the free and used counts that `statfs` and `df` report.

use alloc::vec;
use alloc::vec::Vec;

use drivers::block::BlockDevice;

use super::ondisk::{META_HEADER_SIZE, RGRP_HEADER_SIZE, RINDEX_ENTRY_SIZE};
use super::{
    Corruption, FileType, Filesystem, Inode, MetaType, Result, RgrpHeader, RgrpProblem,
    RindexEntry, RindexProblem,
};

/// Data blocks of one or more rgrps counted by allocation state, from their bitmaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BitmapCounts {
    /// State 0: free.
    pub free: u64,
    /// State 1: data or metadata other than dinodes.
    pub used: u64,
    /// State 2: a dinode unlinked while still open.
    pub unlinked: u64,
    /// State 3: a dinode.
    pub dinodes: u64,
}

impl BitmapCounts {
    /// All data blocks counted.
    pub fn total(&self) -> u64 {
        self.free + self.used + self.unlinked + self.dinodes
    }

    fn add(&mut self, other: &Self) {
        self.free += other.free;
        self.used += other.used;
        self.unlinked += other.unlinked;
        self.dinodes += other.dinodes;
    }
}

/// Totals over every rgrp header, as `statfs` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Usage {
    /// Data blocks of all rgrps (`ri_data` summed).
    pub data_blocks: u64,
    /// Free data blocks (`rg_free` summed).
    pub free: u64,
    /// Dinodes (`rg_dinodes` summed).
    pub dinodes: u64,
}

impl Usage {
    /// Data blocks in use, dinodes included.
    pub fn used(&self) -> u64 {
        self.data_blocks - self.free
    }
}

impl<D: BlockDevice> Filesystem<D> {
    /// The resource groups, sorted by address.
    pub fn rgrps(&self) -> &[RindexEntry] {
        &self.rgrps
    }

    /// Whether `block` is a data block of some rgrp.
    pub(crate) fn in_rgrp_data(&self, block: u64) -> bool {
        let after = self.rgrps.partition_point(|rgrp| rgrp.data0 <= block);
        after > 0 && block < self.rgrps[after - 1].data0 + u64::from(self.rgrps[after - 1].data)
    }

    /// Reads and checks the rindex file of the master directory.
    pub(crate) fn read_rindex(&self, master: &Inode) -> Result<Vec<RindexEntry>, D::Error> {
        let rindex = match self.lookup_in(master, b"rindex") {
            Ok(inode) if inode.file_type() == FileType::Regular => inode,
            Ok(_) | Err(super::Error::NotFound) => return Err(Corruption::MissingRindex.into()),
            Err(other) => return Err(other),
        };
        let bad = |index, problem| Corruption::BadRindex { index, problem };
        let size = rindex.size();
        if size == 0 || !size.is_multiple_of(RINDEX_ENTRY_SIZE as u64) {
            return Err(bad(0, RindexProblem::Size(size)).into());
        }
        // Each rgrp takes at least a header block and a data block.
        if size / RINDEX_ENTRY_SIZE as u64 > self.block_count / 2 {
            return Err(bad(0, RindexProblem::TooMany).into());
        }
        self.verify_tree(&rindex)?;

        let entries_per_chunk = (self.geometry.bsize as usize / RINDEX_ENTRY_SIZE).max(1);
        let mut chunk = vec![0; entries_per_chunk * RINDEX_ENTRY_SIZE];
        let mut rgrps: Vec<RindexEntry> = Vec::new();
        let mut offset = 0;
        while offset < size {
            let read = self.read_at(&rindex, offset, &mut chunk)?;
            for bytes in chunk[..read].chunks_exact(RINDEX_ENTRY_SIZE) {
                let rgrp = RindexEntry::decode(bytes);
                let index = rgrps.len() as u32;
                self.check_rindex_entry(&rgrp, rgrps.last())
                    .map_err(|problem| bad(index, problem))?;
                rgrps.push(rgrp);
            }
            offset += read as u64;
        }
        Ok(rgrps)
    }

    /// Checks one rindex entry, given the one before it.
    fn check_rindex_entry(
        &self,
        rgrp: &RindexEntry,
        previous: Option<&RindexEntry>,
    ) -> core::result::Result<(), RindexProblem> {
        if rgrp.addr <= self.superblock.block() {
            return Err(RindexProblem::BeforeSuperblock(rgrp.addr));
        }
        if let Some(previous) = previous
            && rgrp.addr < previous.data0 + u64::from(previous.data)
        {
            return Err(RindexProblem::Overlap(rgrp.addr));
        }
        if rgrp.length == 0 {
            return Err(RindexProblem::NoHeader);
        }
        if rgrp.addr.checked_add(rgrp.length.into()) != Some(rgrp.data0) {
            let (data0, addr, length) = (rgrp.data0, rgrp.addr, rgrp.length);
            return Err(RindexProblem::Data0 {
                data0,
                addr,
                length,
            });
        }
        if !rgrp.data.is_multiple_of(4) || rgrp.bitbytes != rgrp.data / 4 {
            return Err(RindexProblem::Bitbytes {
                data: rgrp.data,
                bitbytes: rgrp.bitbytes,
            });
        }

        // The bitmap fills the header block's tail, then whole bitmap blocks; the last one
        // must hold some of it.
        let bitmap_blocks_needed = self.bitmap_blocks(rgrp.bitbytes);
        if bitmap_blocks_needed != u64::from(rgrp.length) {
            let (bitbytes, length) = (rgrp.bitbytes, rgrp.length);
            return Err(RindexProblem::BitmapBlocks { bitbytes, length });
        }

        let end = rgrp.data0.saturating_add(rgrp.data.into());
        if end > self.block_count {
            return Err(RindexProblem::PastEnd {
                end,
                limit: self.block_count,
            });
        }
        Ok(())
    }

    /// Blocks a bitmap of `bitbytes` bytes takes: the header block, then bitmap blocks.
    fn bitmap_blocks(&self, bitbytes: u32) -> u64 {
        let bsize = u64::from(self.geometry.bsize);
        let in_header = bsize - RGRP_HEADER_SIZE as u64;
        let per_block = bsize - META_HEADER_SIZE as u64;
        1 + u64::from(bitbytes)
            .saturating_sub(in_header)
            .div_ceil(per_block)
    }

    /// Reads and checks the header of `rgrp`: its checksum (when nonzero), its copy of the
    /// rindex entry, and its counts.
    pub fn rgrp_header(&self, rgrp: &RindexEntry) -> Result<RgrpHeader, D::Error> {
        let block = self.read_meta(rgrp.addr, MetaType::Rgrp)?;
        let header = RgrpHeader::decode(&block);
        let bad = |problem| Corruption::BadRgrp {
            block: rgrp.addr,
            problem,
        };

        let computed = RgrpHeader::compute_crc(&block);
        if header.crc != 0 && header.crc != computed {
            return Err(bad(RgrpProblem::Checksum {
                recorded: header.crc,
                computed,
            })
            .into());
        }
        let copy_matches = header.data0 == rgrp.data0
            && header.data == rgrp.data
            && header.bitbytes == rgrp.bitbytes;
        if !copy_matches {
            return Err(bad(RgrpProblem::RindexMismatch).into());
        }
        if u64::from(header.free) + u64::from(header.dinodes) > u64::from(header.data) {
            let (free, dinodes, data) = (header.free, header.dinodes, header.data);
            return Err(bad(RgrpProblem::Counts {
                free,
                dinodes,
                data,
            })
            .into());
        }
        Ok(header)
    }

    /// Counts the data blocks of `rgrp` by state, reading its bitmap.
    pub fn rgrp_bitmap(&self, rgrp: &RindexEntry) -> Result<BitmapCounts, D::Error> {
        let mut counts = BitmapCounts::default();
        let mut states_left = u64::from(rgrp.data);

        for index in 0..u64::from(rgrp.length) {
            let (expected, bitmap_start) = if index == 0 {
                (MetaType::Rgrp, RGRP_HEADER_SIZE)
            } else {
                (MetaType::RgrpBitmap, META_HEADER_SIZE)
            };
            let block = self.read_meta(rgrp.addr + index, expected)?;
            for &byte in &block[bitmap_start..] {
                for shift in (0..8).step_by(2) {
                    if states_left == 0 {
                        return Ok(counts);
                    }
                    match (byte >> shift) & 0b11 {
                        0 => counts.free += 1,
                        1 => counts.used += 1,
                        2 => counts.unlinked += 1,
                        _ => counts.dinodes += 1,
                    }
                    states_left -= 1;
                }
            }
        }
        Ok(counts)
    }

    /// Sums the counts of every rgrp header, as `statfs` does.
    pub fn usage(&self) -> Result<Usage, D::Error> {
        let mut usage = Usage::default();
        for rgrp in &self.rgrps {
            let header = self.rgrp_header(rgrp)?;
            usage.data_blocks += u64::from(rgrp.data);
            usage.free += u64::from(header.free);
            usage.dinodes += u64::from(header.dinodes);
        }
        Ok(usage)
    }

    /// Sums the bitmap counts of every rgrp.
    pub fn bitmap_usage(&self) -> Result<BitmapCounts, D::Error> {
        let mut total = BitmapCounts::default();
        for rgrp in &self.rgrps {
            total.add(&self.rgrp_bitmap(rgrp)?);
        }
        Ok(total)
    }
}
