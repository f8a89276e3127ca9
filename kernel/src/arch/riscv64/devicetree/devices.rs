//! The devices the drivers probe: every `virtio,mmio` node and every `pci-host-ecam-generic`
//! host bridge, with the PCI memory window its `ranges` offers for BARs.
//!
//! QEMU `virt` creates eight virtio-mmio slots whether or not a device sits behind them; the
//! driver tells the empty ones apart by their device id. The PCI host bridge is left
//! unconfigured by OpenSBI, so the kernel assigns the BARs itself inside the bridge's 32-bit
//! memory window.

use fdt::node::{CellSizes, FdtNode};

use super::{
    DeviceTree, DeviceTreeError, Located, PropertyProblem, is_enabled, matching_compatible,
    range_of, read_cells, reg,
};
use crate::boot::{Devices, PciHost, PciWindow};

/// `compatible` strings of memory-mapped virtio transports.
pub const VIRTIO_MMIO_COMPATIBLES: &[&str] = &["virtio,mmio"];

/// `compatible` strings of PCI host bridges with a generic ECAM configuration space.
pub const PCI_ECAM_COMPATIBLES: &[&str] = &["pci-host-ecam-generic"];

/// Bytes of ECAM configuration space per bus (32 devices × 8 functions × 4 KiB).
const ECAM_BUS_SIZE: u64 = 1 << 20;

/// The space code in bits 24..26 of a PCI address's first cell: 32-bit memory space.
const PCI_SPACE_MEMORY_32: u32 = 0b10;

impl<'a> DeviceTree<'a> {
    /// The virtio-mmio windows and PCI host bridges of every enabled node, sorted by address.
    /// Nodes past the capacity of [`Devices`] are counted in the second value and left out.
    pub fn devices(&self) -> Result<(Devices, usize), DeviceTreeError<'a>> {
        let mut devices = Devices::default();
        let mut dropped = 0;
        let mut error = None;

        self.for_each_node(&mut |located| {
            if error.is_some() || !is_enabled(located.node) {
                return;
            }
            let found = if matching_compatible(located.node, VIRTIO_MMIO_COMPATIBLES).is_some() {
                virtio_window(located).map(|window| {
                    window.is_some_and(|window| devices.virtio_mmio.push(window).is_err())
                })
            } else if matching_compatible(located.node, PCI_ECAM_COMPATIBLES).is_some() {
                pci_host(located).map(|host| devices.pci_hosts.push(host).is_err())
            } else {
                Ok(false)
            };
            match found {
                Ok(true) => dropped += 1,
                Ok(false) => {}
                Err(found) => error = Some(found),
            }
        });
        if let Some(error) = error {
            return Err(error);
        }

        devices
            .virtio_mmio
            .sort_unstable_by_key(|window| window.start);
        devices
            .pci_hosts
            .sort_unstable_by_key(|host| host.ecam.start);
        Ok((devices, dropped))
    }

    /// Calls `visit` on every node below the root, depth first.
    fn for_each_node(&self, visit: &mut dyn FnMut(Located<'_, 'a>)) {
        fn walk<'b, 'a>(parent: FdtNode<'b, 'a>, visit: &mut dyn FnMut(Located<'b, 'a>)) {
            // Recursion depth is bounded by `structure::MAX_DEPTH`.
            let cells = parent.cell_sizes();
            for node in parent.children() {
                visit(Located { node, cells });
                walk(node, visit);
            }
        }
        if let Ok(root) = self.root() {
            walk(root, visit);
        }
    }
}

/// The register window of a virtio-mmio node; `None` if its `reg` is empty.
fn virtio_window<'a>(
    located: Located<'_, 'a>,
) -> Result<Option<crate::boot::PhysRange>, DeviceTreeError<'a>> {
    let name = located.node.name;
    let Some((base, size)) = reg(located)?.next() else {
        return Ok(None);
    };
    let window = range_of(name, "reg", base, size)?;
    Ok((!window.is_empty()).then_some(window))
}

/// A `pci-host-ecam-generic` node: its ECAM window, bus range and 32-bit memory window.
fn pci_host<'a>(located: Located<'_, 'a>) -> Result<PciHost, DeviceTreeError<'a>> {
    let node = located.node;
    let (base, size) = reg(located)?
        .next()
        .ok_or(DeviceTreeError::MissingProperty {
            node: node.name,
            property: "reg",
        })?;
    let ecam = range_of(node.name, "reg", base, size)?;
    let bad = |property, problem| DeviceTreeError::BadProperty {
        node: node.name,
        property,
        problem,
    };

    // `bus-range` is optional (all 256 buses); the ECAM window must hold every bus it names.
    let (bus_start, bus_end) = match node.property("bus-range") {
        None => (0, 255),
        Some(property) if property.value.len() == 8 => {
            let (start, end) = property.value.split_at(4);
            (read_cells(start), read_cells(end))
        }
        Some(property) => {
            return Err(bad(
                "bus-range",
                PropertyProblem::BadLength {
                    length: property.value.len(),
                },
            ));
        }
    };
    let buses_in_window = ecam.size() / ECAM_BUS_SIZE;
    let bus_end = bus_end.min(bus_start.saturating_add(buses_in_window).saturating_sub(1));
    if bus_start > bus_end || bus_end > 255 || buses_in_window == 0 {
        return Err(bad(
            "bus-range",
            PropertyProblem::BadLength {
                length: buses_in_window as usize,
            },
        ));
    }

    Ok(PciHost {
        ecam,
        bus_start: bus_start as u8,
        bus_end: bus_end as u8,
        bar_window: memory_window(located)?,
    })
}

/// The first 32-bit memory window of the bridge's `ranges`, if it has one.
fn memory_window<'a>(located: Located<'_, 'a>) -> Result<Option<PciWindow>, DeviceTreeError<'a>> {
    let node = located.node;
    let Some(ranges) = node.property("ranges") else {
        return Ok(None);
    };
    let CellSizes {
        address_cells: child_cells,
        size_cells,
    } = node.cell_sizes();
    let parent_cells = located.cells.address_cells;
    let bad = |problem| DeviceTreeError::BadProperty {
        node: node.name,
        property: "ranges",
        problem,
    };
    if child_cells != 3 || !(1..=2).contains(&parent_cells) || !(1..=2).contains(&size_cells) {
        return Err(bad(PropertyProblem::UnsupportedCells {
            address_cells: child_cells,
            size_cells,
        }));
    }
    let entry_size = (child_cells + parent_cells + size_cells) * 4;
    if !ranges.value.len().is_multiple_of(entry_size) {
        return Err(bad(PropertyProblem::BadLength {
            length: ranges.value.len(),
        }));
    }

    for entry in ranges.value.chunks_exact(entry_size) {
        let (child, rest) = entry.split_at(child_cells * 4);
        let (parent, size) = rest.split_at(parent_cells * 4);
        let space = (read_cells(&child[..4]) >> 24) as u32 & 0b11;
        if space != PCI_SPACE_MEMORY_32 {
            continue;
        }
        let window = PciWindow {
            cpu_start: read_cells(parent),
            pci_start: read_cells(&child[4..]),
            size: read_cells(size),
        };
        range_of(node.name, "ranges", window.cpu_start, window.size)?;
        return Ok(Some(window));
    }
    Ok(None)
}

pub mod tests {
    //! In-kernel tests of device discovery on QEMU `virt`'s tree and the VisionFive 2's.

    use super::super::tests::visionfive2_bytes;
    use super::*;
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    /// QEMU 7.2's `virt` device tree (`-M virt,dumpdtb=...`, 256 MiB, recompiled by `dtc` to
    /// drop the padding): eight virtio-mmio slots and one generic ECAM host bridge.
    static QEMU_VIRT: &[u8] = include_bytes!("../testdata/qemu-virt-7.2.dtb");

    pub fn qemu_virt_devices() -> TestResult {
        let Ok(tree) = DeviceTree::new(QEMU_VIRT) else {
            ktest_fail!("the QEMU virt blob parses")
        };
        let Ok((devices, dropped)) = tree.devices() else {
            ktest_fail!("the QEMU virt devices parse")
        };

        ktest_assert_eq!(dropped, 0);
        ktest_assert_eq!(devices.virtio_mmio.len(), 8);
        for (slot, window) in devices.virtio_mmio.iter().enumerate() {
            ktest_assert_eq!(window.start, 0x1000_1000 + 0x1000 * slot as u64);
            ktest_assert_eq!(window.size(), 0x1000);
        }
        ktest_assert_eq!(devices.pci_hosts.len(), 1);
        let host = devices.pci_hosts[0];
        ktest_assert_eq!(host.ecam.start, 0x3000_0000);
        ktest_assert_eq!(host.ecam.size(), 0x1000_0000);
        ktest_assert_eq!((host.bus_start, host.bus_end), (0, 255));
        ktest_assert!(
            host.bar_window
                == Some(PciWindow {
                    cpu_start: 0x4000_0000,
                    pci_start: 0x4000_0000,
                    size: 0x4000_0000,
                }),
            "the 32-bit memory window of `ranges`"
        );
        Ok(())
    }

    pub fn visionfive2_has_no_virtio_or_ecam_bridge() -> TestResult {
        let Ok(tree) = DeviceTree::new(visionfive2_bytes()) else {
            ktest_fail!("the VisionFive 2 blob parses")
        };
        let devices = tree.devices();

        // Its PCIe controllers are `starfive,jh7110-pcie`, not generic ECAM.
        ktest_assert!(
            devices.is_ok_and(
                |(devices, _)| devices.virtio_mmio.is_empty() && devices.pci_hosts.is_empty()
            ),
            "no virtio-mmio node and no generic ECAM bridge"
        );
        Ok(())
    }
}
