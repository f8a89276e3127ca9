//! Clean journals: every block a log header that says the filesystem was unmounted.
//!
//! Linux and `fsck.gfs2` find a journal's head as the valid log header with the highest
//! sequence number, and call the journal clean when that header has the UNMOUNT flag. As
//! `mkfs.gfs2` does, every block of a new journal is such a header; here the sequence number
//! is the block's index in the journal, so the last block is the head.

use fs::gfs2::ondisk::{GFS2_MAGIC, name_hash, put32, put64};

/// `GFS2_LOG_HEAD_UNMOUNT | GFS2_LOG_HEAD_USERSPACE`: cleanly unmounted, written by a tool.
const CLEAN_FLAGS: u32 = 0x8000_0001;

/// `GFS2_METATYPE_LH`: not a type the reader decodes, so not in `MetaType`.
const LOG_HEADER_TYPE: u32 = 8;

/// Offset of `lh_hash` (CRC-32 of bytes 0..48 with this field zeroed).
const HASH_OFFSET: usize = 44;
/// Offset of `lh_crc` (CRC-32C of bytes 52 to the end of the block).
const CRC_OFFSET: usize = 48;
/// Where the bytes `lh_crc` covers start.
const CRC_START: usize = 52;

/// Writes into `block` (a whole block) the clean log header of journal block `index`, which
/// lies at device block `address`, of the journal whose dinode is at `journal_inode`.
pub fn encode_log_header(block: &mut [u8], index: u32, address: u64, journal_inode: u64) {
    block.fill(0);
    put32(block, 0, GFS2_MAGIC);
    put32(block, 4, LOG_HEADER_TYPE);
    put32(block, 16, LOG_HEADER_TYPE * 100);
    put64(block, 24, u64::from(index)); // lh_sequence
    put32(block, 32, CLEAN_FLAGS);
    put32(block, 40, index); // lh_blkno
    put64(block, 64, address); // lh_addr
    put64(block, 72, journal_inode); // lh_jinode

    // The standard CRC-32, the same function as the directory name hash.
    let hash = name_hash(&block[..CRC_OFFSET]);
    put32(block, HASH_OFFSET, hash);
    // The raw CRC-32C register: initial value all ones and no final inversion, which is the
    // inverse of the standard CRC-32C.
    let crc = !crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&block[CRC_START..]);
    put32(block, CRC_OFFSET, crc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs::gfs2::ondisk::be32;

    #[test]
    fn checksums_match_the_format_documents_vector() {
        // bsize 4096, seq 0, blkno 0, addr 24, jinode 18: lh_hash 0x7774D93A and
        // lh_crc 0xAC0FB9D0, as a real mkfs image has them.
        let mut block = vec![0xEE; 4096];

        encode_log_header(&mut block, 0, 24, 18);

        assert_eq!(be32(&block, HASH_OFFSET), 0x7774_D93A);
        assert_eq!(be32(&block, CRC_OFFSET), 0xAC0F_B9D0);
    }
}
