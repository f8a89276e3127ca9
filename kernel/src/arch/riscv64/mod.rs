//! The riscv64 port: boots in S-mode under SBI firmware (OpenSBI on QEMU `virt`, OpenSBI and
//! U-Boot on the StarFive VisionFive 2) and learns everything about the machine from the
//! flattened device tree the firmware passes.
//!
//! # Boot flow
//!
//! 1. The firmware jumps to the first byte of the image with the MMU off, `a0` = boot hart id
//!    and `a1` = physical address of the device tree. Which hart boots is the firmware's choice
//!    (often not hart 0); the others stay stopped in the firmware.
//! 2. [`entry`] (assembly, position independent): the image starts with a Linux RISC-V `Image`
//!    header, so the same bytes boot as an ELF from QEMU `-kernel`, as a flat image from QEMU
//!    and through U-Boot `booti`. The code zeroes `.bss`, builds Sv39 page tables (direct
//!    map, kernel window, a temporary identity gigapage), turns on the MMU, jumps to the
//!    kernel's linked address, sets the boot stack and calls [`startup`].
//! 3. [`startup`] (Rust): installs the trap vector, drops the identity gigapage, reads the
//!    device tree ([`devicetree`]), starts the console and the exit device, fills a
//!    [`BootInfo`](crate::boot::BootInfo) and calls [`crate::kernel_main`].
//!
//! # Memory layout
//!
//! Sv39: 39-bit virtual addresses, the upper half starts at `0xffff_ffc0_0000_0000`.
//!
//! | virtual addresses | maps | pages |
//! | --- | --- | --- |
//! | `0` .. `0x40_0000_0000` | nothing (the boot identity gigapage is gone) | |
//! | `0xffff_ffc0_0000_0000` .. `+64 GiB` | physical `0` .. `64 GiB` (direct map) | 1 GiB, RW |
//! | `0xffff_ffd0_0000_0000` .. `0xffff_ffe0_0000_0000` | nothing | |
//! | `0xffff_ffe0_0000_0000` .. `+64 GiB` | the file-mapping window: pages mapped on demand by [`crate::vm`] ([`pages`]) | 4 KiB, R, A and D preset |
//! | `0xffff_fff0_0000_0000` .. `0xffff_ffff_8020_0000` | nothing | |
//! | `0xffff_ffff_8020_0000` .. kernel end | the kernel image at its load address | 2 MiB, RWX |
//!
//! [`entry`] builds all of them but the file-mapping window; [`startup`] only removes the
//! identity gigapage.
//!
//! The kernel is linked at `0xffff_ffff_8020_0000` (see `linker.ld`) and may be loaded at any
//! 2 MiB-aligned physical address: 0x8020_0000 by QEMU, 0x4020_0000 by U-Boot on the
//! VisionFive 2. Nothing here is a constant about a board.
//!
//! # Limitations
//!
//! - Physical memory above 64 GiB is not mapped, and RAM there is left out of the memory map
//!   (with a warning).
//! - The kernel window is one RWX mapping in 2 MiB pages: code is writable and data
//!   executable. Splitting it by section needs 4 KiB pages, which nothing needs yet.
//! - The direct map also covers device memory and holes with normal RW mappings; on RISC-V the
//!   platform's physical memory attributes, not the page tables, keep device accesses
//!   uncached and in order, so this is correct, only not tight.
//! - One hart: the other harts are never started.

mod console;
mod cpu;
mod devicetree;
mod entry;
mod pages;
mod paging;
mod pci;
mod power;
mod startup;
mod tests;
mod trap;

pub use console::console_write;
pub use cpu::read_counter;
pub use pages::{
    FILE_MAP_WINDOW_SIZE, FILE_MAP_WINDOW_START, map_page, translate_page, unmap_page,
};
pub use paging::{phys_to_virt, virt_to_phys};
pub use pci::legacy_pci_config;
pub use power::exit;
pub use tests::TESTS;
pub use trap::{copy_to_window, probe_read, probe_write};

/// The architecture's name in logs.
pub const NAME: &str = "riscv64";
