//! Device drivers for the kernel.
//!
//! Each driver is a `no_std` library that talks to its device through a small register or
//! bus abstraction, so the logic builds and is unit-tested on the host with a fake device,
//! while the kernel supplies the real memory-mapped or port-mapped registers.
//!
//! | module | device |
//! | --- | --- |
//! | [`block`] | the [`block::BlockDevice`] trait filesystems read through; a RAM disk |
//! | [`uart16550`] | the 16550 UART: console of QEMU `virt`, the VisionFive 2, a PC's COM1 |
//! | [`virtio_blk`] | virtio-blk over MMIO or PCI, several requests in flight |

#![no_std]

#[cfg(test)]
extern crate std;

pub mod block;
pub mod uart16550;
pub mod virtio_blk;
