//! The CPU itself: its identity, stopping the machine, and the critical section.
//!
//! The kernel runs on one CPU with interrupts disabled throughout; the critical section
//! still saves and restores the interrupt flag so that it nests and stays correct once
//! interrupts are enabled.

use x86_64::instructions::interrupts;

use super::entry::DEBUG_EXIT_PORT;
use crate::ExitCode;

/// The boot CPU's initial local APIC id (CPUID leaf 1, EBX bits 31..24).
pub fn initial_apic_id() -> u64 {
    u64::from(core::arch::x86_64::__cpuid(1).ebx >> 24)
}

/// Stops the machine: tells QEMU's `isa-debug-exit` device `code` (QEMU then exits with
/// status `(code << 1) | 1`), and halts for good if the device is absent.
pub fn exit(code: ExitCode) -> ! {
    port::write_u32(DEBUG_EXIT_PORT, code as u32);
    loop {
        interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The critical section: interrupts off on this CPU.
struct InterruptsOff;

critical_section::set_impl!(InterruptsOff);

// SAFETY: `acquire` disables interrupts and returns whether they were enabled; `release`
// re-enables them only if they were, so a nested section never enables them early. With
// one CPU, interrupts off means nothing else runs.
unsafe impl critical_section::Impl for InterruptsOff {
    unsafe fn acquire() -> critical_section::RawRestoreState {
        let were_enabled = interrupts::are_enabled();
        interrupts::disable();
        u8::from(were_enabled)
    }

    unsafe fn release(restore: critical_section::RawRestoreState) {
        if restore != 0 {
            interrupts::enable();
        }
    }
}

mod port {
    //! The write to the exit device: the only unsafe code of this module.

    use x86_64::instructions::port::Port;

    /// Writes `value` to the 32-bit I/O port `port`.
    pub(super) fn write_u32(port: u16, value: u32) {
        // SAFETY: `port` is the `isa-debug-exit` device's port, which QEMU turns into its
        // exit; on a machine without the device the write goes nowhere (and 0xf4 is
        // otherwise unused on a PC).
        unsafe { Port::<u32>::new(port).write(value) }
    }
}
