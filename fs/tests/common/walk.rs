//! Reading a whole filesystem the way a user would, for the corrupt-image tests and the
//! fuzz target: a corrupt image must give errors, never a panic or a hang.

use std::collections::{BTreeMap, BTreeSet};

use drivers::block::BlockDevice;
use embedded_io::{Read, Seek, SeekFrom};
use fs::gfs2::{Error, Extent, FileType, Filesystem, Inode};

/// Bytes read from the start and from the end of each file.
const READ_WINDOW: usize = 64 * 1024;

/// What a walk saw.
#[derive(Debug, Default)]
pub struct WalkReport {
    pub directories: u64,
    pub entries: u64,
    pub bytes_read: u64,
    /// Errors met, by their `Debug` text without the details.
    pub errors: BTreeMap<String, u64>,
}

impl WalkReport {
    fn note<E: core::fmt::Debug>(&mut self, error: &Error<E>) {
        let text = format!("{error:?}");
        let kind = text
            .split(['(', ' ', '{'])
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// Opens `device` and reads everything reachable from the root and the master directory:
/// every listing, every inode, the start and end of every file and its block map, every
/// symlink target, lookups by name and by path of some entries of each directory and of
/// every symlink, and the rgrps. Errors are counted, not returned.
pub fn walk<D: BlockDevice>(device: D) -> WalkReport {
    let mut report = WalkReport::default();
    let filesystem = match Filesystem::open(device) {
        Ok(filesystem) => filesystem,
        Err(error) => {
            report.note(&error);
            return report;
        }
    };

    for rgrp in filesystem.rgrps() {
        if let Err(error) = filesystem.rgrp_header(rgrp) {
            report.note(&error);
        }
        if let Err(error) = filesystem.rgrp_bitmap(rgrp) {
            report.note(&error);
        }
    }

    let mut buf = vec![0; READ_WINDOW];
    let mut visited = BTreeSet::new();
    // Directories still to list, with their paths from the root (none for the master's).
    let mut pending = vec![
        (filesystem.root().clone(), Some(Vec::new())),
        (filesystem.master().clone(), None),
    ];
    while let Some((dir, path)) = pending.pop() {
        if !visited.insert(dir.addr()) {
            continue;
        }
        report.directories += 1;
        walk_dir(&filesystem, &dir, path, &mut pending, &mut buf, &mut report);
    }
    report
}

/// Lists `dir`, looks some of its entries up by name (and by path, when `path` is its path
/// from the root), reads each entry's inode, queues subdirectories and reads files.
fn walk_dir<D: BlockDevice>(
    filesystem: &Filesystem<D>,
    dir: &Inode,
    path: Option<Vec<u8>>,
    pending: &mut Vec<(Inode, Option<Vec<u8>>)>,
    buf: &mut [u8],
    report: &mut WalkReport,
) {
    let entries = match filesystem.read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            report.note(&error);
            return;
        }
    };

    for (index, entry) in entries.iter().enumerate() {
        report.entries += 1;
        if entry.name == b"." || entry.name == b".." {
            continue;
        }
        let entry_path = path
            .as_ref()
            .map(|path| [&path[..], b"/", &entry.name].concat());
        let is_symlink = entry.dirent_type == FileType::Symlink.dirent_type();
        if index < 4 || is_symlink {
            look_up(
                filesystem,
                dir,
                &entry.name,
                entry_path.as_deref(),
                is_symlink,
                report,
            );
        }

        let inode = match filesystem.open_entry(entry) {
            Ok(inode) => inode,
            Err(error) => {
                report.note(&error);
                continue;
            }
        };
        let _ = inode.stat();
        match inode.file_type() {
            FileType::Directory => pending.push((inode, entry_path)),
            FileType::Regular => read_file(filesystem, inode, buf, report),
            FileType::Symlink => {
                if let Err(error) = filesystem.read_link(&inode) {
                    report.note(&error);
                }
            }
            _ => {}
        }
    }
}

/// Looks `name` up in `dir`, and by its path from the root when it has one; a symlink is
/// also followed, and a target that does not exist is no error.
fn look_up<D: BlockDevice>(
    filesystem: &Filesystem<D>,
    dir: &Inode,
    name: &[u8],
    path: Option<&[u8]>,
    is_symlink: bool,
    report: &mut WalkReport,
) {
    match filesystem.find_entry(dir, name) {
        Ok(Some(_)) => {}
        Ok(None) => report.note::<D::Error>(&Error::NotFound),
        Err(error) => report.note(&error),
    }
    let Some(path) = path else { return };
    if let Err(error) = filesystem.lookup_nofollow(path) {
        report.note(&error);
    }
    if is_symlink {
        match filesystem.lookup(path) {
            Ok(_) | Err(Error::NotFound | Error::NotADirectory) => {}
            Err(error) => report.note(&error),
        }
    }
}

fn read_file<D: BlockDevice>(
    filesystem: &Filesystem<D>,
    inode: Inode,
    buf: &mut [u8],
    report: &mut WalkReport,
) {
    if !inode.is_stuffed()
        && let Err(error) = map_whole_file(filesystem, &inode)
    {
        report.note(&error);
    }

    let size = inode.size();
    let mut file = match filesystem.open_inode(inode) {
        Ok(file) => file,
        Err(error) => {
            report.note(&error);
            return;
        }
    };
    for start in [0, size.saturating_sub(READ_WINDOW as u64)] {
        let result = file
            .seek(SeekFrom::Start(start))
            .and_then(|_| file.read(buf));
        match result {
            Ok(read) => report.bytes_read += read as u64,
            Err(error) => report.note(&error),
        }
    }
}

/// Maps every logical block of a file, extent by extent.
fn map_whole_file<D: BlockDevice>(
    filesystem: &Filesystem<D>,
    inode: &Inode,
) -> Result<(), Error<D::Error>> {
    let bsize = u64::from(filesystem.block_size());
    let blocks = inode.size().div_ceil(bsize);
    let mut lblock = 0;
    while lblock < blocks {
        let extent = filesystem.map_extent(inode, lblock, blocks - lblock)?;
        assert!(!extent.is_empty(), "an extent covers at least one block");
        if let Extent::Mapped { start, len } = extent {
            assert!(
                start + len <= filesystem.block_count(),
                "mapped past the device end"
            );
        }
        lblock += extent.len();
    }
    Ok(())
}
