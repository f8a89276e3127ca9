//! Reads what the kernel needs from the flattened device tree the firmware passes at boot.
//!
//! The device tree is input: every value is checked, and anything malformed is a
//! [`DeviceTreeError`] naming the node and property, never a panic. [`DeviceTree::new`]
//! first checks the whole blob's structure ([`structure`]) so that the `fdt` crate, which
//! walks it, cannot panic on a corrupt one; the methods then read:
//!
//! | method | from |
//! | --- | --- |
//! | [`memory`](DeviceTree::memory) | `reg` of every `device_type = "memory"` node under `/` |
//! | [`timebase_frequency`](DeviceTree::timebase_frequency) | `/cpus` or the cpu nodes |
//! | [`command_line`](DeviceTree::command_line) | `/chosen/bootargs` |
//! | [`initrd`](DeviceTree::initrd) | `/chosen/linux,initrd-start` and `-end` (32 or 64 bit) |
//! | [`console_uart`](DeviceTree::console_uart) | `/chosen/stdout-path`, else the first 16550 |
//! | [`exit_device`](DeviceTree::exit_device) | the first `sifive,test0`/`sifive,test1` node |
//! | [`reservations`](DeviceTree::reservations) | `/reserved-memory`, `/memreserve/` (and more) |
//! | [`devices`](DeviceTree::devices) | `virtio,mmio` nodes, `pci-host-ecam-generic` bridges |
//!
//! `stdout-path` may be a path or an alias, and its `:115200n8`-style options are ignored.
//! Reservations also cover the kernel image, the blob, the initrd and the firmware: all RAM
//! below the kernel in its bank (OpenSBI does not always list itself).
//!
//! Nothing here touches hardware: the functions work on a byte slice, so the in-kernel tests
//! feed them the VisionFive 2's real blob and hand-made corrupt ones.
//!
//! # Limitations
//!
//! - `reg` addresses are taken as CPU physical addresses: a parent bus's `ranges` is not
//!   applied. QEMU `virt` and the VisionFive 2 map their buses one to one (`ranges;`).
//! - `/reserved-memory` children without `reg` (a `size` the OS is asked to place) reserve
//!   nothing: nothing in the kernel uses such regions yet.

pub mod devices;
mod structure;
pub mod tests;

use core::fmt;

use drivers::uart16550::{MmioConfigError, MmioLayout};
use fdt::Fdt;
use fdt::node::{CellSizes, FdtNode};
use heapless::Vec;

use crate::boot::{MAX_REGIONS, PhysRange, Reservation, ReservedKind};
pub use structure::StructureError;

/// `compatible` strings of the UARTs the 16550 driver handles.
pub const UART_COMPATIBLES: &[&str] = &["ns16550a", "ns16550", "snps,dw-apb-uart"];

/// `compatible` strings of the SiFive test finisher (QEMU's exit device).
pub const EXIT_DEVICE_COMPATIBLES: &[&str] = &["sifive,test1", "sifive,test0"];

/// What is wrong with a property's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum PropertyProblem {
    /// The value has a length the property cannot have.
    #[error("{length} bytes long")]
    BadLength { length: usize },
    /// A string that is not NUL-terminated or not UTF-8.
    #[error("not a NUL-terminated UTF-8 string")]
    BadString,
    /// `#address-cells`/`#size-cells` of the parent that this reader cannot use.
    #[error("unsupported cell sizes: {address_cells} address, {size_cells} size")]
    UnsupportedCells {
        address_cells: usize,
        size_cells: usize,
    },
    /// An address range that wraps past the top of the address space.
    #[error("range wraps past the end of the address space")]
    Overflow,
    /// A value that must not be zero is.
    #[error("zero")]
    Zero,
    /// An end below its start.
    #[error("end {end:#x} is below start {start:#x}")]
    EndBeforeStart { start: u64, end: u64 },
}

/// Why the device tree cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum DeviceTreeError<'a> {
    /// The blob is not a well-formed device tree.
    #[error("malformed device tree: {0}")]
    Structure(#[from] StructureError),
    /// A node the kernel needs is missing.
    #[error("no {0} node")]
    MissingNode(&'static str),
    /// A property the kernel needs is missing.
    #[error("{node}: no {property} property")]
    MissingProperty {
        node: &'a str,
        property: &'static str,
    },
    /// A property has a value the kernel cannot use.
    #[error("{node}: bad {property}: {problem}")]
    BadProperty {
        node: &'a str,
        property: &'static str,
        problem: PropertyProblem,
    },
    /// No memory node describes any RAM.
    #[error("no memory node with a non-empty reg")]
    NoMemory,
    /// More reservations than a `BootInfo` holds.
    #[error("more than {limit} reserved regions")]
    TooManyReservations { limit: usize },
    /// The kernel is not inside any RAM region the tree lists.
    #[error("the kernel at {start:#x}..{end:#x} lies outside every memory region")]
    KernelOutsideMemory { start: u64, end: u64 },
    /// No enabled node of a UART the driver handles.
    #[error("no enabled ns16550a/ns16550/snps,dw-apb-uart node")]
    NoUart,
    /// The UART's `reg-shift`/`reg-io-width` do not fit the driver or its `reg`.
    #[error("{node}: unusable register layout: {error}")]
    UartLayout {
        node: &'a str,
        error: MmioConfigError,
    },
}

/// RAM regions, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, defmt::Format)]
pub struct MemoryMap {
    /// The regions, at most [`MAX_REGIONS`].
    pub regions: Vec<PhysRange, MAX_REGIONS>,
    /// How many regions did not fit and were left out.
    pub dropped: usize,
}

/// How the console UART was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ConsoleSource<'a> {
    /// `/chosen/stdout-path` names it (the property's value, options included).
    StdoutPath(&'a str),
    /// It is the first enabled UART in the tree; `stdout_path` is the `/chosen/stdout-path`
    /// that did not name a usable UART, if there was one.
    FirstCompatible { stdout_path: Option<&'a str> },
}

/// A memory-mapped 16550 UART found in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct UartNode<'a> {
    /// The node's name (`serial@10000000`).
    pub name: &'a str,
    /// The `compatible` string that matched.
    pub compatible: &'a str,
    /// Physical address of the register window.
    pub base: u64,
    /// Register spacing and access width.
    pub layout: MmioLayout,
    /// How it was chosen.
    pub source: ConsoleSource<'a>,
}

/// The SiFive test finisher, through which QEMU lets the guest exit with a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct ExitDevice<'a> {
    /// The node's name (`test@100000`).
    pub name: &'a str,
    /// Physical address of its register.
    pub base: u64,
}

/// Where a reservation came from, for the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ReservationSource<'a> {
    /// The kernel image, from the linker's symbols and the load address.
    KernelImage,
    /// The device tree blob itself (its `totalsize`).
    DeviceTreeBlob,
    /// A `/reserved-memory` child node, by name.
    ReservedMemoryNode(&'a str),
    /// An entry of the blob's memory reservation block (`/memreserve/`).
    MemReserveEntry,
    /// The initrd from `/chosen`.
    Initrd,
    /// RAM below the kernel in its bank, where the firmware (OpenSBI) lives.
    FirmwareBelowKernel,
}

/// A reservation and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct FoundReservation<'a> {
    /// What is reserved and why.
    pub reservation: Reservation,
    /// Where the kernel learned about it.
    pub source: ReservationSource<'a>,
}

/// Where the kernel and the blob are in physical memory, for [`DeviceTree::reservations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlacement {
    /// The kernel image, `.bss` included.
    pub kernel: PhysRange,
    /// Physical address of the device tree blob.
    pub blob_address: u64,
}

/// A checked device tree blob.
pub struct DeviceTree<'a> {
    fdt: Fdt<'a>,
    total_size: usize,
}

/// A node, with the `#address-cells`/`#size-cells` that apply to its `reg`.
#[derive(Clone, Copy)]
struct Located<'b, 'a> {
    node: FdtNode<'b, 'a>,
    cells: CellSizes,
}

impl<'a> DeviceTree<'a> {
    /// Checks `blob` and opens it. `blob` may extend past the tree's `totalsize`.
    pub fn new(blob: &'a [u8]) -> Result<Self, DeviceTreeError<'a>> {
        let header = structure::validate(blob)?;
        let blob = &blob[..header.total_size];
        // `validate` checked the magic and the size, the only things `Fdt::new` checks.
        let fdt = Fdt::new(blob).map_err(|_| StructureError::TooShort { length: blob.len() })?;
        Ok(Self {
            fdt,
            total_size: header.total_size,
        })
    }

    /// Size of the blob in bytes (`totalsize`).
    pub fn total_size(&self) -> u64 {
        self.total_size as u64
    }

    /// The RAM regions of every enabled memory node, sorted by address; empty regions are
    /// left out.
    pub fn memory(&self) -> Result<MemoryMap, DeviceTreeError<'a>> {
        let root = self.root()?;
        let cells = root.cell_sizes();
        let mut map = MemoryMap {
            regions: Vec::new(),
            dropped: 0,
        };

        let memory_nodes = root
            .children()
            .filter(|node| is_enabled(*node) && has_string(*node, "device_type", "memory"));
        for node in memory_nodes {
            for (start, size) in reg(Located { node, cells })? {
                let range = range_of(node.name, "reg", start, size)?;
                if range.is_empty() {
                    continue;
                }
                if map.regions.push(range).is_err() {
                    map.dropped += 1;
                }
            }
        }

        if map.regions.is_empty() {
            return Err(DeviceTreeError::NoMemory);
        }
        map.regions.sort_unstable_by_key(|region| region.start);
        Ok(map)
    }

    /// Frequency of the `time` CSR: `timebase-frequency` of `/cpus`, else of the boot hart's
    /// cpu node, else of the first cpu node that has one.
    pub fn timebase_frequency(&self, boot_hart: u64) -> Result<u64, DeviceTreeError<'a>> {
        let cpus = self
            .node_at_path("/cpus")
            .ok_or(DeviceTreeError::MissingNode("/cpus"))?;
        if let Some(hz) = int_property(cpus.node, "timebase-frequency")? {
            return nonzero(cpus.node.name, "timebase-frequency", hz);
        }

        let cells = cpus.node.cell_sizes();
        let mut first_found = None;
        for cpu in cpus
            .node
            .children()
            .filter(|node| base_name(node.name) == "cpu")
        {
            let Some(hz) = int_property(cpu, "timebase-frequency")? else {
                continue;
            };
            let hz = nonzero(cpu.name, "timebase-frequency", hz)?;
            let hart_id = first_address(Located { node: cpu, cells })?;
            if hart_id == Some(boot_hart) {
                return Ok(hz);
            }
            first_found.get_or_insert(hz);
        }
        first_found.ok_or(DeviceTreeError::MissingProperty {
            node: "cpus",
            property: "timebase-frequency",
        })
    }

    /// `/chosen/bootargs`, or "" without one.
    pub fn command_line(&self) -> Result<&'a str, DeviceTreeError<'a>> {
        let Some(chosen) = self.node_at_path("/chosen") else {
            return Ok("");
        };
        Ok(string_property(chosen.node, "bootargs")?.unwrap_or(""))
    }

    /// The initrd from `/chosen`, if both of its properties are there and it is not empty.
    pub fn initrd(&self) -> Result<Option<PhysRange>, DeviceTreeError<'a>> {
        let Some(chosen) = self.node_at_path("/chosen") else {
            return Ok(None);
        };
        let node = chosen.node.name;
        let start = int_property(chosen.node, "linux,initrd-start")?;
        let end = int_property(chosen.node, "linux,initrd-end")?;
        match (start, end) {
            (None, None) => Ok(None),
            (Some(start), Some(end)) if end < start => Err(DeviceTreeError::BadProperty {
                node,
                property: "linux,initrd-end",
                problem: PropertyProblem::EndBeforeStart { start, end },
            }),
            (Some(start), Some(end)) => {
                let range = PhysRange { start, end };
                Ok((!range.is_empty()).then_some(range))
            }
            (Some(_), None) => Err(DeviceTreeError::MissingProperty {
                node,
                property: "linux,initrd-end",
            }),
            (None, Some(_)) => Err(DeviceTreeError::MissingProperty {
                node,
                property: "linux,initrd-start",
            }),
        }
    }

    /// The console: the UART `/chosen/stdout-path` names if the driver handles it, else the
    /// first enabled UART the driver handles.
    pub fn console_uart(&self) -> Result<UartNode<'a>, DeviceTreeError<'a>> {
        let stdout_path = match self.node_at_path("/chosen") {
            Some(chosen) => string_property(chosen.node, "stdout-path")?,
            None => None,
        };

        if let Some(value) = stdout_path {
            let named = self
                .resolve_alias(stdout_path_without_options(value))
                .and_then(|path| self.node_at_path(path))
                .filter(|located| is_enabled(located.node));
            if let Some(located) = named
                && let Some(compatible) = matching_compatible(located.node, UART_COMPATIBLES)
            {
                return uart_at(located, compatible, ConsoleSource::StdoutPath(value));
            }
        }

        let located = self
            .find_node(&|node| {
                is_enabled(node) && matching_compatible(node, UART_COMPATIBLES).is_some()
            })
            .ok_or(DeviceTreeError::NoUart)?;
        let compatible =
            matching_compatible(located.node, UART_COMPATIBLES).ok_or(DeviceTreeError::NoUart)?;
        uart_at(
            located,
            compatible,
            ConsoleSource::FirstCompatible { stdout_path },
        )
    }

    /// The first enabled SiFive test finisher, if there is one.
    pub fn exit_device(&self) -> Result<Option<ExitDevice<'a>>, DeviceTreeError<'a>> {
        let Some(located) = self.find_node(&|node| {
            is_enabled(node) && matching_compatible(node, EXIT_DEVICE_COMPATIBLES).is_some()
        }) else {
            return Ok(None);
        };
        let name = located.node.name;
        let (base, size) = reg(located)?
            .next()
            .ok_or(DeviceTreeError::MissingProperty {
                node: name,
                property: "reg",
            })?;
        // The finisher is one 32-bit register.
        if size < 4 {
            return Err(DeviceTreeError::BadProperty {
                node: name,
                property: "reg",
                problem: PropertyProblem::BadLength {
                    length: size as usize,
                },
            });
        }
        range_of(name, "reg", base, size)?;
        Ok(Some(ExitDevice { name, base }))
    }

    /// Every range the frame allocator must leave alone: the firmware below the kernel in
    /// the kernel's RAM bank, the kernel, the blob, `/memreserve/` entries, `/reserved-memory`
    /// children and the initrd. Empty ranges are left out.
    pub fn reservations(
        &self,
        memory: &[PhysRange],
        placement: BootPlacement,
        initrd: Option<PhysRange>,
    ) -> Result<Vec<FoundReservation<'a>, MAX_REGIONS>, DeviceTreeError<'a>> {
        let mut found = Vec::new();
        let mut add = |range: PhysRange, kind, source| {
            if range.is_empty() {
                return Ok(());
            }
            let reservation = Reservation { range, kind };
            found
                .push(FoundReservation {
                    reservation,
                    source,
                })
                .map_err(|_| DeviceTreeError::TooManyReservations { limit: MAX_REGIONS })
        };

        let kernel = placement.kernel;
        let bank = memory
            .iter()
            .find(|region| region.contains_range(&kernel))
            .ok_or(DeviceTreeError::KernelOutsideMemory {
                start: kernel.start,
                end: kernel.end,
            })?;
        let below_kernel = PhysRange {
            start: bank.start,
            end: kernel.start,
        };
        add(
            below_kernel,
            ReservedKind::Firmware,
            ReservationSource::FirmwareBelowKernel,
        )?;
        add(
            kernel,
            ReservedKind::KernelImage,
            ReservationSource::KernelImage,
        )?;

        let blob = range_of("/", "totalsize", placement.blob_address, self.total_size())?;
        add(
            blob,
            ReservedKind::DeviceTree,
            ReservationSource::DeviceTreeBlob,
        )?;

        for entry in self.fdt.memory_reservations() {
            let range = range_of(
                "/memreserve/",
                "entry",
                entry.address() as u64,
                entry.size() as u64,
            )?;
            add(
                range,
                ReservedKind::Firmware,
                ReservationSource::MemReserveEntry,
            )?;
        }

        if let Some(reserved_memory) = self.node_at_path("/reserved-memory") {
            let cells = reserved_memory.node.cell_sizes();
            for node in reserved_memory
                .node
                .children()
                .filter(|node| is_enabled(*node))
            {
                for (start, size) in reg(Located { node, cells })? {
                    let range = range_of(node.name, "reg", start, size)?;
                    let source = ReservationSource::ReservedMemoryNode(node.name);
                    add(range, ReservedKind::Firmware, source)?;
                }
            }
        }

        if let Some(initrd) = initrd {
            add(initrd, ReservedKind::Initrd, ReservationSource::Initrd)?;
        }
        Ok(found)
    }

    /// The root node.
    fn root(&self) -> Result<FdtNode<'_, 'a>, DeviceTreeError<'a>> {
        // The validated root is named "", which is what a search for "/" matches first, so
        // the crate never falls back to resolving "/" as an alias.
        self.fdt
            .find_node("/")
            .ok_or(DeviceTreeError::MissingNode("/"))
    }

    /// The node at an absolute `path` whose components are full names (`serial@10000000`) or
    /// base names (`cpus`, matching the first node of that name).
    fn node_at_path(&self, path: &str) -> Option<Located<'_, 'a>> {
        let mut located = Located {
            node: self.root().ok()?,
            cells: CellSizes::default(),
        };
        for component in path.strip_prefix('/')?.split('/') {
            if component.is_empty() {
                continue;
            }
            let parent = located.node;
            let node = parent
                .children()
                .find(|child| child.name == component || base_name(child.name) == component)?;
            located = Located {
                node,
                cells: parent.cell_sizes(),
            };
        }
        Some(located)
    }

    /// `path` itself if it is absolute, else the path the `/aliases` property of that name
    /// holds. Aliases are resolved once: an alias naming another alias is not followed.
    fn resolve_alias<'s>(&self, path: &'s str) -> Option<&'s str>
    where
        'a: 's,
    {
        if path.starts_with('/') {
            return Some(path);
        }
        let aliases = self.node_at_path("/aliases")?;
        let target = aliases
            .node
            .properties()
            .find(|property| property.name == path)?;
        let target = string_value(target.value).ok()?;
        target.starts_with('/').then_some(target)
    }

    /// The first node, depth first, for which `wanted` holds.
    fn find_node(&self, wanted: &dyn Fn(FdtNode<'_, 'a>) -> bool) -> Option<Located<'_, 'a>> {
        fn search<'b, 'a>(
            parent: FdtNode<'b, 'a>,
            wanted: &dyn Fn(FdtNode<'b, 'a>) -> bool,
        ) -> Option<Located<'b, 'a>> {
            // Recursion depth is bounded by `structure::MAX_DEPTH`.
            let cells = parent.cell_sizes();
            for node in parent.children() {
                if wanted(node) {
                    return Some(Located { node, cells });
                }
                if let Some(found) = search(node, wanted) {
                    return Some(found);
                }
            }
            None
        }
        search(self.root().ok()?, wanted)
    }
}

impl fmt::Debug for DeviceTree<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTree")
            .field("total_size", &self.total_size)
            .finish_non_exhaustive()
    }
}

/// Builds the [`UartNode`] for a node whose `compatible` matched.
fn uart_at<'a>(
    located: Located<'_, 'a>,
    compatible: &'a str,
    source: ConsoleSource<'a>,
) -> Result<UartNode<'a>, DeviceTreeError<'a>> {
    let node = located.node;
    let (base, size) = reg(located)?
        .next()
        .ok_or(DeviceTreeError::MissingProperty {
            node: node.name,
            property: "reg",
        })?;
    range_of(node.name, "reg", base, size)?;

    let reg_shift = u32_property(node, "reg-shift")?;
    let reg_io_width = u32_property(node, "reg-io-width")?;
    let layout = MmioLayout::new(reg_shift, reg_io_width, size).map_err(|error| {
        DeviceTreeError::UartLayout {
            node: node.name,
            error,
        }
    })?;
    Ok(UartNode {
        name: node.name,
        compatible,
        base,
        layout,
        source,
    })
}

/// `stdout-path` without its `:options` suffix (`serial0:115200n8` -> `serial0`).
pub fn stdout_path_without_options(value: &str) -> &str {
    value.split_once(':').map_or(value, |(path, _)| path)
}

/// The part of a node name before `@`.
fn base_name(name: &str) -> &str {
    name.split_once('@').map_or(name, |(base, _)| base)
}

/// Whether the node's `status` is absent, "okay" or "ok".
fn is_enabled(node: FdtNode<'_, '_>) -> bool {
    match node.property("status") {
        None => true,
        Some(status) => matches!(status.value, b"okay\0" | b"ok\0" | b"okay" | b"ok"),
    }
}

/// Whether string property `name` is exactly `expected`.
fn has_string(node: FdtNode<'_, '_>, name: &str, expected: &str) -> bool {
    node.property(name)
        .is_some_and(|property| string_value(property.value) == Ok(expected))
}

/// The first of the node's `compatible` strings that is in `wanted`.
fn matching_compatible<'a>(node: FdtNode<'_, 'a>, wanted: &[&str]) -> Option<&'a str> {
    node.compatible()?
        .all()
        .find(|compatible| wanted.contains(compatible))
}

/// A string value: NUL-terminated UTF-8 (an empty value counts as the empty string).
fn string_value(value: &[u8]) -> Result<&str, PropertyProblem> {
    if value.is_empty() {
        return Ok("");
    }
    let length = value
        .iter()
        .position(|&byte| byte == 0)
        .ok_or(PropertyProblem::BadString)?;
    core::str::from_utf8(&value[..length]).map_err(|_| PropertyProblem::BadString)
}

/// String property `property` of `node`, if present.
fn string_property<'a>(
    node: FdtNode<'_, 'a>,
    property: &'static str,
) -> Result<Option<&'a str>, DeviceTreeError<'a>> {
    let Some(found) = node.property(property) else {
        return Ok(None);
    };
    string_value(found.value)
        .map(Some)
        .map_err(|problem| DeviceTreeError::BadProperty {
            node: node.name,
            property,
            problem,
        })
}

/// A one-cell (u32) property, if present.
fn u32_property<'a>(
    node: FdtNode<'_, 'a>,
    property: &'static str,
) -> Result<Option<u32>, DeviceTreeError<'a>> {
    let Some(found) = node.property(property) else {
        return Ok(None);
    };
    let cell: [u8; 4] = found
        .value
        .try_into()
        .map_err(|_| DeviceTreeError::BadProperty {
            node: node.name,
            property,
            problem: PropertyProblem::BadLength {
                length: found.value.len(),
            },
        })?;
    Ok(Some(u32::from_be_bytes(cell)))
}

/// A one- or two-cell (u32 or u64) property, if present.
fn int_property<'a>(
    node: FdtNode<'_, 'a>,
    property: &'static str,
) -> Result<Option<u64>, DeviceTreeError<'a>> {
    let Some(found) = node.property(property) else {
        return Ok(None);
    };
    match found.value.len() {
        4 | 8 => Ok(Some(read_cells(found.value))),
        length => Err(DeviceTreeError::BadProperty {
            node: node.name,
            property,
            problem: PropertyProblem::BadLength { length },
        }),
    }
}

/// `value`, which must not be zero.
fn nonzero<'a>(
    node: &'a str,
    property: &'static str,
    value: u64,
) -> Result<u64, DeviceTreeError<'a>> {
    if value == 0 {
        return Err(DeviceTreeError::BadProperty {
            node,
            property,
            problem: PropertyProblem::Zero,
        });
    }
    Ok(value)
}

/// `start..start + size`, or an error naming the property if that wraps.
fn range_of<'a>(
    node: &'a str,
    property: &'static str,
    start: u64,
    size: u64,
) -> Result<PhysRange, DeviceTreeError<'a>> {
    PhysRange::from_start_size(start, size).ok_or(DeviceTreeError::BadProperty {
        node,
        property,
        problem: PropertyProblem::Overflow,
    })
}

/// Big-endian cells (at most two: callers check the length) as one number.
fn read_cells(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |value, &byte| (value << 8) | u64::from(byte))
}

/// The (address, size) entries of the node's `reg`; an absent `reg` has none. Checks the
/// whole property's shape first, so decoding the entries cannot fail.
fn reg<'a>(
    located: Located<'_, 'a>,
) -> Result<impl Iterator<Item = (u64, u64)> + 'a, DeviceTreeError<'a>> {
    let node = located.node;
    let CellSizes {
        address_cells,
        size_cells,
    } = located.cells;
    let bad = |problem| DeviceTreeError::BadProperty {
        node: node.name,
        property: "reg",
        problem,
    };

    if !(1..=2).contains(&address_cells) || size_cells > 2 {
        return Err(bad(PropertyProblem::UnsupportedCells {
            address_cells,
            size_cells,
        }));
    }
    let value = node
        .property("reg")
        .map_or(&[][..], |property| property.value);
    let entry_size = (address_cells + size_cells) * 4;
    if !value.len().is_multiple_of(entry_size) {
        return Err(bad(PropertyProblem::BadLength {
            length: value.len(),
        }));
    }

    Ok(value.chunks_exact(entry_size).map(move |entry| {
        let (address, size) = entry.split_at(address_cells * 4);
        (read_cells(address), read_cells(size))
    }))
}

/// The address of the node's first `reg` entry (a cpu node's hart id), if it has one.
fn first_address<'a>(located: Located<'_, 'a>) -> Result<Option<u64>, DeviceTreeError<'a>> {
    Ok(reg(located)?.next().map(|(address, _)| address))
}
