//! Fuzzes the gfs2 reader with mutated copies of the Linux-written fixture images.
//!
//! Random bytes almost never make a gfs2 filesystem, so the input is a list of edits to a
//! real image instead. Its first byte picks the image (even: the populated one, odd: the
//! mkfs one); every following 8 bytes are one edit of a metadata block (one that a clean
//! walk reads and that starts with the gfs2 magic):
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | the edit, modulo 5: flip a bit, set a byte, set a 64-bit word, zero the block, copy another block over it |
//! | 1-2 | which metadata block (modulo their number) |
//! | 3-4 | byte offset in the block (modulo the block size) |
//! | 5-7 | the bit, byte or word value; for words below 2^23 also another metadata block's number |
//!
//! Each mutated image is walked as in the tests (`fs/tests/common/walk.rs`): every listing,
//! inode, file start and end, block map, symlink and rgrp. A panic, an overflow (the fuzz
//! build has debug assertions) or a hang is a finding.

#![no_main]

#[path = "../../tests/common/counting.rs"]
mod counting;
#[path = "../../tests/common/patched.rs"]
mod patched;
#[path = "../../tests/common/walk.rs"]
#[allow(dead_code)]
mod walk;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use patched::PatchedDisk;

struct Corpus {
    image: Vec<u8>,
    metadata: Vec<u64>,
}

fn corpus(compressed: &[u8]) -> Corpus {
    let mut image = Vec::new();
    lzma_rs::xz_decompress(&mut &compressed[..], &mut image).expect("decompress a fixture");

    let recorder = counting::CountingDisk::new(PatchedDisk::new(&image));
    let report = walk::walk(&recorder);
    assert!(report.errors.is_empty(), "the clean image walks cleanly");
    let clean = PatchedDisk::new(&image);
    let read: BTreeSet<u64> = recorder.take_reads().into_iter().collect();
    let metadata = read
        .into_iter()
        .filter(|&block| clean.get_be(block, 0, 4) == 0x0116_1970)
        .collect();
    Corpus { image, metadata }
}

fn corpora() -> &'static [Corpus; 2] {
    static CORPORA: OnceLock<[Corpus; 2]> = OnceLock::new();
    CORPORA.get_or_init(|| {
        [
            corpus(include_bytes!("../../tests/data/gfs2-4k.img.xz")),
            corpus(include_bytes!("../../tests/data/gfs2-empty.img.xz")),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, edits)) = data.split_first() else {
        return;
    };
    let corpus = &corpora()[usize::from(selector & 1)];
    let mut disk = PatchedDisk::new(&corpus.image);
    let size = PatchedDisk::BLOCK_SIZE;
    let metadata = &corpus.metadata;

    for edit in edits.chunks_exact(8) {
        let block = metadata[usize::from(u16::from_be_bytes([edit[1], edit[2]])) % metadata.len()];
        let offset = usize::from(u16::from_be_bytes([edit[3], edit[4]])) % size;
        let value = u32::from_be_bytes([0, edit[5], edit[6], edit[7]]);
        let other = metadata[value as usize % metadata.len()];
        match edit[0] % 5 {
            0 => disk.block_mut(block)[offset] ^= 1 << (value % 8),
            1 => disk.block_mut(block)[offset] = value as u8,
            2 => {
                let word = if value & 1 == 0 {
                    other
                } else {
                    u64::from(value) << 20
                };
                disk.put_be(block, offset & !7, word, 8);
            }
            3 => disk.block_mut(block).fill(0),
            _ => {
                let bytes = disk.block(other);
                disk.block_mut(block).copy_from_slice(&bytes);
            }
        }
    }

    walk::walk(disk);
});
