//! Traps: the `stvec` entry, the decoding of `scause`, and the accesses that are allowed to
//! fault: [`probe_read`], [`probe_write`] and [`copy_to_window`].
//!
//! Every trap enters `kernel_trap_entry` (direct mode), which saves all 31 registers, the
//! floating-point registers and the trap CSRs in a [`TrapFrame`] on the current stack and
//! calls [`handle_trap`]. The handler either recovers or stops the machine:
//!
//! - A page fault in the file-mapping window goes to [`crate::vm::handle_page_fault`] first;
//!   when it maps the page, the handler returns and `sret` runs the access again. The
//!   interrupted code may be any kernel code, so the floating-point registers it may be using
//!   are saved and restored around the Rust handler (the kernel runs with `sstatus.FS` on).
//! - If the faulting instruction is listed in the exception table (the `.extable` section,
//!   like Linux's `__ex_table`: pairs of "instruction that may fault, where to resume"), it
//!   hands the fault's `scause`, `stval` and `sepc` to the code at the resume address in
//!   `a0`, `a1`, `a3`, sets `a2` = 1 to say a fault happened, and returns there. Only
//!   [`probe_read`], [`probe_write`] and the stores of [`copy_to_window`] have entries.
//! - Otherwise it logs the trap (`scause` and its name, the decoded [`FaultKind`], `stval`,
//!   `sepc`, `ra`, `sp`) and stops the machine with [`ExitCode::Fault`].
//!
//! Interrupts stay disabled (`sie` = 0 and `sstatus.SIE` = 0), so every trap is a synchronous
//! exception; an interrupt that arrives anyway is reported like any unexpected trap.
//!
//! # Limitations
//!
//! - The frame goes on the current stack: a stack overflow (there is no guard page) traps
//!   again while saving and loses the report.

use core::arch::{asm, global_asm};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, Ordering};

use super::power;
use crate::ExitCode;
use crate::arch::{Access, Fault, FaultKind, ShortCopy};
use crate::vm::PageFaultOutcome;

/// The registers and trap CSRs at the time of a trap, as `kernel_trap_entry` saves them.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct TrapFrame {
    /// `x0`..`x31`; slot 0 is unused and slot 2 holds `sp` as it was before the trap.
    pub registers: [usize; 32],
    /// Address of the instruction that trapped; where `sret` resumes.
    pub sepc: usize,
    /// `sstatus` at the trap, restored by `sret`.
    pub sstatus: usize,
    /// The cause: bit 63 for interrupts, the exception code below.
    pub scause: usize,
    /// The faulting address for memory faults, else cause-specific or 0.
    pub stval: usize,
    /// `f0`..`f31`, as 64-bit patterns.
    pub float_registers: [u64; 32],
    /// `fcsr` (rounding mode and accrued exceptions).
    pub fcsr: usize,
    /// Keeps the frame a multiple of 16 bytes.
    _padding: usize,
}

const FRAME_SIZE: usize = size_of::<TrapFrame>();
const _: () = assert!(
    FRAME_SIZE.is_multiple_of(16),
    "the ABI keeps sp 16-byte aligned"
);

/// Register numbers in [`TrapFrame::registers`].
const RA: usize = 1;
const SP: usize = 2;
const A0: usize = 10;
const A1: usize = 11;
const A2: usize = 12;
const A3: usize = 13;

/// `scause` bit that marks an interrupt.
const SCAUSE_INTERRUPT: usize = 1 << 63;

global_asm!(
    r#"
    .section .text.trap, "ax"
    .balign 4
    .global kernel_trap_entry
kernel_trap_entry:
    addi    sp, sp, -{frame_size}
    .irp    n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd      x\n, \n * 8(sp)
    .endr
    addi    t0, sp, {frame_size}
    sd      t0, 2 * 8(sp)
    csrr    t0, sepc
    sd      t0, {sepc}(sp)
    csrr    t0, sstatus
    sd      t0, {sstatus}(sp)
    csrr    t0, scause
    sd      t0, {scause}(sp)
    csrr    t0, stval
    sd      t0, {stval}(sp)
    # The floating-point registers (module-level assembly does not see the crate's target
    # features, hence `.option arch, +d`).
    .option push
    .option arch, +d
    .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    fsd     f\n, {float_registers} + \n * 8(sp)
    .endr
    frcsr   t0
    sd      t0, {fcsr}(sp)
    .option pop

    mv      a0, sp
    call    {handler}

    .option push
    .option arch, +d
    ld      t0, {fcsr}(sp)
    fscsr   t0
    .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    fld     f\n, {float_registers} + \n * 8(sp)
    .endr
    .option pop

    ld      t0, {sepc}(sp)
    csrw    sepc, t0
    ld      t0, {sstatus}(sp)
    csrw    sstatus, t0
    .irp    n, 1,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld      x\n, \n * 8(sp)
    .endr
    addi    sp, sp, {frame_size}
    sret
    "#,
    frame_size = const FRAME_SIZE,
    sepc = const offset_of!(TrapFrame, sepc),
    sstatus = const offset_of!(TrapFrame, sstatus),
    scause = const offset_of!(TrapFrame, scause),
    stval = const offset_of!(TrapFrame, stval),
    float_registers = const offset_of!(TrapFrame, float_registers),
    fcsr = const offset_of!(TrapFrame, fcsr),
    handler = sym handle_trap,
);

/// Points `stvec` at `kernel_trap_entry` (direct mode: every trap goes there).
pub fn install() {
    unsafe extern "C" {
        /// The assembly entry above.
        fn kernel_trap_entry();
    }
    let entry = kernel_trap_entry as *const () as usize;

    // SAFETY: `kernel_trap_entry` is 4-byte aligned (`.balign 4`, as direct mode needs) and
    // handles any trap from S-mode: it saves every register it uses before calling Rust on a
    // 16-byte aligned stack and restores them before `sret`.
    unsafe { asm!("csrw stvec, {}", in(reg) entry, options(nomem, nostack)) };
}

/// Set while an unexpected trap is being reported, so a trap in the report itself stops the
/// machine at once instead of recursing.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Called by `kernel_trap_entry` with the saved frame (exclusive, aligned and initialized: the
/// entry code built it on the stack and nothing else refers to it).
extern "C" fn handle_trap(frame: &mut TrapFrame) {
    let fault = decode(frame.scause, frame.stval, frame.sepc);

    // A page fault in the file-mapping window: once the page is mapped, `sret` runs the
    // access again. If it cannot be, the fault goes on like any other.
    if let FaultKind::PageFault(access) = fault.kind
        && crate::vm::handle_page_fault(frame.stval, access) == PageFaultOutcome::Mapped
    {
        return;
    }

    if frame.scause & SCAUSE_INTERRUPT == 0
        && let Some(resume) = exception_table::resume_address(frame.sepc)
    {
        frame.registers[A0] = frame.scause;
        frame.registers[A1] = frame.stval;
        frame.registers[A2] = 1;
        frame.registers[A3] = frame.sepc;
        frame.sepc = resume;
        return;
    }

    if REPORTING.swap(true, Ordering::Relaxed) {
        power::exit(ExitCode::Fault);
    }
    // defmt's `usize` is 32 bits on the wire: widen to keep higher-half addresses whole.
    defmt::error!(
        "unexpected trap: {=str} (scause {=u64:#x}) at pc {=u64:#x}, stval {=u64:#x}: {}",
        cause_name(frame.scause),
        frame.scause as u64,
        frame.sepc as u64,
        frame.stval as u64,
        fault.kind
    );
    defmt::error!(
        "trap registers: ra {=u64:#x}, sp {=u64:#x}, sstatus {=u64:#x}",
        frame.registers[RA] as u64,
        frame.registers[SP] as u64,
        frame.sstatus as u64
    );
    power::exit(ExitCode::Fault)
}

/// Decodes the trap CSRs into the architecture-neutral [`Fault`].
pub fn decode(scause: usize, stval: usize, sepc: usize) -> Fault {
    let kind = match scause {
        1 => FaultKind::AccessFault(Access::Execute),
        2 => FaultKind::IllegalInstruction,
        3 => FaultKind::Breakpoint,
        5 => FaultKind::AccessFault(Access::Read),
        7 => FaultKind::AccessFault(Access::Write),
        12 => FaultKind::PageFault(Access::Execute),
        13 => FaultKind::PageFault(Access::Read),
        15 => FaultKind::PageFault(Access::Write),
        other => FaultKind::Other(other as u64),
    };
    Fault {
        kind,
        address: stval,
        pc: sepc,
        raw_cause: scause as u64,
        error_code: 0,
    }
}

/// The privileged specification's name for a cause.
pub fn cause_name(scause: usize) -> &'static str {
    if scause & SCAUSE_INTERRUPT != 0 {
        return match scause & !SCAUSE_INTERRUPT {
            1 => "supervisor software interrupt",
            5 => "supervisor timer interrupt",
            9 => "supervisor external interrupt",
            _ => "unknown interrupt",
        };
    }
    match scause {
        0 => "instruction address misaligned",
        1 => "instruction access fault",
        2 => "illegal instruction",
        3 => "breakpoint",
        4 => "load address misaligned",
        5 => "load access fault",
        6 => "store address misaligned",
        7 => "store access fault",
        8 => "environment call from U-mode",
        9 => "environment call from S-mode",
        12 => "instruction page fault",
        13 => "load page fault",
        15 => "store page fault",
        18 => "software check",
        19 => "hardware error",
        _ => "unknown exception",
    }
}

/// Reads the 64-bit word at virtual address `address`, reporting a fault (unmapped address,
/// no device there, misaligned on hardware that refuses it) as `Err` instead of stopping.
///
/// The read is a real load: on device memory it has whatever side effect reading that
/// register has.
pub fn probe_read(address: usize) -> Result<u64, Fault> {
    let value_or_scause: usize;
    let stval: usize;
    let faulted: usize;
    let sepc: usize;

    // SAFETY: the block is one load into a0 from `address`, which creates no reference and
    // reads nothing the compiler tracks. If it faults, the trap handler finds the load in the
    // exception table (the `.extable` entry pushed here) and resumes at label 2 with a0 =
    // scause, a1 = stval, a2 = 1, a3 = sepc; every other integer register comes back as it
    // was. The handler's Rust code may use caller-saved floating-point registers, hence
    // `clobber_abi("C")`.
    unsafe {
        asm!(
            "1: ld a0, 0(a0)",
            "2:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".dword 1b, 2b",
            ".popsection",
            inout("a0") address => value_or_scause,
            inout("a1") 0usize => stval,
            inout("a2") 0usize => faulted,
            inout("a3") 0usize => sepc,
            clobber_abi("C"),
            options(nostack, readonly),
        );
    }

    if faulted == 0 {
        Ok(value_or_scause as u64)
    } else {
        Err(decode(value_or_scause, stval, sepc))
    }
}

/// Makes a write access to the 32-bit word that holds `address` without changing it (an
/// atomic OR of zero, `amoor.w`), reporting a fault as `Err` instead of stopping: what brings
/// a page of a private file mapping in for writing ([`crate::vm::fault_in_writable`]).
///
/// The word is read and written back atomically, so a concurrent writer loses nothing; on
/// device memory it is a real read-modify-write.
pub fn probe_write(address: usize) -> Result<(), Fault> {
    let scause: usize;
    let stval: usize;
    let faulted: usize;
    let sepc: usize;

    // SAFETY: the block is one `amoor.w` of zero on the aligned word at `address`: it stores
    // the value it loaded, so no byte any Rust code sees changes, and it creates no
    // reference. A fault resumes at label 2 through the exception table with a0 = scause,
    // a1 = stval, a2 = 1, a3 = sepc; the handler's Rust code may use caller-saved
    // floating-point registers, hence `clobber_abi("C")`.
    unsafe {
        asm!(
            "1: amoor.w zero, zero, (a0)",
            "2:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".dword 1b, 2b",
            ".popsection",
            inout("a0") address & !3 => scause,
            inout("a1") 0usize => stval,
            inout("a2") 0usize => faulted,
            inout("a3") 0usize => sepc,
            clobber_abi("C"),
            options(nostack),
        );
    }

    if faulted == 0 {
        Ok(())
    } else {
        Err(decode(scause, stval, sepc))
    }
}

/// Copies `source` to `destination`, an address range in the file-mapping window, and stops
/// at the first store the window cannot serve (the page fault goes to
/// [`crate::vm::handle_page_fault`] first, so a page that can be mapped is mapped and the
/// copy goes on): then it says how many bytes it copied and what the fault was. Bytes
/// before a fault are copied; none after it.
///
/// # Safety
///
/// The `source.len()` bytes at `destination` must lie in the file-mapping window, and no
/// reference to them may be alive: they are written behind the compiler's back.
pub unsafe fn copy_to_window(destination: usize, source: &[u8]) -> Result<(), ShortCopy> {
    let remaining: usize;
    let scause: usize;
    let stval: usize;
    let faulted: usize;
    let sepc: usize;
    // SAFETY: the loops load only from `source` (a live slice) and store only to the
    // `source.len()` bytes at `destination`, which lie in the file-mapping window and which
    // no Rust reference names (the caller's promises). Stores go byte by
    // byte until `destination` is 8-byte aligned, then by words if `source` is aligned too,
    // then by bytes; each store is listed in the exception table, so a fault the window
    // cannot serve resumes at label 9 with the store not done and t2 = the bytes left
    // (a0..a3 carry the fault, as in `probe_read`).
    unsafe {
        asm!(
            "beqz t2, 9f",
            // Bytes until the destination is word aligned.
            "1: andi t3, t0, 7",
            "beqz t3, 3f",
            "lbu t4, 0(t1)",
            "2: sb t4, 0(t0)",
            "addi t0, t0, 1",
            "addi t1, t1, 1",
            "addi t2, t2, -1",
            "bnez t2, 1b",
            "j 9f",
            // Words, if the source is aligned as well.
            "3: andi t3, t1, 7",
            "bnez t3, 6f",
            "li t3, 8",
            "4: bltu t2, t3, 6f",
            "ld t4, 0(t1)",
            "5: sd t4, 0(t0)",
            "addi t0, t0, 8",
            "addi t1, t1, 8",
            "addi t2, t2, -8",
            "j 4b",
            // The rest by bytes.
            "6: beqz t2, 9f",
            "lbu t4, 0(t1)",
            "7: sb t4, 0(t0)",
            "addi t0, t0, 1",
            "addi t1, t1, 1",
            "addi t2, t2, -1",
            "j 6b",
            "9:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".dword 2b, 9b",
            ".dword 5b, 9b",
            ".dword 7b, 9b",
            ".popsection",
            inout("t0") destination => _,
            inout("t1") source.as_ptr() => _,
            inout("t2") source.len() => remaining,
            inout("a0") 0usize => scause,
            inout("a1") 0usize => stval,
            inout("a2") 0usize => faulted,
            inout("a3") 0usize => sepc,
            clobber_abi("C"),
            options(nostack),
        );
    }

    if faulted == 0 {
        Ok(())
    } else {
        Err(ShortCopy {
            copied: source.len() - remaining,
            fault: decode(scause, stval, sepc),
        })
    }
}

mod exception_table {
    //! The `.extable` section: where execution resumes after an expected fault.

    /// One entry: the address of an instruction that may fault, and where to resume if it
    /// does. Written by `.dword` pairs in inline assembly.
    #[repr(C)]
    struct Entry {
        instruction: usize,
        resume: usize,
    }

    unsafe extern "C" {
        /// First entry (linker script).
        static __extable_start: Entry;
        /// One past the last entry (linker script).
        static __extable_end: Entry;
    }

    /// Where to resume after a fault at `pc`, if `pc` is a listed instruction.
    pub(super) fn resume_address(pc: usize) -> Option<usize> {
        entries()
            .iter()
            .find(|entry| entry.instruction == pc)
            .map(|entry| entry.resume)
    }

    fn entries() -> &'static [Entry] {
        let start = &raw const __extable_start;
        let end = &raw const __extable_end;
        let count = (end as usize - start as usize) / size_of::<Entry>();

        // SAFETY: the linker script gathers every `.extable` input section between the two
        // symbols, in the read-only image. Each input section holds 8-aligned pairs of
        // `.dword`s, exactly `Entry`'s layout, so `start` is aligned and the `count` entries
        // are initialized. Nothing writes them.
        unsafe { core::slice::from_raw_parts(start, count) }
    }
}
