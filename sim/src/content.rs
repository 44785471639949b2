//! The content the harness places: real bytes for every file and every
//! decoy, kept once for the whole network (not per node), with their
//! outboards, so that sharers answer requests with real pieces and the
//! harness can check what downloaders assembled.
//!
//! Bytes come from a ChaCha RNG seeded per item, so a seed makes the
//! same content every run; the id is the BLAKE3 root
//! ([`veil_core::content::content_id`]).

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::content::{ContentId, Outboard, content_id};
use veil_core::transfer::{Request, TransferMsg, serve};

/// Smallest file the workload makes (one piece).
pub const MIN_FILE_BYTES: u64 = 64 << 10;
/// Largest file the workload makes (eight pieces).
pub const MAX_FILE_BYTES: u64 = 512 << 10;

/// One item's bytes and outboard.
struct Content {
    bytes: Vec<u8>,
    outboard: Outboard,
}

/// Every item the harness placed, by content id.
#[derive(Default)]
pub(crate) struct Library {
    items: BTreeMap<ContentId, Content>,
}

impl std::fmt::Debug for Library {
    /// The count, not megabytes of content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("items", &self.items.len())
            .finish()
    }
}

impl Library {
    /// Makes `size` bytes from `seed`, keeps them and returns their id.
    pub(crate) fn make(&mut self, seed: [u8; 32], size: u64) -> ContentId {
        let mut bytes = vec![0u8; size as usize];
        ChaCha20Rng::from_seed(seed).fill_bytes(&mut bytes);
        let id = content_id(&bytes);
        let outboard = Outboard::from_slice(&bytes);
        debug_assert_eq!(outboard.root(), id);
        self.items.insert(id, Content { bytes, outboard });
        id
    }

    /// The bytes placed for `id`.
    pub(crate) fn bytes(&self, id: &ContentId) -> Option<&[u8]> {
        self.items.get(id).map(|c| &c.bytes[..])
    }

    /// What an honest sharer holding `request.id` answers: the piece with
    /// its proof ([`veil_core::transfer::serve`]), or `Missing`.
    pub(crate) fn serve(&self, request: &Request) -> TransferMsg {
        match self.items.get(&request.id) {
            Some(c) => serve(request, &c.bytes[..], &c.outboard).reply,
            None => TransferMsg::Missing { req: request.req },
        }
    }
}

/// Maps a uniform draw to a file size in
/// [`MIN_FILE_BYTES`, `MAX_FILE_BYTES`].
pub(crate) fn file_size(draw: u64) -> u64 {
    MIN_FILE_BYTES + draw % (MAX_FILE_BYTES - MIN_FILE_BYTES + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::content::verify_range;

    #[test]
    fn placed_content_is_named_by_its_root_and_serves_verifiable_pieces() {
        let mut lib = Library::default();
        let id = lib.make([7; 32], 3 * 65536 + 5);
        let bytes = lib.bytes(&id).unwrap().to_vec();
        assert_eq!(content_id(&bytes), id);
        assert_eq!(lib.make([7; 32], 3 * 65536 + 5), id, "same seed, same id");
        let r = Request {
            req: 1,
            id,
            piece: 3,
        };
        let TransferMsg::Piece { encoded, .. } = lib.serve(&r) else {
            panic!("the last piece exists");
        };
        let range = veil_core::transfer::piece_range(bytes.len() as u64, 3).unwrap();
        let piece = verify_range(id, bytes.len() as u64, range, &encoded[..]).unwrap();
        assert_eq!(piece.data(), &bytes[3 * 65536..]);
        let other = Request {
            id: ContentId::from_bytes([1; 32]),
            ..r
        };
        assert_eq!(lib.serve(&other), TransferMsg::Missing { req: 1 });
    }
}
