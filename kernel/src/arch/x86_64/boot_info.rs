//! Turns what PVH `start_info` says into the kernel's [`BootInfo`]: RAM from the memory map,
//! and a reservation for everything the kernel must not hand out.
//!
//! RAM is every type-1 (e820 "RAM") entry, sorted, with overlapping or touching entries
//! merged, and cut at the end of the direct map. Reserved are:
//!
//! | range | kind | why |
//! | --- | --- | --- |
//! | `0..1 MiB` | `Firmware` | real-mode IVT, BIOS data area, EBDA, option ROMs, BIOS |
//! | the kernel image, `.bss` included | `KernelImage` | from the linker script's symbols |
//! | `start_info`, the command line, the module list, the memory map | `BootData` | the parser's `'static` views of them stay valid (the command line is kept) |
//! | the first module | `Initrd` | the initrd |
//! | the other modules | `BootData` | kept for whoever wants them |
//! | non-RAM entries that overlap RAM entries | `Firmware` | the firmware's word wins over RAM |

use heapless::Vec;

use super::pvh::{MAX_MEMORY_MAP_ENTRIES, MemoryType, StartInfo};
use crate::boot::{
    BootInfo, ConsoleInfo, Devices, FirmwareTables, MAX_REGIONS, PhysRange, Reservation,
    ReservedKind,
};

/// The first MiB of physical memory, where a PC keeps its real-mode firmware data.
pub const FIRST_MIB: PhysRange = PhysRange {
    start: 0,
    end: 0x10_0000,
};

/// Why no usable [`BootInfo`] can be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum BootInfoError {
    /// The memory map lists no RAM the kernel can reach.
    #[error("the memory map lists no RAM below the end of the direct map")]
    NoRam,
    /// More than [`MAX_REGIONS`] ranges must be reserved: dropping one could hand out
    /// memory in use.
    #[error("more than {MAX_REGIONS} ranges must be reserved")]
    TooManyReservations,
}

/// What the kernel knows about itself and the machine besides `start_info`.
#[derive(Clone, Copy, Debug)]
pub struct MachineFacts {
    /// The kernel image's physical range.
    pub kernel_image: PhysRange,
    /// The direct map covers physical `0..direct_map_end`.
    pub direct_map_end: u64,
    /// TSC frequency (0 if unknown).
    pub timer_frequency_hz: u64,
    /// The boot CPU's APIC id.
    pub boot_cpu_id: u64,
    /// The console's I/O port.
    pub console_port: u16,
}

/// The end of the highest RAM entry in the memory map (0 if there is none).
pub fn ram_end(start_info: &StartInfo<'_>) -> u64 {
    start_info
        .memory_map
        .iter()
        .filter(|entry| entry.kind == MemoryType::Ram)
        .map(|entry| entry.range.end)
        .max()
        .unwrap_or(0)
}

/// Builds the [`BootInfo`] for `start_info`.
pub fn build(
    start_info: &StartInfo<'static>,
    facts: &MachineFacts,
) -> Result<BootInfo, BootInfoError> {
    let ram = merged_ram(start_info);
    let memory = usable_memory(&ram, facts.direct_map_end);
    if memory.is_empty() {
        return Err(BootInfoError::NoRam);
    }
    let reserved = reservations(start_info, &ram, facts.kernel_image)?;

    Ok(BootInfo {
        boot_cpu_id: facts.boot_cpu_id,
        memory,
        reserved,
        command_line: start_info.command_line.map_or("", |line| line.text),
        timer_frequency_hz: facts.timer_frequency_hz,
        initrd: start_info.modules.first().copied(),
        firmware_tables: FirmwareTables::Acpi {
            rsdp: start_info.rsdp,
        },
        console: ConsoleInfo::Port16550 {
            port: facts.console_port,
        },
        kernel_load_address: facts.kernel_image.start,
        devices: Devices {
            pci_ports: true,
            ..Devices::default()
        },
    })
}

/// Every RAM entry, sorted by address, overlapping or touching entries merged.
fn merged_ram(start_info: &StartInfo<'_>) -> Vec<PhysRange, MAX_MEMORY_MAP_ENTRIES> {
    let mut ram: Vec<PhysRange, MAX_MEMORY_MAP_ENTRIES> = start_info
        .memory_map
        .iter()
        .filter(|entry| entry.kind == MemoryType::Ram && !entry.range.is_empty())
        .map(|entry| entry.range)
        .collect();
    ram.sort_unstable_by_key(|range| range.start);

    let mut merged: Vec<PhysRange, MAX_MEMORY_MAP_ENTRIES> = Vec::new();
    for range in ram {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            // Cannot overflow: `merged` has no more entries than `ram`.
            _ => merged.push(range).unwrap_or(()),
        }
    }
    merged
}

/// The RAM the kernel can use: below `direct_map_end`, at most [`MAX_REGIONS`] ranges.
fn usable_memory(ram: &[PhysRange], direct_map_end: u64) -> Vec<PhysRange, MAX_REGIONS> {
    let mut memory = Vec::new();
    for range in ram {
        let usable = PhysRange {
            start: range.start,
            end: range.end.min(direct_map_end),
        };
        if usable.end < range.end {
            defmt::warn!(
                "RAM {=u64:#x}..{=u64:#x} is beyond the direct map (ends at {=u64:#x}): not used",
                usable.end.max(range.start),
                range.end,
                direct_map_end
            );
        }
        if usable.is_empty() {
            continue;
        }
        if memory.push(usable).is_err() {
            defmt::warn!(
                "more than {=usize} RAM regions: {=u64:#x}..{=u64:#x} not used",
                MAX_REGIONS,
                usable.start,
                usable.end
            );
        }
    }
    memory
}

/// Everything the frame allocator must not hand out (see the module table).
fn reservations(
    start_info: &StartInfo<'_>,
    ram: &[PhysRange],
    kernel_image: PhysRange,
) -> Result<Vec<Reservation, MAX_REGIONS>, BootInfoError> {
    let mut reserved = Vec::new();
    let mut reserve = |range: PhysRange, kind: ReservedKind| {
        if range.is_empty() {
            return Ok(());
        }
        reserved
            .push(Reservation { range, kind })
            .map_err(|_| BootInfoError::TooManyReservations)
    };

    reserve(FIRST_MIB, ReservedKind::Firmware)?;
    reserve(kernel_image, ReservedKind::KernelImage)?;
    reserve(start_info.range, ReservedKind::BootData)?;
    if let Some(command_line) = start_info.command_line {
        reserve(command_line.range, ReservedKind::BootData)?;
    }
    reserve(start_info.memory_map_table, ReservedKind::BootData)?;
    if let Some(module_list) = start_info.module_list {
        reserve(module_list, ReservedKind::BootData)?;
    }
    for (index, module) in start_info.modules.iter().enumerate() {
        let kind = if index == 0 {
            ReservedKind::Initrd
        } else {
            ReservedKind::BootData
        };
        reserve(*module, kind)?;
    }

    let not_ram = start_info
        .memory_map
        .iter()
        .filter(|entry| entry.kind != MemoryType::Ram);
    for entry in not_ram {
        for ram_range in ram
            .iter()
            .filter(|ram_range| ram_range.overlaps(&entry.range))
        {
            let overlap = PhysRange {
                start: ram_range.start.max(entry.range.start),
                end: ram_range.end.min(entry.range.end),
            };
            reserve(overlap, ReservedKind::Firmware)?;
        }
    }
    Ok(reserved)
}

/// Logs what `start_info` says (debug level).
pub fn log_start_info(start_info: &StartInfo<'_>) {
    defmt::debug!(
        "PVH start_info at {=u64:#x}: version {=u32}, flags {=u32:#x}, {=usize} memory map entries, {=usize} modules, rsdp {=u64:#x}",
        start_info.range.start,
        start_info.version,
        start_info.flags,
        start_info.memory_map.len(),
        start_info.modules.len(),
        start_info.rsdp
    );
    for entry in &start_info.memory_map {
        defmt::debug!(
            "PVH memory map: {=u64:#x}..{=u64:#x} {}",
            entry.range.start,
            entry.range.end,
            entry.kind
        );
    }
    for (index, module) in start_info.modules.iter().enumerate() {
        defmt::debug!(
            "PVH module {=usize}: {=u64:#x}..{=u64:#x}",
            index,
            module.start,
            module.end
        );
    }
    if let Some(command_line) = start_info.command_line {
        defmt::debug!(
            "PVH command line at {=u64:#x}: {=str:?}",
            command_line.range.start,
            command_line.text
        );
    }
}

pub mod tests {
    //! In-kernel tests of the translation.

    use super::*;
    use crate::arch::x86_64::pvh::{CommandLine, MemoryMapEntry};
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq};

    const fn range(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    fn entry(start: u64, end: u64, kind: MemoryType) -> MemoryMapEntry {
        MemoryMapEntry {
            range: range(start, end),
            kind,
        }
    }

    /// A QEMU-like `start_info` (RAM out of order, split and overlapping a reserved entry).
    fn start_info() -> StartInfo<'static> {
        let mut memory_map = Vec::new();
        for map_entry in [
            entry(0x10_0000, 0x7fe_0000, MemoryType::Ram),
            entry(0, 0x9_fc00, MemoryType::Ram),
            entry(0x9_fc00, 0xa_0000, MemoryType::Reserved),
            entry(0x7f0_0000, 0x800_0000, MemoryType::AcpiReclaimable),
            entry(0x1_0000_0000, 0x1_4000_0000, MemoryType::Ram),
            entry(0x1_4000_0000, 0x1_8000_0000, MemoryType::Ram),
        ] {
            memory_map.push(map_entry).unwrap_or(());
        }
        let mut modules = Vec::new();
        modules.push(range(0x700_0000, 0x710_0000)).unwrap_or(());
        StartInfo {
            range: range(0x6000, 0x6038),
            version: 1,
            flags: 0,
            command_line: Some(CommandLine {
                text: "test",
                range: range(0x2_0000, 0x2_0005),
            }),
            rsdp: 0xf_5a40,
            module_list: Some(range(0x6100, 0x6120)),
            modules,
            memory_map_table: range(0x6200, 0x6290),
            memory_map,
        }
    }

    fn facts(direct_map_end: u64) -> MachineFacts {
        MachineFacts {
            kernel_image: range(0x10_0000, 0x20_0000),
            direct_map_end,
            timer_frequency_hz: 1_000_000_000,
            boot_cpu_id: 0,
            console_port: 0x3f8,
        }
    }

    pub fn sorts_merges_and_clips_ram() -> TestResult {
        let info = build(&start_info(), &facts(0x1_4000_0000 + 0x1000_0000));
        ktest_assert!(info.is_ok(), "build failed", info.as_ref().err());
        let Ok(info) = info else { return Ok(()) };
        ktest_assert_eq!(
            info.memory.as_slice(),
            &[
                range(0, 0x9_fc00),
                range(0x10_0000, 0x7fe_0000),
                range(0x1_0000_0000, 0x1_5000_0000),
            ][..]
        );
        ktest_assert_eq!(info.initrd, Some(range(0x700_0000, 0x710_0000)));
        ktest_assert_eq!(info.command_line, "test");
        ktest_assert_eq!(info.kernel_load_address, 0x10_0000);
        Ok(())
    }

    pub fn reserves_firmware_kernel_and_boot_data() -> TestResult {
        let info = build(&start_info(), &facts(64 << 30));
        ktest_assert!(info.is_ok(), "build failed", info.as_ref().err());
        let Ok(info) = info else { return Ok(()) };
        let expected = [
            (FIRST_MIB, ReservedKind::Firmware),
            (range(0x10_0000, 0x20_0000), ReservedKind::KernelImage),
            (range(0x6000, 0x6038), ReservedKind::BootData),
            (range(0x2_0000, 0x2_0005), ReservedKind::BootData),
            (range(0x6100, 0x6120), ReservedKind::BootData),
            (range(0x6200, 0x6290), ReservedKind::BootData),
            (range(0x700_0000, 0x710_0000), ReservedKind::Initrd),
            // The ACPI entry overlaps the end of the second RAM entry.
            (range(0x7f0_0000, 0x7fe_0000), ReservedKind::Firmware),
        ];
        ktest_assert_eq!(info.reserved.len(), expected.len());
        for (range, kind) in expected {
            ktest_assert!(
                info.reserved.contains(&Reservation { range, kind }),
                "reservation missing",
                range
            );
        }
        Ok(())
    }

    pub fn refuses_a_map_without_ram() -> TestResult {
        let mut info = start_info();
        info.memory_map
            .retain(|entry| entry.kind != MemoryType::Ram);
        ktest_assert_eq!(ram_end(&info), 0);
        ktest_assert_eq!(
            build(&info, &facts(64 << 30)).err(),
            Some(BootInfoError::NoRam)
        );
        Ok(())
    }
}
