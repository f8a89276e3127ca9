//! The clock: the time-stamp counter (TSC), and finding its frequency at boot.
//!
//! The TSC counts at a fixed rate on every CPU of the last fifteen years ("invariant TSC"),
//! but nothing architectural says which rate. [`calibrate`] asks, in order:
//!
//! 1. CPUID leaf 0x15: the core crystal clock and the TSC/crystal ratio (exact, when the CPU
//!    fills in all three values);
//! 2. CPUID leaf 0x16: the processor base frequency, which is the TSC rate on the Intel CPUs
//!    that report it;
//! 3. the PIT (8254), whose channel 2 counts at 1.193182 MHz on every PC: the TSC is read
//!    together with the PIT's counter at the start and at the end of about
//!    [`PIT_CALIBRATION_MS`] ms.
//!
//! The PIT measurement does not depend on how quickly the end of the interval is noticed:
//! each end is a pair (TSC, PIT count) read back to back, and of a few such reads the one
//! bracketed by the closest TSC values is kept. A run interrupted for long (QEMU's thread
//! descheduled on a busy host) shows up as a wide bracket or a counter that wrapped, and is
//! retried.
//!
//! # Limitations
//!
//! The kernel trusts the TSC to be invariant; it does not check CPUID 0x8000_0007 EDX bit 8
//! or adjust for frequency changes.

use x86_64::instructions::port::Port;

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// How long the PIT calibration measures, in milliseconds.
pub const PIT_CALIBRATION_MS: u64 = 5;

/// PIT ticks in [`PIT_CALIBRATION_MS`].
const PIT_CALIBRATION_TICKS: u64 = PIT_HZ * PIT_CALIBRATION_MS / 1000;

/// The shortest PIT measurement (about 0.1 ms): shorter ones say little.
pub const MIN_PIT_TICKS: u64 = 128;

/// The longest PIT measurement: the counter starts at 0xffff and must not wrap.
pub const MAX_PIT_TICKS: u64 = 0xff00;

/// How many (TSC, PIT count) reads make one sample; the tightest one is kept.
const READS_PER_SAMPLE: usize = 4;

/// Whole measurements tried before the PIT calibration gives up.
const PIT_ATTEMPTS: usize = 5;

/// The widest TSC bracket accepted around a PIT read, as a fraction of the measured interval
/// (1/200: each end of the interval is known to 0.25 %).
const MAX_BRACKET_FRACTION: u64 = 200;

/// Polls of the PIT counter before deciding it does not count. A poll is three port
/// accesses, each about a microsecond on real hardware and more when emulated, so this is
/// seconds, against the 55 ms the counter needs at most.
const PIT_POLL_LIMIT: u32 = 2_000_000;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum CalibrationMethod {
    /// CPUID leaf 0x15 (crystal clock × ratio).
    CpuidCrystal,
    /// CPUID leaf 0x16 (processor base frequency).
    CpuidBaseFrequency,
    /// Measured against PIT channel 2.
    Pit,
}

/// Why the TSC frequency is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format, thiserror::Error)]
pub enum CalibrationError {
    /// The PIT counter did not move: no PIT, or a broken one.
    #[error("the PIT channel 2 counter does not count")]
    PitNotCounting,
    /// Every PIT measurement was disturbed (wide brackets or a wrapped counter).
    #[error("every PIT measurement was disturbed")]
    PitUnstable,
    /// The TSC did not advance during the measurement.
    #[error("the TSC did not advance")]
    TscStopped,
}

/// The TSC frequency and how it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub struct Calibration {
    /// TSC ticks per second.
    pub hz: u64,
    /// Where it came from.
    pub method: CalibrationMethod,
}

/// The TSC.
pub fn read_counter() -> u64 {
    counter::read()
}

/// `ticks` of a `hz` counter in microseconds (saturating; 0 when `hz` is 0).
pub fn ticks_to_micros(ticks: u64, hz: u64) -> u64 {
    let micros = u128::from(ticks) * 1_000_000 / u128::from(hz.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// Finds the TSC frequency: from CPUID if it says, otherwise by measuring against the PIT.
pub fn calibrate() -> Result<Calibration, CalibrationError> {
    match frequency_from_cpuid() {
        Some(calibration) => Ok(calibration),
        None => Ok(Calibration {
            hz: measure_with_pit(PIT_CALIBRATION_TICKS)?,
            method: CalibrationMethod::Pit,
        }),
    }
}

/// The TSC frequency from CPUID leaves 0x15 or 0x16, if the CPU reports them.
fn frequency_from_cpuid() -> Option<Calibration> {
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;

    if max_leaf >= 0x15 {
        let leaf = core::arch::x86_64::__cpuid(0x15);
        let (denominator, numerator, crystal_hz) = (leaf.eax, leaf.ebx, leaf.ecx);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            return Some(Calibration {
                hz: u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator),
                method: CalibrationMethod::CpuidCrystal,
            });
        }
    }

    if max_leaf >= 0x16 {
        let base_mhz = core::arch::x86_64::__cpuid(0x16).eax & 0xffff;
        if base_mhz != 0 {
            return Some(Calibration {
                hz: u64::from(base_mhz) * 1_000_000,
                method: CalibrationMethod::CpuidBaseFrequency,
            });
        }
    }
    None
}

/// A TSC value read right next to a PIT counter value.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// The TSC halfway through the PIT read.
    tsc: u64,
    /// The PIT channel 2 counter (counting down).
    pit_count: u16,
    /// TSC ticks between just before and just after the PIT read.
    bracket: u64,
}

/// Measures the TSC frequency over `pit_ticks` PIT ticks (clamped to
/// [`MIN_PIT_TICKS`]..=[`MAX_PIT_TICKS`]).
pub fn measure_with_pit(pit_ticks: u64) -> Result<u64, CalibrationError> {
    let pit_ticks = pit_ticks.clamp(MIN_PIT_TICKS, MAX_PIT_TICKS);
    let mut channel = pit::Channel2::start_one_shot();
    let mut result = Err(CalibrationError::PitUnstable);
    for attempt in 0..PIT_ATTEMPTS {
        match measure_once(&mut channel, pit_ticks) {
            Ok(hz) => {
                result = Ok(hz);
                break;
            }
            Err(CalibrationError::PitUnstable) => {
                defmt::debug!(
                    "PIT calibration attempt {=usize} disturbed, retrying",
                    attempt
                );
                channel.restart();
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    channel.stop();
    result
}

/// One measurement on a counter freshly loaded with 0xffff.
fn measure_once(channel: &mut pit::Channel2, pit_ticks: u64) -> Result<u64, CalibrationError> {
    let start = sample(channel);

    let mut polls = 0;
    loop {
        let elapsed = u64::from(start.pit_count.wrapping_sub(channel.count()));
        if elapsed >= pit_ticks {
            break;
        }
        polls += 1;
        if polls >= PIT_POLL_LIMIT {
            return Err(CalibrationError::PitNotCounting);
        }
        core::hint::spin_loop();
    }

    let end = sample(channel);
    // The counter passed 0 (and wrapped) if the output went high: the interval is unknown.
    if channel.output_high() {
        return Err(CalibrationError::PitUnstable);
    }

    let elapsed_ticks = u64::from(start.pit_count.wrapping_sub(end.pit_count));
    if elapsed_ticks == 0 {
        return Err(CalibrationError::PitNotCounting);
    }
    let elapsed_tsc = end.tsc.saturating_sub(start.tsc);
    if elapsed_tsc == 0 {
        return Err(CalibrationError::TscStopped);
    }
    let widest_bracket = start.bracket.max(end.bracket);
    if widest_bracket.saturating_mul(MAX_BRACKET_FRACTION) > elapsed_tsc {
        return Err(CalibrationError::PitUnstable);
    }

    let hz = u128::from(elapsed_tsc) * u128::from(PIT_HZ) / u128::from(elapsed_ticks);
    Ok(u64::try_from(hz).unwrap_or(u64::MAX))
}

/// The tightest of a few back-to-back (TSC, PIT count) reads.
fn sample(channel: &mut pit::Channel2) -> Sample {
    let mut best = read_pair(channel);
    for _ in 1..READS_PER_SAMPLE {
        let candidate = read_pair(channel);
        if candidate.bracket < best.bracket {
            best = candidate;
        }
    }
    best
}

/// The PIT count, with the TSC read just before and just after it.
fn read_pair(channel: &mut pit::Channel2) -> Sample {
    let before = counter::read();
    let pit_count = channel.count();
    let after = counter::read();
    let bracket = after.saturating_sub(before);
    Sample {
        tsc: before + bracket / 2,
        pit_count,
        bracket,
    }
}

pub mod tests {
    //! In-kernel tests of the clock.

    use super::*;
    use crate::ktest::TestResult;
    use crate::ktest_assert;

    pub fn frequency_is_plausible() -> TestResult {
        // From an old 200 MHz machine to 10 GHz.
        let hz = crate::time::counter_frequency();
        ktest_assert!(
            (200_000_000..=10_000_000_000).contains(&hz),
            "implausible TSC",
            hz
        );
        Ok(())
    }

    pub fn frequency_agrees_with_the_pit() -> TestResult {
        // A second, shorter measurement (2 ms) must agree within 2 %.
        let hz = crate::time::counter_frequency();
        let measured = measure_with_pit(PIT_HZ * 2 / 1000);
        ktest_assert!(measured.is_ok(), "PIT measurement failed", measured.err());
        let measured = measured.unwrap_or(0);
        ktest_assert!(
            measured.abs_diff(hz) <= hz / 50,
            "TSC frequency off",
            measured
        );
        Ok(())
    }

    pub fn counter_advances() -> TestResult {
        let first = read_counter();
        let second = read_counter();
        ktest_assert!(second > first, "TSC did not advance", first);
        Ok(())
    }
}

mod counter {
    //! Reading the TSC.

    /// The TSC.
    pub fn read() -> u64 {
        // SAFETY: `rdtsc` only reads the counter; it faults only with CR4.TSD set outside
        // ring 0, and the kernel runs in ring 0.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

mod pit {
    //! PIT channel 2 through its I/O ports: the only unsafe code of this module.
    //!
    //! Channel 2 is the one whose gate software controls (port 0x61 bit 0) and whose output
    //! it can read (port 0x61 bit 5); it drives the PC speaker, which stays off (bit 1).

    use super::Port;

    /// Channel 2's counter.
    const CHANNEL2_DATA: u16 = 0x42;
    /// The mode/command register.
    const COMMAND: u16 = 0x43;
    /// NMI status and control: channel 2 gate and speaker, channel 2 output.
    const CONTROL: u16 = 0x61;

    const CONTROL_GATE: u8 = 1 << 0;
    const CONTROL_SPEAKER: u8 = 1 << 1;
    const CONTROL_OUTPUT: u8 = 1 << 5;

    /// Channel 2 (bits 7..6 = 10), low then high byte (bits 5..4 = 11), mode 0, interrupt on
    /// terminal count (bits 3..1 = 000), binary (bit 0 = 0).
    const COMMAND_CHANNEL2_ONE_SHOT: u8 = 0b1011_0000;
    /// Channel 2 (bits 7..6 = 10), latch the counter (bits 5..4 = 00).
    const COMMAND_CHANNEL2_LATCH: u8 = 0b1000_0000;

    /// PIT channel 2 counting down from 0xffff, its output low until it reaches 0.
    pub struct Channel2 {
        /// Port 0x61 as found, restored by [`Channel2::stop`].
        saved_control: u8,
    }

    impl Channel2 {
        /// Opens the gate (speaker off) and starts a count from 0xffff.
        pub fn start_one_shot() -> Self {
            let saved_control = read(CONTROL);
            write(CONTROL, (saved_control & !CONTROL_SPEAKER) | CONTROL_GATE);
            let mut channel = Self { saved_control };
            channel.restart();
            channel
        }

        /// Starts a new count from 0xffff (writing the mode also sets the output low).
        pub fn restart(&mut self) {
            write(COMMAND, COMMAND_CHANNEL2_ONE_SHOT);
            write(CHANNEL2_DATA, 0xff);
            write(CHANNEL2_DATA, 0xff);
        }

        /// The current counter value.
        pub fn count(&mut self) -> u16 {
            write(COMMAND, COMMAND_CHANNEL2_LATCH);
            let low = read(CHANNEL2_DATA);
            let high = read(CHANNEL2_DATA);
            u16::from_le_bytes([low, high])
        }

        /// Whether the count reached 0 since it was loaded.
        pub fn output_high(&mut self) -> bool {
            read(CONTROL) & CONTROL_OUTPUT != 0
        }

        /// Puts the gate and speaker bits back as they were.
        pub fn stop(self) {
            write(CONTROL, self.saved_control);
        }
    }

    fn read(port: u16) -> u8 {
        // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's and the system control port on
        // every PC; reading them has no effect beyond the PIT's read sequence, which only
        // this module drives (the kernel uses no other PIT channel and no speaker).
        unsafe { Port::<u8>::new(port).read() }
    }

    fn write(port: u16, value: u8) {
        // SAFETY: as for `read`; the values written only program channel 2 and its gate.
        unsafe { Port::<u8>::new(port).write(value) }
    }
}
