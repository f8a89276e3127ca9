//! The physical frame allocator: hands out 4 KiB frames of RAM that nothing else owns.
//!
//! It keeps the free RAM as a sorted list of disjoint, frame-aligned ranges. At boot,
//! [`FrameAllocator::add_free`] adds every RAM region the firmware reported and
//! [`FrameAllocator::reserve`] then carves out every reservation (firmware, the kernel image,
//! the device tree, the initrd, boot data), rounded outwards to whole frames, so no frame that
//! holds any byte of them is ever handed out. Allocation is first fit; freeing merges a range
//! back with its neighbours.
//!
//! A list of ranges stays short (a few entries per RAM bank) and makes the "never hands out a
//! reserved byte" property easy to check, which matters more here than O(1) allocation.
//!
//! | path | lock taken |
//! | --- | --- |
//! | [`allocate`], [`free`], [`snapshot`] | the allocator's spinlock, for the call |

use heapless::Vec;
use spin::Mutex;

use crate::boot::PhysRange;

/// Size of a frame (and of a page): 4 KiB on both architectures.
pub const FRAME_SIZE: u64 = 4096;

/// How many disjoint free ranges the allocator can track.
pub const MAX_FREE_RANGES: usize = 128;

/// Why the frame allocator could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum FrameError {
    /// Freeing or adding a range would need more than [`MAX_FREE_RANGES`] entries.
    TooFragmented,
    /// The range freed overlaps memory that is already free (a double free).
    AlreadyFree(PhysRange),
}

/// Free physical memory, as sorted, disjoint, frame-aligned ranges.
#[derive(Clone, Debug, Default)]
pub struct FrameAllocator {
    free: Vec<PhysRange, MAX_FREE_RANGES>,
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self { free: Vec::new() }
    }

    /// Adds RAM, shrunk inwards to whole frames; overlapping or touching ranges merge.
    pub fn add_free(&mut self, range: PhysRange) -> Result<(), FrameError> {
        let Some(range) = align_inwards(range) else {
            return Ok(());
        };
        let mut merged = range;
        let mut kept: Vec<PhysRange, MAX_FREE_RANGES> = Vec::new();
        for existing in &self.free {
            if existing.end < merged.start || merged.end < existing.start {
                kept.push(*existing)
                    .map_err(|_| FrameError::TooFragmented)?;
            } else {
                merged.start = merged.start.min(existing.start);
                merged.end = merged.end.max(existing.end);
            }
        }
        kept.push(merged).map_err(|_| FrameError::TooFragmented)?;
        kept.sort_unstable_by_key(|range| range.start);
        self.free = kept;
        Ok(())
    }

    /// Takes `range`, grown outwards to whole frames, out of the free memory.
    pub fn reserve(&mut self, range: PhysRange) -> Result<(), FrameError> {
        let range = align_outwards(range);
        if range.is_empty() {
            return Ok(());
        }
        let mut kept: Vec<PhysRange, MAX_FREE_RANGES> = Vec::new();
        for existing in &self.free {
            if !existing.overlaps(&range) {
                kept.push(*existing)
                    .map_err(|_| FrameError::TooFragmented)?;
                continue;
            }
            let below = PhysRange {
                start: existing.start,
                end: range.start,
            };
            let above = PhysRange {
                start: range.end,
                end: existing.end,
            };
            for part in [below, above] {
                if !part.is_empty() {
                    kept.push(part).map_err(|_| FrameError::TooFragmented)?;
                }
            }
        }
        self.free = kept;
        Ok(())
    }

    /// Allocates `count` contiguous frames whose first address is a multiple of
    /// `align_frames` frames (a power of two; 1 for no alignment).
    pub fn allocate(&mut self, count: u64, align_frames: u64) -> Option<PhysRange> {
        let size = count.checked_mul(FRAME_SIZE)?;
        let align = align_frames.max(1).checked_mul(FRAME_SIZE)?;
        if size == 0 || !align.is_power_of_two() {
            return None;
        }

        let (index, start) = self.free.iter().enumerate().find_map(|(index, range)| {
            let start = range.start.checked_next_multiple_of(align)?;
            let end = start.checked_add(size)?;
            (end <= range.end).then_some((index, start))
        })?;
        let allocated = PhysRange {
            start,
            end: start + size,
        };

        // Cut the allocation out of its free range; a split in the middle needs a new entry.
        // If there is no room for one, give up rather than lose memory.
        let range = self.free[index];
        let below = PhysRange {
            start: range.start,
            end: allocated.start,
        };
        let above = PhysRange {
            start: allocated.end,
            end: range.end,
        };
        match (below.is_empty(), above.is_empty()) {
            (true, true) => {
                self.free.remove(index);
            }
            (false, true) => self.free[index] = below,
            (true, false) => self.free[index] = above,
            (false, false) => {
                self.free.insert(index + 1, above).ok()?;
                self.free[index] = below;
            }
        }
        Some(allocated)
    }

    /// Gives frames back. The range must be one [`allocate`](Self::allocate) returned (or a
    /// frame-aligned part of one) and must not be free already.
    pub fn free(&mut self, range: PhysRange) -> Result<(), FrameError> {
        if self.free.iter().any(|free| free.overlaps(&range)) {
            return Err(FrameError::AlreadyFree(range));
        }
        self.add_free(range)
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free
            .iter()
            .map(|range| range.size() / FRAME_SIZE)
            .sum()
    }

    /// The free ranges, sorted by address.
    pub fn free_ranges(&self) -> &[PhysRange] {
        &self.free
    }
}

/// Shrinks a range to the whole frames inside it (`None` if there are none).
fn align_inwards(range: PhysRange) -> Option<PhysRange> {
    let start = range.start.checked_next_multiple_of(FRAME_SIZE)?;
    let end = range.end / FRAME_SIZE * FRAME_SIZE;
    (start < end).then_some(PhysRange { start, end })
}

/// Grows a range to the whole frames that hold any byte of it.
fn align_outwards(range: PhysRange) -> PhysRange {
    let start = range.start / FRAME_SIZE * FRAME_SIZE;
    let end = range
        .end
        .checked_next_multiple_of(FRAME_SIZE)
        .unwrap_or(u64::MAX / FRAME_SIZE * FRAME_SIZE);
    PhysRange { start, end }
}

/// The kernel's frame allocator.
static FRAME_ALLOCATOR: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

/// Installs the boot-time allocator built by [`crate::mem::init`].
pub(super) fn install(allocator: FrameAllocator) {
    *FRAME_ALLOCATOR.lock() = allocator;
}

/// Allocates `count` contiguous frames aligned to `align_frames` frames.
pub fn allocate(count: u64, align_frames: u64) -> Option<PhysRange> {
    FRAME_ALLOCATOR.lock().allocate(count, align_frames)
}

/// Frees frames from [`allocate`].
pub fn free(range: PhysRange) -> Result<(), FrameError> {
    FRAME_ALLOCATOR.lock().free(range)
}

/// A copy of the allocator's current state, for tests and statistics.
pub fn snapshot() -> FrameAllocator {
    FRAME_ALLOCATOR.lock().clone()
}

pub mod tests {
    //! In-kernel tests of the frame allocator, on the boot memory map and on made-up ones.

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::mem;
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    pub const TESTS: &[KernelTest] = &[
        KernelTest::new(
            "mem::frame::reserved_ranges_are_never_allocated",
            reserved_ranges_are_never_allocated,
        ),
        KernelTest::new("mem::frame::unaligned_reservations", unaligned_reservations),
        KernelTest::new("mem::frame::allocate_free_merges", allocate_free_merges),
        KernelTest::new("mem::frame::double_free_is_refused", double_free_is_refused),
        KernelTest::new(
            "mem::frame::kernel_allocator_round_trip",
            kernel_allocator_round_trip,
        ),
    ];

    /// Drains a copy of the live allocator frame by frame: every frame must lie in RAM the
    /// firmware reported and share no byte with any boot reservation.
    fn reserved_ranges_are_never_allocated() -> TestResult {
        let boot = mem::boot_memory();
        let mut allocator = snapshot();
        let expected = allocator.free_frames();
        ktest_assert!(expected > 0, "no free memory");

        let mut drained = 0u64;
        while let Some(frame) = allocator.allocate(1, 1) {
            drained += 1;
            ktest_assert!(
                boot.memory.iter().any(|ram| ram.contains_range(&frame)),
                "frame outside RAM",
                frame.start
            );
            for reservation in &boot.reserved {
                ktest_assert!(
                    !reservation.range.overlaps(&frame),
                    "reserved frame handed out",
                    frame.start
                );
            }
        }
        ktest_assert_eq!(drained, expected);
        Ok(())
    }

    fn unaligned_reservations() -> TestResult {
        let mut allocator = FrameAllocator::new();
        ktest_assert!(
            allocator.add_free(range(0x1_0800, 0x10_0000)).is_ok(),
            "add"
        );
        // Firmware blobs rarely end on a frame boundary.
        ktest_assert!(
            allocator.reserve(range(0x2_0010, 0x2_0020)).is_ok(),
            "reserve"
        );
        ktest_assert!(
            allocator.reserve(range(0xf_fffe, 0x10_0000)).is_ok(),
            "reserve"
        );

        ktest_assert_eq!(
            allocator.free_ranges(),
            &[range(0x1_1000, 0x2_0000), range(0x2_1000, 0xf_f000)][..]
        );
        Ok(())
    }

    fn allocate_free_merges() -> TestResult {
        let mut allocator = FrameAllocator::new();
        ktest_assert!(
            allocator.add_free(range(0x10_0000, 0x20_0000)).is_ok(),
            "add"
        );
        let before = allocator.free_frames();

        let one = allocator.allocate(1, 1);
        let aligned = allocator.allocate(4, 16);
        ktest_assert_eq!(one, Some(range(0x10_0000, 0x10_1000)));
        ktest_assert_eq!(aligned, Some(range(0x11_0000, 0x11_4000)));
        ktest_assert_eq!(allocator.free_ranges().len(), 2);
        ktest_assert!(allocator.allocate(0x1000, 1).is_none(), "too big must fail");

        for allocated in [one, aligned].into_iter().flatten() {
            ktest_assert!(allocator.free(allocated).is_ok(), "free");
        }
        ktest_assert_eq!(allocator.free_frames(), before);
        ktest_assert_eq!(allocator.free_ranges(), &[range(0x10_0000, 0x20_0000)][..]);
        Ok(())
    }

    fn double_free_is_refused() -> TestResult {
        let mut allocator = FrameAllocator::new();
        ktest_assert!(
            allocator.add_free(range(0x10_0000, 0x20_0000)).is_ok(),
            "add"
        );
        let frame = range(0x10_0000, 0x10_1000);
        ktest_assert_eq!(allocator.free(frame), Err(FrameError::AlreadyFree(frame)));
        Ok(())
    }

    /// The kernel's own allocator: frames taken come back, and a double free is refused.
    fn kernel_allocator_round_trip() -> TestResult {
        let before = snapshot().free_frames();
        let Some(frames) = allocate(8, 8) else {
            ktest_fail!("no 8 aligned free frames")
        };
        ktest_assert!(frames.start.is_multiple_of(8 * FRAME_SIZE), "misaligned");
        ktest_assert_eq!(snapshot().free_frames(), before - 8);

        ktest_assert!(free(frames).is_ok(), "free");
        ktest_assert_eq!(free(frames), Err(FrameError::AlreadyFree(frames)));
        ktest_assert_eq!(snapshot().free_frames(), before);
        Ok(())
    }

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }
}
