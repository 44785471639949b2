//! Framing of transfer messages on an ordered, reliable byte channel made of
//! small chunks (circuit data cells).
//!
//! A message is sent as a big-endian `u32` length, then its bytes; the
//! stream of framed messages is cut into chunks of at most `max_chunk`
//! bytes, so a 70 KB piece spans many chunks and several small requests
//! share one. The receiver feeds chunks, in order, to a [`Reassembler`],
//! which does not care where the chunk boundaries fall.
//!
//! # Bounds
//! A [`Reassembler`] holds at most one partial message, and refuses a
//! declared length over its `max_message` (or of zero) as soon as the four
//! length bytes are in, before it reserves anything; its buffer grows only
//! with bytes that actually arrived. So a peer costs at most
//! `4 + max_message` bytes of buffer, however it lies. After an error the
//! stream cannot be resynchronised: the reassembler refuses everything
//! after, and the caller drops the peer: every [`FrameError`] from a
//! reassembler is the peer's fault.
//!
//! A [`Framer`] holds what its owner pushed and has not yet taken; it does
//! not refuse work, so its owner bounds it through [`Framer::buffered`] (a
//! sharer reads the next request only while its backlog is small).

use std::collections::VecDeque;

use thiserror::Error;

/// Bytes of the length prefix in front of each message.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A framing error. Every error a [`Reassembler`] returns is the peer's
/// fault (drop it); a [`Framer`]'s are ours (API misuse).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A message longer than the bound: declared by the peer (a
    /// [`Reassembler`]), or pushed by us (a [`Framer`], API misuse).
    #[error("message of {len} bytes, at most {max} allowed")]
    TooLong {
        /// The length declared or pushed.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// A message of zero bytes: no transfer message is empty.
    #[error("empty message")]
    Empty,
    /// The stream ended in the middle of a message
    /// ([`Reassembler::finish`]).
    #[error("stream ended {buffered} bytes into a message")]
    Truncated {
        /// Bytes of the unfinished frame (length prefix included).
        buffered: usize,
    },
}

/// Frames outgoing messages and cuts them into chunks: each message goes
/// out as a big-endian `u32` length then its bytes, and that stream is cut
/// into chunks of at most `max_chunk` bytes (small messages share one, a
/// long one spans many).
///
/// # Call order
/// [`Framer::push`] each encoded message, then take chunks with
/// [`Framer::poll_chunk`] while the channel has room, until it returns
/// None. Messages leave in the order they were pushed.
///
/// # Guarantees and bounds
/// Each chunk is 1 to `max_chunk` bytes; concatenated, the chunks are the
/// framed messages, so any [`Reassembler`] with a `max_message` at least
/// this framer's rebuilds them, whatever the chunk size. `push` refuses a
/// message over `max_message` or empty, writing nothing. The backlog is
/// unbounded here: its owner checks [`Framer::buffered`].
#[derive(Debug)]
pub struct Framer {
    max_chunk: usize,
    max_message: usize,
    pending: VecDeque<u8>,
}

impl Framer {
    /// A framer cutting chunks of at most `max_chunk` bytes (at least 1 is
    /// used) and accepting messages of at most `max_message` bytes
    /// (normally [`super::MAX_PIECE_MESSAGE`]).
    pub fn new(max_chunk: usize, max_message: usize) -> Framer {
        Framer {
            max_chunk: max_chunk.max(1),
            max_message,
            pending: VecDeque::new(),
        }
    }

    /// Queues one message. Fails, queueing nothing, if it is empty or
    /// longer than `max_message` (or than a `u32` length).
    pub fn push(&mut self, msg: &[u8]) -> Result<(), FrameError> {
        if msg.is_empty() {
            return Err(FrameError::Empty);
        }
        let len = u32::try_from(msg.len())
            .ok()
            .filter(|_| msg.len() <= self.max_message)
            .ok_or(FrameError::TooLong {
                len: msg.len() as u64,
                max: self.max_message,
            })?;
        self.pending.extend(len.to_be_bytes());
        self.pending.extend(msg);
        Ok(())
    }

    /// The next chunk to send, at most `max_chunk` bytes, or None when
    /// everything pushed has been taken.
    pub fn poll_chunk(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            return None;
        }
        let n = self.max_chunk.min(self.pending.len());
        Some(self.pending.drain(..n).collect())
    }

    /// Bytes pushed (with their length prefixes) and not yet taken.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Rebuilds messages from the chunks of one channel, in order.
///
/// # Call order
/// [`Reassembler::push`] each chunk as it arrives; it appends the messages
/// the chunk completes. When the channel closes, [`Reassembler::finish`]
/// says whether it closed between messages.
///
/// # Guarantees and bounds
/// Yields exactly the messages framed by a [`Framer`], whatever the chunk
/// boundaries. Buffers at most `4 + max_message` bytes (see the module
/// docs); a declared length over `max_message` or of zero is refused before
/// anything is reserved, and from then on every push fails with that same
/// error. Never panics, whatever the bytes.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// The declared length of the message being read, once its header is in.
    want: Option<usize>,
    body: Vec<u8>,
    failed: Option<FrameError>,
}

impl Reassembler {
    /// A reassembler refusing messages over `max_message` bytes (normally
    /// [`super::MAX_PIECE_MESSAGE`]).
    pub fn new(max_message: usize) -> Reassembler {
        Reassembler {
            max_message,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            want: None,
            body: Vec::new(),
            failed: None,
        }
    }

    /// Feeds the next chunk; appends to `out` each message it completes.
    ///
    /// On an error the messages completed before the bad header are still
    /// in `out`, and the reassembler is dead: drop the peer.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !chunk.is_empty() {
            let Some(want) = self.want else {
                let take = (FRAME_HEADER_BYTES - self.header_len).min(chunk.len());
                let (head, rest) = chunk.split_at(take);
                self.header[self.header_len..self.header_len + take].copy_from_slice(head);
                self.header_len += take;
                chunk = rest;
                if self.header_len == FRAME_HEADER_BYTES {
                    let len = u32::from_be_bytes(self.header);
                    let want = self.check_len(len)?;
                    self.want = Some(want);
                    self.header_len = 0;
                }
                continue;
            };
            let take = (want - self.body.len()).min(chunk.len());
            let (head, rest) = chunk.split_at(take);
            // Grows with what arrived, never with what was declared, and
            // its capacity never passes the declared length.
            if self.body.capacity() - self.body.len() < take {
                let cap = (self.body.capacity() * 2)
                    .max(self.body.len() + take)
                    .min(want);
                self.body.reserve_exact(cap - self.body.len());
            }
            self.body.extend_from_slice(head);
            chunk = rest;
            if self.body.len() == want {
                out.push(std::mem::take(&mut self.body));
                self.want = None;
            }
        }
        Ok(())
    }

    fn check_len(&mut self, len: u32) -> Result<usize, FrameError> {
        let err = match usize::try_from(len) {
            Ok(0) => FrameError::Empty,
            Ok(n) if n <= self.max_message => return Ok(n),
            _ => FrameError::TooLong {
                len: u64::from(len),
                max: self.max_message,
            },
        };
        self.failed = Some(err.clone());
        Err(err)
    }

    /// Bytes held toward the next message (its length prefix included).
    pub fn buffered(&self) -> usize {
        match self.want {
            None => self.header_len,
            Some(_) => FRAME_HEADER_BYTES + self.body.len(),
        }
    }

    /// Call when the channel closed: Ok if it closed between messages.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_PIECE_MESSAGE;
    use super::*;
    use proptest::prelude::*;

    fn frame_all(msgs: &[Vec<u8>], max_chunk: usize) -> Vec<Vec<u8>> {
        let mut f = Framer::new(max_chunk, MAX_PIECE_MESSAGE);
        for m in msgs {
            f.push(m).expect("push");
        }
        std::iter::from_fn(|| f.poll_chunk()).collect()
    }

    #[test]
    fn chunks_are_bounded_and_carry_the_framed_stream() {
        let msgs = vec![vec![1u8; 10], vec![2; 3000], vec![3]];
        let chunks = frame_all(&msgs, 1000);
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 1000));
        let stream: Vec<u8> = chunks.concat();
        assert_eq!(stream.len(), 3 * FRAME_HEADER_BYTES + 10 + 3000 + 1);
        assert_eq!(&stream[..5], &[0, 0, 0, 10, 1]);
        // Small messages share a chunk.
        assert_eq!(frame_all(&[vec![1; 5], vec![2; 5]], 100).len(), 1);
        let mut r = Reassembler::new(MAX_PIECE_MESSAGE);
        let mut out = Vec::new();
        for c in &chunks {
            r.push(c, &mut out).expect("push");
        }
        assert_eq!(out, msgs);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn framer_refuses_what_no_reassembler_would_take() {
        let mut f = Framer::new(0, 100);
        assert_eq!(f.push(&[]), Err(FrameError::Empty));
        assert_eq!(
            f.push(&[0; 101]),
            Err(FrameError::TooLong { len: 101, max: 100 })
        );
        assert!(f.is_empty());
        f.push(&[7; 100]).expect("at the bound");
        assert_eq!(f.buffered(), 104);
        // A chunk size of zero is taken as one.
        assert_eq!(f.poll_chunk(), Some(vec![0]));
    }

    #[test]
    fn oversize_declaration_is_refused_before_the_body() {
        let mut r = Reassembler::new(1000);
        let mut out = Vec::new();
        // A whole valid message, then a header declaring 4 GiB.
        let mut chunk = vec![0, 0, 0, 2, 8, 9];
        chunk.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = r.push(&chunk, &mut out).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLong {
                len: u64::from(u32::MAX),
                max: 1000
            }
        );
        assert_eq!(out, vec![vec![8, 9]], "what came before is kept");
        assert_eq!(r.body.capacity(), 0, "nothing reserved for the lie");
        // Dead from then on.
        assert_eq!(r.push(&[0, 0, 0, 1, 5], &mut out), Err(err.clone()));
        assert_eq!(r.finish(), Err(err));
        assert_eq!(out.len(), 1);
        // One past the bound, split across chunks, and a zero length.
        let mut r = Reassembler::new(1000);
        r.push(&[0, 0], &mut out).expect("half a header");
        assert_eq!(
            r.push(&[3, 233], &mut out),
            Err(FrameError::TooLong {
                len: 1001,
                max: 1000
            })
        );
        let mut r = Reassembler::new(1000);
        assert_eq!(r.push(&[0, 0, 0, 0], &mut out), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let chunks = frame_all(&[vec![1; 50], vec![2; 50]], 7);
        let stream = chunks.concat();
        for cut in 1..stream.len() {
            let mut r = Reassembler::new(MAX_PIECE_MESSAGE);
            let mut out = Vec::new();
            r.push(&stream[..cut], &mut out).expect("push");
            let at_boundary = cut == 54;
            assert_eq!(r.finish().is_ok(), at_boundary, "cut {cut}");
            if !at_boundary {
                assert_eq!(
                    r.finish(),
                    Err(FrameError::Truncated {
                        buffered: if cut < 54 { cut } else { cut - 54 }
                    })
                );
            }
            assert!(r.buffered() <= 54);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_chunking_rebuilds_the_messages(
            lens in proptest::collection::vec(1usize..5000, 1..8),
            max_chunk in 1usize..600,
            cuts in proptest::collection::vec(0usize..40_000, 0..40),
        ) {
            let msgs: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
                .collect();
            // The framer's own chunks.
            let mut r = Reassembler::new(5000);
            let mut out = Vec::new();
            for c in frame_all(&msgs, max_chunk) {
                prop_assert!(c.len() <= max_chunk);
                r.push(&c, &mut out).expect("push");
                prop_assert!(r.buffered() <= FRAME_HEADER_BYTES + 5000);
            }
            prop_assert_eq!(&out, &msgs);
            prop_assert_eq!(r.finish(), Ok(()));
            // The same stream re-cut at random places.
            let stream = frame_all(&msgs, usize::MAX).concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.extend([0, stream.len()]);
            cuts.sort_unstable();
            let mut r = Reassembler::new(5000);
            let mut out = Vec::new();
            for w in cuts.windows(2) {
                r.push(&stream[w[0]..w[1]], &mut out).expect("push");
            }
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            max in 1usize..3000,
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..12),
        ) {
            let mut r = Reassembler::new(max);
            let mut out = Vec::new();
            for c in &chunks {
                if r.push(c, &mut out).is_err() {
                    prop_assert!(r.push(&[0], &mut out).is_err(), "stays dead");
                    break;
                }
                prop_assert!(r.buffered() <= FRAME_HEADER_BYTES + max);
                prop_assert!(r.body.capacity() <= max);
            }
            prop_assert!(out.iter().all(|m| !m.is_empty() && m.len() <= max));
        }
    }
}
