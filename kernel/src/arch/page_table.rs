//! A page table reached through the direct map: the raw reads and writes of its 512 entries,
//! which both architectures' page-table code shares (Sv39 and x86_64 tables are both 4 KiB
//! pages of 512 eight-byte entries; what an entry means stays with each architecture).

use crate::arch::phys_to_virt;
use crate::mem::frame;

/// Entries in one page table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Size of a page table, and of a page.
const TABLE_SIZE: usize = 4096;

/// A page table at a physical address.
///
/// # Invariant
///
/// `physical` names a live 4 KiB page table in RAM the direct map covers. Constructors
/// uphold it: [`PageTable::allocate`] takes a fresh frame, and the callers of the unsafe
/// [`PageTable::at`] promise it.
pub struct PageTable {
    physical: u64,
}

impl PageTable {
    /// The table at `physical`.
    ///
    /// # Safety
    ///
    /// `physical` must be the address of a live page table in RAM the direct map covers (the
    /// root register's table, or what a valid non-leaf entry points at), whose entries the
    /// caller may read and, where it writes them, owns (no other code changes them, and no
    /// Rust reference to the table exists).
    pub unsafe fn at(physical: u64) -> Self {
        Self { physical }
    }

    /// A zeroed table in a frame from the frame allocator, or `None` if there is none.
    pub fn allocate() -> Option<Self> {
        let range = frame::allocate(1, 1)?;
        let table = phys_to_virt(range.start) as *mut u8;

        // SAFETY: the frame was just handed out by the frame allocator, so nothing else uses
        // it; it is RAM in the direct map (the allocator only holds RAM the direct map
        // covers), 4 KiB long and page aligned.
        unsafe { table.write_bytes(0, TABLE_SIZE) };
        Some(Self {
            physical: range.start,
        })
    }

    /// The table's physical address.
    pub fn physical(&self) -> u64 {
        self.physical
    }

    /// Entry `index` (taken modulo 512).
    pub fn entry(&self, index: usize) -> u64 {
        let slot = self.slot(index);

        // SAFETY: `slot` is an aligned entry of a live page table (the type's invariant),
        // reached through the direct map. The owner of the table (see `at`) is the only code
        // that writes it; the hardware walker only reads it.
        unsafe { slot.read_volatile() }
    }

    /// Writes entry `index` (taken modulo 512).
    pub fn set_entry(&self, index: usize, value: u64) {
        let slot = self.slot(index);

        // SAFETY: as in `entry`; the entries written belong to the caller of `at` (or to
        // `allocate`'s caller), so the write changes no mapping other code relies on, and no
        // Rust reference to the table exists.
        unsafe { slot.write_volatile(value) };
    }

    fn slot(&self, index: usize) -> *mut u64 {
        let index = index % ENTRIES_PER_TABLE;
        (phys_to_virt(self.physical) as *mut u64).wrapping_add(index)
    }
}
