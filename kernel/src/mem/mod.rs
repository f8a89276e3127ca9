//! Physical memory and the kernel heap.
//!
//! [`init`] turns the firmware's memory map into a [`frame::FrameAllocator`] (RAM minus every
//! reservation) and then carves the kernel heap out of it ([`heap`]).

pub mod frame;
pub mod heap;

use heapless::Vec;
use spin::Once;

use crate::boot::{BootInfo, MAX_REGIONS, PhysRange, Reservation};
use frame::{FRAME_SIZE, FrameAllocator};

/// The memory map the kernel booted with, kept for tests and diagnostics.
#[derive(Clone, Debug)]
pub struct BootMemory {
    /// RAM the firmware reported.
    pub memory: Vec<PhysRange, MAX_REGIONS>,
    /// Everything reserved at boot.
    pub reserved: Vec<Reservation, MAX_REGIONS>,
}

static BOOT_MEMORY: Once<BootMemory> = Once::new();

/// The memory map recorded by [`init`].
///
/// # Panics
///
/// If called before [`init`], which runs before anything else in `kernel_main`.
pub fn boot_memory() -> &'static BootMemory {
    BOOT_MEMORY.get().expect("mem::init has run")
}

/// Sets up the frame allocator and the heap from the firmware's memory map.
///
/// # Panics
///
/// If the memory map is so fragmented that the allocator cannot hold it, or if there is not
/// enough free RAM for the heap: the kernel cannot run in either case.
pub fn init(boot_info: &BootInfo) {
    let mut allocator = FrameAllocator::new();
    for region in &boot_info.memory {
        if let Err(error) = allocator.add_free(*region) {
            panic!(
                "cannot track RAM {:#x}..{:#x}: {:?}",
                region.start, region.end, error
            );
        }
    }

    for reservation in &boot_info.reserved {
        if let Err(error) = allocator.reserve(reservation.range) {
            panic!("cannot reserve {:?}: {:?}", reservation, error);
        }
    }

    let free_frames = allocator.free_frames();
    defmt::info!(
        "frame allocator: {=u64} free frames ({=u64} MiB) in {=usize} ranges",
        free_frames,
        (free_frames * FRAME_SIZE) >> 20,
        allocator.free_ranges().len()
    );
    frame::install(allocator);
    BOOT_MEMORY.call_once(|| BootMemory {
        memory: boot_info.memory.clone(),
        reserved: boot_info.reserved.clone(),
    });

    heap::init(free_frames);
}
