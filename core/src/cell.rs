//! Fixed-size cells: the only unit that ever crosses a link.
//!
//! Every kind of traffic (link handshakes, gossip, later circuit control,
//! queries and file data) travels as cells of exactly [`CELL_SIZE`] bytes,
//! so an observer of a link (or a relay) learns nothing from message sizes.
//! A cell is `circuit id (u32) | command (u8) | body`. Circuit id 0 carries
//! link-level messages; other ids belong to circuits (a later layer).
//!
//! The size is one protocol constant, chosen by measurement: see
//! `docs/performance.md`, section "Cell size".

use crate::wire::{DecodeError, Reader};

/// Bytes in every cell.
pub const CELL_SIZE: usize = 4096;
/// Circuit id and command.
pub const CELL_HEADER_BYTES: usize = 4 + 1;
/// Bytes after the header.
pub const CELL_BODY_BYTES: usize = CELL_SIZE - CELL_HEADER_BYTES;
/// Largest message a single link-level cell can carry (body minus its u16
/// length prefix).
pub const MAX_LINK_PAYLOAD: usize = CELL_BODY_BYTES - 2;

/// Cell commands. Link-level (circuit 0) commands are below 0x40; circuit
/// commands (a later layer) start at 0x40.
pub mod command {
    /// Nothing; ignored. Used for padding and keep-alive.
    pub const PADDING: u8 = 0;
    /// A Noise handshake message.
    pub const HANDSHAKE: u8 = 1;
    /// Peer sampling: the sender pushes its own descriptor.
    pub const PUSH: u8 = 2;
    /// Peer sampling: ask for the receiver's view.
    pub const PULL_REQUEST: u8 = 3;
    /// Peer sampling: (part of) the answer to a pull request.
    pub const PULL_REPLY: u8 = 4;
    /// Search: one step of a query or publication walk
    /// ([`crate::search::Walk`]).
    pub const WALK: u8 = 5;
    /// Search: a sealed answer going back along a walk's reverse path
    /// ([`crate::search::WalkReply`]).
    pub const WALK_REPLY: u8 = 6;
    /// Circuit: the first hop handshake (msg1), link level, circuit id set.
    pub const CREATE: u8 = 0x40;
    /// Circuit: the hop's answer to CREATE (msg2).
    pub const CREATED: u8 = 0x41;
    /// Circuit: an onion-layered relay cell (either direction).
    pub const RELAY: u8 = 0x42;
    /// Circuit: tear the circuit down (propagates hop by hop).
    pub const DESTROY: u8 = 0x43;
    /// Circuit: a forward relay cell that may carry an EXTEND. Relays count
    /// them per circuit and refuse more than
    /// [`crate::circuit::MAX_EXTENDS`] (in the spirit of Tor's
    /// RELAY_EARLY), and refuse an EXTEND in any other cell.
    pub const RELAY_EARLY: u8 = 0x44;
}

/// One cell: exactly [`CELL_SIZE`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Cell(Box<[u8; CELL_SIZE]>);

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print contents.
        write!(f, "Cell(circ {}, cmd {})", self.circ_id(), self.command())
    }
}

impl Cell {
    /// A zeroed cell with this header.
    pub fn new(circ_id: u32, command: u8) -> Cell {
        let mut b = Box::new([0u8; CELL_SIZE]);
        b[..4].copy_from_slice(&circ_id.to_be_bytes());
        b[4] = command;
        Cell(b)
    }

    /// A link-level cell carrying `payload` (length-prefixed, zero padded).
    /// Returns `None` if the payload does not fit.
    pub fn link(command: u8, payload: &[u8]) -> Option<Cell> {
        if payload.len() > MAX_LINK_PAYLOAD {
            return None;
        }
        let mut c = Cell::new(0, command);
        let body = c.body_mut();
        body[..2].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        body[2..2 + payload.len()].copy_from_slice(payload);
        Some(c)
    }

    /// A circuit control cell (CREATE, CREATED, DESTROY) on circuit
    /// `circ_id`, carrying `payload` length-prefixed like a link cell.
    pub fn control(circ_id: u32, command: u8, payload: &[u8]) -> Option<Cell> {
        let mut c = Cell::link(command, payload)?;
        c.0[..4].copy_from_slice(&circ_id.to_be_bytes());
        Some(c)
    }

    /// A RELAY cell on circuit `circ_id` with an onion-layered body.
    pub fn relay(circ_id: u32, body: &[u8]) -> Option<Cell> {
        Cell::relay_as(circ_id, command::RELAY, body)
    }

    /// A relay cell sent as `RELAY` or `RELAY_EARLY` (`None` for any other
    /// command or a body of the wrong size).
    pub fn relay_as(circ_id: u32, cmd: u8, body: &[u8]) -> Option<Cell> {
        if body.len() != CELL_BODY_BYTES || !matches!(cmd, command::RELAY | command::RELAY_EARLY) {
            return None;
        }
        let mut c = Cell::new(circ_id, cmd);
        c.body_mut().copy_from_slice(body);
        Some(c)
    }

    /// Parse a cell from exactly [`CELL_SIZE`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cell, DecodeError> {
        let arr: [u8; CELL_SIZE] = bytes.try_into().map_err(|_| {
            if bytes.len() < CELL_SIZE {
                DecodeError::Truncated {
                    needed: CELL_SIZE - bytes.len(),
                    remaining: bytes.len(),
                }
            } else {
                DecodeError::TrailingBytes {
                    count: bytes.len() - CELL_SIZE,
                }
            }
        })?;
        Ok(Cell(Box::new(arr)))
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; CELL_SIZE] {
        &self.0
    }

    /// Circuit id (0: link level).
    pub fn circ_id(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// Command byte.
    pub fn command(&self) -> u8 {
        self.0[4]
    }

    /// The body after the header.
    pub fn body(&self) -> &[u8] {
        &self.0[CELL_HEADER_BYTES..]
    }

    /// The body after the header, mutable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.0[CELL_HEADER_BYTES..]
    }

    /// The length-prefixed payload of a link-level cell.
    pub fn link_payload(&self) -> Result<&[u8], DecodeError> {
        let mut r = Reader::new(self.body());
        let len = r.get_u16()? as usize;
        if len > MAX_LINK_PAYLOAD {
            return Err(DecodeError::TooLong {
                field: "link payload",
                len,
                max: MAX_LINK_PAYLOAD,
            });
        }
        r.get_bytes(len)
    }
}

/// Splits a reliable byte stream into cells. Holds at most one partial cell.
#[derive(Debug, Default)]
pub struct CellReader {
    partial: Vec<u8>,
}

impl CellReader {
    /// Feed stream bytes; returns the complete cells they finish.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Cell>) {
        while !data.is_empty() {
            let want = CELL_SIZE - self.partial.len();
            let take = want.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == CELL_SIZE {
                if let Ok(c) = Cell::from_bytes(&self.partial) {
                    out.push(c);
                }
                self.partial.clear();
            }
        }
    }

    /// Bytes buffered toward the next cell.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_cell_round_trip() {
        let c = Cell::link(command::PUSH, b"hello").unwrap();
        assert_eq!(c.as_bytes().len(), CELL_SIZE);
        assert_eq!(c.circ_id(), 0);
        assert_eq!(c.command(), command::PUSH);
        assert_eq!(c.link_payload().unwrap(), b"hello");
        let back = Cell::from_bytes(c.as_bytes()).unwrap();
        assert_eq!(back, c);
        assert!(Cell::link(1, &vec![0; MAX_LINK_PAYLOAD + 1]).is_none());
        assert!(Cell::link(1, &vec![7; MAX_LINK_PAYLOAD]).is_some());
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(Cell::from_bytes(&[0; 10]).is_err());
        assert!(Cell::from_bytes(&vec![0; CELL_SIZE + 1]).is_err());
        let mut c = Cell::new(0, 2);
        c.body_mut()[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(c.link_payload().is_err());
    }

    #[test]
    fn reader_reassembles_any_split() {
        let cells: Vec<Cell> = (0..3u8)
            .map(|i| Cell::link(2, &[i; 100]).unwrap())
            .collect();
        let stream: Vec<u8> = cells.iter().flat_map(|c| c.as_bytes().to_vec()).collect();
        for chunk in [1, 7, 1000, CELL_SIZE, CELL_SIZE + 3, stream.len()] {
            let mut r = CellReader::default();
            let mut out = Vec::new();
            for part in stream.chunks(chunk) {
                r.push(part, &mut out);
            }
            assert_eq!(out, cells, "chunk {chunk}");
            assert_eq!(r.buffered(), 0);
        }
    }
}
