//! The kernel reads a gfs2 image that Linux wrote, through each kind of disk: virtio-blk on
//! MMIO (legacy and modern transports) and on PCI (ECAM, and x86_64's configuration ports on
//! i440fx, which has no MCFG), and the initrd as a RAM disk, on both architectures.
//!
//! Booted with `sha256-all`, the kernel logs `file PATH sha256 HEX` for every regular file,
//! which is compared with the fixture's manifest (as Linux computed it). One riscv64 run
//! reads every file whole, the 1 GiB sparse one included; the others skip files above
//! [`SIZE_LIMIT`] (the kernel logs `file PATH skipped: N bytes`, checked against the
//! manifest's sizes) to keep `cargo test` short: hashing 1 GiB takes about 25 s under TCG.
//!
//! The error test puts the image behind QEMU's `blkdebug` driver, which fails reads of one
//! data block of `/one-mib` with EIO: that file's read must fail naming the disk and the
//! block, and every other file must still read correctly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    FileReport, SIZE_LIMIT, check, check_every_file, check_every_file_on, file_reports,
    fixture_image, manifest,
};
use drivers::block::RamDisk;
use fs::gfs2::{Extent, Filesystem};
use runner::{Arch, DiskBus, DiskImage, LogLevel, Outcome, RunConfig, RunReport};

fn boot(arch: Arch, command_line: &str, configure: impl FnOnce(&mut RunConfig)) -> RunReport {
    let kernel = runner::build_kernel(arch, LogLevel::Info)
        .unwrap_or_else(|error| panic!("building the {arch} kernel: {error}"));
    let mut config = RunConfig::new(arch, kernel);
    config.command_line = command_line.to_owned();
    config.timeout = Duration::from_secs(240);
    configure(&mut config);
    runner::run(&config).unwrap_or_else(|error| panic!("running the {arch} kernel: {error}"))
}

fn disk(bus: DiskBus) -> impl FnOnce(&mut RunConfig) {
    move |config| {
        config.disks.push(DiskImage {
            path: fixture_image().to_owned(),
            bus,
            blkdebug_config: None,
        });
    }
}

fn limited() -> String {
    format!("sha256-all={SIZE_LIMIT}")
}

#[test]
fn riscv64_virtio_mmio_reads_every_file_whole() {
    let report = boot(Arch::Riscv64, "sha256-all", disk(DiskBus::Mmio));
    check_every_file_on(&report, None, "virtio0", Some("virtio-mmio (legacy)"));
}

#[test]
fn riscv64_modern_virtio_mmio_reads_every_file() {
    let report = boot(Arch::Riscv64, &limited(), disk(DiskBus::MmioModern));
    check_every_file_on(&report, Some(SIZE_LIMIT), "virtio0", Some("virtio-mmio"));
}

#[test]
fn riscv64_virtio_pci_reads_every_file() {
    let report = boot(Arch::Riscv64, &limited(), disk(DiskBus::Pci));
    check_every_file_on(&report, Some(SIZE_LIMIT), "virtio0", Some("virtio-pci"));
}

#[test]
fn x86_64_virtio_pci_reads_every_file_whole() {
    // With riscv64's MMIO run, the one that hashes the two large sparse files too: each
    // transport kind reads every byte of the image once.
    let report = boot(Arch::X86_64, "sha256-all", disk(DiskBus::Pci));
    check_every_file_on(&report, None, "virtio0", Some("virtio-pci"));
}

#[test]
fn x86_64_virtio_pci_through_configuration_ports_reads_every_file() {
    // i440fx (`-M pc`) has no MCFG: PCI is reached through ports 0xcf8/0xcfc.
    let report = boot(Arch::X86_64, &limited(), |config| {
        disk(DiskBus::Pci)(config);
        config.extra_qemu_args = vec!["-M".into(), "pc".into()];
    });
    check_every_file(&report, Some(SIZE_LIMIT), "virtio0");
}

#[test]
fn riscv64_initrd_reads_every_file_and_root_picks_it() {
    // With a disk and the initrd, `root=initrd` passes over the disk.
    let report = boot(
        Arch::Riscv64,
        &format!("root=initrd {}", limited()),
        |config| {
            disk(DiskBus::Mmio)(config);
            config.initrd = Some(fixture_image().to_owned());
        },
    );
    check_every_file(&report, Some(SIZE_LIMIT), "initrd");
}

#[test]
fn x86_64_initrd_reads_every_file() {
    let report = boot(Arch::X86_64, &limited(), |config| {
        config.initrd = Some(fixture_image().to_owned());
    });
    check_every_file(&report, Some(SIZE_LIMIT), "initrd");
}

#[test]
fn riscv64_demo_lists_the_root_and_reads_files() {
    let report = boot(Arch::Riscv64, "", disk(DiskBus::Mmio));
    check(
        &report,
        report.outcome == Outcome::Success,
        "the kernel did not exit successfully",
    );

    let hello = &manifest()["/hello.txt"];
    let line = format!(
        "/hello.txt: {} bytes, first line \"Hello, gfs2! This small file is stuffed in its dinode.\", sha256 {}",
        hello.size, hello.sha256
    );
    check(
        &report,
        report.messages().any(|message| message == line),
        &format!("no line {line:?}"),
    );
    check(
        &report,
        report.messages().any(|message| {
            message.starts_with(
                "mounted gfs2 from virtio0 (virtio-mmio (legacy)): lock table \"fixture:gfs2-4k\"",
            )
        }),
        "the volume's lock table is not logged",
    );
    check(
        &report,
        report
            .messages()
            .any(|message| message == "/big-dir: directory"),
        "the root listing lacks /big-dir",
    );
}

/// The first device sector of a data block of `path` in the fixture, found with the host's
/// gfs2 reader, and the filesystem block it belongs to.
fn data_sector_of(path: &str) -> (u64, u64) {
    let bytes = std::fs::read(fixture_image()).unwrap();
    let filesystem = Filesystem::open(RamDisk::new(&bytes, 512).unwrap()).unwrap();
    let inode = filesystem.lookup(path).unwrap();
    // The middle of the file, so the failed request is not the read's first.
    let lblock = inode.size() / 2 / u64::from(filesystem.block_size());
    let Extent::Mapped { start, .. } = filesystem.map_extent(&inode, lblock, 1).unwrap() else {
        panic!("{path} has a hole at block {lblock}");
    };
    let sectors_per_block = u64::from(filesystem.block_size()) / 512;
    (start * sectors_per_block, start)
}

#[test]
fn riscv64_read_error_names_disk_and_block_and_others_still_read() {
    let (sector, block) = data_sector_of("/one-mib");
    let config_path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("blkdebug-eio-{sector}.conf"));
    std::fs::write(
        &config_path,
        format!(
            "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nsector = \"{sector}\"\nonce = \"off\"\n"
        ),
    )
    .unwrap();

    let report = boot(Arch::Riscv64, &limited(), |config| {
        config.disks.push(DiskImage {
            path: fixture_image().to_owned(),
            bus: DiskBus::Mmio,
            blkdebug_config: Some(config_path.clone()),
        });
    });
    check(
        &report,
        report.outcome == Outcome::Success,
        "the kernel did not keep running after the read error",
    );

    let files = file_reports(&report);
    let Some(FileReport::Failed(reason)) = files.get("/one-mib") else {
        panic!(
            "/one-mib did not fail: {:?}\n{}",
            files.get("/one-mib"),
            report.transcript()
        );
    };
    // "virtio0 block B: ..." where B is the first block of the failed read, at most the
    // block holding the bad sector and within one read chunk (1 MiB) of it.
    let (disk, rest) = reason.split_once(" block ").unwrap();
    let failed_block: u64 = rest.split(':').next().unwrap().parse().unwrap();
    check(
        &report,
        disk == "virtio0",
        &format!("the error names {disk:?}"),
    );
    check(
        &report,
        failed_block <= block && block < failed_block + 256,
        &format!("the error names block {failed_block}, the bad one is {block}"),
    );
    check(
        &report,
        reason.contains("I/O error"),
        &format!("the error does not say I/O error: {reason}"),
    );

    for (path, expected) in manifest() {
        if path == "/one-mib" || expected.size > SIZE_LIMIT {
            continue;
        }
        check(
            &report,
            files.get(path) == Some(&FileReport::Hashed(expected.sha256.clone())),
            &format!("{path} did not read correctly: {:?}", files.get(path)),
        );
    }
}
