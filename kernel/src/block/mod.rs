//! Block devices: finds every disk the firmware describes and gives each a name.
//!
//! [`probe`] starts a virtio-blk driver on every virtio-mmio window and every virtio block
//! function on the PCI host bridges ([`pci`]), and makes a RAM disk of the initrd. Disks are
//! named in probe order, `virtio0`, `virtio1`, ..., and `initrd`; each lives for the rest of
//! the run, and every read error names the disk it happened on.
//!
//! # Limitations
//!
//! - Disks are polled, never interrupt-driven, and read-only.
//! - A RAM disk over the initrd has 512-byte blocks, so any gfs2 block size mounts from it.

pub mod dma;
pub mod pci;

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use core::ptr::NonNull;

use drivers::block::{BlockDevice, BlockError, RamDisk};
use drivers::virtio_blk::{VirtioBlock, VirtioBlockError};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use crate::arch;
use crate::boot::{BootInfo, PhysRange};
use dma::FrameDma;

/// Bytes per block of the initrd RAM disk.
const RAM_DISK_BLOCK_SIZE: usize = 512;

/// How a disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// virtio-blk over the legacy (version 1) memory-mapped transport, QEMU's default.
    VirtioMmioLegacy,
    /// virtio-blk over the modern (version 2) memory-mapped transport.
    VirtioMmio,
    /// virtio-blk over PCI.
    VirtioPci,
    /// A RAM disk over the initrd the boot loader placed in memory.
    Initrd,
}

impl defmt::Format for Attachment {
    fn format(&self, f: defmt::Formatter) {
        let name = match self {
            Self::VirtioMmioLegacy => "virtio-mmio (legacy)",
            Self::VirtioMmio => "virtio-mmio",
            Self::VirtioPci => "virtio-pci",
            Self::Initrd => "initrd",
        };
        defmt::write!(f, "{=str}", name)
    }
}

/// A disk the kernel found.
pub struct Disk {
    name: &'static str,
    attachment: Attachment,
    device: DiskDevice,
}

enum DiskDevice {
    // Boxed: the queue state is large, the RAM disk two words.
    Virtio(Box<VirtioBlock<FrameDma, SomeTransport<'static>>>),
    Ram(RamDisk<'static>),
}

impl Disk {
    /// The disk's name: `virtio0`, ..., or `initrd`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How the disk is attached.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.block_count() * self.block_size() as u64
    }
}

/// Why a read from a [`Disk`] failed; the message names the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// The virtio-blk device failed the read (its error names the device and sector).
    #[error(transparent)]
    Virtio(#[from] VirtioBlockError),
    /// A read from a RAM disk was out of range or not whole blocks.
    #[error("{disk}: {source}")]
    Ram {
        /// The disk's name.
        disk: &'static str,
        /// What the RAM disk reported.
        source: BlockError,
    },
}

impl DiskError {
    /// The name of the disk the read failed on.
    pub fn disk(&self) -> &'static str {
        match self {
            Self::Virtio(error) => error.device(),
            Self::Ram { disk, .. } => disk,
        }
    }
}

impl defmt::Format for DiskError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

impl BlockDevice for Disk {
    type Error = DiskError;

    fn block_size(&self) -> usize {
        match &self.device {
            DiskDevice::Virtio(device) => device.block_size(),
            DiskDevice::Ram(device) => device.block_size(),
        }
    }

    fn block_count(&self) -> u64 {
        match &self.device {
            DiskDevice::Virtio(device) => device.block_count(),
            DiskDevice::Ram(device) => device.block_count(),
        }
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match &self.device {
            DiskDevice::Virtio(device) => Ok(device.read_blocks(first, buf)?),
            DiskDevice::Ram(device) => {
                device
                    .read_blocks(first, buf)
                    .map_err(|source| DiskError::Ram {
                        disk: self.name,
                        source,
                    })
            }
        }
    }
}

/// Finds every disk: virtio-mmio, then PCI, then the initrd. Devices that fail to start are
/// logged and skipped.
pub fn probe(boot_info: &BootInfo) -> Vec<&'static Disk> {
    let mut disks = Vec::new();
    let mut transports: Vec<(SomeTransport<'static>, Attachment)> = Vec::new();

    for window in &boot_info.devices.virtio_mmio {
        if let Some(transport) = mmio_transport(*window) {
            let attachment = match transport.version() {
                MmioVersion::Legacy => Attachment::VirtioMmioLegacy,
                MmioVersion::Modern => Attachment::VirtioMmio,
            };
            transports.push((transport.into(), attachment));
        }
    }
    for transport in pci::virtio_block_transports(&boot_info.devices) {
        transports.push((transport.into(), Attachment::VirtioPci));
    }

    for (transport, attachment) in transports {
        let name: &'static str = Box::leak(format!("virtio{}", disks.len()).into_boxed_str());
        match VirtioBlock::new(name, transport) {
            Ok(device) => {
                let disk = Disk {
                    name,
                    attachment,
                    device: DiskDevice::Virtio(Box::new(device)),
                };
                defmt::info!(
                    "disk {=str}: virtio-blk on {}, {=u64} MiB",
                    name,
                    attachment,
                    disk.size() >> 20
                );
                disks.push(&*Box::leak(Box::new(disk)));
            }
            Err(error) => defmt::warn!("skipping a virtio-blk device: {}", error),
        }
    }

    if let Some(initrd) = boot_info.initrd {
        match initrd_disk(initrd) {
            Ok(disk) => {
                defmt::info!(
                    "disk initrd: RAM disk at {}, {=u64} KiB",
                    initrd,
                    disk.size() >> 10
                );
                disks.push(&*Box::leak(Box::new(disk)));
            }
            Err(error) => defmt::warn!("initrd {}: cannot make a RAM disk: {}", initrd, error),
        }
    }
    disks
}

/// The transport of the virtio block device behind a virtio-mmio window, if one is there.
fn mmio_transport(window: PhysRange) -> Option<MmioTransport<'static>> {
    let Ok(size) = usize::try_from(window.size()) else {
        defmt::warn!("virtio-mmio {}: window too large", window);
        return None;
    };
    let header = NonNull::new(arch::phys_to_virt(window.start) as *mut VirtIOHeader)?;

    match mmio::open(header, size) {
        Ok(transport) if transport.device_type() == DeviceType::Block => {
            defmt::debug!(
                "virtio-mmio {}: block device, transport version {}",
                window,
                defmt::Debug2Format(&transport.version())
            );
            Some(transport)
        }
        Ok(transport) => {
            defmt::debug!(
                "virtio-mmio {}: {} device, not a disk",
                window,
                defmt::Debug2Format(&transport.device_type())
            );
            None
        }
        // QEMU `virt` fills unused slots with device id 0.
        Err(MmioError::InvalidDeviceID(_)) => {
            defmt::trace!("virtio-mmio {}: empty slot", window);
            None
        }
        Err(error) => {
            defmt::warn!("virtio-mmio {}: {}", window, defmt::Display2Format(&error));
            None
        }
    }
}

/// Why the initrd cannot be a RAM disk.
#[derive(Clone, Copy, Debug, thiserror::Error)]
enum InitrdError {
    #[error("it lies outside the direct map")]
    OutsideDirectMap,
    #[error("{0}")]
    Block(#[from] BlockError),
}

impl defmt::Format for InitrdError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// A RAM disk over the initrd.
fn initrd_disk(initrd: PhysRange) -> Result<Disk, InitrdError> {
    let bytes = ram::initrd_bytes(initrd).ok_or(InitrdError::OutsideDirectMap)?;
    Ok(Disk {
        name: "initrd",
        attachment: Attachment::Initrd,
        device: DiskDevice::Ram(RamDisk::new(bytes, RAM_DISK_BLOCK_SIZE)?),
    })
}

mod mmio {
    //! The unsafe step of opening a virtio-mmio transport.

    use core::ptr::NonNull;

    use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};

    /// Opens the virtio-mmio register window at `header`, `size` bytes long.
    pub(super) fn open(
        header: NonNull<VirtIOHeader>,
        size: usize,
    ) -> Result<MmioTransport<'static>, MmioError> {
        // SAFETY: `header` is the direct-map address of a `virtio,mmio` window the firmware
        // described, `size` bytes of device registers that stay mapped for the life of the
        // kernel; the window is page-aligned (a `VirtIOHeader` needs 4), and each window is
        // opened once, by `probe`, so no other pointer to it exists.
        unsafe { MmioTransport::new(header, size) }
    }
}

mod ram {
    //! The unsafe step of reading the initrd in place.

    use crate::arch;
    use crate::boot::PhysRange;

    /// The initrd's bytes, through the direct map; `None` if they are not all mapped.
    pub(super) fn initrd_bytes(initrd: PhysRange) -> Option<&'static [u8]> {
        let len = usize::try_from(initrd.size()).ok()?;
        let start = arch::phys_to_virt(initrd.start);
        arch::virt_to_phys(start, len)?;
        // SAFETY: the range is in the direct map (checked above) and reserved as `Initrd` at
        // boot, so the frame allocator never hands it out and nothing writes it: it holds
        // the boot loader's bytes for the life of the kernel.
        Some(unsafe { core::slice::from_raw_parts(start as *const u8, len) })
    }
}
