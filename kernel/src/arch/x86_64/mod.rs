//! The x86_64 port: boots through PVH on QEMU `-kernel`, runs in the higher half.
//!
//! # Boot flow
//!
//! 1. QEMU loads the ELF's segments at their physical addresses (the image starts at 1 MiB)
//!    and, through its `pvh.bin` option ROM, starts the 32-bit entry point named by the PVH
//!    ELF note, with `ebx` = physical address of `hvm_start_info`.
//! 2. `entry.rs` (assembly): checks for long mode, zeroes `.bss`, builds the boot page
//!    tables, enables PAE, long mode, NX and paging, far-jumps to 64-bit code, jumps to the
//!    higher half, switches to the boot stack and calls [`start`].
//! 3. [`start`]: brings up COM1 (`console.rs`), loads the kernel's GDT and TSS
//!    (`segments.rs`) and IDT (`trap.rs`), calibrates the TSC (`tsc.rs`), parses
//!    `start_info` (`pvh.rs`), extends the direct map over all RAM and removes the identity
//!    map (`paging.rs`), builds the [`BootInfo`](crate::boot::BootInfo) (`boot_info.rs`) and calls
//!    [`crate::kernel_main`].
//!
//! # Memory layout
//!
//! | virtual | physical | what |
//! | --- | --- | --- |
//! | `0..4 GiB` | `0..4 GiB` | identity map, only until [`start`] removes it |
//! | `0xffff_8000_0000_0000 + p` | `p`, up to 64 GiB | direct map of physical memory ([`phys_to_virt`]), no-execute |
//! | `0xffff_a000_0000_0000` .. `+64 GiB` | frames of files | the file-mapping window: 4 KiB pages mapped on demand by [`crate::vm`] (`pages.rs`), read-only, no-execute |
//! | `0xffff_ffff_8000_0000 + p` | `p` in `0..end of image` | the kernel window: the image, loaded at 1 MiB (its higher-half part from `0xffff_ffff_8010_1000`) |
//!
//! The boot mappings use 2 MiB pages (see `paging.rs`). The entry code in `.boot32` is linked at
//! its physical address and is only reachable through the identity map, which is gone
//! once Rust runs.
//!
//! # Limitations
//!
//! - One CPU: the application processors are not started.
//! - The console is COM1 at its conventional port: PVH has no way to describe a console.
//! - The boot stack has no guard page (the image is mapped with 2 MiB pages): an overflow
//!   runs into other `.bss` data instead of faulting.
//! - A `start_info` the kernel cannot use stops the machine with [`ExitCode::BootFailed`], after
//!   an error line that says why; there is no exit code of its own for a refused boot.
//! - See also `paging.rs` (the direct map's 64 GiB limit, no per-section permissions) and
//!   `tsc.rs` (the TSC is assumed invariant).

mod acpi;
mod boot_info;
mod console;
mod cpu;
mod entry;
mod pages;
mod paging;
mod pci;
mod pvh;
mod segments;
mod trap;
mod tsc;

use crate::ExitCode;
use crate::ktest::KernelTest;
use boot_info::MachineFacts;

pub use console::console_write;
pub use cpu::exit;
pub use pages::{
    FILE_MAP_WINDOW_SIZE, FILE_MAP_WINDOW_START, map_page, translate_page, unmap_page,
};
pub use paging::{phys_to_virt, virt_to_phys};
pub use pci::legacy_pci_config;
use stack::Stack;
pub use trap::{copy_to_window, probe_read, probe_write};
pub use tsc::read_counter;

/// The architecture's name in logs.
pub const NAME: &str = "x86_64";

/// The Rust entry point, called once by `entry.rs` on the boot stack with the physical
/// address of PVH `hvm_start_info`.
extern "C" fn start(start_info_address: u32) -> ! {
    let entry_tsc = tsc::read_counter();

    console::init();
    segments::init();
    trap::init();

    let timer_frequency_hz = match tsc::calibrate() {
        Ok(calibration) => {
            crate::time::set_counter_frequency(calibration.hz);
            defmt::debug!(
                "TSC frequency: {=u64} Hz, from {}; the kernel was entered {=u64} us after reset",
                calibration.hz,
                calibration.method,
                tsc::ticks_to_micros(entry_tsc, calibration.hz)
            );
            calibration.hz
        }
        Err(error) => {
            defmt::error!(
                "TSC calibration failed: {}; time will read 0",
                defmt::Display2Format(&error)
            );
            0
        }
    };

    let start_info = match pvh::parse(&memory::BootDirectMap, u64::from(start_info_address)) {
        Ok(start_info) => start_info,
        Err(error) => {
            defmt::error!(
                "cannot boot: PVH start_info at {=u32:#x} is unusable: {}",
                start_info_address,
                defmt::Display2Format(&error)
            );
            exit(ExitCode::BootFailed)
        }
    };
    boot_info::log_start_info(&start_info);

    let direct_map = paging::finish_boot_mappings(boot_info::ram_end(&start_info));

    let facts = MachineFacts {
        kernel_image: paging::kernel_image(),
        direct_map_end: direct_map.end,
        timer_frequency_hz,
        boot_cpu_id: cpu::initial_apic_id(),
        console_port: console::COM1_PORT,
    };
    match boot_info::build(&start_info, &facts) {
        Ok(mut boot_info) => {
            // ACPI tables sit outside the RAM entries of the memory map (e820 types 3 and 4),
            // so the frame allocator never hands them out: they stay as the firmware wrote
            // them, which is what `BootDirectMap` needs.
            match acpi::pci_hosts(&memory::BootDirectMap, start_info.rsdp) {
                Ok(hosts) => {
                    for host in &hosts {
                        defmt::debug!("ACPI: PCI host bridge, {}", host);
                    }
                    boot_info.devices.pci_hosts = hosts;
                }
                Err(error) => defmt::debug!(
                    "ACPI: no PCI ECAM window ({}); PCI through the configuration ports",
                    error
                ),
            }
            crate::kernel_main(&boot_info)
        }
        Err(error) => {
            defmt::error!("cannot boot: {}", defmt::Display2Format(&error));
            exit(ExitCode::Fault)
        }
    }
}

/// The architecture's in-kernel tests.
pub const TESTS: &[KernelTest] = &[
    KernelTest::new(
        "x86_64::paging::runs_in_the_higher_half",
        paging::tests::runs_in_the_higher_half,
    ),
    KernelTest::new(
        "x86_64::paging::identity_map_is_gone",
        paging::tests::identity_map_is_gone,
    ),
    KernelTest::new(
        "x86_64::paging::direct_map_covers_all_ram",
        paging::tests::direct_map_covers_all_ram,
    ),
    KernelTest::new(
        "x86_64::pages::leaf_is_read_only_kernel_no_execute",
        pages::tests::leaf_is_read_only_kernel_no_execute,
    ),
    KernelTest::new(
        "x86_64::trap::probe_reports_page_fault",
        trap::tests::probe_reports_page_fault,
    ),
    KernelTest::new(
        "x86_64::trap::probe_reads_mapped_memory",
        trap::tests::probe_reads_mapped_memory,
    ),
    KernelTest::new(
        "x86_64::trap::probe_reports_general_protection",
        trap::tests::probe_reports_general_protection,
    ),
    KernelTest::new(
        "x86_64::trap::decodes_page_fault_error_codes",
        trap::tests::decodes_page_fault_error_codes,
    ),
    KernelTest::new(
        "x86_64::segments::kernel_gdt_is_loaded",
        segments::tests::kernel_gdt_is_loaded,
    ),
    KernelTest::new(
        "x86_64::pvh::parses_a_valid_start_info",
        pvh::tests::parses_a_valid_start_info,
    ),
    KernelTest::new(
        "x86_64::pvh::rejects_bad_magic",
        pvh::tests::rejects_bad_magic,
    ),
    KernelTest::new(
        "x86_64::pvh::rejects_version_0",
        pvh::tests::rejects_version_0,
    ),
    KernelTest::new(
        "x86_64::pvh::rejects_absurd_counts",
        pvh::tests::rejects_absurd_counts,
    ),
    KernelTest::new(
        "x86_64::pvh::rejects_unreadable_and_wrapping_ranges",
        pvh::tests::rejects_unreadable_and_wrapping_ranges,
    ),
    KernelTest::new(
        "x86_64::pvh::rejects_bad_command_lines",
        pvh::tests::rejects_bad_command_lines,
    ),
    KernelTest::new(
        "x86_64::boot_info::sorts_merges_and_clips_ram",
        boot_info::tests::sorts_merges_and_clips_ram,
    ),
    KernelTest::new(
        "x86_64::boot_info::reserves_firmware_kernel_and_boot_data",
        boot_info::tests::reserves_firmware_kernel_and_boot_data,
    ),
    KernelTest::new(
        "x86_64::boot_info::refuses_a_map_without_ram",
        boot_info::tests::refuses_a_map_without_ram,
    ),
    KernelTest::new(
        "x86_64::tsc::frequency_is_plausible",
        tsc::tests::frequency_is_plausible,
    ),
    KernelTest::new(
        "x86_64::tsc::frequency_agrees_with_the_pit",
        tsc::tests::frequency_agrees_with_the_pit,
    ),
    KernelTest::new(
        "x86_64::tsc::counter_advances",
        tsc::tests::counter_advances,
    ),
    KernelTest::new(
        "x86_64::acpi::finds_the_ecam_window_of_segment_0",
        acpi::tests::finds_the_ecam_window_of_segment_0,
    ),
    KernelTest::new(
        "x86_64::acpi::refuses_corrupt_tables",
        acpi::tests::refuses_corrupt_tables,
    ),
];

mod memory {
    //! Physical memory as the PVH parser reads it, through the boot direct map.

    use super::paging::{BOOT_DIRECT_MAP_GIB, GIB, phys_to_virt};
    use super::pvh::PhysicalMemory;

    /// The first [`BOOT_DIRECT_MAP_GIB`] GiB of physical memory, which the entry code maps.
    pub struct BootDirectMap;

    impl PhysicalMemory<'static> for BootDirectMap {
        fn read(&self, start: u64, len: usize) -> Option<&'static [u8]> {
            let end = start.checked_add(u64::try_from(len).ok()?)?;
            if end > BOOT_DIRECT_MAP_GIB as u64 * GIB {
                return None;
            }
            // SAFETY: `start..end` lies in the part of the direct map the entry code built,
            // which is never unmapped. The PVH loader put `start_info` and what it points to
            // in RAM, which nothing writes while the kernel boots, and `boot_info` reserves
            // every range read here, so the frame allocator never hands it out: the bytes
            // stay as they are for as long as the kernel runs.
            Some(unsafe { core::slice::from_raw_parts(phys_to_virt(start) as *const u8, len) })
        }
    }
}

mod stack {
    //! Stacks for the CPU, as statics.

    use core::cell::UnsafeCell;

    /// A stack: memory Rust code never touches, only `rsp` points into.
    #[repr(C, align(16))]
    pub struct Stack<const SIZE: usize>(UnsafeCell<[u8; SIZE]>);

    // SAFETY: no Rust code reads or writes a `Stack` through the type: only its address is
    // taken, for the CPU to use as one context's stack (the boot code, or the double-fault
    // IST).
    unsafe impl<const SIZE: usize> Sync for Stack<SIZE> {}

    impl<const SIZE: usize> Stack<SIZE> {
        /// A zeroed stack (placed in `.bss`).
        pub const fn new() -> Self {
            Self(UnsafeCell::new([0; SIZE]))
        }

        /// One past the highest byte, where a push starts.
        pub fn top(&self) -> *const u8 {
            self.0.get().cast::<u8>().wrapping_add(SIZE).cast_const()
        }
    }
}
