//! Content ids and verified streaming of byte ranges (BLAKE3 / bao-tree).
//!
//! Content is addressed by its BLAKE3 root hash, a [`ContentId`], which is
//! exactly what `b3sum` prints. A sharer keeps, beside each file, its hash
//! tree at 16 KiB chunk groups (an [`Outboard`], about 0.4 % of the file).
//! To serve a byte range it calls [`encode_range`], which emits the proof
//! nodes and data of that range as one verifiable stream. The downloader
//! checks that stream with [`verify_range`] against nothing but the root id
//! and the total size, and gets a [`VerifiedPiece`]: the only way to make one.
//!
//! # The encoded stream
//!
//! The stream for a byte range `start..end` of content of size `size` is the
//! bao-tree pre-order encoding (no length prefix) of the 1 KiB BLAKE3 chunks
//! that cover `start..end` **plus the last chunk of the content**. Including
//! the last chunk is what authenticates `size`: the tree shape alone does not
//! commit to the length of the final chunk, so without it a lying size in the
//! same chunk count would go unnoticed. Both sides derive the chunk set from
//! the byte range and size with the same function, so the stream carries no
//! framing of its own; [`encoded_len`] gives its exact length in advance, so
//! a receiver can bound what it reads before it allocates.
//!
//! **Boundary:** everything here is pure computation. Callers supply data as
//! an [`std::io::Read`] (to hash) or a bao-tree [`ReadAt`] (to serve); this
//! module never opens a file.

use std::{fmt, io, ops::Range, str::FromStr};

use bao_tree::{
    BaoTree, BlockSize, ChunkNum, ChunkRanges,
    io::{
        BaoContentItem, DecodeError, EncodeError, Leaf,
        outboard::PostOrderMemOutboard,
        sync::{DecodeResponseIter, ReadAt, encode_ranges_validated, outboard_post_order},
    },
    iter::{BaoChunk, ResponseIterRef},
};
use thiserror::Error;

/// Chunk-group size of every veil hash tree: 16 KiB (2^4 BLAKE3 chunks).
///
/// Part of the protocol: sharer and downloader must agree on it, since it
/// fixes the layout of the [`Outboard`] (though not the root hash).
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// [`BLOCK_SIZE`] in bytes.
pub const CHUNK_GROUP_BYTES: u64 = 16 * 1024;

/// Largest content size this module handles: 1 PiB.
///
/// Far beyond any real file, and small enough that no tree arithmetic can
/// overflow. Larger sizes are rejected with [`RangeError::SizeTooLarge`]
/// (or an [`io::Error`] from [`Outboard::compute`]).
pub const MAX_CONTENT_SIZE: u64 = 1 << 50;

// ---------------------------------------------------------------------------
// ContentId

/// The id of a piece of content: its BLAKE3 hash (the bao-tree root hash is
/// the plain BLAKE3 hash, whatever the chunk-group size).
///
/// Displays and parses as 64 lowercase hex digits; `Debug` shows only a
/// prefix, so ids do not end up whole in logs by accident.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId([u8; 32]);

impl ContentId {
    /// Wraps 32 raw bytes (e.g. read from the wire or the store).
    pub const fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits, the same text `b3sum` prints.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl From<ContentId> for blake3::Hash {
    fn from(id: ContentId) -> Self {
        blake3::Hash::from_bytes(id.0)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({}…)", hex::encode(&self.0[..8]))
    }
}

/// A string that is not a [`ContentId`] (64 hex digits, either case).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseIdError {
    /// The string is not 64 bytes long.
    #[error("a content id is 64 hex digits, got {got} characters")]
    Length {
        /// Length of the input in bytes.
        got: usize,
    },
    /// A character is not a hex digit.
    #[error("a content id is 64 hex digits, found a non-hex character at {index}")]
    InvalidDigit {
        /// Byte index of the first offending character.
        index: usize,
    },
}

impl FromStr for ContentId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        if s.len() != 64 {
            return Err(ParseIdError::Length { got: s.len() });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                ParseIdError::InvalidDigit { index }
            }
            // Unreachable after the length check; map it to the length error
            // rather than trust that.
            hex::FromHexError::OddLength | hex::FromHexError::InvalidStringLength => {
                ParseIdError::Length { got: s.len() }
            }
        })?;
        Ok(Self(out))
    }
}

/// The id of `data`: equal to `blake3::hash(data)`.
pub fn content_id(data: &[u8]) -> ContentId {
    blake3::hash(data).into()
}

// ---------------------------------------------------------------------------
// Errors

/// A byte range that cannot be requested from content of a given size.
///
/// Raised before any hashing or reading. If the range or size came from a
/// peer's request, the peer asked for something impossible; if it came from
/// our own code, it is API misuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// `start >= end` (allowed only as `0..0` for empty content).
    #[error("empty byte range {start}..{end}")]
    Empty {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
    },
    /// The range reaches past the end of the content.
    #[error("byte range {start}..{end} is out of bounds for content of {size} bytes")]
    OutOfBounds {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// Content size.
        size: u64,
    },
    /// The size exceeds [`MAX_CONTENT_SIZE`].
    #[error("content size {size} exceeds the maximum of {MAX_CONTENT_SIZE} bytes")]
    SizeTooLarge {
        /// The rejected size.
        size: u64,
    },
}

/// Why local content could not be hashed, stored or served.
///
/// All of these are **local** faults (our disk, our store, our caller),
/// except [`ContentError::Range`] when the range came from a peer's request.
#[derive(Debug, Error)]
pub enum ContentError {
    /// The requested range is invalid for this content.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Stored outboard bytes have the wrong length for the stored size.
    #[error("outboard for {size} bytes must be {expected} bytes long, got {got}")]
    OutboardLength {
        /// Content size the outboard claims to describe.
        size: u64,
        /// Length the tree of that size needs.
        expected: u64,
        /// Length supplied.
        got: u64,
    },
    /// Local data or outboard does not hash to the root: the file changed or
    /// rotted on disk, or the outboard is for other content. Nothing was
    /// returned, so nothing corrupt was sent.
    #[error("local data or outboard does not match the content id (near byte {offset})")]
    LocalCorruption {
        /// Byte offset of the chunk or tree node that failed.
        offset: u64,
    },
    /// Reading local data failed, or it is shorter than the content size.
    #[error("reading local content failed: {0}")]
    Io(#[from] io::Error),
}

/// Why an encoded stream from a peer was rejected by [`verify_range`].
///
/// [`VerifyError::Range`] is a local fault (we asked for an impossible
/// range, nothing was read). All other variants are **peer faults**: the
/// peer sent data that does not belong to the content, or a malformed
/// stream. A wrong `size` also shows up as one of these (usually
/// `HashMismatch`, sometimes `Truncated`/`TrailingBytes`), because it changes
/// the tree the stream is checked against; if the size was taken from a
/// signed record, that record may be the one at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The requested range is invalid for the given size (local fault).
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A data chunk or a proof node does not hash to what the tree requires:
    /// tampered data, tampered proof, or a stream for other content or size.
    #[error("hash mismatch near byte {offset}: data or proof does not match the content id")]
    HashMismatch {
        /// Byte offset in the content of the chunk or tree node that failed.
        offset: u64,
    },
    /// The stream ended before all proof nodes and data were read.
    #[error("encoded stream is truncated")]
    Truncated,
    /// Bytes remain after the complete stream.
    #[error("{extra} unexpected bytes after the encoded stream")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: u64,
    },
}

impl VerifyError {
    /// True if the peer that sent the stream misbehaved (or the size we
    /// were told is wrong); false for our own invalid request.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, VerifyError::Range(_))
    }
}

// ---------------------------------------------------------------------------
// Ranges

/// Checks `range` against `size`. The only empty range allowed is `0..0` for
/// empty content, whose stream (empty) proves the content is empty.
fn check_range(size: u64, range: &Range<u64>) -> Result<(), RangeError> {
    if size > MAX_CONTENT_SIZE {
        return Err(RangeError::SizeTooLarge { size });
    }
    let Range { start, end } = *range;
    if end > size {
        return Err(RangeError::OutOfBounds { start, end, size });
    }
    if start >= end && !(size == 0 && start == 0 && end == 0) {
        return Err(RangeError::Empty { start, end });
    }
    Ok(())
}

/// The chunks a stream for `range` carries: the chunks covering the range,
/// plus the last chunk (which authenticates the size). Assumes
/// `check_range` passed.
fn stream_chunks(size: u64, range: &Range<u64>) -> ChunkRanges {
    let covering = ChunkNum::full_chunks(range.start)..ChunkNum::chunks(range.end);
    // Empty content has one (empty) chunk, chunk 0.
    let last = ChunkNum::chunks(size).0.saturating_sub(1);
    ChunkRanges::from(covering) | ChunkRanges::from(ChunkNum(last)..ChunkNum(last + 1))
}

/// Exact length in bytes of the stream [`encode_range`] produces and
/// [`verify_range`] expects for `range` of content of `size` bytes.
///
/// Lets a receiver bound what it reads before allocating. Costs one step per
/// chunk group in the range (no hashing).
pub fn encoded_len(size: u64, range: Range<u64>) -> Result<u64, RangeError> {
    check_range(size, &range)?;
    let ranges = stream_chunks(size, &range);
    let ranges = bao_tree::io::sync::truncate_ranges(&ranges, size);
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let len = ResponseIterRef::new(tree, ranges)
        .map(|item| match item {
            BaoChunk::Parent { .. } => 64,
            BaoChunk::Leaf { size, .. } => size as u64,
        })
        .sum();
    Ok(len)
}

// ---------------------------------------------------------------------------
// Outboard

/// The BLAKE3 hash tree of one piece of content at 16 KiB chunk groups
/// (a bao-tree outboard: hash pairs in **post order**, no size suffix), with
/// its root and size.
///
/// Store `as_bytes()`, `root()` and `size()` and rebuild with
/// [`Outboard::from_parts`]. Its length is 64 bytes per chunk group minus
/// one (0 for content up to 16 KiB).
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    root: ContentId,
    size: u64,
    bytes: Vec<u8>,
}

impl fmt::Debug for Outboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outboard")
            .field("root", &self.root)
            .field("size", &self.size)
            .field("outboard_len", &self.bytes.len())
            .finish()
    }
}

impl Outboard {
    /// Hashes `reader` in one streaming pass and builds the tree.
    ///
    /// `reader` must yield exactly `size` bytes: fewer gives an
    /// [`io::ErrorKind::UnexpectedEof`] error, more an
    /// [`io::ErrorKind::InvalidData`] error; a size above
    /// [`MAX_CONTENT_SIZE`] gives [`io::ErrorKind::InvalidInput`]. Memory is
    /// only the growing outboard, never the content.
    pub fn compute(mut reader: impl io::Read, size: u64) -> io::Result<Outboard> {
        if size > MAX_CONTENT_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                RangeError::SizeTooLarge { size },
            ));
        }
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let mut bytes = Vec::new();
        let root = outboard_post_order(&mut reader, tree, &mut bytes)?;
        let mut probe = [0u8; 1];
        loop {
            match reader.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("content is longer than the expected {size} bytes"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Outboard {
            root: root.into(),
            size,
            bytes,
        })
    }

    /// The outboard of an in-memory slice.
    pub fn from_slice(data: &[u8]) -> Outboard {
        // A slice of exactly `len` bytes cannot run short or long, and no
        // slice reaches MAX_CONTENT_SIZE (1 PiB) in practice.
        Self::compute(data, data.len() as u64)
            .expect("hashing a slice of exactly its own length cannot fail")
    }

    /// Rebuilds an outboard from stored parts.
    ///
    /// Checks only that `bytes` has the length a tree of `size` needs; that
    /// the hashes match `root` is checked while serving ([`encode_range`]
    /// reports [`ContentError::LocalCorruption`]).
    pub fn from_parts(
        root: ContentId,
        size: u64,
        bytes: Vec<u8>,
    ) -> Result<Outboard, ContentError> {
        if size > MAX_CONTENT_SIZE {
            return Err(RangeError::SizeTooLarge { size }.into());
        }
        let expected = BaoTree::new(size, BLOCK_SIZE).outboard_size();
        let got = bytes.len() as u64;
        if got != expected {
            return Err(ContentError::OutboardLength {
                size,
                expected,
                got,
            });
        }
        Ok(Outboard { root, size, bytes })
    }

    /// The content id (BLAKE3 root hash).
    pub fn root(&self) -> ContentId {
        self.root
    }

    /// The content size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stored hash pairs (post order, 64 bytes each).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn as_bao(&self) -> PostOrderMemOutboard<&[u8]> {
        PostOrderMemOutboard {
            root: self.root.into(),
            tree: BaoTree::new(self.size, BLOCK_SIZE),
            data: &self.bytes,
        }
    }
}

// ---------------------------------------------------------------------------
// Serving and verifying

/// Encodes byte range `range` of `data` (the content `outboard` describes)
/// as a verifiable stream: the covering 1 KiB chunks plus the last chunk,
/// with the proof nodes for them (see the module docs).
///
/// Every chunk and node is checked against the root while encoding, so
/// locally corrupted data or outboard yields
/// [`ContentError::LocalCorruption`] and nothing is returned for sending.
/// `data` shorter than `outboard.size()` yields [`ContentError::Io`].
/// The result is exactly [`encoded_len`] bytes long.
pub fn encode_range(
    data: impl ReadAt,
    outboard: &Outboard,
    range: Range<u64>,
) -> Result<Vec<u8>, ContentError> {
    check_range(outboard.size, &range)?;
    let ranges = stream_chunks(outboard.size, &range);
    let mut out = Vec::new();
    encode_ranges_validated(data, outboard.as_bao(), &ranges, &mut out).map_err(|e| match e {
        EncodeError::ParentHashMismatch(node) => ContentError::LocalCorruption {
            offset: node.chunk_range().start.to_bytes(),
        },
        EncodeError::LeafHashMismatch(chunk) => ContentError::LocalCorruption {
            offset: chunk.to_bytes(),
        },
        EncodeError::Io(e) => ContentError::Io(e),
        // Writing to a Vec cannot fail and our outboard has every pair;
        // report anything else as an io error rather than panic.
        other => ContentError::Io(io::Error::other(other.to_string())),
    })?;
    Ok(out)
}

/// Verifies a stream for byte range `range` of the content `id` of `size`
/// bytes, as produced by [`encode_range`], knowing nothing but `id` and
/// `size`.
///
/// On success the piece's data is **exactly** `range` (the extra bytes of
/// the rounded-out chunks and of the last chunk are verified, then
/// dropped), and its offset is `range.start`. For empty content the only
/// valid range is `0..0`, whose (empty) stream proves that `id` is the hash
/// of nothing.
///
/// The whole of `encoded` must be the stream: short input is
/// [`VerifyError::Truncated`], extra input [`VerifyError::TrailingBytes`].
/// Never panics, whatever the arguments.
pub fn verify_range(
    id: ContentId,
    size: u64,
    range: Range<u64>,
    encoded: &[u8],
) -> Result<VerifiedPiece, VerifyError> {
    check_range(size, &range)?;
    let ranges = stream_chunks(size, &range);
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let want = range.end - range.start;
    // Bounded by the input, not by what the caller (or a record) claims.
    let mut data = Vec::with_capacity(
        usize::try_from(want)
            .unwrap_or(usize::MAX)
            .min(encoded.len()),
    );
    let mut cursor = io::Cursor::new(encoded);
    for item in DecodeResponseIter::new(id.into(), tree, &mut cursor, &ranges) {
        let leaf = match item {
            Ok(BaoContentItem::Parent(_)) => continue,
            Ok(BaoContentItem::Leaf(leaf)) => leaf,
            Err(e) => return Err(decode_error(e)),
        };
        let Leaf {
            offset,
            data: bytes,
        } = leaf;
        // Keep the part of this verified leaf that lies inside `range`.
        let leaf_end = offset.saturating_add(bytes.len() as u64);
        let lo = offset.max(range.start);
        let hi = leaf_end.min(range.end);
        if lo >= hi {
            continue;
        }
        if lo != range.start + data.len() as u64 {
            // Leaves arrive in order and cover the chunks we asked for, so a
            // gap is impossible; refuse rather than return a holed piece.
            return Err(VerifyError::Truncated);
        }
        // lo - offset and hi - offset are within bytes.len(), so they fit usize.
        let (a, b) = ((lo - offset) as usize, (hi - offset) as usize);
        data.extend_from_slice(bytes.get(a..b).ok_or(VerifyError::Truncated)?);
    }
    let read = cursor.position();
    let extra = (encoded.len() as u64).saturating_sub(read);
    if extra != 0 {
        return Err(VerifyError::TrailingBytes { extra });
    }
    if data.len() as u64 != want {
        return Err(VerifyError::Truncated);
    }
    Ok(VerifiedPiece {
        id,
        offset: range.start,
        data,
    })
}

fn decode_error(e: DecodeError) -> VerifyError {
    match e {
        DecodeError::ParentHashMismatch(node) => VerifyError::HashMismatch {
            offset: node.chunk_range().start.to_bytes(),
        },
        DecodeError::LeafHashMismatch(chunk) => VerifyError::HashMismatch {
            offset: chunk.to_bytes(),
        },
        // Reading a slice fails only at its end.
        DecodeError::ParentNotFound(_) | DecodeError::LeafNotFound(_) | DecodeError::Io(_) => {
            VerifyError::Truncated
        }
    }
}

/// Bytes proven to belong to content `id` at `offset`.
///
/// Only [`verify_range`] makes one, so holding a `VerifiedPiece` is the proof
/// that its data was checked against the Merkle tree. `Debug` shows the
/// length, not the payload.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedPiece {
    id: ContentId,
    offset: u64,
    data: Vec<u8>,
}

impl fmt::Debug for VerifiedPiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedPiece")
            .field("id", &self.id)
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish()
    }
}

impl VerifiedPiece {
    /// The content the data belongs to.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// Byte offset of the data in the content (the requested `range.start`).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The verified bytes: exactly the requested range.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The verified bytes, by value.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
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

    fn roundtrip(data: &[u8], range: Range<u64>) -> Result<VerifiedPiece, VerifyError> {
        let ob = Outboard::from_slice(data);
        let enc = encode_range(data, &ob, range.clone()).expect("encode");
        assert_eq!(
            enc.len() as u64,
            encoded_len(data.len() as u64, range.clone()).expect("len")
        );
        verify_range(ob.root(), ob.size(), range, &enc)
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            content_id(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            content_id(b"abc").to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(Outboard::from_slice(b"abc").root(), content_id(b"abc"));
    }

    #[test]
    fn root_is_blake3_and_compute_matches_from_slice() {
        let sizes = [
            0usize,
            1,
            1023,
            1024,
            1025,
            16383,
            16384,
            16385,
            100_000,
            3 * 1024 * 1024 + 7,
        ];
        for (i, &n) in sizes.iter().enumerate() {
            let data = content(i as u64, n);
            let ob = Outboard::from_slice(&data);
            assert_eq!(ob.root(), ContentId::from(blake3::hash(&data)), "size {n}");
            assert_eq!(ob.size(), n as u64);
            let streamed = Outboard::compute(io::Cursor::new(&data), n as u64).expect("compute");
            assert_eq!(streamed, ob, "size {n}");
            let expected = (n as u64).div_ceil(CHUNK_GROUP_BYTES).saturating_sub(1) * 64;
            assert_eq!(ob.as_bytes().len() as u64, expected, "size {n}");
            let rebuilt =
                Outboard::from_parts(ob.root(), ob.size(), ob.as_bytes().to_vec()).expect("parts");
            assert_eq!(rebuilt, ob);
        }
    }

    #[test]
    fn compute_rejects_wrong_length() {
        let data = content(1, 5000);
        let short = Outboard::compute(&data[..4999], 5000).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let long = Outboard::compute(&data[..], 4999).unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidData);
        let huge = Outboard::compute(&data[..], u64::MAX).unwrap_err();
        assert_eq!(huge.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn from_parts_checks_length() {
        let ob = Outboard::from_slice(&content(2, 40_000));
        let mut bytes = ob.as_bytes().to_vec();
        bytes.pop();
        assert!(matches!(
            Outboard::from_parts(ob.root(), ob.size(), bytes),
            Err(ContentError::OutboardLength { .. })
        ));
        assert!(matches!(
            Outboard::from_parts(ob.root(), u64::MAX, vec![]),
            Err(ContentError::Range(RangeError::SizeTooLarge { .. }))
        ));
    }

    #[test]
    fn exact_range_and_edges() {
        let data = content(3, 3 * CHUNK_GROUP_BYTES as usize + 500);
        let n = data.len() as u64;
        for r in [0..1, 0..n, n - 1..n, 1023..1025, 16383..16385, 5000..40000] {
            let piece = roundtrip(&data, r.clone()).expect("verify");
            assert_eq!(piece.offset(), r.start);
            assert_eq!(piece.data(), &data[r.start as usize..r.end as usize]);
            assert_eq!(piece.id(), content_id(&data));
        }
    }

    #[test]
    fn empty_content() {
        let ob = Outboard::from_slice(b"");
        let enc = encode_range(&b""[..], &ob, 0..0).expect("encode");
        assert!(enc.is_empty());
        let piece = verify_range(content_id(b""), 0, 0..0, &enc).expect("verify");
        assert!(piece.into_data().is_empty());
        // Claiming size 0 for non-empty content fails...
        let err = verify_range(content_id(b"abc"), 0, 0..0, &[]).unwrap_err();
        assert!(matches!(err, VerifyError::HashMismatch { .. }), "{err:?}");
        // ...and so does claiming non-empty for empty content.
        assert!(verify_range(content_id(b""), 3, 0..3, b"abc").is_err());
        assert!(verify_range(content_id(b""), 1, 0..1, &[0]).is_err());
        // Empty ranges of non-empty content are rejected.
        assert_eq!(
            verify_range(content_id(b"abc"), 3, 1..1, &[]),
            Err(VerifyError::Range(RangeError::Empty { start: 1, end: 1 }))
        );
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let data = content(4, 20_000);
        let ob = Outboard::from_slice(&data);
        let id = ob.root();
        #[allow(clippy::reversed_empty_ranges)]
        let bad = [
            5..4,
            0..20_001,
            20_000..20_000,
            u64::MAX..u64::MAX,
            0..u64::MAX,
            u64::MAX..0,
        ];
        for r in bad {
            assert!(matches!(
                encode_range(&data[..], &ob, r.clone()),
                Err(ContentError::Range(_))
            ));
            let e = verify_range(id, 20_000, r.clone(), &[]).unwrap_err();
            assert!(matches!(e, VerifyError::Range(_)) && !e.is_peer_fault());
            assert!(encoded_len(20_000, r).is_err());
        }
        assert_eq!(
            verify_range(id, u64::MAX, 0..1, &[]),
            Err(VerifyError::Range(RangeError::SizeTooLarge {
                size: u64::MAX
            }))
        );
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let data = content(5, 70_000);
        let ob = Outboard::from_slice(&data);
        let range = 20_000..21_000;
        let enc = encode_range(&data[..], &ob, range.clone()).expect("encode");
        assert!(verify_range(ob.root(), ob.size(), range.clone(), &enc).is_ok());
        // The stream opens with a proof node and ends with data (the last chunk).
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            let err = verify_range(ob.root(), ob.size(), range.clone(), &bad).unwrap_err();
            assert!(
                matches!(err, VerifyError::HashMismatch { .. }),
                "byte {i}: {err:?}"
            );
            assert!(err.is_peer_fault());
        }
    }

    #[test]
    fn stream_for_other_range_or_content_fails() {
        let data = content(13, 60_000);
        let ob = Outboard::from_slice(&data);
        let enc = encode_range(&data[..], &ob, 20_000..21_000).expect("encode");
        for other in [0..1000, 21_000..22_000, 40_000..41_000] {
            assert!(verify_range(ob.root(), ob.size(), other, &enc).is_err());
        }
        let other_id = content_id(&data[1..]);
        assert!(verify_range(other_id, ob.size(), 20_000..21_000, &enc).is_err());
    }

    #[test]
    fn truncated_and_trailing() {
        let data = content(6, 50_000);
        let ob = Outboard::from_slice(&data);
        let range = 0..50_000;
        let enc = encode_range(&data[..], &ob, range.clone()).expect("encode");
        for cut in [0, 1, 63, 64, 65, enc.len() / 2, enc.len() - 1] {
            assert_eq!(
                verify_range(ob.root(), ob.size(), range.clone(), &enc[..cut]),
                Err(VerifyError::Truncated),
                "cut {cut}"
            );
        }
        let mut long = enc.clone();
        long.extend_from_slice(b"xyz");
        assert_eq!(
            verify_range(ob.root(), ob.size(), range, &long),
            Err(VerifyError::TrailingBytes { extra: 3 })
        );
    }

    #[test]
    fn wrong_size_never_verifies() {
        let cases = [
            (7u64, 1usize),
            (8, 1500),
            (9, 16_384),
            (10, 16_385),
            (11, 70_000),
        ];
        for (seed, n) in cases {
            let data = content(seed, n);
            let ob = Outboard::from_slice(&data);
            let n = n as u64;
            let wrong = [0, n - 1, n + 1, n + 100, n / 2, n + 1024, n + 16_384, 2 * n];
            for claimed in wrong.into_iter().filter(|&c| c != n) {
                let m = n.min(claimed);
                let bounds = if m == 0 {
                    vec![(0, 0)]
                } else {
                    vec![(0, 1), (0, m), (m - 1, m)]
                };
                for (start, end) in bounds {
                    let range = start..end;
                    // The honest stream for the true size...
                    let honest = if m == 0 { 0..1 } else { range.clone() };
                    let enc = encode_range(&data[..], &ob, honest).expect("encode");
                    let r = verify_range(ob.root(), claimed, range.clone(), &enc);
                    assert!(r.is_err(), "size {n} claimed {claimed} range {range:?}");
                    // ...and what a cheater could encode for the claimed size.
                    let mut fake = content(seed, claimed as usize);
                    fake[..m as usize].copy_from_slice(&data[..m as usize]);
                    let fob = Outboard::from_slice(&fake);
                    let enc = encode_range(&fake[..], &fob, range.clone()).expect("encode");
                    let r = verify_range(ob.root(), claimed, range.clone(), &enc);
                    assert!(r.is_err(), "size {n} claimed {claimed} range {range:?}");
                }
            }
        }
    }

    #[test]
    fn local_corruption_is_caught_when_serving() {
        let mut data = content(12, 40_000);
        let ob = Outboard::from_slice(&data);
        data[30_000] ^= 0xff;
        assert!(
            encode_range(&data[..], &ob, 0..1000).is_ok(),
            "untouched range serves"
        );
        assert!(matches!(
            encode_range(&data[..], &ob, 29_000..31_000),
            Err(ContentError::LocalCorruption { .. })
        ));
        // Short local data.
        let clean = content(12, 40_000);
        assert!(matches!(
            encode_range(&clean[..39_000], &ob, 0..40_000),
            Err(ContentError::Io(_))
        ));
        // A corrupted outboard.
        let mut bytes = ob.as_bytes().to_vec();
        bytes[0] ^= 1;
        let bad = Outboard::from_parts(ob.root(), ob.size(), bytes).expect("parts");
        assert!(matches!(
            encode_range(&clean[..], &bad, 0..1000),
            Err(ContentError::LocalCorruption { .. })
        ));
    }

    #[test]
    fn hex_display_and_parse() {
        let id = content_id(b"veil");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<ContentId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<ContentId>(), Ok(id));
        assert_eq!(ContentId::from_bytes(*id.as_bytes()), id);
        assert!(format!("{id:?}").starts_with("ContentId("));
        assert_eq!(
            s[..63].parse::<ContentId>(),
            Err(ParseIdError::Length { got: 63 })
        );
        assert_eq!(
            format!("{s}0").parse::<ContentId>(),
            Err(ParseIdError::Length { got: 65 })
        );
        assert_eq!(
            "".parse::<ContentId>(),
            Err(ParseIdError::Length { got: 0 })
        );
        let bad = format!("g{}", &s[1..]);
        assert_eq!(
            bad.parse::<ContentId>(),
            Err(ParseIdError::InvalidDigit { index: 0 })
        );
        // 64 bytes, but with a multi-byte character.
        let uni = format!("é{}", &s[2..]);
        assert_eq!(uni.len(), 64);
        assert!(uni.parse::<ContentId>().is_err());
        assert!(format!(" {}", &s[1..]).parse::<ContentId>().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn small_contents_hash_like_blake3(seed: u64, n in 0usize..70_000) {
            let data = content(seed, n);
            let ob = Outboard::from_slice(&data);
            prop_assert_eq!(ob.root(), content_id(&data));
            prop_assert_eq!(
                Outboard::compute(&data[..], n as u64).expect("compute"),
                ob
            );
        }

        #[test]
        fn random_ranges_roundtrip(seed: u64, n in 1u64..150_000, a: u64, b: u64) {
            let data = content(seed, n as usize);
            let (a, b) = (a % n, b % n);
            let range = a.min(b)..a.max(b) + 1;
            let piece = roundtrip(&data, range.clone()).expect("verify");
            prop_assert_eq!(piece.offset(), range.start);
            prop_assert_eq!(piece.data(), &data[range.start as usize..range.end as usize]);
        }

        #[test]
        fn id_hex_roundtrip(bytes: [u8; 32]) {
            let id = ContentId::from_bytes(bytes);
            prop_assert_eq!(id.to_hex().parse::<ContentId>(), Ok(id));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn verify_never_panics(
            id: [u8; 32],
            size in prop_oneof![0u64..70_000, 0..=MAX_CONTENT_SIZE + 1, any::<u64>()],
            start in prop_oneof![0u64..70_000, any::<u64>()],
            len in prop_oneof![0u64..70_000, any::<u64>()],
            encoded in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let range = start..start.wrapping_add(len);
            let _ = verify_range(ContentId::from_bytes(id), size, range.clone(), &encoded);
            // encoded_len walks the range, so only try it on modest ones.
            if len < 1 << 24 {
                let _ = encoded_len(size, range);
            }
        }
    }
}
