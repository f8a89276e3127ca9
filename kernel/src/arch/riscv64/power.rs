//! Stopping the machine: the SiFive test finisher when the device tree has one (QEMU `virt`),
//! else the SBI system reset call.
//!
//! QEMU's finisher takes one 32-bit write: `0x5555` exits QEMU with status 0, and
//! `code << 16 | 0x3333` with status `code`, which is how the runner learns the
//! [`ExitCode`]. SBI system reset (a shutdown) has no way to carry a failure code beyond
//! "system failure", so on a board the code is only in the log.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::paging;
use crate::ExitCode;

/// Finisher value: exit with status 0.
const FINISHER_PASS: u32 = 0x5555;
/// Finisher value: exit with the status in the upper 16 bits.
const FINISHER_FAIL: u32 = 0x3333;

/// Virtual address of the finisher's register; 0 until [`install_exit_device`] runs.
static EXIT_DEVICE: AtomicUsize = AtomicUsize::new(0);

/// Why the exit device cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ExitDeviceError {
    /// Its register is not inside the direct map.
    OutsideDirectMap { base: u64 },
}

/// Uses the SiFive test finisher at physical address `base` for [`exit`].
pub fn install_exit_device(base: u64) -> Result<(), ExitDeviceError> {
    let mapped = base
        .checked_add(4)
        .is_some_and(|end| paging::in_direct_map(base, end));
    if !mapped || !base.is_multiple_of(4) {
        return Err(ExitDeviceError::OutsideDirectMap { base });
    }
    EXIT_DEVICE.store(paging::phys_to_virt(base), Ordering::Release);
    Ok(())
}

/// The finisher's encoding of `code`.
pub fn finisher_value(code: ExitCode) -> u32 {
    match code {
        ExitCode::Success => FINISHER_PASS,
        failure => ((failure as u32) << 16) | FINISHER_FAIL,
    }
}

/// Stops the machine, telling QEMU `code` when it can.
pub fn exit(code: ExitCode) -> ! {
    let register = EXIT_DEVICE.load(Ordering::Acquire);
    if register != 0 {
        // SAFETY: `install_exit_device` stored the direct-map address of a finisher register
        // from the device tree (4-byte aligned, mapped); a 32-bit write is the device's
        // interface and does not touch memory the kernel uses.
        unsafe { (register as *mut u32).write_volatile(finisher_value(code)) };
    }

    // No finisher, or one that did not stop us: ask the firmware to power off.
    let _ = if code == ExitCode::Success {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::NoReason)
    } else {
        sbi_rt::system_reset(sbi_rt::Shutdown, sbi_rt::SystemFailure)
    };

    // The firmware cannot power off either: park the hart (interrupts are off, so `wfi`
    // only returns on spurious wake-ups).
    loop {
        riscv::asm::wfi();
    }
}
