//! The reader sees exactly what Linux wrote: every line of the fixtures' manifests.
//!
//! The manifests list every entry of the images as Linux 6.1's gfs2 showed it after a
//! remount: type, mode, size, link count, content hash or symlink target or device numbers,
//! inode number, owner and modification time. Each line is checked through path lookup,
//! `stat`, a full read through `embedded_io::Read`, and `read_link`; every directory's
//! listing must hold exactly the manifest's children.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::ManifestEntry;
use drivers::block::RamDisk;
use embedded_io::Read;
use fs::gfs2::{FileType, Filesystem, ondisk};
use sha2::{Digest, Sha256};

type Gfs2<'a> = Filesystem<RamDisk<'a>>;

fn open(image: &[u8]) -> Gfs2<'_> {
    Filesystem::open(RamDisk::new(image, 512).unwrap()).unwrap()
}

fn kind(file_type: FileType) -> char {
    match file_type {
        FileType::Regular => 'f',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::Fifo => 'p',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Socket => 's',
    }
}

fn sha256_of_file(filesystem: &Gfs2<'_>, path: &str) -> String {
    let inode = filesystem.lookup_nofollow(path).unwrap();
    let mut file = filesystem.open_inode(inode).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        let read = file.read(&mut buf).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
        total += read as u64;
    }
    assert_eq!(total, file.size(), "{path}: bytes read");
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_entry(filesystem: &Gfs2<'_>, entry: &ManifestEntry) {
    let path = &entry.path;
    let inode = filesystem
        .lookup_nofollow(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let stat = inode.stat();

    assert_eq!(kind(stat.file_type), entry.kind, "{path}: type");
    assert_eq!(stat.mode, entry.mode, "{path}: mode");
    assert_eq!(stat.size, entry.size, "{path}: size");
    assert_eq!(stat.nlink, entry.nlink, "{path}: nlink");
    assert_eq!(stat.ino, entry.inode, "{path}: inode");
    assert_eq!(stat.uid, entry.uid, "{path}: uid");
    assert_eq!(stat.gid, entry.gid, "{path}: gid");
    assert_eq!(stat.mtime.seconds, entry.mtime, "{path}: mtime");

    match entry.kind {
        'f' => assert_eq!(
            sha256_of_file(filesystem, path),
            entry.data,
            "{path}: content"
        ),
        'l' => {
            let target = filesystem.read_link(&inode).unwrap();
            assert_eq!(target, entry.data.as_bytes(), "{path}: target");
        }
        'c' | 'b' => {
            let numbers = format!("{},{}", stat.major, stat.minor);
            assert_eq!(numbers, entry.data, "{path}: device numbers");
        }
        _ => assert_eq!(entry.data, "-", "{path}"),
    }
}

/// Every directory's listing holds `.`, `..` and exactly the manifest's children, with the
/// types and inode numbers of the manifest.
fn check_listings(filesystem: &Gfs2<'_>, manifest: &[ManifestEntry]) {
    let by_path: BTreeMap<&str, &ManifestEntry> = manifest
        .iter()
        .map(|entry| (entry.path.as_str(), entry))
        .collect();

    for dir in manifest.iter().filter(|entry| entry.kind == 'd') {
        let prefix = if dir.path == "/" {
            "/".to_owned()
        } else {
            format!("{}/", dir.path)
        };
        let expected: BTreeSet<&str> = manifest
            .iter()
            .filter_map(|entry| entry.path.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .collect();

        let inode = filesystem.lookup(&dir.path).unwrap();
        let listing = filesystem.read_dir(&inode).unwrap();
        let mut names = BTreeSet::new();
        for entry in &listing {
            let name = entry.name_str().expect("UTF-8 names");
            assert!(names.insert(name), "{}: {name} listed twice", dir.path);
            match name {
                "." => assert_eq!(entry.inum.addr, dir.inode, "{}/.", dir.path),
                ".." => {
                    let parent = dir.path.rsplit_once('/').map_or("/", |(p, _)| p);
                    let parent = if parent.is_empty() { "/" } else { parent };
                    assert_eq!(entry.inum.addr, by_path[parent].inode, "{}/..", dir.path);
                }
                _ => {
                    let child = by_path[format!("{prefix}{name}").as_str()];
                    assert_eq!(entry.inum.addr, child.inode, "{}/{name}: inode", dir.path);
                    let file_type = entry.file_type().expect("a known dirent type");
                    assert_eq!(
                        kind(file_type),
                        child.kind,
                        "{}/{name}: dirent type",
                        dir.path
                    );
                }
            }
        }

        assert!(
            names.remove(".") && names.remove(".."),
            "{}: . and ..",
            dir.path
        );
        assert_eq!(names, expected, "{}: children", dir.path);
    }
}

#[test]
fn every_manifest_line_of_the_populated_image_matches() {
    let filesystem = open(common::image_4k());
    let manifest = common::manifest("gfs2-4k.manifest");
    assert_eq!(manifest.len(), 2681);

    for entry in &manifest {
        check_entry(&filesystem, entry);
    }
}

#[test]
fn every_directory_of_the_populated_image_lists_its_manifest_children() {
    let filesystem = open(common::image_4k());
    let manifest = common::manifest("gfs2-4k.manifest");

    check_listings(&filesystem, &manifest);
}

#[test]
fn the_mkfs_image_has_an_empty_root() {
    let filesystem = open(common::image_empty());
    let manifest = common::manifest("gfs2-empty.manifest");
    assert_eq!(manifest.len(), 1);

    check_entry(&filesystem, &manifest[0]);
    check_listings(&filesystem, &manifest);
    let names: Vec<Vec<u8>> = filesystem
        .read_dir(filesystem.root())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [b".".to_vec(), b"..".to_vec()]);
}

/// `lsattr` in the fixtures' `.extra` files: `I` marks exhash directories, `j` jdata files.
#[test]
fn exhash_and_jdata_flags_match_lsattr() {
    let filesystem = open(common::image_4k());
    let extra = std::fs::read_to_string(common::data_dir().join("gfs2-4k.extra")).unwrap();
    let lsattr: BTreeMap<&str, &str> = extra
        .lines()
        .skip_while(|line| !line.starts_with("## lsattr"))
        .skip(1)
        .take_while(|line| !line.starts_with("##"))
        .filter_map(|line| line.split_once(' ').map(|(flags, path)| (path, flags)))
        .collect();
    assert_eq!(lsattr.len(), 6);

    for entry in common::manifest("gfs2-4k.manifest") {
        let inode = filesystem.lookup_nofollow(&entry.path).unwrap();
        let flags = inode.dinode().flags;
        let attributes = lsattr.get(entry.path.as_str()).copied().unwrap_or("");
        assert_eq!(
            inode.is_exhash(),
            attributes.contains('I'),
            "{}: exhash",
            entry.path
        );
        if entry.kind == 'f' {
            let jdata = flags & ondisk::DIF_JDATA != 0;
            assert_eq!(jdata, attributes.contains('j'), "{}: jdata", entry.path);
        }
    }
}

/// statfs in the `.extra` file: `bsize blocks bfree bavail files ffree`; Linux takes the
/// numbers from the rgrp headers, and the bitmaps agree with them.
#[test]
fn usage_matches_statfs() {
    for (image, extra) in [
        (common::image_4k(), "gfs2-4k.extra"),
        (common::image_empty(), "gfs2-empty.extra"),
    ] {
        let filesystem = open(image);
        let extra = std::fs::read_to_string(common::data_dir().join(extra)).unwrap();
        let numbers: Vec<u64> = extra
            .lines()
            .nth(1)
            .unwrap()
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        let [bsize, blocks, bfree, _bavail, files, ffree] = numbers[..] else {
            panic!()
        };

        let usage = filesystem.usage().unwrap();
        let bitmap = filesystem.bitmap_usage().unwrap();

        assert_eq!(u64::from(filesystem.block_size()), bsize);
        assert_eq!(usage.data_blocks, blocks);
        assert_eq!(usage.free, bfree);
        assert_eq!(usage.free + usage.dinodes, files);
        assert_eq!(usage.free, ffree);
        assert_eq!(
            (bitmap.free, bitmap.dinodes, bitmap.total()),
            (usage.free, usage.dinodes, blocks)
        );
        assert_eq!(bitmap.unlinked, 0);
    }
}
