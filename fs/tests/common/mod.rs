//! Shared by the integration tests: the fixture images and their manifests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// The directory of the fixtures, copied unchanged from the shared fixtures.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn decompress(name: &str) -> Vec<u8> {
    let compressed = std::fs::read(data_dir().join(name)).expect("read a fixture image");
    let mut image = Vec::new();
    lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut image).expect("decompress a fixture");
    image
}

/// The populated 4 KiB-block image that Linux 6.1 wrote.
pub fn image_4k() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| decompress("gfs2-4k.img.xz"))
}

/// The image straight from `mkfs.gfs2`.
pub fn image_empty() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| decompress("gfs2-empty.img.xz"))
}

/// One line of a manifest: an entry as Linux saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `f d l p c b`.
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    pub nlink: u32,
    /// sha256 (f), target (l), `major,minor` (c, b) or `-`.
    pub data: String,
    pub path: String,
    pub inode: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// Parses a manifest file of the fixtures.
pub fn manifest(name: &str) -> Vec<ManifestEntry> {
    let text = std::fs::read_to_string(data_dir().join(name)).expect("read a manifest");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 10, "manifest line {line:?}");
            ManifestEntry {
                kind: fields[0].chars().next().unwrap(),
                mode: u32::from_str_radix(fields[1], 8).unwrap(),
                size: fields[2].parse().unwrap(),
                nlink: fields[3].parse().unwrap(),
                data: fields[4].to_owned(),
                path: fields[5].to_owned(),
                inode: fields[6].parse().unwrap(),
                uid: fields[7].parse().unwrap(),
                gid: fields[8].parse().unwrap(),
                mtime: fields[9].parse().unwrap(),
            }
        })
        .collect()
}

/// The fixture content generator: 16-byte records `"%02x:%012x\n"` of (seed, offset).
pub fn generated(seed: u8, start: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 16);
    let first_record = start / 16;
    let mut record = first_record;
    while bytes.len() < len + (start % 16) as usize {
        bytes.extend_from_slice(format!("{:02x}:{:012x}\n", seed, record * 16).as_bytes());
        record += 1;
    }
    bytes.drain(..(start % 16) as usize);
    bytes.truncate(len);
    bytes
}

pub mod cluster;
pub mod counting;
pub mod patched;
pub mod walk;
