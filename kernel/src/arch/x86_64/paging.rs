//! The kernel's page tables: the 32-bit entry code builds them, [`finish_boot_mappings`]
//! completes them once the memory map is known.
//!
//! All tables are statics in `.bss` ([`BOOT_PAGE_TABLES`]), so no frame allocator is needed
//! to build them. Every leaf is a 2 MiB page: 1 GiB pages would need fewer tables, but QEMU's
//! default CPU model does not offer them.
//!
//! | PML4 slot | virtual range | maps | built by |
//! | --- | --- | --- | --- |
//! | 0 | `0..4 GiB` | the same 4 GiB (identity), only while the entry code runs | entry code, removed here |
//! | 256 | [`DIRECT_MAP_BASE`] + `0..64 GiB` | physical memory | entry code (4 GiB), extended here |
//! | 511 | [`KERNEL_BASE`] + `0..end of image` | the kernel image (`0..__kernel_phys_end`) | entry code |
//!
//! Slots 0 and 256 share one page-directory-pointer table, so the identity map and the direct
//! map of the first 4 GiB are the same tables until slot 0 is cleared.
//!
//! # Limitations
//!
//! - The direct map covers at most [`DIRECT_MAP_MAX_GIB`] (64) GiB: RAM above it is dropped
//!   from the memory map with a warning. The static page directories for it take 256 KiB of
//!   `.bss`.
//! - The kernel image is mapped read-write-execute with 2 MiB pages; sections do not get their
//!   own permissions (that needs 4 KiB pages for the image).
//! - The direct map maps the first 4 GiB whole, MMIO holes included, with the default
//!   (write-back) page attributes; the firmware's MTRRs make the holes uncached.

use core::cell::UnsafeCell;

use x86_64::PhysAddr;
use x86_64::structures::paging::{PageTable, PageTableFlags};

use crate::boot::PhysRange;

/// Where the kernel is linked: physical address `p` of the image is at `KERNEL_BASE + p`.
/// `linker.ld` has the same value.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

/// Where physical memory is mapped: physical address `p` is at `DIRECT_MAP_BASE + p`.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// Bytes per GiB, the span of one page directory.
pub const GIB: u64 = 1 << 30;

/// Size of the 2 MiB pages every mapping uses.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// How much of physical memory the entry code maps (identity and direct map), in GiB. PVH
/// loaders put `start_info` and everything it points to below 4 GiB.
pub const BOOT_DIRECT_MAP_GIB: usize = 4;

/// How much of physical memory the direct map can cover, in GiB (one static page directory
/// each).
pub const DIRECT_MAP_MAX_GIB: usize = 64;

/// PML4 slots used (see the module table).
pub const IDENTITY_PML4_SLOT: usize = 0;
pub const DIRECT_MAP_PML4_SLOT: usize = pml4_slot(DIRECT_MAP_BASE);
pub const KERNEL_PML4_SLOT: usize = pml4_slot(KERNEL_BASE);
/// The slot of the kernel window in its page-directory-pointer table.
pub const KERNEL_PDPT_SLOT: usize = ((KERNEL_BASE >> 30) & 511) as usize;

const fn pml4_slot(address: u64) -> usize {
    ((address >> 39) & 511) as usize
}

/// Every page table the kernel uses, in one 4 KiB-aligned block so the 32-bit entry code
/// finds each table at a fixed offset (see `entry.rs`).
#[repr(C, align(4096))]
pub struct PageTables {
    /// The top-level table, loaded in CR3.
    pub pml4: PageTable,
    /// Slot `n` maps physical GiB `n` (for the direct map and, at boot, the identity map).
    pub direct_map_pdpt: PageTable,
    /// Maps the top 2 GiB, where the kernel window is.
    pub kernel_pdpt: PageTable,
    /// The kernel window: 2 MiB pages over the image.
    pub kernel_pd: PageTable,
    /// One page directory per GiB of the direct map.
    pub direct_map_pds: [PageTable; DIRECT_MAP_MAX_GIB],
}

/// The page tables, shared with the entry code, which writes them before Rust runs.
pub struct BootPageTables(UnsafeCell<PageTables>);

// SAFETY: the tables are only written by the entry code and by `finish_boot_mappings`, which
// run once, one after the other, on the boot CPU with interrupts off (see `tables`).
unsafe impl Sync for BootPageTables {}

/// The kernel's page tables (in `.bss`: all zero until the entry code fills them).
pub static BOOT_PAGE_TABLES: BootPageTables = BootPageTables(UnsafeCell::new(PageTables {
    pml4: PageTable::new(),
    direct_map_pdpt: PageTable::new(),
    kernel_pdpt: PageTable::new(),
    kernel_pd: PageTable::new(),
    direct_map_pds: [const { PageTable::new() }; DIRECT_MAP_MAX_GIB],
}));

/// The address of physical address `physical` in the direct map.
pub fn phys_to_virt(physical: u64) -> usize {
    (DIRECT_MAP_BASE + physical) as usize
}

/// The physical address of the `len` bytes at `virtual_address`, if they lie in one linear
/// mapping (the direct map or the kernel image) and so are physically contiguous.
pub fn virt_to_phys(virtual_address: usize, len: usize) -> Option<u64> {
    let start = virtual_address as u64;
    let end = start.checked_add(len as u64)?;

    let direct_map_end = DIRECT_MAP_BASE + DIRECT_MAP_MAX_GIB as u64 * GIB;
    if start >= DIRECT_MAP_BASE && end <= direct_map_end {
        return Some(start - DIRECT_MAP_BASE);
    }

    let image = kernel_image();
    if start >= KERNEL_BASE + image.start && end <= KERNEL_BASE + image.end {
        return Some(kernel_virt_to_phys(start));
    }
    None
}

/// The physical address of `virtual_address`, an address inside the kernel image.
pub fn kernel_virt_to_phys(virtual_address: u64) -> u64 {
    virtual_address - KERNEL_BASE
}

/// The physical range the kernel image occupies, `.bss` included.
pub fn kernel_image() -> PhysRange {
    let (start, end) = linker::kernel_image_bounds();
    PhysRange { start, end }
}

/// What [`finish_boot_mappings`] mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct DirectMap {
    /// The direct map covers physical addresses `0..end`.
    pub end: u64,
    /// Whether mappings outside the kernel image forbid instruction fetches (EFER.NXE).
    pub no_execute: bool,
}

/// Extends the direct map to cover physical memory up to `ram_end` (rounded up to a GiB and
/// capped at [`DIRECT_MAP_MAX_GIB`] GiB), removes the identity map and reloads CR3.
///
/// Called once, by the boot code, after it has read everything it needs from the firmware
/// through the direct map and loaded a GDT that is not in the identity map.
pub fn finish_boot_mappings(ram_end: u64) -> DirectMap {
    let gib_count = usize::try_from(ram_end.div_ceil(GIB))
        .unwrap_or(usize::MAX)
        .clamp(BOOT_DIRECT_MAP_GIB, DIRECT_MAP_MAX_GIB);
    let no_execute = cpu_flags::no_execute_enabled();

    tables::with_tables(|tables| {
        for gib in BOOT_DIRECT_MAP_GIB..gib_count {
            map_direct_gib(tables, gib);
        }

        tables.pml4[IDENTITY_PML4_SLOT].set_unused();

        if no_execute {
            let entry = &mut tables.pml4[DIRECT_MAP_PML4_SLOT];
            entry.set_flags(entry.flags() | PageTableFlags::NO_EXECUTE);
        }
    });
    tables::reload_cr3();

    let direct_map = DirectMap {
        end: gib_count as u64 * GIB,
        no_execute,
    };
    defmt::debug!(
        "direct map: physical 0..{=u64:#x} at {=u64:#x} (no-execute: {=bool}); identity map removed",
        direct_map.end,
        DIRECT_MAP_BASE,
        no_execute
    );
    direct_map
}

/// Maps physical GiB `gib` in the direct map with 2 MiB pages.
fn map_direct_gib(tables: &mut PageTables, gib: usize) {
    let leaf_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::HUGE_PAGE;
    let directory = &mut tables.direct_map_pds[gib];
    for (index, entry) in directory.iter_mut().enumerate() {
        let physical = gib as u64 * GIB + index as u64 * LARGE_PAGE_SIZE;
        entry.set_addr(PhysAddr::new(physical), leaf_flags);
    }

    let directory_physical = kernel_virt_to_phys(core::ptr::from_ref(directory) as u64);
    tables.direct_map_pdpt[gib].set_addr(
        PhysAddr::new(directory_physical),
        PageTableFlags::PRESENT | PageTableFlags::WRITABLE,
    );
}

pub mod tests {
    //! In-kernel tests of the address space.

    use super::*;
    use crate::arch::{Access, FaultKind, probe_read};
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq};

    pub fn runs_in_the_higher_half() -> TestResult {
        let code = runs_in_the_higher_half as fn() -> TestResult as usize as u64;
        let data = core::ptr::from_ref(&BOOT_PAGE_TABLES) as u64;
        let stack = core::ptr::from_ref(&code) as u64;
        for address in [code, data, stack] {
            ktest_assert!(address >= KERNEL_BASE, "not in the kernel window", address);
        }

        let image = kernel_image();
        ktest_assert!(
            image.contains_range(&PhysRange {
                start: kernel_virt_to_phys(code),
                end: kernel_virt_to_phys(code) + 1,
            }),
            "code outside the kernel image",
            image
        );
        Ok(())
    }

    pub fn identity_map_is_gone() -> TestResult {
        // The kernel's own first byte, as the entry code reached it before paging.
        let physical = kernel_image().start as usize;
        let result = probe_read(physical);
        ktest_assert!(
            result.is_err(),
            "the identity map still maps the kernel",
            physical
        );
        if let Err(fault) = result {
            ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
            ktest_assert_eq!(fault.address, physical);
        }

        // The same byte is still reachable through the kernel window and the direct map.
        let through_window = probe_read(physical + KERNEL_BASE as usize);
        let through_direct_map = probe_read(phys_to_virt(physical as u64));
        ktest_assert!(through_window.is_ok(), "kernel window unmapped", physical);
        ktest_assert_eq!(through_window, through_direct_map);
        Ok(())
    }

    pub fn direct_map_covers_all_ram() -> TestResult {
        for region in &crate::mem::boot_memory().memory {
            let last_word = region.end.saturating_sub(8).max(region.start);
            for address in [region.start, last_word] {
                let result = probe_read(phys_to_virt(address));
                ktest_assert!(result.is_ok(), "RAM not in the direct map", address);
            }
        }
        Ok(())
    }
}

mod cpu_flags {
    //! Reading the paging-related CPU flags.

    use x86_64::registers::model_specific::{Efer, EferFlags};

    /// Whether the entry code turned on no-execute pages (it does when the CPU has them).
    pub fn no_execute_enabled() -> bool {
        Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
    }
}

mod linker {
    //! The image bounds the linker script defines.

    unsafe extern "C" {
        /// The first byte of the image (the 32-bit entry code), a physical address.
        static __kernel_phys_start: u8;
        /// One past the image's last byte (the end of `.bss`), a physical address.
        static __kernel_phys_end: u8;
    }

    /// `(start, end)` physical addresses of the kernel image.
    pub fn kernel_image_bounds() -> (u64, u64) {
        // Only the symbols' addresses are taken (absolute values the linker script sets);
        // nothing is read through them.
        let start = &raw const __kernel_phys_start;
        let end = &raw const __kernel_phys_end;
        (start as u64, end as u64)
    }
}

mod tables {
    //! Access to the live page tables: the only unsafe code of this module.

    use x86_64::registers::control::Cr3;

    use super::{BOOT_PAGE_TABLES, PageTables};

    /// Runs `f` with the page tables.
    ///
    /// Only `finish_boot_mappings` calls this, once, on the boot CPU with interrupts off.
    pub(super) fn with_tables<R>(f: impl FnOnce(&mut PageTables) -> R) -> R {
        // SAFETY: the entry code wrote the tables before Rust ran and no longer runs; the
        // only other reader is the MMU, which Rust's aliasing rules do not cover; no other
        // Rust code holds a reference to the tables (tests only take their address).
        f(unsafe { &mut *BOOT_PAGE_TABLES.0.get() })
    }

    /// Reloads CR3 with the same PML4, flushing every (non-global) TLB entry.
    pub(super) fn reload_cr3() {
        let (frame, flags) = Cr3::read();
        // SAFETY: CR3 keeps pointing at the kernel's PML4; the tables still map the kernel
        // window (code, stack, data) and the direct map, which is all the kernel uses.
        unsafe { Cr3::write(frame, flags) };
    }
}
