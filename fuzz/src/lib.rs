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
use veil_core::descriptor::{Admitted, Descriptor, flags};
use veil_core::identity::{NodeIdentity, Pseudonym};
use veil_core::link::{
    CheckParams, HandshakeStep, LINK_NOISE_PARAMS, LINK_PROLOGUE_PREFIX, LinkHandshake, LinkMsg,
    MAX_DESCRIPTORS_PER_CELL, Side, noise_builder_state,
};
use veil_core::onion::{ForwardOutcome, HopKeys, OnionClient, RelayCrypto};
use veil_core::pow::PowParams;
use veil_core::record::{ContentRecord, SignedRecord, Unchecked, keywords_from_name};
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

/// Push `stream` through a `CellReader` in chunks whose lengths come from
/// `seed` (0 bytes up to three cells); the cells must be exactly the
/// stream's whole cells, whatever the chunking.
fn reassemble(stream: &[u8], seed: u16) -> Vec<Cell> {
    let mut x = u32::from(seed) | 0x1_0000;
    let mut reader = CellReader::default();
    let mut cells = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let r = next(&mut x);
        let len = (r >> 2) as usize
            % match r & 3 {
                0 => 8,
                1 => 600,
                2 => CELL_SIZE + 1,
                _ => 3 * CELL_SIZE + 1,
            };
        let take = len.min(rest.len());
        reader.push(&rest[..take], &mut cells);
        rest = &rest[take..];
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
