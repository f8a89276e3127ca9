//! 4 KiB pages in the file-mapping window: the 4-level-paging side of [`crate::vm`].
//!
//! The window is the first 64 GiB of PML4 slot 320 (`0xffff_a000_0000_0000`), between the
//! direct map (slot 256) and the kernel window (slot 511), so no boot mapping shares a table
//! with it. [`map_page`] walks the four levels from the PML4 in CR3, takes a zeroed frame
//! from the frame allocator for each missing table, and writes one leaf: present, writable
//! only for [`Protection::ReadWrite`] (CR0.WP makes the kernel's own writes obey it), not
//! user, and no-execute when the CPU has it enabled (EFER.NXE; the bit is
//! reserved otherwise). [`unmap_page`] clears the leaf and runs `invlpg` for that address.
//! A not-present entry is never cached, so mapping needs no flush.
//!
//! | path | lock taken |
//! | --- | --- |
//! | [`map_page`] | the window's table lock; inside it, the frame allocator's to add a table |
//! | [`unmap_page`], [`translate_page`] | the window's table lock, for the call |
//!
//! # Limitations
//!
//! - Intermediate tables are never freed: an empty one stays for the next mapping of its
//!   range.
//! - One CPU: the TLB flush is local (`invlpg`), with no shootdown of other CPUs.

use spin::Mutex;
use x86_64::structures::paging::PageTableFlags;

use crate::arch::page_table::{ENTRIES_PER_TABLE, PageTable};
use crate::arch::{MapError, Protection};

/// First address of the file-mapping window: PML4 slot 320.
pub const FILE_MAP_WINDOW_START: usize = 0xffff_a000_0000_0000;

/// Size of the file-mapping window.
pub const FILE_MAP_WINDOW_SIZE: usize = 64 << 30;

/// Size of a page.
const PAGE_SIZE: usize = 4096;

/// The physical-address bits of an entry (bits 12..52).
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

const _: () = assert!((FILE_MAP_WINDOW_START >> 39) % ENTRIES_PER_TABLE == 320);
const _: () = assert!(FILE_MAP_WINDOW_SIZE <= 1 << 39);

/// Serializes every change to the window's tables.
static WINDOW_TABLES: Mutex<()> = Mutex::new(());

/// The flags of a leaf of the window: present, writable for [`Protection::ReadWrite`] only,
/// kernel only, no-execute when EFER.NXE allows the bit.
pub fn leaf_flags(protection: Protection) -> PageTableFlags {
    let mut flags = PageTableFlags::PRESENT;
    if protection == Protection::ReadWrite {
        flags |= PageTableFlags::WRITABLE;
    }
    if table::no_execute_enabled() {
        flags |= PageTableFlags::NO_EXECUTE;
    }
    flags
}

/// Maps the page at `virtual_address` (in the window) to the frame at `physical`.
pub fn map_page(
    virtual_address: usize,
    physical: u64,
    protection: Protection,
) -> Result<(), MapError> {
    check_window_page(virtual_address)?;
    if physical & !ADDRESS_MASK != 0 {
        return Err(MapError::Misaligned(physical));
    }
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, true)?.ok_or(MapError::OutOfFrames)?;
    let index = table_index(virtual_address, 1);
    if leaf_table.entry(index) & PageTableFlags::PRESENT.bits() != 0 {
        return Err(MapError::AlreadyMapped(virtual_address));
    }

    leaf_table.set_entry(index, physical | leaf_flags(protection).bits());
    Ok(())
}

/// Unmaps the page at `virtual_address` and flushes its TLB entry; returns the frame it
/// mapped, or `None` if it mapped none (or lies outside the window).
pub fn unmap_page(virtual_address: usize) -> Option<u64> {
    check_window_page(virtual_address).ok()?;
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, false).ok()??;
    let index = table_index(virtual_address, 1);
    let entry = leaf_table.entry(index);
    if entry & PageTableFlags::PRESENT.bits() == 0 {
        return None;
    }

    leaf_table.set_entry(index, 0);
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(virtual_address as u64));
    Some(entry & ADDRESS_MASK)
}

/// The frame the page at `virtual_address` maps, if it lies in the window and is mapped.
pub fn translate_page(virtual_address: usize) -> Option<u64> {
    leaf_entry(virtual_address).map(|entry| entry & ADDRESS_MASK)
}

/// The whole leaf entry of the page at `virtual_address`, if it lies in the window and is
/// mapped (for tests: the permission bits).
pub fn leaf_entry(virtual_address: usize) -> Option<u64> {
    check_window_page(virtual_address).ok()?;
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, false).ok()??;
    let entry = leaf_table.entry(table_index(virtual_address, 1));
    (entry & PageTableFlags::PRESENT.bits() != 0).then_some(entry)
}

/// Refuses addresses outside the window or not page aligned.
fn check_window_page(virtual_address: usize) -> Result<(), MapError> {
    let offset = virtual_address.wrapping_sub(FILE_MAP_WINDOW_START);
    if virtual_address < FILE_MAP_WINDOW_START || offset >= FILE_MAP_WINDOW_SIZE {
        return Err(MapError::NotInWindow(virtual_address));
    }
    if !virtual_address.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Misaligned(virtual_address as u64));
    }
    Ok(())
}

/// The page table (level 1) that holds the leaf of `virtual_address`, adding the missing
/// tables on the way when `create` is set (`Ok(None)`: a table is missing and `create` is not
/// set).
fn leaf_table(virtual_address: usize, create: bool) -> Result<Option<PageTable>, MapError> {
    let present = PageTableFlags::PRESENT.bits();
    let mut current = table::root();
    for level in [4, 3, 2] {
        let index = table_index(virtual_address, level);
        let entry = current.entry(index);
        current = if entry & present == 0 {
            if !create {
                return Ok(None);
            }
            let next = PageTable::allocate().ok_or(MapError::OutOfFrames)?;
            let table_flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
            current.set_entry(index, next.physical() | table_flags.bits());
            next
        } else if entry & PageTableFlags::HUGE_PAGE.bits() != 0 {
            // Only the boot mappings have large pages, and none lies in the window.
            return Err(MapError::NotInWindow(virtual_address));
        } else {
            table::next_table(entry & ADDRESS_MASK)
        };
    }
    Ok(Some(current))
}

/// The index of `virtual_address` in its table at `level` (4: PML4, 1: page table).
fn table_index(virtual_address: usize, level: u32) -> usize {
    (virtual_address >> (12 + 9 * (level - 1))) % ENTRIES_PER_TABLE
}

mod table {
    //! Page tables of the window, read and written through the direct map: the unsafe code
    //! of this module.
    //!
    //! A [`Table`] is only made from the PML4 in CR3, from a frame just taken from the frame
    //! allocator, or from a table entry of the window, which only this module writes; so its
    //! address always names a live 4 KiB page table.

    use x86_64::registers::control::Cr3;
    use x86_64::registers::model_specific::{Efer, EferFlags};

    use crate::arch::page_table::PageTable;

    /// The PML4 the CPU translates with.
    pub(super) fn root() -> PageTable {
        // SAFETY: CR3 holds the PML4 the CPU translates with, in RAM the direct map
        // covers; this module writes only the window's slot of it (320), which no boot mapping
        // uses, and `paging::tables` lends the PML4 only while booting.
        unsafe { PageTable::at(Cr3::read().0.start_address().as_u64()) }
    }

    /// The next-level table at `physical`, read from a (present, non-huge) entry.
    pub(super) fn next_table(physical: u64) -> PageTable {
        // SAFETY: the entry is a valid non-leaf entry of a window table (the caller checked
        // it), and only this module writes the window's entries, so it points at a live
        // table that this module owns.
        unsafe { PageTable::at(physical) }
    }

    /// Whether the entry code turned on no-execute pages.
    pub(super) fn no_execute_enabled() -> bool {
        Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
    }
}

pub mod tests {
    //! In-kernel tests of the window's page tables.

    use super::*;
    use crate::ktest::TestResult;
    use crate::mem::frame;
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    /// A page near the end of the window, far from where [`crate::vm`] places mappings.
    const TEST_PAGE: usize = FILE_MAP_WINDOW_START + FILE_MAP_WINDOW_SIZE - 16 * PAGE_SIZE;

    pub fn leaf_is_read_only_kernel_no_execute() -> TestResult {
        let Some(range) = frame::allocate(1, 1) else {
            ktest_fail!("no free frame")
        };
        let mapped = map_page(TEST_PAGE, range.start, Protection::ReadOnly);
        ktest_assert_eq!(mapped, Ok(()));
        let entry = PageTableFlags::from_bits_truncate(leaf_entry(TEST_PAGE).unwrap_or(0));
        let unmapped = unmap_page(TEST_PAGE);

        let mapped_writable = map_page(TEST_PAGE, range.start, Protection::ReadWrite);
        let writable_entry = PageTableFlags::from_bits_truncate(leaf_entry(TEST_PAGE).unwrap_or(0));
        let _ = unmap_page(TEST_PAGE);
        let _ = frame::free(range);

        ktest_assert!(entry.contains(PageTableFlags::PRESENT), "leaf not present");
        ktest_assert!(
            !entry.intersects(PageTableFlags::WRITABLE | PageTableFlags::USER_ACCESSIBLE),
            "leaf writable or user accessible"
        );
        ktest_assert_eq!(
            entry.contains(PageTableFlags::NO_EXECUTE),
            table::no_execute_enabled()
        );
        ktest_assert_eq!(unmapped, Some(range.start));

        ktest_assert_eq!(mapped_writable, Ok(()));
        ktest_assert_eq!(
            writable_entry.bits(),
            (entry | PageTableFlags::WRITABLE).bits()
        );
        Ok(())
    }
}
