//! Rendezvous: how a downloader and a sharer meet without either learning
//! the other's address, and the end-to-end channel they then share.
//!
//! # Parties and keys
//!
//! A sharer runs a *service*: a [`ServiceKey`], made of a PoW-admitted
//! ed25519 pseudonym (it signs the service's registrations and, later, its
//! provider records) and an x25519 key (the static key of the end-to-end
//! handshake). Both are drawn fresh and at random: nothing links them to the
//! node's keys or to the pseudonym that signs the sharer's content records.
//! [`ServicePublic`] is what a downloader needs: the pseudonym's public key
//! and proof, and the x25519 public key.
//!
//! # Messages
//!
//! Every message here travels inside one relay cell between a circuit's
//! client and the circuit's last hop ([`ToHop`] forward, [`FromHop`]
//! backward), so each is sealed by the circuit's onion layers on the way:
//!
//! 1. The sharer builds circuits and asks each last hop to be an
//!    *introduction point*: [`ToHop::EstablishIntro`], signed by the
//!    service pseudonym over the introduction point's node id (so a hostile
//!    introduction point cannot replay it at another node).
//! 2. The downloader picks a *rendezvous point* (the last hop of a circuit of
//!    its own), and leaves a random cookie there:
//!    [`ToHop::EstablishRendezvous`].
//! 3. Through another circuit, ending at an introduction point, it sends
//!    [`ToHop::Introduce`]: the service id and msg1 of a Noise NK handshake
//!    to the service's x25519 key, with a client puzzle's effort and nonce
//!    in clear. The msg1 payload, encrypted under the `es` DH, carries the
//!    rendezvous point's descriptor and the cookie: the introduction point
//!    learns neither ([`Introduction`]).
//! 4. The introduction point checks the puzzle against the effort the
//!    service asked of it ([`ToHop::SetEffort`]; too little work is
//!    answered [`IntroStatus::NeedEffort`]), and passes msg1 and the puzzle
//!    down the service's circuit ([`FromHop::Introduction`]). The sharer
//!    checks the puzzle again, opens msg1 with the service key, builds a
//!    circuit to the rendezvous point and sends [`ToHop::Join`]: the cookie
//!    and msg2.
//! 5. The rendezvous point splices the two circuits and passes msg2 to the
//!    downloader ([`FromHop::Joined`]). From then on it forwards relay data
//!    and flow-control messages between the two circuits, unread.
//!
//! # The end-to-end channel
//!
//! [`Session`] is the Noise transport state after NK: ChaCha20-Poly1305
//! with keys from the Noise split, i.e. from the `es` and `ee` DH outputs.
//! Only the two ends hold them; `ee` gives forward secrecy (once both
//! ephemerals are gone, not even the service key opens recorded traffic).
//! The handshake hash is never used as key material. Messages are in
//! order (circuits are), so Noise's implicit counter nonce is sound; a
//! message that does not open ends the session.
//!
//! # The client puzzle
//!
//! An introduction costs the service a circuit build, so under load it
//! costs the introducer work first (after Tor's proposal 327): a nonce such
//! that `BLAKE3-derive_key(ctx, puzzle_subject(service, msg1) || nonce)`
//! has at least `effort` leading zero bits ([`PowDomain::Introduce`]).
//! The subject hashes the service id and the sealed msg1, so one solution
//! buys exactly one introduction to one service: it cannot be moved to
//! another msg1 (each carries a fresh ephemeral key and cookie) and a
//! replayed msg1 is caught by the replay caches of point and service.
//! Checking is two hashes, the subject and the puzzle ([`check_puzzle`]);
//! at effort 0 it is free.
//!
//! Tests taking each party's view: `introduction_point_cannot_open_the_introduction`,
//! `rendezvous_point_cannot_open_the_channel`,
//! `session_keys_do_not_come_from_the_transcript`.

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use rand_core::CryptoRngCore;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::descriptor::MAX_DESCRIPTOR_BYTES;
use crate::identity::{NodeId, Pseudonym, PublisherId, PublisherKey};
use crate::link::noise_builder_state;
use crate::pow::{self, Pow, PowDomain, PowParams};
use crate::wire::{DecodeError, EncodeError, Reader, Writer};

/// Noise protocol of the end-to-end handshake.
pub const SESSION_NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
/// Prologue of the end-to-end handshake.
pub const SESSION_PROLOGUE: &[u8] = b"veil rendezvous session v1\0";
/// Domain of the introduction point registration signature.
pub const ESTABLISH_INTRO_CONTEXT: &[u8] = b"veil 2026 establish intro v1\0";
/// Bytes in a rendezvous cookie.
pub const COOKIE_BYTES: usize = 32;
/// Noise AEAD tag bytes added to every transport message.
pub const TAG_BYTES: usize = 16;
/// Largest end-to-end message: one circuit data message minus the tag.
pub const MAX_SESSION_PLAINTEXT: usize = crate::circuit::MAX_DATA_BYTES - TAG_BYTES;
/// Bytes of an encoded [`Introduction`]: always the same, whatever the
/// rendezvous descriptor's size (padded), so msg1's length says nothing.
pub const INTRODUCTION_BYTES: usize = 2 + MAX_DESCRIPTOR_BYTES + COOKIE_BYTES + 8;
/// Length of msg1 (ephemeral key, the encrypted introduction and its tag).
pub const MAX_INTRODUCE_BYTES: usize = 32 + INTRODUCTION_BYTES + TAG_BYTES;
/// Length of msg2: the sharer's ephemeral key and an empty payload's tag.
pub const JOIN_HANDSHAKE_BYTES: usize = 32 + TAG_BYTES;
/// Bytes of a client puzzle in clear: the effort claimed (bits) and the
/// nonce.
pub const PUZZLE_BYTES: usize = 1 + 8;
/// Largest effort (leading zero bits) any message may carry: far above
/// anything a service asks (`RendezvousParams::max_effort`), so a larger
/// value is malformed.
pub const MAX_EFFORT: u8 = 32;
/// Domain of the puzzle subject (the service id and msg1, hashed).
pub const PUZZLE_SUBJECT_CONTEXT: &str = "veil 2026 introduce puzzle subject v1";
/// Bytes of every encoded [`ToHop::Introduce`], whatever its effort.
pub const INTRODUCE_MSG_BYTES: usize = 1 + 32 + PUZZLE_BYTES + 2 + MAX_INTRODUCE_BYTES;
/// Bytes of every encoded [`FromHop::IntroduceAck`], whatever its status.
pub const INTRODUCE_ACK_BYTES: usize = 3;
/// Largest encoded [`ToHop`].
pub const MAX_RENDEZVOUS_MSG_BYTES: usize = INTRODUCE_MSG_BYTES;

const _: () = assert!(MAX_RENDEZVOUS_MSG_BYTES <= crate::circuit::MAX_DATA_BYTES);

/// A service's keys (the sharer's side). Holds secrets; never logged.
pub struct ServiceKey {
    pseudonym: Pseudonym,
    x25519: x25519_dalek::StaticSecret,
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl ServiceKey {
    /// Fresh random keys, with a proof of work at `params` for the
    /// pseudonym.
    pub fn generate(rng: &mut impl CryptoRngCore, params: PowParams) -> ServiceKey {
        let pseudonym = Pseudonym::generate(rng, params);
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *seed);
        ServiceKey {
            pseudonym,
            x25519: x25519_dalek::StaticSecret::from(*seed),
        }
    }

    /// What downloaders need to reach this service.
    pub fn public(&self) -> ServicePublic {
        ServicePublic {
            key: self.pseudonym.publisher(),
            x25519: x25519_dalek::PublicKey::from(&self.x25519).to_bytes(),
        }
    }

    /// The service id (the pseudonym's publisher id).
    pub fn id(&self) -> PublisherId {
        self.pseudonym.publisher().id()
    }

    /// The registration for introduction point `intro`.
    pub fn establish_intro(&self, intro: NodeId) -> ToHop {
        let key = self.pseudonym.publisher();
        let signature = self
            .pseudonym
            .signing_key()
            .sign(&intro_message(intro, &key));
        ToHop::EstablishIntro(Box::new(Registration { key, signature }))
    }

    /// Signs `message` with the service pseudonym (provider records).
    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.pseudonym.signing_key().sign(message)
    }

    /// The key file: the pseudonym's, then the x25519 secret. Holds
    /// secrets: zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = self.pseudonym.to_bytes();
        out.extend_from_slice(self.x25519.as_bytes());
        out
    }

    /// Loads a key file made by [`ServiceKey::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<ServiceKey, crate::identity::KeyFileError> {
        let split = b.len().checked_sub(32).ok_or(DecodeError::Truncated {
            needed: 32,
            remaining: b.len(),
        })?;
        let pseudonym = Pseudonym::from_bytes(&b[..split])?;
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&b[split..]);
        Ok(ServiceKey {
            pseudonym,
            x25519: x25519_dalek::StaticSecret::from(*x),
        })
    }
}

/// A service as downloaders know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePublic {
    /// The service pseudonym (signs registrations and provider records).
    pub key: PublisherKey,
    /// The static key of the end-to-end handshake.
    pub x25519: [u8; 32],
}

impl ServicePublic {
    /// The service id.
    pub fn id(&self) -> PublisherId {
        self.key.id()
    }
}

fn intro_message(intro: NodeId, key: &PublisherKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(ESTABLISH_INTRO_CONTEXT.len() + 64);
    m.extend_from_slice(ESTABLISH_INTRO_CONTEXT);
    m.extend_from_slice(intro.as_bytes());
    m.extend_from_slice(key.key.as_bytes());
    m
}

/// Checks a registration at introduction point `me`: the signature (strict)
/// and the pseudonym's proof of work.
pub fn check_establish_intro(
    me: NodeId,
    reg: &Registration,
    pow: PowParams,
) -> Result<PublisherId, RendezvousError> {
    let key = &reg.key;
    key.check_pow(pow).map_err(|_| RendezvousError::BadProof)?;
    key.key
        .verify_strict(&intro_message(me, key), &reg.signature)
        .map_err(|_| RendezvousError::BadSignature)?;
    Ok(key.id())
}

/// The puzzle subject of an introduction: the service id and msg1, hashed
/// under [`PUZZLE_SUBJECT_CONTEXT`]. msg1 has one length
/// ([`MAX_INTRODUCE_BYTES`]) and the id 32 bytes, so the concatenation is
/// unambiguous.
pub fn puzzle_subject(service: &PublisherId, msg1: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(PUZZLE_SUBJECT_CONTEXT);
    h.update(service.as_bytes());
    h.update(msg1);
    *h.finalize().as_bytes()
}

/// A client puzzle as an introduction carries it, in clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Puzzle {
    /// Leading zero bits claimed (at most [`MAX_EFFORT`]).
    pub effort: u8,
    /// The nonce.
    pub nonce: u64,
}

/// Why a puzzle does not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PuzzleError {
    /// The claim is below what is required.
    #[error("introduction puzzle claims {claimed} bits, {required} required")]
    TooLittle {
        /// Bits claimed.
        claimed: u8,
        /// Bits required.
        required: u8,
    },
    /// The nonce does not do the work it claims (a peer fault).
    #[error("introduction puzzle does not do the work it claims")]
    False,
}

/// Checks the puzzle of an introduction of msg1 to `service` against
/// `required` bits: the claim first (no hash), then the subject and the
/// puzzle hash (none at all when the claim is 0).
pub fn check_puzzle(
    service: &PublisherId,
    msg1: &[u8],
    puzzle: Puzzle,
    required: u8,
) -> Result<(), PuzzleError> {
    if puzzle.effort < required {
        return Err(PuzzleError::TooLittle {
            claimed: puzzle.effort,
            required,
        });
    }
    if puzzle.effort == 0 {
        return Ok(());
    }
    pow::verify(
        PowDomain::Introduce,
        &puzzle_subject(service, msg1),
        Pow {
            nonce: puzzle.nonce,
        },
        PowParams {
            difficulty_bits: puzzle.effort,
        },
    )
    .map_err(|_| PuzzleError::False)
}

/// Tries at most `attempts` nonces from `start` for a puzzle of `effort`
/// bits over `subject` ([`puzzle_subject`]); the caller spreads a search
/// over several calls.
pub fn solve_puzzle(subject: &[u8; 32], effort: u8, start: u64, attempts: u64) -> Option<Puzzle> {
    pow::solve_bounded(
        PowDomain::Introduce,
        subject,
        PowParams {
            difficulty_bits: effort,
        },
        start,
        attempts,
    )
    .map(|p| Puzzle {
        effort,
        nonce: p.nonce,
    })
}

/// Errors of the rendezvous protocol. All are the sender's fault except
/// [`RendezvousError::Local`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RendezvousError {
    /// A registration's signature does not verify.
    #[error("introduction point registration: bad signature")]
    BadSignature,
    /// A pseudonym's proof of work does not admit it.
    #[error("service key: proof of work does not admit it")]
    BadProof,
    /// A handshake message did not authenticate or is malformed.
    #[error("end-to-end handshake failed: {0}")]
    Handshake(String),
    /// The decrypted introduction is malformed.
    #[error("malformed introduction: {0}")]
    Malformed(#[from] DecodeError),
    /// A transport message did not open (altered, reordered or replayed).
    #[error("end-to-end message did not authenticate")]
    Open,
    /// A message is too long to seal.
    #[error("message of {0} bytes is too long for the channel")]
    TooLong(usize),
    /// A local failure setting up Noise.
    #[error("local rendezvous failure: {0}")]
    Local(String),
}

/// A service's request to an introduction point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The service pseudonym.
    pub key: PublisherKey,
    /// Over [`ESTABLISH_INTRO_CONTEXT`], the introduction point's node id
    /// and the key.
    pub signature: Signature,
}

/// Client → last hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToHop {
    /// Be an introduction point for this service.
    EstablishIntro(Box<Registration>),
    /// Pass this introduction to the service.
    Introduce {
        /// The service id.
        service: PublisherId,
        /// The client puzzle over the service id and `handshake`.
        puzzle: Puzzle,
        /// Noise NK msg1 (carries the sealed [`Introduction`]).
        handshake: Vec<u8>,
    },
    /// From the service on its introduction circuit: refuse introductions
    /// with less work than this from now on.
    SetEffort {
        /// Leading zero bits required (at most [`MAX_EFFORT`]).
        effort: u8,
    },
    /// Be a rendezvous point for this cookie.
    EstablishRendezvous {
        /// Random, from the downloader.
        cookie: [u8; COOKIE_BYTES],
    },
    /// Join the circuit that left this cookie.
    Join {
        /// The downloader's cookie.
        cookie: [u8; COOKIE_BYTES],
        /// Noise NK msg2.
        handshake: Vec<u8>,
    },
}

/// Last hop → client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromHop {
    /// The introduction point registration is in place.
    IntroEstablished,
    /// What became of an introduction.
    IntroduceAck {
        /// The outcome.
        status: IntroStatus,
    },
    /// An introduction for our service.
    Introduction {
        /// The introducer's puzzle, as it came.
        puzzle: Puzzle,
        /// Noise NK msg1.
        handshake: Vec<u8>,
    },
    /// To the service: introductions refused for too little work since
    /// the last such report (so the service knows its price still keeps a
    /// flood out).
    IntroLoad {
        /// How many.
        refused: u32,
    },
    /// The rendezvous cookie is in place.
    RendezvousEstablished,
    /// The service joined: its msg2. The circuits are spliced.
    Joined {
        /// Noise NK msg2.
        handshake: Vec<u8>,
    },
    /// To the joining service: whether the join found its cookie and the
    /// circuits are spliced.
    JoinAck {
        /// Spliced.
        joined: bool,
    },
}

/// The introduction point's answer to an introduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntroStatus {
    /// Passed to the service.
    Delivered,
    /// No such service registered here.
    UnknownService,
    /// The service's introduction rate is spent; try later.
    RateLimited,
    /// The puzzle does less than this many bits of work, the service's
    /// current price (1 to [`MAX_EFFORT`]).
    NeedEffort(u8),
}

impl IntroStatus {
    /// The status byte and the effort byte (0 but for `NeedEffort`), so
    /// every acknowledgement has one length.
    fn to_bytes(self) -> [u8; 2] {
        match self {
            IntroStatus::Delivered => [0, 0],
            IntroStatus::UnknownService => [1, 0],
            IntroStatus::RateLimited => [2, 0],
            IntroStatus::NeedEffort(e) => [3, e],
        }
    }

    fn from_bytes(status: u8, effort: u8) -> Result<IntroStatus, DecodeError> {
        let bad = |reason| DecodeError::BadValue {
            field: "introduce ack",
            reason,
        };
        match (status, effort) {
            (0, 0) => Ok(IntroStatus::Delivered),
            (1, 0) => Ok(IntroStatus::UnknownService),
            (2, 0) => Ok(IntroStatus::RateLimited),
            (0..=2, _) => Err(bad("an effort with a status that takes none")),
            (3, 1..=MAX_EFFORT) => Ok(IntroStatus::NeedEffort(effort)),
            (3, _) => Err(bad("effort out of range")),
            _ => Err(bad("unknown status")),
        }
    }
}

mod tag {
    pub const ESTABLISH_INTRO: u8 = 1;
    pub const INTRODUCE: u8 = 2;
    pub const ESTABLISH_RENDEZVOUS: u8 = 3;
    pub const JOIN: u8 = 4;
    pub const SET_EFFORT: u8 = 5;
    pub const INTRO_ESTABLISHED: u8 = 65;
    pub const INTRODUCE_ACK: u8 = 66;
    pub const INTRODUCTION: u8 = 67;
    pub const RENDEZVOUS_ESTABLISHED: u8 = 68;
    pub const JOINED: u8 = 69;
    pub const JOIN_ACK: u8 = 70;
    pub const INTRO_LOAD: u8 = 71;
}

fn put_key(w: &mut Writer, key: &PublisherKey) {
    w.put_bytes(key.key.as_bytes());
    w.put_u64(key.pow.nonce);
}

fn get_key(r: &mut Reader<'_>) -> Result<PublisherKey, DecodeError> {
    let key = VerifyingKey::from_bytes(&r.get_array()?).map_err(|_| DecodeError::BadValue {
        field: "service key",
        reason: "not an ed25519 point",
    })?;
    Ok(PublisherKey {
        key,
        pow: Pow {
            nonce: r.get_u64()?,
        },
    })
}

fn get_handshake(r: &mut Reader<'_>, max: usize) -> Result<Vec<u8>, DecodeError> {
    Ok(r.get_bytes_u16len(max, "rendezvous handshake")?.to_vec())
}

fn get_effort(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let e = r.get_u8()?;
    if e > MAX_EFFORT {
        return Err(DecodeError::BadValue {
            field: "puzzle effort",
            reason: "above the protocol maximum",
        });
    }
    Ok(e)
}

fn effort_bound(e: u8) -> Result<(), EncodeError> {
    if e > MAX_EFFORT {
        return Err(EncodeError {
            len: usize::from(e),
            max: usize::from(MAX_EFFORT),
        });
    }
    Ok(())
}

fn put_puzzle(w: &mut Writer, p: &Puzzle) -> Result<(), EncodeError> {
    effort_bound(p.effort)?;
    w.put_u8(p.effort);
    w.put_u64(p.nonce);
    Ok(())
}

fn get_puzzle(r: &mut Reader<'_>) -> Result<Puzzle, DecodeError> {
    Ok(Puzzle {
        effort: get_effort(r)?,
        nonce: r.get_u64()?,
    })
}

/// msg1 always has one length; anything else is not an introduction.
fn get_msg1(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let m = get_handshake(r, MAX_INTRODUCE_BYTES)?;
    if m.len() != MAX_INTRODUCE_BYTES {
        return Err(DecodeError::BadValue {
            field: "introduction",
            reason: "not the one msg1 length",
        });
    }
    Ok(m)
}

fn msg1_len(handshake: &[u8]) -> Result<(), EncodeError> {
    if handshake.len() != MAX_INTRODUCE_BYTES {
        return Err(EncodeError {
            len: handshake.len(),
            max: MAX_INTRODUCE_BYTES,
        });
    }
    Ok(())
}

impl ToHop {
    /// Encodes the message (at most [`MAX_RENDEZVOUS_MSG_BYTES`]).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::with_capacity(MAX_RENDEZVOUS_MSG_BYTES);
        match self {
            ToHop::EstablishIntro(reg) => {
                w.put_u8(tag::ESTABLISH_INTRO);
                put_key(&mut w, &reg.key);
                w.put_bytes(&reg.signature.to_bytes());
            }
            ToHop::Introduce {
                service,
                puzzle,
                handshake,
            } => {
                msg1_len(handshake)?;
                w.put_u8(tag::INTRODUCE);
                w.put_bytes(service.as_bytes());
                put_puzzle(&mut w, puzzle)?;
                w.put_bytes_u16len(handshake)?;
            }
            ToHop::SetEffort { effort } => {
                effort_bound(*effort)?;
                w.put_u8(tag::SET_EFFORT);
                w.put_u8(*effort);
            }
            ToHop::EstablishRendezvous { cookie } => {
                w.put_u8(tag::ESTABLISH_RENDEZVOUS);
                w.put_bytes(cookie);
            }
            ToHop::Join { cookie, handshake } => {
                bounded(handshake, JOIN_HANDSHAKE_BYTES)?;
                w.put_u8(tag::JOIN);
                w.put_bytes(cookie);
                w.put_bytes_u16len(handshake)?;
            }
        }
        Ok(w.into_vec())
    }

    /// Decodes one message; unknown tags, over-long fields and trailing
    /// bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<ToHop, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.get_u8()? {
            tag::ESTABLISH_INTRO => ToHop::EstablishIntro(Box::new(Registration {
                key: get_key(&mut r)?,
                signature: Signature::from_bytes(&r.get_array()?),
            })),
            tag::INTRODUCE => ToHop::Introduce {
                service: PublisherId::from_bytes(r.get_array()?),
                puzzle: get_puzzle(&mut r)?,
                handshake: get_msg1(&mut r)?,
            },
            tag::SET_EFFORT => ToHop::SetEffort {
                effort: get_effort(&mut r)?,
            },
            tag::ESTABLISH_RENDEZVOUS => ToHop::EstablishRendezvous {
                cookie: r.get_array()?,
            },
            tag::JOIN => ToHop::Join {
                cookie: r.get_array()?,
                handshake: get_handshake(&mut r, JOIN_HANDSHAKE_BYTES)?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl FromHop {
    /// Encodes the message.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::with_capacity(MAX_RENDEZVOUS_MSG_BYTES);
        match self {
            FromHop::IntroEstablished => w.put_u8(tag::INTRO_ESTABLISHED),
            FromHop::IntroduceAck { status } => {
                if let IntroStatus::NeedEffort(e) = status {
                    effort_bound(*e)?;
                    if *e == 0 {
                        // No price is not a price: a local misuse.
                        return Err(EncodeError { len: 0, max: 0 });
                    }
                }
                w.put_u8(tag::INTRODUCE_ACK);
                w.put_bytes(&status.to_bytes());
            }
            FromHop::Introduction { puzzle, handshake } => {
                msg1_len(handshake)?;
                w.put_u8(tag::INTRODUCTION);
                put_puzzle(&mut w, puzzle)?;
                w.put_bytes_u16len(handshake)?;
            }
            FromHop::IntroLoad { refused } => {
                w.put_u8(tag::INTRO_LOAD);
                w.put_u32(*refused);
            }
            FromHop::RendezvousEstablished => w.put_u8(tag::RENDEZVOUS_ESTABLISHED),
            FromHop::Joined { handshake } => {
                bounded(handshake, JOIN_HANDSHAKE_BYTES)?;
                w.put_u8(tag::JOINED);
                w.put_bytes_u16len(handshake)?;
            }
            FromHop::JoinAck { joined } => {
                w.put_u8(tag::JOIN_ACK);
                w.put_bool(*joined);
            }
        }
        Ok(w.into_vec())
    }

    /// Decodes one message.
    pub fn decode(bytes: &[u8]) -> Result<FromHop, DecodeError> {
        let mut r = Reader::new(bytes);
        let msg = match r.get_u8()? {
            tag::INTRO_ESTABLISHED => FromHop::IntroEstablished,
            tag::INTRODUCE_ACK => {
                let status = r.get_u8()?;
                let effort = r.get_u8()?;
                FromHop::IntroduceAck {
                    status: IntroStatus::from_bytes(status, effort)?,
                }
            }
            tag::INTRODUCTION => FromHop::Introduction {
                puzzle: get_puzzle(&mut r)?,
                handshake: get_msg1(&mut r)?,
            },
            tag::INTRO_LOAD => FromHop::IntroLoad {
                refused: r.get_u32()?,
            },
            tag::RENDEZVOUS_ESTABLISHED => FromHop::RendezvousEstablished,
            tag::JOINED => FromHop::Joined {
                handshake: get_handshake(&mut r, JOIN_HANDSHAKE_BYTES)?,
            },
            tag::JOIN_ACK => FromHop::JoinAck {
                joined: r.get_bool("join ack")?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn bounded(v: &[u8], max: usize) -> Result<(), EncodeError> {
    if v.len() > max {
        return Err(EncodeError { len: v.len(), max });
    }
    Ok(())
}

/// What the downloader tells the service inside msg1, unreadable to the
/// introduction point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    /// The rendezvous point's signed descriptor (the service checks it
    /// before extending there).
    pub rendezvous: Vec<u8>,
    /// The cookie the downloader left there.
    pub cookie: [u8; COOKIE_BYTES],
    /// When it was made, Unix seconds: a service acts on an introduction
    /// only near this time, and remembers it for that long, so a replay
    /// later is refused.
    pub time_s: u64,
}

impl Introduction {
    /// Encodes, padded to [`INTRODUCTION_BYTES`].
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        bounded(&self.rendezvous, MAX_DESCRIPTOR_BYTES)?;
        let mut w = Writer::with_capacity(INTRODUCTION_BYTES);
        w.put_bytes_u16len(&self.rendezvous)?;
        w.put_bytes(&vec![0; MAX_DESCRIPTOR_BYTES - self.rendezvous.len()]);
        w.put_bytes(&self.cookie);
        w.put_u64(self.time_s);
        Ok(w.into_vec())
    }

    fn decode(bytes: &[u8]) -> Result<Introduction, DecodeError> {
        let mut r = Reader::new(bytes);
        let rendezvous = r
            .get_bytes_u16len(MAX_DESCRIPTOR_BYTES, "rendezvous descriptor")?
            .to_vec();
        let pad = r.get_bytes(MAX_DESCRIPTOR_BYTES - rendezvous.len())?;
        if pad.iter().any(|b| *b != 0) {
            return Err(DecodeError::BadValue {
                field: "introduction padding",
                reason: "not zero",
            });
        }
        let cookie = r.get_array()?;
        let time_s = r.get_u64()?;
        r.finish()?;
        Ok(Introduction {
            rendezvous,
            cookie,
            time_s,
        })
    }
}

fn local(e: impl std::fmt::Display) -> RendezvousError {
    RendezvousError::Local(e.to_string())
}

fn peer(e: snow::Error) -> RendezvousError {
    RendezvousError::Handshake(e.to_string())
}

/// The downloader's half-open session: msg1 is out, msg2 will come from
/// the rendezvous point.
pub struct Introducing {
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for Introducing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Introducing { <redacted> }")
    }
}

impl Introducing {
    /// Starts the handshake with `service`; returns the state and msg1,
    /// which carries `intro` sealed to the service's key.
    pub fn start(
        service: &ServicePublic,
        intro: &Introduction,
        seed: [u8; 32],
    ) -> Result<(Introducing, Vec<u8>), RendezvousError> {
        let mut noise = noise_builder_state(
            SESSION_NOISE_PARAMS,
            seed,
            None,
            Some(&service.x25519),
            SESSION_PROLOGUE,
            true,
        )
        .map_err(local)?;
        let payload = intro.encode().map_err(local)?;
        let mut msg1 = vec![0u8; MAX_INTRODUCE_BYTES];
        let n = noise.write_message(&payload, &mut msg1).map_err(local)?;
        msg1.truncate(n);
        Ok((Introducing { noise }, msg1))
    }

    /// Reads the service's msg2 (from [`FromHop::Joined`]).
    pub fn finish(mut self, msg2: &[u8]) -> Result<Session, RendezvousError> {
        if msg2.len() != JOIN_HANDSHAKE_BYTES {
            return Err(RendezvousError::Handshake(format!(
                "msg2 is {} bytes, expected {JOIN_HANDSHAKE_BYTES}",
                msg2.len()
            )));
        }
        let mut payload = [0u8; JOIN_HANDSHAKE_BYTES];
        let n = self.noise.read_message(msg2, &mut payload).map_err(peer)?;
        if n != 0 {
            return Err(RendezvousError::Handshake("msg2 carries a payload".into()));
        }
        Session::from_handshake(self.noise)
    }
}

/// The service's side: opens an introduction (msg1) with the service key,
/// and returns what it says, msg2 for [`ToHop::Join`], and the session.
pub fn accept(
    service: &ServiceKey,
    msg1: &[u8],
    seed: [u8; 32],
) -> Result<(Introduction, Vec<u8>, Session), RendezvousError> {
    if msg1.len() > MAX_INTRODUCE_BYTES {
        return Err(RendezvousError::Handshake("msg1 too long".into()));
    }
    let secret = Zeroizing::new(service.x25519.to_bytes());
    let mut noise = noise_builder_state(
        SESSION_NOISE_PARAMS,
        seed,
        Some(&secret[..]),
        None,
        SESSION_PROLOGUE,
        false,
    )
    .map_err(local)?;
    let mut payload = Zeroizing::new(vec![0u8; MAX_INTRODUCE_BYTES]);
    let n = noise.read_message(msg1, &mut payload).map_err(peer)?;
    let intro = Introduction::decode(&payload[..n])?;
    let mut msg2 = vec![0u8; JOIN_HANDSHAKE_BYTES];
    let n = noise.write_message(&[], &mut msg2).map_err(local)?;
    msg2.truncate(n);
    Ok((intro, msg2, Session::from_handshake(noise)?))
}

/// The end-to-end channel: Noise transport keys from the split.
pub struct Session {
    transport: snow::TransportState,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session { <redacted> }")
    }
}

impl Session {
    fn from_handshake(noise: snow::HandshakeState) -> Result<Session, RendezvousError> {
        if !noise.is_handshake_finished() {
            return Err(RendezvousError::Local("handshake not finished".into()));
        }
        Ok(Session {
            transport: noise.into_transport_mode().map_err(local)?,
        })
    }

    /// Seals one message (at most [`MAX_SESSION_PLAINTEXT`] bytes).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, RendezvousError> {
        if plaintext.len() > MAX_SESSION_PLAINTEXT {
            return Err(RendezvousError::TooLong(plaintext.len()));
        }
        let mut out = vec![0u8; plaintext.len() + TAG_BYTES];
        let n = self
            .transport
            .write_message(plaintext, &mut out)
            .map_err(local)?;
        out.truncate(n);
        Ok(out)
    }

    /// Opens the next message from the other end. A failure means the
    /// channel was tampered with: end the session.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, RendezvousError> {
        if ciphertext.len() < TAG_BYTES || ciphertext.len() > MAX_SESSION_PLAINTEXT + TAG_BYTES {
            return Err(RendezvousError::Open);
        }
        let mut out = vec![0u8; ciphertext.len()];
        let n = self
            .transport
            .read_message(ciphertext, &mut out)
            .map_err(|_| RendezvousError::Open)?;
        out.truncate(n);
        Ok(out)
    }
}

/// A fresh random cookie.
pub fn cookie(rng: &mut impl CryptoRngCore) -> [u8; COOKIE_BYTES] {
    let mut c = [0u8; COOKIE_BYTES];
    rng.fill_bytes(&mut c);
    c
}

#[cfg(test)]
mod tests;
