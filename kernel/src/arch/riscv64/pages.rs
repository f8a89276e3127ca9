//! 4 KiB pages in the file-mapping window: the Sv39 side of [`crate::vm`].
//!
//! The window is 64 GiB at root-table entries 384..448 (`0xffff_ffe0_0000_0000`), between the
//! direct map (entries 256..320) and the kernel window (entry 510), so no boot mapping shares
//! a table with it. [`map_page`] walks the three levels from the root table in `satp`, takes a
//! zeroed frame from the frame allocator for each missing table, and writes one leaf:
//! readable, writable only for [`Protection::ReadWrite`], not executable, not user, global,
//! with **A and D set**. The
//! privileged spec lets a hart either set A/D itself or raise a page fault when they are
//! clear; the VisionFive 2's U74 cores do the latter, so the kernel sets them up front and an
//! access never faults for them. [`unmap_page`] clears the leaf and runs `sfence.vma` for
//! that address.
//!
//! | path | lock taken |
//! | --- | --- |
//! | [`map_page`] | the window's table lock; inside it, the frame allocator's to add a table |
//! | [`unmap_page`], [`translate_page`] | the window's table lock, for the call |
//!
//! # Limitations
//!
//! - Intermediate tables are never freed: an empty one stays for the next mapping of its
//!   range. At most one level-1 table per GiB and one level-0 table per 2 MiB of the window
//!   that was ever used.
//! - One hart: the TLB flush is local (`sfence.vma`), with no shootdown of other harts.

use spin::Mutex;

use super::paging::{ENTRIES_PER_TABLE, pte};
use crate::arch::page_table::PageTable;
use crate::arch::{MapError, Protection};

/// First address of the file-mapping window: root-table entry 384.
pub const FILE_MAP_WINDOW_START: usize = 0xffff_ffe0_0000_0000;

/// Size of the file-mapping window: 64 root-table entries of 1 GiB.
pub const FILE_MAP_WINDOW_SIZE: usize = 64 << 30;

/// A read-only leaf of the file-mapping window: data, kernel only, A and D preset.
pub const READ_ONLY_LEAF: u64 = pte::V | pte::R | pte::G | pte::A | pte::D;

/// A writable leaf of the window (a private page): [`READ_ONLY_LEAF`] and W.
pub const READ_WRITE_LEAF: u64 = READ_ONLY_LEAF | pte::W;

/// Size of a page.
const PAGE_SIZE: usize = 4096;

/// Bits of a physical page number in an Sv39 entry (44).
const PPN_BITS: u32 = 44;

/// The permission bits: an entry with any of them set is a leaf.
const LEAF_PERMISSIONS: u64 = pte::R | pte::W | pte::X;

const _: () = assert!((FILE_MAP_WINDOW_START >> 30) % ENTRIES_PER_TABLE == 384);
const _: () = assert!(384 + (FILE_MAP_WINDOW_SIZE >> 30) <= 510);

/// Serializes every change to the window's tables.
static WINDOW_TABLES: Mutex<()> = Mutex::new(());

/// Maps the page at `virtual_address` (in the window) to the frame at `physical`.
pub fn map_page(
    virtual_address: usize,
    physical: u64,
    protection: Protection,
) -> Result<(), MapError> {
    check_window_page(virtual_address)?;
    if !physical.is_multiple_of(PAGE_SIZE as u64) || physical >> (12 + PPN_BITS) != 0 {
        return Err(MapError::Misaligned(physical));
    }
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, true)?.ok_or(MapError::OutOfFrames)?;
    let index = table_index(virtual_address, 0);
    if leaf_table.entry(index) & pte::V != 0 {
        return Err(MapError::AlreadyMapped(virtual_address));
    }

    let leaf = match protection {
        Protection::ReadOnly => READ_ONLY_LEAF,
        Protection::ReadWrite => READ_WRITE_LEAF,
    };
    leaf_table.set_entry(index, ((physical >> 12) << pte::PPN_SHIFT) | leaf);
    // A hart may have cached the invalid entry: drop it, so the access after the fault sees
    // the new one.
    table::flush_page(virtual_address);
    Ok(())
}

/// Unmaps the page at `virtual_address` and flushes its TLB entry; returns the frame it
/// mapped, or `None` if it mapped none (or lies outside the window).
pub fn unmap_page(virtual_address: usize) -> Option<u64> {
    check_window_page(virtual_address).ok()?;
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, false).ok()??;
    let index = table_index(virtual_address, 0);
    let entry = leaf_table.entry(index);
    if entry & pte::V == 0 {
        return None;
    }

    leaf_table.set_entry(index, 0);
    table::flush_page(virtual_address);
    Some(entry_address(entry))
}

/// The frame the page at `virtual_address` maps, if it lies in the window and is mapped.
pub fn translate_page(virtual_address: usize) -> Option<u64> {
    leaf_entry(virtual_address).map(entry_address)
}

/// The whole leaf entry of the page at `virtual_address`, if it lies in the window and is
/// mapped (for tests: the permission and A/D bits).
pub fn leaf_entry(virtual_address: usize) -> Option<u64> {
    check_window_page(virtual_address).ok()?;
    let _tables = WINDOW_TABLES.lock();

    let leaf_table = leaf_table(virtual_address, false).ok()??;
    let entry = leaf_table.entry(table_index(virtual_address, 0));
    (entry & pte::V != 0).then_some(entry)
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

/// The level-0 table that holds the leaf of `virtual_address`, adding the missing tables on
/// the way when `create` is set (`Ok(None)`: a table is missing and `create` is not set).
fn leaf_table(virtual_address: usize, create: bool) -> Result<Option<PageTable>, MapError> {
    let mut current = table::root();
    for level in [2, 1] {
        let index = table_index(virtual_address, level);
        let entry = current.entry(index);
        current = if entry & pte::V == 0 {
            if !create {
                return Ok(None);
            }
            let next = PageTable::allocate().ok_or(MapError::OutOfFrames)?;
            current.set_entry(
                index,
                ((next.physical() >> 12) << pte::PPN_SHIFT) | pte::TABLE,
            );
            next
        } else if entry & LEAF_PERMISSIONS != 0 {
            // Only the boot mappings have large leaves, and none lies in the window.
            return Err(MapError::NotInWindow(virtual_address));
        } else {
            table::next_table(entry)
        };
    }
    Ok(Some(current))
}

/// The index of `virtual_address` in its table at `level` (2: root, 0: leaves).
fn table_index(virtual_address: usize, level: u32) -> usize {
    (virtual_address >> (12 + 9 * level)) % ENTRIES_PER_TABLE
}

/// The physical address an entry points at.
fn entry_address(entry: u64) -> u64 {
    ((entry >> pte::PPN_SHIFT) & ((1 << PPN_BITS) - 1)) << 12
}

mod table {
    //! Page tables of the window, read and written through the direct map: the unsafe code
    //! of this module.
    //!
    //! A [`Table`] is only made from the root table in `satp`, from a frame just taken from
    //! the frame allocator, or from a table entry of the window, which only this module
    //! writes; so its address always names a live 4 KiB page table.

    use core::arch::asm;

    use riscv::register::satp;

    use super::entry_address;
    use crate::arch::page_table::PageTable;

    /// The root table the hart translates with.
    pub(super) fn root() -> PageTable {
        // SAFETY: `satp` holds the root table the hart translates with, in RAM the
        // direct map covers; this module writes only the window's entries of it, which nothing
        // else uses.
        unsafe { PageTable::at((satp::read().ppn() as u64) << 12) }
    }

    /// The next-level table a (valid, non-leaf) entry points at.
    pub(super) fn next_table(entry: u64) -> PageTable {
        // SAFETY: the entry is a valid non-leaf entry of a window table (the caller checked
        // it), and only this module writes the window's entries, so it points at a live
        // table that this module owns.
        unsafe { PageTable::at(entry_address(entry)) }
    }

    /// Drops the translation of `virtual_address` from this hart's TLB, global entries
    /// included (`sfence.vma` with `rs2` = `x0`).
    pub(super) fn flush_page(virtual_address: usize) {
        // SAFETY: `sfence.vma` only orders page-table stores before later translations and
        // drops cached ones; it touches no memory Rust can see.
        unsafe {
            asm!("sfence.vma {}, zero", in(reg) virtual_address, options(nostack, preserves_flags))
        };
    }
}

pub mod tests {
    //! In-kernel tests of the window's page tables.

    use super::*;
    use crate::ktest::TestResult;
    use crate::mem::frame;
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    /// The U bit of an entry: user-mode accessible.
    const USER: u64 = 1 << 4;

    /// A page near the end of the window, far from where [`crate::vm`] places mappings.
    const TEST_PAGE: usize = FILE_MAP_WINDOW_START + FILE_MAP_WINDOW_SIZE - 16 * PAGE_SIZE;

    pub fn leaf_has_accessed_and_dirty_preset() -> TestResult {
        let Some(range) = frame::allocate(1, 1) else {
            ktest_fail!("no free frame")
        };
        let mapped = map_page(TEST_PAGE, range.start, Protection::ReadOnly);
        ktest_assert_eq!(mapped, Ok(()));
        let entry = leaf_entry(TEST_PAGE).unwrap_or(0);
        let unmapped = unmap_page(TEST_PAGE);

        let mapped_writable = map_page(TEST_PAGE, range.start, Protection::ReadWrite);
        let writable_entry = leaf_entry(TEST_PAGE).unwrap_or(0);
        let _ = unmap_page(TEST_PAGE);
        let _ = frame::free(range);

        for (bit, name) in [
            (pte::V, "V"),
            (pte::R, "R"),
            (pte::A, "A"),
            (pte::D, "D"),
            (pte::G, "G"),
        ] {
            ktest_assert!(entry & bit != 0, "a leaf bit is clear", name);
        }
        ktest_assert_eq!(entry & (pte::W | pte::X | USER), 0);
        ktest_assert_eq!(entry_address(entry), range.start);
        ktest_assert_eq!(unmapped, Some(range.start));

        ktest_assert_eq!(mapped_writable, Ok(()));
        ktest_assert_eq!(writable_entry, entry | pte::W);
        Ok(())
    }
}
