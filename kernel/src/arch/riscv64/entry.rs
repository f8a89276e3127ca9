//! The first instructions: the Linux `Image` header and the position-independent code that
//! turns the MMU on and enters Rust at the kernel's linked (higher-half) address.
//!
//! The firmware starts the boot hart at the first byte of the image, in S-mode with the MMU
//! off, `a0` = hart id and `a1` = physical address of the device tree. The image can sit at
//! any 2 MiB-aligned physical address, so until `satp` is written the code only uses
//! PC-relative addressing (`lla`, branches): an `lla` run at the physical address yields the
//! physical address of a symbol. Link-time (virtual) addresses are read as data from `.dword`
//! literals and only used as numbers or after the MMU is on.
//!
//! Steps:
//!
//! 1. Mask interrupts, enable the FPU (the riscv64gc ABI may use it), keep `a0`/`a1` in
//!    callee-saved registers, take the load address from `lla _start`.
//! 2. Refuse a load address that is not 2 MiB aligned or at or above 256 GiB (printing why
//!    through the SBI legacy console, the only output there is this early), then hang.
//! 3. Zero `.bss` (a flat image has no loader that would).
//! 4. Fill the root table in `.bss`: the direct map (64 gigapages from root entry 256), the
//!    kernel window (one level-1 table of 2 MiB leaves from the linked start of the kernel to
//!    the load address), and the identity gigapage around the load address. Every leaf has A
//!    and D set.
//! 5. Point `stvec` at the higher-half continuation (so even a fault on the next fetch would
//!    land there), write `satp` (Sv39) with `sfence.vma` around it, and jump to the
//!    continuation, whose address is a link-time `.dword`.
//! 6. At the linked address: set `sp` to the top of the boot stack, clear the frame pointer
//!    and call [`startup::start`](super::startup::start)`(hart id, device tree, load address)`.
//!
//! The `Image` header (64 bytes, version 0.2) is what U-Boot `booti` checks (`magic2`) and
//! reads (`text_offset`, `image_size`); QEMU and OpenSBI just jump to its first word, a
//! 4-byte `j` over the header.

use super::paging::{
    DIRECT_MAP_FIRST_ENTRY, DIRECT_MAP_GIGAPAGES, MEGAPAGE_SIZE, SATP_MODE_SHIFT, SATP_MODE_SV39,
    pte,
};
use super::startup;

/// Size of the boot stack (in `.bss`), which the kernel keeps using after boot.
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

/// Where U-Boot `booti` puts the image, relative to the start of RAM (the `Image` header's
/// `text_offset`): 2 MiB, as for Linux on RV64.
const IMAGE_TEXT_OFFSET: u64 = 0x20_0000;

/// `Image` header version 0.2, as `major << 16 | minor`.
const IMAGE_HEADER_VERSION: u32 = 2;

/// `sstatus.FS` = Initial: floating-point registers usable.
const SSTATUS_FS_INITIAL: u64 = 1 << 13;

/// SBI legacy extension "console putchar" (EID 0x01), for the boot failure messages.
const SBI_LEGACY_CONSOLE_PUTCHAR: u64 = 1;

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .option push
    .option norvc
    .option norelax
    .global _start
_start:
    # Linux RISC-V Image header: code0, code1, text_offset, image_size, flags, version,
    # res1, res2, magic, magic2, res3.
    j       .Lboot
    .word   0
    .dword  {text_offset}
    .dword  __kernel_image_size
    .dword  0                           # flags: little endian
    .word   {header_version}
    .word   0
    .dword  0
    .ascii  "RISCV"
    .byte   0, 0, 0
    .byte   'R', 'S', 'C', 0x05
    .word   0

.Lboot:
    csrw    sie, zero
    csrci   sstatus, 2                  # sstatus.SIE
    li      t0, {sstatus_fs_initial}
    csrs    sstatus, t0

    mv      s0, a0                      # boot hart id
    mv      s1, a1                      # device tree, physical
    lla     s2, _start                  # load address, physical

    li      t0, {megapage_mask}
    and     t0, s2, t0
    lla     s4, .Lmessage_misaligned
    bnez    t0, .Lboot_failed
    srli    t0, s2, 38
    lla     s4, .Lmessage_too_high
    bnez    t0, .Lboot_failed

    # Zero .bss, which holds the page tables and the boot stack.
    lla     t0, __bss_start
    lla     t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    lla     s3, boot_root_table

    # Direct map: root[first + i] = gigapage at physical i GiB, for i in 0..count.
    li      t0, {direct_map_first_entry} * 8
    add     t0, s3, t0
    li      t1, {direct_map_leaf}
    li      t2, 1 << (30 - 12 + {ppn_shift})
    li      t3, {direct_map_gigapages}
3:  sd      t1, 0(t0)
    add     t1, t1, t2
    addi    t0, t0, 8
    addi    t3, t3, -1
    bnez    t3, 3b

    # Kernel window: root[VPN2(start)] -> boot_kernel_table, whose entries from VPN1(start)
    # map consecutive 2 MiB pages from the load address, up to the end of the image.
    ld      t4, .Lkernel_start_link_address
    ld      t5, .Lkernel_end_link_address
    lla     t0, boot_kernel_table
    srli    t1, t0, 12
    slli    t1, t1, {ppn_shift}
    ori     t1, t1, {table}
    srli    t2, t4, 30
    andi    t2, t2, 511
    slli    t2, t2, 3
    add     t2, s3, t2
    sd      t1, 0(t2)

    srli    t2, t4, 21
    andi    t2, t2, 511
    slli    t2, t2, 3
    add     t0, t0, t2
    sub     t3, t5, t4
    li      t2, {megapage_mask}
    add     t3, t3, t2
    srli    t3, t3, 21                  # number of 2 MiB pages
    srli    t1, s2, 12
    slli    t1, t1, {ppn_shift}
    ori     t1, t1, {kernel_leaf}
    li      t2, 1 << (21 - 12 + {ppn_shift})
4:  sd      t1, 0(t0)
    add     t1, t1, t2
    addi    t0, t0, 8
    addi    t3, t3, -1
    bnez    t3, 4b

    # Identity gigapage around the load address (lower half: the address is < 256 GiB).
    srli    t0, s2, 30
    slli    t1, t0, 30 - 12 + {ppn_shift}
    ori     t1, t1, {identity_leaf}
    slli    t0, t0, 3
    add     t0, s3, t0
    sd      t1, 0(t0)

    # Sv39 on.
    ld      t2, .Lhigher_half_link_address
    csrw    stvec, t2
    srli    t0, s3, 12
    li      t1, {satp_mode_sv39}
    slli    t1, t1, {satp_mode_shift}
    or      t0, t0, t1
    sfence.vma
    csrw    satp, t0
    sfence.vma
    jr      t2

.Lhigher_half:
    lla     sp, boot_stack_top
    mv      a0, s0
    mv      a1, s1
    mv      a2, s2
    mv      s0, zero                    # end of the frame-pointer chain
    call    {start}
5:  wfi
    j       5b

    # s4: NUL-terminated message. Print it through the SBI legacy console and hang.
.Lboot_failed:
    lbu     a0, 0(s4)
    beqz    a0, 6f
    li      a7, {sbi_console_putchar}
    ecall
    addi    s4, s4, 1
    j       .Lboot_failed
6:  wfi
    j       6b

    .balign 8
.Lkernel_start_link_address:
    .dword  __kernel_start
.Lkernel_end_link_address:
    .dword  __kernel_end
.Lhigher_half_link_address:
    .dword  .Lhigher_half

.Lmessage_misaligned:
    .asciz  "kernel: load address is not 2 MiB aligned; cannot map the kernel\n"
.Lmessage_too_high:
    .asciz  "kernel: load address is above 256 GiB; cannot identity-map the boot code\n"
    .option pop

    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
boot_root_table:
    .space  4096
boot_kernel_table:
    .space  4096
    .balign 16
boot_stack_bottom:
    .space  {boot_stack_size}
boot_stack_top:
    "#,
    text_offset = const IMAGE_TEXT_OFFSET,
    header_version = const IMAGE_HEADER_VERSION,
    sstatus_fs_initial = const SSTATUS_FS_INITIAL,
    megapage_mask = const MEGAPAGE_SIZE - 1,
    direct_map_first_entry = const DIRECT_MAP_FIRST_ENTRY,
    direct_map_gigapages = const DIRECT_MAP_GIGAPAGES,
    direct_map_leaf = const pte::DIRECT_MAP_LEAF,
    kernel_leaf = const pte::KERNEL_LEAF,
    identity_leaf = const pte::IDENTITY_LEAF,
    table = const pte::TABLE,
    ppn_shift = const pte::PPN_SHIFT,
    satp_mode_sv39 = const SATP_MODE_SV39,
    satp_mode_shift = const SATP_MODE_SHIFT,
    sbi_console_putchar = const SBI_LEGACY_CONSOLE_PUTCHAR,
    boot_stack_size = const BOOT_STACK_SIZE,
    start = sym startup::start,
);
