//! The hart itself: its clock and the critical section (interrupts off).

use core::arch::asm;

/// `sstatus.SIE`: supervisor interrupts enabled.
const SSTATUS_SIE: usize = 1 << 1;

/// The `time` CSR (`rdtime`): ticks at the device tree's `timebase-frequency`.
pub fn read_counter() -> u64 {
    riscv::register::time::read() as u64
}

/// Whether supervisor interrupts are enabled (`sstatus.SIE`).
pub fn interrupts_enabled() -> bool {
    riscv::register::sstatus::read().sie()
}

/// A critical section on a single hart: interrupts off.
struct SingleHartCriticalSection;
critical_section::set_impl!(SingleHartCriticalSection);

// SAFETY: the kernel runs on one hart, so a section that masks that hart's interrupts excludes
// every other context that could run meanwhile (traps other than interrupts are synchronous and
// come from the section's own code). `acquire` clears SIE atomically and returns whether it was
// set; `release` restores exactly that, so nested sections keep interrupts off until the
// outermost one ends.
unsafe impl critical_section::Impl for SingleHartCriticalSection {
    unsafe fn acquire() -> critical_section::RawRestoreState {
        let previous: usize;
        // SAFETY: `csrrci` reads sstatus and clears SIE in one instruction; it touches no
        // memory. No `nomem` option: the compiler must not move memory accesses of the
        // critical section above it.
        unsafe { asm!("csrrci {}, sstatus, {sie}", out(reg) previous, sie = const SSTATUS_SIE) };
        u8::from(previous & SSTATUS_SIE != 0)
    }

    unsafe fn release(restore_state: critical_section::RawRestoreState) {
        if restore_state != 0 {
            // SAFETY: sets SIE again, as it was when the matching `acquire` ran; the caller
            // (the critical-section crate) pairs every release with its acquire. No `nomem`:
            // memory accesses of the section must not move below it.
            unsafe { asm!("csrsi sstatus, {sie}", sie = const SSTATUS_SIE) };
        }
    }
}
