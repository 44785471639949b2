//! Fuzz harnesses for veil-core's decoders of peer input.
//!
//! One function per cargo-fuzz target (`fuzz/fuzz_targets/<name>.rs` calls
//! it). The same file is compiled into veil-core's integration test
//! `core/tests/fuzz_corpus.rs` (with `#[path]`), which replays the committed
//! corpus `fuzz/corpus/<name>/` through exactly this code without a fuzzer.
//!
//! Every harness returns `true` when the input was *accepted* (decoded and,
//! where there is a check, passed it), so the replay test can assert that
//! the valid seeds still are. Peer input must never make a decoder panic;
//! beyond that, the harnesses assert a few invariants (canonical encodings
//! round-trip, accepting implies admitting, ...). A failed assertion is a
//! crash like any other.
//!
//! Keep this file free of `std::fs`, clocks and hash maps: it is also linted
//! under core's `clippy.toml`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use veil_core::cell::{CELL_BODY_BYTES, CELL_SIZE, Cell, CellReader, MAX_LINK_PAYLOAD, command};
use veil_core::circuit::{CircuitMsg, ClientHopHandshake, RelayHopHandshake};
use veil_core::content::{self, ContentId, Outboard};
use veil_core::descriptor::{Admitted, Descriptor, MAX_DESCRIPTOR_BYTES, flags};
use veil_core::identity::{NodeIdentity, Pseudonym};
use veil_core::link::{
    CheckParams, HandshakeStep, LINK_NOISE_PARAMS, LINK_PROLOGUE_PREFIX, LinkHandshake, LinkMsg,
    MAX_DESCRIPTORS_PER_CELL, Side, noise_builder_state,
};
use veil_core::onion::{ForwardOutcome, HopKeys, OnionClient, RelayCrypto};
use veil_core::pow::PowParams;
use veil_core::record::{ContentRecord, SignedRecord, Unchecked, keywords_from_name};
use veil_core::rendezvous::{
    self, FromHop, INTRODUCE_ACK_BYTES, INTRODUCE_MSG_BYTES, IntroStatus, Introducing,
    Introduction, JOIN_HANDSHAKE_BYTES, MAX_EFFORT, MAX_INTRODUCE_BYTES, MAX_RENDEZVOUS_MSG_BYTES,
    Puzzle, RendezvousError, SESSION_NOISE_PARAMS, SESSION_PROLOGUE, ServiceKey, TAG_BYTES, ToHop,
    check_establish_intro, check_puzzle, puzzle_subject, solve_puzzle,
};
use veil_core::transfer::{
    self, Bitfield, FRAME_HEADER_BYTES, Framer, MAX_PIECE_ENCODED, MAX_PIECE_MESSAGE, PIECE_BYTES,
    Reassembler, Request, TransferMsg, piece_count, piece_range,
};
use veil_core::wire::Writer;
use x25519_dalek::StaticSecret;

/// "Now" for descriptor checks (Unix ms); seeds are stamped at this time.
pub const NOW_MS: u64 = 1_800_000_000_000;
/// Oldest descriptor accepted.
pub const MAX_AGE_MS: u64 = 24 * 3600 * 1000;
/// "Now" for record checks (Unix seconds); an hour after the record test
/// vector was created.
pub const RECORD_NOW: u64 = 1_700_000_000 + 3_600;
/// Transport channel binding both handshake sides use.
pub const BINDING: [u8; 32] = [0xb1; 32];
/// The responder's Noise RNG seed (fixed, so a recorded initiator transcript
/// replays).
pub const RESPONDER_SEED: [u8; 32] = [0x5e; 32];
/// The driven initiator's Noise RNG seed.
pub const INITIATOR_SEED: [u8; 32] = [0x1e; 32];
/// Bytes of `verify_range` input before the stream: id, size, start, end.
pub const VERIFY_HEADER: usize = 32 + 8 + 8 + 8;
/// The fixed rendezvous service's Noise RNG seed (it answers introductions).
pub const SERVICE_SEED: [u8; 32] = [0x53; 32];
/// The downloader's Noise RNG seed (it writes introductions).
pub const DOWNLOADER_SEED: [u8; 32] = [0xd0; 32];
/// Largest introduction plaintext a genuine msg1 can carry: msg1 less the
/// ephemeral key and the tag.
pub const MAX_INTRODUCTION_BYTES: usize = MAX_INTRODUCE_BYTES - 32 - TAG_BYTES;

/// A harness: runs one input, returns whether it was accepted.
pub type Harness = fn(&[u8]) -> bool;

/// The fuzz targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("link_msg", link_msg),
    ("descriptor", descriptor),
    ("record", record),
    ("verify_range", verify_range),
    ("handshake", handshake),
    ("circuit", circuit),
    ("rendezvous", rendezvous),
    ("transfer_msg", transfer_msg),
    ("reassembler", reassembler),
    ("bitfield", bitfield),
];

fn check_params() -> CheckParams {
    CheckParams {
        now_ms: NOW_MS,
        max_age_ms: MAX_AGE_MS,
        pow: PowParams::TESTNET,
    }
}

/// A deterministic node identity and its relay descriptor stamped
/// [`NOW_MS`] (keys as in core's link tests).
fn make_node(seed: u8) -> (NodeIdentity, Descriptor) {
    let id = NodeIdentity::from_keys(
        SigningKey::from_bytes(&[seed; 32]),
        StaticSecret::from([seed ^ 0x55; 32]),
        PowParams::TESTNET,
    );
    let addr: SocketAddr = format!("127.{seed}.0.1:4433")
        .parse()
        .expect("literal address");
    let d = Descriptor::sign(&id, flags::RELAY, Some(addr), NOW_MS, vec![]);
    (id, d)
}

/// Node 1 (the initiator in handshake seeds) and node 2 (the responder).
fn nodes() -> &'static [(NodeIdentity, Descriptor); 2] {
    static NODES: OnceLock<[(NodeIdentity, Descriptor); 2]> = OnceLock::new();
    NODES.get_or_init(|| [make_node(1), make_node(2)])
}

// ---------------------------------------------------------------------------
// link_msg

/// Target `link_msg`: `Cell::from_bytes` on the raw input (must fail unless
/// it is exactly one cell), then `LinkMsg::decode` on the input zero-padded
/// or cut to [`CELL_SIZE`]. Accepted messages are admitted/checked the way a
/// node would and re-encoded: the encoders must give back the same message.
pub fn link_msg(data: &[u8]) -> bool {
    assert_eq!(Cell::from_bytes(data).is_ok(), data.len() == CELL_SIZE);
    let mut buf = vec![0u8; CELL_SIZE];
    let n = data.len().min(CELL_SIZE);
    buf[..n].copy_from_slice(&data[..n]);
    let cell = Cell::from_bytes(&buf).expect("exactly CELL_SIZE bytes");
    assert_eq!(cell.as_bytes()[..], buf[..]);
    let Ok(msg) = LinkMsg::decode(&cell) else {
        return false;
    };
    match &msg {
        LinkMsg::Padding => {}
        LinkMsg::PullRequest { nonce } => {
            assert_eq!(
                LinkMsg::decode(&LinkMsg::pull_request(*nonce)).as_ref(),
                Ok(&msg)
            );
        }
        LinkMsg::Push(u) => {
            if let Ok(d) = u.clone().check(NOW_MS, MAX_AGE_MS, PowParams::TESTNET) {
                assert_eq!(LinkMsg::decode(&LinkMsg::push(&d)).as_ref(), Ok(&msg));
            }
        }
        LinkMsg::PullReply { nonce, descriptors } => {
            let admitted: Vec<(Admitted, bool)> = descriptors
                .iter()
                .filter_map(|(u, v)| {
                    let a = u
                        .clone()
                        .admit(NOW_MS, MAX_AGE_MS, PowParams::TESTNET)
                        .ok()?;
                    Some((a, *v))
                })
                .collect();
            if admitted.len() == descriptors.len() {
                let cells = LinkMsg::pull_reply(*nonce, &admitted);
                assert_eq!(cells.len(), 1, "one decoded cell re-encodes to one");
                assert_eq!(LinkMsg::decode(&cells[0]).as_ref(), Ok(&msg));
            }
        }
        LinkMsg::Walk(bytes) => {
            if let Ok(w) = veil_core::search::Walk::decode(bytes) {
                let again = w.encode().expect("a decoded walk fits");
                assert_eq!(veil_core::search::Walk::decode(&again).as_ref(), Ok(&w));
            }
        }
        LinkMsg::WalkReply(bytes) => {
            if let Ok(w) = veil_core::search::WalkReply::decode(bytes) {
                let again = w.encode().expect("a decoded reply fits");
                assert_eq!(
                    veil_core::search::WalkReply::decode(&again).as_ref(),
                    Ok(&w)
                );
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------
// descriptor

/// Target `descriptor`: `Descriptor::decode`, then on a clone `admit` (at
/// [`NOW_MS`] and at the extreme clocks 0 and `u64::MAX`) and `check`. A
/// checked descriptor must also be admitted and re-encode to the input.
pub fn descriptor(data: &[u8]) -> bool {
    let Ok(u) = Descriptor::decode(data) else {
        return false;
    };
    let _ = u.claimed_id();
    for now in [0, u64::MAX] {
        let _ = u.clone().admit(now, MAX_AGE_MS, PowParams::TESTNET);
        let _ = u.clone().admit(now, u64::MAX, PowParams::TESTNET);
    }
    let admitted = u.clone().admit(NOW_MS, MAX_AGE_MS, PowParams::TESTNET);
    let checked = u.check(NOW_MS, MAX_AGE_MS, PowParams::TESTNET);
    match checked {
        Ok(d) => {
            assert_eq!(d.to_bytes(), data, "decoding is canonical");
            let a = admitted.expect("a checked descriptor is admitted");
            assert!(a.is(&d));
            assert_eq!(a.verify().as_ref(), Ok(&d));
            true
        }
        Err(_) => {
            if let Ok(a) = admitted {
                // Admitted but not checked: the signature is bad, and lazy
                // verification must say so too.
                assert!(a.verify().is_err());
            }
            false
        }
    }
}

// ---------------------------------------------------------------------------
// record

/// Target `record`: `Unchecked::<SignedRecord>::decode`, then `check` at
/// [`RECORD_NOW`] (and, on clones, at the extreme clocks). A checked record
/// re-encodes to the input and validates.
pub fn record(data: &[u8]) -> bool {
    let Ok(u) = Unchecked::<SignedRecord>::decode(data) else {
        return false;
    };
    for now in [0, u64::MAX] {
        let _ = u.clone().check(now, PowParams::TESTNET);
    }
    match u.check(RECORD_NOW, PowParams::TESTNET) {
        Ok(signed) => {
            assert_eq!(signed.as_bytes(), data);
            assert_eq!(signed.record().validate(), Ok(()));
            true
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// verify_range

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Target `verify_range`: input is `id (32) | size (u64) | start (u64) |
/// end (u64) | stream` (big-endian); runs `content::verify_range`. A
/// verified piece is exactly the range and the stream exactly
/// `encoded_len` bytes. (A range with `start > end` is a valid request to
/// test: it must be refused, not panic.)
pub fn verify_range(data: &[u8]) -> bool {
    if data.len() < VERIFY_HEADER {
        return false;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&data[..32]);
    let size = be_u64(&data[32..]);
    let start = be_u64(&data[40..]);
    let end = be_u64(&data[48..]);
    let stream = &data[VERIFY_HEADER..];
    let range = start..end;
    match content::verify_range(ContentId::from_bytes(id), size, range.clone(), stream) {
        Ok(piece) => {
            assert_eq!(piece.id(), ContentId::from_bytes(id));
            assert_eq!(piece.offset(), start);
            assert_eq!(piece.data().len() as u64, end - start);
            // Only reached for genuine streams, whose range is small.
            assert_eq!(content::encoded_len(size, range), Ok(stream.len() as u64));
            true
        }
        Err(e) => {
            let _ = e.is_peer_fault();
            false
        }
    }
}

// ---------------------------------------------------------------------------
// handshake

/// The fixed responder: node 2, binding [`BINDING`], seed [`RESPONDER_SEED`].
fn responder() -> LinkHandshake {
    let (id, d) = &nodes()[1];
    let (hs, first) = LinkHandshake::start(id, d, Side::Responder, None, &BINDING, RESPONDER_SEED)
        .expect("responder starts");
    assert!(first.is_none());
    hs
}

/// Tiny xorshift for chunk lengths.
fn next(x: &mut u32) -> u32 {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    *x
}

/// Cuts `stream` into chunks (some empty) whose lengths come from `seed`:
/// each chunk draws one of the four `bounds` and takes fewer bytes than it.
fn chunked(stream: &[u8], seed: u16, bounds: [usize; 4]) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x1_0000;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let r = next(&mut x);
        let len = (r >> 2) as usize % bounds[(r & 3) as usize];
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Push `stream` through a `CellReader` in chunks whose lengths come from
/// `seed` (0 bytes up to three cells); the cells must be exactly the
/// stream's whole cells, whatever the chunking.
fn reassemble(stream: &[u8], seed: u16) -> Vec<Cell> {
    let mut reader = CellReader::default();
    let mut cells = Vec::new();
    for chunk in chunked(stream, seed, [8, 600, CELL_SIZE + 1, 3 * CELL_SIZE + 1]) {
        reader.push(chunk, &mut cells);
        assert!(reader.buffered() < CELL_SIZE);
    }
    assert_eq!(cells.len(), stream.len() / CELL_SIZE);
    for (c, want) in cells.iter().zip(stream.chunks_exact(CELL_SIZE)) {
        assert_eq!(&c.as_bytes()[..], want);
    }
    assert_eq!(reader.buffered(), stream.len() % CELL_SIZE);
    cells
}

/// Feed cells to a fresh responder until it fails or finishes; the peer's
/// descriptor if the handshake completed.
fn run_responder(cells: &[Cell]) -> Option<Descriptor> {
    let mut hs = responder();
    for cell in cells {
        match hs.read(cell, check_params()) {
            Ok((next, HandshakeStep::Continue(reply))) => {
                assert_eq!(reply.command(), command::HANDSHAKE);
                hs = next;
            }
            Ok((_, HandshakeStep::Done { peer, last })) => {
                assert!(last.is_none(), "the responder sends nothing last");
                return Some(*peer);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Largest message-3 payload that fits a cell (s + tag + payload + tag).
pub const MAX_M3_PAYLOAD: usize = MAX_LINK_PAYLOAD - 32 - 16 - 16;

/// Target `handshake`. The first byte picks a mode.
///
/// - Even (raw): bytes 1..3 seed the chunking, the rest is the byte stream
///   from the peer. It is split into cells by a `CellReader` fed in
///   arbitrary chunks, and the cells go to a `LinkHandshake` responder
///   with a fixed identity and Noise seed (so a recorded transcript from a
///   real initiator replays to completion).
/// - Odd (driven): a real Noise initiator (node 1's static key) runs
///   messages 1 and 2 with the responder, then sends the rest of the input
///   (cut to [`MAX_M3_PAYLOAD`]) as the authenticated payload of message 3,
///   so the responder's descriptor checks see arbitrary bytes under a valid
///   Noise session. If it completes, the peer must be node 1's key.
pub fn handshake(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    if mode & 1 == 0 {
        let (seed, stream) = match rest {
            [a, b, stream @ ..] => (u16::from_be_bytes([*a, *b]), stream),
            _ => (0, &[][..]),
        };
        let cells = reassemble(stream, seed);
        run_responder(&cells).is_some()
    } else {
        let payload = &rest[..rest.len().min(MAX_M3_PAYLOAD)];
        driven(payload)
    }
}

/// A genuine initiator (node 1's static key) runs messages 1 and 2 with the
/// fixed responder, then sends `payload` in message 3.
fn driven(payload: &[u8]) -> bool {
    let mut prologue = LINK_PROLOGUE_PREFIX.to_vec();
    prologue.extend_from_slice(&BINDING);
    let secret = nodes()[0].0.x25519_secret().to_bytes();
    let mut init = noise_builder_state(
        LINK_NOISE_PARAMS,
        INITIATOR_SEED,
        Some(&secret),
        None,
        &prologue,
        true,
    )
    .expect("initiator state");
    let mut buf = vec![0u8; 65_535];
    let n = init.write_message(&[], &mut buf).expect("message 1");
    let m1 = Cell::link(command::HANDSHAKE, &buf[..n]).expect("message 1 fits");
    let (hs, step) = responder()
        .read(&m1, check_params())
        .expect("the responder accepts a genuine message 1");
    let HandshakeStep::Continue(m2) = step else {
        panic!("the responder answers message 1");
    };
    let mut scratch = vec![0u8; 65_535];
    init.read_message(m2.link_payload().expect("message 2 framing"), &mut scratch)
        .expect("message 2 from a genuine responder");
    let n = init.write_message(payload, &mut buf).expect("message 3");
    let m3 = Cell::link(command::HANDSHAKE, &buf[..n]).expect("message 3 fits");
    match hs.read(&m3, check_params()) {
        Ok((_, HandshakeStep::Done { peer, last })) => {
            assert!(last.is_none());
            assert_eq!(peer.x25519(), nodes()[0].0.public().x25519.as_bytes());
            true
        }
        Ok(_) => panic!("message 3 must finish or fail"),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Seeds

/// The record test vector from core/src/record.rs (signed by the pseudonym
/// from seed `[7; 32]`; valid at [`RECORD_NOW`]).
pub const RECORD_VECTOR_HEX: &str = concat!(
    "0101ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
    "000000000000014b",
    "74de59e8b0715071f8056276a528ec0a8c4a154e53a7e3b4d3da696457675b1e",
    "000000000000000b",
    "1c48656c6c6f205665696c202d207465737420766563746f722e747874",
    "050568656c6c6f047465737403747874",
    "06766563746f72047665696c",
    "010a746578742f706c61696e",
    "000000006553f1000000000065554280",
    "e7ad0c2b9d8c65761e899a5727001aed80e4627aaacd9017766c3865da20eafd",
    "5b2836ad7f547e215d23f6f48f5df722e122d1e4547f7ff77a48bae80f966c05",
);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A link cell as a seed: trailing zeros trimmed (the harness pads them).
fn trimmed(cell: &Cell) -> Vec<u8> {
    let b = cell.as_bytes();
    let end = b
        .iter()
        .rposition(|&x| x != 0)
        .map_or(5, |i| (i + 1).max(5));
    b[..end].to_vec()
}

fn verify_seed(data: &[u8], start: u64, end: u64) -> Vec<u8> {
    let ob = Outboard::from_slice(data);
    let stream = content::encode_range(data, &ob, start..end).expect("encode");
    let mut v = ob.root().as_bytes().to_vec();
    v.extend_from_slice(&ob.size().to_be_bytes());
    v.extend_from_slice(&start.to_be_bytes());
    v.extend_from_slice(&end.to_be_bytes());
    v.extend_from_slice(&stream);
    v
}

/// Valid inputs for every target: `(target, file name, bytes)`. Each is
/// accepted by its harness (the replay test checks this).
/// `cargo run --manifest-path fuzz/Cargo.toml --example seeds` writes them
/// to `fuzz/corpus/`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let [(id1, d1), _] = nodes();
    let others: Vec<Descriptor> = (3..6).map(|s| make_node(s).1).collect();

    // link_msg
    let admitted: Vec<(Admitted, bool)> = others
        .iter()
        .enumerate()
        .map(|(i, d)| (d.admitted(), i == 1))
        .collect();
    // As many of the smallest descriptors as one pull-reply cell may hold.
    let smallest: Vec<(Admitted, bool)> = (10..10 + MAX_DESCRIPTORS_PER_CELL as u8)
        .map(|s| {
            let d = Descriptor::sign(&make_node(s).0, 0, None, NOW_MS, vec![]);
            (d.admitted(), true)
        })
        .collect();
    let link: Vec<(&str, Cell)> = vec![
        ("padding", Cell::new(0, command::PADDING)),
        ("push", LinkMsg::push(&others[0])),
        ("pull-request", LinkMsg::pull_request(0x0123_4567_89ab_cdef)),
        ("pull-reply-0", LinkMsg::pull_reply(7, &[])[0].clone()),
        ("pull-reply-3", LinkMsg::pull_reply(8, &admitted)[0].clone()),
        (
            "pull-reply-max",
            LinkMsg::pull_reply(9, &smallest)[0].clone(),
        ),
    ];
    for (name, cell) in link {
        out.push(("link_msg", format!("seed-{name}"), trimmed(&cell)));
    }

    // descriptor
    let v6 = Descriptor::sign(
        id1,
        0,
        Some("[2001:db8::7]:9".parse().expect("addr")),
        NOW_MS,
        vec![1, 2, 3],
    );
    let bare = Descriptor::sign(id1, 0, None, NOW_MS - 1000, vec![]);
    for (name, d) in [
        ("relay-v4", &others[1]),
        ("client-v6-ext", &v6),
        ("client-no-addr", &bare),
    ] {
        out.push(("descriptor", format!("seed-{name}"), d.to_bytes()));
    }

    // record
    out.push(("record", "seed-vector".to_owned(), unhex(RECORD_VECTOR_HEX)));
    let p = Pseudonym::from_key(SigningKey::from_bytes(&[9; 32]), PowParams::TESTNET);
    let name = "Ünïcode Ärchive (2024) part 1 of 3.tar.zst";
    let rec = ContentRecord {
        content_id: content::content_id(b"seed"),
        size: 1 << 40,
        name: name.to_owned(),
        keywords: keywords_from_name(name),
        media_type: None,
        created: RECORD_NOW - 100,
        expires: RECORD_NOW + 6 * 24 * 3600,
    };
    out.push((
        "record",
        "seed-no-media-type".to_owned(),
        rec.sign(&p).expect("sign").to_bytes(),
    ));

    // verify_range
    let blob: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (name, len, a, b) in [
        ("empty", 0usize, 0u64, 0u64),
        ("one-byte", 1, 0, 1),
        ("one-chunk", 1024, 0, 1024),
        ("partial", 5000, 1000, 3000),
        ("two-groups-mid", 40_000, 20_000, 20_100),
    ] {
        out.push((
            "verify_range",
            format!("seed-{name}"),
            verify_seed(&blob[..len], a, b),
        ));
    }

    // circuit: every control message, a recognisable relay body, a valid
    // hop handshake message 1.
    for (name, msg) in circuit_seed_msgs() {
        let mut v = vec![0u8];
        v.extend_from_slice(&msg.encode().expect("seed message encodes"));
        out.push(("circuit", format!("seed-msg-{name}"), v));
    }
    let mut client = OnionClient::new();
    client.add_hop(circuit_keys()).expect("one hop");
    let probe = CircuitMsg::Probe { nonce: 7 }.encode().expect("probe");
    let body = client.seal_forward(0, &probe).expect("sealed");
    let mut v = vec![1u8];
    v.extend_from_slice(&body[..]);
    out.push(("circuit", "seed-relay-body".to_owned(), v));
    let (_, msg1) =
        ClientHopHandshake::start(nodes()[1].1.x25519(), [0x31; 32]).expect("handshake starts");
    let mut v = vec![2u8];
    v.extend_from_slice(&msg1);
    out.push(("circuit", "seed-create".to_owned(), v));

    // handshake: a recorded transcript of node 1 dialling the fixed responder.
    let (init, m1) = LinkHandshake::start(id1, d1, Side::Initiator, None, &BINDING, [0x77; 32])
        .expect("initiator starts");
    let m1 = m1.expect("initiator's first message");
    let (_, step) = responder().read(&m1, check_params()).expect("message 1");
    let HandshakeStep::Continue(m2) = step else {
        panic!("the responder answers message 1");
    };
    let (_, step) = init.read(&m2, check_params()).expect("message 2");
    let HandshakeStep::Done { last: Some(m3), .. } = step else {
        panic!("the initiator finishes with message 3");
    };
    for (name, chunk_seed) in [
        ("transcript", [0u8, 0]),
        ("transcript-chunked", [0x9c, 0x3b]),
    ] {
        let mut v = vec![0u8];
        v.extend_from_slice(&chunk_seed);
        v.extend_from_slice(m1.as_bytes());
        v.extend_from_slice(m3.as_bytes());
        out.push(("handshake", format!("seed-{name}"), v));
    }
    let mut v = vec![1u8];
    v.extend_from_slice(&d1.to_bytes());
    out.push(("handshake", "seed-driven".to_owned(), v));

    rendezvous_seeds(&mut out);
    transfer_seeds(&mut out);
    out
}

// ---------------------------------------------------------------------------
// circuit

fn circuit_keys() -> HopKeys {
    HopKeys::derive(&[0x42; 32])
}

fn circuit_seed_msgs() -> Vec<(&'static str, CircuitMsg)> {
    vec![
        (
            "create",
            CircuitMsg::Create {
                handshake: vec![1; 48],
            },
        ),
        (
            "created",
            CircuitMsg::Created {
                handshake: vec![2; 48],
            },
        ),
        (
            "extend",
            CircuitMsg::Extend {
                descriptor: nodes()[1].1.to_bytes(),
                handshake: vec![3; 48],
            },
        ),
        (
            "extended",
            CircuitMsg::Extended {
                handshake: vec![4; 48],
            },
        ),
        ("destroy", CircuitMsg::Destroy { reason: 2 }),
        ("probe", CircuitMsg::Probe { nonce: 9 }),
        ("probe-reply", CircuitMsg::ProbeReply { nonce: 9 }),
        (
            "data",
            CircuitMsg::Data {
                bytes: b"veil".to_vec(),
            },
        ),
        ("sendme", CircuitMsg::Sendme),
    ]
}

/// Target `circuit`: the first byte says what the rest is.
/// - 0: a `CircuitMsg`; an accepted one must re-encode to the same bytes.
/// - 1: a relay cell body (zero-padded or cut to `CELL_BODY_BYTES`) that a
///   relay with fixed keys processes as the last hop, and that a client
///   with the same keys tries to open as a backward cell. A recognised
///   payload must be a bounded message or rejected; a bad body must leave
///   the relay's counters advanced exactly once (no panic, no partial
///   state).
/// - 2: a hop handshake message 1 that node 2 answers as a relay.
pub fn circuit(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    match mode {
        0 => match CircuitMsg::decode(rest) {
            Ok(msg) => {
                assert_eq!(msg.encode().expect("decoded messages encode"), rest);
                true
            }
            Err(_) => false,
        },
        1 => {
            let mut body = vec![0u8; CELL_BODY_BYTES];
            let n = rest.len().min(CELL_BODY_BYTES);
            body[..n].copy_from_slice(&rest[..n]);
            let mut backward = body.clone();
            let mut relay = RelayCrypto::new(circuit_keys(), true);
            let recognised = match relay.process_forward(&mut body) {
                Ok(ForwardOutcome::Recognised(payload)) => {
                    let _ = CircuitMsg::decode(&payload);
                    true
                }
                Ok(ForwardOutcome::Unrecognised) | Err(_) => false,
                Ok(other) => panic!("a last hop returned {other:?}"),
            };
            let mut client = OnionClient::new();
            client.add_hop(circuit_keys()).expect("one hop");
            let _ = client.open_backward(&mut backward);
            // Wrong lengths are refused without touching anything.
            assert!(
                relay
                    .process_forward(&mut body[..n.min(CELL_BODY_BYTES - 1)])
                    .is_err()
            );
            recognised
        }
        2 => RelayHopHandshake::respond(&nodes()[1].0, rest, [0x5a; 32]).is_ok(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// rendezvous

/// The fixed service: the pseudonym of seed `[0x5c; 32]` (proof at
/// `PowParams::TESTNET`) and the x25519 secret `[0x5d; 32]`.
fn service() -> &'static ServiceKey {
    static SERVICE: OnceLock<ServiceKey> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let p = Pseudonym::from_key(SigningKey::from_bytes(&[0x5c; 32]), PowParams::TESTNET);
        let mut file = p.to_bytes().to_vec();
        file.extend_from_slice(&[0x5d; 32]);
        ServiceKey::from_bytes(&file).expect("service key file")
    })
}

/// The introduction the seeds carry: node 2 as rendezvous point.
fn seed_introduction() -> Introduction {
    Introduction {
        rendezvous: nodes()[1].1.to_bytes(),
        cookie: [0xc0; 32],
        time_s: 1_800_000_000,
    }
}

/// The downloader's half-open session for [`seed_introduction`], and msg1.
fn introducing() -> (Introducing, Vec<u8>) {
    Introducing::start(&service().public(), &seed_introduction(), DOWNLOADER_SEED)
        .expect("the downloader starts")
}

/// Target `rendezvous`: the first byte says what the rest is.
/// - 0: a `ToHop` (client to last hop). An accepted one must re-encode to
///   the same bytes. A registration is then checked at node 2, and the
///   handshake of an introduction is opened by the fixed service
///   ([`rendezvous::accept`]), as an introduction point and a service
///   would.
/// - 1: a `FromHop` (last hop to client), re-encoded likewise; the
///   handshake of a `Joined` is read as msg2 by a downloader that sent the
///   seeds' introduction ([`Introducing::finish`]).
/// - 2: the plaintext of an introduction (cut to
///   [`MAX_INTRODUCTION_BYTES`]), sealed in a genuine msg1 to the fixed
///   service, so the service's `Introduction` decoder sees arbitrary bytes
///   under a valid Noise session. An accepted introduction must re-encode
///   to the plaintext, and its msg2 must complete the downloader's
///   handshake.
pub fn rendezvous(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    match mode {
        0 => {
            let Ok(msg) = ToHop::decode(rest) else {
                return false;
            };
            let again = msg.encode().expect("decoded messages encode");
            assert_eq!(again, rest, "decoding is canonical");
            assert!(again.len() <= MAX_RENDEZVOUS_MSG_BYTES);
            match &msg {
                ToHop::EstablishIntro(reg) => {
                    let me = nodes()[1].0.node_id();
                    if let Ok(id) = check_establish_intro(me, reg, PowParams::TESTNET) {
                        assert_eq!(id, reg.key.id());
                    }
                }
                ToHop::Introduce {
                    service: sid,
                    puzzle,
                    handshake,
                } => {
                    // Every introduction has one length, and its puzzle is
                    // checked as an introduction point would.
                    assert_eq!(again.len(), INTRODUCE_MSG_BYTES);
                    assert!(puzzle.effort <= MAX_EFFORT);
                    let _ = check_puzzle(sid, handshake, *puzzle, puzzle.effort);
                    if let Ok((intro, msg2, _)) =
                        rendezvous::accept(service(), handshake, SERVICE_SEED)
                    {
                        assert!(intro.rendezvous.len() <= MAX_DESCRIPTOR_BYTES);
                        assert_eq!(msg2.len(), JOIN_HANDSHAKE_BYTES);
                    }
                }
                ToHop::SetEffort { effort } => assert!(*effort <= MAX_EFFORT),
                ToHop::EstablishRendezvous { .. } | ToHop::Join { .. } => {}
            }
            true
        }
        1 => {
            let Ok(msg) = FromHop::decode(rest) else {
                return false;
            };
            assert_eq!(
                msg.encode().expect("decoded messages encode"),
                rest,
                "decoding is canonical"
            );
            match &msg {
                FromHop::Joined { handshake } => {
                    let _ = introducing().0.finish(handshake);
                }
                FromHop::IntroduceAck { status } => {
                    assert_eq!(rest.len(), INTRODUCE_ACK_BYTES);
                    if let IntroStatus::NeedEffort(e) = status {
                        assert!((1..=MAX_EFFORT).contains(e));
                    }
                }
                _ => {}
            }
            true
        }
        2 => introduction(&rest[..rest.len().min(MAX_INTRODUCTION_BYTES)]),
        _ => false,
    }
}

/// A genuine downloader seals `plaintext` as the introduction in msg1; the
/// fixed service opens it.
fn introduction(plaintext: &[u8]) -> bool {
    let mut init = noise_builder_state(
        SESSION_NOISE_PARAMS,
        DOWNLOADER_SEED,
        None,
        Some(&service().public().x25519),
        SESSION_PROLOGUE,
        true,
    )
    .expect("initiator state");
    let mut msg1 = vec![0u8; MAX_INTRODUCE_BYTES];
    let n = init.write_message(plaintext, &mut msg1).expect("msg1");
    assert!(n <= MAX_INTRODUCE_BYTES);
    match rendezvous::accept(service(), &msg1[..n], SERVICE_SEED) {
        Ok((intro, msg2, _)) => {
            let mut w = Writer::new();
            w.put_bytes_u16len(&intro.rendezvous)
                .expect("a decoded descriptor fits");
            w.put_bytes(&vec![0; MAX_DESCRIPTOR_BYTES - intro.rendezvous.len()]);
            w.put_bytes(&intro.cookie);
            w.put_u64(intro.time_s);
            assert_eq!(w.as_slice(), plaintext, "decoding is canonical");
            let mut payload = [0u8; JOIN_HANDSHAKE_BYTES];
            let n = init
                .read_message(&msg2, &mut payload)
                .expect("the service's msg2 completes the handshake");
            assert_eq!(n, 0, "msg2 is empty");
            true
        }
        // A genuine msg1 only fails on what it carries.
        Err(e) => {
            assert!(matches!(e, RendezvousError::Malformed(_)), "{e}");
            false
        }
    }
}

fn rendezvous_seeds(out: &mut Vec<(&'static str, String, Vec<u8>)>) {
    let s = service();
    let (_, msg1) = introducing();
    let (_, msg2, _) = rendezvous::accept(s, &msg1, SERVICE_SEED).expect("genuine msg1");
    let solved = solve_puzzle(&puzzle_subject(&s.id(), &msg1), 6, 0, 1 << 16);
    let to_hop = [
        ("establish-intro", s.establish_intro(nodes()[1].0.node_id())),
        (
            "introduce",
            ToHop::Introduce {
                service: s.id(),
                puzzle: Puzzle::default(),
                handshake: msg1.clone(),
            },
        ),
        (
            "introduce-solved",
            ToHop::Introduce {
                service: s.id(),
                puzzle: solved.expect("a nonce within 2^16 tries"),
                handshake: msg1.clone(),
            },
        ),
        ("set-effort", ToHop::SetEffort { effort: 12 }),
        (
            "establish-rendezvous",
            ToHop::EstablishRendezvous { cookie: [0xc0; 32] },
        ),
        (
            "join",
            ToHop::Join {
                cookie: [0xc0; 32],
                handshake: msg2.clone(),
            },
        ),
    ];
    for (name, msg) in to_hop {
        let mut v = vec![0u8];
        v.extend_from_slice(&msg.encode().expect("seed message encodes"));
        out.push(("rendezvous", format!("seed-to-{name}"), v));
    }
    let from_hop = [
        ("intro-established", FromHop::IntroEstablished),
        (
            "introduce-ack",
            FromHop::IntroduceAck {
                status: IntroStatus::RateLimited,
            },
        ),
        (
            "introduce-ack-need-effort",
            FromHop::IntroduceAck {
                status: IntroStatus::NeedEffort(9),
            },
        ),
        (
            "introduction",
            FromHop::Introduction {
                puzzle: solved.expect("solved above"),
                handshake: msg1,
            },
        ),
        ("intro-load", FromHop::IntroLoad { refused: 1234 }),
        ("rendezvous-established", FromHop::RendezvousEstablished),
        ("joined", FromHop::Joined { handshake: msg2 }),
    ];
    for (name, msg) in from_hop {
        let mut v = vec![1u8];
        v.extend_from_slice(&msg.encode().expect("seed message encodes"));
        out.push(("rendezvous", format!("seed-from-{name}"), v));
    }
    let intro = seed_introduction();
    let mut v = vec![2u8];
    let mut w = Writer::new();
    w.put_bytes_u16len(&intro.rendezvous).expect("fits");
    w.put_bytes(&vec![0; MAX_DESCRIPTOR_BYTES - intro.rendezvous.len()]);
    w.put_bytes(&intro.cookie);
    w.put_u64(intro.time_s);
    v.extend_from_slice(w.as_slice());
    out.push(("rendezvous", "seed-introduction".to_owned(), v));
    let mut v = vec![2u8, 0, 0];
    v.extend_from_slice(&vec![0; MAX_DESCRIPTOR_BYTES]);
    v.extend_from_slice(&[0xc1; 32]);
    v.extend_from_slice(&[0; 8]);
    out.push(("rendezvous", "seed-introduction-empty".to_owned(), v));
}

// ---------------------------------------------------------------------------
// transfer

/// Content the `transfer_msg` target serves: two whole pieces and 100 bytes,
/// and its outboard.
fn shared_content() -> &'static (Vec<u8>, Outboard) {
    static CONTENT: OnceLock<(Vec<u8>, Outboard)> = OnceLock::new();
    CONTENT.get_or_init(|| {
        let data: Vec<u8> = (0..2 * PIECE_BYTES as u32 + 100)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let ob = Outboard::from_slice(&data);
        (data, ob)
    })
}

/// Target `transfer_msg`: `TransferMsg::decode`; an accepted message must
/// re-encode to the same bytes. A request is then served from
/// [`shared_content`] ([`transfer::serve`]): a piece of it must come back as
/// a stream that verifies, anything else as `Missing`, always under the
/// request's number.
pub fn transfer_msg(data: &[u8]) -> bool {
    let Ok(msg) = TransferMsg::decode(data) else {
        return false;
    };
    let again = msg.encode().expect("decoded messages encode");
    assert_eq!(again, data, "decoding is canonical");
    assert!(again.len() <= MAX_PIECE_MESSAGE);
    if let TransferMsg::Request(request) = &msg {
        let (content, ob) = shared_content();
        let served = transfer::serve(request, &content[..], ob);
        assert!(served.local_fault.is_none(), "our copy is intact");
        let range = piece_range(ob.size(), request.piece).filter(|_| request.id == ob.root());
        match (&served.reply, range) {
            (TransferMsg::Piece { req, encoded }, Some(range)) => {
                assert_eq!(*req, request.req);
                assert!(encoded.len() <= MAX_PIECE_ENCODED);
                let piece = content::verify_range(ob.root(), ob.size(), range.clone(), encoded)
                    .expect("a served piece verifies");
                assert_eq!(
                    piece.data(),
                    &content[range.start as usize..range.end as usize]
                );
            }
            (TransferMsg::Missing { req }, None) => assert_eq!(*req, request.req),
            (reply, range) => panic!("{request:?} (range {range:?}) answered {reply:?}"),
        }
    }
    true
}

/// Target `reassembler`: `seed (u16) | max (u16) | stream`, big-endian. A
/// `Reassembler` bounded at `max` (0 means [`MAX_PIECE_MESSAGE`]) is fed
/// the stream in chunks whose lengths come from `seed`. It must never hold
/// more than one frame (`FRAME_HEADER_BYTES + max`); every message it
/// yields is 1 to `max` bytes, and framed again they are a prefix of the
/// stream. Pushing the whole stream at once must give the same messages and
/// the same error; after an error it stays dead. Accepted: no error and the
/// stream ends between messages (`finish`).
pub fn reassembler(data: &[u8]) -> bool {
    let [a, b, c, d, stream @ ..] = data else {
        return false;
    };
    let seed = u16::from_be_bytes([*a, *b]);
    let max = match u16::from_be_bytes([*c, *d]) {
        0 => MAX_PIECE_MESSAGE,
        m => usize::from(m),
    };
    let mut r = Reassembler::new(max);
    let mut out = Vec::new();
    let mut failed = None;
    for chunk in chunked(stream, seed, [4, 16, 300, 5000]) {
        if let Err(e) = r.push(chunk, &mut out) {
            failed = Some(e);
            break;
        }
        assert!(r.buffered() <= FRAME_HEADER_BYTES + max);
    }
    assert!(out.iter().all(|m| !m.is_empty() && m.len() <= max));
    let mut framer = Framer::new(usize::MAX, max);
    for m in &out {
        framer.push(m).expect("a reassembled message frames again");
    }
    let framed = framer.poll_chunk().unwrap_or_default();
    assert!(framer.is_empty());
    assert!(stream.starts_with(&framed));

    let mut whole = Reassembler::new(max);
    let mut at_once = Vec::new();
    assert_eq!(whole.push(stream, &mut at_once).err(), failed);
    assert_eq!(at_once, out, "the chunking does not matter");
    match failed {
        Some(e) => {
            assert!(framed.len() + FRAME_HEADER_BYTES <= stream.len());
            assert_eq!(r.push(&[0], &mut out), Err(e.clone()), "stays dead");
            assert_eq!(r.finish(), Err(e));
            false
        }
        None => {
            assert_eq!(framed.len() + r.buffered(), stream.len());
            assert_eq!(whole.buffered(), r.buffered());
            r.finish().is_ok()
        }
    }
}

/// Target `bitfield`: `size (u64, big-endian) | stored bitfield`;
/// `Bitfield::from_bytes(size, stored)`. The size is used whole (up to
/// `u64::MAX`): `from_bytes` allocates nothing before the length matches
/// the size, and once it matches the bitfield is as small as the input. An
/// accepted bitfield must give back the stored bytes, hold the popcount,
/// and equal the one built piece by piece with `set`.
pub fn bitfield(data: &[u8]) -> bool {
    if data.len() < 8 {
        return false;
    }
    let size = be_u64(data);
    let stored = &data[8..];
    let Ok(b) = Bitfield::from_bytes(size, stored) else {
        return false;
    };
    assert_eq!(b.as_bytes(), stored);
    assert_eq!(b.pieces(), piece_count(size));
    let popcount: u64 = stored.iter().map(|x| u64::from(x.count_ones())).sum();
    assert_eq!(b.held(), popcount);
    assert_eq!(b.is_complete(), b.held() == b.pieces());
    assert!(!b.has(b.pieces()));
    let mut built = Bitfield::new(size);
    for i in (0..b.pieces()).filter(|&i| b.has(i)) {
        assert!(built.set(i));
    }
    assert_eq!(built, b);
    assert_eq!(b.missing().count() as u64, b.pieces() - b.held());
    true
}

fn transfer_seeds(out: &mut Vec<(&'static str, String, Vec<u8>)>) {
    let (content, ob) = shared_content();
    let request = |req, piece| {
        TransferMsg::Request(Request {
            req,
            id: ob.root(),
            piece,
        })
    };
    let served = transfer::serve(
        &Request {
            req: 12,
            id: ob.root(),
            piece: 2,
        },
        &content[..],
        ob,
    );
    let msgs = [
        ("request-first", request(1, 0)),
        ("request-last", request(2, 2)),
        ("request-past-end", request(3, 3)),
        (
            "request-other",
            TransferMsg::Request(Request {
                req: 4,
                id: content::content_id(b"other"),
                piece: 0,
            }),
        ),
        ("piece-served", served.reply),
        (
            "piece-empty",
            TransferMsg::Piece {
                req: u32::MAX,
                encoded: vec![],
            },
        ),
        ("missing", TransferMsg::Missing { req: 7 }),
    ];
    let mut encoded = Vec::new();
    for (name, msg) in msgs {
        let bytes = msg.encode().expect("seed message encodes");
        out.push(("transfer_msg", format!("seed-{name}"), bytes.clone()));
        encoded.push(bytes);
    }

    // reassembler: framed requests and replies under the real bound, small
    // messages at a small bound (one exactly at it), and nothing at all.
    let framed = |chunk_seed: u16, max: u16, msgs: &[&[u8]]| {
        let mut v = chunk_seed.to_be_bytes().to_vec();
        v.extend_from_slice(&max.to_be_bytes());
        let bound = if max == 0 {
            MAX_PIECE_MESSAGE
        } else {
            max.into()
        };
        let mut f = Framer::new(usize::MAX, bound);
        for m in msgs {
            f.push(m).expect("seed frames");
        }
        v.extend(f.poll_chunk().unwrap_or_default());
        v
    };
    let small: Vec<&[u8]> = encoded
        .iter()
        .map(Vec::as_slice)
        .filter(|m| m.len() < 100)
        .collect();
    let seeds = [
        ("transfer", framed(0x1234, 0, &small)),
        ("transfer-rechunked", framed(0x0007, 0, &small)),
        ("at-bound", framed(0xbeef, 100, &[&[7; 100], &[1]])),
        ("empty", framed(0, 0, &[])),
    ];
    for (name, v) in seeds {
        out.push(("reassembler", format!("seed-{name}"), v));
    }

    // bitfield
    let bitfields: [(&str, u64, &[u8]); 5] = [
        ("empty-file", 0, &[]),
        ("one-piece-held", 1, &[1]),
        ("eleven-pieces-full", 11 * PIECE_BYTES - 3, &[0xff, 0x07]),
        ("sixteen-pieces-some", 16 * PIECE_BYTES, &[0x5a, 0x81]),
        ("hundred-pieces-none", 100 * PIECE_BYTES, &[0; 13]),
    ];
    for (name, size, stored) in bitfields {
        let mut v = size.to_be_bytes().to_vec();
        v.extend_from_slice(stored);
        out.push(("bitfield", format!("seed-{name}"), v));
    }
}

// ---------------------------------------------------------------------------
// Malformed inputs

/// Hand-made malformed inputs (`bad-*` in the corpus): each must be
/// refused by its harness, without a panic (the replay test checks this).
/// Only the newer targets have them; the fuzzer's finds cover the rest.
pub fn malformed() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let with = |head: &[u8], tail: &[u8]| [head, tail].concat();
    let too_long = u16::try_from(MAX_INTRODUCE_BYTES + 1).expect("fits a u16");
    // An introduction's head: tag, service id, effort, nonce.
    let introduce_head = |effort: u8| with(&[0, 2], &with(&[0x22; 32], &with(&[effort], &[0; 8])));
    let rendezvous: [(&str, Vec<u8>); 15] = [
        ("empty", vec![]),
        ("unknown-mode", vec![3, 1]),
        ("to-unknown-tag", vec![0, 5]),
        ("to-intro-truncated", with(&[0, 1], &[0x11; 40])),
        (
            "to-introduce-over-bound",
            with(&introduce_head(0), &too_long.to_be_bytes()),
        ),
        (
            "to-introduce-effort-over-max",
            with(
                &introduce_head(MAX_EFFORT + 1),
                &with(
                    &u16::try_from(MAX_INTRODUCE_BYTES)
                        .expect("fits a u16")
                        .to_be_bytes(),
                    &vec![0x33; MAX_INTRODUCE_BYTES],
                ),
            ),
        ),
        (
            "to-introduce-short-msg1",
            with(&introduce_head(0), &with(&[0, 4], &[0x33; 4])),
        ),
        ("to-set-effort-over-max", vec![0, 5, MAX_EFFORT + 1]),
        ("from-ack-need-no-effort", vec![1, 66, 3, 0]),
        ("from-ack-effort-on-delivered", vec![1, 66, 0, 7]),
        ("from-load-truncated", vec![1, 71, 0, 0, 1]),
        (
            "to-join-trailing",
            with(&[0, 4], &with(&[0xc0; 32], &[0, 0, 9])),
        ),
        ("from-ack-unknown-status", vec![1, 66, 4, 0]),
        ("from-joined-too-long", with(&[1, 69, 0, 49], &[0; 49])),
        ("introduction-lying-length", with(&[2, 0, 200], &[0xc1; 32])),
    ];
    for (name, v) in rendezvous {
        out.push(("rendezvous", format!("bad-{name}"), v));
    }
    let transfer: [(&str, Vec<u8>); 5] = [
        ("empty", vec![]),
        ("unknown-kind", vec![9, 0, 0, 0, 0]),
        (
            "piece-over-bound",
            with(&[1, 0, 0, 0, 0], &u32::MAX.to_be_bytes()),
        ),
        ("piece-short", vec![1, 0, 0, 0, 0, 0, 0, 0, 3, 0xbe, 0xef]),
        ("missing-trailing", vec![2, 0, 0, 0, 2, 0]),
    ];
    for (name, v) in transfer {
        out.push(("transfer_msg", format!("bad-{name}"), v));
    }
    let reassembler: [(&str, Vec<u8>); 4] = [
        ("over-bound", vec![0, 1, 0, 100, 0, 0, 0, 101, 1]),
        (
            "over-real-bound",
            with(&[0, 2, 0, 0], &u32::MAX.to_be_bytes()),
        ),
        (
            "zero-length",
            vec![0, 3, 0, 0, 0, 0, 0, 2, 8, 9, 0, 0, 0, 0],
        ),
        ("truncated", vec![0, 4, 0, 0, 0, 0, 0, 5, 1, 2]),
    ];
    for (name, v) in reassembler {
        out.push(("reassembler", format!("bad-{name}"), v));
    }
    let bitfield: [(&str, Vec<u8>); 4] = [
        ("no-size", vec![0; 7]),
        (
            "wrong-length",
            with(&(11 * PIECE_BYTES).to_be_bytes(), &[0]),
        ),
        (
            "past-end",
            with(&(11 * PIECE_BYTES).to_be_bytes(), &[0, 0x80]),
        ),
        ("huge-size", with(&u64::MAX.to_be_bytes(), &[0xff; 16])),
    ];
    for (name, v) in bitfield {
        out.push(("bitfield", format!("bad-{name}"), v));
    }
    out
}
