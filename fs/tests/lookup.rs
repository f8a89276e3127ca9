//! Lookup in an exhash directory goes by hash: it reads the hash-table block the name's slot
//! lies in (none when the table is stuffed in the dinode) and the leaf chain of that slot,
//! nothing else. Counted on `/big-dir` (2,571 files) of the Linux-written image, whose table
//! is stuffed, and on the same directory with its table moved into two journaled-data blocks
//! at twice the depth.

mod common;

use common::counting::CountingDisk;
use common::patched::PatchedDisk;
use drivers::block::BlockDevice;
use fs::gfs2::dir::hash_slot;
use fs::gfs2::ondisk::name_hash;
use fs::gfs2::{Corruption, Error, Filesystem, MetaType};

const BIG_DIR: u64 = 7760;
/// Header and bitmap of rgrp 2, whose data starts at block 9230.
const RGRP2: u64 = 9229;

fn big_dir_names() -> Vec<String> {
    let names: Vec<String> = common::manifest("gfs2-4k.manifest")
        .into_iter()
        .filter_map(|entry| entry.path.strip_prefix("/big-dir/").map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 2571);
    names
}

/// The leaf chain of `slot`, read from the raw image: the head from the table, then `lf_next`.
fn raw_chain(disk: &PatchedDisk<'_>, table: &[u64], slot: u64) -> Vec<u64> {
    let mut chain = vec![table[slot as usize]];
    loop {
        let next = disk.get_be(*chain.last().unwrap(), 32, 8);
        if next == 0 {
            return chain;
        }
        chain.push(next);
    }
}

/// The part of `chain` a lookup reads: up to the leaf holding `name`, or all of it.
fn chain_read_for(disk: &PatchedDisk<'_>, chain: &[u64], name: &str) -> Vec<u64> {
    let position = chain.iter().position(|&leaf| {
        let block = disk.block(leaf);
        block
            .windows(name.len())
            .any(|window| window == name.as_bytes())
    });
    match position {
        Some(index) => chain[..=index].to_vec(),
        None => chain.to_vec(),
    }
}

/// Looks up every name of big-dir and some absent ones; each must read exactly
/// `table_block(slot)` (if any) and then the leaf chain of its slot.
fn check_lookup_costs(
    disk: PatchedDisk<'static>,
    depth: u16,
    table_block: impl Fn(u64) -> Option<u64>,
) {
    let table: Vec<u64> = (0..1u64 << depth)
        .map(|slot| table_entry(&disk, slot, &table_block))
        .collect();
    let expected_chain = |disk: &PatchedDisk<'_>, name: &str| {
        let slot = hash_slot(name_hash(name.as_bytes()), depth);
        let chain = raw_chain(disk, &table, slot);
        let mut reads: Vec<u64> = table_block(slot).into_iter().collect();
        reads.extend(chain_read_for(disk, &chain, name));
        reads
    };
    let expectations: Vec<(String, Vec<u64>, bool)> = big_dir_names()
        .into_iter()
        .map(|name| (name, true))
        .chain((0..200).map(|i| (format!("absent-{i}"), false)))
        .map(|(name, present)| {
            let reads = expected_chain(&disk, &name);
            (name, reads, present)
        })
        .collect();

    let counting = CountingDisk::new(disk);
    let filesystem = Filesystem::open(&counting).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    let mut longest = 0;
    for (name, expected, present) in &expectations {
        counting.take_reads();
        let entry = filesystem.find_entry(&big_dir, name.as_bytes()).unwrap();
        let reads = counting.take_reads();

        assert_eq!(entry.is_some(), *present, "{name}");
        assert_eq!(&reads, expected, "{name}: blocks read");
        longest = longest.max(reads.len());
    }
    assert!(longest <= 2, "a lookup read {longest} blocks");

    // A whole path from the root: the root is cached and linear, so the big-dir dinode, its
    // table block (if any) and the leaf.
    counting.take_reads();
    let inode = filesystem.lookup("/big-dir/f01234").unwrap();
    let reads = counting.take_reads();
    let (_, leaf_reads, _) = expectations
        .iter()
        .find(|(name, ..)| name == "f01234")
        .unwrap();
    let mut expected = vec![BIG_DIR];
    expected.extend(leaf_reads);
    expected.push(inode.addr());
    assert_eq!(reads, expected);
}

/// Slot `slot` of big-dir's table: stuffed after the dinode header, or in a table block.
fn table_entry(disk: &PatchedDisk<'_>, slot: u64, table_block: impl Fn(u64) -> Option<u64>) -> u64 {
    match table_block(slot) {
        None => disk.get_be(BIG_DIR, 232 + 8 * slot as usize, 8),
        Some(block) => disk.get_be(block, 24 + 8 * (slot % 509) as usize, 8),
    }
}

#[test]
fn lookup_in_big_dir_reads_one_leaf_chain() {
    let disk = PatchedDisk::new(common::image_4k());
    assert_eq!(disk.get_be(BIG_DIR, 146, 2), 8, "depth");
    assert_eq!(disk.get_be(BIG_DIR, 138, 2), 0, "a stuffed table");

    check_lookup_costs(disk, 8, |_| None);
}

/// Free data blocks of rgrp 2, from its bitmap.
fn free_blocks(disk: &PatchedDisk<'_>, count: usize) -> Vec<u64> {
    let bitmap = disk.block(RGRP2);
    (0..(bitmap.len() - 128) * 4)
        .filter(|k| (bitmap[128 + k / 4] >> (2 * (k % 4))) & 0b11 == 0)
        .map(|k| RGRP2 + 1 + k as u64)
        .take(count)
        .collect()
}

/// big-dir with its depth-8 stuffed table doubled to depth 9 (4,096 bytes) and moved into
/// two journaled-data blocks under a height-1 tree, as Linux lays out a grown table.
fn big_dir_with_table_in_jd_blocks() -> (PatchedDisk<'static>, [u64; 2]) {
    let mut disk = PatchedDisk::new(common::image_4k());
    let old: Vec<u64> = (0..256)
        .map(|slot| disk.get_be(BIG_DIR, 232 + 8 * slot, 8))
        .collect();
    let doubled: Vec<u64> = old.iter().flat_map(|&leaf| [leaf, leaf]).collect();
    let blocks: [u64; 2] = free_blocks(&disk, 2).try_into().unwrap();

    for (index, &block) in blocks.iter().enumerate() {
        let bytes = disk.block_mut(block);
        bytes.fill(0);
        bytes[..4].copy_from_slice(&0x0116_1970u32.to_be_bytes());
        bytes[4..8].copy_from_slice(&(MetaType::JournaledData as u32).to_be_bytes());
        bytes[16..20].copy_from_slice(&700u32.to_be_bytes());
        for (i, leaf) in doubled.iter().skip(index * 509).take(509).enumerate() {
            bytes[24 + 8 * i..32 + 8 * i].copy_from_slice(&leaf.to_be_bytes());
        }
    }
    disk.block_mut(BIG_DIR)[232..].fill(0);
    disk.put_be(BIG_DIR, 232, blocks[0], 8);
    disk.put_be(BIG_DIR, 240, blocks[1], 8);
    disk.put_be(BIG_DIR, 56, 4096, 8);
    disk.put_be(BIG_DIR, 138, 1, 2);
    disk.put_be(BIG_DIR, 146, 9, 2);
    (disk, blocks)
}

#[test]
fn lookup_through_a_table_in_jd_blocks_reads_one_table_block_and_one_chain() {
    let (disk, blocks) = big_dir_with_table_in_jd_blocks();

    check_lookup_costs(disk, 9, |slot| Some(blocks[(slot / 509) as usize]));
}

#[test]
fn readdir_through_a_table_in_jd_blocks_lists_the_same_entries() {
    let original = Filesystem::open(PatchedDisk::new(common::image_4k())).unwrap();
    let (disk, _) = big_dir_with_table_in_jd_blocks();
    let moved = Filesystem::open(disk).unwrap();

    let listing = |filesystem: &Filesystem<PatchedDisk<'static>>| {
        let big_dir = filesystem.lookup("/big-dir").unwrap();
        let mut entries = filesystem.read_dir(&big_dir).unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    };

    let moved_listing = listing(&moved);
    assert_eq!(moved_listing.len(), 2573);
    assert_eq!(moved_listing, listing(&original));
}

#[test]
fn a_bad_table_block_is_corruption() {
    let (mut disk, blocks) = big_dir_with_table_in_jd_blocks();
    disk.put_be(blocks[1], 4, MetaType::Leaf as u64, 4);
    let filesystem = Filesystem::open(disk).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert!(matches!(
        filesystem.read_dir(&big_dir),
        Err(Error::Corrupt(Corruption::WrongMetaType {
            expected: MetaType::JournaledData,
            ..
        }))
    ));

    let (mut disk, _) = big_dir_with_table_in_jd_blocks();
    disk.put_be(BIG_DIR, 240, 0, 8);
    let filesystem = Filesystem::open(disk).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();
    assert!(matches!(
        filesystem.read_dir(&big_dir),
        Err(Error::Corrupt(Corruption::HashTableHole {
            inode: BIG_DIR,
            slot: 509
        }))
    ));
}

#[test]
fn the_counting_disk_counts() {
    let disk = PatchedDisk::new(common::image_4k());
    let counting = CountingDisk::new(disk);
    let mut buf = vec![0; 3 * 4096];

    counting.read_blocks(10, &mut buf).unwrap();

    assert_eq!(counting.take_reads(), [10, 11, 12]);
    assert!(counting.take_reads().is_empty());
}
