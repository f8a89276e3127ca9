//! Block allocation: a cursor that hands out the data blocks of the rgrps in order, and the
//! state of every data block, from which the bitmaps and rgrp counts are written.
//!
//! The image is written once, so nothing is ever freed: allocation is a cursor that moves
//! forward through the rgrps' data blocks, and a file's blocks come out as few contiguous
//! extents as the rgrp boundaries allow.

use std::ops::Range;

use super::layout::RgrpLayout;

/// The state of a data block in an rgrp bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockState {
    /// Not in use.
    Free = 0,
    /// Data, or metadata other than a dinode.
    Used = 1,
    /// A dinode.
    Dinode = 3,
}

/// No data block is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfSpace;

/// Hands out data blocks and remembers their states.
#[derive(Debug)]
pub struct Allocator {
    rgrps: Vec<RgrpLayout>,
    /// The state of each data block, rgrp by rgrp.
    states: Vec<Vec<BlockState>>,
    /// The rgrp the cursor is in and the next data block's index in it.
    rgrp: usize,
    offset: u64,
}

impl Allocator {
    /// An allocator over `rgrps`, all blocks free, the cursor at the first data block.
    pub fn new(rgrps: &[RgrpLayout]) -> Self {
        Self {
            rgrps: rgrps.to_vec(),
            states: rgrps
                .iter()
                .map(|rgrp| vec![BlockState::Free; rgrp.data as usize])
                .collect(),
            rgrp: 0,
            offset: 0,
        }
    }

    /// Moves the cursor to the first data block of rgrp `index` (which journals own).
    pub fn move_to_rgrp(&mut self, index: usize) {
        self.rgrp = index;
        self.offset = 0;
    }

    /// Allocates one block in `state`.
    pub fn allocate_one(&mut self, state: BlockState) -> Result<u64, OutOfSpace> {
        let extents = self.allocate(1, state)?;
        Ok(extents[0].start)
    }

    /// Allocates `count` blocks in `state`, as contiguous extents in order.
    pub fn allocate(
        &mut self,
        mut count: u64,
        state: BlockState,
    ) -> Result<Vec<Range<u64>>, OutOfSpace> {
        let mut extents: Vec<Range<u64>> = Vec::new();
        while count > 0 {
            let rgrp = self.rgrps.get(self.rgrp).ok_or(OutOfSpace)?;
            let left = u64::from(rgrp.data) - self.offset;
            if left == 0 {
                self.rgrp += 1;
                self.offset = 0;
                continue;
            }

            let taken = left.min(count);
            let start = rgrp.data0() + self.offset;
            let states = &mut self.states[self.rgrp];
            states[self.offset as usize..(self.offset + taken) as usize].fill(state);
            match extents.last_mut() {
                Some(last) if last.end == start => last.end += taken,
                _ => extents.push(start..start + taken),
            }
            self.offset += taken;
            count -= taken;
        }
        Ok(extents)
    }

    /// Blocks the rgrps' bitmaps hold in `state`, in rgrp `index`.
    pub fn count(&self, index: usize, state: BlockState) -> u32 {
        self.states[index]
            .iter()
            .filter(|&&block| block == state)
            .count() as u32
    }

    /// The bitmap of rgrp `index`: 2 bits a block, the first block in the low bits.
    pub fn bitmap(&self, index: usize) -> Vec<u8> {
        let mut bitmap = vec![0u8; self.states[index].len().div_ceil(4)];
        for (block, &state) in self.states[index].iter().enumerate() {
            bitmap[block / 4] |= (state as u8) << (2 * (block % 4));
        }
        bitmap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgrps() -> Vec<RgrpLayout> {
        vec![
            RgrpLayout {
                addr: 10,
                length: 1,
                data: 8,
            },
            RgrpLayout {
                addr: 19,
                length: 1,
                data: 8,
            },
        ]
    }

    #[test]
    fn extents_split_at_rgrp_boundaries() {
        let mut allocator = Allocator::new(&rgrps());

        assert_eq!(allocator.allocate_one(BlockState::Dinode), Ok(11));
        assert_eq!(
            allocator.allocate(9, BlockState::Used),
            Ok(vec![12..19, 20..22])
        );
        assert_eq!(allocator.count(0, BlockState::Dinode), 1);
        assert_eq!(allocator.count(0, BlockState::Used), 7);
        assert_eq!(allocator.count(1, BlockState::Free), 6);
        assert_eq!(allocator.bitmap(0), vec![0b0101_0111, 0b0101_0101]);
        assert_eq!(allocator.allocate(7, BlockState::Used), Err(OutOfSpace));
    }

    #[test]
    fn moving_to_an_rgrp_skips_the_rest_of_the_current_one() {
        let mut allocator = Allocator::new(&rgrps());
        allocator.allocate_one(BlockState::Used).unwrap();

        allocator.move_to_rgrp(1);

        assert_eq!(allocator.allocate_one(BlockState::Dinode), Ok(20));
    }
}
