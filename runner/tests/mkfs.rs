//! `gfs2 mkfs` against the real checker and the project's reader.
//!
//! Source trees are made by code under `target/mkfs-tests/`: an empty directory; one of every
//! shape (5000 files in a directory, a big file, a sparse file, a tree 20 levels deep, UTF-8
//! and 255-byte names, long symlink targets, hard links, a FIFO, device nodes (as root), odd
//! modes, owners and times). Each is built at block sizes 512, 1024 and 4096, then:
//!
//! - `fsck.gfs2 -n` (Debian's `gfs2-utils`, installed by the runner when missing) must exit 0
//!   and report nothing wrong;
//! - the `fs` reader must read every file back byte-exact with the source's metadata.
//!
//! The big file is 50 MiB at 4096-byte blocks and 6 MiB at 512 and 1024 (a height-3 tree at
//! 512 bytes, height 2 at 1024), which keeps the whole test near a minute on two cores.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use ::fs::gfs2::Filesystem;
use drivers::block::RamDisk;
use runner::kernel_build::workspace_root;
use runner::mkfs::{MkfsError, Options, make_image};

fn test_dir(name: &str) -> PathBuf {
    let dir = workspace_root().join("target/mkfs-tests").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic bytes that differ at every offset (so a misplaced block shows).
fn pattern(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes the tree of every shape under `root`; `big` is the size of the big file and
/// `long_target` the length of the longest symlink target.
fn make_full_tree(root: &Path, big: usize, long_target: usize) {
    fs::create_dir_all(root.join("empty-dir")).unwrap();

    let many = root.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..5000 {
        fs::write(many.join(format!("file-{i:04}")), format!("{i}\n")).unwrap();
    }

    fs::write(root.join("big.bin"), pattern(1, big)).unwrap();
    fs::write(root.join("medium.bin"), pattern(2, 100_000)).unwrap();
    fs::write(root.join("small.txt"), b"hello, gfs2\n").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();

    // Holes at the start of the file, between the pieces and at the end.
    let mut sparse = File::create(root.join("sparse.bin")).unwrap();
    sparse.set_len(20 << 20).unwrap();
    for (offset, seed) in [(3 << 20, 3u64), ((7 << 20) + 123, 4), ((19 << 20) + 5, 5)] {
        sparse.seek(SeekFrom::Start(offset)).unwrap();
        sparse.write_all(&pattern(seed, 10_000)).unwrap();
    }
    drop(sparse);
    fs::write(root.join("all-hole.bin"), b"").unwrap();
    File::options()
        .write(true)
        .open(root.join("all-hole.bin"))
        .unwrap()
        .set_len(5 << 20)
        .unwrap();

    let mut deep = root.join("deep");
    for level in 1..=20 {
        deep.push(format!("level-{level:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.txt"), b"twenty levels down\n").unwrap();

    let names = root.join("names");
    fs::create_dir(&names).unwrap();
    let utf8_255 = format!("{}x", "é".repeat(127));
    assert_eq!(utf8_255.len(), 255);
    for name in [
        "héllo wörld ✓.txt",
        "日本語のファイル名",
        &"n".repeat(255),
        &utf8_255,
    ] {
        fs::write(names.join(name), name.as_bytes()).unwrap();
    }

    let links = root.join("links");
    fs::create_dir(&links).unwrap();
    symlink("../small.txt", links.join("short")).unwrap();
    symlink("t".repeat(long_target), links.join("long")).unwrap();
    symlink("/nowhere/at/all", links.join("dangling")).unwrap();
    symlink("../deep", links.join("to-dir")).unwrap();
    fs::write(links.join("hard-a"), b"one file, three names\n").unwrap();
    fs::hard_link(links.join("hard-a"), links.join("hard-b")).unwrap();
    fs::hard_link(links.join("hard-a"), root.join("deep/hard-c")).unwrap();

    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();

    if is_root() {
        for (name, file_type, major, minor) in [
            ("char-device", rustix::fs::FileType::CharacterDevice, 1, 3),
            (
                "block-device",
                rustix::fs::FileType::BlockDevice,
                259,
                70_000,
            ),
        ] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                root.join(name),
                file_type,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(major, minor),
            )
            .unwrap();
        }
    }

    let odd = root.join("odd-mode");
    fs::write(&odd, b"setuid, odd owner and time\n").unwrap();
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o4751)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&odd, Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(links.join("short"), Some(42), Some(43)).unwrap();
    }
    File::options()
        .write(true)
        .open(&odd)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789))
        .unwrap();
}

/// Runs `fsck.gfs2 -n` on `image` and checks that it found nothing.
fn assert_fsck_clean(image: &Path) {
    runner::debian::ensure_fsck_gfs2().expect("fsck.gfs2 is available");
    let output = Command::new("fsck.gfs2")
        .arg("-n")
        .arg(image)
        .output()
        .expect("fsck.gfs2 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "fsck.gfs2 -n {} failed ({}):\n{text}",
        image.display(),
        output.status
    );
    let lowered = text.to_lowercase();
    for word in [
        "error",
        "invalid",
        "bad ",
        "corrupt",
        "mismatch",
        "inconsistent",
    ] {
        assert!(
            !lowered.contains(word),
            "fsck.gfs2 reported {word:?}:\n{text}"
        );
    }
}

/// Reads every file under `source` back from `image` and compares content and metadata.
fn assert_round_trip(source: &Path, image: &Path, block_size: u32) {
    let bytes = fs::read(image).unwrap();
    let disk = RamDisk::new(&bytes, 512).unwrap();
    let filesystem = Filesystem::open(disk).expect("the reader opens the image");
    assert_eq!(filesystem.block_size(), block_size);

    let mut pending = vec![PathBuf::new()];
    let mut checked = 0;
    while let Some(relative) = pending.pop() {
        let path = source.join(&relative);
        let metadata = fs::symlink_metadata(&path).unwrap();
        let image_path = format!("/{}", relative.display());
        let inode = filesystem
            .lookup_nofollow(relative.as_os_str().as_bytes())
            .unwrap_or_else(|error| panic!("{image_path}: {error:?}"));
        let stat = inode.stat();

        assert_eq!(stat.mode, metadata.mode(), "{image_path}: mode");
        assert_eq!(stat.uid, metadata.uid(), "{image_path}: uid");
        assert_eq!(stat.gid, metadata.gid(), "{image_path}: gid");
        assert_eq!(
            u64::from(stat.nlink),
            metadata.nlink(),
            "{image_path}: nlink"
        );
        assert_eq!(stat.mtime.seconds, metadata.mtime(), "{image_path}: mtime");
        assert_eq!(
            i64::from(stat.mtime.nanoseconds),
            metadata.mtime_nsec(),
            "{image_path}: mtime ns"
        );
        assert_eq!(stat.ctime.seconds, metadata.ctime(), "{image_path}: ctime");

        if metadata.is_dir() {
            let listed: BTreeSet<Vec<u8>> = filesystem
                .read_dir(&inode)
                .unwrap()
                .into_iter()
                .map(|entry| entry.name)
                .filter(|name| name != b"." && name != b"..")
                .collect();
            let mut expected = BTreeSet::new();
            for entry in fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                expected.insert(name.as_bytes().to_vec());
                pending.push(relative.join(name));
            }
            assert_eq!(listed, expected, "{image_path}: listing");
        } else if metadata.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            assert_eq!(
                filesystem.read_link(&inode).unwrap(),
                target.as_os_str().as_bytes(),
                "{image_path}: target"
            );
        } else if metadata.file_type().is_char_device() || metadata.file_type().is_block_device() {
            let rdev = metadata.rdev();
            let device = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
            assert_eq!(
                (stat.major, stat.minor),
                device,
                "{image_path}: device numbers"
            );
        } else if metadata.is_file() {
            assert_eq!(stat.size, metadata.len(), "{image_path}: size");
            let expected = fs::read(&path).unwrap();
            let mut content = vec![0; expected.len()];
            let read = filesystem.read_at(&inode, 0, &mut content).unwrap();
            assert_eq!(read, expected.len(), "{image_path}: bytes read");
            assert!(content == expected, "{image_path}: content differs");
        }
        checked += 1;
    }
    assert!(checked > 0);
}

/// Checks that the full tree's image has the shapes the test means to exercise: an exhash
/// directory, a tall tree, stuffed files, and holes that take no blocks.
fn assert_full_tree_shapes(image: &Path, block_size: u32) {
    let bytes = fs::read(image).unwrap();
    let filesystem = Filesystem::open(RamDisk::new(&bytes, 512).unwrap()).unwrap();
    let inode = |path: &str| filesystem.lookup_nofollow(path).unwrap();

    assert!(inode("many").is_exhash());
    assert!(!inode("deep").is_exhash());
    assert!(inode("small.txt").is_stuffed());
    assert!(inode("links/long").is_stuffed());
    let big_height = if block_size == 512 { 3 } else { 2 };
    assert_eq!(inode("big.bin").height(), big_height);
    // Three 10,000-byte pieces of a 20 MiB file: a few dozen blocks, not thousands.
    let sparse = inode("sparse.bin").stat();
    assert!(
        sparse.blocks * u64::from(block_size) < 200_000,
        "{sparse:?}"
    );
    let hole = inode("all-hole.bin").stat();
    assert!(hole.blocks <= 8, "{hole:?}");
}

fn build_and_check(name: &str, source: &Path, block_size: u32) {
    let dir = test_dir(&format!("{name}-{block_size}"));
    let image = dir.join("image.img");
    let options = Options {
        block_size,
        ..Options::default()
    };

    let summary = make_image(source, &image, &options).expect("the image builds");

    assert_eq!(fs::metadata(&image).unwrap().len(), summary.image_bytes);
    assert_fsck_clean(&image);
    assert_round_trip(source, &image, block_size);
    if name == "full" {
        assert_full_tree_shapes(&image, block_size);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_directory_makes_a_clean_image_at_every_block_size() {
    let source = test_dir("empty-source");
    for block_size in [512, 1024, 4096] {
        build_and_check("empty", &source, block_size);
    }
}

#[test]
fn a_tree_of_every_shape_at_4096_bytes() {
    let source = test_dir("full-source-4096");
    make_full_tree(&source, 50 << 20, 3000);
    build_and_check("full", &source, 4096);
}

#[test]
fn a_tree_of_every_shape_at_512_and_1024_bytes() {
    let source = test_dir("full-source-small");
    // The longest target a 512-byte dinode holds: 512 - 232 - 1 bytes.
    make_full_tree(&source, 6 << 20, 279);
    for block_size in [512, 1024] {
        build_and_check("full", &source, block_size);
    }
}

fn assert_no_image_left(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "src")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_tree_larger_than_the_size_asked_for_is_refused_naming_the_source() {
    let dir = test_dir("too-small");
    let source = dir.join("src");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("big"), pattern(9, 4 << 20)).unwrap();
    let options = Options {
        size: Some(12 << 20),
        ..Options::default()
    };

    let error = make_image(&source, &dir.join("out.img"), &options).unwrap_err();

    assert!(matches!(error, MkfsError::DoesNotFit { .. }), "{error}");
    assert!(
        error.to_string().contains(&source.display().to_string()),
        "{error}"
    );
    assert_no_image_left(&dir);

    // The same tree fits once the size allows it.
    let options = Options {
        size: Some(16 << 20),
        ..Options::default()
    };
    make_image(&source, &dir.join("out.img"), &options).unwrap();
    assert_eq!(fs::metadata(dir.join("out.img")).unwrap().len(), 16 << 20);
    assert_fsck_clean(&dir.join("out.img"));
}

#[test]
fn a_symlink_target_too_long_for_the_block_size_is_refused() {
    let dir = test_dir("long-target");
    let source = dir.join("src");
    fs::create_dir(&source).unwrap();
    symlink("x".repeat(280), source.join("link")).unwrap();
    let options = Options {
        block_size: 512,
        ..Options::default()
    };

    let error = make_image(&source, &dir.join("out.img"), &options).unwrap_err();

    assert!(
        matches!(error, MkfsError::SymlinkTarget { length: 280, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&source.join("link").display().to_string())
    );
    assert_no_image_left(&dir);
}

#[test]
fn an_unreadable_source_is_refused_naming_the_path() {
    let dir = test_dir("unreadable");
    let missing = dir.join("src");

    let error = make_image(&missing, &dir.join("out.img"), &Options::default()).unwrap_err();
    assert!(matches!(error, MkfsError::ReadSource { .. }), "{error}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    fs::write(&missing, b"a file, not a directory").unwrap();
    let error = make_image(&missing, &dir.join("out.img"), &Options::default()).unwrap_err();
    assert!(
        matches!(error, MkfsError::SourceNotADirectory(_)),
        "{error}"
    );
    fs::remove_file(&missing).unwrap();

    // Permissions stop only a user other than root.
    if !is_root() {
        let locked = missing.join("locked");
        fs::create_dir_all(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let error = make_image(&missing, &dir.join("out.img"), &Options::default()).unwrap_err();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            error.to_string().contains(&locked.display().to_string()),
            "{error}"
        );
    }
    assert!(!dir.join("out.img").exists());
}

#[test]
fn without_a_size_the_image_leaves_room_to_spare() {
    let dir = test_dir("spare");
    let source = dir.join("src");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("data"), pattern(11, 3 << 20)).unwrap();

    let summary = make_image(&source, &dir.join("out.img"), &Options::default()).unwrap();

    let free_bytes = summary.free_blocks * u64::from(summary.block_size);
    assert!(free_bytes >= 1 << 20, "{summary:?}");
    assert!(summary.image_bytes < 32 << 20, "{summary:?}");
}

#[test]
fn the_demo_image_is_clean_and_holds_the_demo_directory() {
    let image = runner::mkfs::demo_image().expect("the demo image builds");

    assert_fsck_clean(&image);
    assert_round_trip(
        &workspace_root().join(runner::mkfs::DEMO_SOURCE),
        &image,
        4096,
    );
}

#[test]
fn several_journals_and_rgrps_with_an_unstuffed_rindex_are_clean() {
    let dir = test_dir("journals");
    let source = dir.join("src");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/data"), pattern(12, 300_000)).unwrap();
    // At 512 bytes the rindex outgrows its dinode from 3 rgrps: here 3 journal rgrps and
    // 2 ordinary ones (300 MiB is more than one 256 MiB rgrp).
    let options = Options {
        block_size: 512,
        size: Some(300 << 20),
        journals: 3,
        ..Options::default()
    };
    let image = dir.join("out.img");

    let summary = make_image(&source, &image, &options).unwrap();

    assert_eq!(summary.rgrps, 5, "{summary:?}");
    assert_eq!(summary.image_bytes, 300 << 20);
    assert_fsck_clean(&image);
    assert_round_trip(&source, &image, 512);
    let bytes = fs::read(&image).unwrap();
    let filesystem = Filesystem::open(RamDisk::new(&bytes, 512).unwrap()).unwrap();
    assert_eq!(filesystem.rgrps().len(), 5);
    let jindex = filesystem
        .lookup_in(filesystem.master(), b"jindex")
        .unwrap();
    let journals: Vec<_> = filesystem
        .read_dir(&jindex)
        .unwrap()
        .into_iter()
        .filter(|entry| entry.name.starts_with(b"journal"))
        .collect();
    assert_eq!(journals.len(), 3);
    drop(bytes);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn names_that_share_a_slot_at_the_deepest_table_get_a_chain_of_leaves() {
    // Nine short names whose hashes agree in their top 17 bits: at 512-byte blocks a leaf
    // holds eight such entries, so the table grows to depth 17 and the slot gets a chain.
    let mut by_slot = std::collections::HashMap::<u32, Vec<String>>::new();
    let colliding = (0u32..)
        .find_map(|i| {
            let name = format!("c{i}");
            let slot = ::fs::gfs2::ondisk::name_hash(name.as_bytes()) >> 15;
            let names = by_slot.entry(slot).or_default();
            names.push(name);
            (names.len() == 9).then(|| names.clone())
        })
        .unwrap();
    let dir = test_dir("chain");
    let source = dir.join("src");
    fs::create_dir_all(source.join("d")).unwrap();
    for name in &colliding {
        fs::write(source.join("d").join(name), name.as_bytes()).unwrap();
    }
    let options = Options {
        block_size: 512,
        ..Options::default()
    };
    let image = dir.join("out.img");

    make_image(&source, &image, &options).unwrap();

    assert_fsck_clean(&image);
    assert_round_trip(&source, &image, 512);
    let bytes = fs::read(&image).unwrap();
    let filesystem = Filesystem::open(RamDisk::new(&bytes, 512).unwrap()).unwrap();
    let d = filesystem.lookup_nofollow("d").unwrap();
    assert_eq!(d.dinode().depth, 17);
    // The dinode, the hash table's blocks and tree, and more leaves than runs of slots.
    let table_blocks = (8u64 << 17).div_ceil(512 - 24);
    assert!(d.stat().blocks > 1 + table_blocks + 1, "{:?}", d.stat());
    drop(bytes);
    fs::remove_dir_all(&dir).unwrap();
}
