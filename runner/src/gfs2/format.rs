//! How the gfs2 commands show numbers, times and file types: in the shapes coreutils `ls`
//! and `stat` use, so their output reads (and diffs) like the tools people know.

use std::fmt::Write as _;

use fs::gfs2::{FileType, Stat, Timestamp};
use time::OffsetDateTime;

/// A time as `ls -l --time-style=long-iso` shows it in UTC: `2024-01-01 00:00`.
///
/// A time outside the years -9999 to 9999 shows as its raw seconds since the epoch.
pub fn minutes(time: Timestamp) -> String {
    match OffsetDateTime::from_unix_timestamp(time.seconds) {
        Ok(utc) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute()
        ),
        Err(_) => format!("@{}", time.seconds),
    }
}

/// A time as `stat` shows it in UTC, to the nanosecond: `2024-01-01 00:00:25.000000000 +0000`.
///
/// A time outside the years -9999 to 9999 shows as its raw seconds since the epoch.
pub fn nanoseconds(time: Timestamp) -> String {
    match OffsetDateTime::from_unix_timestamp(time.seconds) {
        Ok(utc) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} +0000",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second(),
            time.nanoseconds
        ),
        Err(_) => format!("@{}.{:09}", time.seconds, time.nanoseconds),
    }
}

/// What `stat` calls the type of a file (`%F`): `regular file`, `directory`, ...
pub fn file_type_name(stat: &Stat) -> &'static str {
    match stat.file_type {
        FileType::Regular if stat.size == 0 => "regular empty file",
        FileType::Regular => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::CharDevice => "character special file",
        FileType::BlockDevice => "block special file",
        FileType::Socket => "socket",
    }
}

/// Whether `file_type` is a device, whose `ls -l` size column shows `major, minor`.
pub fn is_device(file_type: FileType) -> bool {
    matches!(file_type, FileType::CharDevice | FileType::BlockDevice)
}

/// A UUID in its usual text form: `6f3c1c7e-4b2a-4d5e-9a41-000000004096`.
pub fn uuid(bytes: [u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A byte count with a binary unit, to one decimal: `64.0 MiB`.
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The column widths of one `ls -l` listing: each column is as wide as its widest cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongColumns {
    nlink: usize,
    uid: usize,
    gid: usize,
    major: usize,
    minor: usize,
    size: usize,
}

impl LongColumns {
    /// The widths that fit every one of `stats`.
    pub fn fitting<'a>(stats: impl IntoIterator<Item = &'a Stat>) -> Self {
        let mut columns = Self::default();
        for stat in stats {
            columns.nlink = columns.nlink.max(digits(stat.nlink.into()));
            columns.uid = columns.uid.max(digits(stat.uid.into()));
            columns.gid = columns.gid.max(digits(stat.gid.into()));
            if is_device(stat.file_type) {
                columns.major = columns.major.max(digits(stat.major.into()));
                columns.minor = columns.minor.max(digits(stat.minor.into()));
            } else {
                columns.size = columns.size.max(digits(stat.size));
            }
        }
        // As coreutils: `major, minor` shares the size column.
        if columns.major > 0 {
            columns.size = columns.size.max(columns.major + 2 + columns.minor);
        }
        columns
    }

    /// The line of `ls -l` for a file with `stat` (the name is not included): mode, links,
    /// owner, group, size or device numbers and modification time, each followed by a space.
    pub fn line(&self, stat: &Stat) -> String {
        let size = if is_device(stat.file_type) {
            format!(
                "{:>major$}, {:>minor$}",
                stat.major,
                stat.minor,
                major = self.major,
                minor = self.minor
            )
        } else {
            stat.size.to_string()
        };
        format!(
            "{} {:>nlink$} {:>uid$} {:>gid$} {size:>width$} {} ",
            stat.mode_string(),
            stat.nlink,
            stat.uid,
            stat.gid,
            minutes(stat.mtime),
            nlink = self.nlink,
            uid = self.uid,
            gid = self.gid,
            width = self.size,
        )
    }
}

/// Decimal digits of `value`.
fn digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The `total` line of `ls -l`: the 1 KiB blocks of the files listed (512-byte sectors
/// summed, rounded up).
pub fn total_kib<'a>(stats: impl IntoIterator<Item = &'a Stat>) -> u64 {
    let sectors = stats
        .into_iter()
        .fold(0u64, |sum, stat| sum.saturating_add(stat.sectors()));
    sectors.div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanoseconds: u32) -> Timestamp {
        Timestamp {
            seconds,
            nanoseconds,
        }
    }

    fn stat(mode: u32, size: u64) -> Stat {
        Stat {
            ino: 100,
            formal_ino: 7,
            file_type: FileType::from_mode(mode).unwrap(),
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            size,
            blocks: 1,
            block_size: 4096,
            atime: at(0, 0),
            mtime: at(1_704_067_225, 0),
            ctime: at(0, 0),
            major: 0,
            minor: 0,
            flags: 0,
        }
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(minutes(at(0, 0)), "1970-01-01 00:00");
        assert_eq!(minutes(at(1_704_067_225, 999_999_999)), "2024-01-01 00:00");
        assert_eq!(minutes(at(1_709_208_059, 0)), "2024-02-29 12:00");
        assert_eq!(minutes(at(-1, 0)), "1969-12-31 23:59");
        assert_eq!(
            nanoseconds(at(1_704_067_225, 5)),
            "2024-01-01 00:00:25.000000005 +0000"
        );
        assert_eq!(
            nanoseconds(at(4_102_444_799, 123_456_789)),
            "2099-12-31 23:59:59.123456789 +0000"
        );
    }

    #[test]
    fn times_out_of_range_show_raw_seconds() {
        assert_eq!(minutes(at(i64::MAX, 0)), format!("@{}", i64::MAX));
        assert_eq!(
            nanoseconds(at(i64::MIN, 1)),
            format!("@{}.000000001", i64::MIN)
        );
    }

    #[test]
    fn file_types_are_named_as_stat_names_them() {
        let cases = [
            (0o100644, 0, "regular empty file"),
            (0o100644, 1, "regular file"),
            (0o040755, 3864, "directory"),
            (0o120777, 9, "symbolic link"),
            (0o010644, 0, "fifo"),
            (0o020644, 0, "character special file"),
            (0o060644, 0, "block special file"),
            (0o140755, 0, "socket"),
        ];

        for (mode, size, name) in cases {
            assert_eq!(file_type_name(&stat(mode, size)), name, "{mode:o}");
        }
    }

    #[test]
    fn uuids_and_sizes_read_as_usual() {
        let bytes = [
            0x6f, 0x3c, 0x1c, 0x7e, 0x4b, 0x2a, 0x4d, 0x5e, 0x9a, 0x41, 0, 0, 0, 0, 0x40, 0x96,
        ];
        assert_eq!(uuid(bytes), "6f3c1c7e-4b2a-4d5e-9a41-000000004096");

        assert_eq!(binary_size(512), "512 B");
        assert_eq!(binary_size(1536), "1.5 KiB");
        assert_eq!(binary_size(64 << 20), "64.0 MiB");
        assert_eq!(binary_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn long_lines_align_like_ls() {
        let mut big = stat(0o100644, 1_048_576);
        big.nlink = 12;
        big.uid = 1000;
        let small = stat(0o100755, 7);
        let mut device = stat(0o020644, 0);
        (device.major, device.minor) = (1, 3);

        let columns = LongColumns::fitting([&big, &small, &device]);

        assert_eq!(
            columns.line(&big),
            "-rw-r--r-- 12 1000 0 1048576 2024-01-01 00:00 "
        );
        assert_eq!(
            columns.line(&small),
            "-rwxr-xr-x  1    0 0       7 2024-01-01 00:00 "
        );
        assert_eq!(
            columns.line(&device),
            "crw-r--r--  1    0 0    1, 3 2024-01-01 00:00 "
        );
    }

    #[test]
    fn device_numbers_can_widen_the_size_column() {
        let small = stat(0o100644, 7);
        let mut device = stat(0o060644, 0);
        (device.major, device.minor) = (259, 12);

        let columns = LongColumns::fitting([&small, &device]);

        assert_eq!(
            columns.line(&small),
            "-rw-r--r-- 1 0 0       7 2024-01-01 00:00 "
        );
        assert_eq!(
            columns.line(&device),
            "brw-r--r-- 1 0 0 259, 12 2024-01-01 00:00 "
        );
    }

    #[test]
    fn total_counts_kib_rounded_up() {
        let mut one_sector = stat(0o100644, 7);
        one_sector.block_size = 512;
        let four_kib = stat(0o100644, 7);

        assert_eq!(total_kib([&one_sector]), 1);
        assert_eq!(total_kib([&one_sector, &four_kib]), 5);
        assert_eq!(total_kib([]), 0);
    }
}
