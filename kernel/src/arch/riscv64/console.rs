//! The boot console: the device tree's 16550 UART, or the SBI firmware's console when there is
//! none (yet).
//!
//! The defmt logger writes every encoded byte through [`console_write`]. Until
//! [`install_uart`] runs, and on machines without a usable UART, the bytes go to the SBI legacy
//! `console_putchar` call, which the firmware implements with its own UART driver: slow (one
//! trap to M-mode per byte), but it shows errors found while reading the device tree.
//!
//! | path | lock taken |
//! | --- | --- |
//! | [`console_write`] | the UART's spinlock, tried once, for the call |
//! | [`install_uart`] | the UART's spinlock, for the call |
//!
//! The logger already serializes its writers with a critical section (interrupts off, one
//! hart), so the lock is never contended in normal operation. It is there for soundness
//! without relying on that: a fault taken in the middle of a UART write (whose report is
//! logged from the trap handler) finds the lock taken and falls back to SBI instead of making
//! a second `&mut` to the UART.

use drivers::uart16550::{MmioLayout, MmioRegisters, Register, Uart16550};
use spin::Mutex;

use super::paging;

/// The UART, once [`install_uart`] has run.
static UART: Mutex<Option<Uart16550<MmioRegisters>>> = Mutex::new(None);

/// Why a UART cannot be used as the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ConsoleError {
    /// Its registers are not inside the direct map.
    OutsideDirectMap { base: u64 },
}

/// Takes over the 16550 at physical address `base` as the console.
pub fn install_uart(base: u64, layout: MmioLayout) -> Result<(), ConsoleError> {
    // The registers used run up to the line status register, `reg_io_width` bytes wide.
    let used = layout.offset(Register::LineStatus) as u64 + u64::from(layout.reg_io_width);
    if !base
        .checked_add(used)
        .is_some_and(|end| paging::in_direct_map(base, end))
    {
        return Err(ConsoleError::OutsideDirectMap { base });
    }

    // SAFETY: the device tree describes a 16550 whose registers are at `base` with this layout
    // (`MmioLayout::new` checked it against the `reg` window), and the direct map covers the
    // whole window (checked above), so the registers are mapped at `phys_to_virt(base)`.
    // Nothing else in the kernel touches this UART: it is used only through `UART`.
    let registers = unsafe { MmioRegisters::new(paging::phys_to_virt(base) as *mut u8, layout) };
    *UART.lock() = Some(Uart16550::new(registers));
    Ok(())
}

/// Writes `bytes` to the console. Callable from any context, including the trap handler.
pub fn console_write(bytes: &[u8]) {
    if let Some(mut uart) = UART.try_lock()
        && let Some(uart) = uart.as_mut()
    {
        uart.write_bytes(bytes);
        return;
    }
    for &byte in bytes {
        // The legacy call is the one every SBI implementation has had since 0.1 (the debug
        // console extension that replaces it needs SBI 2.0, newer than QEMU 7.2's OpenSBI).
        #[allow(deprecated)]
        sbi_rt::legacy::console_putchar(usize::from(byte));
    }
}
