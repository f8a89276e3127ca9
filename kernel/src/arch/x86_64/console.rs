//! The boot console: COM1, a 16550 UART at I/O port 0x3f8, driven by
//! [`drivers::uart16550`] through port-I/O [`Registers`].
//!
//! PVH tells the kernel nothing about serial ports; COM1's port is the PC's fixed
//! convention, and QEMU's `-serial` option connects its first serial port there.
//!
//! # Soundness
//!
//! The UART lives in a [`critical_section::Mutex`] holding a `RefCell`: every write runs
//! with interrupts off on this single CPU (the defmt logger already holds a critical
//! section; the nested one here costs a flags save and restore). If a fault interrupts a
//! write and its handler logs, the nested `console_write` finds the `RefCell` borrowed and
//! drops its bytes instead of aliasing the UART; the logger then resynchronises the stream.

use core::cell::RefCell;

use critical_section::Mutex;
use drivers::uart16550::{Register, Registers, Uart16550};

/// COM1's I/O port base.
pub const COM1_PORT: u16 = 0x3f8;

static CONSOLE: Mutex<RefCell<Option<Uart16550<PortRegisters>>>> = Mutex::new(RefCell::new(None));

/// Takes over COM1. Until then, console writes are dropped.
pub fn init() {
    let uart = Uart16550::new(ports::com1());
    critical_section::with(|cs| CONSOLE.borrow(cs).replace(Some(uart)));
}

/// Writes `bytes` to COM1, polling; drops them before [`init`] or when called from a fault
/// that interrupted another write.
pub fn console_write(bytes: &[u8]) {
    critical_section::with(|cs| {
        if let Ok(mut console) = CONSOLE.borrow(cs).try_borrow_mut()
            && let Some(uart) = console.as_mut()
        {
            uart.write_bytes(bytes);
        }
    });
}

/// A 16550's registers at consecutive I/O ports.
pub struct PortRegisters {
    base: u16,
}

impl Registers for PortRegisters {
    fn read(&mut self, register: Register) -> u8 {
        ports::read(self.base + register as u16)
    }

    fn write(&mut self, register: Register, value: u8) {
        ports::write(self.base + register as u16, value);
    }
}

mod ports {
    //! Port I/O for the UART: the only unsafe code of this module.

    use x86_64::instructions::port::Port;

    use super::{COM1_PORT, PortRegisters};

    /// COM1's registers. Only [`super::init`] calls this, once, so only one
    /// `PortRegisters` for COM1 exists.
    pub(super) fn com1() -> PortRegisters {
        PortRegisters { base: COM1_PORT }
    }

    pub(super) fn read(port: u16) -> u8 {
        // SAFETY: `port` is one of COM1's registers (a `PortRegisters` exists only for
        // COM1, see `com1`); reading a 16550 register has no effect beyond the UART,
        // which only the console uses.
        unsafe { Port::<u8>::new(port).read() }
    }

    pub(super) fn write(port: u16, value: u8) {
        // SAFETY: as for `read`; the driver writes only UART configuration and data.
        unsafe { Port::<u8>::new(port).write(value) }
    }
}
