//! A polled driver for the 16550 UART.
//!
//! The 16550 is the console on every machine this kernel boots on: QEMU `virt` (`ns16550a`),
//! the VisionFive 2 (`snps,dw-apb-uart`, a 16550 with 32-bit registers) and COM1 on a PC. The
//! register file is the same everywhere; only how a register is reached differs:
//!
//! - through memory, with registers `1 << reg-shift` bytes apart and accessed `reg-io-width`
//!   bytes at a time, both taken from the device tree ([`MmioRegisters`]);
//! - through x86 I/O ports (the kernel's x86_64 code implements [`Registers`] for that).
//!
//! The driver transmits by polling the line status register and never uses interrupts, so it
//! works from any context: early boot, a trap handler, a panic.
//!
//! # Limitations
//!
//! - The baud rate is left as the firmware programmed it: the device tree of the VisionFive 2
//!   gives no `clock-frequency` to compute a divisor from.
//! - Reception is not implemented; the kernel only writes to its console.

use core::convert::Infallible;

/// The registers the driver uses, by index (byte offset before `reg-shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Register {
    /// Transmit holding register (write; when DLAB = 0).
    Transmit = 0,
    /// Interrupt enable register (when DLAB = 0).
    InterruptEnable = 1,
    /// FIFO control register (write).
    FifoControl = 2,
    /// Line control register: word length, parity, stop bits, DLAB.
    LineControl = 3,
    /// Modem control register: DTR, RTS, OUT2.
    ModemControl = 4,
    /// Line status register: "transmit holding register empty" and friends.
    LineStatus = 5,
}

/// Line status: the transmit holding register can take a byte.
const LSR_TRANSMIT_EMPTY: u8 = 1 << 5;
/// Line control: 8 data bits, no parity, one stop bit.
const LCR_8N1: u8 = 0b11;
/// FIFO control: enable and clear both FIFOs.
const FCR_ENABLE_AND_CLEAR: u8 = 0b111;
/// Modem control: assert DTR and RTS.
const MCR_DTR_RTS: u8 = 0b11;

/// How many times [`Uart16550::write_byte`] polls the line status before it writes anyway.
///
/// A UART that never reports an empty transmitter (absent, or wrongly described by the
/// firmware) must not hang the kernel: after this many polls the byte is written regardless,
/// as Linux's early console does after its own timeout.
pub const TRANSMIT_POLL_LIMIT: u32 = 100_000;

/// Access to a 16550's registers.
pub trait Registers {
    /// Reads one register.
    fn read(&mut self, register: Register) -> u8;

    /// Writes one register.
    fn write(&mut self, register: Register, value: u8);
}

/// A 16550 UART reached through `R`.
pub struct Uart16550<R: Registers> {
    registers: R,
}

impl<R: Registers> Uart16550<R> {
    /// Takes over a UART: 8N1, FIFOs on, interrupts off, baud rate as the firmware left it.
    pub fn new(mut registers: R) -> Self {
        registers.write(Register::InterruptEnable, 0);
        registers.write(Register::LineControl, LCR_8N1);
        registers.write(Register::FifoControl, FCR_ENABLE_AND_CLEAR);
        registers.write(Register::ModemControl, MCR_DTR_RTS);
        Self { registers }
    }

    /// Sends one byte, waiting (bounded by [`TRANSMIT_POLL_LIMIT`]) for room in the FIFO.
    pub fn write_byte(&mut self, byte: u8) {
        for _ in 0..TRANSMIT_POLL_LIMIT {
            if self.registers.read(Register::LineStatus) & LSR_TRANSMIT_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.registers.write(Register::Transmit, byte);
    }

    /// Sends every byte of `bytes`.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_byte(byte);
        }
    }
}

impl<R: Registers> embedded_io::ErrorType for Uart16550<R> {
    type Error = Infallible;
}

impl<R: Registers> embedded_io::Write for Uart16550<R> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why a device-tree description of a memory-mapped UART cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MmioConfigError {
    /// `reg-io-width` is not 1, 2 or 4 bytes.
    #[error("unsupported reg-io-width {0} (expected 1, 2 or 4)")]
    UnsupportedIoWidth(u32),
    /// `reg-shift` would put the registers more than 4 KiB apart.
    #[error("unsupported reg-shift {0} (expected 0 to 4)")]
    UnsupportedShift(u32),
    /// The register window `reg` is too small for `reg-shift`.
    #[error("register window of {size} bytes is too small for reg-shift {shift}")]
    WindowTooSmall {
        /// Size of the window, from `reg`.
        size: u64,
        /// The `reg-shift` asked for.
        shift: u32,
    },
}

/// Where and how a memory-mapped 16550's registers sit, as a device tree describes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MmioLayout {
    /// Register `i` is at `base + (i << reg_shift)`.
    pub reg_shift: u32,
    /// Each register is read and written with an access of this many bytes.
    pub reg_io_width: u32,
}

impl MmioLayout {
    /// Checks the device tree's `reg-shift`, `reg-io-width` (each defaulting as the binding
    /// says when absent: 0 and 1) against the size of the `reg` window.
    pub fn new(
        reg_shift: Option<u32>,
        reg_io_width: Option<u32>,
        window_size: u64,
    ) -> Result<Self, MmioConfigError> {
        let reg_shift = reg_shift.unwrap_or(0);
        let reg_io_width = reg_io_width.unwrap_or(1);
        if !matches!(reg_io_width, 1 | 2 | 4) {
            return Err(MmioConfigError::UnsupportedIoWidth(reg_io_width));
        }
        if reg_shift > 4 {
            return Err(MmioConfigError::UnsupportedShift(reg_shift));
        }

        // The highest register used is the line status register.
        let needed = ((Register::LineStatus as u64) << reg_shift) + u64::from(reg_io_width);
        if window_size < needed {
            return Err(MmioConfigError::WindowTooSmall {
                size: window_size,
                shift: reg_shift,
            });
        }
        Ok(Self {
            reg_shift,
            reg_io_width,
        })
    }

    /// Byte offset of `register` from the base.
    pub fn offset(&self, register: Register) -> usize {
        (register as usize) << self.reg_shift
    }
}

pub use mmio::MmioRegisters;

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A UART that records writes and reports its transmitter empty after `busy_polls` reads.
    struct FakeRegisters {
        writes: Vec<(Register, u8)>,
        busy_polls: u32,
        status_reads: u32,
    }

    impl Registers for FakeRegisters {
        fn read(&mut self, register: Register) -> u8 {
            assert_eq!(register, Register::LineStatus);
            self.status_reads += 1;
            if self.status_reads > self.busy_polls {
                LSR_TRANSMIT_EMPTY
            } else {
                0
            }
        }

        fn write(&mut self, register: Register, value: u8) {
            self.writes.push((register, value));
        }
    }

    fn fake(busy_polls: u32) -> FakeRegisters {
        FakeRegisters {
            writes: Vec::new(),
            busy_polls,
            status_reads: 0,
        }
    }

    #[test]
    fn init_sets_8n1_and_masks_interrupts() {
        let uart = Uart16550::new(fake(0));
        let writes = &uart.registers.writes;
        assert!(writes.contains(&(Register::InterruptEnable, 0)));
        assert!(writes.contains(&(Register::LineControl, LCR_8N1)));
    }

    #[test]
    fn write_waits_for_an_empty_transmitter() {
        let mut uart = Uart16550::new(fake(3));
        uart.registers.writes.clear();
        uart.write_bytes(b"ok");
        assert_eq!(
            uart.registers.status_reads, 5,
            "3 busy polls, then one poll per byte"
        );
        assert_eq!(
            uart.registers.writes,
            [(Register::Transmit, b'o'), (Register::Transmit, b'k')]
        );
    }

    #[test]
    fn a_stuck_transmitter_does_not_hang_the_writer() {
        let mut uart = Uart16550::new(fake(u32::MAX));
        uart.write_byte(b'x');
        assert_eq!(uart.registers.status_reads, TRANSMIT_POLL_LIMIT);
        assert_eq!(
            uart.registers.writes.last(),
            Some(&(Register::Transmit, b'x'))
        );
    }

    #[test]
    fn layout_follows_the_device_tree_binding() {
        // QEMU virt: ns16550a with byte registers.
        let qemu = MmioLayout::new(None, None, 0x100).unwrap();
        assert_eq!(qemu.offset(Register::LineStatus), 5);

        // VisionFive 2: dw-apb-uart, reg-shift 2, reg-io-width 4, a 64 KiB window.
        let vf2 = MmioLayout::new(Some(2), Some(4), 0x10000).unwrap();
        assert_eq!(vf2.offset(Register::LineStatus), 20);
    }

    #[test]
    fn bad_layouts_are_errors() {
        assert_eq!(
            MmioLayout::new(None, Some(3), 0x100),
            Err(MmioConfigError::UnsupportedIoWidth(3))
        );
        assert_eq!(
            MmioLayout::new(Some(31), None, u64::MAX),
            Err(MmioConfigError::UnsupportedShift(31))
        );
        assert_eq!(
            MmioLayout::new(Some(2), Some(4), 8),
            Err(MmioConfigError::WindowTooSmall { size: 8, shift: 2 })
        );
    }
}

mod mmio {
    //! Volatile access to memory-mapped registers: the only unsafe code of this driver.

    use super::{MmioLayout, Register, Registers};

    /// The registers of a memory-mapped 16550.
    pub struct MmioRegisters {
        base: *mut u8,
        layout: MmioLayout,
    }

    // SAFETY: `MmioRegisters` is only a pointer to device registers; moving it to another CPU
    // does not change what accessing them means, and `&mut self` on every access keeps one
    // user at a time.
    unsafe impl Send for MmioRegisters {}

    impl MmioRegisters {
        /// Describes the registers at `base`.
        ///
        /// # Safety
        ///
        /// `base` must be the virtual address of a mapped 16550 register window laid out as
        /// `layout` says (it is checked against the window size by [`MmioLayout::new`]), used
        /// by nothing else for as long as the returned value lives.
        pub unsafe fn new(base: *mut u8, layout: MmioLayout) -> Self {
            Self { base, layout }
        }
    }

    impl Registers for MmioRegisters {
        fn read(&mut self, register: Register) -> u8 {
            // SAFETY: `new`'s contract says the window holds this register at this offset
            // with this access width, and that nothing else uses it.
            unsafe {
                let address = self.base.add(self.layout.offset(register));
                match self.layout.reg_io_width {
                    4 => address.cast::<u32>().read_volatile() as u8,
                    2 => address.cast::<u16>().read_volatile() as u8,
                    _ => address.read_volatile(),
                }
            }
        }

        fn write(&mut self, register: Register, value: u8) {
            // SAFETY: as for `read`.
            unsafe {
                let address = self.base.add(self.layout.offset(register));
                match self.layout.reg_io_width {
                    4 => address.cast::<u32>().write_volatile(value.into()),
                    2 => address.cast::<u16>().write_volatile(value.into()),
                    _ => address.write_volatile(value),
                }
            }
        }
    }
}
