//! `ls` and `tree` over a gfs2 image: directory entries sorted by name in byte order (as
//! with `LC_ALL=C`), names starting with `.` left out unless asked for.

use std::collections::HashSet;
use std::io::Write;

use fs::gfs2::{DirEntry, FileType, Inode, Stat};

use super::format::{self, LongColumns};
use super::{Gfs2Error, ImageFilesystem};

/// Whether names that start with `.` are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hidden {
    /// Leave them out (the default of `ls` and `tree`).
    Skip,
    /// List them (`-a`); `ls` then shows `.` and `..` too.
    Show,
}

/// What `tree` counted, as its last line says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeCounts {
    /// Directories below the top one, symlinks to directories included.
    pub directories: u64,
    /// Everything else.
    pub files: u64,
}

/// `runner gfs2 ls`: lists the directory at `path` (or names the file at `path`), one name a
/// line, or with `long` one `ls -l` line each.
///
/// As coreutils does, `long` shows a symlink named by `path` itself rather than what it
/// points to, unless `path` ends in `/`.
pub fn ls(
    filesystem: &ImageFilesystem<'_>,
    path: &str,
    long: bool,
    hidden: Hidden,
    out: &mut dyn Write,
) -> Result<(), Gfs2Error> {
    let access_error = |path: &[u8]| {
        let path = lossy(path);
        move |source| Gfs2Error::Access { path, source }
    };
    let inode = if long {
        filesystem.lookup_nofollow(path)
    } else {
        filesystem.lookup(path)
    }
    .map_err(access_error(path.as_bytes()))?;

    if !inode.is_dir() {
        if long {
            let stat = inode.stat();
            let columns = LongColumns::fitting([&stat]);
            let target = link_target(filesystem, &inode).map_err(access_error(path.as_bytes()))?;
            write_long(out, &columns, &stat, path.as_bytes(), target.as_deref())?;
        } else {
            writeln!(out, "{path}")?;
        }
        return Ok(());
    }

    let entries = sorted_entries(filesystem, &inode, path.as_bytes(), |name| {
        hidden == Hidden::Show || !name.starts_with(b".")
    })?;
    if !long {
        for entry in &entries {
            out.write_all(&entry.name)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }

    let mut files = Vec::with_capacity(entries.len());
    for entry in &entries {
        let entry_path = join(path.as_bytes(), &entry.name);
        let inode = filesystem
            .open_entry(entry)
            .map_err(access_error(&entry_path))?;
        let target = link_target(filesystem, &inode).map_err(access_error(&entry_path))?;
        files.push((inode.stat(), target));
    }
    let columns = LongColumns::fitting(files.iter().map(|(stat, _)| stat));
    writeln!(
        out,
        "total {}",
        format::total_kib(files.iter().map(|(stat, _)| stat))
    )?;
    for (entry, (stat, target)) in entries.iter().zip(&files) {
        write_long(out, &columns, stat, &entry.name, target.as_deref())?;
    }
    Ok(())
}

/// Writes one `ls -l` line.
fn write_long(
    out: &mut dyn Write,
    columns: &LongColumns,
    stat: &Stat,
    name: &[u8],
    target: Option<&[u8]>,
) -> std::io::Result<()> {
    out.write_all(columns.line(stat).as_bytes())?;
    out.write_all(name)?;
    if let Some(target) = target {
        out.write_all(b" -> ")?;
        out.write_all(target)?;
    }
    out.write_all(b"\n")
}

/// The target of `inode` if it is a symlink.
fn link_target(
    filesystem: &ImageFilesystem<'_>,
    inode: &Inode,
) -> Result<Option<Vec<u8>>, super::ReadError> {
    if inode.file_type() == FileType::Symlink {
        filesystem.read_link(inode).map(Some)
    } else {
        Ok(None)
    }
}

/// The entries of directory `dir` (at `path`) whose names `keep` accepts, sorted by name.
fn sorted_entries(
    filesystem: &ImageFilesystem<'_>,
    dir: &Inode,
    path: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<DirEntry>, Gfs2Error> {
    let mut entries = filesystem.read_dir(dir).map_err(|source| Gfs2Error::List {
        path: lossy(path),
        source,
    })?;
    entries.retain(|entry| keep(&entry.name));
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// `path/name`, without doubling a `/` that ends `path`.
fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut joined = path.to_vec();
    if !joined.ends_with(b"/") {
        joined.push(b'/');
    }
    joined.extend_from_slice(name);
    joined
}

/// A path for a message; bytes that are not UTF-8 show as U+FFFD.
fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A directory being printed by `tree`: its sorted entries, the next one to print, and the
/// prefix that draws the branches of its ancestors.
struct Level {
    path: Vec<u8>,
    entries: Vec<DirEntry>,
    next: usize,
    prefix: String,
}

/// `runner gfs2 tree`: draws the tree under `path` (following a symlink `path` names, but
/// none below it) and ends with the count of directories and files, as `tree` does.
///
/// A symlink to a directory is shown as a link and counted as a directory, as `tree` counts
/// it. A directory met a second time (only a corrupt image links one twice) is marked
/// `[recursive, not followed]`. The walk keeps its own stack, so a deep tree cannot overflow
/// the runner's.
pub fn tree(
    filesystem: &ImageFilesystem<'_>,
    path: &str,
    hidden: Hidden,
    out: &mut dyn Write,
) -> Result<TreeCounts, Gfs2Error> {
    let keep = |name: &[u8]| {
        name != b"." && name != b".." && (hidden == Hidden::Show || !name.starts_with(b"."))
    };
    let top = filesystem
        .lookup(path)
        .map_err(|source| Gfs2Error::Access {
            path: path.to_owned(),
            source,
        })?;
    writeln!(out, "{path}")?;

    let mut counts = TreeCounts::default();
    let mut levels = Vec::new();
    let mut visited = HashSet::from([top.addr()]);
    if top.is_dir() {
        levels.push(Level {
            path: path.as_bytes().to_vec(),
            entries: sorted_entries(filesystem, &top, path.as_bytes(), keep)?,
            next: 0,
            prefix: String::new(),
        });
    } else {
        counts.files += 1;
    }

    while let Some(level) = levels.last_mut() {
        let Some(entry) = level.entries.get(level.next) else {
            levels.pop();
            continue;
        };
        level.next += 1;
        let is_last = level.next == level.entries.len();
        let entry_path = join(&level.path, &entry.name);
        let (branch, indent) = if is_last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let child_prefix = format!("{}{indent}", level.prefix);
        write!(out, "{}{branch}", level.prefix)?;
        out.write_all(&entry.name)?;

        let access_error = |source| Gfs2Error::Access {
            path: lossy(&entry_path),
            source,
        };
        let inode = filesystem.open_entry(entry).map_err(access_error)?;
        match inode.file_type() {
            FileType::Directory => {
                counts.directories += 1;
                if !visited.insert(inode.addr()) {
                    out.write_all(b"  [recursive, not followed]\n")?;
                    continue;
                }
                out.write_all(b"\n")?;
                let entries = sorted_entries(filesystem, &inode, &entry_path, keep)?;
                levels.push(Level {
                    path: entry_path,
                    entries,
                    next: 0,
                    prefix: child_prefix,
                });
            }
            FileType::Symlink => {
                let target = filesystem.read_link(&inode).map_err(access_error)?;
                out.write_all(b" -> ")?;
                out.write_all(&target)?;
                out.write_all(b"\n")?;
                // A dangling or looping link counts as a file, as in `tree`.
                let to_directory = filesystem
                    .lookup(&entry_path)
                    .is_ok_and(|target| target.is_dir());
                if to_directory {
                    counts.directories += 1;
                } else {
                    counts.files += 1;
                }
            }
            _ => {
                out.write_all(b"\n")?;
                counts.files += 1;
            }
        }
    }

    writeln!(
        out,
        "\n{} director{}, {} file{}",
        counts.directories,
        if counts.directories == 1 { "y" } else { "ies" },
        counts.files,
        if counts.files == 1 { "" } else { "s" }
    )?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_adds_one_slash() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/dir", b"a"), b"/dir/a");
        assert_eq!(join(b"dir/", b"\xff"), b"dir/\xff");
    }
}
