//! Bad input is input: each rule the reader guards, broken on purpose in a copy of the
//! Linux-written image, gives its typed error.

mod common;

use common::patched::PatchedDisk;
use drivers::block::{BlockError, RamDisk};
use embedded_io::Read;
use fs::gfs2::dir::hash_slot;
use fs::gfs2::ondisk::name_hash;
use fs::gfs2::{
    Corruption, DirentProblem, Error, Filesystem, MetaType, RgrpProblem, RindexProblem,
};

type Result<T> = core::result::Result<T, Error<BlockError>>;

const SUPERBLOCK: u64 = 16;
const ROOT: u64 = 2339;
const RINDEX: u64 = 2337;
const HELLO: u64 = 2340;
const NINE_MIB: u64 = 2609;
const SPARSE_1G: u64 = 4926;
const BIG_DIR: u64 = 7760;
const LINK_TO_HELLO: u64 = 5069;
/// Offset of the first dirent (`.`) of a linear directory.
const FIRST_DIRENT: usize = 232;

fn disk() -> PatchedDisk<'static> {
    PatchedDisk::new(common::image_4k())
}

fn open(disk: PatchedDisk<'static>) -> Result<Filesystem<PatchedDisk<'static>>> {
    Filesystem::open(disk)
}

#[track_caller]
fn corruption<T: std::fmt::Debug>(result: Result<T>) -> Corruption {
    match result {
        Err(Error::Corrupt(corruption)) => corruption,
        Err(other) => panic!("expected a corruption, got {other:?}"),
        Ok(value) => {
            let text = format!("{value:?}");
            panic!(
                "expected a corruption, got Ok({})",
                &text[..text.len().min(200)]
            )
        }
    }
}

/// Reads a whole file at `path`, as a user would.
fn read_all(filesystem: &Filesystem<PatchedDisk<'static>>, path: &str) -> Result<Vec<u8>> {
    let mut file = filesystem.open_file(path)?;
    let mut content = Vec::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            return Ok(content);
        }
        content.extend_from_slice(&buf[..read]);
    }
}

/// The first leaf of big-dir's hash table, and the table's depth.
fn big_dir_first_leaf(disk: &PatchedDisk<'static>) -> u64 {
    disk.get_be(BIG_DIR, FIRST_DIRENT, 8)
}

/// A name that is not in big-dir and hashes to a slot served by `leaf`.
fn absent_name_in_leaf(disk: &PatchedDisk<'static>, leaf: u64) -> String {
    (0..)
        .map(|i| format!("absent-{i}"))
        .find(|name| {
            let slot = hash_slot(name_hash(name.as_bytes()), 8) as usize;
            disk.get_be(BIG_DIR, FIRST_DIRENT + slot * 8, 8) == leaf
        })
        .unwrap()
}

#[test]
fn the_clean_image_opens() {
    let filesystem = open(disk()).unwrap();

    assert_eq!(filesystem.superblock().lock_table(), b"fixture:gfs2-4k");
    assert_eq!(filesystem.rgrps().len(), 3);
}

#[test]
fn bad_superblocks() {
    let mut bad_magic = disk();
    bad_magic.put_be(SUPERBLOCK, 0, 0x0116_1971, 4);
    assert!(matches!(
        corruption(open(bad_magic)),
        Corruption::BadMagic { block: 16, .. }
    ));

    let mut bad_format = disk();
    bad_format.put_be(SUPERBLOCK, 24, 1803, 4);
    assert_eq!(
        corruption(open(bad_format)),
        Corruption::UnsupportedFormat(1803)
    );

    let mut bad_multihost = disk();
    bad_multihost.put_be(SUPERBLOCK, 28, 1401, 4);
    assert_eq!(
        corruption(open(bad_multihost)),
        Corruption::UnsupportedMultihostFormat(1401)
    );

    let mut not_a_power_of_two = disk();
    not_a_power_of_two.put_be(SUPERBLOCK, 36, 3000, 4);
    assert_eq!(
        corruption(open(not_a_power_of_two)),
        Corruption::BadBlockSize {
            bsize: 3000,
            shift: 12
        }
    );

    let mut too_large = disk();
    too_large.put_be(SUPERBLOCK, 36, 8192, 4);
    too_large.put_be(SUPERBLOCK, 40, 13, 4);
    assert_eq!(
        corruption(open(too_large)),
        Corruption::BadBlockSize {
            bsize: 8192,
            shift: 13
        }
    );

    let mut root_past_end = disk();
    root_past_end.put_be(SUPERBLOCK, 88, 1 << 40, 8);
    assert!(matches!(
        corruption(open(root_past_end)),
        Corruption::BlockPastEnd {
            pointer: 0x100_0000_0000,
            limit: 16384,
            ..
        }
    ));

    let mut root_formal = disk();
    root_formal.put_be(SUPERBLOCK, 80, 99, 8);
    assert_eq!(
        corruption(open(root_formal)),
        Corruption::FormalInoMismatch {
            inode: ROOT,
            expected: 99,
            found: 12
        }
    );
}

#[test]
fn a_device_too_small_or_with_large_blocks() {
    let image = common::image_4k();

    let truncated = RamDisk::new(&image[..65536], 512).unwrap();
    assert!(matches!(
        Filesystem::open(truncated),
        Err(Error::Corrupt(Corruption::DeviceTooSmall { bytes: 65536 }))
    ));

    let large_blocks = RamDisk::new(image, 8192).unwrap();
    assert!(matches!(
        Filesystem::open(large_blocks),
        Err(Error::DeviceBlockSize(8192))
    ));

    for block_size in [512, 1024, 2048, 4096] {
        let filesystem = Filesystem::open(RamDisk::new(image, block_size).unwrap()).unwrap();
        assert_eq!(
            filesystem.block_count(),
            16384,
            "device blocks of {block_size} bytes"
        );
    }
}

#[test]
fn pointers_past_the_device_end_or_outside_the_rgrps() {
    let mut in_dinode = disk();
    in_dinode.put_be(NINE_MIB, FIRST_DIRENT, 0xFFFF_FFFF_FFFF, 8);
    let filesystem = open(in_dinode).unwrap();
    assert_eq!(
        corruption(read_all(&filesystem, "/nine-mib")),
        Corruption::BlockPastEnd {
            block: NINE_MIB,
            pointer: 0xFFFF_FFFF_FFFF,
            limit: 16384
        }
    );

    let mut in_indirect = disk();
    let indirect = in_indirect.get_be(NINE_MIB, FIRST_DIRENT, 8);
    in_indirect.put_be(indirect, 24 + 8 * 7, 16384, 8);
    let filesystem = open(in_indirect).unwrap();
    let inode = filesystem.lookup("/nine-mib").unwrap();
    assert_eq!(
        corruption(filesystem.map_block(&inode, 7)),
        Corruption::BlockPastEnd {
            block: indirect,
            pointer: 16384,
            limit: 16384
        }
    );

    // Block 2074 is the header of rgrp 1: no file may point there.
    let mut into_rgrp_header = disk();
    into_rgrp_header.put_be(indirect, 24, 2074, 8);
    let filesystem = open(into_rgrp_header).unwrap();
    assert_eq!(
        corruption(read_all(&filesystem, "/nine-mib")),
        Corruption::BlockOutsideRgrps {
            block: indirect,
            pointer: 2074
        }
    );

    let mut dirent_past_end = disk();
    dirent_past_end.put_be(ROOT, 328 + 8, 1 << 33, 8);
    let filesystem = open(dirent_past_end).unwrap();
    assert!(matches!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::BlockPastEnd {
            pointer: 0x2_0000_0000,
            ..
        }
    ));
}

#[test]
fn pointer_cycles_and_repeated_blocks_in_a_tree() {
    // sparse-1g has height 3: dinode -> indirect (level 1) -> indirect (level 2) -> data.
    let mut cycle = disk();
    let level1 = cycle.get_be(SPARSE_1G, FIRST_DIRENT, 8);
    cycle.put_be(level1, 24, level1, 8);
    let filesystem = open(cycle).unwrap();
    let inode = filesystem.lookup("/sparse-1g").unwrap();
    assert_eq!(
        corruption(filesystem.map_block(&inode, 0)),
        Corruption::TreeCycle {
            inode: SPARSE_1G,
            block: level1
        }
    );
    assert_eq!(
        corruption(filesystem.open_inode(inode)),
        Corruption::RepeatedBlock {
            inode: SPARSE_1G,
            block: level1
        }
    );

    let mut back_to_dinode = disk();
    back_to_dinode.put_be(level1, 24, SPARSE_1G, 8);
    let filesystem = open(back_to_dinode).unwrap();
    let inode = filesystem.lookup("/sparse-1g").unwrap();
    assert_eq!(
        corruption(filesystem.map_block(&inode, 0)),
        Corruption::TreeCycle {
            inode: SPARSE_1G,
            block: SPARSE_1G
        }
    );

    let mut repeated_data = disk();
    let indirect = repeated_data.get_be(NINE_MIB, FIRST_DIRENT, 8);
    let first_data = repeated_data.get_be(indirect, 24, 8);
    repeated_data.put_be(indirect, 24 + 8 * 100, first_data, 8);
    let filesystem = open(repeated_data).unwrap();
    assert_eq!(
        corruption(read_all(&filesystem, "/nine-mib")),
        Corruption::RepeatedBlock {
            inode: NINE_MIB,
            block: first_data
        }
    );
}

#[test]
fn heights_and_depths_beyond_the_limits() {
    for height in [7, 11, 0xFFFF] {
        let mut too_high = disk();
        too_high.put_be(NINE_MIB, 138, height, 2);
        let filesystem = open(too_high).unwrap();
        assert_eq!(
            corruption(filesystem.lookup("/nine-mib")),
            Corruption::HeightTooLarge {
                inode: NINE_MIB,
                height: height as u16,
                max: 6
            }
        );
    }

    let mut too_deep = disk();
    too_deep.put_be(BIG_DIR, 146, 18, 2);
    let filesystem = open(too_deep).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/big-dir")),
        Corruption::DepthTooLarge {
            inode: BIG_DIR,
            depth: 18
        }
    );
}

#[test]
fn bad_dirent_record_and_name_lengths() {
    let cases = [
        (20, 0, DirentProblem::RecLenZero),
        (20, 24, DirentProblem::RecLenTooShort(24)),
        (20, 52, DirentProblem::RecLenUnaligned(52)),
        (20, 4000, DirentProblem::RecLenPastEnd(4000)),
        (
            22,
            9,
            DirentProblem::NameLenPastRecLen {
                name_len: 9,
                rec_len: 48,
            },
        ),
        (22, 0, DirentProblem::BadNameLen(0)),
        (16, 1, DirentProblem::HashMismatch(1)),
    ];

    for (field, value, problem) in cases {
        let mut bad = disk();
        let width = if field == 16 { 4 } else { 2 };
        bad.put_be(ROOT, FIRST_DIRENT + field, value, width);
        let filesystem = open(bad).unwrap();
        let expected = Corruption::BadDirent {
            block: ROOT,
            offset: FIRST_DIRENT as u32,
            problem,
        };
        assert_eq!(corruption(filesystem.lookup("/hello.txt")), expected);
        assert_eq!(corruption(filesystem.read_dir(filesystem.root())), expected);
    }
}

#[test]
fn dirents_that_name_the_wrong_dinode() {
    let mut formal = disk();
    formal.put_be(ROOT, 328, 77, 8);
    let filesystem = open(formal).unwrap();
    assert!(matches!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::FormalInoMismatch {
            inode: HELLO,
            expected: 77,
            ..
        }
    ));

    let mut dirent_type = disk();
    dirent_type.put_be(ROOT, 328 + 24, 4, 2);
    let filesystem = open(dirent_type).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::DirentTypeMismatch {
            inode: HELLO,
            dirent_type: 4,
            mode: 0o100644
        }
    );

    let mut address = disk();
    address.put_be(HELLO, 32, 2341, 8);
    let filesystem = open(address).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::DinodeAddressMismatch {
            block: HELLO,
            recorded: 2341
        }
    );

    let mut mode = disk();
    mode.put_be(HELLO, 40, 0o070644, 4);
    let filesystem = open(mode).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::BadMode {
            inode: HELLO,
            mode: 0o070644
        }
    );
}

#[test]
fn hash_table_size_not_eight_shifted_by_depth() {
    let mut size = disk();
    size.put_be(BIG_DIR, 56, 4096, 8);
    let filesystem = open(size).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/big-dir/f00001")),
        Corruption::HashTableSize {
            inode: BIG_DIR,
            size: 4096,
            depth: 8
        }
    );

    // Depth 9 needs 4096 bytes of table, more than a dinode holds stuffed.
    let mut beyond = disk();
    beyond.put_be(BIG_DIR, 56, 4096, 8);
    beyond.put_be(BIG_DIR, 146, 9, 2);
    let filesystem = open(beyond).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/big-dir")),
        Corruption::SizeBeyondTree {
            inode: BIG_DIR,
            size: 4096,
            height: 0
        }
    );
}

#[test]
fn leaf_chains_that_loop() {
    let mut looped = disk();
    let leaf = big_dir_first_leaf(&looped);
    looped.put_be(leaf, 32, leaf, 8);
    let absent = absent_name_in_leaf(&looped, leaf);
    let filesystem = open(looped).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();

    let expected = Corruption::LeafChainLoop {
        inode: BIG_DIR,
        leaf,
    };
    assert_eq!(
        corruption(filesystem.find_entry(&big_dir, absent.as_bytes())),
        expected
    );
    assert_eq!(corruption(filesystem.read_dir(&big_dir)), expected);
}

#[test]
fn bad_leaves_and_slots() {
    let mut deep_leaf = disk();
    let leaf = big_dir_first_leaf(&deep_leaf);
    deep_leaf.put_be(leaf, 24, 9, 2);
    let filesystem = open(deep_leaf).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::LeafDepth {
            leaf,
            leaf_depth: 9,
            dir_depth: 8
        }
    );

    // Slot 1 belongs to the first leaf's run (its depth is 6: 4 slots); point it elsewhere.
    let mut broken_run = disk();
    let other = broken_run.get_be(BIG_DIR, FIRST_DIRENT + 8 * 200, 8);
    broken_run.put_be(BIG_DIR, FIRST_DIRENT + 8, other, 8);
    let filesystem = open(broken_run).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::BadLeafRun {
            inode: BIG_DIR,
            slot: 1,
            leaf
        }
    );

    let mut empty_slot = disk();
    empty_slot.put_be(BIG_DIR, FIRST_DIRENT + 8 * 3, 0, 8);
    let filesystem = open(empty_slot).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::HashTableHole {
            inode: BIG_DIR,
            slot: 3
        }
    );

    // Rename an entry of the first leaf to a name of the same length that hashes elsewhere.
    let mut misplaced = disk();
    let mut offset = 104;
    while misplaced.get_be(leaf, offset, 8) == 0 {
        offset += misplaced.get_be(leaf, offset + 20, 2) as usize;
    }
    let name_len = misplaced.get_be(leaf, offset + 22, 2) as usize;
    let name = (0..)
        .map(|i| format!("{i:0name_len$}"))
        .find(|name| hash_slot(name_hash(name.as_bytes()), 8) >= 4)
        .unwrap();
    let hash = name_hash(name.as_bytes());
    misplaced.put_be(leaf, offset + 16, hash.into(), 4);
    misplaced.block_mut(leaf)[offset + 40..offset + 40 + name_len].copy_from_slice(name.as_bytes());
    let filesystem = open(misplaced).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::DirentOutsideLeaf { leaf, hash }
    );
}

#[test]
fn entry_counts_that_disagree() {
    let mut dir_count = disk();
    dir_count.put_be(BIG_DIR, 148, 2572, 4);
    let filesystem = open(dir_count).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::EntryCount {
            block: BIG_DIR,
            recorded: 2572,
            counted: 2573
        }
    );

    let mut leaf_count = disk();
    let leaf = big_dir_first_leaf(&leaf_count);
    let entries = leaf_count.get_be(leaf, 26, 2);
    leaf_count.put_be(leaf, 26, entries + 1, 2);
    let absent = absent_name_in_leaf(&leaf_count, leaf);
    let filesystem = open(leaf_count).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    let expected = Corruption::EntryCount {
        block: leaf,
        recorded: entries as u32 + 1,
        counted: entries as u32,
    };
    assert_eq!(
        corruption(filesystem.find_entry(&big_dir, absent.as_bytes())),
        expected
    );

    let mut linear_count = disk();
    linear_count.put_be(ROOT, 148, 3, 4);
    let filesystem = open(linear_count).unwrap();
    assert!(matches!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::EntryCount {
            block: ROOT,
            recorded: 3,
            ..
        }
    ));
}

#[test]
fn sizes_beyond_the_reach_of_the_dinode() {
    let mut stuffed = disk();
    stuffed.put_be(HELLO, 56, 3865, 8);
    let filesystem = open(stuffed).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::SizeBeyondTree {
            inode: HELLO,
            size: 3865,
            height: 0
        }
    );

    let mut symlink = disk();
    symlink.put_be(LINK_TO_HELLO, 56, 0, 8);
    let filesystem = open(symlink).unwrap();
    assert_eq!(
        corruption(filesystem.lookup_nofollow("/link-to-hello")),
        Corruption::BadSymlink {
            inode: LINK_TO_HELLO,
            size: 0,
            height: 0
        }
    );

    // A huge size on an unstuffed file is legal (Linux keeps the height when a truncate
    // extends a file): the blocks past the tree's reach read as zeros.
    let mut huge = disk();
    huge.put_be(NINE_MIB, 56, u64::MAX, 8);
    let filesystem = open(huge).unwrap();
    let inode = filesystem.lookup("/nine-mib").unwrap();
    assert_eq!(filesystem.map_block(&inode, u64::MAX).unwrap(), None);
    let mut tail = [0xAAu8; 100];
    assert_eq!(
        filesystem
            .read_at(&inode, u64::MAX - 100, &mut tail)
            .unwrap(),
        100
    );
    assert_eq!(tail, [0; 100]);
}

#[test]
fn wrong_metadata_types() {
    let mut indirect_type = disk();
    let indirect = indirect_type.get_be(NINE_MIB, FIRST_DIRENT, 8);
    indirect_type.put_be(indirect, 4, MetaType::Leaf as u64, 4);
    let filesystem = open(indirect_type).unwrap();
    assert_eq!(
        corruption(read_all(&filesystem, "/nine-mib")),
        Corruption::WrongMetaType {
            block: indirect,
            expected: MetaType::Indirect,
            found: 6
        }
    );

    let mut leaf_type = disk();
    let leaf = big_dir_first_leaf(&leaf_type);
    leaf_type.put_be(leaf, 4, MetaType::JournaledData as u64, 4);
    let filesystem = open(leaf_type).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert_eq!(
        corruption(filesystem.read_dir(&big_dir)),
        Corruption::WrongMetaType {
            block: leaf,
            expected: MetaType::Leaf,
            found: 7
        }
    );

    let mut dinode_magic = disk();
    dinode_magic.put_be(HELLO, 0, 0, 4);
    let filesystem = open(dinode_magic).unwrap();
    assert_eq!(
        corruption(filesystem.lookup("/hello.txt")),
        Corruption::BadMagic {
            block: HELLO,
            found: 0
        }
    );
}

#[test]
fn bad_rindex_and_rgrp_headers() {
    // The rindex is stuffed: entry i sits at 232 + 96 i of its dinode block.
    let entry = |i: usize| FIRST_DIRENT + 96 * i;

    let mut data0 = disk();
    data0.put_be(RINDEX, entry(1) + 16, 2076, 8);
    assert_eq!(
        corruption(open(data0)),
        Corruption::BadRindex {
            index: 1,
            problem: RindexProblem::Data0 {
                data0: 2076,
                addr: 2074,
                length: 1
            }
        }
    );

    let mut overlap = disk();
    overlap.put_be(RINDEX, entry(2), 2100, 8);
    overlap.put_be(RINDEX, entry(2) + 16, 2101, 8);
    assert_eq!(
        corruption(open(overlap)),
        Corruption::BadRindex {
            index: 2,
            problem: RindexProblem::Overlap(2100)
        }
    );

    let mut past_end = disk();
    past_end.put_be(RINDEX, entry(2) + 24, 7200, 4);
    past_end.put_be(RINDEX, entry(2) + 28, 1800, 4);
    assert_eq!(
        corruption(open(past_end)),
        Corruption::BadRindex {
            index: 2,
            problem: RindexProblem::PastEnd {
                end: 9230 + 7200,
                limit: 16384
            }
        }
    );

    let mut size = disk();
    size.put_be(RINDEX, 56, 100, 8);
    assert_eq!(
        corruption(open(size)),
        Corruption::BadRindex {
            index: 0,
            problem: RindexProblem::Size(100)
        }
    );

    let mut checksum = disk();
    let free = checksum.get_be(2074, 28, 4);
    checksum.put_be(2074, 28, free - 1, 4);
    let filesystem = open(checksum).unwrap();
    let rgrp = filesystem.rgrps()[1];
    assert!(matches!(
        corruption(filesystem.rgrp_header(&rgrp)),
        Corruption::BadRgrp {
            block: 2074,
            problem: RgrpProblem::Checksum { .. }
        }
    ));
}

#[test]
fn symlink_loops_end() {
    // Point link-to-hello at itself.
    let mut looped = disk();
    let target = b"/link-to-hello";
    looped.put_be(LINK_TO_HELLO, 56, target.len() as u64, 8);
    looped.block_mut(LINK_TO_HELLO)[232..232 + target.len()].copy_from_slice(target);
    let filesystem = open(looped).unwrap();

    assert!(matches!(
        filesystem.lookup("/link-to-hello"),
        Err(Error::TooManySymlinks)
    ));
    assert!(filesystem.lookup_nofollow("/link-to-hello").is_ok());
}
