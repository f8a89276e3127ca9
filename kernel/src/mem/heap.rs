//! The kernel heap, for `alloc` (`Box`, `Vec`, `BTreeMap`, ...).
//!
//! The heap is one contiguous run of frames taken from the frame allocator at boot, managed by
//! `linked_list_allocator` (a first-fit free list from the rust-osdev project) behind its
//! spinlock. It gets a quarter of free RAM, between [`MIN_HEAP_SIZE`] and [`MAX_HEAP_SIZE`].
//!
//! | path | lock taken |
//! | --- | --- |
//! | every allocation and free | the heap's spinlock, for the call |
//!
//! # Limitations
//!
//! The heap does not grow after boot; an allocation that does not fit fails (and `alloc`
//! turns that into a panic).

use linked_list_allocator::LockedHeap;

use super::frame::{self, FRAME_SIZE};
use crate::arch;

/// The smallest heap the kernel boots with.
pub const MIN_HEAP_SIZE: u64 = 1 << 20;
/// The largest heap taken at boot.
pub const MAX_HEAP_SIZE: u64 = 64 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Takes the heap's frames from the frame allocator and hands them to the allocator.
///
/// # Panics
///
/// If no contiguous run of [`MIN_HEAP_SIZE`] bytes is free.
pub(super) fn init(free_frames: u64) {
    let wanted = (free_frames * FRAME_SIZE / 4).clamp(MIN_HEAP_SIZE, MAX_HEAP_SIZE);
    let frames = frame::allocate(wanted / FRAME_SIZE, 1)
        .or_else(|| frame::allocate(MIN_HEAP_SIZE / FRAME_SIZE, 1))
        .expect("no contiguous RAM for the kernel heap");

    let start = arch::phys_to_virt(frames.start);
    let size = usize::try_from(frames.size()).expect("heap size fits in usize");
    // SAFETY: the frames were just taken from the frame allocator, so nothing else uses them;
    // the direct map makes them writable at `start` for `size` bytes for the kernel's life;
    // `init` runs once, before the first allocation.
    unsafe { HEAP.lock().init(start as *mut u8, size) };

    defmt::info!(
        "heap: {=u64} KiB at phys {=u64:#x} (virt {=u64:#x})",
        frames.size() >> 10,
        frames.start,
        start as u64
    );
}

/// Bytes of heap in use.
pub fn used() -> usize {
    HEAP.lock().used()
}

pub mod tests {
    //! In-kernel tests of the heap.

    use alloc::boxed::Box;
    use alloc::vec::Vec;

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::{ktest_assert, ktest_assert_eq};

    pub const TESTS: &[KernelTest] = &[
        KernelTest::new(
            "mem::heap::survives_allocation_churn",
            survives_allocation_churn,
        ),
        KernelTest::new("mem::heap::large_and_aligned", large_and_aligned),
    ];

    /// A small xorshift generator: the churn is pseudo-random but the same on every boot.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Allocates and frees blocks of random sizes in random order, filling each with a
    /// pattern and checking it before the free: a corrupting allocator shows up as a wrong
    /// byte, a leaking one as heap use that does not return to where it started.
    fn survives_allocation_churn() -> TestResult {
        let used_before = used();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut live: Vec<(u8, Vec<u8>)> = Vec::new();

        for step in 0..20_000u64 {
            let roll = rng.next();
            if roll.is_multiple_of(3) && !live.is_empty() {
                let index = (roll >> 8) as usize % live.len();
                let (pattern, block) = live.swap_remove(index);
                ktest_assert!(block.iter().all(|&b| b == pattern), "block corrupted", step);
            } else {
                let size = 1 + (roll >> 16) as usize % 2048;
                let pattern = step as u8;
                live.push((pattern, alloc::vec![pattern; size]));
            }
        }

        for (pattern, block) in &live {
            ktest_assert!(
                block.iter().all(|&b| b == *pattern),
                "block corrupted",
                *pattern
            );
        }
        drop(live);
        ktest_assert_eq!(used(), used_before);
        Ok(())
    }

    fn large_and_aligned() -> TestResult {
        let big = alloc::vec![0xa5u8; 512 * 1024];
        ktest_assert!(big.iter().all(|&b| b == 0xa5), "large block corrupted");

        #[repr(align(4096))]
        struct PageAligned([u8; 4096]);
        let page = Box::new(PageAligned([7; 4096]));
        ktest_assert!(
            (&*page as *const PageAligned as usize).is_multiple_of(4096),
            "misaligned"
        );
        ktest_assert!(page.0.iter().all(|&b| b == 7), "aligned block corrupted");
        Ok(())
    }
}
