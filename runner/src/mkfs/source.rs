//! Reading the source directory: the tree of files the image will hold.
//!
//! The tree is read once, before anything is laid out, into a list of [`SourceNode`]s: the
//! metadata of each file (mode, owner, times, device numbers), the entries of each directory
//! sorted by name, each symlink's target, and where each regular file holds data (found with
//! `SEEK_DATA`/`SEEK_HOLE`, so the holes of a sparse file stay holes in the image). A file
//! with several names in the tree (a hard link) is one node named by several entries. File
//! contents are read later, when the image is written.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use ::fs::gfs2::Timestamp;
use ::fs::gfs2::ondisk::MAX_NAME_LEN;

use super::MkfsError;

/// The `S_IFMT` bits of a mode and the types the writer makes itself.
pub(crate) mod mode {
    pub const S_IFMT: u32 = 0o170_000;
    pub const S_IFREG: u32 = 0o100_000;
    pub const S_IFDIR: u32 = 0o040_000;
}

/// The tree read from the source directory; node 0 is its root.
#[derive(Debug)]
pub struct SourceTree {
    /// Every file, directory and symlink, each once however many names it has.
    pub nodes: Vec<SourceNode>,
}

/// One file of the source tree.
#[derive(Debug)]
pub struct SourceNode {
    /// The first path it was found under, for reading it and for error messages.
    pub path: PathBuf,
    /// Mode (type and permissions), owner and times.
    pub attributes: Attributes,
    /// What the file holds.
    pub kind: SourceKind,
}

/// The attributes a dinode records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// The whole mode: `S_IFMT` type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification.
    pub mtime: Timestamp,
    /// Last change.
    pub ctime: Timestamp,
    /// Device major number (device files).
    pub major: u32,
    /// Device minor number (device files).
    pub minor: u32,
}

/// What a source file holds.
#[derive(Debug)]
pub enum SourceKind {
    /// A regular file of `size` bytes whose data lies in the byte ranges `data` (sorted and
    /// disjoint; everything else is a hole).
    Regular { size: u64, data: Vec<Range<u64>> },
    /// A directory and its entries, sorted by name.
    Directory { entries: Vec<SourceEntry> },
    /// A symbolic link.
    Symlink { target: Vec<u8> },
    /// A FIFO, socket or device node: only its attributes.
    Special,
}

/// A name in a directory.
#[derive(Debug)]
pub struct SourceEntry {
    /// The name, as bytes.
    pub name: Vec<u8>,
    /// The index of the node it names.
    pub node: usize,
}

impl SourceTree {
    /// Reads the tree under `root`, which must be a directory.
    pub fn read(root: &Path) -> Result<Self, MkfsError> {
        let metadata = fs::symlink_metadata(root).map_err(|source| MkfsError::ReadSource {
            path: root.to_owned(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(MkfsError::SourceNotADirectory(root.to_owned()));
        }

        let mut reader = TreeReader {
            nodes: Vec::new(),
            links: HashMap::new(),
        };
        reader.read_node(root, &metadata)?;
        Ok(Self {
            nodes: reader.nodes,
        })
    }
}

struct TreeReader {
    nodes: Vec<SourceNode>,
    /// Nodes of files with more than one link, by device and inode number.
    links: HashMap<(u64, u64), usize>,
}

impl TreeReader {
    /// Reads the file at `path` (and, for a directory, everything below it) and returns its
    /// node index.
    fn read_node(&mut self, path: &Path, metadata: &Metadata) -> Result<usize, MkfsError> {
        let identity = (metadata.dev(), metadata.ino());
        if !metadata.is_dir()
            && metadata.nlink() > 1
            && let Some(&node) = self.links.get(&identity)
        {
            return Ok(node);
        }

        let read_error = |source| MkfsError::ReadSource {
            path: path.to_owned(),
            source,
        };
        let file_type = metadata.file_type();
        let kind = if file_type.is_dir() {
            // Filled in below, once this directory has its index.
            SourceKind::Directory {
                entries: Vec::new(),
            }
        } else if file_type.is_file() {
            let file = File::open(path).map_err(read_error)?;
            SourceKind::Regular {
                size: metadata.len(),
                data: data_ranges(&file, metadata.len()).map_err(read_error)?,
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(read_error)?;
            SourceKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if file_type.is_fifo()
            || file_type.is_socket()
            || file_type.is_block_device()
            || file_type.is_char_device()
        {
            SourceKind::Special
        } else {
            return Err(MkfsError::UnsupportedFileType {
                path: path.to_owned(),
                mode: metadata.mode(),
            });
        };

        let index = self.nodes.len();
        self.nodes.push(SourceNode {
            path: path.to_owned(),
            attributes: attributes(metadata),
            kind,
        });
        if !metadata.is_dir() && metadata.nlink() > 1 {
            self.links.insert(identity, index);
        }

        if metadata.is_dir() {
            let entries = self.read_dir(path)?;
            self.nodes[index].kind = SourceKind::Directory { entries };
        }
        Ok(index)
    }

    /// Reads the entries of the directory at `path`, sorted by name.
    fn read_dir(&mut self, path: &Path) -> Result<Vec<SourceEntry>, MkfsError> {
        let read_error = |path: &Path| {
            let path = path.to_owned();
            move |source| MkfsError::ReadSource { path, source }
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(read_error(path))? {
            let entry = entry.map_err(read_error(path))?;
            names.push(entry.file_name());
        }
        names.sort();

        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(&name);
            check_name(&child, name.as_bytes())?;
            let metadata = fs::symlink_metadata(&child).map_err(read_error(&child))?;
            let node = self.read_node(&child, &metadata)?;
            entries.push(SourceEntry {
                name: name.as_bytes().to_vec(),
                node,
            });
        }
        Ok(entries)
    }
}

/// Checks that `name` (the last component of `path`) can be a gfs2 directory entry.
pub(crate) fn check_name(path: &Path, name: &[u8]) -> Result<(), MkfsError> {
    if name.len() > MAX_NAME_LEN {
        return Err(MkfsError::NameTooLong {
            path: path.to_owned(),
            length: name.len(),
        });
    }
    Ok(())
}

fn attributes(metadata: &Metadata) -> Attributes {
    let time = |seconds: i64, nanoseconds: i64| Timestamp {
        seconds,
        nanoseconds: nanoseconds.clamp(0, 999_999_999) as u32,
    };
    let rdev = metadata.rdev();
    Attributes {
        mode: metadata.mode(),
        uid: metadata.uid(),
        gid: metadata.gid(),
        atime: time(metadata.atime(), metadata.atime_nsec()),
        mtime: time(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time(metadata.ctime(), metadata.ctime_nsec()),
        // glibc's `gnu_dev_major`/`gnu_dev_minor` split of a 64-bit `dev_t`.
        major: (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32,
        minor: ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
    }
}

/// The byte ranges of `file` (of `size` bytes) that hold data, found with `SEEK_DATA` and
/// `SEEK_HOLE`. A filesystem without them reports the whole file as data, which is correct,
/// only not sparse.
fn data_ranges(file: &File, size: u64) -> std::io::Result<Vec<Range<u64>>> {
    use rustix::fs::{SeekFrom, seek};
    use rustix::io::Errno;

    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < size {
        let start = match seek(file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // No data after `offset`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(errno) => return Err(errno.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))?.min(size);
        if start >= end {
            break;
        }
        ranges.push(start..end);
        offset = end;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_over_255_bytes_are_refused_naming_the_path() {
        let path = Path::new("/src/dir");
        assert!(check_name(path, &[b'a'; 255]).is_ok());

        let error = check_name(path, &[b'a'; 256]).unwrap_err();

        assert!(matches!(error, MkfsError::NameTooLong { length: 256, .. }));
        assert!(error.to_string().starts_with("/src/dir: "), "{error}");
    }

    #[test]
    fn sparse_files_report_only_their_data() {
        use std::io::{Seek as _, SeekFrom as StdSeekFrom, Write as _};

        let path = crate::kernel_build::runner_output_dir().join("sparse-source-test");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(&path).unwrap();
        file.set_len(8 << 20).unwrap();
        file.seek(StdSeekFrom::Start(4 << 20)).unwrap();
        file.write_all(&[1; 100]).unwrap();
        drop(file);

        let file = File::open(&path).unwrap();
        let ranges = data_ranges(&file, 8 << 20).unwrap();
        fs::remove_file(&path).unwrap();

        // The data lies in one range around 4 MiB, however the filesystem rounds it.
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert!(ranges[0].start <= 4 << 20 && ranges[0].end >= (4 << 20) + 100);
        assert!(ranges[0].end - ranges[0].start < 1 << 20, "{ranges:?}");
    }
}
