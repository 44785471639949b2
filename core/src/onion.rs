//! Onion layers: the length-preserving per-hop crypto of circuit cells.
//!
//! This module transforms only the *body* of relay cells
//! ([`CELL_BODY_BYTES`] bytes). The cell header (circuit id, command) is per
//! link and rewritten by every relay, so it is not covered here. Everything is
//! sans-IO and deterministic: no clock, no RNG, no allocation that depends on
//! peer input beyond one cell.
//!
//! # Keys
//!
//! The circuit handshake with hop *k* yields a 32-byte shared secret. From it
//! [`HopKeys::derive`] takes four independent keys with `blake3::derive_key`:
//! a ChaCha20 *stream* key and a ChaCha20-Poly1305 *tag* key for each
//! direction (forward = client → hop, backward = hop → client). Keys are
//! zeroised on drop and never printed.
//!
//! # Counters and nonces
//!
//! The client and every hop keep one `u64` counter per direction: the number
//! of cells of this circuit that this hop has processed in that direction.
//! The counter is the nonce of both ciphers (big-endian in the last 8 bytes of
//! the 96-bit nonce, first 4 bytes zero). Each (key, nonce) pair is used for
//! exactly one cell, and stream and tag keys differ, so no keystream is reused.
//!
//! # Forward (client → hop *k*)
//!
//! 1. The client builds `inner` (`CELL_BODY_BYTES - 16` bytes): a big-endian
//!    `u16` length, the payload (at most [`MAX_RELAY_PAYLOAD`] bytes) and zero
//!    padding.
//! 2. It seals `inner` in place with hop *k*'s forward tag key and hop *k*'s
//!    forward counter: body = ciphertext ‖ 16-byte Poly1305 tag.
//! 3. It XORs the whole body with the forward keystreams of hops *k*, *k*−1,
//!    …, 0, each under that hop's forward counter, and advances the forward
//!    counters of hops 0..=*k*. Hops beyond *k* never see the cell, so their
//!    counters stay put.
//!
//! Each relay ([`RelayCrypto::process_forward`]) strips its own keystream
//! layer, advances its counter and tries to open the tag with its forward
//! tag key and the pre-increment counter. Success means the cell is for this
//! hop ([`ForwardOutcome::Recognised`]). Otherwise the stripped body goes on
//! to the next hop ([`ForwardOutcome::Forward`]). At the last hop an
//! unrecognised cell means something went wrong, and the caller tears the
//! circuit down ([`ForwardOutcome::Unrecognised`]).
//!
//! **Join point (hook only).** A later issue splices two circuits at a
//! rendezvous. A relay built with [`RelayCrypto::join_point`] returns
//! [`ForwardOutcome::Splice`] instead of `Unrecognised`. The body is left in
//! the caller's buffer with this hop's layer removed, ready to be passed into
//! the other circuit. This module has no splicing logic.
//!
//! # Backward (hop *k* → client)
//!
//! Hop *k* builds `inner` the same way. It seals it with its backward tag key
//! and backward counter, applies its backward keystream (same counter) and
//! advances the counter ([`RelayCrypto::seal_backward`]). Each earlier hop
//! *j* < *k* adds its own backward keystream layer
//! ([`RelayCrypto::relay_backward`]). The client
//! ([`OnionClient::open_backward`]) strips the layers of hops 0, 1, … in
//! order. After each strip it tries that hop's backward tag key. The first
//! success names the origin hop, and the backward counters of hops
//! 0..=origin advance. If no hop's tag opens, the result is an error and the
//! circuit is torn down.
//!
//! # Replay, reorder, drop and corruption
//!
//! All of these are rejected, with no extra state. A replayed, reordered or
//! dropped cell leaves the counters of some hop out of step with the
//! client's. From then on that hop strips the wrong keystream and opens the
//! tag under the wrong nonce. A flipped bit anywhere in the body breaks the
//! Poly1305 tag of the addressed hop, because XOR layers carry the flip
//! through to the inner ciphertext or tag. In every case the addressed hop
//! does not recognise the cell. The cell then travels on to the last hop,
//! which reports `Unrecognised`, or the client's `open_backward` fails.
//! Either way the circuit is torn down. A forged tag is accepted with
//! probability at most about 2⁻¹⁰⁰ per attempt (Poly1305 over 4 KiB), and
//! each attempt also costs the attacker the circuit.
//!
//! # What a hop can still infer
//!
//! Cells have one size at every position, and no field carries hop count or
//! position. Still:
//! - every hop knows its predecessor and successor on the link layer. The
//!   first hop (guard) knows it is first when its predecessor does not relay,
//!   for example a client-only node;
//! - the last hop knows it is last: it has no successor, and it holds the
//!   `is_last` flag. An exit therefore knows it is an exit;
//! - a hop that forwards a cell knows at least one more hop follows it;
//! - a hop sees how many cells cross it in each direction (its counters), with
//!   their timing. It also sees which of them were addressed to it, and
//!   which backward cells it originated and which it relayed;
//! - a malicious hop can *tag* a cell by flipping bits, and a colluding later
//!   hop can see that the cell became garbage. The cost is the circuit: the
//!   garbage is never accepted, and the last hop or the client tears the
//!   circuit down. Like Tor's tagging, this links first and last hop only at
//!   the price of a visible teardown;
//! - the AEAD nonce is the counter, so a hop learns nothing new from it: it
//!   already counts cells.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::cell::CELL_BODY_BYTES;

/// Bytes of the Poly1305 tag at the end of every relay body.
pub const TAG_BYTES: usize = 16;
/// Bytes of the sealed inner part of a relay body (everything but the tag).
pub const INNER_BYTES: usize = CELL_BODY_BYTES - TAG_BYTES;
/// Largest payload one relay cell carries (the inner part minus the `u16`
/// length).
pub const MAX_RELAY_PAYLOAD: usize = INNER_BYTES - 2;
/// Most hops one client circuit may hold. Paths have 1 to 4 hops, and the
/// headroom is for later spliced (rendezvous) circuits.
pub const MAX_HOPS: usize = 8;

const CTX_FORWARD_STREAM: &str = "veil 2025 onion forward stream v1";
const CTX_BACKWARD_STREAM: &str = "veil 2025 onion backward stream v1";
const CTX_FORWARD_TAG: &str = "veil 2025 onion forward tag v1";
const CTX_BACKWARD_TAG: &str = "veil 2025 onion backward tag v1";

/// Errors of the onion layer. Any of them on a live circuit means: tear it
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OnionError {
    /// A body was not exactly `CELL_BODY_BYTES` long.
    #[error("relay cell body is {0} bytes, expected CELL_BODY_BYTES")]
    BadBodyLength(usize),
    /// A payload does not fit in one relay cell.
    #[error("relay payload is {0} bytes, more than MAX_RELAY_PAYLOAD")]
    PayloadTooLarge(usize),
    /// The client has no hop with this index.
    #[error("circuit has no hop {0}")]
    UnknownHop(usize),
    /// The client circuit already has `MAX_HOPS` hops.
    #[error("circuit already has the maximum number of hops")]
    TooManyHops,
    /// A direction counter reached `u64::MAX`.
    #[error("cell counter exhausted")]
    CounterExhausted,
    /// No hop's tag opened a backward cell.
    #[error("no hop recognised the cell")]
    Unrecognised,
    /// A cell authenticated correctly but its inner length or padding is
    /// invalid. Only a broken peer that holds the key can cause this.
    #[error("authenticated relay cell has a malformed inner payload")]
    MalformedInner,
    /// The AEAD refused to seal. This cannot happen at cell sizes, but it is
    /// reported, not unwrapped.
    #[error("AEAD seal failed")]
    Seal,
}

/// The four per-hop keys derived from one hop's handshake secret.
pub struct HopKeys {
    forward_stream: [u8; 32],
    backward_stream: [u8; 32],
    forward_tag: [u8; 32],
    backward_tag: [u8; 32],
}

impl HopKeys {
    /// Derives the forward and backward stream and tag keys from the shared
    /// secret of the handshake with one hop.
    pub fn derive(shared_secret: &[u8; 32]) -> HopKeys {
        HopKeys {
            forward_stream: blake3::derive_key(CTX_FORWARD_STREAM, shared_secret),
            backward_stream: blake3::derive_key(CTX_BACKWARD_STREAM, shared_secret),
            forward_tag: blake3::derive_key(CTX_FORWARD_TAG, shared_secret),
            backward_tag: blake3::derive_key(CTX_BACKWARD_TAG, shared_secret),
        }
    }
}

impl Drop for HopKeys {
    fn drop(&mut self) {
        self.forward_stream.zeroize();
        self.backward_stream.zeroize();
        self.forward_tag.zeroize();
        self.backward_tag.zeroize();
    }
}

impl std::fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKeys { <redacted> }")
    }
}

/// What a relay does with a forward cell after removing its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// The cell was addressed to this hop. This is its payload.
    Recognised(Vec<u8>),
    /// Not for this hop: pass the body, now without this hop's layer, to the
    /// next hop.
    Forward,
    /// The last hop did not recognise the cell: tear the circuit down.
    Unrecognised,
    /// A join point did not recognise the cell. The body, without this hop's
    /// layer, is for the spliced circuit (a hook for rendezvous; see the
    /// module docs).
    Splice,
}

/// Where a relay sits on a circuit, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPosition {
    /// Has a next hop: unrecognised cells are forwarded.
    Middle,
    /// Last hop: unrecognised cells tear the circuit down.
    Last,
    /// Rendezvous join point: unrecognised cells are handed over for
    /// splicing.
    JoinPoint,
}

/// One relay's onion state for one circuit.
#[derive(Debug)]
pub struct RelayCrypto {
    keys: HopKeys,
    forward: u64,
    backward: u64,
    position: RelayPosition,
}

impl RelayCrypto {
    /// A relay's state right after the handshake. `is_last` marks the end of
    /// the circuit.
    pub fn new(keys: HopKeys, is_last: bool) -> RelayCrypto {
        let position = if is_last {
            RelayPosition::Last
        } else {
            RelayPosition::Middle
        };
        RelayCrypto::with_position(keys, position)
    }

    /// A relay that serves as a rendezvous join point (hook only).
    pub fn join_point(keys: HopKeys) -> RelayCrypto {
        RelayCrypto::with_position(keys, RelayPosition::JoinPoint)
    }

    /// A relay at an explicit position.
    pub fn with_position(keys: HopKeys, position: RelayPosition) -> RelayCrypto {
        RelayCrypto {
            keys,
            forward: 0,
            backward: 0,
            position,
        }
    }

    /// This relay's position.
    pub fn position(&self) -> RelayPosition {
        self.position
    }

    /// Moves the relay: a last hop becomes a middle hop once it extended the
    /// circuit (counters are kept).
    pub fn set_position(&mut self, position: RelayPosition) {
        self.position = position;
    }

    /// Handles one forward cell body in place. Removes this hop's layer and
    /// advances the forward counter. Then either returns the payload (the
    /// cell was for this hop) or says what to do with the stripped body.
    ///
    /// Errors: wrong body length (nothing changes), counter exhaustion, or
    /// an authenticated but malformed cell. All of them mean teardown.
    pub fn process_forward(&mut self, body: &mut [u8]) -> Result<ForwardOutcome, OnionError> {
        check_body(body)?;
        let counter = self.forward;
        self.forward = next(counter)?;
        apply_layer(&self.keys.forward_stream, counter, body);
        Ok(match try_open(&self.keys.forward_tag, counter, body)? {
            Some(payload) => ForwardOutcome::Recognised(payload),
            None => match self.position {
                RelayPosition::Middle => ForwardOutcome::Forward,
                RelayPosition::Last => ForwardOutcome::Unrecognised,
                RelayPosition::JoinPoint => ForwardOutcome::Splice,
            },
        })
    }

    /// Builds a backward cell body from this hop to the client.
    pub fn seal_backward(
        &mut self,
        payload: &[u8],
    ) -> Result<Box<[u8; CELL_BODY_BYTES]>, OnionError> {
        let mut body = build_inner(payload)?;
        let counter = self.backward;
        let advanced = next(counter)?;
        seal(&self.keys.backward_tag, counter, &mut body[..])?;
        apply_layer(&self.keys.backward_stream, counter, &mut body[..]);
        self.backward = advanced;
        Ok(body)
    }

    /// Adds this hop's backward layer to a backward cell from a later hop.
    pub fn relay_backward(&mut self, body: &mut [u8]) -> Result<(), OnionError> {
        check_body(body)?;
        let counter = self.backward;
        self.backward = next(counter)?;
        apply_layer(&self.keys.backward_stream, counter, body);
        Ok(())
    }
}

#[derive(Debug)]
struct ClientHop {
    keys: HopKeys,
    forward: u64,
    backward: u64,
}

/// The client's onion state for one circuit: one entry per hop, guard
/// first.
#[derive(Debug, Default)]
pub struct OnionClient {
    hops: Vec<ClientHop>,
}

impl OnionClient {
    /// A circuit with no hops yet.
    pub fn new() -> OnionClient {
        OnionClient::default()
    }

    /// Adds the next hop (telescoping: one at a time, after its handshake).
    /// Returns the new hop's index.
    pub fn add_hop(&mut self, keys: HopKeys) -> Result<usize, OnionError> {
        if self.hops.len() >= MAX_HOPS {
            return Err(OnionError::TooManyHops);
        }
        self.hops.push(ClientHop {
            keys,
            forward: 0,
            backward: 0,
        });
        Ok(self.hops.len() - 1)
    }

    /// Number of hops so far.
    pub fn hop_count(&self) -> usize {
        self.hops.len()
    }

    /// Builds a forward cell body for hop `hop` (0 = guard) that carries
    /// `payload`.
    pub fn seal_forward(
        &mut self,
        hop: usize,
        payload: &[u8],
    ) -> Result<Box<[u8; CELL_BODY_BYTES]>, OnionError> {
        let path = self.hops.get(..=hop).ok_or(OnionError::UnknownHop(hop))?;
        if path.iter().any(|h| h.forward == u64::MAX) {
            return Err(OnionError::CounterExhausted);
        }
        let mut body = build_inner(payload)?;
        let target = &path[hop];
        seal(&target.keys.forward_tag, target.forward, &mut body[..])?;
        for h in path.iter().rev() {
            apply_layer(&h.keys.forward_stream, h.forward, &mut body[..]);
        }
        for h in &mut self.hops[..=hop] {
            h.forward += 1;
        }
        Ok(body)
    }

    /// Opens a backward cell body in place. Returns the index of the hop it
    /// came from and its payload. On error no counter moves, the body is
    /// garbage, and the circuit must be torn down.
    pub fn open_backward(&mut self, body: &mut [u8]) -> Result<(usize, Vec<u8>), OnionError> {
        check_body(body)?;
        for (i, h) in self.hops.iter().enumerate() {
            if h.backward == u64::MAX {
                return Err(OnionError::CounterExhausted);
            }
            apply_layer(&h.keys.backward_stream, h.backward, body);
            if let Some(payload) = try_open(&h.keys.backward_tag, h.backward, body)? {
                for h in &mut self.hops[..=i] {
                    h.backward += 1;
                }
                return Ok((i, payload));
            }
        }
        Err(OnionError::Unrecognised)
    }
}

fn check_body(body: &[u8]) -> Result<(), OnionError> {
    if body.len() == CELL_BODY_BYTES {
        Ok(())
    } else {
        Err(OnionError::BadBodyLength(body.len()))
    }
}

fn next(counter: u64) -> Result<u64, OnionError> {
    counter.checked_add(1).ok_or(OnionError::CounterExhausted)
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// XORs `body` with ChaCha20(key, nonce = counter).
fn apply_layer(key: &[u8; 32], counter: u64, body: &mut [u8]) {
    let mut cipher = ChaCha20::new(key.into(), &nonce(counter).into());
    cipher.apply_keystream(body);
}

/// A body with the plaintext inner part filled in (length, payload, zero
/// padding) and a zero tag slot.
fn build_inner(payload: &[u8]) -> Result<Box<[u8; CELL_BODY_BYTES]>, OnionError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_RELAY_PAYLOAD)
        .ok_or(OnionError::PayloadTooLarge(payload.len()))?;
    let mut body = Box::new([0u8; CELL_BODY_BYTES]);
    body[..2].copy_from_slice(&len.to_be_bytes());
    body[2..2 + payload.len()].copy_from_slice(payload);
    Ok(body)
}

/// Seals the inner part of a full-length body in place and writes the tag
/// into its last `TAG_BYTES`.
fn seal(key: &[u8; 32], counter: u64, body: &mut [u8]) -> Result<(), OnionError> {
    let aead = ChaCha20Poly1305::new(key.into());
    let (inner, tag_slot) = body.split_at_mut(INNER_BYTES);
    let tag = aead
        .encrypt_in_place_detached(&nonce(counter).into(), &[], inner)
        .map_err(|_| OnionError::Seal)?;
    tag_slot.copy_from_slice(&tag);
    Ok(())
}

/// Tries to open a full-length body with a tag key. `Ok(None)` means the
/// cell is not for this key. The body is never modified: decryption works on
/// a copy, which is zeroised afterwards.
fn try_open(key: &[u8; 32], counter: u64, body: &[u8]) -> Result<Option<Vec<u8>>, OnionError> {
    let (inner, tag) = body.split_at(INNER_BYTES);
    let tag: [u8; TAG_BYTES] = match tag.try_into() {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let aead = ChaCha20Poly1305::new(key.into());
    let mut plain = Zeroizing::new(inner.to_vec());
    if aead
        .decrypt_in_place_detached(
            &nonce(counter).into(),
            &[],
            plain.as_mut_slice(),
            &tag.into(),
        )
        .is_err()
    {
        return Ok(None);
    }
    let (len, rest) = plain.split_at(2);
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > MAX_RELAY_PAYLOAD {
        return Err(OnionError::MalformedInner);
    }
    let (payload, padding) = rest.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return Err(OnionError::MalformedInner);
    }
    Ok(Some(payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(i: usize) -> [u8; 32] {
        let mut s = [0u8; 32];
        s[0] = 0xA0;
        s[1] = i as u8;
        s
    }

    struct Chain {
        client: OnionClient,
        relays: Vec<RelayCrypto>,
    }

    fn chain(n: usize) -> Chain {
        let mut client = OnionClient::new();
        let mut relays = Vec::new();
        for i in 0..n {
            assert_eq!(client.add_hop(HopKeys::derive(&secret(i))).unwrap(), i);
            relays.push(RelayCrypto::new(HopKeys::derive(&secret(i)), i == n - 1));
        }
        Chain { client, relays }
    }

    /// Walks a forward body down the circuit. Returns the first hop whose
    /// outcome is not `Forward`, that outcome, and the body each hop passed
    /// on (after stripping its layer).
    fn deliver(
        relays: &mut [RelayCrypto],
        body: &mut [u8],
    ) -> (usize, ForwardOutcome, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        for (j, r) in relays.iter_mut().enumerate() {
            let out = r.process_forward(body).unwrap();
            assert_eq!(body.len(), CELL_BODY_BYTES);
            seen.push(body.to_vec());
            if out != ForwardOutcome::Forward {
                return (j, out, seen);
            }
        }
        panic!("last hop forwarded a cell");
    }

    /// Hop `k` sends `payload` back; hops k-1..=0 relay it. Returns the body
    /// as the client receives it and what every hop emitted.
    fn send_back(relays: &mut [RelayCrypto], k: usize, payload: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut body = relays[k].seal_backward(payload).unwrap().to_vec();
        let mut seen = vec![body.clone()];
        for r in relays[..k].iter_mut().rev() {
            r.relay_backward(&mut body).unwrap();
            assert_eq!(body.len(), CELL_BODY_BYTES);
            seen.push(body.clone());
        }
        (body, seen)
    }

    fn payload(tag: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + tag * 7 + 1) as u8).collect()
    }

    #[test]
    fn keys_are_distinct_and_redacted() {
        let k = HopKeys::derive(&secret(1));
        let all = [
            k.forward_stream,
            k.backward_stream,
            k.forward_tag,
            k.backward_tag,
        ];
        for a in 0..4 {
            for b in a + 1..4 {
                assert_ne!(all[a], all[b]);
            }
        }
        assert_ne!(HopKeys::derive(&secret(2)).forward_tag, k.forward_tag);
        assert_eq!(format!("{k:?}"), "HopKeys { <redacted> }");
    }

    #[test]
    fn forward_recognised_only_by_addressed_hop() {
        for n in 1..=4 {
            let mut net = chain(n);
            for round in 0..3 {
                for k in 0..n {
                    let p = payload(round * 10 + k, 100 + k);
                    let mut body = net.client.seal_forward(k, &p).unwrap();
                    assert_eq!(body.len(), CELL_BODY_BYTES);
                    let (at, out, seen) = deliver(&mut net.relays, &mut body[..]);
                    assert_eq!((at, out), (k, ForwardOutcome::Recognised(p)));
                    assert_eq!(seen.len(), k + 1, "hops before {k} forwarded");
                }
            }
        }
    }

    #[test]
    fn backward_attributed_to_origin() {
        for n in 1..=4 {
            let mut net = chain(n);
            for round in 0..3 {
                for k in (0..n).rev() {
                    let p = payload(round * 10 + k, 50 * k);
                    let (mut body, _) = send_back(&mut net.relays, k, &p);
                    assert_eq!(net.client.open_backward(&mut body).unwrap(), (k, p));
                }
            }
        }
    }

    #[test]
    fn long_mixed_sequence_stays_in_sync() {
        let mut net = chain(4);
        for i in 0..300usize {
            let k = (i * 7 + i / 5) % 4;
            let len = [0, 1, 17, MAX_RELAY_PAYLOAD][i % 4];
            let p = payload(i, len);
            if i % 3 == 0 {
                let (mut body, _) = send_back(&mut net.relays, k, &p);
                assert_eq!(net.client.open_backward(&mut body).unwrap(), (k, p));
            } else {
                let mut body = net.client.seal_forward(k, &p).unwrap();
                let (at, out, _) = deliver(&mut net.relays, &mut body[..]);
                assert_eq!((at, out), (k, ForwardOutcome::Recognised(p)));
            }
        }
    }

    fn flip_positions() -> Vec<usize> {
        let mut v: Vec<usize> = (0..CELL_BODY_BYTES).step_by(211).collect();
        v.extend([1, 2, 3, INNER_BYTES - 1, INNER_BYTES, CELL_BODY_BYTES - 1]);
        v
    }

    #[test]
    fn flipped_bit_from_client_side_is_never_accepted() {
        for n in 1..=4 {
            for k in 0..n {
                for (i, pos) in flip_positions().into_iter().enumerate() {
                    let mut net = chain(n);
                    let mut body = net.client.seal_forward(k, b"hello").unwrap();
                    body[pos] ^= 1 << (i % 8);
                    let (at, out, _) = deliver(&mut net.relays, &mut body[..]);
                    assert_eq!(
                        (at, out),
                        (n - 1, ForwardOutcome::Unrecognised),
                        "n={n} k={k} pos={pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn flipped_bit_by_intermediate_relay_is_never_accepted() {
        for n in 2..=4 {
            for k in 1..n {
                for j in 0..k {
                    for pos in [0, 1000, INNER_BYTES + 3] {
                        let mut net = chain(n);
                        let mut body = net.client.seal_forward(k, b"hello").unwrap();
                        for r in &mut net.relays[..=j] {
                            assert_eq!(
                                r.process_forward(&mut body[..]).unwrap(),
                                ForwardOutcome::Forward
                            );
                        }
                        body[pos] ^= 0x80;
                        let (at, out, _) = deliver(&mut net.relays[j + 1..], &mut body[..]);
                        assert_eq!((at + j + 1, out), (n - 1, ForwardOutcome::Unrecognised));
                    }
                }
            }
        }
    }

    #[test]
    fn flipped_bit_backward_is_rejected() {
        for n in 1..=4 {
            for k in 0..n {
                for (i, pos) in flip_positions().into_iter().enumerate() {
                    let mut net = chain(n);
                    let (mut body, _) = send_back(&mut net.relays, k, b"reply");
                    body[pos] ^= 1 << (i % 8);
                    assert_eq!(
                        net.client.open_backward(&mut body),
                        Err(OnionError::Unrecognised)
                    );
                }
            }
        }
    }

    #[test]
    fn replayed_cell_is_rejected_and_desyncs() {
        for n in 1..=4 {
            for k in [0, n - 1] {
                let mut net = chain(n);
                let body = net.client.seal_forward(k, b"first").unwrap();
                let mut copy = body.clone();
                let (at, out, _) = deliver(&mut net.relays, &mut copy[..]);
                assert_eq!(
                    (at, out),
                    (k, ForwardOutcome::Recognised(b"first".to_vec()))
                );
                let mut replay = body.clone();
                let (at, out, _) = deliver(&mut net.relays, &mut replay[..]);
                assert_eq!((at, out), (n - 1, ForwardOutcome::Unrecognised));
                let mut later = net.client.seal_forward(k, b"second").unwrap();
                let (_, out, _) = deliver(&mut net.relays, &mut later[..]);
                assert_eq!(out, ForwardOutcome::Unrecognised);
            }
        }
    }

    #[test]
    fn dropped_cell_desyncs() {
        for n in 1..=4 {
            for k in 0..n {
                let mut net = chain(n);
                let _dropped = net.client.seal_forward(k, b"lost").unwrap();
                let mut body = net.client.seal_forward(k, b"next").unwrap();
                let (at, out, _) = deliver(&mut net.relays, &mut body[..]);
                assert_eq!((at, out), (n - 1, ForwardOutcome::Unrecognised));
            }
        }
    }

    #[test]
    fn reordered_cells_are_rejected() {
        let mut net = chain(3);
        let mut a = net.client.seal_forward(2, b"a").unwrap();
        let mut b = net.client.seal_forward(2, b"b").unwrap();
        assert_eq!(
            deliver(&mut net.relays, &mut b[..]).1,
            ForwardOutcome::Unrecognised
        );
        assert_eq!(
            deliver(&mut net.relays, &mut a[..]).1,
            ForwardOutcome::Unrecognised
        );
    }

    #[test]
    fn backward_replay_drop_and_reorder_are_rejected() {
        let mut net = chain(3);
        let (body, _) = send_back(&mut net.relays, 2, b"one");
        let mut first = body.clone();
        assert_eq!(
            net.client.open_backward(&mut first).unwrap(),
            (2, b"one".to_vec())
        );
        let mut replay = body.clone();
        assert_eq!(
            net.client.open_backward(&mut replay),
            Err(OnionError::Unrecognised)
        );

        let mut net2 = self::chain(3);
        let (_dropped, _) = send_back(&mut net2.relays, 1, b"lost");
        let (mut next, _) = send_back(&mut net2.relays, 1, b"next");
        assert_eq!(
            net2.client.open_backward(&mut next),
            Err(OnionError::Unrecognised)
        );

        // Reordered: the early arrival fails (and the caller tears down).
        let mut net3 = self::chain(3);
        let (_a, _) = send_back(&mut net3.relays, 2, b"a");
        let (mut b, _) = send_back(&mut net3.relays, 2, b"b");
        assert_eq!(
            net3.client.open_backward(&mut b),
            Err(OnionError::Unrecognised)
        );
    }

    #[test]
    fn intermediate_hops_never_see_payload() {
        let secret_payload: Vec<u8> = b"INITIATOR-NODE-ID-0123456789abcdef".repeat(8);
        let needle = &secret_payload[..16];
        for n in 2..=4 {
            let mut net = chain(n);
            for k in 1..n {
                let mut body = net.client.seal_forward(k, &secret_payload).unwrap();
                assert!(!body.windows(16).any(|w| w == needle));
                let (at, out, seen) = deliver(&mut net.relays, &mut body[..]);
                assert_eq!(
                    (at, out),
                    (k, ForwardOutcome::Recognised(secret_payload.clone()))
                );
                for stripped in &seen[..k] {
                    assert!(!stripped.windows(16).any(|w| w == needle));
                }
                let (mut back, emitted) = send_back(&mut net.relays, k, &secret_payload);
                for e in &emitted {
                    assert!(!e.windows(16).any(|w| w == needle));
                }
                assert_eq!(
                    net.client.open_backward(&mut back).unwrap(),
                    (k, secret_payload.clone())
                );
            }
        }
    }

    #[test]
    fn lengths_and_indices_are_checked() {
        let mut net = chain(2);
        for len in [0, 1, CELL_BODY_BYTES - 1, CELL_BODY_BYTES + 1] {
            let mut b = vec![0u8; len];
            assert_eq!(
                net.relays[0].process_forward(&mut b),
                Err(OnionError::BadBodyLength(len))
            );
            assert_eq!(
                net.relays[0].relay_backward(&mut b),
                Err(OnionError::BadBodyLength(len))
            );
            assert_eq!(
                net.client.open_backward(&mut b),
                Err(OnionError::BadBodyLength(len))
            );
        }
        let big = vec![0u8; MAX_RELAY_PAYLOAD + 1];
        assert_eq!(
            net.client.seal_forward(0, &big).unwrap_err(),
            OnionError::PayloadTooLarge(big.len())
        );
        assert_eq!(
            net.relays[1].seal_backward(&big).unwrap_err(),
            OnionError::PayloadTooLarge(big.len())
        );
        assert_eq!(
            net.client.seal_forward(2, b"x").unwrap_err(),
            OnionError::UnknownHop(2)
        );
        // Failed calls moved no counter: the circuit still works.
        let mut body = net.client.seal_forward(1, b"ok").unwrap();
        assert_eq!(
            deliver(&mut net.relays, &mut body[..]).1,
            ForwardOutcome::Recognised(b"ok".to_vec())
        );

        let mut client = OnionClient::new();
        for i in 0..MAX_HOPS {
            client.add_hop(HopKeys::derive(&secret(i))).unwrap();
        }
        assert_eq!(
            client.add_hop(HopKeys::derive(&secret(99))),
            Err(OnionError::TooManyHops)
        );
    }

    #[test]
    fn join_point_hands_over_unrecognised_cells() {
        let mut client = OnionClient::new();
        client.add_hop(HopKeys::derive(&secret(0))).unwrap();
        client.add_hop(HopKeys::derive(&secret(1))).unwrap();
        let mut guard = RelayCrypto::new(HopKeys::derive(&secret(0)), false);
        let mut join = RelayCrypto::join_point(HopKeys::derive(&secret(1)));
        assert_eq!(join.position(), RelayPosition::JoinPoint);

        let mut body = client.seal_forward(1, b"to join").unwrap();
        assert_eq!(
            guard.process_forward(&mut body[..]).unwrap(),
            ForwardOutcome::Forward
        );
        assert_eq!(
            join.process_forward(&mut body[..]).unwrap(),
            ForwardOutcome::Recognised(b"to join".to_vec())
        );

        let mut junk = Box::new([7u8; CELL_BODY_BYTES]);
        assert_eq!(
            join.process_forward(&mut junk[..]).unwrap(),
            ForwardOutcome::Splice
        );
    }

    #[test]
    fn counter_exhaustion_is_an_error() {
        let mut r = RelayCrypto::new(HopKeys::derive(&secret(0)), true);
        r.forward = u64::MAX;
        r.backward = u64::MAX;
        let mut b = vec![0u8; CELL_BODY_BYTES];
        assert_eq!(r.process_forward(&mut b), Err(OnionError::CounterExhausted));
        assert_eq!(r.relay_backward(&mut b), Err(OnionError::CounterExhausted));
        assert_eq!(
            r.seal_backward(b"x").unwrap_err(),
            OnionError::CounterExhausted
        );
        let mut c = OnionClient::new();
        c.add_hop(HopKeys::derive(&secret(0))).unwrap();
        c.hops[0].forward = u64::MAX;
        c.hops[0].backward = u64::MAX;
        assert_eq!(
            c.seal_forward(0, b"x").unwrap_err(),
            OnionError::CounterExhausted
        );
        assert_eq!(c.open_backward(&mut b), Err(OnionError::CounterExhausted));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bodies_never_panic_or_get_accepted(
            bytes in proptest::collection::vec(any::<u8>(), CELL_BODY_BYTES),
            odd_len in 0usize..CELL_BODY_BYTES + 64,
            hops in 1usize..=4,
        ) {
            let mut net = chain(hops);
            let mut join = RelayCrypto::join_point(HopKeys::derive(&secret(9)));
            for len in [CELL_BODY_BYTES, odd_len] {
                let mut b = bytes.clone();
                b.resize(len, 0xEE);
                for r in net.relays.iter_mut() {
                    let out = r.process_forward(&mut b.clone());
                    prop_assert!(!matches!(out, Ok(ForwardOutcome::Recognised(_))));
                    let _ = r.relay_backward(&mut b.clone());
                }
                prop_assert!(!matches!(join.process_forward(&mut b.clone()), Ok(ForwardOutcome::Recognised(_))));
                prop_assert!(net.client.open_backward(&mut b).is_err());
            }
        }
    }
}
