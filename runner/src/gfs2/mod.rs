//! `runner gfs2 info|ls|cat|stat|tree`: look inside a gfs2 image file from the host, with the
//! same reader (the `fs` crate) the kernel uses.
//!
//! Reading an image on the host shows what the kernel will see in it, and checks the reader
//! against the tools people know: the listings take the shapes of coreutils `ls`, `stat` and
//! `cat` and of `tree`, with numeric owners and times in UTC, so they compare line for line.
//!
//! [`Image::read`] loads the whole image file into memory (images are tens of MiB) and
//! [`Image::open`] opens the filesystem on it through a [`RamDisk`]. Each command writes to
//! any [`Write`], so tests can run it without a process.
//!
//! # Limitations
//!
//! - Names are written as their raw bytes, never quoted or escaped as `ls` does on a
//!   terminal.
//! - Owners and groups are numbers: the image's users are not the host's.
//! - Entries that cannot be read stop the command instead of being skipped with a message
//!   as `ls` and `tree` do.
//! - Paths given on the command line must be UTF-8 (names inside the image need not be).

pub mod format;
mod listing;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use drivers::block::{BlockError, RamDisk};
use embedded_io::Read as _;
use fs::gfs2::{BitmapCounts, FileType, Filesystem, RgrpHeader, RindexEntry};

use crate::RunnerStatus;

pub use listing::{Hidden, TreeCounts, ls, tree};

/// A gfs2 filesystem read from an image held in memory.
pub type ImageFilesystem<'a> = Filesystem<RamDisk<'a>>;

/// An error of the gfs2 reader on an in-memory image.
pub type ReadError = fs::gfs2::Error<BlockError>;

/// Device block size of the RAM disk the image is read through: the smallest gfs2 allows, so
/// any filesystem block size fits.
const DEVICE_BLOCK_SIZE: usize = 512;

/// How much of a file `cat` holds in memory at once.
const CAT_CHUNK: usize = 1 << 20;

/// Why a gfs2 command failed.
#[derive(Debug, thiserror::Error)]
pub enum Gfs2Error {
    /// The image file could not be read from the host.
    #[error("cannot read the image '{}': {source}", image.display())]
    ReadImage {
        /// The image file.
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The image holds no gfs2 filesystem the reader accepts.
    #[error("cannot open a gfs2 filesystem in '{}': {source}", image.display())]
    Open {
        /// The image file.
        image: PathBuf,
        #[source]
        source: ReadError,
    },
    /// A path in the image could not be resolved or its inode read.
    #[error("cannot access '{path}': {}", Problem(source))]
    Access {
        /// The path, as given.
        path: String,
        #[source]
        source: ReadError,
    },
    /// A directory of the image could not be listed.
    #[error("cannot open directory '{path}': {}", Problem(source))]
    List {
        /// The directory's path.
        path: String,
        #[source]
        source: ReadError,
    },
    /// A file of the image could not be read.
    #[error("cannot read '{path}': {}", Problem(source))]
    Read {
        /// The file's path, as given.
        path: String,
        #[source]
        source: ReadError,
    },
    /// The resource groups could not be read.
    #[error(
        "cannot read resource group {index} at block {addr}: {}",
        Problem(source)
    )]
    Rgrp {
        /// Index in the rindex.
        index: usize,
        /// Address of its header.
        addr: u64,
        #[source]
        source: ReadError,
    },
    /// The totals over every resource group could not be counted.
    #[error("cannot count the blocks of the resource groups: {}", Problem(.0))]
    Totals(#[source] ReadError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl Gfs2Error {
    /// The runner's exit status for this error: host I/O is the runner's own failure; what
    /// the image lacks or breaks is a gfs2 failure.
    pub fn runner_status(&self) -> RunnerStatus {
        match self {
            Gfs2Error::ReadImage { .. } | Gfs2Error::Output(_) => RunnerStatus::RunnerError,
            _ => RunnerStatus::Gfs2Failed,
        }
    }

    /// Whether the reader of the output went away (`runner gfs2 cat ... | head`), which is
    /// no reason for a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Gfs2Error::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// A reader error as a sentence about a path, capitalized as `strerror` text is:
/// `No such file or directory`.
struct Problem<'a>(&'a ReadError);

impl std::fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => write!(f, "{}{}", first.to_uppercase(), chars.as_str()),
            None => Ok(()),
        }
    }
}

/// A gfs2 image file read into memory.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Image {
    /// Reads the image file at `path`.
    pub fn read(path: &Path) -> Result<Self, Gfs2Error> {
        let bytes = std::fs::read(path).map_err(|source| Gfs2Error::ReadImage {
            image: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            bytes,
        })
    }

    /// Opens the filesystem in the image.
    pub fn open(&self) -> Result<ImageFilesystem<'_>, Gfs2Error> {
        let open_error = |source| Gfs2Error::Open {
            image: self.path.clone(),
            source,
        };
        let device = RamDisk::new(&self.bytes, DEVICE_BLOCK_SIZE).map_err(|error| {
            open_error(ReadError::Device {
                block: 0,
                source: error,
            })
        })?;
        Filesystem::open(device).map_err(open_error)
    }
}

/// One resource group as `info` shows it: its rindex entry, header and bitmap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RgrpSummary {
    /// The rindex entry.
    pub entry: RindexEntry,
    /// The header's counts.
    pub header: RgrpHeader,
    /// The bitmap's counts.
    pub bitmap: BitmapCounts,
}

/// What `info` found disagreeing between the rgrp headers and their bitmaps, one sentence
/// each; empty when they agree.
pub type Warnings = Vec<String>;

/// `runner gfs2 info`: the superblock, the size, each resource group and the totals. The
/// totals of the rgrp headers are checked against a count of their bitmaps; what disagrees
/// is returned as warnings (the output is written all the same).
pub fn info(filesystem: &ImageFilesystem<'_>, out: &mut dyn Write) -> Result<Warnings, Gfs2Error> {
    let superblock = filesystem.superblock();
    let (root, master) = (superblock.root_dir(), superblock.master_dir());
    let block_size = filesystem.block_size();
    let block_count = filesystem.block_count();
    writeln!(out, "superblock       block {}", superblock.block())?;
    writeln!(
        out,
        "format           {} (multihost {})",
        superblock.fs_format(),
        superblock.multihost_format()
    )?;
    writeln!(out, "block size       {block_size} bytes")?;
    writeln!(
        out,
        "lock protocol    {}",
        String::from_utf8_lossy(superblock.lock_protocol())
    )?;
    writeln!(
        out,
        "lock table       {}",
        String::from_utf8_lossy(superblock.lock_table())
    )?;
    writeln!(out, "uuid             {}", format::uuid(superblock.uuid()))?;
    writeln!(
        out,
        "root directory   inode {} (formal {})",
        root.addr, root.formal_ino
    )?;
    writeln!(
        out,
        "master directory inode {} (formal {})",
        master.addr, master.formal_ino
    )?;
    writeln!(
        out,
        "blocks           {block_count} of {block_size} bytes ({})",
        format::binary_size(block_count.saturating_mul(block_size.into()))
    )?;

    let rgrps = rgrp_summaries(filesystem)?;
    writeln!(out, "resource groups  {}", rgrps.len())?;
    writeln!(
        out,
        "  {:>10} {:>6} {:>11} {:>10} {:>8}",
        "address", "length", "data blocks", "free", "dinodes"
    )?;
    let mut warnings = Vec::new();
    for rgrp in &rgrps {
        let (entry, header) = (&rgrp.entry, &rgrp.header);
        writeln!(
            out,
            "  {:>10} {:>6} {:>11} {:>10} {:>8}",
            entry.addr, entry.length, entry.data, header.free, header.dinodes
        )?;
        let place = format!("resource group at block {}", entry.addr);
        warnings.extend(count_warnings(
            &place,
            header.free.into(),
            header.dinodes.into(),
            &rgrp.bitmap,
        ));
    }

    let usage = filesystem.usage().map_err(Gfs2Error::Totals)?;
    let bitmap = filesystem.bitmap_usage().map_err(Gfs2Error::Totals)?;
    writeln!(
        out,
        "data blocks      {} ({} free, {} used)",
        usage.data_blocks,
        usage.free,
        usage.used()
    )?;
    writeln!(out, "dinodes          {}", usage.dinodes)?;
    warnings.extend(count_warnings(
        "all resource groups",
        usage.free,
        usage.dinodes,
        &bitmap,
    ));
    Ok(warnings)
}

/// Reads the header and bitmap of every resource group.
fn rgrp_summaries(filesystem: &ImageFilesystem<'_>) -> Result<Vec<RgrpSummary>, Gfs2Error> {
    filesystem
        .rgrps()
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let rgrp_error = |source| Gfs2Error::Rgrp {
                index,
                addr: entry.addr,
                source,
            };
            Ok(RgrpSummary {
                entry: *entry,
                header: filesystem.rgrp_header(entry).map_err(rgrp_error)?,
                bitmap: filesystem.rgrp_bitmap(entry).map_err(rgrp_error)?,
            })
        })
        .collect()
}

/// Where the header counts of `place` (`free`, `dinodes`) disagree with its bitmap counts.
/// A dinode unlinked while open is still allocated, so headers count it among the dinodes.
fn count_warnings(place: &str, free: u64, dinodes: u64, bitmap: &BitmapCounts) -> Warnings {
    let mut warnings = Vec::new();
    if free != bitmap.free {
        warnings.push(format!(
            "{place}: the headers count {free} free blocks, the bitmaps {}",
            bitmap.free
        ));
    }
    let bitmap_dinodes = bitmap.dinodes + bitmap.unlinked;
    if dinodes != bitmap_dinodes {
        warnings.push(format!(
            "{place}: the headers count {dinodes} dinodes, the bitmaps {bitmap_dinodes}"
        ));
    }
    warnings
}

/// `runner gfs2 cat`: writes the content of the regular file at `path` (following
/// symlinks) to `out`, a chunk at a time, so a large sparse file never sits in memory whole.
pub fn cat(
    filesystem: &ImageFilesystem<'_>,
    path: &str,
    out: &mut dyn Write,
) -> Result<(), Gfs2Error> {
    let read_error = |source| Gfs2Error::Read {
        path: path.to_owned(),
        source,
    };
    let inode = filesystem
        .lookup(path)
        .map_err(|source| Gfs2Error::Access {
            path: path.to_owned(),
            source,
        })?;
    let mut file = filesystem.open_inode(inode).map_err(read_error)?;

    let mut chunk = vec![0; CAT_CHUNK];
    loop {
        let read = file.read(&mut chunk).map_err(read_error)?;
        if read == 0 {
            return Ok(());
        }
        out.write_all(&chunk[..read])?;
    }
}

/// `runner gfs2 stat`: the attributes of the file at `path` (not following a final
/// symlink), in the shape of coreutils `stat`.
pub fn stat(
    filesystem: &ImageFilesystem<'_>,
    path: &str,
    out: &mut dyn Write,
) -> Result<(), Gfs2Error> {
    let access_error = |source| Gfs2Error::Access {
        path: path.to_owned(),
        source,
    };
    let inode = filesystem.lookup_nofollow(path).map_err(access_error)?;
    let stat = inode.stat();

    out.write_all(b"  File: ")?;
    out.write_all(path.as_bytes())?;
    if stat.file_type == FileType::Symlink {
        let target = filesystem.read_link(&inode).map_err(access_error)?;
        out.write_all(b" -> ")?;
        out.write_all(&target)?;
    }
    writeln!(
        out,
        "\n  Size: {:<10}\tBlocks: {:<10} IO Block: {:<6} {}",
        stat.size,
        stat.sectors(),
        stat.block_size,
        format::file_type_name(&stat)
    )?;
    if format::is_device(stat.file_type) {
        writeln!(
            out,
            "Inode: {:<11} Links: {:<5} Device type: {},{}",
            stat.ino, stat.nlink, stat.major, stat.minor
        )?;
    } else {
        writeln!(out, "Inode: {:<11} Links: {}", stat.ino, stat.nlink)?;
    }
    writeln!(
        out,
        "Access: ({:04o}/{})  Uid: ({:5})   Gid: ({:5})",
        stat.permissions(),
        stat.mode_string(),
        stat.uid,
        stat.gid
    )?;
    writeln!(out, "Access: {}", format::nanoseconds(stat.atime))?;
    writeln!(out, "Modify: {}", format::nanoseconds(stat.mtime))?;
    writeln!(out, "Change: {}", format::nanoseconds(stat.ctime))?;
    // gfs2 records no creation time.
    writeln!(out, " Birth: -")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_like_strerror() {
        let error = Gfs2Error::Access {
            path: "/nope".into(),
            source: ReadError::NotFound,
        };
        assert_eq!(
            error.to_string(),
            "cannot access '/nope': No such file or directory"
        );
        assert_eq!(error.runner_status(), RunnerStatus::Gfs2Failed);
    }

    #[test]
    fn host_io_errors_are_the_runners_own() {
        let error = Gfs2Error::ReadImage {
            image: "/no/image".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(
            error
                .to_string()
                .starts_with("cannot read the image '/no/image': ")
        );
        assert_eq!(error.runner_status(), RunnerStatus::RunnerError);

        let pipe = Gfs2Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
    }

    #[test]
    fn disagreeing_counts_are_warned_about() {
        let bitmap = BitmapCounts {
            free: 10,
            used: 5,
            unlinked: 1,
            dinodes: 3,
        };

        assert!(count_warnings("here", 10, 4, &bitmap).is_empty());
        let warnings = count_warnings("here", 11, 3, &bitmap);
        assert_eq!(
            warnings,
            [
                "here: the headers count 11 free blocks, the bitmaps 10",
                "here: the headers count 3 dinodes, the bitmaps 4"
            ]
        );
    }
}
