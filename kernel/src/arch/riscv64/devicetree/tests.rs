//! In-kernel tests of the device-tree reader: the VisionFive 2's real blob, hand-built trees
//! with what that blob lacks (reservations, an initrd, an exit device, bad values), and
//! corrupt or mutated blobs, which must give errors and never a panic.

use alloc::vec::Vec;

use super::{
    BootPlacement, ConsoleSource, DeviceTree, DeviceTreeError, ExitDevice, PropertyProblem,
    ReservationSource, StructureError, stdout_path_without_options,
};
use crate::boot::{PhysRange, ReservedKind};
use crate::ktest::{TestFailure, TestResult};
use crate::{ktest_assert, ktest_assert_eq};

/// The StarFive VisionFive 2 v1.3B's device tree, as its U-Boot passes it (from Linux's
/// `jh7110-starfive-visionfive-2-v1.3b.dts`).
static VISIONFIVE2: &[u8] = include_bytes!("../testdata/jh7110-starfive-visionfive-2-v1.3b.dtb");

/// The VisionFive 2's blob, for the tests of other device-tree modules.
pub fn visionfive2_bytes() -> &'static [u8] {
    VISIONFIVE2
}

/// Unwraps a `Result`, failing the test (and logging the error) on `Err`.
macro_rules! expect_ok {
    ($result:expr, $message:literal) => {
        match $result {
            Ok(value) => value,
            Err(error) => {
                defmt::error!("{=str}: {}", $message, error);
                return Err(TestFailure {
                    message: $message,
                    file: file!(),
                    line: line!(),
                });
            }
        }
    };
}

pub fn visionfive2_blob() -> TestResult {
    let tree = expect_ok!(
        DeviceTree::new(VISIONFIVE2),
        "the VisionFive 2 blob does not parse"
    );

    let uart = expect_ok!(tree.console_uart(), "no console UART");
    ktest_assert_eq!(uart.name, "serial@10000000");
    ktest_assert_eq!(uart.base, 0x1000_0000);
    ktest_assert_eq!(uart.layout.reg_shift, 2);
    ktest_assert_eq!(uart.layout.reg_io_width, 4);
    ktest_assert_eq!(uart.compatible, "snps,dw-apb-uart");
    ktest_assert_eq!(uart.source, ConsoleSource::StdoutPath("serial0:115200n8"));

    let memory = expect_ok!(tree.memory(), "no memory");
    ktest_assert_eq!(
        memory.regions.as_slice(),
        &[PhysRange {
            start: 0x4000_0000,
            end: 0x1_4000_0000
        }][..]
    );
    ktest_assert_eq!(memory.dropped, 0);

    ktest_assert_eq!(tree.timebase_frequency(0), Ok(4_000_000));
    ktest_assert_eq!(tree.timebase_frequency(3), Ok(4_000_000));
    ktest_assert_eq!(tree.command_line(), Ok(""));
    ktest_assert_eq!(tree.initrd(), Ok(None));
    ktest_assert_eq!(tree.exit_device(), Ok(None));

    // As U-Boot `booti` loads it: 2 MiB into RAM, OpenSBI below.
    let placement = BootPlacement {
        kernel: range(0x4020_0000, 0x4060_0000),
        blob_address: 0x4800_0000,
    };
    let found = expect_ok!(
        tree.reservations(&memory.regions, placement, None),
        "reservations"
    );
    let expected = [
        (
            range(0x4000_0000, 0x4020_0000),
            ReservedKind::Firmware,
            ReservationSource::FirmwareBelowKernel,
        ),
        (
            placement.kernel,
            ReservedKind::KernelImage,
            ReservationSource::KernelImage,
        ),
        (
            range(0x4800_0000, 0x4800_0000 + VISIONFIVE2.len() as u64),
            ReservedKind::DeviceTree,
            ReservationSource::DeviceTreeBlob,
        ),
    ];
    ktest_assert_eq!(found.len(), expected.len());
    for (found, (range, kind, source)) in found.iter().zip(expected) {
        ktest_assert_eq!(found.reservation.range, range);
        ktest_assert_eq!(found.reservation.kind, kind);
        ktest_assert_eq!(found.source, source);
    }
    Ok(())
}

pub fn synthetic_tree() -> TestResult {
    let blob = full_tree(STDOUT_ALIAS);
    let tree = expect_ok!(DeviceTree::new(&blob), "the synthetic tree does not parse");

    let uart = expect_ok!(tree.console_uart(), "no console UART");
    ktest_assert_eq!(uart.name, "uart@1000");
    ktest_assert_eq!(uart.base, 0x1000);
    ktest_assert_eq!(uart.compatible, "ns16550");
    ktest_assert_eq!(uart.layout.reg_shift, 0);
    ktest_assert_eq!(uart.layout.reg_io_width, 1);
    ktest_assert_eq!(uart.source, ConsoleSource::StdoutPath("console:115200n8"));

    // Two banks listed out of order in one node; the disabled node is left out.
    let memory = expect_ok!(tree.memory(), "no memory");
    ktest_assert_eq!(
        memory.regions.as_slice(),
        &[
            range(0x8000_0000, 0x9000_0000),
            range(0x9000_0000, 0xa000_0000)
        ][..]
    );

    // The timebase is on the cpu nodes: the boot hart's wins, else the first one's.
    ktest_assert_eq!(tree.timebase_frequency(1), Ok(2_000_000));
    ktest_assert_eq!(tree.timebase_frequency(0), Ok(1_000_000));
    ktest_assert_eq!(tree.timebase_frequency(7), Ok(1_000_000));

    ktest_assert_eq!(tree.command_line(), Ok("test quiet"));
    let initrd = range(0x8400_0000, 0x8480_0000);
    ktest_assert_eq!(tree.initrd(), Ok(Some(initrd)));
    ktest_assert_eq!(
        tree.exit_device(),
        Ok(Some(ExitDevice {
            name: "test@100000",
            base: 0x10_0000
        }))
    );

    let placement = BootPlacement {
        kernel: range(0x8020_0000, 0x8060_0000),
        blob_address: 0x8f00_0000,
    };
    let found = expect_ok!(
        tree.reservations(&memory.regions, placement, Some(initrd)),
        "reservations"
    );
    let expected = [
        (
            range(0x8000_0000, 0x8020_0000),
            ReservedKind::Firmware,
            ReservationSource::FirmwareBelowKernel,
        ),
        (
            placement.kernel,
            ReservedKind::KernelImage,
            ReservationSource::KernelImage,
        ),
        (
            range(0x8f00_0000, 0x8f00_0000 + blob.len() as u64),
            ReservedKind::DeviceTree,
            ReservationSource::DeviceTreeBlob,
        ),
        (
            range(0x8800_0000, 0x8800_1000),
            ReservedKind::Firmware,
            ReservationSource::MemReserveEntry,
        ),
        (
            range(0x8000_0000, 0x8004_0000),
            ReservedKind::Firmware,
            ReservationSource::ReservedMemoryNode("firmware@80000000"),
        ),
        (initrd, ReservedKind::Initrd, ReservationSource::Initrd),
    ];
    ktest_assert_eq!(found.len(), expected.len());
    for (found, (range, kind, source)) in found.iter().zip(expected) {
        ktest_assert_eq!(found.reservation.range, range);
        ktest_assert_eq!(found.reservation.kind, kind);
        ktest_assert_eq!(found.source, source);
    }

    // A kernel outside every bank is refused.
    let stray = BootPlacement {
        kernel: range(0x1_0000_0000, 0x1_0020_0000),
        blob_address: 0x8f00_0000,
    };
    ktest_assert_eq!(
        tree.reservations(&memory.regions, stray, None),
        Err(DeviceTreeError::KernelOutsideMemory {
            start: 0x1_0000_0000,
            end: 0x1_0020_0000
        })
    );
    Ok(())
}

pub fn console_fallbacks() -> TestResult {
    ktest_assert_eq!(stdout_path_without_options("serial0:115200n8"), "serial0");
    ktest_assert_eq!(
        stdout_path_without_options("/soc/serial@10000000"),
        "/soc/serial@10000000"
    );
    ktest_assert_eq!(stdout_path_without_options(""), "");

    // stdout-path names a device that is not a UART: the first enabled UART is used.
    let blob = full_tree(Some("/soc/test@100000"));
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    let uart = expect_ok!(tree.console_uart(), "no console UART");
    ktest_assert_eq!(uart.name, "uart@2000");
    ktest_assert_eq!(
        uart.source,
        ConsoleSource::FirstCompatible {
            stdout_path: Some("/soc/test@100000")
        }
    );

    // An alias that leads nowhere, and no stdout-path at all.
    for stdout_path in [Some("nosuchalias"), None] {
        let blob = full_tree(stdout_path);
        let tree = expect_ok!(DeviceTree::new(&blob), "tree");
        let uart = expect_ok!(tree.console_uart(), "no console UART");
        ktest_assert_eq!(uart.name, "uart@2000");
    }

    // No UART the driver handles.
    let blob = minimal_tree(|_| {});
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert_eq!(tree.console_uart(), Err(DeviceTreeError::NoUart));
    Ok(())
}

pub fn bad_properties_are_errors() -> TestResult {
    // Initrd: one end missing, end before start, a 3-byte value.
    let cases: [(&TreeEdit, DeviceTreeError<'static>); 3] = [
        (
            &|b| {
                b.begin("chosen");
                b.u32("linux,initrd-start", 0x100);
                b.end();
            },
            DeviceTreeError::MissingProperty {
                node: "chosen",
                property: "linux,initrd-end",
            },
        ),
        (
            &|b| {
                b.begin("chosen");
                b.u64("linux,initrd-start", 0x200);
                b.u32("linux,initrd-end", 0x100);
                b.end();
            },
            DeviceTreeError::BadProperty {
                node: "chosen",
                property: "linux,initrd-end",
                problem: PropertyProblem::EndBeforeStart {
                    start: 0x200,
                    end: 0x100,
                },
            },
        ),
        (
            &|b| {
                b.begin("chosen");
                b.property("linux,initrd-start", &[1, 2, 3]);
                b.u32("linux,initrd-end", 0x100);
                b.end();
            },
            DeviceTreeError::BadProperty {
                node: "chosen",
                property: "linux,initrd-start",
                problem: PropertyProblem::BadLength { length: 3 },
            },
        ),
    ];
    for (extra, expected) in cases {
        let blob = minimal_tree(extra);
        let tree = expect_ok!(DeviceTree::new(&blob), "tree");
        ktest_assert_eq!(tree.initrd(), Err(expected));
    }

    // Bootargs that are not NUL-terminated.
    let blob = minimal_tree(|b| {
        b.begin("chosen");
        b.property("bootargs", b"test");
        b.end();
    });
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert_eq!(
        tree.command_line(),
        Err(DeviceTreeError::BadProperty {
            node: "chosen",
            property: "bootargs",
            problem: PropertyProblem::BadString
        })
    );

    // A memory range that wraps, and a reg that is not whole entries.
    for (reg, problem) in [
        (
            &[0xffff_ffff, 0xffff_f000, 0, 0x2000][..],
            PropertyProblem::Overflow,
        ),
        (
            &[0, 0x8000_0000, 0][..],
            PropertyProblem::BadLength { length: 12 },
        ),
    ] {
        let blob = tree_with_memory(reg);
        let tree = expect_ok!(DeviceTree::new(&blob), "tree");
        ktest_assert_eq!(
            tree.memory(),
            Err(DeviceTreeError::BadProperty {
                node: "memory@80000000",
                property: "reg",
                problem
            })
        );
    }
    let blob = tree_with_memory(&[0, 0x8000_0000, 0, 0]);
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert_eq!(tree.memory(), Err(DeviceTreeError::NoMemory));

    // A UART whose registers are 3 bytes wide.
    let blob = minimal_tree(|b| {
        b.begin("uart@1000");
        b.string("compatible", "ns16550a");
        b.cells("reg", &[0, 0x1000, 0, 0x100]);
        b.u32("reg-io-width", 3);
        b.end();
    });
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert!(
        matches!(
            tree.console_uart(),
            Err(DeviceTreeError::UartLayout {
                node: "uart@1000",
                ..
            })
        ),
        "a 3-byte reg-io-width was accepted"
    );

    // No timebase anywhere, and a zero one.
    let blob = tree_with_timebase(None);
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert_eq!(
        tree.timebase_frequency(0),
        Err(DeviceTreeError::MissingProperty {
            node: "cpus",
            property: "timebase-frequency"
        })
    );
    let blob = tree_with_timebase(Some(0));
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    ktest_assert_eq!(
        tree.timebase_frequency(0),
        Err(DeviceTreeError::BadProperty {
            node: "cpus",
            property: "timebase-frequency",
            problem: PropertyProblem::Zero
        })
    );

    // More reservations than a BootInfo holds.
    let blob = minimal_tree(|b| {
        b.begin("reserved-memory");
        b.u32("#address-cells", 2);
        b.u32("#size-cells", 2);
        for index in 0..40u32 {
            b.begin("region");
            b.cells("reg", &[0, 0x8800_0000 + index * 0x1000, 0, 0x1000]);
            b.end();
        }
        b.end();
    });
    let tree = expect_ok!(DeviceTree::new(&blob), "tree");
    let memory = expect_ok!(tree.memory(), "memory");
    let placement = BootPlacement {
        kernel: range(0x8020_0000, 0x8040_0000),
        blob_address: 0x8f00_0000,
    };
    ktest_assert_eq!(
        tree.reservations(&memory.regions, placement, None),
        Err(DeviceTreeError::TooManyReservations { limit: 32 })
    );
    Ok(())
}

pub fn corrupt_blobs_are_errors() -> TestResult {
    let structure_error = |blob: &[u8]| match DeviceTree::new(blob) {
        Ok(_) => None,
        Err(DeviceTreeError::Structure(error)) => Some(error),
        Err(_) => None,
    };

    let mut blob = VISIONFIVE2.to_vec();
    blob[0] ^= 0xff;
    ktest_assert_eq!(
        structure_error(&blob),
        Some(StructureError::BadMagic(0x2f0d_feed))
    );

    ktest_assert_eq!(
        structure_error(&VISIONFIVE2[..20]),
        Some(StructureError::TooShort { length: 20 })
    );
    ktest_assert_eq!(
        structure_error(&VISIONFIVE2[..1000]),
        Some(StructureError::BadTotalSize {
            total_size: VISIONFIVE2.len() as u32,
            available: 1000
        })
    );

    // A structure block past the end of the blob, and one that is misaligned.
    let mut blob = VISIONFIVE2.to_vec();
    set_header(&mut blob, HEADER_STRUCTURE_OFFSET, 0x10_0000);
    ktest_assert!(
        matches!(
            structure_error(&blob),
            Some(StructureError::BlockOutOfBounds { .. })
        ),
        "a structure block outside the blob was accepted",
        structure_error(&blob)
    );

    let structure_offset = header(VISIONFIVE2, HEADER_STRUCTURE_OFFSET);
    set_header(&mut blob, HEADER_STRUCTURE_OFFSET, structure_offset + 2);
    ktest_assert!(
        matches!(
            structure_error(&blob),
            Some(StructureError::MisalignedBlock { .. })
        ),
        "a misaligned structure block was accepted",
        structure_error(&blob)
    );

    // Version 16 headers lack size_dt_struct.
    let mut blob = VISIONFIVE2.to_vec();
    set_header(&mut blob, HEADER_VERSION, 16);
    ktest_assert!(
        matches!(
            structure_error(&blob),
            Some(StructureError::UnsupportedVersion { version: 16, .. })
        ),
        "a version 16 header was accepted",
        structure_error(&blob)
    );

    // A structure block cut in half.
    let mut blob = VISIONFIVE2.to_vec();
    let structure_size = header(&blob, HEADER_STRUCTURE_SIZE);
    set_header(&mut blob, HEADER_STRUCTURE_SIZE, structure_size / 2);
    ktest_assert!(
        structure_error(&blob).is_some(),
        "a truncated structure block was accepted"
    );

    // Hand-built trees with one structural fault each.
    let nop = minimal_tree(|b| {
        b.begin("chosen");
        b.token(FDT_NOP);
        b.string("bootargs", "x");
        b.end();
    });
    ktest_assert!(
        matches!(structure_error(&nop), Some(StructureError::NopToken { .. })),
        "a NOP token was accepted",
        structure_error(&nop)
    );

    let property_after_child = minimal_tree(|b| {
        b.begin("soc");
        b.begin("child");
        b.end();
        b.string("late", "x");
        b.end();
    });
    ktest_assert!(
        matches!(
            structure_error(&property_after_child),
            Some(StructureError::PropertyAfterChild { .. })
        ),
        "a property after a child node was accepted",
        structure_error(&property_after_child)
    );

    let deep = minimal_tree(|b| {
        for _ in 0..40 {
            b.begin("level");
        }
        for _ in 0..40 {
            b.end();
        }
    });
    ktest_assert!(
        matches!(structure_error(&deep), Some(StructureError::TooDeep { .. })),
        "40 levels of nodes were accepted",
        structure_error(&deep)
    );

    let wide_cells = minimal_tree(|b| {
        b.begin("bus");
        b.u64("#address-cells", 2);
        b.end();
    });
    ktest_assert!(
        matches!(
            structure_error(&wide_cells),
            Some(StructureError::BadCellCount { length: 8, .. })
        ),
        "an 8-byte #address-cells was accepted",
        structure_error(&wide_cells)
    );

    // The root's END_NODE closes "open" instead, and FDT_END comes with the root still open.
    let unclosed = minimal_tree(|b| b.begin("open"));
    ktest_assert!(
        matches!(
            structure_error(&unclosed),
            Some(StructureError::UnexpectedToken { token: FDT_END, .. })
        ),
        "an unclosed node was accepted",
        structure_error(&unclosed)
    );
    Ok(())
}

/// Stride between mutated offsets: a prime, so mutations land on every position within a
/// 4-byte field. Kept coarse so the test takes about a second under TCG.
const MUTATION_STRIDE: usize = 389;

pub fn mutated_blobs_never_panic() -> TestResult {
    let mut blob = VISIONFIVE2.to_vec();
    let (mut accepted, mut rejected) = (0u32, 0u32);
    let mut count = |ok: bool| {
        if ok {
            accepted += 1;
        } else {
            rejected += 1;
        }
    };

    // Overwrite one word at a time with values that are tokens, lengths or offsets.
    for offset in (0..blob.len().saturating_sub(4)).step_by(MUTATION_STRIDE) {
        let original: [u8; 4] = [
            blob[offset],
            blob[offset + 1],
            blob[offset + 2],
            blob[offset + 3],
        ];
        for value in [0u32, 3, 9, u32::MAX] {
            blob[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
            count(read_everything(&blob));
        }
        blob[offset..offset + 4].copy_from_slice(&original);
    }

    // Cut the blob short, with a header that agrees.
    for length in (8..VISIONFIVE2.len()).step_by(MUTATION_STRIDE) {
        let mut cut = VISIONFIVE2[..length].to_vec();
        set_header(&mut cut, HEADER_TOTAL_SIZE, length as u32);
        count(read_everything(&cut));
    }

    defmt::debug!(
        "mutated device trees: {=u32} read completely, {=u32} rejected",
        accepted,
        rejected
    );
    // Both outcomes must occur, or the mutations did not reach the reader's checks.
    ktest_assert!(accepted > 0, "no mutated blob was read");
    ktest_assert!(rejected > 0, "no mutated blob was rejected");
    Ok(())
}

/// Runs every reader method on `blob`; whether all of them succeeded.
fn read_everything(blob: &[u8]) -> bool {
    let Ok(tree) = DeviceTree::new(blob) else {
        return false;
    };
    let memory = tree.memory();
    let initrd = tree.initrd();
    let placement = BootPlacement {
        kernel: range(0x4020_0000, 0x4060_0000),
        blob_address: 0x4800_0000,
    };
    let reservations = match (&memory, &initrd) {
        (Ok(memory), Ok(initrd)) => tree
            .reservations(&memory.regions, placement, *initrd)
            .is_ok(),
        _ => false,
    };
    let results = [
        memory.is_ok(),
        initrd.is_ok(),
        reservations,
        tree.timebase_frequency(0).is_ok(),
        tree.command_line().is_ok(),
        tree.console_uart().is_ok(),
        tree.exit_device().is_ok(),
    ];
    results.iter().all(|&ok| ok)
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange { start, end }
}

/// Header fields, by index of their 32-bit word.
const HEADER_TOTAL_SIZE: usize = 1;
const HEADER_STRUCTURE_OFFSET: usize = 2;
const HEADER_VERSION: usize = 5;
const HEADER_STRUCTURE_SIZE: usize = 9;

fn header(blob: &[u8], field: usize) -> u32 {
    let at = field * 4;
    u32::from_be_bytes([blob[at], blob[at + 1], blob[at + 2], blob[at + 3]])
}

fn set_header(blob: &mut [u8], field: usize, value: u32) {
    blob[field * 4..field * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

/// The `stdout-path` of [`full_tree`] normally: an alias, with options.
const STDOUT_ALIAS: Option<&str> = Some("console:115200n8");

/// A tree with everything the reader looks at: an alias, `/chosen` with an initrd (32- and
/// 64-bit cells), timebases on the cpu nodes, two memory banks (and a disabled third),
/// `/reserved-memory` (with a dynamic and a disabled child), a `/memreserve/` entry, two
/// UARTs and a test finisher; `stdout_path` is `/chosen/stdout-path`, if any.
fn full_tree(stdout_path: Option<&str>) -> Vec<u8> {
    let mut b = FdtBuilder::default();
    b.reserve(0x8800_0000, 0x1000);
    b.begin("");
    b.u32("#address-cells", 2);
    b.u32("#size-cells", 2);

    b.begin("aliases");
    b.string("console", "/soc/uart@1000");
    b.end();

    b.begin("chosen");
    b.string("bootargs", "test quiet");
    if let Some(stdout_path) = stdout_path {
        b.string("stdout-path", stdout_path);
    }
    b.u32("linux,initrd-start", 0x8400_0000);
    b.u64("linux,initrd-end", 0x8480_0000);
    b.end();

    b.begin("cpus");
    b.u32("#address-cells", 1);
    b.u32("#size-cells", 0);
    for (hart, hz) in [(0, 1_000_000), (1, 2_000_000)] {
        b.begin(if hart == 0 { "cpu@0" } else { "cpu@1" });
        b.u32("reg", hart);
        b.u32("timebase-frequency", hz);
        b.end();
    }
    b.end();

    b.begin("memory@80000000");
    b.string("device_type", "memory");
    b.cells(
        "reg",
        &[
            0,
            0x9000_0000,
            0,
            0x1000_0000,
            0,
            0x8000_0000,
            0,
            0x1000_0000,
        ],
    );
    b.end();
    b.begin("memory@c0000000");
    b.string("device_type", "memory");
    b.string("status", "disabled");
    b.cells("reg", &[0, 0xc000_0000, 0, 0x1000_0000]);
    b.end();

    b.begin("reserved-memory");
    b.u32("#address-cells", 2);
    b.u32("#size-cells", 1);
    b.property("ranges", &[]);
    b.begin("firmware@80000000");
    b.cells("reg", &[0, 0x8000_0000, 0x4_0000]);
    b.end();
    b.begin("dynamic");
    b.u32("size", 0x10_0000);
    b.end();
    b.begin("off@8a000000");
    b.string("status", "disabled");
    b.cells("reg", &[0, 0x8a00_0000, 0x1000]);
    b.end();
    b.end();

    b.begin("soc");
    b.u32("#address-cells", 1);
    b.u32("#size-cells", 1);
    b.property("ranges", &[]);
    b.begin("uart@2000");
    b.string("compatible", "ns16550a");
    b.cells("reg", &[0x2000, 0x100]);
    b.end();
    b.begin("uart@1000");
    b.property("compatible", b"vendor,uart\0ns16550\0");
    b.cells("reg", &[0x1000, 0x100]);
    b.u32("reg-shift", 0);
    b.u32("reg-io-width", 1);
    b.end();
    b.begin("test@100000");
    b.property("compatible", b"sifive,test1\0sifive,test0\0syscon\0");
    b.cells("reg", &[0x10_0000, 0x1000]);
    b.end();
    b.end();

    b.end();
    b.finish()
}

/// Something that adds nodes to a tree being built.
type TreeEdit = dyn Fn(&mut FdtBuilder);

/// A tree with memory, a timebase on `/cpus`, and whatever `extra` adds under the root.
fn minimal_tree(extra: impl FnOnce(&mut FdtBuilder)) -> Vec<u8> {
    let mut b = FdtBuilder::default();
    b.begin("");
    b.u32("#address-cells", 2);
    b.u32("#size-cells", 2);
    b.begin("cpus");
    b.u32("timebase-frequency", 10_000_000);
    b.end();
    b.begin("memory@80000000");
    b.string("device_type", "memory");
    b.cells("reg", &[0, 0x8000_0000, 0, 0x1000_0000]);
    b.end();
    extra(&mut b);
    b.end();
    b.finish()
}

/// A tree whose only memory node has `reg` = `cells`.
fn tree_with_memory(cells: &[u32]) -> Vec<u8> {
    let mut b = FdtBuilder::default();
    b.begin("");
    b.u32("#address-cells", 2);
    b.u32("#size-cells", 2);
    b.begin("memory@80000000");
    b.string("device_type", "memory");
    b.cells("reg", cells);
    b.end();
    b.end();
    b.finish()
}

/// A tree whose `/cpus` has `timebase-frequency` = `hz` (none for `None`) and one cpu without.
fn tree_with_timebase(hz: Option<u32>) -> Vec<u8> {
    let mut b = FdtBuilder::default();
    b.begin("");
    b.begin("cpus");
    b.u32("#address-cells", 1);
    b.u32("#size-cells", 0);
    if let Some(hz) = hz {
        b.u32("timebase-frequency", hz);
    }
    b.begin("cpu@0");
    b.u32("reg", 0);
    b.end();
    b.end();
    b.end();
    b.finish()
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Writes a version-17 device tree blob: the header, the reservation block, the structure
/// block and the strings block, in that order, as `dtc` does.
#[derive(Default)]
struct FdtBuilder {
    structure: Vec<u8>,
    strings: Vec<u8>,
    reservations: Vec<(u64, u64)>,
}

impl FdtBuilder {
    fn reserve(&mut self, address: u64, size: u64) {
        self.reservations.push((address, size));
    }

    fn token(&mut self, token: u32) {
        self.structure.extend_from_slice(&token.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn begin(&mut self, name: &str) {
        self.token(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
    }

    fn end(&mut self) {
        self.token(FDT_END_NODE);
    }

    fn property(&mut self, name: &str, value: &[u8]) {
        let name_offset = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);

        self.token(FDT_PROP);
        self.structure
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.structure.extend_from_slice(&name_offset.to_be_bytes());
        self.structure.extend_from_slice(value);
        self.pad();
    }

    fn u32(&mut self, name: &str, value: u32) {
        self.property(name, &value.to_be_bytes());
    }

    fn u64(&mut self, name: &str, value: u64) {
        self.property(name, &value.to_be_bytes());
    }

    fn cells(&mut self, name: &str, cells: &[u32]) {
        let bytes: Vec<u8> = cells.iter().flat_map(|cell| cell.to_be_bytes()).collect();
        self.property(name, &bytes);
    }

    fn string(&mut self, name: &str, value: &str) {
        let mut bytes = Vec::from(value.as_bytes());
        bytes.push(0);
        self.property(name, &bytes);
    }

    fn finish(mut self) -> Vec<u8> {
        self.token(FDT_END);
        const HEADER_SIZE: usize = 40;
        let reservations_offset = HEADER_SIZE;
        let structure_offset = reservations_offset + (self.reservations.len() + 1) * 16;
        let strings_offset = structure_offset + self.structure.len();
        let total_size = strings_offset + self.strings.len();

        let mut blob = Vec::with_capacity(total_size);
        let fields = [
            0xd00d_feed,
            total_size as u32,
            structure_offset as u32,
            strings_offset as u32,
            reservations_offset as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ];
        for field in fields {
            blob.extend_from_slice(&u32::to_be_bytes(field));
        }
        for (address, size) in self.reservations.iter().chain([&(0, 0)]) {
            blob.extend_from_slice(&address.to_be_bytes());
            blob.extend_from_slice(&size.to_be_bytes());
        }
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }
}
