//! Sv39 paging: the constants the boot page tables are built from, the direct map, and the
//! one change Rust makes to those tables (dropping the identity gigapage).
//!
//! The boot code in [`entry`](super::entry) builds three kinds of mappings in one root table
//! (see the layout table in the [module doc](super)): the direct map of physical memory in 1 GiB
//! pages, the kernel window in 2 MiB pages, and a temporary identity gigapage around the load
//! address that only exists so the instruction after `csrw satp` can be fetched. The constants
//! here are handed to that assembly as `const` operands, so Rust and assembly agree on them.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Start of the direct map: physical address `pa` is at `DIRECT_MAP_OFFSET + pa`. It is the
/// first address of the Sv39 upper half, root-table entry 256.
pub const DIRECT_MAP_OFFSET: usize = 0xffff_ffc0_0000_0000;

/// How much physical memory the direct map covers, from physical address 0.
pub const DIRECT_MAP_SIZE: u64 = 64 << 30;

/// Size of a level-2 leaf (gigapage).
pub const GIGAPAGE_SIZE: u64 = 1 << 30;

/// Size of a level-1 leaf (megapage); the kernel window is mapped with these, so the load
/// address must be a multiple of it.
pub const MEGAPAGE_SIZE: u64 = 2 << 20;

/// Entries in a page table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Page-table entry bits (the privileged spec, "Sv39").
pub mod pte {
    /// Valid.
    pub const V: u64 = 1 << 0;
    /// Readable.
    pub const R: u64 = 1 << 1;
    /// Writable.
    pub const W: u64 = 1 << 2;
    /// Executable.
    pub const X: u64 = 1 << 3;
    /// Global: present in every address space.
    pub const G: u64 = 1 << 5;
    /// Accessed. Set up front: the VisionFive 2's U74 cores fault instead of setting it.
    pub const A: u64 = 1 << 6;
    /// Dirty. Set up front, for the same reason as [`A`].
    pub const D: u64 = 1 << 7;
    /// Where the physical page number starts in an entry.
    pub const PPN_SHIFT: u32 = 10;

    /// A leaf of the direct map: data, never code.
    pub const DIRECT_MAP_LEAF: u64 = V | R | W | G | A | D;
    /// A leaf of the kernel window.
    pub const KERNEL_LEAF: u64 = V | R | W | X | G | A | D;
    /// The temporary identity leaf around the boot code.
    pub const IDENTITY_LEAF: u64 = V | R | W | X | A | D;
    /// A pointer to the next-level table.
    pub const TABLE: u64 = V;
}

/// `satp.MODE` for Sv39, and where the mode field sits in `satp`.
pub const SATP_MODE_SV39: u64 = 8;
/// Bit position of `satp.MODE`.
pub const SATP_MODE_SHIFT: u32 = 60;

/// Root-table index of the first direct-map gigapage.
pub const DIRECT_MAP_FIRST_ENTRY: usize = (DIRECT_MAP_OFFSET >> 30) % ENTRIES_PER_TABLE;

/// Number of gigapages in the direct map.
pub const DIRECT_MAP_GIGAPAGES: u64 = DIRECT_MAP_SIZE / GIGAPAGE_SIZE;

/// The lower half of the root table (entries 0..256) maps virtual addresses below 256 GiB;
/// the identity gigapage needs the load address to be there.
pub const IDENTITY_LIMIT: u64 = 256 * GIGAPAGE_SIZE;

const _: () = assert!(DIRECT_MAP_FIRST_ENTRY == 256);
const _: () = assert!(DIRECT_MAP_FIRST_ENTRY as u64 + DIRECT_MAP_GIGAPAGES <= 510);

/// Physical address the kernel image was loaded at; set once by [`record_load_address`].
static KERNEL_LOAD_ADDRESS: AtomicUsize = AtomicUsize::new(0);

/// The address of physical memory `physical` in the direct map.
///
/// Addresses at or above [`DIRECT_MAP_SIZE`] are outside the direct map: the result is then an
/// unmapped virtual address, and an access through it faults.
pub fn phys_to_virt(physical: u64) -> usize {
    DIRECT_MAP_OFFSET.wrapping_add(physical as usize)
}

/// The physical address of the `len` bytes at `virtual_address`, if they lie in one linear
/// mapping (the direct map or the kernel image) and so are physically contiguous.
pub fn virt_to_phys(virtual_address: usize, len: usize) -> Option<u64> {
    let end = virtual_address.checked_add(len)?;

    let direct_map_end = DIRECT_MAP_OFFSET + DIRECT_MAP_SIZE as usize;
    if virtual_address >= DIRECT_MAP_OFFSET && end <= direct_map_end {
        return Some((virtual_address - DIRECT_MAP_OFFSET) as u64);
    }

    let (image_start, image_end) = kernel_link_range();
    if virtual_address >= image_start && end <= image_end {
        return Some(kernel_load_address() + (virtual_address - image_start) as u64);
    }
    None
}

/// Whether `range` (physical) lies entirely inside the direct map.
pub fn in_direct_map(start: u64, end: u64) -> bool {
    start <= end && end <= DIRECT_MAP_SIZE
}

/// Remembers where the kernel was loaded, for tests and diagnostics.
pub fn record_load_address(physical: u64) {
    KERNEL_LOAD_ADDRESS.store(physical as usize, Ordering::Relaxed);
}

/// Physical address the kernel image was loaded at.
pub fn kernel_load_address() -> u64 {
    KERNEL_LOAD_ADDRESS.load(Ordering::Relaxed) as u64
}

/// The kernel image's linked (virtual) addresses, `start..end`, `.bss` included.
pub fn kernel_link_range() -> (usize, usize) {
    unsafe extern "C" {
        /// First byte of the image (linker script).
        static __kernel_start: u8;
        /// One past the last byte of the image, `.bss` included (linker script).
        static __kernel_end: u8;
    }
    (
        &raw const __kernel_start as usize,
        &raw const __kernel_end as usize,
    )
}

/// Removes the identity gigapage the boot code mapped around `load_address`.
///
/// After this the lower half of the address space is empty. Called once, on the boot stack at
/// the kernel's linked address, before anything could have taken the address of an
/// identity-mapped object.
pub fn remove_identity_map(load_address: u64) {
    let index = (load_address / GIGAPAGE_SIZE) as usize;
    if load_address >= IDENTITY_LIMIT {
        // The boot code refuses such load addresses before it maps anything.
        return;
    }
    raw::clear_root_entry(index);
}

mod raw {
    //! The page-table write and TLB flush of [`super::remove_identity_map`].

    use riscv::register::satp;

    use super::{ENTRIES_PER_TABLE, phys_to_virt};

    /// Clears entry `index` of the active root table and flushes the TLB.
    pub(super) fn clear_root_entry(index: usize) {
        if index >= ENTRIES_PER_TABLE {
            return;
        }
        let root_physical = (satp::read().ppn() as u64) << 12;
        let root = phys_to_virt(root_physical) as *mut u64;

        // SAFETY: `satp` holds the root table the boot code built, a 4 KiB table of 512 entries
        // in `.bss`, reached here through the direct map (which covers all of the kernel's
        // memory). The kernel runs on one hart with interrupts off, so nothing else reads or
        // writes the table meanwhile, and no Rust reference to the table exists (the boot
        // code owns it as raw memory). The entry cleared is the identity gigapage, which
        // nothing uses since the jump to the higher half: code, stack and data are reached at
        // their linked addresses, physical memory through the direct map.
        unsafe { root.add(index).write_volatile(0) };

        // Drop the cached translation: sfence.vma orders the store above before later
        // translations.
        riscv::asm::sfence_vma_all();
    }
}
