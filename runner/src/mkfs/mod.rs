//! `runner gfs2 mkfs`: builds a gfs2 image from a directory, like `mkfs.ext4 -d`.
//!
//! `mkfs.gfs2` makes only empty filesystems and filling one needs a Linux mount, so the
//! project writes its own images for `cargo run` and for tests. The image is what
//! `mkfs.gfs2` 3.5 would lay out (a superblock at 64 KiB; one rgrp per journal, then
//! ordinary rgrps; the master directory with `jindex`, `per_node`, `inum`, `statfs`, `rindex`
//! and `quota`; clean journals) with the source tree in it, and `fsck.gfs2 -n` accepts it.
//!
//! The build runs in three steps, each in its module:
//!
//! 1. **plan**: `source` reads the tree; `assemble` lists every inode, system ones
//!    first, and `plan` decides each one's shape: stuffed or a metadata tree of the needed
//!    height over the blocks that hold data (holes stay holes), linear or exhash directory
//!    with its leaves. Now the number of blocks is known; `layout` places the rgrps (and,
//!    without `--size`, picks an image size with room to spare);
//! 2. **allocate**: `alloc` hands out blocks in order, each journal in its own rgrp;
//! 3. **write**: `write` writes every dinode, tree, data block, directory, rgrp and the
//!    superblock, with the counts (`statfs`, `inum`, bitmaps) from the allocation.
//!
//! The image is written to a temporary file next to the output and renamed over it only
//! when complete: a failed build leaves nothing behind.
//!
//! # Limitations
//!
//! - Extended attributes, ACLs and file flags (`chattr`) of the source are not copied.
//! - The lock protocol is always `lock_nolock` (a single-node filesystem) and the lock table
//!   is empty.
//! - The allocator keeps one byte per data block in memory while it runs (1 MiB per 4 GiB of
//!   image at 4 KiB blocks).
//! - Quota records exist only for user 0 and group 0 and hold mkfs's value (1), not the
//!   tree's usage.

mod alloc;
mod assemble;
mod demo;
mod journal;
mod layout;
mod plan;
mod progress;
mod source;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fs::gfs2::ondisk::{
    GFS2_MAGIC, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, MULTIHOST_FORMAT, MetaHeader, RINDEX_ENTRY_SIZE,
    RawSuperblock, SUPERBLOCK_OFFSET,
};
use fs::gfs2::{Geometry, Inum, MetaType, Timestamp};

use alloc::{Allocator, BlockState};
use assemble::Assembly;
use plan::{Content, DirShape, Fill};
use progress::Progress;
use write::{ImageWriter, Placement};

pub use demo::{
    BENCH_FILE, BENCH_FILE_BYTES, DEMO_SOURCE, bench_image, build_if_stale, demo_image,
};

/// The filesystem format written (`sb_fs_format`), as `mkfs.gfs2` 3.5.
const FS_FORMAT: u32 = 1802;

/// Default size of each journal: the smallest Linux accepts.
pub const DEFAULT_JOURNAL_BYTES: u64 = 8 << 20;

/// Blocks an image without `--size` keeps free: a quarter of what it uses, at least 1 MiB.
const SPARE_FRACTION: u64 = 4;
const MIN_SPARE_BYTES: u64 = 1 << 20;

/// How to build an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Filesystem block size: a power of two from 512 to 4096.
    pub block_size: u32,
    /// Image size in bytes (rounded down to whole blocks); `None` picks one that fits the
    /// tree with room to spare.
    pub size: Option<u64>,
    /// Number of journals (nodes that may mount the filesystem at once).
    pub journals: u32,
    /// Size of each journal in bytes: 8 MiB to 1 GiB, a multiple of the block size.
    pub journal_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            block_size: 4096,
            size: None,
            journals: 1,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
        }
    }
}

/// Why an image could not be built. No partial image is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("block size {0} is not a power of two from 512 to 4096")]
    BlockSize(u32),
    #[error("{0} journals: an image has 1 to 1024")]
    JournalCount(u32),
    #[error("journal size {0} bytes: a journal is 8 MiB to 1 GiB and a multiple of the block size")]
    JournalSize(u64),
    #[error("{path}: cannot read the source: {source}")]
    ReadSource {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the source is not a directory")]
    SourceNotADirectory(PathBuf),
    #[error("{path}: the name is {length} bytes long; gfs2 names hold at most 255 bytes")]
    NameTooLong { path: PathBuf, length: usize },
    #[error(
        "{path}: a symlink target of {length} bytes does not fit: gfs2 stores 1 to {limit} \
         bytes with {block_size}-byte blocks"
    )]
    SymlinkTarget {
        path: PathBuf,
        length: usize,
        limit: usize,
        block_size: u32,
    },
    // Every file type Linux has (regular, directory, symlink, FIFO, socket, character and
    // block device) has a gfs2 dinode; this is for whatever else a source might report.
    #[error("{path}: gfs2 cannot hold this type of file (mode {mode:#o})")]
    UnsupportedFileType { path: PathBuf, mode: u32 },
    #[error("{0}: the file changed while the image was built")]
    SourceChanged(PathBuf),
    #[error(
        "{path}: the tree does not fit in {size} bytes: it needs about {needed} bytes \
         (journals and system files included)"
    )]
    DoesNotFit {
        path: PathBuf,
        size: u64,
        needed: u64,
    },
    #[error("{path}: cannot write the image: {source}")]
    WriteImage {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a build made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Block size.
    pub block_size: u32,
    /// Resource groups.
    pub rgrps: usize,
    /// Inodes from the source tree (each hard-linked file once).
    pub source_inodes: usize,
    /// Blocks in use, system files and journals included.
    pub used_blocks: u64,
    /// Free data blocks.
    pub free_blocks: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} MiB gfs2 image of {}-byte blocks in {} resource groups, {} inodes from the \
             source; {} blocks used, {} free",
            self.image_bytes >> 20,
            self.block_size,
            self.rgrps,
            self.source_inodes,
            self.used_blocks,
            self.free_blocks
        )
    }
}

impl MkfsError {
    /// The runner's exit status for this error: the image could not be made from this tree
    /// (10), or the options were wrong (64), or writing failed (9).
    pub fn runner_status(&self) -> crate::RunnerStatus {
        use crate::RunnerStatus;
        match self {
            MkfsError::BlockSize(_) | MkfsError::JournalCount(_) | MkfsError::JournalSize(_) => {
                RunnerStatus::Usage
            }
            MkfsError::WriteImage { .. } => RunnerStatus::RunnerError,
            _ => RunnerStatus::Gfs2Failed,
        }
    }
}

/// Parses a block size: 512, 1024, 2048 or 4096.
pub fn parse_block_size(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(size @ (512 | 1024 | 2048 | 4096)) => Ok(size),
        _ => Err(format!(
            "`{text}` is not a block size: 512, 1024, 2048 or 4096"
        )),
    }
}

/// Parses an image size: bytes, or a number with a `K`, `M`, `G` or `T` suffix (powers of
/// 1024, an optional `iB` or `B` after it).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let without_unit = trimmed
        .strip_suffix("iB")
        .or_else(|| trimmed.strip_suffix('B'))
        .unwrap_or(trimmed);
    let (digits, shift) = match without_unit.char_indices().last() {
        Some((index, 'K' | 'k')) => (&without_unit[..index], 10),
        Some((index, 'M' | 'm')) => (&without_unit[..index], 20),
        Some((index, 'G' | 'g')) => (&without_unit[..index], 30),
        Some((index, 'T' | 't')) => (&without_unit[..index], 40),
        _ => (without_unit, 0),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (bytes, or a number with K, M, G or T)"))?;
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size"))
}

/// Builds a gfs2 image of the directory `source` at `output` (replacing it).
pub fn make_image(source: &Path, output: &Path, options: &Options) -> Result<Summary, MkfsError> {
    check_options(options)?;
    let geometry = Geometry::new(options.block_size);
    let bsize = u64::from(options.block_size);
    let superblock_block = SUPERBLOCK_OFFSET / bsize;

    // Plan: every inode's shape, then the rgrps.
    let tree = source::SourceTree::read(source)?;
    let mut assembly = Assembly::new(
        &geometry,
        &tree,
        options.journals as usize,
        options.journal_bytes,
        now(),
    )?;
    let journal_blocks: Vec<u64> = assembly.inodes[..assembly.journals]
        .iter()
        .map(|inode| 1 + inode.extra_blocks())
        .collect();
    let other_blocks: u64 = assembly.inodes[assembly.journals..]
        .iter()
        .map(|inode| 1 + inode.extra_blocks())
        .sum();
    let rgrps = size_image(
        &geometry,
        superblock_block,
        &journal_blocks,
        other_blocks,
        source,
        options.size,
    )?;
    let total_blocks = match options.size {
        Some(size) => size / bsize,
        None => rgrps.last().map_or(0, layout::RgrpLayout::end),
    };
    let mut rindex = vec![0; rgrps.len() * RINDEX_ENTRY_SIZE];
    for (rgrp, bytes) in rgrps.iter().zip(rindex.chunks_mut(RINDEX_ENTRY_SIZE)) {
        rgrp.rindex_entry().encode(bytes);
    }
    assembly.set_rindex(&geometry, rindex);

    // Allocate: each journal in its rgrp, then everything else in order.
    let mut allocator = Allocator::new(&rgrps);
    let mut placements = Vec::with_capacity(assembly.inodes.len());
    for (index, inode) in assembly.inodes.iter().enumerate() {
        if index <= assembly.journals {
            allocator.move_to_rgrp(index);
        }
        let placement = place(&mut allocator, inode).map_err(|_| MkfsError::DoesNotFit {
            path: source.to_owned(),
            size: total_blocks * bsize,
            needed: (superblock_block + 1 + journal_blocks.iter().sum::<u64>() + other_blocks)
                * bsize,
        })?;
        placements.push(placement);
    }
    let inums: Vec<Inum> = placements
        .iter()
        .enumerate()
        .map(|(index, placement)| Inum {
            formal_ino: index as u64 + 1,
            addr: placement.dinode,
        })
        .collect();

    // The counts the allocation decided: statfs totals and the next formal number.
    let free: Vec<u32> = (0..rgrps.len())
        .map(|index| allocator.count(index, BlockState::Free))
        .collect();
    let dinodes: Vec<u32> = (0..rgrps.len())
        .map(|index| allocator.count(index, BlockState::Dinode))
        .collect();
    let data_total: u64 = rgrps.iter().map(|rgrp| u64::from(rgrp.data)).sum();
    let free_total: u64 = free.iter().map(|&count| u64::from(count)).sum();
    let dinode_total: u64 = dinodes.iter().map(|&count| u64::from(count)).sum();
    let mut statfs = Vec::with_capacity(24);
    for value in [data_total, free_total, dinode_total] {
        statfs.extend_from_slice(&value.to_be_bytes());
    }
    set_stuffed_bytes(&mut assembly.inodes[assembly.statfs].content, statfs);
    let next_formal = (inums.len() as u64 + 1).to_be_bytes().to_vec();
    set_stuffed_bytes(&mut assembly.inodes[assembly.inum].content, next_formal);

    // Write into a temporary file, renamed over the output when complete.
    let temporary = TemporaryImage::create(output)?;
    let image_bytes = total_blocks * bsize;
    temporary
        .file
        .set_len(image_bytes)
        .map_err(|source| MkfsError::WriteImage {
            path: temporary.path.clone(),
            source,
        })?;
    let used_blocks = data_total - free_total;
    let progress = Progress::new(
        (used_blocks + rgrps.iter().map(|r| u64::from(r.length)).sum::<u64>() + 1) * bsize,
        format!("building {}", output.display()),
    );
    let writer = ImageWriter::new(&temporary.file, &temporary.path, geometry, &progress);

    let links = assembly.link_counts();
    let types: Vec<u16> = assembly
        .inodes
        .iter()
        .map(|inode| inode.dirent_type())
        .collect();
    for (index, (inode, placement)) in assembly.inodes.iter().zip(&placements).enumerate() {
        writer.write_inode(index, inode, placement, &inums, &types, links[index])?;
    }
    for (index, rgrp) in rgrps.iter().enumerate() {
        let bitmap = allocator.bitmap(index);
        writer.write_rgrp(
            rgrp,
            rgrps.get(index + 1),
            &bitmap,
            free[index],
            dinodes[index],
        )?;
    }
    writer.write_superblock(
        &superblock(
            options.block_size,
            inums[assembly.master],
            inums[assembly.root],
        ),
        superblock_block,
    )?;
    progress.finish();
    temporary.commit(output)?;

    Ok(Summary {
        image_bytes,
        block_size: options.block_size,
        rgrps: rgrps.len(),
        source_inodes: tree.nodes.len(),
        used_blocks,
        free_blocks: free_total,
    })
}

fn check_options(options: &Options) -> Result<(), MkfsError> {
    let bsize = options.block_size;
    if !bsize.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bsize) {
        return Err(MkfsError::BlockSize(bsize));
    }
    if !(1..=1024).contains(&options.journals) {
        return Err(MkfsError::JournalCount(options.journals));
    }
    let journal = options.journal_bytes;
    if !(8 << 20..=1 << 30).contains(&journal) || !journal.is_multiple_of(u64::from(bsize)) {
        return Err(MkfsError::JournalSize(journal));
    }
    Ok(())
}

/// Lays out the rgrps: in `size` bytes if given, else in an image with room to spare for
/// `other_blocks` blocks besides the journals (and the rindex, whose size the layout decides).
fn size_image(
    geometry: &Geometry,
    superblock: u64,
    journal_blocks: &[u64],
    other_blocks: u64,
    source: &Path,
    size: Option<u64>,
) -> Result<Vec<layout::RgrpLayout>, MkfsError> {
    let bsize = u64::from(geometry.bsize);
    let journal_rgrps: u64 = journal_blocks
        .iter()
        .map(|&blocks| {
            let data = blocks.next_multiple_of(4);
            data + u64::from(layout::header_blocks(data, geometry.bsize))
        })
        .sum();
    // The rindex grows out of its dinode past (bsize - 232) / 96 rgrps.
    let needed = |rgrps: usize| {
        let bytes = (rgrps * RINDEX_ENTRY_SIZE) as u64;
        let rindex_blocks = if bytes <= geometry.stuffed_capacity() {
            0
        } else {
            plan::TreeShape::full(geometry, bytes.div_ceil(bsize)).data_blocks() + 1
        };
        other_blocks + rindex_blocks
    };
    let too_small = |size: u64, rgrps: usize| MkfsError::DoesNotFit {
        path: source.to_owned(),
        size,
        needed: (superblock + 1 + journal_rgrps + needed(rgrps)) * bsize,
    };

    if let Some(size) = size {
        let total = size / bsize;
        let rgrps = layout::lay_out(geometry.bsize, superblock, journal_blocks, total)
            .ok_or_else(|| too_small(size, 1))?;
        if layout::ordinary_capacity(&rgrps, journal_blocks.len()) < needed(rgrps.len()) {
            return Err(too_small(size, rgrps.len()));
        }
        return Ok(rgrps);
    }

    let spare = |blocks: u64| (blocks / SPARE_FRACTION).max(MIN_SPARE_BYTES / bsize);
    let mib = (1 << 20) / bsize;
    let mut total =
        (superblock + 1 + journal_rgrps + needed(1) + spare(needed(1))).next_multiple_of(mib);
    loop {
        if let Some(rgrps) = layout::lay_out(geometry.bsize, superblock, journal_blocks, total) {
            let wanted = needed(rgrps.len());
            if layout::ordinary_capacity(&rgrps, journal_blocks.len()) >= wanted + spare(wanted) {
                return Ok(rgrps);
            }
        }
        total = (total + total / 16).next_multiple_of(mib);
    }
}

/// Allocates the blocks of `inode`: dinode, indirect blocks, data (or hash-table) blocks,
/// then leaves.
fn place(
    allocator: &mut Allocator,
    inode: &plan::InodePlan,
) -> Result<Placement, alloc::OutOfSpace> {
    let mut placement = Placement {
        dinode: allocator.allocate_one(BlockState::Dinode)?,
        ..Placement::default()
    };
    let tree = match &inode.content {
        Content::Stuffed { .. } => None,
        Content::Tree { shape, .. } => Some(shape),
        Content::Directory(dir) => match &dir.shape {
            DirShape::Linear => None,
            DirShape::Exhash(exhash) => exhash.table.as_ref(),
        },
    };
    if let Some(shape) = tree {
        placement.indirect = allocator
            .allocate(shape.indirect, BlockState::Used)?
            .into_iter()
            .flatten()
            .collect();
        placement.data = allocator.allocate(shape.data_blocks(), BlockState::Used)?;
    }
    if let Content::Directory(dir) = &inode.content
        && let DirShape::Exhash(exhash) = &dir.shape
    {
        for leaf in &exhash.leaves {
            let blocks = allocator.allocate(leaf.blocks.len() as u64, BlockState::Used)?;
            placement
                .leaves
                .push(blocks.into_iter().flatten().collect());
        }
    }
    Ok(placement)
}

/// Replaces the bytes of a stuffed system file planned with placeholder zeros.
fn set_stuffed_bytes(content: &mut Content, bytes: Vec<u8>) {
    if let Content::Stuffed { size, fill } = content {
        debug_assert_eq!(*size, bytes.len() as u64);
        *fill = Fill::Bytes(bytes);
    }
}

/// The superblock of an image of `bsize`-byte blocks.
fn superblock(bsize: u32, master_dir: Inum, root_dir: Inum) -> RawSuperblock {
    let mut lock_protocol = [0; 64];
    lock_protocol[..11].copy_from_slice(b"lock_nolock");
    RawSuperblock {
        header: MetaHeader {
            magic: GFS2_MAGIC,
            meta_type: MetaType::Superblock as u32,
            format: MetaType::Superblock.format(),
        },
        fs_format: FS_FORMAT,
        multihost_format: MULTIHOST_FORMAT,
        bsize,
        bsize_shift: bsize.trailing_zeros(),
        master_dir,
        root_dir,
        lock_protocol,
        lock_table: [0; 64],
        uuid: random_uuid(),
    }
}

/// A version-4 (random) UUID, from the standard library's randomly keyed hasher.
fn random_uuid() -> [u8; 16] {
    use std::hash::{BuildHasher as _, Hasher as _};

    let mut uuid = [0; 16];
    for half in uuid.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        half.copy_from_slice(&hasher.finish().to_be_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanoseconds: since_epoch.subsec_nanos(),
    }
}

/// The image being written, removed unless [`TemporaryImage::commit`] renames it.
struct TemporaryImage {
    file: File,
    path: PathBuf,
    committed: bool,
}

impl TemporaryImage {
    /// Creates `.NAME.tmp-PID` next to `output`.
    fn create(output: &Path) -> Result<Self, MkfsError> {
        let name = output
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let path = output.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&path).map_err(|source| MkfsError::WriteImage {
            path: output.to_owned(),
            source,
        })?;
        Ok(Self {
            file,
            path,
            committed: false,
        })
    }

    /// Flushes the image and renames it to `output`.
    fn commit(mut self, output: &Path) -> Result<(), MkfsError> {
        let error = |source| MkfsError::WriteImage {
            path: output.to_owned(),
            source,
        };
        self.file.sync_all().map_err(error)?;
        std::fs::rename(&self.path, output).map_err(error)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TemporaryImage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "M", "12X", "-5M", "0", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_options_are_refused_before_anything_is_read() {
        let source = Path::new("/nonexistent/source");
        let output = Path::new("/nonexistent/out.img");
        for (options, expected) in [
            (
                Options {
                    block_size: 2000,
                    ..Options::default()
                },
                "block size 2000",
            ),
            (
                Options {
                    block_size: 8192,
                    ..Options::default()
                },
                "block size 8192",
            ),
            (
                Options {
                    journals: 0,
                    ..Options::default()
                },
                "0 journals",
            ),
            (
                Options {
                    journal_bytes: 1 << 20,
                    ..Options::default()
                },
                "journal size",
            ),
        ] {
            let error = make_image(source, output, &options).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
