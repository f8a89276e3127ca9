//! Architecture support: everything that differs between riscv64 and x86_64 lives below this
//! module, and nothing outside it names an architecture.
//!
//! Each architecture module boots the machine and then calls [`crate::kernel_main`] with a
//! [`BootInfo`](crate::boot::BootInfo) it filled from the firmware's data (the device tree on
//! riscv64, PVH `start_info` on x86_64). By then:
//!
//! - the kernel runs at its linked (higher-half) address on page tables of its own, with all
//!   of physical memory reachable through [`phys_to_virt`];
//! - `.bss` is zeroed and the boot stack is set;
//! - trap/exception vectors are installed, so a fault is logged and ends the run, except a
//!   page fault in the file-mapping window, which goes to [`crate::vm::handle_page_fault`]
//!   first;
//! - the console is up (the defmt logger writes through [`console_write`]) and the clock
//!   frequency is known ([`crate::time::set_counter_frequency`] has been called).
//!
//! # What each architecture module provides
//!
//! | item | what it does |
//! | --- | --- |
//! | `NAME: &str` | the architecture's name in logs |
//! | `read_counter() -> u64` | a free-running, monotonic counter (`rdtime`, TSC) |
//! | `console_write(&[u8])` | polled write to the boot console; callable in any context |
//! | `phys_to_virt(u64) -> usize` | address of physical memory in the kernel's direct map |
//! | `legacy_pci_config() -> Option<LegacyPciConfig>` | PCI configuration ports, where the architecture has them (x86_64) |
//! | `virt_to_phys(usize, usize) -> Option<u64>` | physical address of a buffer in the direct map or the kernel image (for DMA) |
//! | `exit(ExitCode) -> !` | stops the machine, telling QEMU the code |
//! | `probe_read(usize) -> Result<u64, Fault>` | a read that reports a fault instead of dying |
//! | `probe_write(usize) -> Result<(), Fault>` | a write access that changes no byte (an atomic OR of zero) and reports a fault instead of dying |
//! | `unsafe copy_to_window(usize, &[u8]) -> Result<(), ShortCopy>` | a copy into the file-mapping window that stops at a fault the window cannot serve and says how far it got |
//! | `FILE_MAP_WINDOW_START`, `FILE_MAP_WINDOW_SIZE` | the virtual range reserved for file mappings ([`crate::vm`]) |
//! | `map_page(usize, u64, Protection) -> Result<(), MapError>` | maps one 4 KiB page of the window, no-execute, kernel-only |
//! | `unmap_page(usize) -> Option<u64>` | unmaps one page of the window and flushes its TLB entry |
//! | `translate_page(usize) -> Option<u64>` | the frame a page of the window maps, if any |
//! | `TESTS: &[KernelTest]` | the architecture's own in-kernel tests |
//! | a `critical_section::Impl` | interrupts off on this (single) CPU |

mod page_table;

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
pub use riscv64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// A synchronous exception, decoded from the architecture's trap state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum FaultKind {
    /// No valid mapping, or one that forbids the access (riscv: scause 12/13/15; x86: #PF).
    PageFault(Access),
    /// The access hit a physical address nothing answers at (riscv: scause 1/5/7; x86 has no
    /// such exception).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    AccessFault(Access),
    /// An instruction the CPU does not accept (riscv: scause 2; x86: #UD).
    IllegalInstruction,
    /// A breakpoint instruction (riscv: `ebreak`; x86: `int3`).
    Breakpoint,
    /// Anything else, with the architecture's raw cause (scause, or the vector number).
    Other(u64),
}

/// What a fault was, where it happened and on which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The decoded cause.
    pub kind: FaultKind,
    /// The faulting address (riscv: stval; x86: CR2 for a page fault, else 0).
    pub address: usize,
    /// The instruction that faulted (riscv: sepc; x86: RIP).
    pub pc: usize,
    /// The raw cause: scause on riscv64, the vector number on x86_64.
    pub raw_cause: u64,
    /// The error code x86 pushes for some vectors (0 on riscv64).
    pub error_code: u64,
}

impl defmt::Format for Fault {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "{} at address {=u64:#x}, pc {=u64:#x} (cause {=u64}, error code {=u64:#x})",
            self.kind,
            self.address as u64,
            self.pc as u64,
            self.raw_cause,
            self.error_code
        )
    }
}

/// What a page of the file-mapping window allows besides reading (it is never executable
/// nor reachable from user mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Protection {
    /// Reads only: a write faults.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// A copy into the file-mapping window that a fault stopped ([`copy_to_window`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortCopy {
    /// Bytes copied, from the start; the next one was not.
    pub copied: usize,
    /// The fault at the first byte not copied.
    pub fault: Fault,
}

/// Why a page of the file-mapping window could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum MapError {
    /// The virtual address lies outside the file-mapping window.
    #[error("virtual address {0:#x} is outside the file-mapping window")]
    NotInWindow(usize),
    /// The virtual or physical address is not 4 KiB aligned, or the physical one is beyond
    /// what a page-table entry holds.
    #[error("address {0:#x} is not a 4 KiB-aligned page address")]
    Misaligned(u64),
    /// The page is mapped already.
    #[error("virtual address {0:#x} is mapped already")]
    AlreadyMapped(usize),
    /// No free frame for an intermediate page table.
    #[error("no free frame for a page table")]
    OutOfFrames,
}
