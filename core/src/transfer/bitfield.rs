//! Which pieces of one content a downloader holds, verified.

use super::piece_count;

/// One bit per piece, piece 0 in the low bit of byte 0. Bits past the last
/// piece are always zero, so two bitfields of the same content compare
/// equal exactly when they hold the same pieces.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    pieces: u64,
    bits: Vec<u8>,
    held: u64,
}

/// A stored bitfield that does not fit the content it claims to describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// The byte length is not the one `size` implies.
    #[error("bitfield of {got} bytes for {pieces} pieces (want {want})")]
    Length {
        got: usize,
        want: usize,
        pieces: u64,
    },
    /// A bit past the last piece is set.
    #[error("bitfield has bits set past piece {pieces}")]
    PastEnd { pieces: u64 },
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.held, self.pieces)
    }
}

impl Bitfield {
    /// An empty bitfield for content of `size` bytes.
    pub fn new(size: u64) -> Bitfield {
        let pieces = piece_count(size);
        Bitfield {
            pieces,
            bits: vec![0; Self::byte_len(pieces)],
            held: 0,
        }
    }

    /// A bitfield read back from storage, checked against `size`.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Result<Bitfield, BitfieldError> {
        let pieces = piece_count(size);
        let want = Self::byte_len(pieces);
        if bytes.len() != want {
            return Err(BitfieldError::Length {
                got: bytes.len(),
                want,
                pieces,
            });
        }
        let spare = (want as u64 * 8 - pieces) as u32;
        if let Some(last) = bytes.last()
            && spare > 0
            && last >> (8 - spare) != 0
        {
            return Err(BitfieldError::PastEnd { pieces });
        }
        let held = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
        Ok(Bitfield {
            pieces,
            bits: bytes.to_vec(),
            held,
        })
    }

    fn byte_len(pieces: u64) -> usize {
        usize::try_from(pieces.div_ceil(8)).unwrap_or(usize::MAX)
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Pieces in the content.
    pub fn pieces(&self) -> u64 {
        self.pieces
    }

    /// Pieces held.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Every piece is held.
    pub fn is_complete(&self) -> bool {
        self.held == self.pieces
    }

    /// Piece `index` is held (false past the end).
    pub fn has(&self, index: u64) -> bool {
        index < self.pieces && self.bits[(index / 8) as usize] & (1 << (index % 8)) != 0
    }

    /// Marks piece `index` held; false if it is past the end.
    pub fn set(&mut self, index: u64) -> bool {
        if index >= self.pieces {
            return false;
        }
        let (byte, bit) = ((index / 8) as usize, 1u8 << (index % 8));
        if self.bits[byte] & bit == 0 {
            self.bits[byte] |= bit;
            self.held += 1;
        }
        true
    }

    /// Pieces not yet held, in order.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pieces).filter(|&i| !self.has(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::PIECE_BYTES;
    use super::*;

    #[test]
    fn set_has_and_the_stored_form_round_trip() {
        let size = 11 * PIECE_BYTES - 3;
        let mut b = Bitfield::new(size);
        assert_eq!(b.pieces(), 11);
        assert_eq!(b.as_bytes().len(), 2);
        assert!(b.set(0) && b.set(10) && b.set(10));
        assert!(!b.set(11), "past the end");
        assert_eq!(b.held(), 2);
        assert!(b.has(10) && !b.has(9) && !b.has(11));
        let back = Bitfield::from_bytes(size, b.as_bytes()).expect("round trip");
        assert_eq!(back, b);
        assert_eq!(back.missing().count(), 9);
        for i in 0..11 {
            b.set(i);
        }
        assert!(b.is_complete());
        assert!(Bitfield::new(0).is_complete(), "an empty file is complete");
    }

    #[test]
    fn stored_forms_that_do_not_fit_the_size_are_refused() {
        let size = 11 * PIECE_BYTES;
        assert!(matches!(
            Bitfield::from_bytes(size, &[0]),
            Err(BitfieldError::Length { .. })
        ));
        assert_eq!(
            Bitfield::from_bytes(size, &[0, 0b1000_0000]),
            Err(BitfieldError::PastEnd { pieces: 11 })
        );
        assert!(Bitfield::from_bytes(size, &[0xff, 0b0000_0111]).is_ok());
    }
}
