//! Checks that a blob is a well-formed flattened device tree before the `fdt` crate reads it.
//!
//! `fdt` 0.1.5 trusts its input: it slices, unwraps and asserts as it walks the structure
//! block, so a corrupt or truncated tree would panic inside it. [`validate`] walks the header,
//! the memory-reservation block and every token of the structure block once, with bounds
//! checks, and accepts only the layout the crate handles. After it succeeds, the crate
//! functions the reader calls (`children`, `properties`, `property`, `cell_sizes`,
//! `memory_reservations`, `compatible`) cannot panic.
//!
//! What is accepted, beyond the devicetree specification's own rules:
//!
//! - at most [`MAX_DEPTH`] levels of nodes;
//! - `#address-cells` and `#size-cells` exactly 4 bytes long (the crate unwraps them);
//! - no `FDT_NOP` tokens (see Limitations).
//!
//! # Limitations
//!
//! `FDT_NOP` tokens are refused. Tools that edit a tree in place with libfdt's
//! `fdt_nop_node`/`fdt_nop_property` leave them; `dtc`, QEMU, OpenSBI and U-Boot's usual
//! fix-ups do not. `fdt` 0.1.5 skips NOPs in some places and not in others (where it then
//! asserts), so a tree with NOPs cannot be read through it safely.

use core::fmt;

/// Deepest node nesting accepted; the root is depth 1. Real trees stay below 10.
pub const MAX_DEPTH: usize = 32;

const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the version-17 header.
const HEADER_SIZE: usize = 40;
/// The header layout this reader knows (version 17, with `size_dt_struct`).
const SUPPORTED_VERSION: u32 = 17;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The blocks a device tree blob is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Block {
    /// The nodes and properties.
    Structure,
    /// Property names.
    Strings,
    /// `/memreserve/` entries.
    MemoryReservations,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Block::Structure => "structure",
            Block::Strings => "strings",
            Block::MemoryReservations => "memory reservation",
        })
    }
}

/// Why a blob is not a device tree the kernel can read. Offsets are in bytes from the start
/// of the structure block unless said otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum StructureError {
    /// The blob is shorter than the header.
    #[error("{length} bytes is too short for a device tree header")]
    TooShort { length: usize },
    /// The first word is not 0xd00dfeed.
    #[error("bad magic {0:#x} (expected 0xd00dfeed)")]
    BadMagic(u32),
    /// A header layout this reader does not know.
    #[error("unsupported version {version} (last compatible {last_compatible}); need 17")]
    UnsupportedVersion { version: u32, last_compatible: u32 },
    /// `totalsize` is larger than the bytes available, or smaller than the header.
    #[error("header says the blob is {total_size} bytes, but {available} are available")]
    BadTotalSize { total_size: u32, available: usize },
    /// A block does not lie inside the blob (offsets from the blob's start).
    #[error("{block} block at {offset:#x} (+{size:#x}) lies outside the blob")]
    BlockOutOfBounds {
        block: Block,
        offset: u32,
        size: u32,
    },
    /// A block is not aligned as the specification requires (offsets from the blob's start).
    #[error("{block} block at {offset:#x} is misaligned")]
    MisalignedBlock { block: Block, offset: u32 },
    /// The memory reservation block has no terminating (0, 0) entry.
    #[error("the memory reservation block has no terminating entry")]
    UnterminatedReservations,
    /// The structure block ends in the middle of something.
    #[error("structure block ends early at offset {offset:#x}")]
    UnexpectedEnd { offset: usize },
    /// A token that cannot appear here.
    #[error("unexpected token {token:#x} at offset {offset:#x}")]
    UnexpectedToken { offset: usize, token: u32 },
    /// An `FDT_NOP` token (see the module's Limitations).
    #[error("FDT_NOP token at offset {offset:#x} (not supported)")]
    NopToken { offset: usize },
    /// A node name that is not NUL-terminated UTF-8, or a root node with a name.
    #[error("bad node name at offset {offset:#x}")]
    BadNodeName { offset: usize },
    /// A property whose name offset does not lead to a NUL-terminated UTF-8 string.
    #[error("property at offset {offset:#x} has a bad name offset {name_offset:#x}")]
    BadPropertyName { offset: usize, name_offset: u32 },
    /// A property value that runs past the end of the structure block.
    #[error("property at offset {offset:#x} is {length} bytes long, past the block's end")]
    PropertyPastEnd { offset: usize, length: u32 },
    /// A property after a child node (properties come first).
    #[error("property at offset {offset:#x} follows a child node")]
    PropertyAfterChild { offset: usize },
    /// `#address-cells` or `#size-cells` is not one 32-bit cell.
    #[error("#address-cells or #size-cells at offset {offset:#x} is {length} bytes, not 4")]
    BadCellCount { offset: usize, length: u32 },
    /// Nodes nested deeper than [`MAX_DEPTH`].
    #[error("nodes nested deeper than {MAX_DEPTH} at offset {offset:#x}")]
    TooDeep { offset: usize },
}

/// The parts of the header the rest of the reader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `totalsize`: the blob's length in bytes.
    pub total_size: usize,
}

/// Checks `blob` (which may be longer than the tree) and returns the header.
pub fn validate(blob: &[u8]) -> Result<Header, StructureError> {
    let field = |index: usize| be_u32(blob, index * 4);
    let (Some(magic), Some(total_size)) = (field(0), field(1)) else {
        return Err(StructureError::TooShort { length: blob.len() });
    };
    if magic != FDT_MAGIC {
        return Err(StructureError::BadMagic(magic));
    }
    let Some(header) = blob.get(..HEADER_SIZE) else {
        return Err(StructureError::TooShort { length: blob.len() });
    };
    if (total_size as usize) < HEADER_SIZE || total_size as usize > blob.len() {
        return Err(StructureError::BadTotalSize {
            total_size,
            available: blob.len(),
        });
    }
    let blob = &blob[..total_size as usize];

    let field = |index: usize| be_u32(header, index * 4).unwrap_or(0);
    let (structure_offset, strings_offset, reservations_offset) = (field(2), field(3), field(4));
    let (version, last_compatible) = (field(5), field(6));
    let (strings_size, structure_size) = (field(8), field(9));
    if version < SUPPORTED_VERSION || last_compatible > SUPPORTED_VERSION {
        return Err(StructureError::UnsupportedVersion {
            version,
            last_compatible,
        });
    }

    let structure = block(blob, Block::Structure, structure_offset, structure_size, 4)?;
    let strings = block(blob, Block::Strings, strings_offset, strings_size, 1)?;
    // The reservation block has no size field: it ends where the next block starts.
    let reservations_end = [structure_offset, strings_offset, total_size]
        .into_iter()
        .filter(|&offset| offset > reservations_offset)
        .min()
        .unwrap_or(total_size);
    let reservations_size = reservations_end - reservations_offset.min(reservations_end);
    let reservations = block(
        blob,
        Block::MemoryReservations,
        reservations_offset,
        reservations_size,
        8,
    )?;

    check_reservations(reservations)?;
    check_structure(structure, strings)?;
    Ok(Header {
        total_size: total_size as usize,
    })
}

/// The bytes of one block, checked to lie inside the blob, after the header, aligned.
fn block(
    blob: &[u8],
    kind: Block,
    offset: u32,
    size: u32,
    alignment: u32,
) -> Result<&[u8], StructureError> {
    let out_of_bounds = StructureError::BlockOutOfBounds {
        block: kind,
        offset,
        size,
    };
    if (offset as usize) < HEADER_SIZE {
        return Err(out_of_bounds);
    }
    if !offset.is_multiple_of(alignment) {
        return Err(StructureError::MisalignedBlock {
            block: kind,
            offset,
        });
    }
    let end = (offset as usize)
        .checked_add(size as usize)
        .ok_or(out_of_bounds)?;
    blob.get(offset as usize..end).ok_or(out_of_bounds)
}

/// The reservation entries (address, size) must end with a (0, 0) entry inside the block.
fn check_reservations(block: &[u8]) -> Result<(), StructureError> {
    for entry in block.chunks_exact(16) {
        if entry.iter().all(|&byte| byte == 0) {
            return Ok(());
        }
    }
    Err(StructureError::UnterminatedReservations)
}

/// Walks every token of the structure block.
fn check_structure(structure: &[u8], strings: &[u8]) -> Result<(), StructureError> {
    let mut reader = Reader {
        bytes: structure,
        offset: 0,
    };
    let mut depth = 0usize;
    // Whether the innermost open node already has a child (no properties may follow).
    let mut had_child = false;

    loop {
        let offset = reader.offset;
        let token = reader.u32()?;
        match token {
            FDT_BEGIN_NODE => {
                let name = reader
                    .name()
                    .ok_or(StructureError::BadNodeName { offset })?;
                if depth == 0 && offset != 0 {
                    // A second root after the first one closed.
                    return Err(StructureError::UnexpectedToken { offset, token });
                }
                if depth == 0 && !name.is_empty() {
                    return Err(StructureError::BadNodeName { offset });
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(StructureError::TooDeep { offset });
                }
                had_child = false;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(StructureError::UnexpectedToken { offset, token });
                }
                if had_child {
                    return Err(StructureError::PropertyAfterChild { offset });
                }
                let length = reader.u32()?;
                let name_offset = reader.u32()?;
                reader
                    .skip_padded(length as usize)
                    .ok_or(StructureError::PropertyPastEnd { offset, length })?;
                let name = string_at(strings, name_offset as usize).ok_or(
                    StructureError::BadPropertyName {
                        offset,
                        name_offset,
                    },
                )?;
                if matches!(name, "#address-cells" | "#size-cells") && length != 4 {
                    return Err(StructureError::BadCellCount { offset, length });
                }
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(StructureError::UnexpectedToken { offset, token });
                }
                depth -= 1;
                had_child = true;
            }
            FDT_END => {
                if depth != 0 || offset == 0 {
                    return Err(StructureError::UnexpectedToken { offset, token });
                }
                return Ok(());
            }
            FDT_NOP => return Err(StructureError::NopToken { offset }),
            _ => return Err(StructureError::UnexpectedToken { offset, token }),
        }
    }
}

/// A cursor over the structure block; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, StructureError> {
        let value = be_u32(self.bytes, self.offset).ok_or(StructureError::UnexpectedEnd {
            offset: self.offset,
        })?;
        self.offset += 4;
        Ok(value)
    }

    /// Skips `length` bytes and the padding to the next 4-byte boundary.
    fn skip_padded(&mut self, length: usize) -> Option<()> {
        let padded = length.checked_add(3)? & !3;
        let end = self.offset.checked_add(padded)?;
        if end > self.bytes.len() {
            return None;
        }
        self.offset = end;
        Some(())
    }

    /// Reads a NUL-terminated UTF-8 node name and its padding.
    fn name(&mut self) -> Option<&'a str> {
        let name = string_at(self.bytes, self.offset)?;
        self.skip_padded(name.len() + 1)?;
        Some(name)
    }
}

/// The NUL-terminated UTF-8 string at `offset` in `bytes`.
fn string_at(bytes: &[u8], offset: usize) -> Option<&str> {
    let tail = bytes.get(offset..)?;
    let length = tail.iter().position(|&byte| byte == 0)?;
    core::str::from_utf8(&tail[..length]).ok()
}

/// The big-endian u32 at `offset`, if all four bytes are there.
fn be_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let word: [u8; 4] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}
