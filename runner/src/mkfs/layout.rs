//! Where the resource groups lie: one per journal first, then ordinary ones to the end.
//!
//! This follows `mkfs.gfs2` 3.5: the first rgrp starts right after the superblock; each
//! journal gets an rgrp of its own, just large enough for the journal (its data-block count
//! rounded up to a multiple of 4, as `ri_data` must be); the rest of the image is split into
//! equal rgrps of at most 256 MiB (the last one takes what is left over). An rgrp is a
//! header block, bitmap blocks (2 bits per data block) and its data blocks.

use fs::gfs2::RindexEntry;
use fs::gfs2::ondisk::{META_HEADER_SIZE, RGRP_HEADER_SIZE};

/// Largest ordinary rgrp, as `mkfs.gfs2`'s default.
const MAX_RGRP_BYTES: u64 = 256 << 20;

/// Fewest data blocks an ordinary rgrp may have.
const MIN_RGRP_DATA: u64 = 16;

/// One resource group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RgrpLayout {
    /// Block of the rgrp header.
    pub addr: u64,
    /// Header and bitmap blocks.
    pub length: u32,
    /// Data blocks; a multiple of 4.
    pub data: u32,
}

impl RgrpLayout {
    /// The first data block.
    pub fn data0(&self) -> u64 {
        self.addr + u64::from(self.length)
    }

    /// The block after the last data block.
    pub fn end(&self) -> u64 {
        self.data0() + u64::from(self.data)
    }

    /// Bytes of bitmap: 4 blocks a byte.
    pub fn bitbytes(&self) -> u32 {
        self.data / 4
    }

    /// The rgrp's entry in the `rindex` file.
    pub fn rindex_entry(&self) -> RindexEntry {
        RindexEntry {
            addr: self.addr,
            length: self.length,
            data0: self.data0(),
            data: self.data,
            bitbytes: self.bitbytes(),
        }
    }

    /// An rgrp at `addr` with `data` data blocks (a multiple of 4).
    fn new(addr: u64, data: u64, bsize: u32) -> Self {
        Self {
            addr,
            length: header_blocks(data, bsize),
            data: data as u32,
        }
    }
}

/// Header and bitmap blocks of an rgrp with `data` data blocks: the header block holds
/// `bsize - 128` bitmap bytes, each further bitmap block `bsize - 24`.
pub fn header_blocks(data: u64, bsize: u32) -> u32 {
    let bitbytes = data / 4;
    let in_header = u64::from(bsize) - RGRP_HEADER_SIZE as u64;
    let per_block = u64::from(bsize) - META_HEADER_SIZE as u64;
    1 + bitbytes.saturating_sub(in_header).div_ceil(per_block) as u32
}

/// Lays out an image of `total_blocks` blocks whose superblock is block `superblock`: one rgrp
/// for each journal, of `journal_blocks[j]` data blocks (rounded up to 4), then ordinary
/// rgrps. `None` when the image is too small for the journals and one ordinary rgrp.
pub fn lay_out(
    bsize: u32,
    superblock: u64,
    journal_blocks: &[u64],
    total_blocks: u64,
) -> Option<Vec<RgrpLayout>> {
    let mut rgrps = Vec::new();
    let mut next = superblock + 1;
    for &blocks in journal_blocks {
        let rgrp = RgrpLayout::new(next, blocks.next_multiple_of(4), bsize);
        next = rgrp.end();
        rgrps.push(rgrp);
    }

    let area = total_blocks.checked_sub(next)?;
    let max_rgrp = MAX_RGRP_BYTES / u64::from(bsize);
    let count = area.div_ceil(max_rgrp).max(1);
    let size = area / count;
    for index in 0..count {
        let blocks = if index + 1 == count {
            total_blocks - next
        } else {
            size
        };
        let data = data_blocks_in(blocks, bsize)?;
        let rgrp = RgrpLayout::new(next, data, bsize);
        next += blocks;
        rgrps.push(rgrp);
    }
    Some(rgrps)
}

/// The most data blocks (a multiple of 4, at least [`MIN_RGRP_DATA`]) an rgrp of `blocks`
/// blocks in all can have.
fn data_blocks_in(blocks: u64, bsize: u32) -> Option<u64> {
    // Each bitmap block covers 4 × (bsize - 24) data blocks: start from that estimate and
    // step down until the header and bitmaps fit beside the data.
    let per_bitmap_block = 4 * (u64::from(bsize) - META_HEADER_SIZE as u64);
    let mut data = (blocks.saturating_sub(1) * per_bitmap_block / (per_bitmap_block + 1)) & !3;
    while data >= MIN_RGRP_DATA && data + u64::from(header_blocks(data, bsize)) > blocks {
        data -= 4;
    }
    (data >= MIN_RGRP_DATA).then_some(data)
}

/// Data blocks of the ordinary rgrps (those after the `journals` journal rgrps).
pub fn ordinary_capacity(rgrps: &[RgrpLayout], journals: usize) -> u64 {
    rgrps[journals..]
        .iter()
        .map(|rgrp| u64::from(rgrp.data))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mkfs_for_the_4k_fixture() {
        // gfs2-4k.info: 64 MiB at 4 KiB blocks, one 8 MiB journal (2054 blocks with its
        // dinode and 5 indirect blocks); mkfs made rgrps at 17 (1 + 2056) and 2074.
        let rgrps = lay_out(4096, 16, &[2054], 16384).unwrap();

        assert_eq!(
            rgrps[0],
            RgrpLayout {
                addr: 17,
                length: 1,
                data: 2056
            }
        );
        assert_eq!(rgrps[0].rindex_entry().bitbytes, 514);
        assert_eq!(rgrps[1].addr, 2074);
        assert_eq!(rgrps[1].data0(), 2075);
        assert!(rgrps[1].end() <= 16384);
    }

    #[test]
    fn rgrps_fill_the_image_and_their_bitmaps_cover_their_data() {
        for bsize in [512, 1024, 4096] {
            for total in [2_000u64, 70_000, 1_500_000] {
                let Some(rgrps) = lay_out(bsize, 65536 / u64::from(bsize), &[100], total) else {
                    continue;
                };
                for pair in rgrps.windows(2) {
                    assert!(pair[0].end() <= pair[1].addr);
                }
                for rgrp in &rgrps {
                    assert_eq!(rgrp.data % 4, 0);
                    assert_eq!(rgrp.length, header_blocks(rgrp.data.into(), bsize));
                    assert!(rgrp.length <= 2149);
                }
                let last = rgrps.last().unwrap();
                assert!(last.end() <= total);
                // At most one bitmap block's worth of blocks is left unused at the end.
                assert!(total - last.end() <= 4 * u64::from(bsize));
            }
        }
    }

    #[test]
    fn too_small_an_image_has_no_layout() {
        assert_eq!(lay_out(4096, 16, &[2054], 2080), None);
    }
}
