//! virtio-blk: a [`BlockDevice`] over `virtio-drivers`' [`VirtIOBlk`], on any transport.
//!
//! Under TCG a virtio request costs tens of microseconds whatever its size, so how fast a
//! cold file reads is decided by how many requests it takes. A read here is therefore cut
//! into requests of up to [`MAX_REQUEST_BYTES`], and up to [`MAX_IN_FLIGHT`] of them are on
//! the queue at once through the non-blocking API (`read_blocks_nb` /
//! `complete_read_blocks`): a filesystem that reads a contiguous extent in one call (the gfs2
//! reader does) gets it as a few large requests that the device works on together.
//!
//! Completions may come back in any order; each is matched to its request by the token the
//! queue gave it. When a request fails, the requests still on the queue are completed before
//! the read returns (their buffers are lent to the device until then), and the error names
//! the device and the first sector of the failed request.
//!
//! # Limitations
//!
//! - Polled: the driver spins on the used ring and takes no interrupts, and a device that
//!   never answers hangs the read (there is no timeout without a clock in this crate).
//! - Read-only: nothing writes yet, so no write path is offered.
//! - One queue, serialized by a spinlock: one reader at a time per device.

use core::fmt;

use spin::Mutex;
use virtio_drivers::Hal;
use virtio_drivers::device::blk::{BlkReq, BlkResp, RespStatus, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::Transport;

use crate::block::BlockDevice;

/// The largest request sent to the device, in bytes (a whole number of sectors).
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;

/// How many requests one read keeps on the queue at once. `virtio-drivers` gives the queue 16
/// descriptors; with indirect descriptors a request takes one of them, without it three.
pub const MAX_IN_FLIGHT: usize = 8;

/// Why a virtio-blk device could not be started or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VirtioBlockError {
    /// The device did not come up (feature negotiation, queue setup).
    #[error("{device}: cannot start the device: {source}")]
    Start {
        /// The device's name.
        device: &'static str,
        /// What `virtio-drivers` reported.
        source: virtio_drivers::Error,
    },
    /// The device answered a read with an error status, or the queue failed.
    #[error("{device}: reading {count} sectors at sector {sector} failed: {reason}")]
    Read {
        /// The device's name.
        device: &'static str,
        /// First sector of the failed request.
        sector: u64,
        /// Sectors in the failed request.
        count: u64,
        /// What went wrong.
        reason: ReadFailure,
    },
    /// The buffer is not a whole number of sectors.
    #[error("{device}: a read of {len} bytes is not a whole number of 512-byte sectors")]
    PartialSector {
        /// The device's name.
        device: &'static str,
        /// Length of the buffer.
        len: usize,
    },
    /// The read runs past the last sector.
    #[error("{device}: sectors {first}..+{count} lie past the device end ({capacity} sectors)")]
    OutOfRange {
        /// The device's name.
        device: &'static str,
        /// First sector asked for.
        first: u64,
        /// Sectors asked for.
        count: u64,
        /// Sectors on the device.
        capacity: u64,
    },
}

/// What went wrong with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// The device answered `VIRTIO_BLK_S_IOERR`.
    IoError,
    /// The device answered `VIRTIO_BLK_S_UNSUPP`.
    Unsupported,
    /// The device completed the request without writing its status.
    NoStatus,
    /// The device answered a status the specification does not define.
    UnknownStatus,
    /// The queue refused the request or returned a completion it did not expect.
    Queue(virtio_drivers::Error),
}

impl fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IoError => f.write_str("I/O error"),
            Self::Unsupported => f.write_str("request not supported"),
            Self::NoStatus => f.write_str("no status written"),
            Self::UnknownStatus => f.write_str("unknown status"),
            Self::Queue(error) => write!(f, "virtqueue: {error}"),
        }
    }
}

impl VirtioBlockError {
    /// The name of the device the error happened on.
    pub fn device(&self) -> &'static str {
        match *self {
            Self::Start { device, .. }
            | Self::Read { device, .. }
            | Self::PartialSector { device, .. }
            | Self::OutOfRange { device, .. } => device,
        }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for VirtioBlockError {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{}", defmt::Display2Format(self))
    }
}

/// A virtio block device, read in 512-byte sectors.
pub struct VirtioBlock<H: Hal, T: Transport> {
    name: &'static str,
    capacity: u64,
    device: Mutex<VirtIOBlk<H, T>>,
}

impl<H: Hal, T: Transport> VirtioBlock<H, T> {
    /// Starts the virtio-blk device behind `transport` and names it `name` in errors and logs.
    pub fn new(name: &'static str, transport: T) -> Result<Self, VirtioBlockError> {
        let device = VirtIOBlk::new(transport).map_err(|source| VirtioBlockError::Start {
            device: name,
            source,
        })?;
        Ok(Self {
            name,
            capacity: device.capacity(),
            device: Mutex::new(device),
        })
    }

    /// The device's name (`virtio0`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Checks a read of `len` bytes at `first` before anything is queued.
    fn check_read(&self, first: u64, len: usize) -> Result<(), VirtioBlockError> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(VirtioBlockError::PartialSector {
                device: self.name,
                len,
            });
        }

        let count = (len / SECTOR_SIZE) as u64;
        let out_of_range = VirtioBlockError::OutOfRange {
            device: self.name,
            first,
            count,
            capacity: self.capacity,
        };
        match first.checked_add(count) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(out_of_range),
        }
    }
}

/// A request on the queue: its header and status live here, at a stable address, until the
/// device has answered.
struct InFlight<'buf> {
    token: u16,
    sector: u64,
    request: BlkReq,
    response: BlkResp,
    buffer: &'buf mut [u8],
}

impl<H: Hal, T: Transport> BlockDevice for VirtioBlock<H, T> {
    type Error = VirtioBlockError;

    fn block_size(&self) -> usize {
        SECTOR_SIZE
    }

    fn block_count(&self) -> u64 {
        self.capacity
    }

    fn read_blocks(&self, first: u64, buf: &mut [u8]) -> Result<(), VirtioBlockError> {
        self.check_read(first, buf.len())?;

        let mut device = self.device.lock();
        let mut slots: [Option<InFlight<'_>>; MAX_IN_FLIGHT] = Default::default();
        let mut chunks = buf.chunks_mut(MAX_REQUEST_BYTES);
        // A chunk the queue had no room for, to be queued after the next completion.
        let mut deferred: Option<&mut [u8]> = None;
        let mut sector = first;
        let mut first_error = None;

        loop {
            // Queue requests while there are free slots, chunks left and no error yet.
            while first_error.is_none() {
                let queued = in_flight(&slots);
                let Some(slot) = slots.iter_mut().find(|slot| slot.is_none()) else {
                    break;
                };
                let Some(chunk) = deferred.take().or_else(|| chunks.next()) else {
                    break;
                };
                let count = (chunk.len() / SECTOR_SIZE) as u64;
                let request = slot.insert(InFlight {
                    token: 0,
                    sector,
                    request: BlkReq::default(),
                    response: BlkResp::default(),
                    buffer: chunk,
                });
                match queue::submit(&mut device, request) {
                    Ok(()) => sector += count,
                    Err(virtio_drivers::Error::QueueFull) if queued > 0 => {
                        // Nothing was lent to the device: take the chunk back and wait for
                        // a request to finish.
                        deferred = slot.take().map(|request| request.buffer);
                        break;
                    }
                    Err(error) => {
                        *slot = None;
                        first_error =
                            Some(self.read_error(sector, count, ReadFailure::Queue(error)));
                    }
                }
            }

            if in_flight(&slots) == 0 {
                break;
            }

            // Wait for the next completion and retire the request it belongs to.
            let token = loop {
                if let Some(token) = device.peek_used() {
                    break token;
                }
                core::hint::spin_loop();
            };
            // Completed where it was submitted: the device was lent the addresses of the
            // header and status in the slot, and the DMA layer matches them on return.
            let Some(slot) = slots
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|request| request.token == token))
            else {
                // The device used a descriptor chain that no request owns. The buffers of
                // the requests still on the queue are lent to a device that no longer
                // follows the protocol; they cannot be given back to the caller safely.
                panic!(
                    "{}: the device completed unknown token {}",
                    self.name, token
                );
            };
            let Some(request) = slot.as_mut() else {
                unreachable!("the slot was found holding a request");
            };
            let count = (request.buffer.len() / SECTOR_SIZE) as u64;
            let completed = queue::complete(&mut device, request);
            let sector = request.sector;
            *slot = None;
            if let Err(failure) = completed
                && first_error.is_none()
            {
                first_error = Some(self.read_error(sector, count, failure));
            }
        }

        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl<H: Hal, T: Transport> VirtioBlock<H, T> {
    fn read_error(&self, sector: u64, count: u64, reason: ReadFailure) -> VirtioBlockError {
        VirtioBlockError::Read {
            device: self.name,
            sector,
            count,
            reason,
        }
    }
}

/// How many slots hold a request.
fn in_flight(slots: &[Option<InFlight<'_>>]) -> usize {
    slots.iter().filter(|slot| slot.is_some()).count()
}

/// What a completed request's status says, once `virtio-drivers` has found it not OK.
fn failure_of(status: RespStatus) -> ReadFailure {
    if status == RespStatus::IO_ERR {
        ReadFailure::IoError
    } else if status == RespStatus::UNSUPPORTED {
        ReadFailure::Unsupported
    } else if status == RespStatus::NOT_READY {
        ReadFailure::NoStatus
    } else {
        ReadFailure::UnknownStatus
    }
}

mod queue {
    //! The unsafe half of the driver: lending buffers to the device and taking them back.

    use super::{InFlight, ReadFailure, failure_of};
    use virtio_drivers::Hal;
    use virtio_drivers::device::blk::VirtIOBlk;
    use virtio_drivers::transport::Transport;

    /// Puts `request` on the queue and records its token.
    ///
    /// On success the request's header, buffer and status are lent to the device until
    /// [`complete`] is called with the same `request`, which must not move or be touched
    /// before then: the caller keeps it in a slot it does not reuse until [`complete`].
    pub(super) fn submit<H: Hal, T: Transport>(
        device: &mut VirtIOBlk<H, T>,
        request: &mut InFlight<'_>,
    ) -> Result<(), virtio_drivers::Error> {
        // SAFETY: `request` lives in a slot of the caller's array, which stays where it is
        // and is not read or written until `complete` retires the token (see above); the
        // buffer is a `&mut` borrow the request holds for as long.
        let token = unsafe {
            device.read_blocks_nb(
                request.sector as usize,
                &mut request.request,
                request.buffer,
                &mut request.response,
            )
        }?;
        request.token = token;
        Ok(())
    }

    /// Takes back the buffers of a request the device has completed and checks its status.
    pub(super) fn complete<H: Hal, T: Transport>(
        device: &mut VirtIOBlk<H, T>,
        request: &mut InFlight<'_>,
    ) -> Result<(), ReadFailure> {
        // SAFETY: these are the header, buffer and status `submit` lent to the device under
        // this token, untouched since.
        let popped = unsafe {
            device.complete_read_blocks(
                request.token,
                &request.request,
                request.buffer,
                &mut request.response,
            )
        };
        match popped {
            Ok(()) => Ok(()),
            Err(
                virtio_drivers::Error::IoError
                | virtio_drivers::Error::Unsupported
                | virtio_drivers::Error::NotReady,
            ) => Err(failure_of(request.response.status())),
            Err(error) => Err(ReadFailure::Queue(error)),
        }
    }
}

#[cfg(test)]
mod tests;
