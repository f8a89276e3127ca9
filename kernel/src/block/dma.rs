//! DMA memory for `virtio-drivers`: its [`Hal`] on the kernel's frame allocator.
//!
//! Queues and other driver-owned buffers are whole frames from [`frame::allocate`], reached
//! through the direct map. Buffers the caller lends for one request (a read's destination,
//! a request header) are handed to the device where they are when they lie in one linear
//! mapping (the direct map, which holds the heap, or the kernel image, which holds stacks and
//! statics), since those are physically contiguous; anything else goes through a bounce
//! buffer of fresh frames.
//!
//! # Limitations
//!
//! - No IOMMU: the device is given CPU physical addresses, which is what QEMU and the
//!   VisionFive 2 expect.
//! - No cache maintenance: QEMU and the supported machines keep DMA coherent with the caches
//!   (the riscv64 `virt` PCI bridge says `dma-coherent`).
//! - A bounce buffer that cannot be allocated panics: `Hal::share` has no way to fail.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

use crate::arch;
use crate::boot::PhysRange;
use crate::mem::frame::{self, FRAME_SIZE};

/// The kernel's [`Hal`]: DMA memory from the frame allocator, MMIO through the direct map.
pub struct FrameDma;

/// How many frames hold `bytes`.
fn frames_for(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(FRAME_SIZE)
}

// SAFETY: `dma_alloc` returns frames the allocator hands to no one else until `dma_dealloc`
// gives them back, zeroed and page-aligned (`FRAME_SIZE == PAGE_SIZE`), at their direct-map
// address, which is valid for reads and writes. `mmio_phys_to_virt` returns the direct-map
// address of device memory, which the direct map covers (see `arch`). `share` gives the
// device the physical address of exactly the bytes of the buffer (or of a bounce copy that
// `unshare` copies back and frees).
unsafe impl Hal for FrameDma {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        const _: () = assert!(FRAME_SIZE as usize == PAGE_SIZE);

        let Some(range) = frame::allocate(pages as u64, 1) else {
            defmt::warn!(
                "dma: no {=usize} contiguous free frames for a virtio queue",
                pages
            );
            // `virtio-drivers` reads physical address 0 as "allocation failed".
            return (0, NonNull::dangling());
        };
        let virtual_address = arch::phys_to_virt(range.start);
        let bytes = pages * PAGE_SIZE;

        // SAFETY: the frames are ours alone from now on, and the direct map makes `bytes`
        // bytes at `virtual_address` writable.
        unsafe { core::ptr::write_bytes(virtual_address as *mut u8, 0, bytes) };
        let pointer = NonNull::new(virtual_address as *mut u8).expect("the direct map is not at 0");
        (range.start, pointer)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let range = PhysRange {
            start: paddr,
            end: paddr + pages as u64 * FRAME_SIZE,
        };
        match frame::free(range) {
            Ok(()) => 0,
            Err(_) => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(arch::phys_to_virt(paddr) as *mut u8).expect("the direct map is not at 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let address = buffer.cast::<u8>().as_ptr() as usize;
        if let Some(physical) = arch::virt_to_phys(address, buffer.len()) {
            return physical;
        }

        let frames = frames_for(buffer.len());
        let bounce = frame::allocate(frames, 1)
            .unwrap_or_else(|| panic!("dma: no {} free frames for a bounce buffer", frames));
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller promises `buffer` is valid and not accessed by anyone else
            // during this call; the bounce frames are ours and mapped by the direct map.
            unsafe {
                copy(
                    buffer.cast().as_ptr(),
                    arch::phys_to_virt(bounce.start) as *mut u8,
                    buffer.len(),
                )
            };
        }
        bounce.start
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let address = buffer.cast::<u8>().as_ptr() as usize;
        if arch::virt_to_phys(address, buffer.len()) == Some(paddr) {
            return;
        }

        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce buffer `share` allocated for `buffer`, which the
            // caller promises is valid and not accessed by anyone else during this call.
            unsafe {
                copy(
                    arch::phys_to_virt(paddr) as *const u8,
                    buffer.cast().as_ptr(),
                    buffer.len(),
                )
            };
        }
        let range = PhysRange {
            start: paddr,
            end: paddr + frames_for(buffer.len()) * FRAME_SIZE,
        };
        if let Err(error) = frame::free(range) {
            defmt::error!("dma: cannot free bounce buffer {}: {}", range, error);
        }
    }
}

/// Copies `len` bytes.
///
/// # Safety
///
/// `from` must be valid for `len` bytes of reads and `to` for `len` bytes of writes, and the
/// two must not overlap.
unsafe fn copy(from: *const u8, to: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::copy_nonoverlapping(from, to, len) };
}

pub mod tests {
    //! In-kernel tests of the DMA `Hal`: addresses the device is given, and frames returned.

    use alloc::vec;

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::mem::frame;
    use crate::{ktest_assert, ktest_assert_eq};

    pub const TESTS: &[KernelTest] = &[
        KernelTest::new(
            "block::dma::shared_buffers_keep_their_physical_address",
            shared_buffers_keep_their_physical_address,
        ),
        KernelTest::new(
            "block::dma::allocations_are_zeroed_and_given_back",
            allocations_are_zeroed_and_given_back,
        ),
    ];

    /// A static in the kernel image, to share.
    static IMAGE_BYTES: [u8; 64] = [0x5a; 64];

    fn shared_buffers_keep_their_physical_address() -> TestResult {
        let mut heap_buffer = vec![0xa5u8; 3 * PAGE_SIZE];
        let heap = NonNull::from(heap_buffer.as_mut_slice());
        let image = NonNull::from(&IMAGE_BYTES[..]);

        for (buffer, what) in [(heap, "heap"), (image, "kernel image")] {
            // SAFETY: the buffer is valid and used by nothing else during the calls; its
            // physical address is only read back, never given to a device.
            let physical = unsafe { FrameDma::share(buffer, BufferDirection::DriverToDevice) };
            let virtual_address = buffer.cast::<u8>().as_ptr() as usize;
            ktest_assert!(
                arch::virt_to_phys(virtual_address, buffer.len()) == Some(physical),
                "a linearly mapped buffer is shared in place"
            );
            // SAFETY: `physical` is mapped by the direct map and holds the buffer's bytes.
            let first = unsafe { *(arch::phys_to_virt(physical) as *const u8) };
            // SAFETY: the buffer is valid for reads.
            let expected = unsafe { *buffer.cast::<u8>().as_ptr() };
            ktest_assert_eq!(first, expected);
            // SAFETY: `physical` came from `share` for this buffer.
            unsafe { FrameDma::unshare(physical, buffer, BufferDirection::DriverToDevice) };
            defmt::debug!(
                "dma test: {=str} buffer at physical {=u64:#x}",
                what,
                physical
            );
        }
        Ok(())
    }

    fn allocations_are_zeroed_and_given_back() -> TestResult {
        let free_before = frame::snapshot().free_frames();

        let (physical, pointer) = FrameDma::dma_alloc(3, BufferDirection::Both);
        ktest_assert!(physical != 0, "three frames are available");
        ktest_assert_eq!(physical % FRAME_SIZE, 0);
        ktest_assert_eq!(frame::snapshot().free_frames(), free_before - 3);
        // SAFETY: `dma_alloc` returned three frames mapped at `pointer`, ours until freed.
        let bytes = unsafe { core::slice::from_raw_parts(pointer.as_ptr(), 3 * PAGE_SIZE) };
        ktest_assert!(bytes.iter().all(|&byte| byte == 0), "zeroed");

        // SAFETY: the frames came from `dma_alloc` with this count and are no longer used.
        let status = unsafe { FrameDma::dma_dealloc(physical, pointer, 3) };
        ktest_assert_eq!(status, 0);
        ktest_assert_eq!(frame::snapshot().free_frames(), free_before);
        Ok(())
    }
}
