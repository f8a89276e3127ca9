//! From the boot assembly to [`crate::kernel_main`]: traps, the end of the identity map, the
//! device tree, the console, the exit device and the [`BootInfo`].
//!
//! A device tree the kernel cannot use stops the boot with an error in the log (through the SBI
//! console if no UART was found) and [`ExitCode::BootFailed`]: without memory, a clock or the
//! reservations, the kernel cannot run safely.

use heapless::Vec;

use super::devicetree::{
    BootPlacement, ConsoleSource, DeviceTree, DeviceTreeError, MemoryMap, ReservationSource,
};
use super::{console, paging, power, trap};
use crate::ExitCode;
use crate::boot::{BootInfo, ConsoleInfo, FirmwareTables, MAX_REGIONS, PhysRange};

/// Largest device tree accepted (Linux's limit for a blob handed to it is 2 MiB; U-Boot's
/// fix-ups never grow one past a few hundred KiB).
const MAX_DEVICE_TREE_SIZE: u64 = 2 << 20;

/// Why the kernel cannot boot from what the firmware gave it.
#[derive(Clone, Copy, Debug, defmt::Format, thiserror::Error)]
enum BootError<'a> {
    /// The device tree address is 0, misaligned, outside the direct map, or unreadable.
    #[error("no readable device tree at {address:#x} (a1 from the firmware)")]
    BlobAddress { address: u64 },
    /// The device tree claims a size beyond [`MAX_DEVICE_TREE_SIZE`].
    #[error("the device tree claims to be {size} bytes, more than the 2 MiB accepted")]
    BlobTooLarge { size: u64 },
    /// The device tree is malformed or lacks something the kernel needs.
    #[error("device tree: {0}")]
    DeviceTree(DeviceTreeError<'a>),
}

// By hand: thiserror's `#[from]` would make the borrowed error a `source`, which must be
// `'static`.
impl<'a> From<DeviceTreeError<'a>> for BootError<'a> {
    fn from(error: DeviceTreeError<'a>) -> Self {
        BootError::DeviceTree(error)
    }
}

/// Called by the boot assembly on the boot stack, at the kernel's linked address, with the MMU
/// on and interrupts off.
pub(super) extern "C" fn start(hart_id: usize, device_tree: usize, load_address: usize) -> ! {
    trap::install();
    paging::remove_identity_map(load_address as u64);
    paging::record_load_address(load_address as u64);

    let boot_info = match discover(hart_id as u64, device_tree as u64, load_address as u64) {
        Ok(boot_info) => boot_info,
        Err(error) => {
            defmt::error!("cannot boot: {}", defmt::Display2Format(&error));
            power::exit(ExitCode::BootFailed)
        }
    };
    crate::kernel_main(&boot_info)
}

/// Reads the device tree and sets up the console, the clock and the exit device.
fn discover(
    hart_id: u64,
    device_tree_address: u64,
    load_address: u64,
) -> Result<BootInfo, BootError<'static>> {
    let blob = device_tree_blob(device_tree_address)?;
    let tree = DeviceTree::new(blob)?;

    let timer_frequency_hz = tree.timebase_frequency(hart_id)?;
    crate::time::set_counter_frequency(timer_frequency_hz);
    defmt::debug!("timebase: {=u64} Hz", timer_frequency_hz);

    let console = start_console(&tree);
    start_exit_device(&tree);

    let memory = usable_memory(tree.memory()?);
    let command_line = tree.command_line()?;
    let initrd = tree.initrd()?;
    let placement = BootPlacement {
        kernel: kernel_image(load_address),
        blob_address: device_tree_address,
    };
    let found = tree.reservations(&memory, placement, initrd)?;

    let (devices, dropped) = tree.devices()?;
    if dropped > 0 {
        defmt::warn!(
            "device tree: {=usize} device nodes past the kernel's limits were left out",
            dropped
        );
    }
    for window in &devices.virtio_mmio {
        defmt::debug!("device tree: virtio-mmio at {}", window);
    }
    for host in &devices.pci_hosts {
        defmt::debug!("device tree: PCI host bridge, {}", host);
    }

    let mut reserved = Vec::new();
    for found in &found {
        log_reservation_source(found.reservation.range, found.source);
        // `found` has at most MAX_REGIONS entries, the capacity of `reserved`.
        let _ = reserved.push(found.reservation);
    }

    Ok(BootInfo {
        boot_cpu_id: hart_id,
        memory,
        reserved,
        command_line,
        timer_frequency_hz,
        initrd,
        firmware_tables: FirmwareTables::DeviceTree(device_tree_address),
        console,
        kernel_load_address: load_address,
        devices,
    })
}

/// The device tree blob at physical `address`, through the direct map.
///
/// The blob is in RAM that [`DeviceTree::reservations`] reserves, so it stays valid for the
/// life of the kernel, which lets the command line borrow from it.
fn device_tree_blob(address: u64) -> Result<&'static [u8], BootError<'static>> {
    let bad_address = BootError::BlobAddress { address };
    // The specification requires 8-byte alignment; the header must be in the direct map.
    let header_end = address.checked_add(8).ok_or(bad_address)?;
    if address == 0 || !address.is_multiple_of(8) || !paging::in_direct_map(address, header_end) {
        return Err(bad_address);
    }

    // Read the magic and `totalsize` with a probe, so an address where nothing answers is an
    // error rather than an unexpected trap.
    let first_word = probe_physical(address).ok_or(bad_address)?;
    let bytes = first_word.to_le_bytes();
    let size = u64::from(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
    if size > MAX_DEVICE_TREE_SIZE {
        return Err(BootError::BlobTooLarge { size });
    }
    let end = address + size.max(8);
    if !paging::in_direct_map(address, end) {
        return Err(bad_address);
    }
    // The last word must answer too, so a `totalsize` running past RAM is an error here
    // rather than a fault in the middle of parsing.
    probe_physical((end - 8) & !7).ok_or(bad_address)?;

    // SAFETY: `address..end` is inside the direct map (checked above) and memory answers at
    // both of its ends: it is the RAM bank where the firmware put the blob (a bank is one
    // contiguous range). The blob is reserved from the frame allocator
    // (`DeviceTree::reservations`) and nothing in the kernel writes to it. `DeviceTree::new`
    // checks the contents.
    Ok(unsafe { raw::physical_bytes(address, (end - address) as usize) })
}

/// Reads the 8 bytes at physical `address` through the direct map, logging a fault.
fn probe_physical(address: u64) -> Option<u64> {
    trap::probe_read(paging::phys_to_virt(address))
        .map_err(|fault| {
            defmt::error!(
                "reading the device tree at {=u64:#x} faulted: {}",
                address,
                fault
            )
        })
        .ok()
}

/// Starts the UART the device tree names, or stays on the SBI console.
fn start_console(tree: &DeviceTree<'_>) -> ConsoleInfo {
    let uart = match tree.console_uart() {
        Ok(uart) => uart,
        Err(error) => {
            defmt::warn!(
                "no usable console UART ({}); logging through the SBI console",
                defmt::Display2Format(&error)
            );
            return ConsoleInfo::Firmware;
        }
    };
    match uart.source {
        ConsoleSource::StdoutPath(path) => {
            defmt::debug!(
                "console: {=str} is /chosen/stdout-path {=str:?}",
                uart.name,
                path
            )
        }
        ConsoleSource::FirstCompatible { stdout_path } => defmt::debug!(
            "console: {=str} is the first enabled UART (stdout-path {=?} names none)",
            uart.name,
            stdout_path
        ),
    }

    if let Err(error) = console::install_uart(uart.base, uart.layout) {
        defmt::warn!(
            "cannot use UART {=str}: {}; logging through the SBI console",
            uart.name,
            error
        );
        return ConsoleInfo::Firmware;
    }
    defmt::debug!(
        "console: UART {=str} ({=str}) at {=u64:#x}, reg-shift {=u32}, reg-io-width {=u32}",
        uart.name,
        uart.compatible,
        uart.base,
        uart.layout.reg_shift,
        uart.layout.reg_io_width
    );
    ConsoleInfo::Mmio16550 {
        base: uart.base,
        reg_shift: uart.layout.reg_shift,
        reg_io_width: uart.layout.reg_io_width,
    }
}

/// Sets up the SiFive test finisher for `exit`, if the tree has one.
fn start_exit_device(tree: &DeviceTree<'_>) {
    match tree.exit_device() {
        Ok(Some(device)) => match power::install_exit_device(device.base) {
            Ok(()) => defmt::debug!("exit device: {=str} at {=u64:#x}", device.name, device.base),
            Err(error) => defmt::warn!(
                "cannot use exit device {=str}: {}; exit through SBI system reset",
                device.name,
                error
            ),
        },
        Ok(None) => defmt::debug!("exit device: none; exit through SBI system reset"),
        Err(error) => {
            defmt::warn!(
                "unusable exit device ({}); exit through SBI system reset",
                defmt::Display2Format(&error)
            )
        }
    }
}

/// The RAM the kernel can reach: regions clipped to the direct map.
fn usable_memory(map: MemoryMap) -> Vec<PhysRange, MAX_REGIONS> {
    if map.dropped > 0 {
        defmt::warn!(
            "memory: {=usize} regions beyond the first {=usize} ignored",
            map.dropped,
            MAX_REGIONS
        );
    }

    let mut usable = Vec::new();
    for region in map.regions {
        let clipped = PhysRange {
            start: region.start,
            end: region.end.min(paging::DIRECT_MAP_SIZE),
        };
        if clipped != region {
            defmt::warn!(
                "memory: {=u64:#x}..{=u64:#x} ends past the 64 GiB direct map; using ..{=u64:#x}",
                region.start,
                region.end,
                clipped.end.max(clipped.start)
            );
        }
        if !clipped.is_empty() {
            // At most as many regions as the map had, which fit the same capacity.
            let _ = usable.push(clipped);
        }
    }
    usable
}

/// The kernel image's physical range, `.bss` included, from the linker's symbols.
fn kernel_image(load_address: u64) -> PhysRange {
    let (start, end) = paging::kernel_link_range();
    PhysRange {
        start: load_address,
        end: load_address + (end - start) as u64,
    }
}

/// Logs where a reservation came from.
fn log_reservation_source(range: PhysRange, source: ReservationSource<'_>) {
    let (start, end) = (range.start, range.end);
    match source {
        ReservationSource::KernelImage => {
            defmt::debug!("reserve {=u64:#x}..{=u64:#x}: kernel image", start, end)
        }
        ReservationSource::DeviceTreeBlob => {
            defmt::debug!("reserve {=u64:#x}..{=u64:#x}: device tree blob", start, end)
        }
        ReservationSource::ReservedMemoryNode(node) => defmt::debug!(
            "reserve {=u64:#x}..{=u64:#x}: /reserved-memory/{=str}",
            start,
            end,
            node
        ),
        ReservationSource::MemReserveEntry => {
            defmt::debug!(
                "reserve {=u64:#x}..{=u64:#x}: /memreserve/ entry",
                start,
                end
            )
        }
        ReservationSource::Initrd => {
            defmt::debug!(
                "reserve {=u64:#x}..{=u64:#x}: initrd from /chosen",
                start,
                end
            )
        }
        ReservationSource::FirmwareBelowKernel => defmt::debug!(
            "reserve {=u64:#x}..{=u64:#x}: firmware (RAM below the kernel)",
            start,
            end
        ),
    }
}

mod raw {
    //! The one unsafe step of reading the firmware's data: seeing it as a byte slice.

    use crate::arch::riscv64::paging;

    /// The `length` bytes of physical memory at `address`, through the direct map.
    ///
    /// # Safety
    ///
    /// `address..address + length` must be RAM inside the direct map that nothing writes for
    /// the rest of the kernel's life.
    pub(super) unsafe fn physical_bytes(address: u64, length: usize) -> &'static [u8] {
        let start = paging::phys_to_virt(address) as *const u8;
        // SAFETY: the caller guarantees the range is mapped RAM that stays unchanged forever,
        // so it is valid for reads as `'static` shared bytes (u8 has no invalid values and no
        // alignment).
        unsafe { core::slice::from_raw_parts(start, length) }
    }
}
