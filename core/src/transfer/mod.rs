//! Transfer: how a file is cut into pieces for download, which pieces a
//! downloader holds, and (in later parts of this module) the messages and
//! the scheduler that fetch them from several sources.
//!
//! A *piece* is [`PIECE_BYTES`] of content (the last one may be shorter),
//! aligned to BLAKE3 chunk groups so that each piece verifies on its own
//! against the content id ([`crate::content::verify_range`]). A piece is
//! the unit a downloader requests, verifies, writes and records as held.

mod bitfield;
mod frame;
mod msg;

pub use bitfield::{Bitfield, BitfieldError};
pub use frame::{FRAME_HEADER_BYTES, FrameError, Framer, Reassembler};
pub use msg::{MAX_PIECE_ENCODED, MAX_PIECE_MESSAGE, Request, Served, TransferMsg, serve};

use std::ops::Range;

use crate::content::{CHUNK_GROUP_BYTES, MAX_CONTENT_SIZE};

/// Bytes in one piece: four chunk groups.
pub const PIECE_BYTES: u64 = 4 * CHUNK_GROUP_BYTES;

/// Pieces in content of `size` bytes (an empty file has none).
pub fn piece_count(size: u64) -> u64 {
    size.min(MAX_CONTENT_SIZE).div_ceil(PIECE_BYTES)
}

/// The byte range of piece `index` in content of `size` bytes, or None if
/// there is no such piece.
pub fn piece_range(size: u64, index: u64) -> Option<Range<u64>> {
    if index >= piece_count(size) {
        return None;
    }
    let start = index * PIECE_BYTES;
    Some(start..(start + PIECE_BYTES).min(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_content_exactly_once() {
        for size in [
            0,
            1,
            PIECE_BYTES - 1,
            PIECE_BYTES,
            PIECE_BYTES + 1,
            10 * PIECE_BYTES + 7,
        ] {
            let n = piece_count(size);
            let mut next = 0;
            for i in 0..n {
                let r = piece_range(size, i).expect("piece");
                assert_eq!(r.start, next, "size {size} piece {i}");
                assert!(r.end > r.start && r.end - r.start <= PIECE_BYTES);
                assert_eq!(r.start % CHUNK_GROUP_BYTES, 0, "aligned");
                next = r.end;
            }
            assert_eq!(next, size, "size {size}");
            assert_eq!(piece_range(size, n), None);
        }
    }
}
