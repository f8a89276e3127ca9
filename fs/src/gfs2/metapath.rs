//! Metadata trees: mapping a file's logical blocks to device blocks.
//!
//! An unstuffed dinode (height `h` ≥ 1) holds `diptrs` pointers after its header; each
//! indirect block holds `inptrs` more after a 24-byte header. Pointers on the bottom level
//! name data blocks, pointers above name indirect blocks, and a 0 pointer anywhere is a hole
//! that reads as zeros. The path to logical block `n` (its metapath) is `n` written in base
//! `inptrs`, one digit per level, the dinode's digit first; Linux divides by `inptrs` at every
//! level, the dinode's included.
//!
//! Each step of a walk checks the pointer against the device and the resource groups, the
//! block's header (an indirect block must say so), and that the path does not come back to a
//! block it went through. [`Filesystem::verify_tree`] walks a whole tree once and also
//! catches a block referenced twice; [`Filesystem::open_file`](super::Filesystem::open_file)
//! runs it before a file is read.
//!
//! Directories use the same trees for their hash table, in logical blocks of `jbsize` bytes
//! (journaled-data blocks, whose first 24 bytes are a header).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use drivers::block::BlockDevice;

use super::ondisk::{DINODE_SIZE, MAX_META_HEIGHT, META_HEADER_SIZE, MetaType, be64};
use super::{Corruption, Error, Filesystem, Inode, Result};

/// A run of logical blocks of a file that map alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Extent {
    /// `len` logical blocks are holes and read as zeros.
    Hole {
        /// Number of blocks.
        len: u64,
    },
    /// `len` logical blocks lie in the contiguous device blocks from `start`.
    Mapped {
        /// The filesystem block holding the first logical block.
        start: u64,
        /// Number of blocks.
        len: u64,
    },
}

impl Extent {
    /// Number of logical blocks in the extent.
    pub fn len(&self) -> u64 {
        match *self {
            Self::Hole { len } | Self::Mapped { len, .. } => len,
        }
    }

    /// Whether the extent is empty (it never is when returned by a mapping).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<D: BlockDevice> Filesystem<D> {
    /// The block holding logical block `lblock` of `inode`, or `None` for a hole.
    ///
    /// Blocks beyond what the tree can address are holes. A stuffed inode has no blocks to
    /// map: its data lives in the dinode block ([`Error::Stuffed`]).
    pub fn map_block(&self, inode: &Inode, lblock: u64) -> Result<Option<u64>, D::Error> {
        match self.map_extent(inode, lblock, 1)? {
            Extent::Hole { .. } => Ok(None),
            Extent::Mapped { start, .. } => Ok(Some(start)),
        }
    }

    /// Maps logical blocks from `lblock` on: at most `max_len` (at least 1) of them that are
    /// all holes, or all in contiguous device blocks.
    ///
    /// The extent ends early where the bottom-level pointer array it was found in ends.
    pub fn map_extent(&self, inode: &Inode, lblock: u64, max_len: u64) -> Result<Extent, D::Error> {
        let height = inode.height();
        if height == 0 {
            return Err(Error::Stuffed(inode.addr()));
        }
        let max_len = max_len.max(1);
        let geometry = &self.geometry;
        let levels = usize::from(height);
        // Logical blocks covered by one pointer of the dinode, and by the whole tree.
        let mut span = geometry.inptrs.saturating_pow(u32::from(height) - 1);
        let reach = geometry.diptrs.saturating_mul(span);
        if lblock >= reach {
            return Ok(Extent::Hole { len: max_len });
        }

        // The metapath: the digits of `lblock` in base `inptrs`, the dinode's digit first.
        let mut indices = [0u64; MAX_META_HEIGHT as usize];
        let mut rest = lblock;
        for index in indices[1..levels].iter_mut().rev() {
            *index = rest % geometry.inptrs;
            rest /= geometry.inptrs;
        }
        if rest >= geometry.diptrs {
            // Only when the reach saturated, which no height the block size allows does.
            return Ok(Extent::Hole { len: max_len });
        }
        indices[0] = rest;

        // Go down through the indirect blocks to the bottom level.
        let mut path = [0u64; MAX_META_HEIGHT as usize];
        let mut indirect: Vec<u8>;
        let mut pointers = &inode.block()[DINODE_SIZE..];
        let mut holder = inode.addr();
        for level in 0..levels - 1 {
            let pointer = be64(pointers, indices[level] as usize * 8);
            if pointer == 0 {
                let offset = lblock % span;
                return Ok(Extent::Hole {
                    len: (span - offset).min(max_len),
                });
            }

            self.check_pointer(holder, pointer)?;
            if pointer == inode.addr() || path[..level].contains(&pointer) {
                return Err(Corruption::TreeCycle {
                    inode: inode.addr(),
                    block: pointer,
                }
                .into());
            }
            path[level] = pointer;
            indirect = self.read_meta(pointer, MetaType::Indirect)?;
            pointers = &indirect[META_HEADER_SIZE..];
            holder = pointer;
            span /= geometry.inptrs;
        }

        let index = indices[levels - 1] as usize;
        let available = ((pointers.len() / 8 - index) as u64).min(max_len);
        self.bottom_extent(pointers, index, available, holder)
    }

    /// The extent starting at bottom-level pointer `index` of `pointers` (found in block
    /// `holder`), at most `available` blocks long.
    fn bottom_extent(
        &self,
        pointers: &[u8],
        index: usize,
        available: u64,
        holder: u64,
    ) -> Result<Extent, D::Error> {
        let pointer_at = |i: u64| be64(pointers, (index + i as usize) * 8);
        let first = pointer_at(0);

        if first == 0 {
            let len = (1..available)
                .find(|&i| pointer_at(i) != 0)
                .unwrap_or(available);
            return Ok(Extent::Hole { len });
        }

        self.check_pointer(holder, first)?;
        let mut len = 1;
        while len < available && pointer_at(len) == first.wrapping_add(len) {
            self.check_pointer(holder, first + len)?;
            len += 1;
        }
        Ok(Extent::Mapped { start: first, len })
    }

    /// Walks the whole metadata tree of `inode`: every pointer lies on the device and in a
    /// resource group, every indirect block is one, and no block appears twice (which also
    /// rules out cycles).
    ///
    /// Reads each indirect block once; memory grows with the blocks the tree references.
    pub fn verify_tree(&self, inode: &Inode) -> Result<(), D::Error> {
        let height = usize::from(inode.height());
        if height == 0 {
            return Ok(());
        }

        let mut seen = BTreeSet::new();
        seen.insert(inode.addr());
        // Indirect blocks still to read, with their level (the dinode is level 0).
        let mut pending: Vec<(u64, usize)> = Vec::new();
        self.note_pointers(
            inode,
            &inode.block()[DINODE_SIZE..],
            inode.addr(),
            0,
            &mut seen,
            &mut pending,
        )?;

        while let Some((block, level)) = pending.pop() {
            let indirect = self.read_meta(block, MetaType::Indirect)?;
            self.note_pointers(
                inode,
                &indirect[META_HEADER_SIZE..],
                block,
                level,
                &mut seen,
                &mut pending,
            )?;
        }
        Ok(())
    }

    /// Checks the pointers of one level-`level` block and queues the indirect blocks below.
    fn note_pointers(
        &self,
        inode: &Inode,
        pointers: &[u8],
        holder: u64,
        level: usize,
        seen: &mut BTreeSet<u64>,
        pending: &mut Vec<(u64, usize)>,
    ) -> Result<(), D::Error> {
        let bottom = level + 1 == usize::from(inode.height());

        for chunk in pointers.chunks_exact(8) {
            let pointer = be64(chunk, 0);
            if pointer == 0 {
                continue;
            }

            self.check_pointer(holder, pointer)?;
            if !seen.insert(pointer) {
                return Err(Corruption::RepeatedBlock {
                    inode: inode.addr(),
                    block: pointer,
                }
                .into());
            }
            if !bottom {
                pending.push((pointer, level + 1));
            }
        }
        Ok(())
    }
}
