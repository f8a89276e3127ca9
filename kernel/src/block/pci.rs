//! virtio block functions on PCI: enumerates each host bridge and opens a `virtio-drivers`
//! PCI transport on every virtio-blk function it finds.
//!
//! Configuration space is reached through the bridge's ECAM window (riscv64: the device
//! tree's `pci-host-ecam-generic` node; x86_64: ACPI MCFG), or through the architecture's
//! legacy configuration ports when no window is known (x86_64 `0xcf8`/`0xcfc`). When no
//! firmware assigned the BARs (riscv64 `virt`: OpenSBI leaves PCI alone), the kernel places
//! each memory BAR of a virtio function in the bridge's 32-bit memory window itself.
//!
//! # Limitations
//!
//! - BARs are assigned only where the bus address of the window equals its CPU address
//!   (as on QEMU `virt`): `virtio-drivers` maps BARs by the address it reads from them.
//! - Only the buses the host bridge decodes are scanned, bus by bus; bridges to other buses
//!   are not followed, which is all QEMU's machines need.

use alloc::vec::Vec;

use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, MemoryBarType, PciRoot,
};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

use super::dma::FrameDma;
use crate::arch;
use crate::boot::{Devices, PciWindow};

/// The transports of every virtio-blk function on every host bridge in `devices`.
pub fn virtio_block_transports(devices: &Devices) -> Vec<PciTransport> {
    let mut transports = Vec::new();
    for host in &devices.pci_hosts {
        let Some(access) = ecam::open(host) else {
            defmt::warn!("PCI {}: ECAM window outside the direct map", host);
            continue;
        };
        defmt::debug!("PCI: scanning host bridge, {}", host);
        let mut root = PciRoot::new(access);
        scan(
            &mut root,
            host.bus_start..=host.bus_end,
            host.bar_window,
            &mut transports,
        );
    }

    if devices.pci_hosts.is_empty()
        && devices.pci_ports
        && let Some(access) = arch::legacy_pci_config()
    {
        defmt::debug!("PCI: no ECAM window, scanning bus 0 through the configuration ports");
        let mut root = PciRoot::new(access);
        scan(&mut root, 0..=0, None, &mut transports);
    }
    transports
}

/// Opens a transport on every virtio-blk function of `buses`.
fn scan<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    buses: core::ops::RangeInclusive<u8>,
    bar_window: Option<PciWindow>,
    transports: &mut Vec<PciTransport>,
) {
    let mut bar_allocator = bar_window.map(BarAllocator::new);

    for bus in buses {
        let functions: Vec<_> = root.enumerate_bus(bus).collect();
        for (function, info) in functions {
            if virtio_device_type(&info) != Some(DeviceType::Block) {
                continue;
            }
            if let Some(allocator) = bar_allocator.as_mut()
                && let Err(problem) = allocator.assign(root, function)
            {
                defmt::warn!("PCI {}: cannot assign BARs: {=str}", Bdf(function), problem);
                continue;
            }
            let (_, command) = root.get_status_command(function);
            root.set_command(
                function,
                command | Command::MEMORY_SPACE | Command::BUS_MASTER,
            );

            match PciTransport::new::<FrameDma, C>(root, function) {
                Ok(transport) => {
                    defmt::debug!("PCI {}: virtio-blk function", Bdf(function));
                    transports.push(transport);
                }
                Err(error) => defmt::warn!(
                    "PCI {}: cannot open the virtio transport: {}",
                    Bdf(function),
                    defmt::Display2Format(&error)
                ),
            }
        }
    }
}

/// Hands out naturally aligned ranges of a PCI memory window to BARs.
struct BarAllocator {
    window: PciWindow,
    next: u64,
}

impl BarAllocator {
    fn new(window: PciWindow) -> Self {
        Self {
            window,
            next: window.pci_start,
        }
    }

    /// Places every memory BAR of `function` in the window.
    fn assign<C: ConfigurationAccess>(
        &mut self,
        root: &mut PciRoot<C>,
        function: DeviceFunction,
    ) -> Result<(), &'static str> {
        if self.window.pci_start != self.window.cpu_start {
            return Err("the window's bus and CPU addresses differ");
        }
        let bars = root
            .bars(function)
            .map_err(|_| "a BAR has an invalid type")?;

        for (index, bar) in bars.iter().enumerate() {
            let Some(BarInfo::Memory {
                address_type, size, ..
            }) = bar
            else {
                continue;
            };
            if *size == 0 {
                continue;
            }
            let start = self
                .next
                .checked_next_multiple_of(*size)
                .ok_or("the window is full")?;
            let end = start.checked_add(*size).ok_or("the window is full")?;
            if end > self.window.pci_start + self.window.size {
                return Err("the window is full");
            }
            let index = index as u8;
            match address_type {
                MemoryBarType::Width32 if end <= 1 << 32 => {
                    root.set_bar_32(function, index, start as u32)
                }
                MemoryBarType::Width64 => root.set_bar_64(function, index, start),
                _ => return Err("a 32-bit BAR does not fit below 4 GiB"),
            }
            defmt::debug!(
                "PCI {}: BAR {=u8} at {=u64:#x}..{=u64:#x}",
                Bdf(function),
                index,
                start,
                end
            );
            self.next = end;
        }
        Ok(())
    }
}

/// A bus:device.function address in logs.
struct Bdf(DeviceFunction);

impl defmt::Format for Bdf {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "{=u8:02x}:{=u8:02x}.{=u8}",
            self.0.bus,
            self.0.device,
            self.0.function
        )
    }
}

mod ecam {
    //! The unsafe step of opening an ECAM window.

    use virtio_drivers::transport::pci::bus::{Cam, MmioCam};

    use crate::arch;
    use crate::boot::PciHost;

    /// Bytes of ECAM space for all 256 buses, what `MmioCam` addresses.
    const ECAM_SIZE: u64 = 256 << 20;

    /// Configuration access through the host's ECAM window, if it lies in the direct map.
    pub(super) fn open(host: &PciHost) -> Option<MmioCam<'static>> {
        // `MmioCam` addresses bus `b` at `b << 20` from its base: the base is bus 0's.
        let base = host
            .ecam
            .start
            .checked_sub(u64::from(host.bus_start) << 20)?;
        let virtual_base = arch::phys_to_virt(base);
        arch::virt_to_phys(virtual_base, ECAM_SIZE as usize)?;
        // SAFETY: the window is device memory the firmware described, mapped by the direct map
        // (checked above) for the life of the kernel, and nothing else in the kernel touches
        // it: each host bridge is opened once, by `virtio_block_transports`. Only the buses
        // the window decodes are accessed (`scan` is given the bridge's bus range).
        Some(unsafe { MmioCam::new(virtual_base as *mut u8, Cam::Ecam) })
    }
}
