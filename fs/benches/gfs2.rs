//! Benchmarks of the gfs2 reader on the Linux-written fixture image, held in memory:
//! path lookup in `/big-dir` (2,571 files, exhash) and reading the 9 MiB file `/nine-mib`.
//!
//! Run with `cargo bench -p fs`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drivers::block::RamDisk;
use embedded_io::Read;
use fs::gfs2::Filesystem;

fn image() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gfs2-4k.img.xz");
    let compressed = std::fs::read(path).expect("read the fixture image");
    let mut image = Vec::new();
    lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut image).expect("decompress it");
    image
}

fn lookup(c: &mut Criterion) {
    let image = image();
    let filesystem = Filesystem::open(RamDisk::new(&image, 4096).unwrap()).unwrap();
    let big_dir = filesystem.lookup("/big-dir").unwrap();

    c.bench_function("lookup /big-dir/f01234", |b| {
        b.iter(|| filesystem.lookup(black_box("/big-dir/f01234")).unwrap())
    });
    c.bench_function("find_entry f01234 in big-dir", |b| {
        b.iter(|| {
            filesystem
                .find_entry(&big_dir, black_box(b"f01234"))
                .unwrap()
                .unwrap()
        })
    });
}

fn read_nine_mib(c: &mut Criterion) {
    let image = image();
    let filesystem = Filesystem::open(RamDisk::new(&image, 4096).unwrap()).unwrap();
    let mut buf = vec![0; 1 << 20];

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Bytes(9 << 20));
    group.bench_function("nine-mib in 1 MiB reads", |b| {
        b.iter(|| {
            let mut file = filesystem.open_file("/nine-mib").unwrap();
            let mut total = 0;
            loop {
                let read = file.read(&mut buf).unwrap();
                if read == 0 {
                    break total;
                }
                total += read;
            }
        })
    });
    group.finish();
}

criterion_group!(benches, lookup, read_nine_mib);
criterion_main!(benches);
