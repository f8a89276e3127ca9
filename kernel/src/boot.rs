//! What the firmware told the kernel about the machine, in one architecture-neutral shape.
//!
//! The architecture code fills a [`BootInfo`] from the device tree (riscv64) or PVH
//! `start_info` (x86_64) and hands it to [`crate::kernel_main`], which logs it and sets up
//! memory from it. Nothing here is a constant about a board: every address comes from the
//! firmware.

use heapless::Vec;

/// How many RAM regions and reserved regions a [`BootInfo`] holds. Firmware that reports more
/// gets the extra ones dropped with a warning (RAM) or the boot refused (reservations).
pub const MAX_REGIONS: usize = 32;

/// A range of physical addresses, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// The range of `size` bytes at `start`, or `None` if it would wrap past the top of the
    /// address space.
    pub fn from_start_size(start: u64, size: u64) -> Option<Self> {
        Some(Self {
            start,
            end: start.checked_add(size)?,
        })
    }

    /// Number of bytes in the range.
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl defmt::Format for PhysRange {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u64:#x}..{=u64:#x}", self.start, self.end)
    }
}

/// Why a range of RAM must never be handed out by the frame allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ReservedKind {
    /// Firmware code or data (OpenSBI, BIOS areas, `/reserved-memory`).
    Firmware,
    /// The kernel image, from its first to its last byte including `.bss`.
    KernelImage,
    /// The flattened device tree blob.
    DeviceTree,
    /// The initial RAM disk (initrd) the boot loader placed in memory.
    Initrd,
    /// Boot data the kernel still reads: PVH `start_info`, the command line, module lists.
    BootData,
}

/// A reserved range and why it is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct Reservation {
    /// The reserved bytes.
    pub range: PhysRange,
    /// Why.
    pub kind: ReservedKind,
}

/// Where the machine's firmware tables are, for drivers that need them later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareTables {
    /// A flattened device tree at this physical address.
    DeviceTree(u64),
    /// ACPI, through the RSDP at this physical address (0 if the firmware gave none).
    Acpi { rsdp: u64 },
}

/// The console the kernel logs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleInfo {
    /// A memory-mapped 16550 found in the device tree.
    Mmio16550 {
        /// Physical address of the register window.
        base: u64,
        /// `reg-shift` from the device tree.
        reg_shift: u32,
        /// `reg-io-width` from the device tree.
        reg_io_width: u32,
    },
    /// A 16550 at an x86 I/O port base (COM1 is 0x3f8).
    Port16550 {
        /// The I/O port of register 0.
        port: u16,
    },
    /// The firmware's console (riscv64: the SBI legacy console), used when the firmware
    /// describes no UART the kernel can drive.
    Firmware,
}

impl defmt::Format for ConsoleInfo {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            Self::Mmio16550 {
                base,
                reg_shift,
                reg_io_width,
            } => defmt::write!(
                f,
                "16550 at {=u64:#x} (reg-shift {=u32}, reg-io-width {=u32})",
                base,
                reg_shift,
                reg_io_width
            ),
            Self::Port16550 { port } => defmt::write!(f, "16550 at I/O port {=u16:#x}", port),
            Self::Firmware => defmt::write!(f, "the firmware's console"),
        }
    }
}

impl defmt::Format for FirmwareTables {
    fn format(&self, f: defmt::Formatter) {
        match *self {
            Self::DeviceTree(address) => defmt::write!(f, "device tree at {=u64:#x}", address),
            Self::Acpi { rsdp } => defmt::write!(f, "ACPI, RSDP at {=u64:#x}", rsdp),
        }
    }
}

/// How many memory-mapped virtio devices a [`Devices`] holds; more are dropped with a warning.
pub const MAX_VIRTIO_MMIO: usize = 32;

/// How many PCI host bridges a [`Devices`] holds; more are dropped with a warning.
pub const MAX_PCI_HOSTS: usize = 4;

/// A PCI host bridge whose configuration space is memory-mapped (ECAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// The ECAM window: 1 MiB per bus, from bus `bus_start`.
    pub ecam: PhysRange,
    /// First bus number the window decodes.
    pub bus_start: u8,
    /// Last bus number the window decodes.
    pub bus_end: u8,
    /// Where the kernel may place memory BARs that no firmware assigned (riscv64 `virt`
    /// leaves them to the OS); `None` when the firmware assigned them (x86_64).
    pub bar_window: Option<PciWindow>,
}

/// A window of PCI memory space as the CPU sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    /// The CPU physical address of the window's first byte.
    pub cpu_start: u64,
    /// The PCI bus address of the window's first byte.
    pub pci_start: u64,
    /// Bytes in the window.
    pub size: u64,
}

/// Where the devices the drivers probe are, as the firmware described them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// Register windows of virtio-mmio devices (riscv64: every `virtio,mmio` node).
    pub virtio_mmio: Vec<PhysRange, MAX_VIRTIO_MMIO>,
    /// PCI host bridges (riscv64: `pci-host-ecam-generic` nodes; x86_64: ACPI MCFG).
    pub pci_hosts: Vec<PciHost, MAX_PCI_HOSTS>,
    /// Whether the legacy PCI configuration ports (0xcf8/0xcfc) exist, as a fallback when no
    /// ECAM window is known (x86_64 only).
    pub pci_ports: bool,
}

impl defmt::Format for PciHost {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "ECAM {} for buses {=u8}..={=u8}",
            self.ecam,
            self.bus_start,
            self.bus_end
        );
        if let Some(window) = self.bar_window {
            defmt::write!(
                f,
                ", BAR window {=u64:#x}..{=u64:#x} (bus address {=u64:#x})",
                window.cpu_start,
                window.cpu_start.saturating_add(window.size),
                window.pci_start
            );
        }
    }
}

/// Everything the architecture code learned from the firmware.
#[derive(Debug)]
pub struct BootInfo {
    /// The hart (riscv64) or local APIC (x86_64) id of the CPU that booted the kernel.
    pub boot_cpu_id: u64,
    /// Usable RAM, in ascending order, before reservations are taken out.
    pub memory: Vec<PhysRange, MAX_REGIONS>,
    /// RAM the frame allocator must never hand out.
    pub reserved: Vec<Reservation, MAX_REGIONS>,
    /// The kernel command line (empty if the boot loader gave none).
    pub command_line: &'static str,
    /// Frequency of [`crate::arch::read_counter`], in Hz.
    pub timer_frequency_hz: u64,
    /// The initial RAM disk, if the boot loader loaded one.
    pub initrd: Option<PhysRange>,
    /// Where the firmware's description of the machine is.
    pub firmware_tables: FirmwareTables,
    /// The console in use.
    pub console: ConsoleInfo,
    /// Physical address the kernel image was loaded at.
    pub kernel_load_address: u64,
    /// Devices for the drivers to probe.
    pub devices: Devices,
}
