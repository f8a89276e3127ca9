//! Writing the planned and allocated image: dinodes, metadata trees, data, directories,
//! rgrp headers and bitmaps, and the superblock.
//!
//! The image file is created at its full length (so untouched blocks read as zeros and take
//! no space) and each block is written at its place; file data is copied in runs of up to
//! [`COPY_BLOCKS`] contiguous blocks.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use fs::gfs2::ondisk::{
    DINODE_SIZE, GFS2_MAGIC, LEAF_HEADER_SIZE, META_HEADER_SIZE, MetaHeader, RGRP_HEADER_SIZE,
    RawDirent, RawLeaf, RawSuperblock, put32, put64,
};
use fs::gfs2::{Dinode, Geometry, Inum, MetaType, RgrpHeader};

use super::MkfsError;
use super::journal::encode_log_header;
use super::layout::RgrpLayout;
use super::plan::{Content, DirEntryPlan, DirPlan, DirShape, Fill, InodePlan, TreeShape};
use super::progress::Progress;

/// `GFS2_METATYPE_QC`: not a type the reader decodes, so not in [`MetaType`].
const QUOTA_CHANGE_TYPE: u32 = 14;

/// Most blocks copied in one read and write.
const COPY_BLOCKS: u64 = 256;

/// Where an inode's blocks went.
#[derive(Debug, Default)]
pub struct Placement {
    /// The dinode.
    pub dinode: u64,
    /// Indirect blocks of the file's (or hash table's) tree, in the order the tree builder
    /// fills them: the lowest level first.
    pub indirect: Vec<u64>,
    /// Data blocks (hash-table blocks for a directory), as extents in logical order.
    pub data: Vec<Range<u64>>,
    /// The leaf blocks of each leaf of an exhash directory, chain order.
    pub leaves: Vec<Vec<u64>>,
}

/// Writes blocks into the image file.
pub struct ImageWriter<'a> {
    file: &'a File,
    path: &'a Path,
    geometry: Geometry,
    progress: &'a Progress,
}

impl<'a> ImageWriter<'a> {
    /// A writer into `file` (whose name is `path`, for errors).
    pub fn new(file: &'a File, path: &'a Path, geometry: Geometry, progress: &'a Progress) -> Self {
        Self {
            file,
            path,
            geometry,
            progress,
        }
    }

    fn bsize(&self) -> usize {
        self.geometry.bsize as usize
    }

    /// Writes `bytes` (whole blocks) at block `block`.
    fn write_blocks(&self, block: u64, bytes: &[u8]) -> Result<(), MkfsError> {
        self.file
            .write_all_at(bytes, block * u64::from(self.geometry.bsize))
            .map_err(|source| MkfsError::WriteImage {
                path: self.path.to_owned(),
                source,
            })?;
        self.progress.advance(bytes.len() as u64);
        Ok(())
    }

    /// Writes the superblock at byte 65536.
    pub fn write_superblock(
        &self,
        superblock: &RawSuperblock,
        block: u64,
    ) -> Result<(), MkfsError> {
        let mut bytes = vec![0; self.bsize()];
        superblock.encode(&mut bytes);
        self.write_blocks(block, &bytes)
    }

    /// Writes the header and bitmap blocks of `rgrp` (of `next`, the rgrp after it, if any):
    /// `bitmap` and its counts.
    pub fn write_rgrp(
        &self,
        rgrp: &RgrpLayout,
        next: Option<&RgrpLayout>,
        bitmap: &[u8],
        free: u32,
        dinodes: u32,
    ) -> Result<(), MkfsError> {
        let bsize = self.bsize();
        let mut blocks = vec![0; rgrp.length as usize * bsize];
        let header = RgrpHeader {
            flags: 0,
            free,
            dinodes,
            skip: next.map_or(0, |next| (next.addr - rgrp.addr) as u32),
            igeneration: 0,
            data0: rgrp.data0(),
            data: rgrp.data,
            bitbytes: rgrp.bitbytes(),
            crc: 0,
        };
        header.encode(&mut blocks[..bsize]);

        let (first, rest) = bitmap.split_at(bitmap.len().min(bsize - RGRP_HEADER_SIZE));
        blocks[RGRP_HEADER_SIZE..RGRP_HEADER_SIZE + first.len()].copy_from_slice(first);
        for (index, piece) in rest.chunks(bsize - META_HEADER_SIZE).enumerate() {
            let block = &mut blocks[(index + 1) * bsize..(index + 2) * bsize];
            MetaHeader::encode(MetaType::RgrpBitmap, block);
            block[META_HEADER_SIZE..META_HEADER_SIZE + piece.len()].copy_from_slice(piece);
        }
        self.write_blocks(rgrp.addr, &blocks)
    }

    /// Writes inode `index`, planned as `plan` and placed at `placement`, with link count
    /// `nlink`; `inums` and `types` give every inode's number and directory-entry type.
    pub fn write_inode(
        &self,
        index: usize,
        plan: &InodePlan,
        placement: &Placement,
        inums: &[Inum],
        types: &[u16],
        nlink: u32,
    ) -> Result<(), MkfsError> {
        let bsize = self.bsize();
        let addr = placement.dinode;
        let mut block = vec![0; bsize];
        let attributes = plan.attributes;
        let mut dinode = Dinode {
            magic: 0,
            meta_type: 0,
            format: 0,
            num: inums[index],
            mode: attributes.mode,
            uid: attributes.uid,
            gid: attributes.gid,
            nlink,
            size: 0,
            blocks: 1 + plan.extra_blocks(),
            atime: attributes.atime,
            mtime: attributes.mtime,
            ctime: attributes.ctime,
            major: attributes.major,
            minor: attributes.minor,
            goal_meta: addr,
            goal_data: addr,
            generation: 0,
            flags: plan.flags,
            payload_format: plan.payload_format,
            height: 0,
            depth: 0,
            entries: 0,
            eattr: 0,
        };

        match &plan.content {
            Content::Stuffed { size, fill } => {
                dinode.size = *size;
                let payload = &mut block[DINODE_SIZE..DINODE_SIZE + *size as usize];
                read_fill(fill, *size, 0, payload)?;
            }
            Content::Tree { size, shape, fill } => {
                dinode.size = *size;
                dinode.height = shape.height;
                self.write_tree(shape, placement, &mut block)?;
                self.write_data(shape, placement, fill, *size, addr)?;
            }
            Content::Directory(dir) => {
                dinode.entries = dir.entries.len() as u32;
                match &dir.shape {
                    DirShape::Linear => {
                        dinode.size = self.geometry.stuffed_capacity();
                        let entries: Vec<&DirEntryPlan> = dir.entries.iter().collect();
                        write_dirents(&mut block, DINODE_SIZE, &entries, inums, types);
                    }
                    DirShape::Exhash(exhash) => {
                        dinode.size = exhash.table_bytes();
                        dinode.depth = exhash.depth;
                        let table = self.write_leaves(dir, placement, addr, inums, types)?;
                        match &exhash.table {
                            None => block[DINODE_SIZE..DINODE_SIZE + table.len()]
                                .copy_from_slice(&table),
                            Some(shape) => {
                                dinode.height = shape.height;
                                self.write_tree(shape, placement, &mut block)?;
                                self.write_journaled(shape, placement, &table)?;
                            }
                        }
                    }
                }
            }
        }

        dinode.encode(&mut block);
        self.write_blocks(addr, &block)
    }

    /// Builds the indirect blocks of `shape` over `placement`'s data blocks, writes them, and
    /// puts the top-level pointers into `dinode_block`.
    fn write_tree(
        &self,
        shape: &TreeShape,
        placement: &Placement,
        dinode_block: &mut [u8],
    ) -> Result<(), MkfsError> {
        let inptrs = self.geometry.inptrs;
        let mut level: Vec<(u64, u64)> = segments(&shape.blocks, &placement.data)
            .flat_map(|(logical, physical, count)| {
                (0..count).map(move |i| (logical + i, physical + i))
            })
            .collect();
        let mut indirect = placement.indirect.iter();

        for _ in 1..shape.height {
            let mut parents = Vec::new();
            for group in level.chunk_by(|a, b| a.0 / inptrs == b.0 / inptrs) {
                let addr = *indirect
                    .next()
                    .expect("the plan counted every indirect block");
                let mut block = vec![0; self.bsize()];
                MetaHeader::encode(MetaType::Indirect, &mut block);
                for &(key, pointer) in group {
                    put64(
                        &mut block,
                        META_HEADER_SIZE + 8 * (key % inptrs) as usize,
                        pointer,
                    );
                }
                self.write_blocks(addr, &block)?;
                parents.push((group[0].0 / inptrs, addr));
            }
            level = parents;
        }

        for (key, pointer) in level {
            debug_assert!(key < self.geometry.diptrs);
            put64(dinode_block, DINODE_SIZE + 8 * key as usize, pointer);
        }
        Ok(())
    }

    /// Writes the data blocks of a file's tree from `fill`, `size` bytes; `inode` is the
    /// dinode's block.
    fn write_data(
        &self,
        shape: &TreeShape,
        placement: &Placement,
        fill: &Fill,
        size: u64,
        inode: u64,
    ) -> Result<(), MkfsError> {
        let bsize = self.bsize();
        for (logical, physical, count) in copy_runs(&shape.blocks, &placement.data) {
            let mut buffer = vec![0; count as usize * bsize];
            match fill {
                Fill::Source(_) | Fill::Bytes(_) => {
                    read_fill(fill, size, logical * bsize as u64, &mut buffer)?;
                }
                Fill::QuotaChange => {
                    for block in buffer.chunks_mut(bsize) {
                        put32(block, 0, GFS2_MAGIC);
                        put32(block, 4, QUOTA_CHANGE_TYPE);
                        put32(block, 16, QUOTA_CHANGE_TYPE * 100);
                    }
                }
                Fill::Journal => {
                    for (i, block) in buffer.chunks_mut(bsize).enumerate() {
                        let index = logical + i as u64;
                        encode_log_header(block, index as u32, physical + i as u64, inode);
                    }
                }
            }
            self.write_blocks(physical, &buffer)?;
        }
        Ok(())
    }

    /// Writes `bytes` into the journaled-data blocks of `shape` (a directory's hash table).
    fn write_journaled(
        &self,
        shape: &TreeShape,
        placement: &Placement,
        bytes: &[u8],
    ) -> Result<(), MkfsError> {
        let bsize = self.bsize();
        let jbsize = self.geometry.jbsize as usize;
        for (logical, physical, count) in copy_runs(&shape.blocks, &placement.data) {
            let mut buffer = vec![0; count as usize * bsize];
            for (i, block) in buffer.chunks_mut(bsize).enumerate() {
                MetaHeader::encode(MetaType::JournaledData, block);
                let start = ((logical as usize) + i) * jbsize;
                let end = (start + jbsize).min(bytes.len());
                if start < end {
                    block[META_HEADER_SIZE..META_HEADER_SIZE + end - start]
                        .copy_from_slice(&bytes[start..end]);
                }
            }
            self.write_blocks(physical, &buffer)?;
        }
        Ok(())
    }

    /// Writes the leaves of exhash directory `dir` (whose dinode is `owner`) and returns its
    /// hash table.
    fn write_leaves(
        &self,
        dir: &DirPlan,
        placement: &Placement,
        owner: u64,
        inums: &[Inum],
        types: &[u16],
    ) -> Result<Vec<u8>, MkfsError> {
        let DirShape::Exhash(exhash) = &dir.shape else {
            unreachable!("only exhash directories have leaves");
        };
        let mut table = vec![0; exhash.table_bytes() as usize];
        for (leaf, addrs) in exhash.leaves.iter().zip(&placement.leaves) {
            let run = 1u64 << (exhash.depth - leaf.depth);
            for slot in leaf.first_slot..leaf.first_slot + run {
                put64(&mut table, 8 * slot as usize, addrs[0]);
            }

            for (position, (entries, &addr)) in leaf.blocks.iter().zip(addrs).enumerate() {
                let mut block = vec![0; self.bsize()];
                let header = RawLeaf {
                    depth: leaf.depth,
                    entries: entries.len() as u16,
                    next: addrs.get(position + 1).copied().unwrap_or(0),
                };
                header.encode(&mut block, owner, position as u32 + 1);
                let entries: Vec<&DirEntryPlan> =
                    entries.iter().map(|&index| &dir.entries[index]).collect();
                write_dirents(&mut block, LEAF_HEADER_SIZE, &entries, inums, types);
                self.write_blocks(addr, &block)?;
            }
        }
        Ok(table)
    }
}

/// Writes `entries` into `block` from `start`, the last one's record running to the end of
/// the block; with no entries, a sentinel covers the space.
fn write_dirents(
    block: &mut [u8],
    start: usize,
    entries: &[&DirEntryPlan],
    inums: &[Inum],
    types: &[u16],
) {
    if entries.is_empty() {
        let sentinel = RawDirent {
            inum: Inum::default(),
            hash: 0,
            rec_len: (block.len() - start) as u16,
            name_len: 0,
            file_type: 0,
        };
        sentinel.encode(block, start, &[]);
        return;
    }

    let mut offset = start;
    for (index, entry) in entries.iter().enumerate() {
        let rec_len = if index + 1 == entries.len() {
            block.len() - offset
        } else {
            entry.record_size()
        };
        let dirent = RawDirent {
            inum: inums[entry.target],
            hash: entry.hash(),
            rec_len: rec_len as u16,
            name_len: entry.name.len() as u16,
            file_type: types[entry.target],
        };
        dirent.encode(block, offset, &entry.name);
        offset += rec_len;
    }
}

/// Fills `buffer` with the bytes of `fill` (of `size` bytes) from byte `offset`; bytes past
/// its end are zero.
fn read_fill(fill: &Fill, size: u64, offset: u64, buffer: &mut [u8]) -> Result<(), MkfsError> {
    buffer.fill(0);
    match fill {
        Fill::Bytes(bytes) => {
            let start = (offset as usize).min(bytes.len());
            let end = (start + buffer.len()).min(bytes.len());
            buffer[..end - start].copy_from_slice(&bytes[start..end]);
            Ok(())
        }
        Fill::Source(path) => read_source(path, size, offset, buffer),
        Fill::QuotaChange | Fill::Journal => Ok(()),
    }
}

/// Reads `buffer.len()` bytes of the source file `path`, which had `size` bytes when the tree
/// was read, from `offset`, or up to its end.
fn read_source(path: &Path, size: u64, offset: u64, buffer: &mut [u8]) -> Result<(), MkfsError> {
    let read_error = |source| MkfsError::ReadSource {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() != size {
        return Err(MkfsError::SourceChanged(path.to_owned()));
    }
    let wanted = size.saturating_sub(offset).min(buffer.len() as u64) as usize;
    file.read_exact_at(&mut buffer[..wanted], offset)
        .map_err(read_error)?;
    Ok(())
}

/// Pairs the logical block ranges of a tree with the extents its data blocks were given:
/// `(first logical block, first device block, count)` runs that are contiguous in both.
fn segments<'a>(
    logical: &'a [Range<u64>],
    physical: &'a [Range<u64>],
) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
    let mut logical = logical.iter().cloned().peekable();
    let mut physical = physical.iter().cloned().peekable();
    std::iter::from_fn(move || {
        loop {
            let l = logical.peek_mut()?;
            let p = physical.peek_mut()?;
            if l.is_empty() {
                logical.next();
                continue;
            }
            if p.is_empty() {
                physical.next();
                continue;
            }
            let count = (l.end - l.start).min(p.end - p.start);
            let run = (l.start, p.start, count);
            l.start += count;
            p.start += count;
            return Some(run);
        }
    })
}

/// [`segments`] cut into pieces of at most [`COPY_BLOCKS`] blocks.
fn copy_runs<'a>(
    logical: &'a [Range<u64>],
    physical: &'a [Range<u64>],
) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
    segments(logical, physical).flat_map(|(l, p, count)| {
        (0..count)
            .step_by(COPY_BLOCKS as usize)
            .map(move |start| (l + start, p + start, COPY_BLOCKS.min(count - start)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_both_logical_holes_and_physical_breaks() {
        let logical = [0..3, 10..12];
        let physical = [100..102, 200..203];

        let runs: Vec<_> = segments(&logical, &physical).collect();

        assert_eq!(runs, vec![(0, 100, 2), (2, 200, 1), (10, 201, 2)]);
    }
}
