//! Kernel images other than the ELF: the flat binary a boot loader copies to memory as it is,
//! and the padded firmware that makes QEMU load it at a second address.
//!
//! The kernel must not assume where it is loaded. QEMU's `virt` machine loads the ELF at
//! 0x80200000, the first 2 MiB boundary after OpenSBI. A flat (non-ELF) `-kernel` image goes to
//! the first 2 MiB boundary after the end of the `-bios` file, so padding OpenSBI's
//! `fw_dynamic.bin` to 2600 KiB (it ends at 0x8028a000) moves the kernel to 0x80400000. The
//! flat image is what `objcopy -O binary` makes; the riscv64 kernel begins with a Linux `Image`
//! header, so the same bytes are what U-Boot's `booti` takes on a board.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use object::Endianness;
use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};

/// OpenSBI as Debian's `qemu-system-data` installs it: what `-bios default` loads on riscv64.
pub const OPENSBI_FW_DYNAMIC: &str = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin";

/// The size OpenSBI is padded to so that QEMU loads a flat kernel at 0x80400000 (RAM starts
/// at 0x80000000; 0x80000000 + 2600 KiB rounds up to the next 2 MiB boundary, 0x80400000).
pub const PADDED_FIRMWARE_SIZE: u64 = 2600 * 1024;

/// The largest flat image made; a kernel ELF whose segments span more is refused rather than
/// filling the disk with zeroes.
const MAX_FLAT_IMAGE_SIZE: u64 = 256 * 1024 * 1024;

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the kernel is not a 64-bit ELF file: {0}")]
    NotElf64(object::Error),
    #[error("the kernel ELF's program headers are unreadable: {0}")]
    BadProgramHeaders(object::Error),
    #[error("the kernel ELF has no loadable segment with contents")]
    NoLoadableSegments,
    #[error("the contents of the segment at physical address {paddr:#x} lie outside the file")]
    SegmentOutsideFile { paddr: u64 },
    #[error("segment at physical address {paddr:#x} with {size:#x} bytes wraps around")]
    SegmentWraps { paddr: u64, size: u64 },
    #[error("segments at physical addresses {first:#x} and {second:#x} overlap")]
    OverlappingSegments { first: u64, second: u64 },
    #[error("the loadable segments span {size:#x} bytes, more than {MAX_FLAT_IMAGE_SIZE:#x}")]
    TooLarge { size: u64 },
    #[error("the firmware {path} is {size} bytes, more than the {limit} it is padded to")]
    FirmwareTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A flat binary image of the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatImage {
    /// The physical address the ELF links the first byte to (the lowest loadable segment).
    pub link_address: u64,
    /// The bytes: every loadable segment's file contents at its physical address relative to
    /// [`FlatImage::link_address`], gaps zero-filled; `.bss` (beyond a segment's file size) is
    /// not included.
    pub bytes: Vec<u8>,
}

/// Converts a kernel ELF to a flat binary image, as `objcopy -O binary` does.
pub fn flat_image(elf: &[u8]) -> Result<FlatImage, ImageError> {
    let header = FileHeader64::<Endianness>::parse(elf).map_err(ImageError::NotElf64)?;
    let endian = header.endian().map_err(ImageError::NotElf64)?;
    let program_headers = header
        .program_headers(endian, elf)
        .map_err(ImageError::BadProgramHeaders)?;

    let mut segments = Vec::new();
    for program_header in program_headers {
        if program_header.p_type(endian) != PT_LOAD || program_header.p_filesz(endian) == 0 {
            continue;
        }
        let paddr = program_header.p_paddr(endian);
        let contents = program_header
            .data(endian, elf)
            .map_err(|()| ImageError::SegmentOutsideFile { paddr })?;
        let size = contents.len() as u64;
        let end = paddr
            .checked_add(size)
            .ok_or(ImageError::SegmentWraps { paddr, size })?;
        segments.push((paddr, end, contents));
    }
    segments.sort_by_key(|&(paddr, _, _)| paddr);

    for pair in segments.windows(2) {
        let (first, first_end, _) = pair[0];
        let (second, _, _) = pair[1];
        if second < first_end {
            return Err(ImageError::OverlappingSegments { first, second });
        }
    }
    let link_address = segments.first().ok_or(ImageError::NoLoadableSegments)?.0;
    let end = segments
        .iter()
        .map(|&(_, end, _)| end)
        .max()
        .unwrap_or(link_address);
    let size = end - link_address;
    if size > MAX_FLAT_IMAGE_SIZE {
        return Err(ImageError::TooLarge { size });
    }

    let mut bytes = vec![0; size as usize];
    for (paddr, end, contents) in segments {
        let start = (paddr - link_address) as usize;
        let end = (end - link_address) as usize;
        bytes[start..end].copy_from_slice(contents);
    }
    Ok(FlatImage {
        link_address,
        bytes,
    })
}

/// Pads `firmware` with zeroes to `size` bytes (`truncate -s`); `path` names it in errors.
pub fn pad_firmware(firmware: &[u8], size: u64, path: &Path) -> Result<Vec<u8>, ImageError> {
    let firmware_size = firmware.len() as u64;
    if firmware_size > size {
        return Err(ImageError::FirmwareTooLarge {
            path: path.to_owned(),
            size: firmware_size,
            limit: size,
        });
    }
    let mut padded = firmware.to_vec();
    padded.resize(size as usize, 0);
    Ok(padded)
}

/// Writes OpenSBI padded to [`PADDED_FIRMWARE_SIZE`] into `directory`; returns its path.
pub fn write_padded_opensbi(directory: &Path) -> Result<PathBuf, ImageError> {
    let source = Path::new(OPENSBI_FW_DYNAMIC);
    let firmware = fs::read(source).map_err(|source_error| ImageError::Io {
        action: "reading",
        path: source.to_owned(),
        source: source_error,
    })?;
    let padded = pad_firmware(&firmware, PADDED_FIRMWARE_SIZE, source)?;
    let path = directory.join("opensbi-fw_dynamic-padded-2600K.bin");
    write_atomically(&path, &padded)?;
    Ok(path)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a concurrent
/// reader (another test thread booting the same image) never sees a half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    static TEMPORARY_FILES: AtomicU64 = AtomicU64::new(0);

    let io_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    };
    if let Some(directory) = path.parent() {
        fs::create_dir_all(directory).map_err(io_error("creating", directory))?;
    }
    let unique = TEMPORARY_FILES.fetch_add(1, Ordering::Relaxed);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}-{unique}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, bytes).map_err(io_error("writing", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("renaming a temporary file to", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::elf::{EM_RISCV, ET_EXEC, PF_R, PF_W, PF_X, PT_NOTE};
    use object::write::elf::{FileHeader as WriteFileHeader, ProgramHeader as WriteProgramHeader};

    /// A segment of a test ELF: type, physical address, file contents, size in memory.
    struct Segment {
        p_type: u32,
        paddr: u64,
        contents: Vec<u8>,
        memsz: u64,
    }

    /// Writes an ELF executable with `segments` as program headers (and no sections).
    fn elf_with_segments(segments: &[Segment]) -> Vec<u8> {
        let mut buffer = Vec::new();
        let mut writer = object::write::elf::Writer::new(Endianness::Little, true, &mut buffer);
        writer.reserve_file_header();
        writer.reserve_program_headers(segments.len() as u32);
        let offsets: Vec<usize> = segments
            .iter()
            .map(|segment| writer.reserve(segment.contents.len(), 16))
            .collect();

        writer
            .write_file_header(&WriteFileHeader {
                os_abi: 0,
                abi_version: 0,
                e_type: ET_EXEC,
                e_machine: EM_RISCV,
                e_entry: 0xffff_ffff_8000_0000,
                e_flags: 0,
            })
            .unwrap();
        writer.write_align_program_headers();
        for (segment, &offset) in segments.iter().zip(&offsets) {
            writer.write_program_header(&WriteProgramHeader {
                p_type: segment.p_type,
                p_flags: PF_R | PF_W | PF_X,
                p_offset: offset as u64,
                // Linked in the higher half, loaded low: the image follows the physical address.
                p_vaddr: segment.paddr.wrapping_add(0xffff_ffff_0000_0000),
                p_paddr: segment.paddr,
                p_filesz: segment.contents.len() as u64,
                p_memsz: segment.memsz,
                p_align: 16,
            });
        }
        for segment in segments {
            writer.write_align(16);
            writer.write(&segment.contents);
        }
        buffer
    }

    fn load(paddr: u64, contents: &[u8], memsz: u64) -> Segment {
        Segment {
            p_type: PT_LOAD,
            paddr,
            contents: contents.to_vec(),
            memsz,
        }
    }

    #[test]
    fn segments_are_laid_out_by_physical_address_with_zero_gaps() {
        // Given out of order, with a gap of 4 bytes, a note that is not loaded, and a .bss tail.
        let elf = elf_with_segments(&[
            load(0x8020_0010, b"DATA", 0x1000),
            Segment {
                p_type: PT_NOTE,
                paddr: 0,
                contents: b"note".to_vec(),
                memsz: 4,
            },
            load(0x8020_0000, b"TEXT-0123456", 12),
            load(0x8030_0000, b"", 0x8000), // .bss only: nothing in the image
        ]);

        let image = flat_image(&elf).unwrap();

        assert_eq!(image.link_address, 0x8020_0000);
        assert_eq!(image.bytes, b"TEXT-0123456\0\0\0\0DATA");
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let elf = elf_with_segments(&[load(0x1000, b"abcdefgh", 8), load(0x1004, b"ijkl", 4)]);
        assert!(matches!(
            flat_image(&elf),
            Err(ImageError::OverlappingSegments {
                first: 0x1000,
                second: 0x1004
            })
        ));
    }

    #[test]
    fn elf_without_contents_is_refused() {
        let elf = elf_with_segments(&[load(0x1000, b"", 0x100)]);
        assert!(matches!(
            flat_image(&elf),
            Err(ImageError::NoLoadableSegments)
        ));
    }

    #[test]
    fn huge_span_is_refused() {
        let elf = elf_with_segments(&[load(0x1000, b"a", 1), load(0x1_0000_1000, b"b", 1)]);
        assert!(matches!(flat_image(&elf), Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn wrapping_segment_is_refused() {
        let elf = elf_with_segments(&[load(u64::MAX - 1, b"abcd", 4)]);
        assert!(matches!(
            flat_image(&elf),
            Err(ImageError::SegmentWraps { .. })
        ));
    }

    #[test]
    fn not_an_elf_is_refused() {
        assert!(matches!(
            flat_image(b"MZ\0\0 not an ELF"),
            Err(ImageError::NotElf64(_))
        ));
        assert!(matches!(flat_image(&[]), Err(ImageError::NotElf64(_))));
    }

    #[test]
    fn firmware_is_padded_with_zeroes() {
        let padded = pad_firmware(b"sbi", 8, Path::new("fw.bin")).unwrap();
        assert_eq!(padded, b"sbi\0\0\0\0\0");
        assert!(matches!(
            pad_firmware(b"too large", 4, Path::new("fw.bin")),
            Err(ImageError::FirmwareTooLarge {
                size: 9,
                limit: 4,
                ..
            })
        ));
    }
}
