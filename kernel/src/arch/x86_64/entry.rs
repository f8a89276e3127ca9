//! The PVH entry: from 32-bit protected mode without paging to Rust in the higher half.
//!
//! QEMU (and any PVH loader) finds the entry point in the `XEN_ELFNOTE_PHYS32_ENTRY` ELF
//! note and starts it in 32-bit protected mode with flat segments, paging off, interrupts
//! off and `ebx` holding the physical address of `hvm_start_info`. The code below, linked
//! at its physical address in `.boot32`:
//!
//! 1. checks that the CPU has long mode (if not, exits QEMU with `ExitCode::Fault` and
//!    halts: no console is set up this early);
//! 2. zeroes `.bss` (QEMU already does, but another loader may not);
//! 3. fills [`BOOT_PAGE_TABLES`](super::paging::BOOT_PAGE_TABLES): the first 4 GiB mapped
//!    both at 0 (identity) and at the direct map base, and the kernel image at its link
//!    address, all with 2 MiB pages;
//! 4. enables PAE, loads CR3, sets EFER.LME (and EFER.NXE when the CPU has it), enables
//!    paging (and CR0.WP), loads a GDT with a 64-bit code segment and far-jumps to 64-bit
//!    code, still in the identity map;
//! 5. jumps to the higher half, switches to [`BOOT_STACK`] and calls
//!    [`start`](super::start) with the `start_info` address.
//!
//! The GDT here only serves the switch to long mode; `segments.rs` loads the kernel's own
//! before the identity map (where this one lies) goes away.

use core::mem::offset_of;

use super::Stack;
use super::paging::{
    BOOT_DIRECT_MAP_GIB, BOOT_PAGE_TABLES, DIRECT_MAP_PML4_SLOT, IDENTITY_PML4_SLOT, KERNEL_BASE,
    KERNEL_PDPT_SLOT, KERNEL_PML4_SLOT, PageTables,
};
use crate::ExitCode;

/// Size of the boot stack, which `kernel_main` and everything it calls run on.
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

/// The stack of the boot CPU.
pub static BOOT_STACK: Stack<BOOT_STACK_SIZE> = Stack::new();

/// The PVH note's type: the 32-bit physical entry address.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The I/O port of QEMU's `isa-debug-exit` device, which the runner adds.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

core::arch::global_asm!(
    // The PVH note. QEMU reads its descriptor as a pointer-sized (8-byte) value.
    ".pushsection .note.pvh, \"a\", @note",
    ".p2align 2",
    ".long 4",                  // name size: "Xen\0"
    ".long 8",                  // descriptor size
    ".long {note_type}",
    ".asciz \"Xen\"",
    ".p2align 2",
    ".quad x86_64_pvh_entry",
    ".popsection",

    ".pushsection .boot32, \"awx\"",
    ".code32",
    ".globl x86_64_pvh_entry",
    "x86_64_pvh_entry:",
    "    cli",
    "    cld",
    "    mov %ebx, %esi",           // start_info; `cpuid` overwrites ebx

    // Long mode (CPUID 0x80000001 EDX bit 29) is required; NX (bit 20) is optional.
    "    mov $0x80000000, %eax",
    "    cpuid",
    "    cmp $0x80000001, %eax",
    "    jb .Lno_long_mode",
    "    mov $0x80000001, %eax",
    "    cpuid",
    "    bt $29, %edx",
    "    jnc .Lno_long_mode",
    "    mov %edx, %ebp",           // extended feature flags, for NX below

    // Zero .bss (its bounds are 4-byte aligned).
    "    mov $__bss_phys_start, %edi",
    "    mov $__bss_phys_end, %ecx",
    "    sub %edi, %ecx",
    "    shr $2, %ecx",
    "    xor %eax, %eax",
    "    rep stosl",

    // edi = physical address of the page tables (they are linked in the higher half).
    "    mov ${tables} - {kernel_base}, %edi",

    // PML4: the identity and direct map slots share one PDPT; the kernel slot has its own.
    "    lea {direct_pdpt}+3(%edi), %eax",
    "    mov %eax, {identity_slot}*8(%edi)",
    "    mov %eax, {direct_slot}*8(%edi)",
    "    lea {kernel_pdpt}+3(%edi), %eax",
    "    mov %eax, {kernel_slot}*8(%edi)",
    "    lea {kernel_pd}+3(%edi), %eax",
    "    mov %eax, {kernel_pdpt}+{kernel_pdpt_slot}*8(%edi)",

    // Direct map PDPT slots 0..BOOT_DIRECT_MAP_GIB point at the first page directories.
    "    xor %ecx, %ecx",
    "1:  mov %ecx, %eax",
    "    shl $12, %eax",
    "    lea {direct_pds}+3(%edi,%eax), %eax",
    "    mov %eax, {direct_pdpt}(%edi,%ecx,8)",
    "    inc %ecx",
    "    cmp ${boot_gib}, %ecx",
    "    jb 1b",

    // ...which map the first BOOT_DIRECT_MAP_GIB GiB with 2 MiB pages (present, writable,
    // large). Entry i maps physical i << 21; its upper half holds the bits above 4 GiB.
    "    xor %ecx, %ecx",
    "1:  mov %ecx, %eax",
    "    shl $21, %eax",
    "    or $0x83, %eax",
    "    mov %eax, {direct_pds}(%edi,%ecx,8)",
    "    mov %ecx, %eax",
    "    shr $11, %eax",
    "    mov %eax, {direct_pds}+4(%edi,%ecx,8)",
    "    inc %ecx",
    "    cmp ${boot_gib}*512, %ecx",
    "    jb 1b",

    // The kernel window: 2 MiB pages over physical 0..__kernel_phys_end, at KERNEL_BASE.
    "    mov $__kernel_phys_end + 0x1fffff, %edx",
    "    shr $21, %edx",
    "    xor %ecx, %ecx",
    "1:  mov %ecx, %eax",
    "    shl $21, %eax",
    "    or $0x83, %eax",
    "    mov %eax, {kernel_pd}(%edi,%ecx,8)",
    "    inc %ecx",
    "    cmp %edx, %ecx",
    "    jb 1b",

    // PAE, CR3, EFER.LME (+ NXE), then paging and write protection: long mode is on.
    "    mov %cr4, %eax",
    "    or $0x20, %eax",
    "    mov %eax, %cr4",
    "    mov %edi, %cr3",
    "    mov $0xc0000080, %ecx",
    "    rdmsr",
    "    or $0x100, %eax",
    "    bt $20, %ebp",
    "    jnc 1f",
    "    or $0x800, %eax",
    "1:  wrmsr",
    "    mov %cr0, %eax",
    "    or $0x80010000, %eax",
    "    mov %eax, %cr0",

    "    lgdt .Lboot_gdt_pointer",
    "    ljmp $0x08, $.Lboot64",

    ".Lno_long_mode:",
    "    mov ${fault}, %eax",
    "    mov ${exit_port}, %edx",
    "    out %eax, %dx",
    "1:  hlt",
    "    jmp 1b",

    // Null, 64-bit code (0x08), data (0x10).
    ".p2align 3",
    ".Lboot_gdt:",
    "    .quad 0",
    "    .quad 0x00af9a000000ffff",
    "    .quad 0x00cf92000000ffff",
    ".Lboot_gdt_end:",
    ".Lboot_gdt_pointer:",
    "    .word .Lboot_gdt_end - .Lboot_gdt - 1",
    "    .long .Lboot_gdt",

    // 64-bit code, still at its physical address: load the data segments and jump to the
    // higher half.
    ".code64",
    ".Lboot64:",
    "    mov $0x10, %eax",
    "    mov %eax, %ds",
    "    mov %eax, %es",
    "    mov %eax, %ss",
    "    xor %eax, %eax",
    "    mov %eax, %fs",
    "    mov %eax, %gs",
    "    movabs $.Lhigher_half, %rax",
    "    jmp *%rax",
    ".popsection",

    ".pushsection .text.boot64, \"ax\"",
    ".Lhigher_half:",
    "    lea {stack}+{stack_size}(%rip), %rsp",
    "    xor %ebp, %ebp",
    "    mov %esi, %edi",
    "    call {start}",
    "    ud2",
    ".popsection",

    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    tables = sym BOOT_PAGE_TABLES,
    kernel_base = const KERNEL_BASE,
    direct_pdpt = const offset_of!(PageTables, direct_map_pdpt),
    kernel_pdpt = const offset_of!(PageTables, kernel_pdpt),
    kernel_pd = const offset_of!(PageTables, kernel_pd),
    direct_pds = const offset_of!(PageTables, direct_map_pds),
    identity_slot = const IDENTITY_PML4_SLOT,
    direct_slot = const DIRECT_MAP_PML4_SLOT,
    kernel_slot = const KERNEL_PML4_SLOT,
    kernel_pdpt_slot = const KERNEL_PDPT_SLOT,
    boot_gib = const BOOT_DIRECT_MAP_GIB,
    fault = const ExitCode::Fault as u32,
    exit_port = const DEBUG_EXIT_PORT,
    stack = sym BOOT_STACK,
    stack_size = const BOOT_STACK_SIZE,
    start = sym super::start,
    options(att_syntax),
);
