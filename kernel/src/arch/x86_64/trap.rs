//! Exceptions: the IDT, the entry stubs, the Rust handler, and the accesses that are allowed
//! to fault: `probe_read`, `probe_write` and `copy_to_window`.
//!
//! Each of the 32 exception vectors has a stub that makes the stack look the same
//! for every vector (it pushes a zero error code when the CPU pushes none, then the vector
//! number) and jumps to a common stub. That one saves every general-purpose register, so the
//! stack holds a [`TrapFrame`], calls [`handle_trap`] with it, restores the registers
//! (possibly changed by the handler) and returns with `iretq`. The unstable `x86-interrupt`
//! ABI is not needed.
//!
//! [`handle_trap`] decodes the frame into a [`Fault`]. A page fault in the file-mapping window
//! goes to [`crate::vm::handle_page_fault`] first; when that maps the page, the handler
//! returns and the access runs again (the kernel uses no SSE or x87 state, so the general
//! registers are all there is to keep). Otherwise, a fault at an instruction listed in the
//! exception table (`.ex_table`, pairs of instruction and fixup address, as Linux's
//! `__ex_table`) is expected: the handler records it, resumes at the fixup and the
//! instruction's owner reports it. [`probe_read`], [`probe_write`] and [`copy_to_window`]
//! have such instructions (`copy_to_window`'s is a `rep movsb`, which a fault leaves with
//! RCX = the bytes not copied; when the window maps the page, it simply goes on). Any other
//! exception is logged and stops the machine with [`ExitCode::Fault`].
//!
//! The double fault (vector 8) runs on its own stack (see `segments.rs`). Interrupts stay
//! disabled, so no vector above 31 is ever delivered and the IDT has only 32 entries.
//!
//! # Limitations
//!
//! The fault recorded for these accesses is a single global slot: correct for one CPU with
//! interrupts off; several CPUs would need one slot each.

use core::cell::Cell;

use critical_section::Mutex;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{Entry, HandlerFunc};

use super::segments::DOUBLE_FAULT_IST_INDEX;
use crate::ExitCode;
use crate::arch::{Access, Fault, FaultKind, ShortCopy};
use crate::vm::PageFaultOutcome;

/// How many vectors the IDT has: the architecture's exceptions.
const VECTOR_COUNT: usize = 32;

/// The vectors for which the CPU pushes an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC,
/// #CP, #VC and #SX (Intel SDM vol. 3, table 6-1; AMD APM vol. 2, table 8-1).
const fn pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// One bit per vector, set when the CPU pushes an error code (for the stubs).
const ERROR_CODE_VECTORS: u32 = {
    let mut mask = 0;
    let mut vector = 0;
    while vector < VECTOR_COUNT as u8 {
        if pushes_error_code(vector) {
            mask |= 1 << vector;
        }
        vector += 1;
    }
    mask
};

/// Vector numbers the handler treats specially.
const VECTOR_BREAKPOINT: u64 = 3;
const VECTOR_INVALID_OPCODE: u64 = 6;
const VECTOR_PAGE_FAULT: u64 = 14;

/// Page-fault error code bits.
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_INSTRUCTION_FETCH: u64 = 1 << 4;

/// The stack as the common stub leaves it: the registers it saved, then what the entry stub
/// and the CPU pushed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Pushed by the entry stub.
    pub vector: u64,
    /// Pushed by the CPU, or 0 by the entry stub.
    pub error_code: u64,
    /// The rest is the CPU's interrupt frame.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The common stub's `call` needs a 16-byte aligned stack: the CPU aligns it before pushing
// its frame, so the whole frame must be a multiple of 16 bytes.
const _: () = assert!(size_of::<TrapFrame>().is_multiple_of(16));

/// The IDT: the crate's gate type, pointed at the stubs. (The crate's typed table is made for
/// `x86-interrupt` handlers and has no way to fill the reserved vectors.)
#[repr(C, align(16))]
struct Idt([Entry<HandlerFunc>; VECTOR_COUNT]);

static IDT: Once<Idt> = Once::new();

/// Where an access listed in the exception table finds the fault it expects, filled in by
/// the handler.
static PROBE_FAULT: Mutex<Cell<Option<Fault>>> = Mutex::new(Cell::new(None));

/// Installs the IDT; from now on an exception is reported instead of resetting the machine.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut gates = [const { Entry::missing() }; VECTOR_COUNT];
        for (vector, gate) in gates.iter_mut().enumerate() {
            let options = idt::point_gate_at(gate, VirtAddr::new(stubs::stub_address(vector)));
            if vector == 8 {
                idt::use_ist(options, DOUBLE_FAULT_IST_INDEX);
            }
        }
        Idt(gates)
    });
    idt::load(idt);
    defmt::debug!("IDT loaded: {=usize} exception vectors", VECTOR_COUNT);
}

/// Reads the 8 bytes at `address`, reporting a fault instead of stopping the machine.
///
/// The read is one `mov` listed in the exception table; nothing else happens to memory.
pub fn probe_read(address: usize) -> Result<u64, Fault> {
    critical_section::with(|cs| PROBE_FAULT.borrow(cs).set(None));
    let value = stubs::probe_read_u64(address);
    match critical_section::with(|cs| PROBE_FAULT.borrow(cs).take()) {
        Some(fault) => Err(fault),
        None => Ok(value),
    }
}

/// Makes a write access to the byte at `address` without changing it (a locked OR of zero),
/// reporting a fault as `Err` instead of stopping: what brings a page of a private file
/// mapping in for writing ([`crate::vm::fault_in_writable`]).
pub fn probe_write(address: usize) -> Result<(), Fault> {
    critical_section::with(|cs| PROBE_FAULT.borrow(cs).set(None));
    stubs::probe_write_u8(address);
    match critical_section::with(|cs| PROBE_FAULT.borrow(cs).take()) {
        Some(fault) => Err(fault),
        None => Ok(()),
    }
}

/// Copies `source` to `destination`, an address range in the file-mapping window, and stops
/// at the first byte the window cannot serve (the page fault goes to
/// [`crate::vm::handle_page_fault`] first, so a page that can be mapped is mapped and the
/// copy goes on): then it says how many bytes it copied and what the fault was.
///
/// # Safety
///
/// The `source.len()` bytes at `destination` must lie in the file-mapping window, and no
/// reference to them may be alive: they are written behind the compiler's back.
pub unsafe fn copy_to_window(destination: usize, source: &[u8]) -> Result<(), ShortCopy> {
    critical_section::with(|cs| PROBE_FAULT.borrow(cs).set(None));
    // SAFETY: the bytes at `destination` lie in the window and no reference names them (the
    // caller's promises); `source` is a live slice of `source.len()` bytes.
    let remaining = unsafe { stubs::copy_bytes(destination, source.as_ptr(), source.len()) };
    match critical_section::with(|cs| PROBE_FAULT.borrow(cs).take()) {
        Some(fault) => Err(ShortCopy {
            copied: source.len() - remaining,
            fault,
        }),
        None => Ok(()),
    }
}

/// Called by the common stub with the saved state; returning resumes at `frame.rip`.
extern "C" fn handle_trap(frame: &mut TrapFrame) {
    let fault = decode(frame, Cr2::read_raw());

    // A page fault in the file-mapping window: once the page is mapped, `iretq` runs the
    // access again. If it cannot be, the fault goes on like any other.
    if let FaultKind::PageFault(access) = fault.kind
        && crate::vm::handle_page_fault(fault.address, access) == PageFaultOutcome::Mapped
    {
        return;
    }

    // NMIs, double faults and machine checks are not caused by the instruction at RIP.
    let recoverable = !matches!(frame.vector, 2 | 8 | 18);
    if recoverable && let Some(fixup) = exception_table::fixup_for(frame.rip) {
        critical_section::with(|cs| PROBE_FAULT.borrow(cs).set(Some(fault)));
        frame.rip = fixup;
        return;
    }

    defmt::error!(
        "unexpected {=str} (vector {=u64}) at rip {=u64:#x}: \
         error code {=u64:#x}, cr2 {=u64:#x}, rsp {=u64:#x}",
        vector_name(frame.vector),
        frame.vector,
        frame.rip,
        frame.error_code,
        Cr2::read_raw(),
        frame.rsp
    );
    // The addresses as u64: defmt sends a usize as 32 bits.
    defmt::error!(
        "decoded fault: {} at address {=u64:#x}, instruction {=u64:#x}",
        fault.kind,
        fault.address as u64,
        fault.pc as u64
    );
    super::exit(ExitCode::Fault)
}

/// Decodes a trap frame (and CR2, meaningful for page faults only) into a [`Fault`].
fn decode(frame: &TrapFrame, cr2: u64) -> Fault {
    let kind = match frame.vector {
        VECTOR_PAGE_FAULT => FaultKind::PageFault(page_fault_access(frame.error_code)),
        VECTOR_INVALID_OPCODE => FaultKind::IllegalInstruction,
        VECTOR_BREAKPOINT => FaultKind::Breakpoint,
        vector => FaultKind::Other(vector),
    };
    let address = if frame.vector == VECTOR_PAGE_FAULT {
        cr2
    } else {
        0
    };
    Fault {
        kind,
        address: address as usize,
        pc: frame.rip as usize,
        raw_cause: frame.vector,
        error_code: frame.error_code,
    }
}

/// The access a page fault's error code describes.
fn page_fault_access(error_code: u64) -> Access {
    if error_code & PF_INSTRUCTION_FETCH != 0 {
        Access::Execute
    } else if error_code & PF_WRITE != 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// The architecture's name of an exception vector.
fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug exception (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        9 => "coprocessor segment overrun",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection exception (#CP)",
        28 => "hypervisor injection exception (#HV)",
        29 => "VMM communication exception (#VC)",
        30 => "security exception (#SX)",
        _ => "reserved exception",
    }
}

pub mod tests {
    //! In-kernel tests of the trap handling.

    use super::*;
    use crate::arch::x86_64::paging::phys_to_virt;
    use crate::ktest::TestResult;
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    /// A higher-half address nothing maps: PML4 slot 384, between the direct map (slot 256,
    /// at most 64 GiB) and the kernel window (slot 511).
    const UNMAPPED: usize = 0xffff_c000_0000_1238;

    pub fn probe_reports_page_fault() -> TestResult {
        let result = probe_read(UNMAPPED);
        let Err(fault) = result else {
            ktest_fail!("a read of an unmapped address returned", result.ok())
        };
        ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
        ktest_assert_eq!(fault.raw_cause, VECTOR_PAGE_FAULT);
        ktest_assert_eq!(fault.address, UNMAPPED);
        // Not present, read, supervisor, data access: no bit set.
        ktest_assert_eq!(
            fault.error_code & (PF_PRESENT | PF_WRITE | PF_USER | PF_INSTRUCTION_FETCH),
            0
        );
        ktest_assert_eq!(fault.error_code, 0);
        ktest_assert_eq!(fault.pc as u64, stubs::probe_instruction());
        Ok(())
    }

    pub fn probe_reads_mapped_memory() -> TestResult {
        static PATTERN: u64 = 0x0123_4567_89ab_cdef;
        let address = core::ptr::from_ref(&PATTERN) as usize;
        ktest_assert_eq!(probe_read(address), Ok(PATTERN));

        // A fault must not leave a stale record behind for the next probe.
        let _ = probe_read(UNMAPPED);
        ktest_assert_eq!(probe_read(address), Ok(PATTERN));

        // Physical address 0 (the real-mode IVT) through the direct map.
        ktest_assert!(
            probe_read(phys_to_virt(0)).is_ok(),
            "direct map of 0 unreadable"
        );
        Ok(())
    }

    pub fn probe_reports_general_protection() -> TestResult {
        // A non-canonical address gives #GP, not #PF, and no CR2.
        let result = probe_read(0x8000_0000_0000_0000);
        let Err(fault) = result else {
            ktest_fail!("a read of a non-canonical address returned", result.ok())
        };
        ktest_assert_eq!(fault.kind, FaultKind::Other(13));
        ktest_assert_eq!(fault.address, 0);
        Ok(())
    }

    pub fn decodes_page_fault_error_codes() -> TestResult {
        let frame = |error_code| TrapFrame {
            vector: VECTOR_PAGE_FAULT,
            error_code,
            rip: 0xffff_ffff_8010_0000,
            ..zero_frame()
        };
        let cases = [
            (0, Access::Read),
            (PF_PRESENT | PF_WRITE, Access::Write),
            (PF_PRESENT | PF_INSTRUCTION_FETCH, Access::Execute),
        ];
        for (error_code, access) in cases {
            let fault = decode(&frame(error_code), 0x42);
            ktest_assert_eq!(fault.kind, FaultKind::PageFault(access));
            ktest_assert_eq!(fault.address, 0x42);
        }

        let invalid_opcode = TrapFrame {
            vector: VECTOR_INVALID_OPCODE,
            ..zero_frame()
        };
        let fault = decode(&invalid_opcode, 0x42);
        ktest_assert_eq!(fault.kind, FaultKind::IllegalInstruction);
        ktest_assert_eq!(fault.address, 0);
        Ok(())
    }

    fn zero_frame() -> TrapFrame {
        TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0,
            vector: 0,
            error_code: 0,
            rip: 0,
            cs: 0,
            rflags: 0,
            rsp: 0,
            ss: 0,
        }
    }
}

mod exception_table {
    //! The exception table the linker gathers from every `.ex_table` section.

    /// One entry: a fault at `instruction` resumes at `fixup`.
    #[repr(C)]
    struct ExceptionTableEntry {
        instruction: u64,
        fixup: u64,
    }

    unsafe extern "C" {
        static __ex_table_start: ExceptionTableEntry;
        static __ex_table_end: ExceptionTableEntry;
    }

    /// The fixup address for a fault at `instruction`, if the table lists it.
    pub(super) fn fixup_for(instruction: u64) -> Option<u64> {
        table()
            .iter()
            .find(|entry| entry.instruction == instruction)
            .map(|entry| entry.fixup)
    }

    fn table() -> &'static [ExceptionTableEntry] {
        let start = &raw const __ex_table_start;
        let end = &raw const __ex_table_end;
        let len = (end as usize).saturating_sub(start as usize) / size_of::<ExceptionTableEntry>();
        // SAFETY: the linker script puts every `.ex_table` input section, each a whole number
        // of 8-byte aligned 16-byte entries, between the two symbols, in the read-only part of
        // the image, which lives as long as the kernel.
        unsafe { core::slice::from_raw_parts(start, len) }
    }
}

mod idt {
    //! Filling and loading the IDT: unsafe because the CPU jumps to what the gates say.

    use x86_64::VirtAddr;
    use x86_64::instructions::tables::lidt;
    use x86_64::structures::DescriptorTablePointer;
    use x86_64::structures::idt::{Entry, EntryOptions, HandlerFunc};

    use super::Idt;

    /// Points `gate` at `stub` (present, ring 0, interrupts stay off, current CS).
    pub(super) fn point_gate_at(
        gate: &mut Entry<HandlerFunc>,
        stub: VirtAddr,
    ) -> &mut EntryOptions {
        // SAFETY: `stub` is one of the entry stubs of `stubs`, which expect exactly what the
        // CPU pushes for their vector and return with `iretq`.
        unsafe { gate.set_handler_addr(stub) }
    }

    /// Makes the gate switch to IST slot `index` (0-based).
    pub(super) fn use_ist(options: &mut EntryOptions, index: u16) {
        // SAFETY: `segments::init` has loaded a TSS whose IST slot `index` holds the top of a
        // static stack used by no other vector.
        unsafe { options.set_stack_index(index) };
    }

    /// Loads `idt` in the IDTR.
    pub(super) fn load(idt: &'static Idt) {
        let pointer = DescriptorTablePointer {
            limit: (size_of::<Idt>() - 1) as u16,
            base: VirtAddr::from_ptr(idt),
        };
        // SAFETY: the table is a static (it outlives its use), fully initialised, and every
        // gate points at a valid stub.
        unsafe { lidt(&pointer) };
    }
}

mod stubs {
    //! The entry stubs, the common stub and the probe routine, in assembly.

    use super::{ERROR_CODE_VECTORS, VECTOR_COUNT, handle_trap};

    core::arch::global_asm!(
        // The entry stubs, and a table of their addresses in .rodata.
        ".pushsection .rodata.x86_64_trap_stubs, \"a\"",
        ".p2align 3",
        ".globl x86_64_trap_stub_table",
        "x86_64_trap_stub_table:",
        ".popsection",
        ".pushsection .text.x86_64_trap, \"ax\"",
        ".set .Lvector, 0",
        ".rept {vector_count}",
        "    .p2align 4",
        "1:",
        "    .if (({error_code_vectors} >> .Lvector) & 1) == 0",
        "    pushq $0",
        "    .endif",
        "    pushq $.Lvector",
        "    jmp x86_64_trap_common",
        "    .pushsection .rodata.x86_64_trap_stubs, \"a\"",
        "    .quad 1b",
        "    .popsection",
        "    .set .Lvector, .Lvector + 1",
        ".endr",
        "",
        "x86_64_trap_common:",
        "    push %rax",
        "    push %rbx",
        "    push %rcx",
        "    push %rdx",
        "    push %rsi",
        "    push %rdi",
        "    push %rbp",
        "    push %r8",
        "    push %r9",
        "    push %r10",
        "    push %r11",
        "    push %r12",
        "    push %r13",
        "    push %r14",
        "    push %r15",
        "    mov %rsp, %rdi",
        "    cld",
        "    call {handle_trap}",
        "    pop %r15",
        "    pop %r14",
        "    pop %r13",
        "    pop %r12",
        "    pop %r11",
        "    pop %r10",
        "    pop %r9",
        "    pop %r8",
        "    pop %rbp",
        "    pop %rdi",
        "    pop %rsi",
        "    pop %rdx",
        "    pop %rcx",
        "    pop %rbx",
        "    pop %rax",
        "    add $16, %rsp",        // vector and error code
        "    iretq",

        // u64 x86_64_probe_read_u64(usize address): one load, listed in the exception table.
        // After a fault the handler resumes at the fixup, which returns 0.
        ".globl x86_64_probe_read_u64",
        "x86_64_probe_read_u64:",
        ".globl x86_64_probe_instruction",
        "x86_64_probe_instruction:",
        "    mov (%rdi), %rax",
        "    ret",
        ".Lprobe_fixup:",
        "    xor %eax, %eax",
        "    ret",
        ".popsection",

        // void x86_64_probe_write_u8(usize address): one locked OR of zero, listed in the
        // exception table; the fixup just returns.
        ".pushsection .text.x86_64_trap, \"ax\"",
        ".globl x86_64_probe_write_u8",
        "x86_64_probe_write_u8:",
        ".Lprobe_write_instruction:",
        "    lock orb $0, (%rdi)",
        ".Lprobe_write_fixup:",
        "    ret",

        // usize x86_64_copy_bytes(usize destination, const u8 *source, usize len): returns
        // the bytes not copied. A fault in `rep movsb` that the window cannot serve resumes
        // at the fixup with RCX = the bytes left.
        ".globl x86_64_copy_bytes",
        "x86_64_copy_bytes:",
        "    mov %rdx, %rcx",
        ".Lcopy_instruction:",
        "    rep movsb",
        ".Lcopy_fixup:",
        "    mov %rcx, %rax",
        "    ret",
        ".popsection",

        ".pushsection .ex_table, \"a\"",
        ".p2align 3",
        ".quad x86_64_probe_instruction, .Lprobe_fixup",
        ".quad .Lprobe_write_instruction, .Lprobe_write_fixup",
        ".quad .Lcopy_instruction, .Lcopy_fixup",
        ".popsection",

        vector_count = const VECTOR_COUNT,
        error_code_vectors = const ERROR_CODE_VECTORS,
        handle_trap = sym handle_trap,
        options(att_syntax),
    );

    unsafe extern "C" {
        static x86_64_trap_stub_table: [u64; VECTOR_COUNT];
        static x86_64_probe_instruction: u8;
        fn x86_64_probe_read_u64(address: usize) -> u64;
        fn x86_64_probe_write_u8(address: usize);
        fn x86_64_copy_bytes(destination: usize, source: *const u8, len: usize) -> usize;
    }

    /// The address of `vector`'s entry stub.
    pub(super) fn stub_address(vector: usize) -> u64 {
        // SAFETY: the assembly above emits one address per vector, `VECTOR_COUNT` in all, into
        // this read-only table, which nothing writes.
        let table = unsafe { &x86_64_trap_stub_table };
        table[vector]
    }

    /// The address of the probe's load instruction.
    pub(super) fn probe_instruction() -> u64 {
        &raw const x86_64_probe_instruction as u64
    }

    /// Reads 8 bytes at `address`; a fault resumes at the fixup, which returns 0.
    pub(super) fn probe_read_u64(address: usize) -> u64 {
        // SAFETY: the routine follows the C ABI and only loads from `address` into rax; a
        // fault on that load is recovered through the exception table (the IDT is loaded
        // before anything can probe), and a load changes no memory Rust can see.
        unsafe { x86_64_probe_read_u64(address) }
    }

    /// ORs zero into the byte at `address` with `lock`; a fault resumes at the fixup.
    pub(super) fn probe_write_u8(address: usize) {
        // SAFETY: the routine follows the C ABI and only runs a locked OR of zero on the byte
        // at `address`, which writes back the value it read, so no byte Rust sees changes; a
        // fault is recovered through the exception table.
        unsafe { x86_64_probe_write_u8(address) }
    }

    /// Copies `len` bytes from `source` to `destination`; returns how many were not copied
    /// (a fault stopped it).
    ///
    /// # Safety
    ///
    /// `source` must be valid for reading `len` bytes, and the `len` bytes at `destination`
    /// must lie in the file-mapping window with no reference to them alive.
    pub(super) unsafe fn copy_bytes(destination: usize, source: *const u8, len: usize) -> usize {
        // SAFETY: the routine follows the C ABI (DF is clear on entry, as the ABI requires)
        // and only copies `len` bytes from `source` to `destination`, which the caller vouches
        // for; a fault is recovered through the exception table.
        unsafe { x86_64_copy_bytes(destination, source, len) }
    }
}
