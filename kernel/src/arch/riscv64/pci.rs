//! PCI configuration access particular to riscv64: none besides ECAM.
//!
//! RISC-V has no legacy configuration ports; every host bridge the kernel drives is an ECAM
//! window from the device tree. [`LegacyPciConfig`] has no values, so the PCI code's port
//! fallback compiles on riscv64 and never runs.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// Legacy port access to PCI configuration space, which riscv64 does not have.
pub enum LegacyPciConfig {}

impl ConfigurationAccess for LegacyPciConfig {
    fn read_word(&self, _device_function: DeviceFunction, _register_offset: u8) -> u32 {
        match *self {}
    }

    fn write_word(&mut self, _device_function: DeviceFunction, _register_offset: u8, _data: u32) {
        match *self {}
    }

    unsafe fn unsafe_clone(&self) -> Self {
        match *self {}
    }
}

/// Always `None`: riscv64 has no legacy configuration ports.
pub fn legacy_pci_config() -> Option<LegacyPciConfig> {
    None
}
