//! Transfer: how a file is cut into pieces, the messages that carry them
//! between a downloader and a sharer, their framing on the channel, and the
//! scheduler that fetches them from several sources.
//!
//! A *piece* is [`PIECE_BYTES`] of content (the last one may be shorter),
//! aligned to BLAKE3 chunk groups so that each piece verifies on its own
//! against the content id ([`crate::content::verify_range`]). A piece is
//! the unit a downloader requests, verifies, writes and records as held
//! ([`Bitfield`]).
//!
//! # The parts, from the wire up
//! - `msg.rs`: [`TransferMsg`] (`Request`, `Piece`, `Missing`), one bounded
//!   codec over [`crate::wire`], at most [`MAX_PIECE_MESSAGE`] bytes; and
//!   [`serve`], the sharer's whole side of a request.
//! - `frame.rs`: [`Framer`] and [`Reassembler`], which carry those messages
//!   over an ordered, reliable channel of small chunks (circuit data
//!   cells), with a hard bound on what a peer can make us buffer.
//! - `schedule.rs`: [`Download`], the downloader's sans-IO scheduler over
//!   opaque [`SourceId`]s: windows per source, stalls, backoff, the
//!   endgame, and verification of every reply before anything is held.
//!
//! # One exchange
//! ```text
//! downloader                                              sharer
//! Download::next_request ─ Request ─▶ Framer ┄┄chunks┄┄▶ Reassembler ─▶ serve
//! Download::on_piece ◀─ Piece | Missing ─ Reassembler ◀┄┄chunks┄┄ Framer ◀─┘
//! ```
//!
//! **Invariant: nothing unverified leaves this module as content.**
//! [`Download::on_piece`] returns piece data only as a
//! [`crate::content::VerifiedPiece`], which only `verify_range` makes, for
//! exactly the range that was asked of that source; [`serve`] checks every
//! chunk it reads against the root, so a damaged local copy is never sent.
//!
//! **Boundary:** no IO, clock or randomness here. The caller owns the
//! channels (rendezvous sessions), passes `now_ms`, reads the local file
//! for [`serve`] and writes the verified pieces.

mod bitfield;
mod frame;
mod msg;
mod schedule;

pub use bitfield::{Bitfield, BitfieldError};
pub use frame::{FRAME_HEADER_BYTES, FrameError, Framer, Reassembler};
pub use msg::{MAX_PIECE_ENCODED, MAX_PIECE_MESSAGE, Request, Served, TransferMsg, serve};
pub use schedule::{
    Download, DownloadError, DownloadEvent, DropReason, MAX_ENDGAME_COPIES, MAX_WINDOW_PER_SOURCE,
    PieceFault, Progress, ScheduleParams, SourceId, SourceInfo,
};

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
