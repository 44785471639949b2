//! The transfer messages between a downloader and a sharer, and the
//! sharer's answer to one request.
//!
//! A downloader sends [`TransferMsg::Request`]s for pieces by index; the
//! sharer answers each with [`TransferMsg::Piece`] (the bao stream of that
//! piece's range, see [`crate::content::encode_range`]) or
//! [`TransferMsg::Missing`]. Replies carry only the request number `req`:
//! the downloader knows what it asked under that number, of whom, and
//! checks the stream against the content id before it believes a byte
//! ([`super::Download::on_piece`]).
//!
//! Messages are framed on the byte channel by [`super::Framer`]; the
//! largest is [`MAX_PIECE_MESSAGE`] bytes, which bounds every buffer on the
//! receiving side.
//!
//! # Encoding
//! A kind byte, then big-endian fields ([`crate::wire`]):
//! - `0` Request: `req: u32`, `id: [u8; 32]`, `piece: u64` (45 bytes);
//! - `1` Piece: `req: u32`, `len: u32`, `len` bytes of stream, with
//!   `len <= MAX_PIECE_ENCODED` checked before anything is sliced;
//! - `2` Missing: `req: u32` (5 bytes).
//!
//! Each value has exactly one encoding: unknown kinds and trailing bytes are
//! errors.

use std::fmt;

use bao_tree::io::sync::ReadAt;

use super::{PIECE_BYTES, piece_range};
use crate::content::{CHUNK_GROUP_BYTES, ContentError, ContentId, MAX_CONTENT_SIZE, Outboard};
use crate::wire::{DecodeError, EncodeError, Reader, Writer};

const KIND_REQUEST: u8 = 0;
const KIND_PIECE: u8 = 1;
const KIND_MISSING: u8 = 2;

/// Levels of parent nodes above a chunk group in the deepest hash tree veil
/// handles (content of [`MAX_CONTENT_SIZE`]): 36.
const MAX_TREE_DEPTH: u64 = (MAX_CONTENT_SIZE / CHUNK_GROUP_BYTES).ilog2() as u64;
const _: () = assert!((MAX_CONTENT_SIZE / CHUNK_GROUP_BYTES).is_power_of_two());

/// Bytes in one parent node of the stream (two child hashes).
const PARENT_BYTES: u64 = 64;

/// Bytes in one BLAKE3 chunk, the unit the stream carries the content's
/// last chunk in.
const BLAKE3_CHUNK_BYTES: u64 = 1024;

/// Levels of parent nodes inside one chunk group (16 chunks): 4.
const GROUP_LEVELS: u64 = (CHUNK_GROUP_BYTES / BLAKE3_CHUNK_BYTES).ilog2() as u64;

/// Longest stream of one piece, for any content up to [`MAX_CONTENT_SIZE`]:
/// 71 424 bytes.
///
/// A piece stream carries the piece's data ([`PIECE_BYTES`]), the
/// content's last 1 KiB chunk when it is not in the piece, and the parent
/// nodes above both. The paths from the root share at least the root: at
/// most `depth + 1` nodes for the piece (its path to the subtree of its
/// four chunk groups, plus the three inside it), and `depth - 1` more down
/// to the last chunk group plus `GROUP_LEVELS` (4) inside it down to the last
/// chunk, so `2 * depth + 4` parents in all. The test
/// `piece_streams_fit_the_bound` checks this against
/// [`crate::content::encoded_len`] for sizes up to [`MAX_CONTENT_SIZE`], and
/// that the bound is reached.
pub const MAX_PIECE_ENCODED: usize =
    (PIECE_BYTES + BLAKE3_CHUNK_BYTES + (2 * MAX_TREE_DEPTH + GROUP_LEVELS) * PARENT_BYTES)
        as usize;

/// Longest encoded [`TransferMsg`] (a [`TransferMsg::Piece`] carrying a
/// stream of [`MAX_PIECE_ENCODED`] bytes): 71 433 bytes. The bound a
/// receiver gives its [`super::Reassembler`].
pub const MAX_PIECE_MESSAGE: usize = 1 + 4 + 4 + MAX_PIECE_ENCODED;

const REQUEST_BYTES: usize = 1 + 4 + 32 + 8;
const _: () = assert!(REQUEST_BYTES <= MAX_PIECE_MESSAGE);

/// A downloader's request for piece `piece` of content `id`, numbered
/// `req` by the downloader (the sharer echoes `req` in its reply).
///
/// The byte range is [`super::piece_range`]`(size, piece)`: the sharer
/// knows `size` from its library, the downloader from the signed record it
/// found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The downloader's number for this request, unique among its requests
    /// in flight to this sharer.
    pub req: u32,
    /// The content.
    pub id: ContentId,
    /// The piece index.
    pub piece: u64,
}

/// One message of the transfer protocol: a downloader's request, or a
/// sharer's reply naming the request it answers.
///
/// Encoded as a kind byte then big-endian fields ([`crate::wire`]): `0`
/// Request (`req: u32`, `id: [u8; 32]`, `piece: u64`, 45 bytes), `1` Piece
/// (`req: u32`, `len: u32`, then `len` bytes of stream, `len` at most
/// [`MAX_PIECE_ENCODED`]), `2` Missing (`req: u32`). Each value has exactly
/// one encoding; [`TransferMsg::decode`] refuses unknown kinds and trailing
/// bytes, never panics, and allocates only a piece's stream, after its
/// length was checked.
///
/// `Debug` shows a piece's length, never its bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum TransferMsg {
    /// Downloader → sharer: send this piece.
    Request(Request),
    /// Sharer → downloader: the stream of the piece asked for under `req`.
    /// Unverified until [`super::Download::on_piece`] says otherwise.
    Piece {
        /// The request this answers.
        req: u32,
        /// The bao stream of the piece's range, at most
        /// [`MAX_PIECE_ENCODED`] bytes.
        encoded: Vec<u8>,
    },
    /// Sharer → downloader: the piece asked for under `req` will not be
    /// sent (not shared here, no such piece, or the sharer's copy is
    /// damaged).
    Missing {
        /// The request this answers.
        req: u32,
    },
}

impl fmt::Debug for TransferMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferMsg::Request(r) => f.debug_tuple("Request").field(r).finish(),
            TransferMsg::Piece { req, encoded } => f
                .debug_struct("Piece")
                .field("req", req)
                .field("len", &encoded.len())
                .finish(),
            TransferMsg::Missing { req } => f.debug_struct("Missing").field("req", req).finish(),
        }
    }
}

impl TransferMsg {
    /// The encoding, at most [`MAX_PIECE_MESSAGE`] bytes. Fails only for a
    /// `Piece` whose stream is longer than [`MAX_PIECE_ENCODED`], which no
    /// honest [`serve`] produces.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            TransferMsg::Request(Request { req, id, piece }) => {
                let mut w = Writer::with_capacity(REQUEST_BYTES);
                w.put_u8(KIND_REQUEST);
                w.put_u32(*req);
                w.put_bytes(id.as_bytes());
                w.put_u64(*piece);
                Ok(w.into_vec())
            }
            TransferMsg::Piece { req, encoded } => {
                let len = u32::try_from(encoded.len())
                    .ok()
                    .filter(|_| encoded.len() <= MAX_PIECE_ENCODED)
                    .ok_or(EncodeError {
                        len: encoded.len(),
                        max: MAX_PIECE_ENCODED,
                    })?;
                let mut w = Writer::with_capacity(1 + 4 + 4 + encoded.len());
                w.put_u8(KIND_PIECE);
                w.put_u32(*req);
                w.put_u32(len);
                w.put_bytes(encoded);
                Ok(w.into_vec())
            }
            TransferMsg::Missing { req } => {
                let mut w = Writer::with_capacity(5);
                w.put_u8(KIND_MISSING);
                w.put_u32(*req);
                Ok(w.into_vec())
            }
        }
    }

    /// Decodes one whole message. Never panics; allocates only a piece's
    /// stream, after its length was checked against [`MAX_PIECE_ENCODED`].
    pub fn decode(bytes: &[u8]) -> Result<TransferMsg, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.get_u8()? {
            KIND_REQUEST => TransferMsg::Request(Request {
                req: r.get_u32()?,
                id: ContentId::from_bytes(r.get_array()?),
                piece: r.get_u64()?,
            }),
            KIND_PIECE => {
                let req = r.get_u32()?;
                let len = usize::try_from(r.get_u32()?).unwrap_or(usize::MAX);
                if len > MAX_PIECE_ENCODED {
                    return Err(DecodeError::TooLong {
                        field: "piece stream",
                        len,
                        max: MAX_PIECE_ENCODED,
                    });
                }
                TransferMsg::Piece {
                    req,
                    encoded: r.get_bytes(len)?.to_vec(),
                }
            }
            KIND_MISSING => TransferMsg::Missing { req: r.get_u32()? },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// A sharer's answer to one [`Request`], from [`serve`].
#[derive(Debug)]
pub struct Served {
    /// What to send back: always sent, so a downloader is never left
    /// waiting by a sharer that has a reason not to serve.
    pub reply: TransferMsg,
    /// Set when the reply is `Missing` because our own copy could not be
    /// served: the file changed or rotted on disk, the outboard does not
    /// match, or reading failed. A local fault: stop sharing that content
    /// until it is hashed again. Nothing unverified was sent.
    pub local_fault: Option<ContentError>,
}

/// The sharer's side of a request: the stream of the piece if `outboard`
/// describes the requested content and the piece exists, `Missing`
/// otherwise.
///
/// `data` is the content `outboard` describes (a file, a slice). The caller
/// looks the content up by `request.id` in its library and answers
/// `Missing` itself when it is not there; an `outboard` for other content
/// also gives `Missing`. Every chunk read is checked against the root while
/// encoding ([`crate::content::encode_range`]), so a damaged local copy
/// gives `Missing` plus [`Served::local_fault`], never a corrupt piece.
pub fn serve(request: &Request, data: impl ReadAt, outboard: &Outboard) -> Served {
    let missing = |local_fault| Served {
        reply: TransferMsg::Missing { req: request.req },
        local_fault,
    };
    if request.id != outboard.root() {
        return missing(None);
    }
    let Some(range) = piece_range(outboard.size(), request.piece) else {
        return missing(None);
    };
    match crate::content::encode_range(data, outboard, range) {
        // Within the bound by construction; checked so that the reply
        // always encodes.
        Ok(encoded) if encoded.len() <= MAX_PIECE_ENCODED => Served {
            reply: TransferMsg::Piece {
                req: request.req,
                encoded,
            },
            local_fault: None,
        },
        Ok(_) => missing(None),
        Err(e) => missing(Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::piece_count;
    use super::*;
    use crate::content::{encoded_len, verify_range};
    use proptest::prelude::*;
    use rand_chacha::{
        ChaCha8Rng,
        rand_core::{RngCore, SeedableRng},
    };

    fn content(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn samples() -> Vec<TransferMsg> {
        vec![
            TransferMsg::Request(Request {
                req: 7,
                id: ContentId::from_bytes([9; 32]),
                piece: u64::MAX,
            }),
            TransferMsg::Piece {
                req: u32::MAX,
                encoded: vec![1, 2, 3],
            },
            TransferMsg::Piece {
                req: 0,
                encoded: vec![0xee; MAX_PIECE_ENCODED],
            },
            TransferMsg::Piece {
                req: 0,
                encoded: vec![],
            },
            TransferMsg::Missing { req: 3 },
        ]
    }

    #[test]
    fn encoding_is_fixed() {
        let req = TransferMsg::Request(Request {
            req: 0x0102_0304,
            id: ContentId::from_bytes([0xaa; 32]),
            piece: 5,
        });
        assert_eq!(
            hex::encode(req.encode().expect("encode")),
            format!("0001020304{}0000000000000005", "aa".repeat(32))
        );
        let piece = TransferMsg::Piece {
            req: 1,
            encoded: vec![0xbe, 0xef],
        };
        assert_eq!(
            hex::encode(piece.encode().expect("encode")),
            "010000000100000002beef"
        );
        let missing = TransferMsg::Missing { req: 2 };
        assert_eq!(hex::encode(missing.encode().expect("encode")), "0200000002");
    }

    #[test]
    fn round_trips_and_the_largest_is_the_bound() {
        for m in samples() {
            let bytes = m.encode().expect("encode");
            assert!(bytes.len() <= MAX_PIECE_MESSAGE);
            assert_eq!(TransferMsg::decode(&bytes), Ok(m));
        }
        let full = TransferMsg::Piece {
            req: 0,
            encoded: vec![0; MAX_PIECE_ENCODED],
        };
        assert_eq!(full.encode().expect("encode").len(), MAX_PIECE_MESSAGE);
        let over = TransferMsg::Piece {
            req: 0,
            encoded: vec![0; MAX_PIECE_ENCODED + 1],
        };
        assert_eq!(
            over.encode(),
            Err(EncodeError {
                len: MAX_PIECE_ENCODED + 1,
                max: MAX_PIECE_ENCODED
            })
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        // A declared stream length over the bound, with nothing behind it:
        // refused by the bound, not by truncation.
        let mut w = Writer::new();
        w.put_u8(KIND_PIECE);
        w.put_u32(0);
        w.put_u32(u32::MAX);
        assert_eq!(
            TransferMsg::decode(w.as_slice()),
            Err(DecodeError::TooLong {
                field: "piece stream",
                len: u32::MAX as usize,
                max: MAX_PIECE_ENCODED
            })
        );
        assert_eq!(
            TransferMsg::decode(&[9, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(9))
        );
        assert!(matches!(
            TransferMsg::decode(&[]),
            Err(DecodeError::Truncated { .. })
        ));
        for m in samples() {
            let bytes = m.encode().expect("encode");
            for cut in 0..bytes.len().min(64) {
                assert!(
                    TransferMsg::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(
                TransferMsg::decode(&long),
                Err(DecodeError::TrailingBytes { count: 1 })
            );
        }
    }

    #[test]
    fn debug_hides_the_payload() {
        let m = TransferMsg::Piece {
            req: 1,
            encoded: vec![0xab; 100],
        };
        assert_eq!(format!("{m:?}"), "Piece { req: 1, len: 100 }");
    }

    #[test]
    fn piece_streams_fit_the_bound() {
        let mut sizes = vec![1, 1023, 1024, 1025, PIECE_BYTES - 1, PIECE_BYTES + 1];
        for k in 14..=50 {
            sizes.extend([
                (1u64 << k) - 1,
                1 << k,
                (1 << k) + 1,
                (1 << k) + PIECE_BYTES,
            ]);
        }
        sizes.retain(|&s| s <= MAX_CONTENT_SIZE);
        sizes.extend([MAX_CONTENT_SIZE - 1, MAX_CONTENT_SIZE, 999_999_999_999]);
        let mut largest = 0;
        for size in sizes {
            let n = piece_count(size);
            let picks = [0, 1, n / 3, n / 2, n.saturating_sub(2), n - 1];
            for piece in picks.into_iter().filter(|&p| p < n) {
                let range = piece_range(size, piece).expect("piece");
                let len = encoded_len(size, range).expect("len");
                assert!(
                    len <= MAX_PIECE_ENCODED as u64,
                    "size {size} piece {piece}: {len}"
                );
                largest = largest.max(len);
            }
        }
        assert_eq!(largest, MAX_PIECE_ENCODED as u64, "the bound is tight");
        assert_eq!((MAX_PIECE_ENCODED, MAX_PIECE_MESSAGE), (71_424, 71_433));
    }

    #[test]
    fn serve_answers_pieces_that_verify_and_missing_otherwise() {
        let data = content(1, 3 * PIECE_BYTES as usize + 100);
        let ob = Outboard::from_slice(&data);
        let size = ob.size();
        for piece in 0..piece_count(size) {
            let request = Request {
                req: 40 + piece as u32,
                id: ob.root(),
                piece,
            };
            let served = serve(&request, &data[..], &ob);
            assert!(served.local_fault.is_none());
            let TransferMsg::Piece { req, encoded } = served.reply else {
                panic!("piece {piece} not served");
            };
            assert_eq!(req, request.req);
            let range = piece_range(size, piece).expect("piece");
            let v = verify_range(ob.root(), size, range.clone(), &encoded).expect("verifies");
            assert_eq!(v.data(), &data[range.start as usize..range.end as usize]);
        }
        let past = Request {
            req: 1,
            id: ob.root(),
            piece: piece_count(size),
        };
        let served = serve(&past, &data[..], &ob);
        assert_eq!(served.reply, TransferMsg::Missing { req: 1 });
        assert!(served.local_fault.is_none());
        let other = Request {
            req: 2,
            id: ContentId::from_bytes([0; 32]),
            piece: 0,
        };
        assert_eq!(
            serve(&other, &data[..], &ob).reply,
            TransferMsg::Missing { req: 2 }
        );
    }

    #[test]
    fn serve_never_sends_a_damaged_local_copy() {
        let mut data = content(2, 2 * PIECE_BYTES as usize);
        let ob = Outboard::from_slice(&data);
        data[PIECE_BYTES as usize + 5] ^= 1;
        let request = |piece| Request {
            req: 9,
            id: ob.root(),
            piece,
        };
        assert!(matches!(
            serve(&request(0), &data[..], &ob).reply,
            TransferMsg::Piece { .. }
        ));
        let served = serve(&request(1), &data[..], &ob);
        assert_eq!(served.reply, TransferMsg::Missing { req: 9 });
        assert!(matches!(
            served.local_fault,
            Some(ContentError::LocalCorruption { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = TransferMsg::decode(&bytes) {
                // One encoding per value: what decodes re-encodes to itself.
                prop_assert_eq!(m.encode().expect("encode"), bytes);
            }
        }

        #[test]
        fn decode_never_panics_on_piece_prefixes(
            req: u32,
            len in prop_oneof![0u32..300, any::<u32>()],
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut w = Writer::new();
            w.put_u8(KIND_PIECE);
            w.put_u32(req);
            w.put_u32(len);
            w.put_bytes(&body);
            match TransferMsg::decode(w.as_slice()) {
                Ok(m) => prop_assert_eq!(m, TransferMsg::Piece { req, encoded: body }),
                Err(_) => prop_assert!(len as usize != body.len()),
            }
        }

        #[test]
        fn round_trip(req: u32, id: [u8; 32], piece: u64,
                      encoded in proptest::collection::vec(any::<u8>(), 0..2000)) {
            for m in [
                TransferMsg::Request(Request { req, id: ContentId::from_bytes(id), piece }),
                TransferMsg::Piece { req, encoded: encoded.clone() },
                TransferMsg::Missing { req },
            ] {
                let bytes = m.encode().expect("encode");
                prop_assert_eq!(TransferMsg::decode(&bytes), Ok(m));
            }
        }
    }
}
