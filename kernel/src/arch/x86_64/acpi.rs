//! Finds the PCI Express configuration windows (ECAM) in the ACPI MCFG table.
//!
//! From the RSDP that PVH `start_info` names, the parser follows the XSDT (ACPI 2.0+, 64-bit
//! pointers) or else the RSDT (32-bit pointers) to the `MCFG` table, whose entries each give
//! one segment's ECAM base address and bus range. Each table's signature, length and
//! checksum are checked, and lengths and entry counts are bounded, so a corrupt table is an
//! [`AcpiError`], never a panic or a runaway loop. The parser reads through
//! [`PhysicalMemory`], so the in-kernel tests feed it made-up tables.
//!
//! # Limitations
//!
//! - Only PCI segment 0 is used; the kernel's PCI code knows no segments.
//! - No other ACPI table is read (no AML, no MADT): nothing needs them yet.

use heapless::Vec;

use super::pvh::{PhysicalMemory, u32_at, u64_at};
use crate::boot::{MAX_PCI_HOSTS, PciHost, PhysRange};

/// Size of an ACPI 1.0 RSDP; the checksum covers these bytes.
const RSDP_V1_SIZE: usize = 20;

/// Size of an ACPI 2.0+ RSDP.
const RSDP_V2_SIZE: usize = 36;

/// Size of the header every system description table starts with.
const SDT_HEADER_SIZE: usize = 36;

/// The largest RSDT, XSDT or MCFG the parser accepts, in bytes.
const MAX_TABLE_SIZE: usize = 64 * 1024;

/// Bytes before the first MCFG entry: the header and 8 reserved bytes.
const MCFG_ENTRIES_OFFSET: usize = SDT_HEADER_SIZE + 8;

/// Size of one MCFG entry.
const MCFG_ENTRY_SIZE: usize = 16;

/// Why the ACPI tables give no PCI windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// The firmware gave no RSDP.
    #[error("no RSDP")]
    NoRsdp,
    /// A table's bytes lie outside readable memory.
    #[error("table {signature} at {address:#x} cannot be read")]
    Unreadable {
        signature: &'static str,
        address: u64,
    },
    /// A table lacks its signature.
    #[error("no {signature} signature at {address:#x}")]
    BadSignature {
        signature: &'static str,
        address: u64,
    },
    /// A table's bytes do not sum to zero.
    #[error("table {signature} at {address:#x}: bad checksum")]
    BadChecksum {
        signature: &'static str,
        address: u64,
    },
    /// A table's length is too small for its header or too large to be believed.
    #[error("table {signature} at {address:#x}: bad length {length}")]
    BadLength {
        signature: &'static str,
        address: u64,
        length: usize,
    },
    /// The root table lists no MCFG.
    #[error("no MCFG table")]
    NoMcfg,
}

impl defmt::Format for AcpiError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// The ECAM windows of PCI segment 0 that the MCFG lists, at most [`MAX_PCI_HOSTS`].
pub fn pci_hosts<'a>(
    memory: &impl PhysicalMemory<'a>,
    rsdp: u64,
) -> Result<Vec<PciHost, MAX_PCI_HOSTS>, AcpiError> {
    if rsdp == 0 {
        return Err(AcpiError::NoRsdp);
    }
    let mcfg = find_table(memory, rsdp, *b"MCFG")?;

    let mut hosts = Vec::new();
    for entry in mcfg[MCFG_ENTRIES_OFFSET.min(mcfg.len())..].chunks_exact(MCFG_ENTRY_SIZE) {
        let base = u64_at(entry, 0);
        let segment = u16::from_le_bytes([entry[8], entry[9]]);
        let (bus_start, bus_end) = (entry[10], entry[11]);
        if segment != 0 || bus_start > bus_end {
            continue;
        }
        // The base address is bus 0's, even when the window starts at a later bus.
        let buses = u64::from(bus_end - bus_start) + 1;
        let Some(start) = base.checked_add(u64::from(bus_start) << 20) else {
            continue;
        };
        let Some(ecam) = PhysRange::from_start_size(start, buses << 20) else {
            continue;
        };
        let host = PciHost {
            ecam,
            bus_start,
            bus_end,
            bar_window: None,
        };
        if hosts.push(host).is_err() {
            defmt::warn!("ACPI: MCFG lists more than {=usize} windows", MAX_PCI_HOSTS);
            break;
        }
    }
    Ok(hosts)
}

/// The table with `wanted` signature that the RSDP's root table points to.
fn find_table<'a>(
    memory: &impl PhysicalMemory<'a>,
    rsdp_address: u64,
    wanted: [u8; 4],
) -> Result<&'a [u8], AcpiError> {
    let unreadable = |address| AcpiError::Unreadable {
        signature: "RSDP",
        address,
    };
    let rsdp = memory
        .read(rsdp_address, RSDP_V1_SIZE)
        .ok_or(unreadable(rsdp_address))?;
    if &rsdp[..8] != b"RSD PTR " {
        return Err(AcpiError::BadSignature {
            signature: "RSDP",
            address: rsdp_address,
        });
    }
    if !sums_to_zero(rsdp) {
        return Err(AcpiError::BadChecksum {
            signature: "RSDP",
            address: rsdp_address,
        });
    }

    let revision = rsdp[15];
    let (root_address, pointer_size) = if revision >= 2 {
        let rsdp = memory
            .read(rsdp_address, RSDP_V2_SIZE)
            .ok_or(unreadable(rsdp_address))?;
        (u64_at(rsdp, 24), 8)
    } else {
        (u64::from(u32_at(rsdp, 16)), 4)
    };
    let root_signature = if pointer_size == 8 {
        *b"XSDT"
    } else {
        *b"RSDT"
    };
    let root = table(memory, root_address, root_signature)?;

    for pointer in root[SDT_HEADER_SIZE..].chunks_exact(pointer_size) {
        let address = if pointer_size == 8 {
            u64_at(pointer, 0)
        } else {
            u64::from(u32_at(pointer, 0))
        };
        let Some(header) = memory.read(address, 4) else {
            continue;
        };
        if header == wanted {
            return table(memory, address, wanted);
        }
    }
    Err(AcpiError::NoMcfg)
}

/// The whole table at `address`, checked: signature, length, checksum.
fn table<'a>(
    memory: &impl PhysicalMemory<'a>,
    address: u64,
    signature: [u8; 4],
) -> Result<&'a [u8], AcpiError> {
    let name = match &signature {
        b"XSDT" => "XSDT",
        b"RSDT" => "RSDT",
        _ => "MCFG",
    };
    let header = memory
        .read(address, SDT_HEADER_SIZE)
        .ok_or(AcpiError::Unreadable {
            signature: name,
            address,
        })?;
    if header[..4] != signature {
        return Err(AcpiError::BadSignature {
            signature: name,
            address,
        });
    }
    let length = u32_at(header, 4) as usize;
    if !(SDT_HEADER_SIZE..=MAX_TABLE_SIZE).contains(&length) {
        return Err(AcpiError::BadLength {
            signature: name,
            address,
            length,
        });
    }
    let bytes = memory.read(address, length).ok_or(AcpiError::Unreadable {
        signature: name,
        address,
    })?;
    if !sums_to_zero(bytes) {
        return Err(AcpiError::BadChecksum {
            signature: name,
            address,
        });
    }
    Ok(bytes)
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte)) == 0
}

pub mod tests {
    //! In-kernel tests of the MCFG parser on made-up tables.

    use super::*;
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq};

    /// Where the made-up memory starts.
    const BASE: u64 = 0xe_0000;
    const XSDT: usize = 0x100;
    const MCFG: usize = 0x200;
    const SIZE: usize = 0x400;

    /// The test memory of this module's tests.
    type TablesMemory = super::super::pvh::tests::TestMemory<BASE, SIZE>;

    impl TablesMemory {
        /// Sets the checksum byte at `at` so that `range` sums to zero.
        fn fix_checksum(&mut self, range: core::ops::Range<usize>, at: usize) {
            self.bytes[at] = 0;
            let sum = self.bytes[range]
                .iter()
                .fold(0u8, |sum, &byte| sum.wrapping_add(byte));
            self.bytes[at] = sum.wrapping_neg();
        }

        /// An ACPI 2.0 RSDP at `BASE`, an XSDT listing one MCFG with one window
        /// (0xb000_0000, buses 0..=255) and one entry for another segment.
        fn valid() -> Self {
            let mut memory = Self::zeroed();
            memory.put(0, b"RSD PTR ");
            memory.bytes[15] = 2;
            memory.put(20, &(RSDP_V2_SIZE as u32).to_le_bytes());
            memory.put(24, &(BASE + XSDT as u64).to_le_bytes());
            memory.fix_checksum(0..RSDP_V1_SIZE, 8);
            memory.fix_checksum(0..RSDP_V2_SIZE, 32);

            let xsdt_length = SDT_HEADER_SIZE + 8;
            memory.put(XSDT, b"XSDT");
            memory.put(XSDT + 4, &(xsdt_length as u32).to_le_bytes());
            memory.put(XSDT + SDT_HEADER_SIZE, &(BASE + MCFG as u64).to_le_bytes());
            memory.fix_checksum(XSDT..XSDT + xsdt_length, XSDT + 9);

            let mcfg_length = MCFG_ENTRIES_OFFSET + 2 * MCFG_ENTRY_SIZE;
            memory.put(MCFG, b"MCFG");
            memory.put(MCFG + 4, &(mcfg_length as u32).to_le_bytes());
            let entry = MCFG + MCFG_ENTRIES_OFFSET;
            memory.put(entry, &0xb000_0000u64.to_le_bytes());
            memory.put(entry + 10, &[0, 255]);
            let other_segment = entry + MCFG_ENTRY_SIZE;
            memory.put(other_segment, &0xc000_0000u64.to_le_bytes());
            memory.put(other_segment + 8, &1u16.to_le_bytes());
            memory.fix_checksum(MCFG..MCFG + mcfg_length, MCFG + 9);
            memory
        }
    }

    pub fn finds_the_ecam_window_of_segment_0() -> TestResult {
        let memory = TablesMemory::valid();

        let hosts = pci_hosts(&&memory, BASE);

        ktest_assert!(hosts.is_ok(), "valid tables parse");
        let hosts = hosts.unwrap_or_default();
        ktest_assert_eq!(hosts.len(), 1);
        ktest_assert_eq!(hosts[0].ecam.start, 0xb000_0000);
        ktest_assert_eq!(hosts[0].ecam.end, 0xc000_0000);
        ktest_assert_eq!(hosts[0].bus_end, 255);
        Ok(())
    }

    pub fn refuses_corrupt_tables() -> TestResult {
        let mut bad_checksum = TablesMemory::valid();
        bad_checksum.bytes[MCFG + 20] ^= 1;
        ktest_assert!(
            matches!(
                pci_hosts(&&bad_checksum, BASE),
                Err(AcpiError::BadChecksum {
                    signature: "MCFG",
                    ..
                })
            ),
            "a flipped MCFG byte fails its checksum"
        );

        let mut huge = TablesMemory::valid();
        huge.put(XSDT + 4, &u32::MAX.to_le_bytes());
        ktest_assert!(
            matches!(pci_hosts(&&huge, BASE), Err(AcpiError::BadLength { .. })),
            "an absurd XSDT length is refused"
        );

        let mut no_signature = TablesMemory::valid();
        no_signature.bytes[0] = b'X';
        ktest_assert!(
            matches!(
                pci_hosts(&&no_signature, BASE),
                Err(AcpiError::BadSignature { .. })
            ),
            "an RSDP without its signature is refused"
        );
        ktest_assert!(
            matches!(pci_hosts(&&no_signature, 0), Err(AcpiError::NoRsdp)),
            "no RSDP, no windows"
        );
        Ok(())
    }
}
