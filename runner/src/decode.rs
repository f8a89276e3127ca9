//! Turns the bytes QEMU's serial port gives us into firmware text and decoded kernel log
//! lines.
//!
//! The serial stream has two parts. First the firmware writes plain text (OpenSBI's banner on
//! riscv64; SeaBIOS is silent on the serial port). Then the kernel's defmt logger writes one
//! 0x00 byte and, from there on, rzcobs-encoded defmt frames that each end with 0x00. The first
//! 0x00 is therefore where the firmware's text ends ([`PreambleSplitter`]). Frames are decoded
//! with the string table of the kernel ELF; a frame that does not decode (a corrupt byte, or an
//! ELF that does not match the kernel that ran) is counted and skipped, and decoding resumes at
//! the next 0x00.
//!
//! # Limitations
//!
//! defmt-decoder panics on some inputs that a matching ELF never produces (a format string of
//! one ELF applied to the arguments of another). Such a panic is caught and the frame counted
//! as malformed, but Rust's panic hook still prints the panic message on stderr.

use std::fmt::{self, Write as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use defmt_decoder::{Locations, StreamDecoder, Table};

/// A defmt log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// The level's name as the log shows it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn from_defmt(level: defmt_parser::Level) -> Self {
        match level {
            defmt_parser::Level::Trace => Level::Trace,
            defmt_parser::Level::Debug => Level::Debug,
            defmt_parser::Level::Info => Level::Info,
            defmt_parser::Level::Warn => Level::Warn,
            defmt_parser::Level::Error => Level::Error,
        }
    }

    /// The terminal style of the level's name.
    fn style(self) -> anstyle::Style {
        let color = match self {
            Level::Trace => anstyle::AnsiColor::BrightBlack,
            Level::Debug => anstyle::AnsiColor::Blue,
            Level::Info => anstyle::AnsiColor::Green,
            Level::Warn => anstyle::AnsiColor::Yellow,
            Level::Error => anstyle::AnsiColor::Red,
        };
        anstyle::Style::new().fg_color(Some(color.into())).bold()
    }
}

/// Where in the source a log line was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file, relative to the workspace root when it lies inside it.
    pub file: String,
    /// The line.
    pub line: u64,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One decoded defmt frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The kernel's timestamp as defmt formats it (seconds with microseconds, `0.012345`).
    pub timestamp: Option<String>,
    /// The level (`None` for `defmt::println!`).
    pub level: Option<Level>,
    /// The formatted message.
    pub message: String,
    /// The source location, when the ELF's debug information has it.
    pub location: Option<SourceLocation>,
}

impl LogLine {
    /// The line as the runner prints it: timestamp, level, message and location, coloured
    /// when `color` is set.
    pub fn render(&self, color: bool) -> String {
        let mut text = String::new();
        let timestamp = self.timestamp.as_deref().unwrap_or("");
        let level = self.level.map_or("", Level::name);
        let _ = write!(text, "{timestamp:>10} ");
        match self.level {
            Some(level_value) if color => {
                let style = level_value.style();
                let _ = write!(text, "{style}{level:<5}{style:#} ");
            }
            _ => {
                let _ = write!(text, "{level:<5} ");
            }
        }
        text.push_str(&self.message);
        if let Some(location) = &self.location {
            if color {
                let dim = anstyle::Style::new().dimmed();
                let _ = write!(text, "  {dim}({location}){dim:#}");
            } else {
                let _ = write!(text, "  ({location})");
            }
        }
        text
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// Splits the serial stream at its first 0x00 byte: before it is firmware text, from it on the
/// kernel's defmt frames.
#[derive(Debug, Default)]
pub struct PreambleSplitter {
    kernel_started: bool,
}

impl PreambleSplitter {
    /// Splits the next chunk of the stream into `(firmware text, kernel bytes)`. The kernel
    /// bytes begin with the separating 0x00 in the chunk where it appears.
    pub fn split<'a>(&mut self, chunk: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        if self.kernel_started {
            return (&[], chunk);
        }
        match chunk.iter().position(|&byte| byte == 0) {
            Some(separator) => {
                self.kernel_started = true;
                chunk.split_at(separator)
            }
            None => (chunk, &[]),
        }
    }

    /// Whether the 0x00 that starts the kernel's output has been seen.
    pub fn kernel_started(&self) -> bool {
        self.kernel_started
    }
}

/// Collects firmware text into lines.
#[derive(Debug, Default)]
struct LineAssembler {
    partial: Vec<u8>,
}

impl LineAssembler {
    /// Adds bytes; returns the lines they complete, without line endings.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(self.take());
            } else {
                self.partial.push(byte);
            }
        }
        lines
    }

    /// The unfinished last line, if any.
    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_owned();
        self.partial.clear();
        line
    }
}

/// Something the serial stream produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialItem {
    /// A line of the firmware's text.
    FirmwareLine(String),
    /// The kernel wrote its first byte.
    KernelStarted,
    /// A decoded kernel log frame.
    Log(LogLine),
    /// A frame that could not be decoded was skipped.
    MalformedFrame,
}

/// Why a kernel ELF cannot decode the log.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    #[error("the ELF has no defmt table (no .defmt section)")]
    NoDefmtTable,
    #[error("the ELF's defmt table is unusable: {0}")]
    Unusable(String),
}

/// What decoding needs from the kernel ELF: defmt's string table and, when the ELF has debug
/// information, the source location of each log statement.
pub struct KernelSymbols {
    table: Table,
    locations: Option<Locations>,
}

impl KernelSymbols {
    /// Reads the table and the locations from a kernel ELF.
    pub fn from_elf(elf: &[u8]) -> Result<Self, SymbolsError> {
        let table = Table::parse(elf)
            .map_err(|error| SymbolsError::Unusable(error.to_string()))?
            .ok_or(SymbolsError::NoDefmtTable)?;
        let locations = table
            .get_locations(elf)
            .ok()
            .filter(|locations| !locations.is_empty());
        Ok(Self { table, locations })
    }

    /// Whether log lines will carry source locations.
    pub fn has_locations(&self) -> bool {
        self.locations.is_some()
    }

    /// A decoder for a serial stream; source files are shown relative to `workspace_root`.
    pub fn decoder<'a>(&'a self, workspace_root: &'a Path) -> SerialDecoder<'a> {
        SerialDecoder::new(&self.table, self.locations.as_ref(), workspace_root)
    }

    /// Decodes a whole captured serial stream (from a board, or a report's `serial_bytes`).
    pub fn decode_capture(&self, serial: &[u8], workspace_root: &Path) -> Vec<SerialItem> {
        let mut decoder = self.decoder(workspace_root);
        let mut items = decoder.push(serial);
        items.extend(decoder.finish());
        items
    }
}

/// Decodes the whole serial stream of one run.
pub struct SerialDecoder<'t> {
    locations: Option<&'t Locations>,
    workspace_root: &'t Path,
    frames: Box<dyn StreamDecoder + Send + Sync + 't>,
    splitter: PreambleSplitter,
    firmware_text: LineAssembler,
}

impl<'t> SerialDecoder<'t> {
    /// A decoder for the frames described by `table`; `locations` (from the same ELF) adds
    /// source locations, shown relative to `workspace_root`.
    fn new(table: &'t Table, locations: Option<&'t Locations>, workspace_root: &'t Path) -> Self {
        Self {
            locations,
            workspace_root,
            frames: table.new_stream_decoder(),
            splitter: PreambleSplitter::default(),
            firmware_text: LineAssembler::default(),
        }
    }

    /// Feeds the next bytes from the serial port; returns what they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SerialItem> {
        let was_started = self.splitter.kernel_started();
        let (firmware, kernel) = self.splitter.split(bytes);

        let mut items: Vec<SerialItem> = self
            .firmware_text
            .push(firmware)
            .into_iter()
            .map(SerialItem::FirmwareLine)
            .collect();
        if !was_started && self.splitter.kernel_started() {
            items.extend(self.firmware_text.finish().map(SerialItem::FirmwareLine));
            items.push(SerialItem::KernelStarted);
        }

        if !kernel.is_empty() {
            self.frames.received(kernel);
            self.decode_frames(&mut items);
        }
        items
    }

    /// The end of the stream: returns the firmware's unfinished last line, if the kernel never
    /// started.
    pub fn finish(&mut self) -> Vec<SerialItem> {
        self.firmware_text
            .finish()
            .map(SerialItem::FirmwareLine)
            .into_iter()
            .collect()
    }

    /// Whether the kernel's output has begun.
    pub fn kernel_started(&self) -> bool {
        self.splitter.kernel_started()
    }

    fn decode_frames(&mut self, items: &mut Vec<SerialItem>) {
        loop {
            let locations = self.locations;
            let root = self.workspace_root;
            let frames = &mut self.frames;
            // A frame decoded with a table that does not match can make defmt-decoder panic;
            // its stream state is already past the frame by then, so decoding goes on.
            let decoded = panic::catch_unwind(AssertUnwindSafe(|| match frames.decode() {
                Ok(frame) => Some(Ok(log_line(&frame, locations, root))),
                Err(defmt_decoder::DecodeError::UnexpectedEof) => None,
                Err(defmt_decoder::DecodeError::Malformed) => Some(Err(())),
            }));
            match decoded {
                Ok(Some(Ok(line))) => items.push(SerialItem::Log(line)),
                Ok(Some(Err(()))) | Err(_) => items.push(SerialItem::MalformedFrame),
                Ok(None) => return,
            }
        }
    }
}

/// Converts a decoded frame to a [`LogLine`].
fn log_line(
    frame: &defmt_decoder::Frame<'_>,
    locations: Option<&Locations>,
    workspace_root: &Path,
) -> LogLine {
    let location = locations
        .and_then(|locations| locations.get(&frame.index()))
        .map(|location| SourceLocation {
            file: location
                .file
                .strip_prefix(workspace_root)
                .unwrap_or(&location.file)
                .display()
                .to_string(),
            line: location.line,
        });
    LogLine {
        timestamp: frame.display_timestamp().map(|t| t.to_string()),
        level: frame.level().map(Level::from_defmt),
        message: frame.display_message().to_string(),
        location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_ends_at_first_zero() {
        let mut splitter = PreambleSplitter::default();
        assert_eq!(
            splitter.split(b"OpenSBI v1.2\r\n"),
            (&b"OpenSBI v1.2\r\n"[..], &[][..])
        );
        assert!(!splitter.kernel_started());

        assert_eq!(
            splitter.split(b"done\n\0\x05\x01"),
            (&b"done\n"[..], &b"\0\x05\x01"[..])
        );
        assert!(splitter.kernel_started());

        // After the separator every byte is the kernel's, text or not.
        assert_eq!(splitter.split(b"abc\0"), (&[][..], &b"abc\0"[..]));
    }

    #[test]
    fn preamble_split_when_separator_opens_a_chunk() {
        let mut splitter = PreambleSplitter::default();
        assert_eq!(splitter.split(b"firmware"), (&b"firmware"[..], &[][..]));
        assert_eq!(splitter.split(b"\0\x07"), (&[][..], &b"\0\x07"[..]));
        assert!(splitter.kernel_started());
    }

    #[test]
    fn no_firmware_text_at_all() {
        let mut splitter = PreambleSplitter::default();
        assert_eq!(splitter.split(b""), (&[][..], &[][..]));
        assert!(!splitter.kernel_started());
        assert_eq!(splitter.split(b"\0"), (&[][..], &b"\0"[..]));
        assert!(splitter.kernel_started());
    }

    #[test]
    fn firmware_lines_are_split_across_chunks() {
        let mut lines = LineAssembler::default();
        assert_eq!(lines.push(b"Open"), Vec::<String>::new());
        assert_eq!(
            lines.push(b"SBI\r\nPlatform: virt\r\nBo"),
            ["OpenSBI", "Platform: virt"]
        );
        assert_eq!(lines.finish().as_deref(), Some("Bo"));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn rendered_line_has_timestamp_level_message_location() {
        let line = LogLine {
            timestamp: Some("0.012345".into()),
            level: Some(Level::Info),
            message: "booting on riscv64".into(),
            location: Some(SourceLocation {
                file: "kernel/src/main.rs".into(),
                line: 70,
            }),
        };
        assert_eq!(
            line.render(false),
            "  0.012345 INFO  booting on riscv64  (kernel/src/main.rs:70)"
        );
        let colored = line.render(true);
        assert!(colored.contains("\x1b["), "{colored:?}");
        assert!(colored.contains("booting on riscv64"));
    }
}
