//! The shape of every inode before any block is placed: what is stuffed, how tall each
//! metadata tree is and which logical blocks it maps, and how each directory's entries are
//! spread over a linear block or an exhash table of leaves.
//!
//! Everything here depends only on the names and sizes in the tree and on the block size, so
//! the number of blocks the image needs is known before the rgrps are laid out.

use std::ops::Range;
use std::path::PathBuf;

use fs::gfs2::Geometry;
use fs::gfs2::ondisk::{
    DIF_EXHASH, DIF_JDATA, DIRENT_FORMAT, LEAF_HEADER_SIZE, MAX_DIR_DEPTH, RawDirent, name_hash,
};

use super::source::{Attributes, mode};

/// One inode of the image and how its content is stored.
#[derive(Debug)]
pub struct InodePlan {
    /// Mode, owner and times.
    pub attributes: Attributes,
    /// `di_flags`.
    pub flags: u32,
    /// `di_payload_format`.
    pub payload_format: u32,
    /// What the inode holds and how.
    pub content: Content,
}

/// Where an inode's content comes from.
#[derive(Debug)]
pub enum Fill {
    /// The bytes of a source file, at the same offsets.
    Source(PathBuf),
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// Every data block is an empty quota-change block (`quota_change{j}`).
    QuotaChange,
    /// Every data block is a clean log header (`journal{j}`).
    Journal,
}

/// How an inode's content is stored.
#[derive(Debug)]
pub enum Content {
    /// `size` bytes in the dinode block after the dinode (height 0).
    Stuffed { size: u64, fill: Fill },
    /// A metadata tree over raw (or, for [`Fill::QuotaChange`] and [`Fill::Journal`],
    /// typed) data blocks at the logical blocks `blocks`; the rest are holes.
    Tree {
        size: u64,
        shape: TreeShape,
        fill: Fill,
    },
    /// A directory.
    Directory(DirPlan),
}

/// A metadata tree: its height and the logical blocks it maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeShape {
    /// `di_height`, at least 1.
    pub height: u16,
    /// The logical blocks that have a data block, sorted and disjoint.
    pub blocks: Vec<Range<u64>>,
    /// Indirect blocks the tree needs.
    pub indirect: u64,
}

impl TreeShape {
    /// The smallest tree that reaches logical block `last` and maps the logical blocks
    /// `blocks` (sorted, disjoint, all at or below `last`).
    pub fn new(geometry: &Geometry, last: u64, blocks: Vec<Range<u64>>) -> Self {
        let last = blocks.last().map_or(last, |range| last.max(range.end - 1));
        let mut height = 1;
        let mut top = last;
        while top >= geometry.diptrs {
            top /= geometry.inptrs;
            height += 1;
        }

        // Each level of indirect blocks has one block per run of `inptrs` keys below it.
        let mut indirect = 0;
        let mut keys = blocks.clone();
        for _ in 1..height {
            keys = parent_keys(&keys, geometry.inptrs);
            indirect += keys
                .iter()
                .map(|range| range.end - range.start)
                .sum::<u64>();
        }
        Self {
            height,
            blocks,
            indirect,
        }
    }

    /// A tree that maps every logical block below `count`.
    pub fn full(geometry: &Geometry, count: u64) -> Self {
        Self::new(
            geometry,
            count.saturating_sub(1),
            std::iter::once(0..count).collect(),
        )
    }

    /// Data blocks the tree maps.
    pub fn data_blocks(&self) -> u64 {
        self.blocks
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }
}

/// The keys of the parent level of `keys` (sorted, disjoint ranges) when each parent holds
/// `fanout` of them.
fn parent_keys(keys: &[Range<u64>], fanout: u64) -> Vec<Range<u64>> {
    let mut parents: Vec<Range<u64>> = Vec::new();
    for range in keys {
        let parent = range.start / fanout..(range.end - 1) / fanout + 1;
        match parents.last_mut() {
            Some(last) if last.end >= parent.start => last.end = last.end.max(parent.end),
            _ => parents.push(parent),
        }
    }
    parents
}

/// One entry of a directory.
#[derive(Clone, Debug)]
pub struct DirEntryPlan {
    /// The name.
    pub name: Vec<u8>,
    /// The inode it names, an index into the plan's inodes.
    pub target: usize,
}

impl DirEntryPlan {
    /// The name's hash.
    pub fn hash(&self) -> u32 {
        name_hash(&self.name)
    }

    /// Bytes the entry takes in a block.
    pub fn record_size(&self) -> usize {
        RawDirent::size_for(self.name.len())
    }
}

/// A directory: its entries (`.` and `..` first) and how they are stored.
#[derive(Debug)]
pub struct DirPlan {
    /// Every entry, `.` and `..` included.
    pub entries: Vec<DirEntryPlan>,
    /// Linear or exhash.
    pub shape: DirShape,
}

/// How a directory's entries are stored.
#[derive(Debug)]
pub enum DirShape {
    /// All entries in the dinode block.
    Linear,
    /// A hash table of `2^depth` slots naming leaf blocks.
    Exhash(ExhashPlan),
}

/// An exhash directory.
#[derive(Debug)]
pub struct ExhashPlan {
    /// `di_depth`.
    pub depth: u16,
    /// The leaves, in slot order.
    pub leaves: Vec<LeafPlan>,
    /// The tree of journaled-data blocks holding the table; `None` when it is stuffed.
    pub table: Option<TreeShape>,
}

impl ExhashPlan {
    /// Leaf blocks, chained ones included.
    pub fn leaf_blocks(&self) -> u64 {
        self.leaves
            .iter()
            .map(|leaf| leaf.blocks.len() as u64)
            .sum()
    }

    /// Bytes of the hash table (`di_size`).
    pub fn table_bytes(&self) -> u64 {
        8 << self.depth
    }
}

/// A leaf and the run of hash-table slots it covers.
#[derive(Debug)]
pub struct LeafPlan {
    /// The first slot of the run.
    pub first_slot: u64,
    /// `lf_depth`: the run is `2^(depth - lf_depth)` slots long.
    pub depth: u16,
    /// The entries (indices into the directory's entries) of each block of the chain.
    pub blocks: Vec<Vec<usize>>,
}

impl DirPlan {
    /// Plans a directory with `entries` (`.` and `..` first) for `geometry`.
    pub fn new(geometry: &Geometry, entries: Vec<DirEntryPlan>) -> Self {
        let bytes: usize = entries.iter().map(DirEntryPlan::record_size).sum();
        let shape = if bytes as u64 <= geometry.stuffed_capacity() {
            DirShape::Linear
        } else {
            DirShape::Exhash(plan_exhash(geometry, &entries))
        };
        Self { entries, shape }
    }

    /// `di_flags` bits of the shape: JDATA always (Linux sets it on every directory), EXHASH
    /// for a hashed directory.
    pub fn flags(&self) -> u32 {
        match self.shape {
            DirShape::Linear => DIF_JDATA,
            DirShape::Exhash(_) => DIF_JDATA | DIF_EXHASH,
        }
    }

    /// `di_payload_format`: 1200 for a linear directory, 0 for an exhash one.
    pub fn payload_format(&self) -> u32 {
        match self.shape {
            DirShape::Linear => DIRENT_FORMAT,
            DirShape::Exhash(_) => 0,
        }
    }
}

/// Spreads `entries` over leaves: from the depth Linux starts at, `log2(bsize / 16)`, each
/// run of slots whose entries do not fit one leaf is split in two, and the table doubles
/// while a single slot overflows; at the deepest table (17) an overflowing slot gets a chain.
fn plan_exhash(geometry: &Geometry, entries: &[DirEntryPlan]) -> ExhashPlan {
    let initial_depth = (geometry.bsize / 16).trailing_zeros() as u16;
    let capacity = geometry.bsize as usize - LEAF_HEADER_SIZE;
    let hashes: Vec<u32> = entries.iter().map(DirEntryPlan::hash).collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&index| hashes[index]);

    let mut depth = initial_depth;
    loop {
        let mut leaves = Vec::new();
        let mut planner = LeafPlanner {
            entries,
            hashes: &hashes,
            depth,
            capacity,
            leaves: &mut leaves,
        };
        if planner.place(&order, 0, depth) {
            let table_bytes = 8u64 << depth;
            let table = (table_bytes > geometry.stuffed_capacity())
                .then(|| TreeShape::full(geometry, table_bytes.div_ceil(geometry.jbsize)));
            return ExhashPlan {
                depth,
                leaves,
                table,
            };
        }
        depth += 1;
    }
}

struct LeafPlanner<'a> {
    entries: &'a [DirEntryPlan],
    hashes: &'a [u32],
    depth: u16,
    capacity: usize,
    leaves: &'a mut Vec<LeafPlan>,
}

impl LeafPlanner<'_> {
    /// Places `order` (entry indices sorted by hash, all in the run) in the run of
    /// `2^run_log` slots from `first_slot`. False when a single slot overflows below the
    /// deepest table.
    fn place(&mut self, order: &[usize], first_slot: u64, run_log: u16) -> bool {
        let bytes: usize = order
            .iter()
            .map(|&index| self.entries[index].record_size())
            .sum();
        if bytes <= self.capacity {
            self.leaves.push(LeafPlan {
                first_slot,
                depth: self.depth - run_log,
                blocks: vec![order.to_vec()],
            });
            return true;
        }

        if run_log == 0 {
            if self.depth < MAX_DIR_DEPTH {
                return false;
            }
            self.leaves.push(LeafPlan {
                first_slot,
                depth: self.depth,
                blocks: self.chain(order),
            });
            return true;
        }

        let half = 1u64 << (run_log - 1);
        let divider = first_slot + half;
        let split = order.partition_point(|&index| self.slot(index) < divider);
        self.place(&order[..split], first_slot, run_log - 1)
            && self.place(&order[split..], divider, run_log - 1)
    }

    fn slot(&self, index: usize) -> u64 {
        u64::from(self.hashes[index]) >> (32 - u32::from(self.depth))
    }

    /// Packs `order` into as many chained blocks as it takes.
    fn chain(&self, order: &[usize]) -> Vec<Vec<usize>> {
        let mut blocks = vec![Vec::new()];
        let mut used = 0;
        for &index in order {
            let size = self.entries[index].record_size();
            if used + size > self.capacity {
                blocks.push(Vec::new());
                used = 0;
            }
            used += size;
            blocks.last_mut().expect("never empty").push(index);
        }
        blocks
    }
}

impl InodePlan {
    /// A directory inode.
    pub fn directory(attributes: Attributes, extra_flags: u32, dir: DirPlan) -> Self {
        Self {
            attributes,
            flags: dir.flags() | extra_flags,
            payload_format: dir.payload_format(),
            content: Content::Directory(dir),
        }
    }

    /// A file (regular or symlink) whose content is `fill`, `size` bytes, with data in the
    /// byte ranges `data`: stuffed when it fits the dinode block, otherwise a tree over the
    /// blocks that hold data.
    pub fn file(
        geometry: &Geometry,
        attributes: Attributes,
        flags: u32,
        size: u64,
        data: &[Range<u64>],
        fill: Fill,
    ) -> Self {
        let stuffable = !matches!(fill, Fill::QuotaChange | Fill::Journal);
        let content = if stuffable && size <= geometry.stuffed_capacity() {
            Content::Stuffed { size, fill }
        } else {
            Content::Tree {
                size,
                shape: TreeShape::new(
                    geometry,
                    size.div_ceil(u64::from(geometry.bsize)).saturating_sub(1),
                    data_blocks(geometry, size, data),
                ),
                fill,
            }
        };
        Self {
            attributes,
            flags,
            payload_format: 0,
            content,
        }
    }

    /// Blocks the inode owns besides its dinode: indirect, data, leaf and hash-table blocks.
    pub fn extra_blocks(&self) -> u64 {
        match &self.content {
            Content::Stuffed { .. } => 0,
            Content::Tree { shape, .. } => shape.indirect + shape.data_blocks(),
            Content::Directory(dir) => match &dir.shape {
                DirShape::Linear => 0,
                DirShape::Exhash(exhash) => {
                    let table = exhash
                        .table
                        .as_ref()
                        .map_or(0, |shape| shape.indirect + shape.data_blocks());
                    table + exhash.leaf_blocks()
                }
            },
        }
    }

    /// `IF2DT(mode)`: the directory-entry type of the inode.
    pub fn dirent_type(&self) -> u16 {
        ((self.attributes.mode & mode::S_IFMT) >> 12) as u16
    }
}

/// The logical blocks that hold the byte ranges `data` of a `size`-byte file, merged.
fn data_blocks(geometry: &Geometry, size: u64, data: &[Range<u64>]) -> Vec<Range<u64>> {
    let bsize = u64::from(geometry.bsize);
    let mut blocks: Vec<Range<u64>> = Vec::new();
    for range in data {
        let end = range.end.min(size);
        if range.start >= end {
            continue;
        }
        let block_range = range.start / bsize..end.div_ceil(bsize);
        match blocks.last_mut() {
            Some(last) if last.end >= block_range.start => {
                last.end = last.end.max(block_range.end);
            }
            _ => blocks.push(block_range),
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> DirEntryPlan {
        DirEntryPlan {
            name: name.as_bytes().to_vec(),
            target: 0,
        }
    }

    #[test]
    fn tree_heights_and_indirect_blocks_match_mkfs() {
        // gfs2-4k: an 8 MiB journal at 4 KiB is height 2 with 5 indirect blocks.
        let journal = TreeShape::full(&Geometry::new(4096), 2048);
        assert_eq!((journal.height, journal.indirect), (2, 5));
        // 35 pointers in a 512-byte dinode: block 34 is height 1, block 35 height 2.
        let geometry = Geometry::new(512);
        assert_eq!(TreeShape::full(&geometry, 35).height, 1);
        let two = TreeShape::full(&geometry, 36);
        assert_eq!((two.height, two.indirect), (2, 1));
        // The format document's sparse example: blocks 0 and 600 at 4 KiB, height 2, one
        // indirect block under each of dinode pointers 0 and 1.
        let sparse = TreeShape::new(&Geometry::new(4096), 600, vec![0..1, 600..601]);
        assert_eq!(
            (sparse.height, sparse.indirect, sparse.data_blocks()),
            (2, 2, 2)
        );
    }

    #[test]
    fn holes_stay_holes_and_partial_blocks_round_out() {
        let geometry = Geometry::new(1024);
        let blocks = data_blocks(&geometry, 10_000, &[0..10, 1020..1030, 5000..10_000]);
        assert_eq!(blocks, vec![0..2, 4..10]);
    }

    #[test]
    fn small_directories_are_linear_and_large_ones_exhash_with_aligned_runs() {
        let geometry = Geometry::new(512);
        let small = DirPlan::new(&geometry, vec![entry("."), entry(".."), entry("a")]);
        assert!(matches!(small.shape, DirShape::Linear));

        let names: Vec<String> = (0..2000).map(|i| format!("file-{i:05}")).collect();
        let mut entries = vec![entry("."), entry("..")];
        entries.extend(names.iter().map(|name| entry(name)));
        let large = DirPlan::new(&geometry, entries);
        let DirShape::Exhash(exhash) = &large.shape else {
            panic!("2000 entries at 512 bytes are not linear");
        };

        assert!(exhash.depth >= 5);
        let mut next_slot = 0;
        let mut placed = 0;
        for leaf in &exhash.leaves {
            let run = 1u64 << (exhash.depth - leaf.depth);
            assert_eq!(leaf.first_slot, next_slot);
            assert_eq!(leaf.first_slot % run, 0);
            for block in &leaf.blocks {
                let bytes: usize = block.iter().map(|&i| large.entries[i].record_size()).sum();
                assert!(bytes <= 512 - LEAF_HEADER_SIZE);
                for &index in block {
                    let slot = u64::from(large.entries[index].hash()) >> (32 - exhash.depth);
                    assert!((leaf.first_slot..leaf.first_slot + run).contains(&slot));
                }
                placed += block.len();
            }
            next_slot += run;
        }
        assert_eq!(next_slot, 1 << exhash.depth);
        assert_eq!(placed, 2002);
        assert!(
            exhash.table.is_some(),
            "a deeper table than 5 is not stuffed at 512 bytes"
        );
    }

    #[test]
    fn a_slot_that_overflows_at_depth_17_gets_a_chain() {
        // Nine names with the same top 17 hash bits; a 512-byte leaf holds eight.
        let mut by_slot = std::collections::HashMap::<u32, Vec<String>>::new();
        let colliding = (0u32..)
            .find_map(|i| {
                let name = format!("c{i}");
                let names = by_slot.entry(name_hash(name.as_bytes()) >> 15).or_default();
                names.push(name);
                (names.len() == 9).then(|| names.clone())
            })
            .unwrap();
        let entries = colliding.iter().map(|name| entry(name)).collect();

        let dir = DirPlan::new(&Geometry::new(512), entries);

        let DirShape::Exhash(exhash) = &dir.shape else {
            panic!("nine entries do not fit a 512-byte dinode");
        };
        assert_eq!(exhash.depth, MAX_DIR_DEPTH);
        let chained: Vec<_> = exhash
            .leaves
            .iter()
            .filter(|leaf| leaf.blocks.len() > 1)
            .collect();
        assert_eq!(chained.len(), 1);
        assert_eq!(chained[0].depth, MAX_DIR_DEPTH);
        assert_eq!(chained[0].blocks.iter().map(Vec::len).sum::<usize>(), 9);
    }
}
