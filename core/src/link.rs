//! Links: the Noise handshake that authenticates a link between two nodes,
//! and the link-level messages that travel on it once it is up.
//!
//! The transport below (QUIC in the daemon, a simulated reliable stream in
//! the simulator) already encrypts. Noise adds what TLS with throwaway keys
//! cannot: mutual authentication with each node's static x25519 key, bound
//! to the transport connection. The driver supplies a *channel binding*
//! value (for QUIC, the TLS keying-material exporter) that becomes the Noise
//! prologue; a man in the middle who splices two connections sees two
//! different exporters, so the handshake fails on the first authenticated
//! message.
//!
//! Pattern: `Noise_XX_25519_ChaChaPoly_BLAKE2s`. XX lets a node dial an
//! address before it knows who is there (bootstrap) and hides both static
//! keys from passive observers. Message 2 carries the responder's signed
//! descriptor, message 3 the initiator's; each side checks that the
//! descriptor's x25519 key is the Noise static key it just authenticated,
//! that the descriptor verifies (signature, proof of work, freshness) and,
//! when dialling a known id, that it is the expected one.
//!
//! After the handshake, link traffic is *not* encrypted a second time with
//! Noise transport keys: QUIC's TLS 1.3 layer already gives confidentiality
//! and integrity per connection, and the channel binding ties that
//! connection to the authenticated keys. (Measured cost that this avoids:
//! docs/performance.md, "Cell size", the seal+open column.)

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use thiserror::Error;

use crate::cell::{Cell, MAX_LINK_PAYLOAD, command};
use crate::descriptor::{Admitted, Descriptor, DescriptorError, UncheckedDescriptor};
use crate::identity::{NodeId, NodeIdentity};
use crate::pow::PowParams;
use crate::wire::{DecodeError, Reader, Writer};

/// The Noise protocol name for links.
pub const LINK_NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Prefix of the Noise prologue; the driver's channel binding follows.
pub const LINK_PROLOGUE_PREFIX: &[u8] = b"veil link v1\0";
/// Most descriptors in one pull-reply cell.
/// (Descriptors are packed by their actual size, each after a one-byte
/// mark; the smallest encoding is 149 bytes, which bounds the count a
/// decoder accepts.)
pub const MAX_DESCRIPTORS_PER_CELL: usize = (MAX_LINK_PAYLOAD - 8 - 1) / (1 + MIN_DESCRIPTOR_BYTES);
/// The shortest encoded descriptor (no address, no extensions).
pub const MIN_DESCRIPTOR_BYTES: usize = 2 + 72 + 1 + 8 + 2 + 64;

/// Freshness and admission rules for descriptors seen in handshakes and
/// gossip.
#[derive(Debug, Clone, Copy)]
pub struct CheckParams {
    /// Current time, Unix milliseconds.
    pub now_ms: u64,
    /// Oldest acceptable descriptor.
    pub max_age_ms: u64,
    /// The network's proof-of-work difficulty.
    pub pow: PowParams,
}

/// Why a handshake failed. All but `Local` are the peer's fault (or a man
/// in the middle's).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Noise rejected a message: wrong prologue (spliced connection), bad
    /// key, or garbage.
    #[error("noise handshake failed: {0}")]
    Noise(String),
    /// The peer's descriptor is invalid.
    #[error("peer descriptor refused: {0}")]
    Descriptor(#[from] DescriptorError),
    /// The descriptor's key is not the key the peer authenticated with.
    #[error("descriptor key does not match the authenticated Noise key")]
    KeyMismatch,
    /// We dialled a known id and reached someone else.
    #[error("expected node {expected}, reached {got}")]
    WrongPeer {
        /// Whom we meant to reach.
        expected: NodeId,
        /// Who answered.
        got: NodeId,
    },
    /// A message that does not belong to this point of the handshake.
    #[error("unexpected message during the handshake")]
    Unexpected,
    /// A local failure (building Noise state); not the peer's fault.
    #[error("local handshake setup failed: {0}")]
    Local(String),
}

/// A snow resolver with the default primitives and a deterministic RNG
/// seeded by the caller (core never asks the OS for randomness).
struct SeededResolver {
    seed: [u8; 32],
}

struct XofRng(blake3::OutputReader);

impl Random for XofRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let mut h = blake3::Hasher::new_derive_key("veil 2025 noise rng v1");
        h.update(&self.seed);
        Some(Box::new(XofRng(h.finalize_xof())))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Build a snow handshake state for `pattern` with veil's primitives and a
/// deterministic RNG seeded by the caller (used by links, circuit hops, and
/// the fuzz harness that plays a genuine initiator).
pub fn noise_builder_state(
    pattern: &str,
    seed: [u8; 32],
    local_private: Option<&[u8]>,
    remote_public: Option<&[u8]>,
    prologue: &[u8],
    initiator: bool,
) -> Result<snow::HandshakeState, HandshakeError> {
    let local = |e: snow::Error| HandshakeError::Local(e.to_string());
    let params = pattern.parse().map_err(local)?;
    let mut b = snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }));
    if let Some(k) = local_private {
        b = b.local_private_key(k).map_err(local)?;
    }
    if let Some(k) = remote_public {
        b = b.remote_public_key(k).map_err(local)?;
    }
    b = b.prologue(prologue).map_err(local)?;
    if initiator {
        b.build_initiator().map_err(local)
    } else {
        b.build_responder().map_err(local)
    }
}

/// Which side of the link we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We dialled.
    Initiator,
    /// They dialled us.
    Responder,
}

/// What the handshake wants next.
#[derive(Debug)]
pub enum HandshakeStep {
    /// Send this cell and wait for the next one.
    Continue(Cell),
    /// The link is authenticated. Send `last` if present.
    Done {
        /// The peer's verified descriptor.
        peer: Box<Descriptor>,
        /// A final cell to send (the initiator's message 3).
        last: Option<Cell>,
    },
}

/// A link handshake in progress (either side).
pub struct LinkHandshake {
    noise: snow::HandshakeState,
    side: Side,
    expected: Option<NodeId>,
    own_descriptor: Vec<u8>,
    messages_read: u8,
}

impl std::fmt::Debug for LinkHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandshake")
            .field("side", &self.side)
            .field("expected", &self.expected)
            .field("messages_read", &self.messages_read)
            .finish_non_exhaustive()
    }
}

impl LinkHandshake {
    /// Start a handshake. The initiator gets its first cell to send.
    /// `binding` is the transport's channel-binding value; `seed` feeds the
    /// ephemeral key.
    pub fn start(
        identity: &NodeIdentity,
        own_descriptor: &Descriptor,
        side: Side,
        expected: Option<NodeId>,
        binding: &[u8; 32],
        seed: [u8; 32],
    ) -> Result<(LinkHandshake, Option<Cell>), HandshakeError> {
        let mut prologue = LINK_PROLOGUE_PREFIX.to_vec();
        prologue.extend_from_slice(binding);
        let secret = identity.x25519_secret().to_bytes();
        let noise = noise_builder_state(
            LINK_NOISE_PARAMS,
            seed,
            Some(&secret),
            None,
            &prologue,
            side == Side::Initiator,
        )?;
        let mut hs = LinkHandshake {
            noise,
            side,
            expected,
            own_descriptor: own_descriptor.to_bytes(),
            messages_read: 0,
        };
        let first = match side {
            Side::Initiator => Some(hs.write(&[])?),
            Side::Responder => None,
        };
        Ok((hs, first))
    }

    /// Which side we are.
    pub fn side(&self) -> Side {
        self.side
    }

    fn write(&mut self, payload: &[u8]) -> Result<Cell, HandshakeError> {
        let mut buf = vec![0u8; MAX_LINK_PAYLOAD];
        let n = self
            .noise
            .write_message(payload, &mut buf)
            .map_err(|e| HandshakeError::Local(e.to_string()))?;
        Cell::link(command::HANDSHAKE, &buf[..n])
            .ok_or_else(|| HandshakeError::Local("handshake message too large".into()))
    }

    /// Handle the peer's next handshake cell.
    pub fn read(
        mut self,
        cell: &Cell,
        check: CheckParams,
    ) -> Result<(LinkHandshake, HandshakeStep), HandshakeError> {
        if cell.circ_id() != 0 || cell.command() != command::HANDSHAKE {
            return Err(HandshakeError::Unexpected);
        }
        let msg = cell
            .link_payload()
            .map_err(|_| HandshakeError::Unexpected)?;
        let mut payload = vec![0u8; MAX_LINK_PAYLOAD];
        let n = self
            .noise
            .read_message(msg, &mut payload)
            .map_err(|e| HandshakeError::Noise(e.to_string()))?;
        self.messages_read += 1;
        match (self.side, self.messages_read) {
            // Responder got message 1 (no payload): answer with our descriptor.
            (Side::Responder, 1) => {
                if n != 0 {
                    return Err(HandshakeError::Unexpected);
                }
                let own = std::mem::take(&mut self.own_descriptor);
                let c = self.write(&own)?;
                Ok((self, HandshakeStep::Continue(c)))
            }
            // Initiator got message 2: verify the responder, send message 3.
            (Side::Initiator, 1) => {
                let peer = self.verify_peer(&payload[..n], check)?;
                let own = std::mem::take(&mut self.own_descriptor);
                let last = self.write(&own)?;
                Ok((
                    self,
                    HandshakeStep::Done {
                        peer: Box::new(peer),
                        last: Some(last),
                    },
                ))
            }
            // Responder got message 3: verify the initiator.
            (Side::Responder, 2) => {
                let peer = self.verify_peer(&payload[..n], check)?;
                Ok((
                    self,
                    HandshakeStep::Done {
                        peer: Box::new(peer),
                        last: None,
                    },
                ))
            }
            _ => Err(HandshakeError::Unexpected),
        }
    }

    fn verify_peer(
        &self,
        payload: &[u8],
        check: CheckParams,
    ) -> Result<Descriptor, HandshakeError> {
        let d = Descriptor::decode(payload)
            .map_err(DescriptorError::from)?
            .check(check.now_ms, check.max_age_ms, check.pow)?;
        let remote = self
            .noise
            .get_remote_static()
            .ok_or(HandshakeError::Unexpected)?;
        if remote != d.public().x25519.as_bytes() {
            return Err(HandshakeError::KeyMismatch);
        }
        if let Some(expected) = self.expected
            && expected != d.node_id()
        {
            return Err(HandshakeError::WrongPeer {
                expected,
                got: d.node_id(),
            });
        }
        Ok(d)
    }
}

/// Messages on an established link (circuit id 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMsg {
    /// Ignored.
    Padding,
    /// The sender pushes its own, current descriptor.
    Push(UncheckedDescriptor),
    /// Ask for the receiver's view.
    PullRequest {
        /// Echoed in the reply.
        nonce: u64,
    },
    /// Part of the answer to a pull request.
    PullReply {
        /// The request's nonce.
        nonce: u64,
        /// Descriptors, unchecked, each with whether the sender checked
        /// its signature (it vouches for it). Receivers trust neither: a
        /// descriptor is checked before use whatever the mark says; a
        /// vouched one that fails blames the sender.
        descriptors: Vec<(UncheckedDescriptor, bool)>,
    },
    /// A search walk step ([`crate::search::Walk`], undecoded).
    Walk(Vec<u8>),
    /// A sealed search answer going back ([`crate::search::WalkReply`],
    /// undecoded).
    WalkReply(Vec<u8>),
}

impl LinkMsg {
    /// Parse a link-level cell. Handshake cells are not link messages.
    pub fn decode(cell: &Cell) -> Result<LinkMsg, DecodeError> {
        if cell.circ_id() != 0 {
            return Err(DecodeError::BadValue {
                field: "link message",
                reason: "circuit cell",
            });
        }
        let payload = cell.link_payload()?;
        let mut r = Reader::new(payload);
        let msg = match cell.command() {
            command::PADDING => return Ok(LinkMsg::Padding),
            command::PUSH => LinkMsg::Push(Descriptor::decode_from(&mut r)?),
            command::PULL_REQUEST => LinkMsg::PullRequest {
                nonce: r.get_u64()?,
            },
            command::PULL_REPLY => {
                let nonce = r.get_u64()?;
                let count = r.get_u8()? as usize;
                if count > MAX_DESCRIPTORS_PER_CELL {
                    return Err(DecodeError::TooLong {
                        field: "pull reply",
                        len: count,
                        max: MAX_DESCRIPTORS_PER_CELL,
                    });
                }
                let mut descriptors = Vec::with_capacity(count);
                for _ in 0..count {
                    let vouched = match r.get_u8()? {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(DecodeError::BadValue {
                                field: "pull reply mark",
                                reason: "not 0 or 1",
                            });
                        }
                    };
                    descriptors.push((Descriptor::decode_from(&mut r)?, vouched));
                }
                LinkMsg::PullReply { nonce, descriptors }
            }
            command::WALK => return Ok(LinkMsg::Walk(payload.to_vec())),
            command::WALK_REPLY => return Ok(LinkMsg::WalkReply(payload.to_vec())),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Encode a push of our own descriptor.
    pub fn push(descriptor: &Descriptor) -> Cell {
        let bytes = descriptor.to_bytes();
        Cell::link(command::PUSH, &bytes).unwrap_or_else(|| Cell::new(0, command::PADDING))
    }

    /// Encode a search walk step or reply (`command` is
    /// [`command::WALK`] or [`command::WALK_REPLY`]); None if too long.
    pub fn search(command: u8, payload: &[u8]) -> Option<Cell> {
        Cell::link(command, payload)
    }

    /// Encode a pull request.
    pub fn pull_request(nonce: u64) -> Cell {
        Cell::link(command::PULL_REQUEST, &nonce.to_be_bytes())
            .unwrap_or_else(|| Cell::new(0, command::PADDING))
    }

    /// Encode a pull reply as as many cells as needed: descriptors, each
    /// with whether we checked its signature.
    pub fn pull_reply(nonce: u64, descriptors: &[(Admitted, bool)]) -> Vec<Cell> {
        // Pack as many whole descriptors per cell as fit.
        let mut cells = Vec::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut used = 8 + 1;
        let flush = |batch: &mut Vec<Vec<u8>>, cells: &mut Vec<Cell>| {
            let mut w = Writer::with_capacity(MAX_LINK_PAYLOAD);
            w.put_u64(nonce);
            w.put_u8(batch.len() as u8);
            for d in batch.iter() {
                w.put_bytes(d);
            }
            if let Some(c) = Cell::link(command::PULL_REPLY, w.as_slice()) {
                cells.push(c);
            }
            batch.clear();
        };
        for (d, vouched) in descriptors {
            let mut w = Writer::new();
            w.put_u8(u8::from(*vouched));
            d.encode(&mut w);
            let bytes = w.into_vec();
            if !batch.is_empty()
                && (used + bytes.len() > MAX_LINK_PAYLOAD
                    || batch.len() >= MAX_DESCRIPTORS_PER_CELL)
            {
                flush(&mut batch, &mut cells);
                used = 8 + 1;
            }
            used += bytes.len();
            batch.push(bytes);
        }
        if !batch.is_empty() || cells.is_empty() {
            flush(&mut batch, &mut cells);
        }
        cells
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::descriptor::flags;
    use ed25519_dalek::SigningKey;
    use x25519_dalek::StaticSecret;

    pub(crate) const NOW: u64 = 1_800_000_000_000;

    /// A relay identity and its descriptor at `NOW`, from one seed byte
    /// (shared by the link and circuit tests).
    pub(crate) fn node(seed: u8) -> (NodeIdentity, Descriptor) {
        let id = NodeIdentity::from_keys(
            SigningKey::from_bytes(&[seed; 32]),
            StaticSecret::from([seed ^ 0x55; 32]),
            PowParams::TESTNET,
        );
        let addr = format!("127.{seed}.0.1:4433").parse().unwrap();
        let d = Descriptor::sign(&id, flags::RELAY, Some(addr), NOW, vec![]);
        (id, d)
    }

    fn check() -> CheckParams {
        CheckParams {
            now_ms: NOW,
            max_age_ms: 3_600_000,
            pow: PowParams::TESTNET,
        }
    }

    /// Run a full handshake; returns what each side concluded.
    fn run(
        a_binding: [u8; 32],
        b_binding: [u8; 32],
        expected: Option<NodeId>,
    ) -> (
        Result<Descriptor, HandshakeError>,
        Result<Descriptor, HandshakeError>,
    ) {
        let (ia, da) = node(1);
        let (ib, db) = node(2);
        let (a, m1) =
            LinkHandshake::start(&ia, &da, Side::Initiator, expected, &a_binding, [1; 32]).unwrap();
        let (b, none) =
            LinkHandshake::start(&ib, &db, Side::Responder, None, &b_binding, [2; 32]).unwrap();
        assert!(none.is_none());
        let (b, step) = b.read(&m1.unwrap(), check()).unwrap();
        let HandshakeStep::Continue(m2) = step else {
            panic!("responder should continue")
        };
        let (_a, step) = match a.read(&m2, check()) {
            Ok(x) => x,
            Err(e) => return (Err(e), Err(HandshakeError::Unexpected)),
        };
        let HandshakeStep::Done { peer: a_saw, last } = step else {
            panic!()
        };
        let b_saw = match b.read(&last.unwrap(), check()) {
            Ok((_, HandshakeStep::Done { peer, .. })) => Ok(*peer),
            Ok(_) => Err(HandshakeError::Unexpected),
            Err(e) => Err(e),
        };
        (Ok(*a_saw), b_saw)
    }

    #[test]
    fn handshake_authenticates_both_sides() {
        let (a, b) = run([9; 32], [9; 32], Some(node(2).1.node_id()));
        assert_eq!(a.unwrap().node_id(), node(2).1.node_id());
        assert_eq!(b.unwrap().node_id(), node(1).1.node_id());
    }

    #[test]
    fn spliced_connection_fails() {
        // A man in the middle terminates two transport connections: the two
        // sides see different channel bindings.
        let (a, _) = run([9; 32], [8; 32], None);
        assert!(matches!(a, Err(HandshakeError::Noise(_))), "{a:?}");
    }

    #[test]
    fn wrong_expected_id_fails() {
        let (a, _) = run([9; 32], [9; 32], Some(node(3).1.node_id()));
        assert!(matches!(a, Err(HandshakeError::WrongPeer { .. })), "{a:?}");
    }

    #[test]
    fn descriptor_of_another_key_is_refused() {
        // B presents A's descriptor (valid, but not B's key).
        let (ia, da) = node(1);
        let (ib, _) = node(2);
        let (other, _) = node(3);
        let stolen = Descriptor::sign(
            &other,
            flags::RELAY,
            Some("127.3.0.1:1".parse().unwrap()),
            NOW,
            vec![],
        );
        let (a, m1) =
            LinkHandshake::start(&ia, &da, Side::Initiator, None, &[0; 32], [1; 32]).unwrap();
        let (b, _) =
            LinkHandshake::start(&ib, &stolen, Side::Responder, None, &[0; 32], [2; 32]).unwrap();
        let (_, HandshakeStep::Continue(m2)) = b.read(&m1.unwrap(), check()).unwrap() else {
            panic!()
        };
        assert_eq!(
            a.read(&m2, check()).unwrap_err(),
            HandshakeError::KeyMismatch
        );
    }

    #[test]
    fn link_messages_round_trip() {
        let (_, d) = node(4);
        let push = LinkMsg::decode(&LinkMsg::push(&d)).unwrap();
        let LinkMsg::Push(u) = push else { panic!() };
        assert_eq!(u.check(NOW, 1000, PowParams::TESTNET).unwrap(), d);
        assert_eq!(
            LinkMsg::decode(&LinkMsg::pull_request(77)).unwrap(),
            LinkMsg::PullRequest { nonce: 77 }
        );
        let many: Vec<Descriptor> = (1..=40).map(|i| node(i).1).collect();
        let admitted: Vec<(Admitted, bool)> = many
            .iter()
            .enumerate()
            .map(|(i, d)| (d.admitted(), i % 2 == 0))
            .collect();
        let cells = LinkMsg::pull_reply(5, &admitted);
        assert!(cells.len() > 1);
        let mut got = Vec::new();
        for c in &cells {
            let LinkMsg::PullReply { nonce, descriptors } = LinkMsg::decode(c).unwrap() else {
                panic!()
            };
            assert_eq!(nonce, 5);
            for (u, vouched) in descriptors {
                assert_eq!(vouched, got.len() % 2 == 0);
                got.push(u.check(NOW, 1000, PowParams::TESTNET).unwrap());
            }
        }
        assert_eq!(got, many);
        assert_eq!(LinkMsg::pull_reply(1, &[]).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(cmd in 0u8..8, body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut c = Cell::new(0, cmd);
            let n = body.len().min(c.body().len());
            c.body_mut()[..n].copy_from_slice(&body[..n]);
            let _ = LinkMsg::decode(&c);
        }
    }
}
