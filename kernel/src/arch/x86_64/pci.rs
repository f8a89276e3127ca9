//! PCI configuration space through the legacy ports `0xcf8` (address) and `0xcfc` (data),
//! the fallback when ACPI names no ECAM window (configuration mechanism #1 of the PCI Local
//! Bus specification).
//!
//! # Limitations
//!
//! - Reaches only the first 256 bytes of each function's configuration space (PCIe extended
//!   capabilities need ECAM); virtio's capabilities live in the first 256 bytes.
//! - Only one CPU runs, so the address/data port pair needs no lock.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use x86_64::instructions::port::Port;

/// The configuration address port.
const CONFIG_ADDRESS_PORT: u16 = 0xcf8;

/// The configuration data port.
const CONFIG_DATA_PORT: u16 = 0xcfc;

/// Configuration access through ports `0xcf8`/`0xcfc`.
pub struct LegacyPciConfig {
    address: Port<u32>,
    data: Port<u32>,
}

/// Port access to PCI configuration space; every PC has it.
pub fn legacy_pci_config() -> Option<LegacyPciConfig> {
    Some(LegacyPciConfig {
        address: Port::new(CONFIG_ADDRESS_PORT),
        data: Port::new(CONFIG_DATA_PORT),
    })
}

/// The value for the address port: enable bit, bus, device, function, dword-aligned offset.
fn config_address(device_function: DeviceFunction, register_offset: u8) -> u32 {
    (1 << 31)
        | (u32::from(device_function.bus) << 16)
        | (u32::from(device_function.device & 0x1f) << 11)
        | (u32::from(device_function.function & 0x7) << 8)
        | u32::from(register_offset & 0xfc)
}

impl ConfigurationAccess for LegacyPciConfig {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        let mut address = self.address.clone();
        let mut data = self.data.clone();
        ports::read(
            &mut address,
            &mut data,
            config_address(device_function, register_offset),
        )
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, value: u32) {
        let address = config_address(device_function, register_offset);
        ports::write(&mut self.address, &mut self.data, address, value);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Self {
            address: self.address.clone(),
            data: self.data.clone(),
        }
    }
}

mod ports {
    //! The port accesses themselves.

    use x86_64::instructions::port::Port;

    /// Selects `config_address` and reads the dword there.
    pub(super) fn read(address: &mut Port<u32>, data: &mut Port<u32>, config_address: u32) -> u32 {
        // SAFETY: 0xcf8/0xcfc are the PC's PCI configuration ports; selecting a register and
        // reading it has no effect on memory safety. One CPU runs, with the pair used back
        // to back, so no other access can come between the two.
        unsafe {
            address.write(config_address);
            data.read()
        }
    }

    /// Selects `config_address` and writes `value` there.
    pub(super) fn write(
        address: &mut Port<u32>,
        data: &mut Port<u32>,
        config_address: u32,
        value: u32,
    ) {
        // SAFETY: as in `read`; the PCI code writes only BARs and command registers of the
        // virtio functions it drives.
        unsafe {
            address.write(config_address);
            data.write(value);
        }
    }
}
