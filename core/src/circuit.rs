//! Circuit hop handshakes and circuit control messages, sans-IO.
//!
//! # Hop handshake
//!
//! Circuits are telescoped. The client reaches hop 0 with a CREATE. It
//! reaches every later hop with an EXTEND, sent through the onion layers of
//! the hops it already has. Each hop is reached with one Noise `NK` handshake
//! ([`HOP_NOISE_PARAMS`], prologue [`HOP_PROLOGUE`]):
//!
//! ```text
//!   <- s              (the hop's static x25519 key, from its verified descriptor)
//!   ...
//!   -> e, es          msg1: client  -> hop, 48 bytes
//!   <- e, ee          msg2: hop     -> client, 48 bytes
//! ```
//!
//! * The hop proves its key: only the holder of the static secret can
//!   decrypt msg1 and compute the `es` output that keys msg2's tag. A hop
//!   that cannot do so makes [`ClientHopHandshake::finish`] fail.
//! * The client stays anonymous: it has no static key.
//! * Forward secrecy comes from `ee`: once both ephemerals are gone, the
//!   hop's long-term key does not open recorded traffic.
//!
//! Both payloads are empty (a non-empty one is rejected). After the two
//! messages both sides take the Noise split: the two cipher keys that
//! `Split()` derives from the final chaining key, which is the HKDF chain of
//! the `es` and `ee` Diffie-Hellman outputs (snow's raw split). The hop
//! secret is `blake3::derive_key(`[`HOP_SECRET_CONTEXT`]`, k1 || k2)`, and
//! [`HopKeys::derive`] turns it into the onion keys of [`crate::onion`].
//!
//! **The handshake hash is never key material.** It covers only public
//! data (protocol name, prologue, the hop's static public key, msg1 and
//! msg2), all of which the previous hop carries in its EXTEND and EXTENDED
//! cells: a key derived from it would be known to that hop. The chaining
//! key, by contrast, mixes in `es` (needs the hop's static secret or the
//! client's ephemeral secret) and `ee` (needs one of the two ephemeral
//! secrets). Test `circuit_hop_keys_not_computable_from_transcript` takes
//! the previous hop's view and tries every derivation it could make.
//!
//! Randomness comes only from the caller's 32-byte seed. A seed must never be
//! reused: the ephemeral key is derived from it.
//!
//! # Control messages
//!
//! [`CircuitMsg`] is the payload of CREATE/CREATED cells and of relay cells
//! that control the circuit. Its encoding is a `u8` tag and the fields below,
//! big-endian, with no trailing bytes; handshake blobs have a `u8` length of
//! at most [`MAX_HANDSHAKE_BYTES`]. The largest message fits one relay cell
//! ([`MAX_CIRCUIT_MSG_BYTES`] ≤ [`MAX_RELAY_PAYLOAD`]).

use thiserror::Error;
use zeroize::Zeroizing;

use crate::descriptor::MAX_DESCRIPTOR_BYTES;
use crate::identity::NodeIdentity;
use crate::link::noise_builder_state;
use crate::onion::{HopKeys, MAX_RELAY_PAYLOAD};
use crate::wire::{DecodeError, EncodeError, Reader, Writer};

/// Noise protocol of the hop handshake.
pub const HOP_NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
/// Prologue of the hop handshake.
pub const HOP_PROLOGUE: &[u8] = b"veil circuit hop v1\0";
/// `blake3::derive_key` context that turns the Noise split into the hop
/// secret.
pub const HOP_SECRET_CONTEXT: &str = "veil 2026 circuit hop secret v2";
/// Length of each of the two handshake messages (ephemeral key and an empty
/// payload's tag).
pub const HOP_HANDSHAKE_BYTES: usize = 32 + 16;
/// Largest handshake blob a [`CircuitMsg`] carries.
pub const MAX_HANDSHAKE_BYTES: usize = 128;
/// Largest encoded [`CircuitMsg`]: an EXTEND with the largest descriptor
/// and a full-size handshake.
pub const MAX_CIRCUIT_MSG_BYTES: usize = 1 + 2 + MAX_DESCRIPTOR_BYTES + 1 + MAX_HANDSHAKE_BYTES;
/// Most EXTENDs one circuit may carry past any relay: a circuit has at most
/// `MAX_EXTENDS + 1` hops (4), whatever its client does. Relays count the
/// `RELAY_EARLY` cells they see on each circuit (see
/// [`crate::node`]'s circuit docs).
pub const MAX_EXTENDS: u8 = 3;

const _: () = assert!(MAX_CIRCUIT_MSG_BYTES <= MAX_RELAY_PAYLOAD);
const _: () = assert!(HOP_HANDSHAKE_BYTES <= MAX_HANDSHAKE_BYTES);

/// Errors of the hop handshake. Any of them fails this circuit build.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CircuitError {
    /// The peer's handshake message did not authenticate or is malformed
    /// (including: the hop does not hold the expected static key).
    #[error("hop handshake failed: {0}")]
    Handshake(String),
    /// The handshake message carried a payload; this version sends none.
    #[error("hop handshake message carries an unexpected payload")]
    UnexpectedPayload,
    /// A local failure (building Noise state); not the peer's fault.
    #[error("local hop handshake setup failed: {0}")]
    Local(String),
}

fn local(e: impl std::fmt::Display) -> CircuitError {
    CircuitError::Local(e.to_string())
}

fn peer(e: snow::Error) -> CircuitError {
    CircuitError::Handshake(e.to_string())
}

/// Hop keys from a finished handshake: from the Noise split (secret DH
/// output), never from the handshake hash (public). See the module docs.
fn split_secret(noise: &mut snow::HandshakeState) -> Zeroizing<[u8; 32]> {
    let (k1, k2) = noise.dangerously_get_raw_split();
    let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
    hop_secret(&k1, &k2)
}

/// The hop secret from the two split keys (initiator-to-responder first).
fn hop_secret(k1: &[u8; 32], k2: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(HOP_SECRET_CONTEXT);
    h.update(k1);
    h.update(k2);
    Zeroizing::new(*h.finalize().as_bytes())
}

/// The client's side of one hop handshake, waiting for msg2.
pub struct ClientHopHandshake {
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for ClientHopHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHopHandshake { <redacted> }")
    }
}

impl ClientHopHandshake {
    /// Starts a handshake with the hop whose static x25519 key is
    /// `hop_x25519` (from its verified descriptor). Returns the state and
    /// msg1, to send in a CREATE or EXTEND.
    pub fn start(
        hop_x25519: &[u8; 32],
        seed: [u8; 32],
    ) -> Result<(ClientHopHandshake, Vec<u8>), CircuitError> {
        let mut noise = noise_builder_state(
            HOP_NOISE_PARAMS,
            seed,
            None,
            Some(hop_x25519),
            HOP_PROLOGUE,
            true,
        )
        .map_err(local)?;
        let mut msg1 = vec![0u8; MAX_HANDSHAKE_BYTES];
        let n = noise.write_message(&[], &mut msg1).map_err(local)?;
        msg1.truncate(n);
        Ok((ClientHopHandshake { noise }, msg1))
    }

    /// Reads the hop's msg2 and returns the hop's onion keys. Fails if the
    /// hop did not prove its static key or the message was altered.
    pub fn finish(self, msg2: &[u8]) -> Result<HopKeys, CircuitError> {
        let secret = self.finish_secret(msg2)?;
        Ok(HopKeys::derive(&secret))
    }

    /// As [`ClientHopHandshake::finish`], returning the hop secret itself
    /// (for the key-schedule tests and vectors).
    fn finish_secret(mut self, msg2: &[u8]) -> Result<Zeroizing<[u8; 32]>, CircuitError> {
        if msg2.len() != HOP_HANDSHAKE_BYTES {
            return Err(CircuitError::Handshake(format!(
                "msg2 is {} bytes, expected {HOP_HANDSHAKE_BYTES}",
                msg2.len()
            )));
        }
        let mut payload = [0u8; MAX_HANDSHAKE_BYTES];
        let n = self.noise.read_message(msg2, &mut payload).map_err(peer)?;
        if n != 0 {
            return Err(CircuitError::UnexpectedPayload);
        }
        if !self.noise.is_handshake_finished() {
            return Err(CircuitError::Local("handshake not finished".into()));
        }
        Ok(split_secret(&mut self.noise))
    }
}

/// The relay's side of the hop handshake (one message in, one out).
#[derive(Debug)]
pub struct RelayHopHandshake;

impl RelayHopHandshake {
    /// Answers a client's msg1 with this node's static key. Returns the
    /// hop's onion keys and msg2, to send back in a CREATED or EXTENDED.
    pub fn respond(
        identity: &NodeIdentity,
        msg1: &[u8],
        seed: [u8; 32],
    ) -> Result<(HopKeys, Vec<u8>), CircuitError> {
        let (secret, msg2) = Self::respond_secret(identity, msg1, seed)?;
        Ok((HopKeys::derive(&secret), msg2))
    }

    /// As [`RelayHopHandshake::respond`], returning the hop secret itself.
    fn respond_secret(
        identity: &NodeIdentity,
        msg1: &[u8],
        seed: [u8; 32],
    ) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), CircuitError> {
        if msg1.len() != HOP_HANDSHAKE_BYTES {
            return Err(CircuitError::Handshake(format!(
                "msg1 is {} bytes, expected {HOP_HANDSHAKE_BYTES}",
                msg1.len()
            )));
        }
        let secret = Zeroizing::new(identity.x25519_secret().to_bytes());
        let mut noise = noise_builder_state(
            HOP_NOISE_PARAMS,
            seed,
            Some(&secret[..]),
            None,
            HOP_PROLOGUE,
            false,
        )
        .map_err(local)?;
        let mut payload = [0u8; MAX_HANDSHAKE_BYTES];
        let n = noise.read_message(msg1, &mut payload).map_err(peer)?;
        if n != 0 {
            return Err(CircuitError::UnexpectedPayload);
        }
        let mut msg2 = vec![0u8; MAX_HANDSHAKE_BYTES];
        let n = noise.write_message(&[], &mut msg2).map_err(local)?;
        msg2.truncate(n);
        if !noise.is_handshake_finished() {
            return Err(CircuitError::Local("handshake not finished".into()));
        }
        Ok((split_secret(&mut noise), msg2))
    }
}

/// Message tags of [`CircuitMsg`].
pub mod tag {
    /// [`super::CircuitMsg::Create`].
    pub const CREATE: u8 = 1;
    /// [`super::CircuitMsg::Created`].
    pub const CREATED: u8 = 2;
    /// [`super::CircuitMsg::Extend`].
    pub const EXTEND: u8 = 3;
    /// [`super::CircuitMsg::Extended`].
    pub const EXTENDED: u8 = 4;
    /// [`super::CircuitMsg::Destroy`].
    pub const DESTROY: u8 = 5;
    /// [`super::CircuitMsg::Probe`].
    pub const PROBE: u8 = 6;
    /// [`super::CircuitMsg::ProbeReply`].
    pub const PROBE_REPLY: u8 = 7;
    /// [`super::CircuitMsg::Data`].
    pub const DATA: u8 = 8;
    /// [`super::CircuitMsg::Sendme`].
    pub const SENDME: u8 = 9;
    /// [`super::CircuitMsg::Search`].
    pub const SEARCH: u8 = 10;
    /// [`super::CircuitMsg::SearchReply`].
    pub const SEARCH_REPLY: u8 = 11;
    /// [`super::CircuitMsg::Rendezvous`].
    pub const RENDEZVOUS: u8 = 12;
    /// [`super::CircuitMsg::RendezvousReply`].
    pub const RENDEZVOUS_REPLY: u8 = 13;
}

/// Largest [`CircuitMsg::Data`] payload: one relay cell minus the tag and
/// the `u16` length.
pub const MAX_DATA_BYTES: usize = MAX_RELAY_PAYLOAD - 3;

/// Circuit control messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitMsg {
    /// Client → hop 0 (link level): msg1 of the hop handshake.
    Create {
        /// Handshake msg1.
        handshake: Vec<u8>,
    },
    /// Hop → previous node (link level): msg2 of the hop handshake.
    Created {
        /// Handshake msg2.
        handshake: Vec<u8>,
    },
    /// Client → last hop (in a `RELAY_EARLY` cell): extend the circuit to
    /// the node this descriptor describes. The relay checks it (signature,
    /// proof of work, freshness, relay flag) and dials only the address it
    /// signs, or uses a link it already has to that node.
    Extend {
        /// The next hop's signed descriptor, canonical encoding (at most
        /// [`MAX_DESCRIPTOR_BYTES`]).
        descriptor: Vec<u8>,
        /// Handshake msg1 for the next hop.
        handshake: Vec<u8>,
    },
    /// Last hop → client (in a relay cell): the new hop's msg2.
    Extended {
        /// Handshake msg2 of the new hop.
        handshake: Vec<u8>,
    },
    /// Tear the circuit down.
    Destroy {
        /// Why (opaque code).
        reason: u8,
    },
    /// End-to-end probe to a hop.
    Probe {
        /// Echoed in the reply.
        nonce: u64,
    },
    /// A hop's answer to a probe.
    ProbeReply {
        /// The probe's nonce.
        nonce: u64,
    },
    /// End-to-end data between the client and the last hop (counted by
    /// flow control).
    Data {
        /// At most [`MAX_DATA_BYTES`].
        bytes: Vec<u8>,
    },
    /// Flow control: the sender of this message received another
    /// `sendme_every` data cells; the other end may send that many more.
    Sendme,
    /// Client → last hop: a publication or a search
    /// ([`crate::search::ToExit`], undecoded).
    Search {
        /// At most [`MAX_DATA_BYTES`].
        bytes: Vec<u8>,
    },
    /// Last hop → client: a search answer ([`crate::search::FromExit`],
    /// undecoded).
    SearchReply {
        /// At most [`MAX_DATA_BYTES`].
        bytes: Vec<u8>,
    },
    /// Client → last hop: an introduction or rendezvous request
    /// ([`crate::rendezvous::ToHop`], undecoded).
    Rendezvous {
        /// At most [`MAX_DATA_BYTES`].
        bytes: Vec<u8>,
    },
    /// Last hop → client: an introduction or rendezvous answer
    /// ([`crate::rendezvous::FromHop`], undecoded).
    RendezvousReply {
        /// At most [`MAX_DATA_BYTES`].
        bytes: Vec<u8>,
    },
}

fn put_handshake(w: &mut Writer, handshake: &[u8]) -> Result<(), EncodeError> {
    if handshake.len() > MAX_HANDSHAKE_BYTES {
        return Err(EncodeError {
            len: handshake.len(),
            max: MAX_HANDSHAKE_BYTES,
        });
    }
    w.put_bytes_u8len(handshake)
}

fn get_handshake(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    Ok(r.get_bytes_u8len(MAX_HANDSHAKE_BYTES, "circuit handshake")?
        .to_vec())
}

impl CircuitMsg {
    /// Encodes the message. Fails only if a handshake blob is longer than
    /// [`MAX_HANDSHAKE_BYTES`] or data longer than [`MAX_DATA_BYTES`]. A
    /// control message is at most [`MAX_CIRCUIT_MSG_BYTES`] long, data at
    /// most [`MAX_RELAY_PAYLOAD`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::with_capacity(MAX_CIRCUIT_MSG_BYTES);
        match self {
            CircuitMsg::Create { handshake } => {
                w.put_u8(tag::CREATE);
                put_handshake(&mut w, handshake)?;
            }
            CircuitMsg::Created { handshake } => {
                w.put_u8(tag::CREATED);
                put_handshake(&mut w, handshake)?;
            }
            CircuitMsg::Extend {
                descriptor,
                handshake,
            } => {
                if descriptor.len() > MAX_DESCRIPTOR_BYTES {
                    return Err(EncodeError {
                        len: descriptor.len(),
                        max: MAX_DESCRIPTOR_BYTES,
                    });
                }
                w.put_u8(tag::EXTEND);
                w.put_bytes_u16len(descriptor)?;
                put_handshake(&mut w, handshake)?;
            }
            CircuitMsg::Extended { handshake } => {
                w.put_u8(tag::EXTENDED);
                put_handshake(&mut w, handshake)?;
            }
            CircuitMsg::Destroy { reason } => {
                w.put_u8(tag::DESTROY);
                w.put_u8(*reason);
            }
            CircuitMsg::Probe { nonce } => {
                w.put_u8(tag::PROBE);
                w.put_u64(*nonce);
            }
            CircuitMsg::ProbeReply { nonce } => {
                w.put_u8(tag::PROBE_REPLY);
                w.put_u64(*nonce);
            }
            CircuitMsg::Data { bytes }
            | CircuitMsg::Search { bytes }
            | CircuitMsg::SearchReply { bytes }
            | CircuitMsg::Rendezvous { bytes }
            | CircuitMsg::RendezvousReply { bytes } => {
                if bytes.len() > MAX_DATA_BYTES {
                    return Err(EncodeError {
                        len: bytes.len(),
                        max: MAX_DATA_BYTES,
                    });
                }
                w.put_u8(match self {
                    CircuitMsg::Search { .. } => tag::SEARCH,
                    CircuitMsg::SearchReply { .. } => tag::SEARCH_REPLY,
                    CircuitMsg::Rendezvous { .. } => tag::RENDEZVOUS,
                    CircuitMsg::RendezvousReply { .. } => tag::RENDEZVOUS_REPLY,
                    _ => tag::DATA,
                });
                w.put_u16(bytes.len() as u16);
                w.put_bytes(bytes);
            }
            CircuitMsg::Sendme => w.put_u8(tag::SENDME),
        }
        Ok(w.into_vec())
    }

    /// Decodes one message; rejects unknown tags, over-long handshakes and
    /// trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<CircuitMsg, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.get_u8()? {
            tag::CREATE => CircuitMsg::Create {
                handshake: get_handshake(&mut r)?,
            },
            tag::CREATED => CircuitMsg::Created {
                handshake: get_handshake(&mut r)?,
            },
            tag::EXTEND => CircuitMsg::Extend {
                descriptor: r
                    .get_bytes_u16len(MAX_DESCRIPTOR_BYTES, "extend descriptor")?
                    .to_vec(),
                handshake: get_handshake(&mut r)?,
            },
            tag::EXTENDED => CircuitMsg::Extended {
                handshake: get_handshake(&mut r)?,
            },
            tag::DESTROY => CircuitMsg::Destroy {
                reason: r.get_u8()?,
            },
            tag::PROBE => CircuitMsg::Probe {
                nonce: r.get_u64()?,
            },
            tag::PROBE_REPLY => CircuitMsg::ProbeReply {
                nonce: r.get_u64()?,
            },
            t @ (tag::DATA
            | tag::SEARCH
            | tag::SEARCH_REPLY
            | tag::RENDEZVOUS
            | tag::RENDEZVOUS_REPLY) => {
                let len = usize::from(r.get_u16()?);
                if len > MAX_DATA_BYTES {
                    return Err(DecodeError::TooLong {
                        field: "circuit data",
                        len,
                        max: MAX_DATA_BYTES,
                    });
                }
                let bytes = r.get_bytes(len)?.to_vec();
                match t {
                    tag::SEARCH => CircuitMsg::Search { bytes },
                    tag::SEARCH_REPLY => CircuitMsg::SearchReply { bytes },
                    tag::RENDEZVOUS => CircuitMsg::Rendezvous { bytes },
                    tag::RENDEZVOUS_REPLY => CircuitMsg::RendezvousReply { bytes },
                    _ => CircuitMsg::Data { bytes },
                }
            }
            tag::SENDME => CircuitMsg::Sendme,
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::Descriptor;
    use crate::link::tests::node;
    use crate::onion::{ForwardOutcome, OnionClient, RelayCrypto, RelayPosition};
    use proptest::prelude::*;

    fn handshake(id: &NodeIdentity, d: &Descriptor, seed: u8) -> (HopKeys, HopKeys) {
        let (c, msg1) = ClientHopHandshake::start(d.x25519(), [seed; 32]).unwrap();
        assert_eq!(msg1.len(), HOP_HANDSHAKE_BYTES);
        let (relay_keys, msg2) = RelayHopHandshake::respond(id, &msg1, [!seed; 32]).unwrap();
        assert_eq!(msg2.len(), HOP_HANDSHAKE_BYTES);
        (c.finish(&msg2).unwrap(), relay_keys)
    }

    #[test]
    fn circuit_handshake_keys_work_both_ways() {
        let (id, d) = node(1);
        let (client_keys, relay_keys) = handshake(&id, &d, 7);
        let mut client = OnionClient::new();
        client.add_hop(client_keys).unwrap();
        let mut relay = RelayCrypto::new(relay_keys, true);
        for i in 0..3u8 {
            let mut body = client.seal_forward(0, &[i; 10]).unwrap();
            assert_eq!(
                relay.process_forward(&mut body[..]).unwrap(),
                ForwardOutcome::Recognised(vec![i; 10])
            );
            let mut back = relay.seal_backward(b"pong").unwrap();
            assert_eq!(
                client.open_backward(&mut back[..]).unwrap(),
                (0, b"pong".to_vec())
            );
        }
    }

    #[test]
    fn circuit_handshake_seeds_give_fresh_keys() {
        let (id, d) = node(1);
        let (a, _) = handshake(&id, &d, 7);
        let (b, _) = handshake(&id, &d, 8);
        let mut ca = OnionClient::new();
        ca.add_hop(a).unwrap();
        let mut cb = OnionClient::new();
        cb.add_hop(b).unwrap();
        assert_ne!(
            ca.seal_forward(0, b"x").unwrap(),
            cb.seal_forward(0, b"x").unwrap()
        );
    }

    /// What the previous hop (or anyone who saw msg1, msg2 and the hop's
    /// descriptor) computes: the Noise handshake hash, from public bytes
    /// only (Noise spec section 5.3, BLAKE2s, NK pattern).
    fn observer_handshake_hash(hop_static: &[u8; 32], msg1: &[u8], msg2: &[u8]) -> [u8; 32] {
        use blake2::{Blake2s256, Digest};
        let mix = |h: [u8; 32], data: &[u8]| -> [u8; 32] {
            let mut d = Blake2s256::new();
            d.update(h);
            d.update(data);
            d.finalize().into()
        };
        // The protocol name is longer than 32 bytes: h = HASH(name).
        let mut h: [u8; 32] = Blake2s256::digest(HOP_NOISE_PARAMS.as_bytes()).into();
        h = mix(h, HOP_PROLOGUE);
        h = mix(h, hop_static); // pre-message <- s
        h = mix(h, &msg1[..32]); // -> e
        h = mix(h, &msg1[32..]); // es, then the (empty) payload's ciphertext
        h = mix(h, &msg2[..32]); // <- e
        mix(h, &msg2[32..]) // ee, then the payload's ciphertext
    }

    #[test]
    fn circuit_hop_keys_not_computable_from_transcript() {
        // The previous hop's view of hop k's handshake: msg1 (it carried
        // it in an EXTEND, then a CREATE), msg2 (CREATED, then EXTENDED),
        // hop k's public descriptor. It holds no ephemeral and no static
        // secret of this handshake.
        let (id, d) = node(1);
        for seed in 0..8u8 {
            let (client, msg1) = ClientHopHandshake::start(d.x25519(), [seed; 32]).unwrap();
            let (relay_secret, msg2) =
                RelayHopHandshake::respond_secret(&id, &msg1, [!seed; 32]).unwrap();
            // The real hop keys, and a cell sealed for the hop with them.
            let mut real = OnionClient::new();
            real.add_hop(client.finish(&msg2).unwrap()).unwrap();
            let cell = real.seal_forward(0, b"for hop k only").unwrap();
            // Positive control: the hop's own keys open it.
            let mut hop = RelayCrypto::new(HopKeys::derive(&relay_secret), true);
            let mut body = cell.clone();
            assert_eq!(
                hop.process_forward(&mut body[..]).unwrap(),
                ForwardOutcome::Recognised(b"for hop k only".to_vec())
            );

            // Everything the observer can compute. The handshake hash first:
            // it really is public (equals what both ends hold).
            let h = observer_handshake_hash(d.x25519(), &msg1, &msg2);
            let mut client_noise = noise_builder_state(
                HOP_NOISE_PARAMS,
                [seed; 32],
                None,
                Some(d.x25519()),
                HOP_PROLOGUE,
                true,
            )
            .unwrap();
            let mut buf = [0u8; MAX_HANDSHAKE_BYTES];
            client_noise.write_message(&[], &mut buf).unwrap();
            client_noise.read_message(&msg2, &mut buf).unwrap();
            assert_eq!(client_noise.get_handshake_hash(), &h[..]);

            let mut transcript = Vec::new();
            transcript.extend_from_slice(HOP_PROLOGUE);
            transcript.extend_from_slice(d.x25519());
            transcript.extend_from_slice(&msg1);
            transcript.extend_from_slice(&msg2);
            let candidates: Vec<[u8; 32]> = vec![
                // The derivation this module used before (the review's
                // finding): it must be among the observer's tries.
                blake3::derive_key("veil 2025 circuit hop secret v1", &h),
                blake3::derive_key(HOP_SECRET_CONTEXT, &h),
                *hop_secret(&h, &h),
                h,
                *blake3::hash(&transcript).as_bytes(),
                blake3::derive_key(HOP_SECRET_CONTEXT, &transcript),
                msg1[..32].try_into().unwrap(),
                msg2[..32].try_into().unwrap(),
                *d.x25519(),
            ];
            for (i, guess) in candidates.iter().enumerate() {
                assert_ne!(guess, &*relay_secret, "candidate {i} is the hop secret");
                let mut attacker = RelayCrypto::new(HopKeys::derive(guess), true);
                let mut body = cell.clone();
                assert!(
                    !matches!(
                        attacker.process_forward(&mut body[..]),
                        Ok(ForwardOutcome::Recognised(_))
                    ),
                    "candidate {i} opens a cell sealed for the hop"
                );
                assert!(
                    !body.windows(14).any(|w| w == b"for hop k only"),
                    "candidate {i} strips the layer"
                );
            }
        }
    }

    /// Would the observer test catch the old derivation? Keys from the
    /// handshake hash open the hop's cells: the test's method works.
    #[test]
    fn circuit_hash_derived_keys_would_be_caught() {
        let (id, d) = node(1);
        let (_, msg1) = ClientHopHandshake::start(d.x25519(), [1; 32]).unwrap();
        let (_, msg2) = RelayHopHandshake::respond_secret(&id, &msg1, [2; 32]).unwrap();
        let h = observer_handshake_hash(d.x25519(), &msg1, &msg2);
        let hash_keys = || HopKeys::derive(&blake3::derive_key(HOP_SECRET_CONTEXT, &h));
        let mut client = OnionClient::new();
        client.add_hop(hash_keys()).unwrap();
        let mut body = client.seal_forward(0, b"x").unwrap();
        let mut observer = RelayCrypto::new(hash_keys(), true);
        assert_eq!(
            observer.process_forward(&mut body[..]).unwrap(),
            ForwardOutcome::Recognised(b"x".to_vec())
        );
    }

    /// Committed vectors for the hop key schedule: fixed identity and
    /// seeds give this msg1, msg2 and hop secret, and this first forward
    /// body. A change to the handshake, the split or the key derivation
    /// changes them.
    #[test]
    fn circuit_hop_key_vectors() {
        let (id, d) = node(1);
        let (client, msg1) = ClientHopHandshake::start(d.x25519(), [0x11; 32]).unwrap();
        let (relay_secret, msg2) =
            RelayHopHandshake::respond_secret(&id, &msg1, [0x22; 32]).unwrap();
        let client_secret = client.finish_secret(&msg2).unwrap();
        assert_eq!(*client_secret, *relay_secret);
        let mut onion = OnionClient::new();
        onion.add_hop(HopKeys::derive(&client_secret)).unwrap();
        let body = onion.seal_forward(0, b"veil").unwrap();
        let got = [
            hex(&msg1),
            hex(&msg2),
            hex(&client_secret[..]),
            hex(&body[..32]),
        ];
        assert_eq!(got, HOP_VECTORS, "{got:#?}");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    const HOP_VECTORS: [&str; 4] = [
        // msg1: client ephemeral, tag of the empty payload
        "da76c25e00a60dfefb9815f0a8790d2e69716d10ed5e58ebb84b3cc0d764c60e45292d0102a566270e8aa8888ffd045e",
        // msg2: hop ephemeral, tag
        "44a318c81b0c158c37870b5d1c014ab267721324d983c6e57c7b72ca13f77777175937d859449df5109819e2be78b0a7",
        // hop secret: derive_key(HOP_SECRET_CONTEXT, split k1 || k2)
        "14bfe8684d24315d00bc999121730936b4b5c4aa3a8e3130a5acb22befd7d414",
        // first 32 bytes of the first forward body carrying "veil"
        "627e8e83e98c3f4d54f9aa92d7a94f054836594c0d3f0f6ca8e1aa2771fd73a8",
    ];

    #[test]
    fn circuit_wrong_hop_key_fails() {
        let (honest, d) = node(1);
        let (impostor, d_imp) = node(2);
        // The impostor cannot read msg1 meant for the honest hop.
        let (client, msg1) = ClientHopHandshake::start(d.x25519(), [3; 32]).unwrap();
        assert!(matches!(
            RelayHopHandshake::respond(&impostor, &msg1, [4; 32]),
            Err(CircuitError::Handshake(_))
        ));
        // Nor can it answer with a msg2 from a handshake it can run (its own
        // key): the client's `finish` rejects it.
        let (_, msg1_imp) = ClientHopHandshake::start(d_imp.x25519(), [5; 32]).unwrap();
        let (_, msg2_imp) = RelayHopHandshake::respond(&impostor, &msg1_imp, [6; 32]).unwrap();
        assert!(matches!(
            client.finish(&msg2_imp),
            Err(CircuitError::Handshake(_))
        ));
        // Replaying an honest msg2 from another handshake fails too.
        let (client, _) = ClientHopHandshake::start(d.x25519(), [9; 32]).unwrap();
        let (_, msg1_other) = ClientHopHandshake::start(d.x25519(), [10; 32]).unwrap();
        let (_, msg2_other) = RelayHopHandshake::respond(&honest, &msg1_other, [11; 32]).unwrap();
        assert!(client.finish(&msg2_other).is_err());
    }

    #[test]
    fn circuit_tampered_messages_fail() {
        let (id, d) = node(1);
        let (_, msg1) = ClientHopHandshake::start(d.x25519(), [3; 32]).unwrap();
        for i in 0..msg1.len() {
            let mut bad = msg1.clone();
            bad[i] ^= 0x01;
            assert!(RelayHopHandshake::respond(&id, &bad, [4; 32]).is_err());
        }
        assert!(RelayHopHandshake::respond(&id, &msg1[..47], [4; 32]).is_err());
        assert!(RelayHopHandshake::respond(&id, &[], [4; 32]).is_err());
        let (_, msg2) = RelayHopHandshake::respond(&id, &msg1, [4; 32]).unwrap();
        for i in 0..msg2.len() {
            let (client, _) = ClientHopHandshake::start(d.x25519(), [3; 32]).unwrap();
            let mut bad = msg2.clone();
            bad[i] ^= 0x80;
            assert!(client.finish(&bad).is_err());
        }
        let (client, _) = ClientHopHandshake::start(d.x25519(), [3; 32]).unwrap();
        let mut long = msg2.clone();
        long.push(0);
        assert!(client.finish(&long).is_err());
        // The untampered msg2 still works with the same seed.
        let (client, _) = ClientHopHandshake::start(d.x25519(), [3; 32]).unwrap();
        assert!(client.finish(&msg2).is_ok());
    }

    /// One relay's view of the circuit in the in-memory test.
    struct Relay {
        id: NodeIdentity,
        crypto: Option<RelayCrypto>,
        /// Whether this relay has extended to a next hop.
        extended: bool,
    }

    /// Carry a forward body from the client through relays 0..; returns the
    /// index of the relay that recognised it and its payload.
    fn forward(relays: &mut [Relay], body: &mut [u8]) -> Option<(usize, Vec<u8>)> {
        for (i, r) in relays.iter_mut().enumerate() {
            match r.crypto.as_mut()?.process_forward(body).unwrap() {
                ForwardOutcome::Recognised(p) => return Some((i, p)),
                // A relay with no next hop treats Forward as unrecognised.
                ForwardOutcome::Forward if r.extended => continue,
                _ => return None,
            }
        }
        None
    }

    /// Relay `from` sends `payload` back to the client through 0..from.
    fn backward(relays: &mut [Relay], from: usize, payload: &[u8]) -> Vec<u8> {
        let mut body = relays[from]
            .crypto
            .as_mut()
            .unwrap()
            .seal_backward(payload)
            .unwrap();
        for r in relays[..from].iter_mut().rev() {
            r.crypto
                .as_mut()
                .unwrap()
                .relay_backward(&mut body[..])
                .unwrap();
        }
        body.to_vec()
    }

    /// A relay handles a CREATE (link level) and answers with CREATED.
    fn relay_create(r: &mut Relay, msg: &[u8], seed: [u8; 32]) -> Vec<u8> {
        let CircuitMsg::Create { handshake } = CircuitMsg::decode(msg).unwrap() else {
            panic!("expected CREATE");
        };
        let (keys, msg2) = RelayHopHandshake::respond(&r.id, &handshake, seed).unwrap();
        // Relays are Middle from the start; whether they have a next hop is
        // the circuit layer's knowledge (`extended`).
        r.crypto = Some(RelayCrypto::with_position(keys, RelayPosition::Middle));
        CircuitMsg::Created { handshake: msg2 }.encode().unwrap()
    }

    #[test]
    fn circuit_three_hop_telescoped_build_and_probe() {
        let nodes: Vec<(NodeIdentity, Descriptor)> = (1..=3).map(node).collect();
        let mut relays: Vec<Relay> = nodes
            .iter()
            .map(|(id, _)| Relay {
                id: NodeIdentity::from_bytes(&id.to_bytes()).unwrap(),
                crypto: None,
                extended: false,
            })
            .collect();
        let mut client = OnionClient::new();

        // Hop 0: CREATE / CREATED on the link.
        let (hs, msg1) = ClientHopHandshake::start(nodes[0].1.x25519(), [100; 32]).unwrap();
        let create = CircuitMsg::Create { handshake: msg1 }.encode().unwrap();
        let created = relay_create(&mut relays[0], &create, [200; 32]);
        let CircuitMsg::Created { handshake } = CircuitMsg::decode(&created).unwrap() else {
            panic!("expected CREATED");
        };
        client.add_hop(hs.finish(&handshake).unwrap()).unwrap();

        // Hops 1 and 2: EXTEND through the onion, EXTENDED back.
        for k in 1..3usize {
            let (hs, msg1) =
                ClientHopHandshake::start(nodes[k].1.x25519(), [100 + k as u8; 32]).unwrap();
            let extend = CircuitMsg::Extend {
                descriptor: nodes[k].1.to_bytes(),
                handshake: msg1,
            };
            let mut body = client
                .seal_forward(k - 1, &extend.encode().unwrap())
                .unwrap();
            let (at, payload) = forward(&mut relays, &mut body[..]).unwrap();
            assert_eq!(at, k - 1);
            let CircuitMsg::Extend {
                descriptor,
                handshake,
            } = CircuitMsg::decode(&payload).unwrap()
            else {
                panic!("expected EXTEND");
            };
            let next = Descriptor::decode(&descriptor).unwrap().claimed_id();
            assert_eq!(next, relays[k].id.node_id());
            // Relay k-1 opens a link to `next` and sends CREATE.
            let create = CircuitMsg::Create { handshake }.encode().unwrap();
            let created = relay_create(&mut relays[k], &create, [200 + k as u8; 32]);
            let CircuitMsg::Created { handshake } = CircuitMsg::decode(&created).unwrap() else {
                panic!("expected CREATED");
            };
            relays[k - 1].extended = true;
            let extended = CircuitMsg::Extended { handshake }.encode().unwrap();
            let mut back = backward(&mut relays, k - 1, &extended);
            let (from, payload) = client.open_backward(&mut back).unwrap();
            assert_eq!(from, k - 1);
            let CircuitMsg::Extended { handshake } = CircuitMsg::decode(&payload).unwrap() else {
                panic!("expected EXTENDED");
            };
            assert_eq!(client.add_hop(hs.finish(&handshake).unwrap()).unwrap(), k);
        }

        // A probe to the last hop is recognised there and nowhere else.
        let probe = CircuitMsg::Probe { nonce: 42 }.encode().unwrap();
        let mut body = client.seal_forward(2, &probe).unwrap();
        assert_eq!(
            forward(&mut relays, &mut body[..]),
            Some((2, probe.clone()))
        );
        let reply = CircuitMsg::ProbeReply { nonce: 42 }.encode().unwrap();
        let mut back = backward(&mut relays, 2, &reply);
        assert_eq!(client.open_backward(&mut back).unwrap(), (2, reply));

        // A probe for hop 2 corrupted on the way is recognised by nobody.
        let mut body = client.seal_forward(2, &probe).unwrap();
        body[5] ^= 1;
        assert_eq!(forward(&mut relays, &mut body[..]), None);
    }

    #[test]
    fn circuit_msg_fits_relay_cell() {
        let msg = CircuitMsg::Extend {
            descriptor: vec![7; MAX_DESCRIPTOR_BYTES],
            handshake: vec![1; MAX_HANDSHAKE_BYTES],
        };
        assert_eq!(msg.encode().unwrap().len(), MAX_CIRCUIT_MSG_BYTES);
        let too_long = CircuitMsg::Create {
            handshake: vec![0; MAX_HANDSHAKE_BYTES + 1],
        };
        assert!(too_long.encode().is_err());
        let mut bytes = CircuitMsg::Probe { nonce: 1 }.encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            CircuitMsg::decode(&bytes),
            Err(DecodeError::TrailingBytes { count: 1 })
        ));
        let mut over = vec![tag::CREATE, 129];
        over.extend_from_slice(&[0; 129]);
        assert!(matches!(
            CircuitMsg::decode(&over),
            Err(DecodeError::TooLong { .. })
        ));
    }

    fn arb_handshake() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=MAX_HANDSHAKE_BYTES)
    }

    fn arb_msg() -> impl Strategy<Value = CircuitMsg> {
        prop_oneof![
            arb_handshake().prop_map(|handshake| CircuitMsg::Create { handshake }),
            arb_handshake().prop_map(|handshake| CircuitMsg::Created { handshake }),
            (
                proptest::collection::vec(any::<u8>(), 0..=MAX_DESCRIPTOR_BYTES),
                arb_handshake()
            )
                .prop_map(|(descriptor, handshake)| CircuitMsg::Extend {
                    descriptor,
                    handshake,
                }),
            arb_handshake().prop_map(|handshake| CircuitMsg::Extended { handshake }),
            any::<u8>().prop_map(|reason| CircuitMsg::Destroy { reason }),
            any::<u64>().prop_map(|nonce| CircuitMsg::Probe { nonce }),
            any::<u64>().prop_map(|nonce| CircuitMsg::ProbeReply { nonce }),
            proptest::collection::vec(any::<u8>(), 0..MAX_DATA_BYTES)
                .prop_map(|bytes| CircuitMsg::Data { bytes }),
            Just(CircuitMsg::Sendme),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn circuit_msg_round_trips(msg in arb_msg()) {
            let bytes = msg.encode().unwrap();
            let max = if matches!(msg, CircuitMsg::Data { .. }) {
                MAX_RELAY_PAYLOAD
            } else {
                MAX_CIRCUIT_MSG_BYTES
            };
            prop_assert!(bytes.len() <= max);
            prop_assert_eq!(CircuitMsg::decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn circuit_msg_decode_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            if let Ok(msg) = CircuitMsg::decode(&bytes) {
                prop_assert_eq!(msg.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn circuit_handshake_never_panics_on_peer_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (id, d) = node(1);
            let _ = RelayHopHandshake::respond(&id, &bytes, [1; 32]);
            let (client, _) = ClientHopHandshake::start(d.x25519(), [2; 32]).unwrap();
            prop_assert!(client.finish(&bytes).is_err());
        }
    }
}
