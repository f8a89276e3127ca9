//! The two machines the kernel boots on, and what the runner needs to know about each: the
//! Rust target, the QEMU binary and the Debian packages that provide it.

use std::fmt;

/// An architecture the kernel is built for and booted on in QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Arch {
    /// RISC-V 64-bit: QEMU `virt` under OpenSBI.
    #[value(name = "riscv64")]
    Riscv64,
    /// x86-64: QEMU `q35`, the kernel loaded through its PVH note.
    #[value(name = "x86_64")]
    X86_64,
}

impl Arch {
    /// Every architecture, in a fixed order.
    pub const ALL: [Arch; 2] = [Arch::Riscv64, Arch::X86_64];

    /// The name used on the command line and in the kernel's own log.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Riscv64 => "riscv64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The Rust target the kernel is built for.
    pub fn target_triple(self) -> &'static str {
        match self {
            Arch::Riscv64 => "riscv64gc-unknown-none-elf",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::Riscv64 => "qemu-system-riscv64",
            Arch::X86_64 => "qemu-system-x86_64",
        }
    }

    /// The Debian packages that install [`Arch::qemu_binary`] and, for riscv64, OpenSBI
    /// (`qemu-system-data`, which `qemu-system-misc` depends on anyway).
    pub fn debian_packages(self) -> &'static [&'static str] {
        match self {
            Arch::Riscv64 => &["qemu-system-misc", "qemu-system-data"],
            Arch::X86_64 => &["qemu-system-x86"],
        }
    }

    /// A small index, for per-architecture tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Arch::Riscv64 => 0,
            Arch::X86_64 => 1,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (position, arch) in Arch::ALL.iter().enumerate() {
            assert_eq!(arch.index(), position);
        }
    }
}
