//! A parser for the PVH boot protocol's `hvm_start_info`: what the boot loader (QEMU's
//! `pvh.bin` option ROM, Xen, Firecracker, cloud-hypervisor) tells a PVH kernel.
//!
//! The entry code gets the physical address of `start_info` in `ebx`. The structure and
//! everything it points to (the command line, the module list, the memory map) are input:
//! every count is bounded, every address range is checked for wrap-around and read only
//! through [`PhysicalMemory`], which says whether the bytes can be read at all. A bad
//! structure gives a [`PvhError`], never a panic.
//!
//! The layout (all little-endian, from Xen's `public/arch-x86/hvm/start_info.h`):
//!
//! | offset | field | since |
//! | --- | --- | --- |
//! | 0 | `magic: u32` (0x336ec578) | 0 |
//! | 4 | `version: u32` | 0 |
//! | 8 | `flags: u32` | 0 |
//! | 12 | `nr_modules: u32` | 0 |
//! | 16 | `modlist_paddr: u64` (array of 32-byte `hvm_modlist_entry`) | 0 |
//! | 24 | `cmdline_paddr: u64` (NUL-terminated) | 0 |
//! | 32 | `rsdp_paddr: u64` | 0 |
//! | 40 | `memmap_paddr: u64` (array of 24-byte `hvm_memmap_table_entry`) | 1 |
//! | 48 | `memmap_entries: u32` | 1 |
//! | 52 | `reserved: u32` | 1 |
//!
//! # Limitations
//!
//! - Version 0 has no memory map (Xen guests then ask the hypervisor for the e820 map); the
//!   kernel needs one, so version 0 is refused with [`PvhError::NoMemoryMap`].
//! - The command lines of modules are not read.

use heapless::Vec;

use crate::boot::PhysRange;

/// `hvm_start_info.magic`: "xEn3" with the top bit of each byte cleared.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Most memory map entries accepted; Linux's boot protocol has room for 128 too.
pub const MAX_MEMORY_MAP_ENTRIES: usize = 128;

/// Most modules accepted; the kernel uses the first one as its initrd.
pub const MAX_MODULES: usize = 16;

/// Longest command line accepted, without its terminating NUL.
pub const MAX_COMMAND_LINE_LEN: usize = 4096;

/// Size of `hvm_start_info` up to and including `rsdp_paddr` (version 0).
const START_INFO_V0_SIZE: usize = 40;
/// Size of `hvm_start_info` in version 1, with the memory map fields.
const START_INFO_V1_SIZE: usize = 56;
/// Size of one `hvm_modlist_entry`.
const MODULE_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
const MEMORY_MAP_ENTRY_SIZE: usize = 24;

/// Read access to physical memory, as the parser needs it.
///
/// The kernel implements it over its direct map; tests implement it over a byte array.
pub trait PhysicalMemory<'a> {
    /// The `len` bytes at physical address `start`, or `None` unless all of them can be read.
    fn read(&self, start: u64, len: usize) -> Option<&'a [u8]>;
}

/// Why `start_info` cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum PvhError {
    /// A structure lies (partly) outside the memory the kernel can read.
    #[error("the {what} at {address:#x} ({len} bytes) is outside readable memory")]
    Unreadable {
        /// Which structure.
        what: &'static str,
        /// Its physical address.
        address: u64,
        /// Its size in bytes.
        len: u64,
    },
    /// `magic` is not [`START_INFO_MAGIC`]: `ebx` does not point at a `start_info`.
    #[error("bad magic {0:#x} (expected {START_INFO_MAGIC:#x})")]
    BadMagic(u32),
    /// Version 0 has no memory map, and the kernel needs one.
    #[error("version {version} has no memory map")]
    NoMemoryMap {
        /// The version found.
        version: u32,
    },
    /// `memmap_entries` is 0 or larger than [`MAX_MEMORY_MAP_ENTRIES`].
    #[error("{0} memory map entries (expected 1 to {MAX_MEMORY_MAP_ENTRIES})")]
    BadMemoryMapCount(u32),
    /// `nr_modules` is larger than [`MAX_MODULES`].
    #[error("{0} modules (at most {MAX_MODULES} supported)")]
    TooManyModules(u32),
    /// The address of a structure the counts say exists is 0.
    #[error("the {0} is at address 0")]
    NullAddress(&'static str),
    /// `start + size` of a memory map entry or a module passes the top of the address space.
    #[error("the {what} at {start:#x} of {size:#x} bytes wraps past the top of the address space")]
    RangeWraps {
        /// What the range describes.
        what: &'static str,
        /// Its start.
        start: u64,
        /// Its size.
        size: u64,
    },
    /// No NUL within [`MAX_COMMAND_LINE_LEN`] bytes of the command line's start.
    #[error("the command line is longer than {MAX_COMMAND_LINE_LEN} bytes")]
    CommandLineTooLong,
    /// The command line is not UTF-8.
    #[error("the command line is not UTF-8")]
    CommandLineNotUtf8,
}

/// What a memory map entry describes (the e820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum MemoryType {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved by the firmware or a device (type 2).
    Reserved,
    /// ACPI tables, reusable once read (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Bad memory (type 5).
    Unusable,
    /// Any other type, kept raw.
    Other(u32),
}

impl MemoryType {
    fn from_e820(raw: u32) -> Self {
        match raw {
            1 => Self::Ram,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            other => Self::Other(other),
        }
    }
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct MemoryMapEntry {
    /// The physical addresses described.
    pub range: PhysRange,
    /// What they are.
    pub kind: MemoryType,
}

/// The command line, as text and as the bytes it occupies (with its NUL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct CommandLine<'a> {
    /// The text, without the NUL.
    pub text: &'a str,
    /// Where it lies in physical memory, NUL included.
    pub range: PhysRange,
}

/// A validated `hvm_start_info` and what it points to.
#[derive(Clone, Debug, PartialEq, Eq, defmt::Format)]
pub struct StartInfo<'a> {
    /// The bytes of the structure itself (its size depends on the version).
    pub range: PhysRange,
    /// `version`.
    pub version: u32,
    /// `flags`.
    pub flags: u32,
    /// The command line, if the boot loader gave one.
    pub command_line: Option<CommandLine<'a>>,
    /// The ACPI RSDP, or 0 if the boot loader gave none.
    pub rsdp: u64,
    /// The module list array, if there are modules.
    pub module_list: Option<PhysRange>,
    /// Each module's bytes, in the order given.
    pub modules: Vec<PhysRange, MAX_MODULES>,
    /// The memory map table itself.
    pub memory_map_table: PhysRange,
    /// The memory map, in the order given.
    pub memory_map: Vec<MemoryMapEntry, MAX_MEMORY_MAP_ENTRIES>,
}

/// Parses and validates the `hvm_start_info` at physical address `address`.
pub fn parse<'a>(
    memory: &impl PhysicalMemory<'a>,
    address: u64,
) -> Result<StartInfo<'a>, PvhError> {
    let header = read(memory, "start_info", address, START_INFO_V0_SIZE)?;
    let magic = u32_at(header, 0);
    if magic != START_INFO_MAGIC {
        return Err(PvhError::BadMagic(magic));
    }
    let version = u32_at(header, 4);
    if version < 1 {
        return Err(PvhError::NoMemoryMap { version });
    }

    // Version 1 and later start with the version 1 layout; later versions only add fields.
    let fields = read(memory, "start_info", address, START_INFO_V1_SIZE)?;
    let flags = u32_at(fields, 8);
    let module_count = u32_at(fields, 12);
    let module_list_address = u64_at(fields, 16);
    let command_line_address = u64_at(fields, 24);
    let rsdp = u64_at(fields, 32);
    let memory_map_address = u64_at(fields, 40);
    let memory_map_count = u32_at(fields, 48);

    let command_line = match command_line_address {
        0 => None,
        address => Some(parse_command_line(memory, address)?),
    };

    let (module_list, modules) = parse_modules(memory, module_list_address, module_count)?;
    let (memory_map_table, memory_map) =
        parse_memory_map(memory, memory_map_address, memory_map_count)?;

    Ok(StartInfo {
        range: range("start_info", address, START_INFO_V1_SIZE as u64)?,
        version,
        flags,
        command_line,
        rsdp,
        module_list,
        modules,
        memory_map_table,
        memory_map,
    })
}

/// Reads the NUL-terminated command line at `address`.
fn parse_command_line<'a>(
    memory: &impl PhysicalMemory<'a>,
    address: u64,
) -> Result<CommandLine<'a>, PvhError> {
    // Read byte by byte up to the limit: the command line may end right before memory that
    // cannot be read, so a read of the whole limit could fail for a valid command line.
    let mut len = 0;
    loop {
        if len > MAX_COMMAND_LINE_LEN {
            return Err(PvhError::CommandLineTooLong);
        }
        let byte_address = address
            .checked_add(len as u64)
            .ok_or(PvhError::RangeWraps {
                what: "command line",
                start: address,
                size: len as u64,
            })?;
        if read(memory, "command line", byte_address, 1)?[0] == 0 {
            break;
        }
        len += 1;
    }

    let bytes = read(memory, "command line", address, len)?;
    let text = core::str::from_utf8(bytes).map_err(|_| PvhError::CommandLineNotUtf8)?;
    Ok(CommandLine {
        text,
        range: range("command line", address, len as u64 + 1)?,
    })
}

/// Reads the module list: the list's own bytes and each module's range.
fn parse_modules<'a>(
    memory: &impl PhysicalMemory<'a>,
    list_address: u64,
    count: u32,
) -> Result<(Option<PhysRange>, Vec<PhysRange, MAX_MODULES>), PvhError> {
    let mut modules = Vec::new();
    if count == 0 {
        return Ok((None, modules));
    }
    if count as usize > MAX_MODULES {
        return Err(PvhError::TooManyModules(count));
    }
    if list_address == 0 {
        return Err(PvhError::NullAddress("module list"));
    }

    let list_len = count as usize * MODULE_ENTRY_SIZE;
    let list = read(memory, "module list", list_address, list_len)?;
    for entry in list.chunks_exact(MODULE_ENTRY_SIZE) {
        let module = range("module", u64_at(entry, 0), u64_at(entry, 8))?;
        modules
            .push(module)
            .map_err(|_| PvhError::TooManyModules(count))?;
    }
    Ok((
        Some(range("module list", list_address, list_len as u64)?),
        modules,
    ))
}

/// Reads the memory map: the table's own bytes and each entry.
fn parse_memory_map<'a>(
    memory: &impl PhysicalMemory<'a>,
    table_address: u64,
    count: u32,
) -> Result<(PhysRange, Vec<MemoryMapEntry, MAX_MEMORY_MAP_ENTRIES>), PvhError> {
    if count == 0 || count as usize > MAX_MEMORY_MAP_ENTRIES {
        return Err(PvhError::BadMemoryMapCount(count));
    }
    if table_address == 0 {
        return Err(PvhError::NullAddress("memory map"));
    }

    let table_len = count as usize * MEMORY_MAP_ENTRY_SIZE;
    let table = read(memory, "memory map", table_address, table_len)?;
    let mut entries = Vec::new();
    for entry in table.chunks_exact(MEMORY_MAP_ENTRY_SIZE) {
        let parsed = MemoryMapEntry {
            range: range("memory map entry", u64_at(entry, 0), u64_at(entry, 8))?,
            kind: MemoryType::from_e820(u32_at(entry, 16)),
        };
        entries
            .push(parsed)
            .map_err(|_| PvhError::BadMemoryMapCount(count))?;
    }
    Ok((
        range("memory map", table_address, table_len as u64)?,
        entries,
    ))
}

/// `len` bytes at `address`, or [`PvhError::Unreadable`].
fn read<'a>(
    memory: &impl PhysicalMemory<'a>,
    what: &'static str,
    address: u64,
    len: usize,
) -> Result<&'a [u8], PvhError> {
    memory
        .read(address, len)
        .filter(|bytes| bytes.len() == len)
        .ok_or(PvhError::Unreadable {
            what,
            address,
            len: len as u64,
        })
}

/// The range of `size` bytes at `start`, or [`PvhError::RangeWraps`].
fn range(what: &'static str, start: u64, size: u64) -> Result<PhysRange, PvhError> {
    PhysRange::from_start_size(start, size).ok_or(PvhError::RangeWraps { what, start, size })
}

/// The little-endian `u32` at `offset` (the caller has checked the length).
pub(super) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(field)
}

/// The little-endian `u64` at `offset` (the caller has checked the length).
pub(super) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(field)
}

pub mod tests {
    //! In-kernel tests of the parser, over a `start_info` built in a byte array.

    use super::*;
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq};

    /// Where the test memory starts in the pretend physical address space.
    const BASE: u64 = 0x1000;
    /// Offsets inside the test memory.
    const COMMAND_LINE: usize = 0x100;
    const MODULE_LIST: usize = 0x200;
    const MEMORY_MAP: usize = 0x300;

    /// Size of the test memory: more than the longest command line.
    const SIZE: usize = 0x1800;

    /// Pretend physical memory of `SIZE` bytes at physical address `START`, for the parsers
    /// of firmware tables (this module's and `acpi`'s).
    pub(in crate::arch::x86_64) struct TestMemory<const START: u64, const SIZE: usize> {
        pub(in crate::arch::x86_64) bytes: [u8; SIZE],
    }

    impl<'a, const START: u64, const SIZE: usize> PhysicalMemory<'a> for &'a TestMemory<START, SIZE> {
        fn read(&self, start: u64, len: usize) -> Option<&'a [u8]> {
            let offset = usize::try_from(start.checked_sub(START)?).ok()?;
            self.bytes.get(offset..offset.checked_add(len)?)
        }
    }

    impl<const START: u64, const SIZE: usize> TestMemory<START, SIZE> {
        pub(in crate::arch::x86_64) fn zeroed() -> Self {
            Self { bytes: [0; SIZE] }
        }

        pub(in crate::arch::x86_64) fn put(&mut self, offset: usize, bytes: &[u8]) {
            self.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
        }

        pub(in crate::arch::x86_64) fn put_u32(&mut self, offset: usize, value: u32) {
            self.put(offset, &value.to_le_bytes());
        }

        pub(in crate::arch::x86_64) fn put_u64(&mut self, offset: usize, value: u64) {
            self.put(offset, &value.to_le_bytes());
        }
    }

    /// The test memory of this module's tests.
    type StartInfoMemory = TestMemory<BASE, SIZE>;

    impl StartInfoMemory {
        /// A valid version 1 `start_info` at [`BASE`] with a command line, one module and a
        /// memory map of two entries (RAM and reserved).
        fn valid() -> Self {
            let mut memory = Self::zeroed();
            memory.put_u32(0, START_INFO_MAGIC);
            memory.put_u32(4, 1);
            memory.put_u32(12, 1);
            memory.put_u64(16, BASE + MODULE_LIST as u64);
            memory.put_u64(24, BASE + COMMAND_LINE as u64);
            memory.put_u64(32, 0xf_5a40);
            memory.put_u64(40, BASE + MEMORY_MAP as u64);
            memory.put_u32(48, 2);

            memory.put(COMMAND_LINE, b"test=x86\0");
            memory.put_u64(MODULE_LIST, 0x70_0000);
            memory.put_u64(MODULE_LIST + 8, 0x1234);

            memory.put_u64(MEMORY_MAP, 0);
            memory.put_u64(MEMORY_MAP + 8, 0x9_fc00);
            memory.put_u32(MEMORY_MAP + 16, 1);
            memory.put_u64(MEMORY_MAP + 24, 0x9_fc00);
            memory.put_u64(MEMORY_MAP + 32, 0x400);
            memory.put_u32(MEMORY_MAP + 40, 2);
            memory
        }
    }

    pub fn parses_a_valid_start_info() -> TestResult {
        let memory = StartInfoMemory::valid();
        let info = parse(&&memory, BASE);
        ktest_assert!(info.is_ok(), "a valid start_info was refused", info.err());
        let Ok(info) = info else { return Ok(()) };

        ktest_assert_eq!(info.version, 1);
        ktest_assert_eq!(info.rsdp, 0xf_5a40);
        ktest_assert_eq!(info.command_line.map(|line| line.text), Some("test=x86"));
        ktest_assert_eq!(
            info.command_line.map(|line| line.range.size()),
            Some(b"test=x86\0".len() as u64)
        );
        ktest_assert_eq!(info.modules.len(), 1);
        ktest_assert_eq!(
            info.modules[0],
            PhysRange {
                start: 0x70_0000,
                end: 0x70_1234
            }
        );
        ktest_assert_eq!(info.memory_map.len(), 2);
        ktest_assert_eq!(info.memory_map[0].kind, MemoryType::Ram);
        ktest_assert_eq!(info.memory_map[0].range.end, 0x9_fc00);
        ktest_assert_eq!(info.memory_map[1].kind, MemoryType::Reserved);
        Ok(())
    }

    pub fn rejects_bad_magic() -> TestResult {
        let mut memory = StartInfoMemory::valid();
        memory.put_u32(0, 0x1bad_b002);
        ktest_assert_eq!(parse(&&memory, BASE), Err(PvhError::BadMagic(0x1bad_b002)));
        Ok(())
    }

    pub fn rejects_version_0() -> TestResult {
        let mut memory = StartInfoMemory::valid();
        memory.put_u32(4, 0);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::NoMemoryMap { version: 0 })
        );
        Ok(())
    }

    pub fn rejects_absurd_counts() -> TestResult {
        let mut memory = StartInfoMemory::valid();
        memory.put_u32(48, u32::MAX);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::BadMemoryMapCount(u32::MAX))
        );

        memory.put_u32(48, 0);
        ktest_assert_eq!(parse(&&memory, BASE), Err(PvhError::BadMemoryMapCount(0)));

        let mut memory = StartInfoMemory::valid();
        memory.put_u32(12, 0x8000_0000);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::TooManyModules(0x8000_0000))
        );
        Ok(())
    }

    pub fn rejects_unreadable_and_wrapping_ranges() -> TestResult {
        // start_info itself outside memory.
        let memory = StartInfoMemory::valid();
        ktest_assert!(
            matches!(
                parse(&&memory, 0xffff_ffff_ffff_fff0),
                Err(PvhError::Unreadable { .. })
            ),
            "start_info at the top of the address space was accepted"
        );

        // A memory map that runs past the end of memory.
        let mut memory = StartInfoMemory::valid();
        let last_entry = BASE + (SIZE - MEMORY_MAP_ENTRY_SIZE) as u64;
        memory.put_u64(40, last_entry);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::Unreadable {
                what: "memory map",
                address: last_entry,
                len: 2 * MEMORY_MAP_ENTRY_SIZE as u64,
            })
        );

        // A module whose end wraps.
        let mut memory = StartInfoMemory::valid();
        memory.put_u64(MODULE_LIST + 8, u64::MAX);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::RangeWraps {
                what: "module",
                start: 0x70_0000,
                size: u64::MAX
            })
        );
        Ok(())
    }

    pub fn rejects_bad_command_lines() -> TestResult {
        // No NUL within the longest command line accepted.
        let mut memory = StartInfoMemory::valid();
        memory.bytes[COMMAND_LINE..].fill(b'x');
        ktest_assert_eq!(parse(&&memory, BASE), Err(PvhError::CommandLineTooLong));

        // No NUL before the end of readable memory.
        let mut memory = StartInfoMemory::valid();
        memory.put(SIZE - 4, b"tail");
        memory.put_u64(24, BASE + SIZE as u64 - 4);
        ktest_assert_eq!(
            parse(&&memory, BASE),
            Err(PvhError::Unreadable {
                what: "command line",
                address: BASE + SIZE as u64,
                len: 1
            })
        );

        let mut memory = StartInfoMemory::valid();
        memory.put(COMMAND_LINE, b"\xff\xfe\0");
        ktest_assert_eq!(parse(&&memory, BASE), Err(PvhError::CommandLineNotUtf8));
        Ok(())
    }
}
