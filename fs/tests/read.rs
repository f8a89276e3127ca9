//! Reading files: `embedded_io::Read + Seek`, holes, block mapping, path resolution and the
//! errors of requests that make no sense.

mod common;

use common::generated;
use drivers::block::RamDisk;
use embedded_io::{Error as _, ErrorKind, Read, Seek, SeekFrom};
use fs::gfs2::{Error, Extent, FileType, Filesystem};

type Gfs2 = Filesystem<RamDisk<'static>>;

fn open() -> Gfs2 {
    Filesystem::open(RamDisk::new(common::image_4k(), 4096).unwrap()).unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn reads_with_odd_buffers_across_block_boundaries() {
    let filesystem = open();
    let mut file = filesystem.open_file("/three-blocks-plus-17").unwrap();
    let mut content = Vec::new();
    let mut buf = [0; 1000];
    for size in [1, 7, 999, 4095, 1000, 13].iter().cycle() {
        let read = file.read(&mut buf[..*size.min(&1000)]).unwrap();
        if read == 0 {
            break;
        }
        content.extend_from_slice(&buf[..read]);
    }

    assert_eq!(content, generated(5, 0, 3 * 4096 + 17));
    assert_eq!(file.position(), 3 * 4096 + 17);
}

#[test]
fn seeks_and_reads_around_holes() {
    let filesystem = open();
    let mut file = filesystem.open_file("/sparse").unwrap();
    let second_part = 40 * MIB + 123;
    let mut buf = vec![0; 8192];

    // The end of the first part and the start of the hole.
    assert_eq!(file.seek(SeekFrom::Start(4000)).unwrap(), 4000);
    file.read_exact(&mut buf[..2000]).unwrap();
    assert_eq!(buf[..1000], generated(8, 4000, 1000)[..]);
    assert!(buf[1000..2000].iter().all(|&b| b == 0));

    // Across the end of the hole into the second part.
    file.seek(SeekFrom::Start(second_part - 100)).unwrap();
    file.read_exact(&mut buf[..300]).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0));
    assert_eq!(buf[100..300], generated(9, 0, 200)[..]);

    // From the end, and past it.
    assert_eq!(file.seek(SeekFrom::End(-10)).unwrap(), second_part + 4990);
    assert_eq!(file.read(&mut buf).unwrap(), 10);
    assert_eq!(buf[..10], generated(9, 4990, 10)[..]);
    assert_eq!(file.read(&mut buf).unwrap(), 0);
    file.seek(SeekFrom::Current(1000)).unwrap();
    assert_eq!(file.read(&mut buf).unwrap(), 0);

    let error = file.seek(SeekFrom::Current(-(1 << 40))).unwrap_err();
    assert!(matches!(error, Error::InvalidSeek));
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_jdata_file_reads_raw_blocks() {
    let filesystem = open();
    let inode = filesystem.lookup("/jdata-big").unwrap();
    let mut content = vec![0; 200_000];

    assert_eq!(
        filesystem.read_at(&inode, 0, &mut content).unwrap(),
        200_000
    );
    assert_eq!(content, generated(10, 0, 200_000));
}

#[test]
fn maps_extents_of_contiguous_blocks_and_holes() {
    let filesystem = open();

    // nine-mib: 2304 data blocks, allocated in runs.
    let nine_mib = filesystem.lookup("/nine-mib").unwrap();
    let mut lblock = 0;
    let mut mapped = 0;
    while lblock < 2304 {
        let extent = filesystem
            .map_extent(&nine_mib, lblock, 2304 - lblock)
            .unwrap();
        let Extent::Mapped { start, len } = extent else {
            panic!("a hole in nine-mib")
        };
        assert_eq!(
            filesystem.map_block(&nine_mib, lblock).unwrap(),
            Some(start)
        );
        assert_eq!(
            filesystem.map_block(&nine_mib, lblock + len - 1).unwrap(),
            Some(start + len - 1)
        );
        mapped += len;
        lblock += len;
    }
    assert_eq!(mapped, 2304);

    // sparse: 2 blocks of data, a hole of about 10,000 blocks, 2 more blocks.
    let sparse = filesystem.lookup("/sparse").unwrap();
    assert!(matches!(
        filesystem.map_extent(&sparse, 0, 100).unwrap(),
        Extent::Mapped { len: 2, .. }
    ));
    let second_part = (40 * MIB + 123) / 4096;
    let mut lblock = 2;
    while let Extent::Hole { len } = filesystem.map_extent(&sparse, lblock, 1 << 20).unwrap() {
        // A hole ends at the latest where its bottom-level pointer block ends.
        assert!(len <= 509);
        lblock += len;
    }
    assert_eq!(lblock, second_part);
    assert!(matches!(
        filesystem.map_extent(&sparse, lblock, 100).unwrap(),
        Extent::Mapped { len: 2, .. }
    ));
    assert_eq!(filesystem.map_block(&sparse, 5000).unwrap(), None);

    // all-hole and the tail of sparse-tail (beyond what its height-1 tree reaches).
    let all_hole = filesystem.lookup("/all-hole").unwrap();
    assert_eq!(
        filesystem.map_extent(&all_hole, 0, 256).unwrap(),
        Extent::Hole { len: 256 }
    );
    let sparse_tail = filesystem.lookup("/sparse-tail").unwrap();
    assert_eq!(sparse_tail.height(), 1);
    assert_eq!(
        filesystem.map_extent(&sparse_tail, 2000, 560).unwrap(),
        Extent::Hole { len: 560 }
    );

    // Stuffed data has no blocks.
    let hello = filesystem.lookup("/hello.txt").unwrap();
    assert!(matches!(
        filesystem.map_block(&hello, 0),
        Err(Error::Stuffed(2340))
    ));
}

#[test]
fn resolves_paths_like_stat_and_lstat() {
    let filesystem = open();
    let addr = |path: &str| filesystem.lookup(path).map(|inode| inode.addr());

    assert_eq!(addr("/link-to-dir/b.txt").unwrap(), 9236);
    assert_eq!(addr("/link-to-hello").unwrap(), 2340);
    assert_eq!(addr("dir/sub/../a.txt").unwrap(), 9235);
    assert_eq!(addr("//dir///sub/./deeper/deepest/file.txt").unwrap(), 9238);
    assert_eq!(addr("/").unwrap(), 2339);
    assert_eq!(addr("").unwrap(), 2339);
    assert_eq!(addr("/..").unwrap(), 2339);
    assert_eq!(addr("/link-to-dir/").unwrap(), 9231);

    let link = filesystem.lookup_nofollow("/link-to-hello").unwrap();
    assert_eq!(link.file_type(), FileType::Symlink);
    assert_eq!(filesystem.read_link(&link).unwrap(), b"hello.txt");
    assert!(matches!(addr("/dangling-link"), Err(Error::NotFound)));
    assert!(filesystem.lookup_nofollow("/dangling-link").is_ok());
    assert!(matches!(addr("/nothing-here"), Err(Error::NotFound)));
    assert!(matches!(addr("/hello.txt/"), Err(Error::NotADirectory)));
    assert!(matches!(addr("/hello.txt/x"), Err(Error::NotADirectory)));
    assert!(matches!(
        addr(&format!("/{}", "x".repeat(256))),
        Err(Error::NameTooLong)
    ));
    assert_eq!(
        addr("/nothing-here").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn requests_that_make_no_sense_for_the_file() {
    let filesystem = open();
    let hello = filesystem.lookup("/hello.txt").unwrap();
    let dir = filesystem.lookup("/dir").unwrap();

    assert!(matches!(
        filesystem.open_file("/dir"),
        Err(Error::IsADirectory)
    ));
    assert!(matches!(
        filesystem.open_file("/fifo"),
        Err(Error::NotARegularFile)
    ));
    assert!(matches!(
        filesystem.read_dir(&hello),
        Err(Error::NotADirectory)
    ));
    assert!(matches!(
        filesystem.find_entry(&hello, b"x"),
        Err(Error::NotADirectory)
    ));
    assert!(matches!(
        filesystem.read_link(&hello),
        Err(Error::NotASymlink)
    ));
    assert!(matches!(
        filesystem.read_at(&dir, 0, &mut [0; 4]),
        Err(Error::IsADirectory)
    ));
}

#[test]
fn stat_reports_every_attribute() {
    let filesystem = open();
    let stat = filesystem.lookup("/owned-by-1000").unwrap().stat();

    assert_eq!(
        (stat.uid, stat.gid, stat.permissions()),
        (1000, 1234, 0o640)
    );
    assert_eq!(stat.file_type, FileType::Regular);
    assert_eq!(stat.block_size, 4096);
    assert_eq!(stat.blocks, 1);
    assert_eq!(stat.sectors(), 8);
    assert!(stat.atime.seconds >= stat.mtime.seconds);
    assert!(stat.ctime.nanoseconds < 1_000_000_000);

    let nine_mib = filesystem.lookup("/nine-mib").unwrap().stat();
    // The dinode, 2304 data blocks and 5 indirect blocks.
    assert_eq!(nine_mib.blocks, 1 + 2304 + 5);

    let chardev = filesystem.lookup("/chardev").unwrap().stat();
    assert_eq!((chardev.major, chardev.minor), (1, 3));
}

#[test]
fn superblock_and_rgrps_describe_the_filesystem() {
    let filesystem = open();
    let superblock = filesystem.superblock();

    assert_eq!(superblock.fs_format(), 1802);
    assert_eq!(superblock.lock_protocol(), b"lock_nolock");
    assert_eq!(superblock.lock_table(), b"fixture:gfs2-4k");
    assert_eq!(superblock.root_dir().addr, 2339);
    assert_eq!(superblock.master_dir().addr, 2072);
    assert_eq!(superblock.uuid()[..4], [0x6f, 0x3c, 0x1c, 0x7e]);
    assert_eq!(filesystem.master().addr(), 2072);

    let rgrps: Vec<(u64, u32, u64, u32)> = filesystem
        .rgrps()
        .iter()
        .map(|r| (r.addr, r.length, r.data0, r.data))
        .collect();
    assert_eq!(
        rgrps,
        [
            (17, 1, 18, 2056),
            (2074, 1, 2075, 7152),
            (9229, 1, 9230, 7152)
        ]
    );
    for rgrp in filesystem.rgrps() {
        let header = filesystem.rgrp_header(rgrp).unwrap();
        let bitmap = filesystem.rgrp_bitmap(rgrp).unwrap();
        assert_eq!(u64::from(header.free), bitmap.free);
        assert_eq!(u64::from(header.dinodes), bitmap.dinodes + bitmap.unlinked);
        assert_eq!(bitmap.total(), u64::from(rgrp.data));
    }

    let names: Vec<Vec<u8>> = filesystem
        .read_dir(filesystem.master())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for name in [
        &b"jindex"[..],
        b"per_node",
        b"inum",
        b"statfs",
        b"rindex",
        b"quota",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{:?}",
            std::str::from_utf8(name)
        );
    }
}
