use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::identity::NodeIdentity;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn service(seed: u64) -> ServiceKey {
    ServiceKey::generate(&mut rng(seed), PowParams::TESTNET)
}

fn seed(r: &mut ChaCha20Rng) -> [u8; 32] {
    let mut s = [0u8; 32];
    r.fill_bytes(&mut s);
    s
}

/// A stand-in rendezvous descriptor: opaque bytes to this layer.
fn rp_descriptor() -> Vec<u8> {
    (0..300u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// Both ends of one introduction, as the protocol runs them.
struct Run {
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    cookie: [u8; COOKIE_BYTES],
    downloader: Session,
    sharer: Session,
}

fn run(s: &ServiceKey, r: &mut ChaCha20Rng) -> Run {
    let cookie = cookie(r);
    let intro = Introduction {
        rendezvous: rp_descriptor(),
        cookie,
        time_s: 1_800_000_000,
    };
    let (pending, msg1) = Introducing::start(&s.public(), &intro, seed(r)).expect("start");
    let (opened, msg2, sharer) = accept(s, &msg1, seed(r)).expect("accept");
    assert_eq!(opened, intro, "the service reads the introduction");
    let downloader = pending.finish(&msg2).expect("finish");
    Run {
        msg1,
        msg2,
        cookie,
        downloader,
        sharer,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn messages_round_trip_and_garbage_never_panics() {
    let s = service(1);
    let msgs = vec![
        s.establish_intro(NodeId::from_bytes([4; 32])),
        ToHop::Introduce {
            service: s.id(),
            handshake: vec![9; MAX_INTRODUCE_BYTES],
        },
        ToHop::EstablishRendezvous { cookie: [3; 32] },
        ToHop::Join {
            cookie: [5; 32],
            handshake: vec![1; JOIN_HANDSHAKE_BYTES],
        },
    ];
    for m in &msgs {
        let b = m.encode().expect("encode");
        assert!(b.len() <= MAX_RENDEZVOUS_MSG_BYTES);
        assert_eq!(&ToHop::decode(&b).expect("decode"), m);
        let mut longer = b.clone();
        longer.push(0);
        assert!(ToHop::decode(&longer).is_err(), "trailing bytes");
        assert!(ToHop::decode(&b[..b.len() - 1]).is_err(), "truncated");
    }
    let replies = vec![
        FromHop::IntroEstablished,
        FromHop::IntroduceAck {
            status: IntroStatus::RateLimited,
        },
        FromHop::Introduction {
            handshake: vec![2; 100],
        },
        FromHop::RendezvousEstablished,
        FromHop::Joined {
            handshake: vec![7; JOIN_HANDSHAKE_BYTES],
        },
        FromHop::JoinAck { joined: true },
    ];
    for m in &replies {
        let b = m.encode().expect("encode");
        assert_eq!(&FromHop::decode(&b).expect("decode"), m);
    }
    assert!(
        ToHop::Join {
            cookie: [0; 32],
            handshake: vec![0; JOIN_HANDSHAKE_BYTES + 1]
        }
        .encode()
        .is_err()
    );
    let mut r = rng(2);
    for len in 0..600 {
        let mut b = vec![0u8; len % 200];
        r.fill_bytes(&mut b);
        if let Some(first) = b.first_mut() {
            *first = (len % 70) as u8;
        }
        let _ = ToHop::decode(&b);
        let _ = FromHop::decode(&b);
    }
}

#[test]
fn a_registration_holds_only_at_the_introduction_point_it_names() {
    let s = service(3);
    let here = NodeId::from_bytes([1; 32]);
    let elsewhere = NodeId::from_bytes([2; 32]);
    let ToHop::EstablishIntro(reg) = s.establish_intro(here) else {
        panic!("not a registration");
    };
    assert_eq!(
        check_establish_intro(here, &reg, PowParams::TESTNET),
        Ok(s.id())
    );
    // A hostile introduction point replays it at another node.
    assert_eq!(
        check_establish_intro(elsewhere, &reg, PowParams::TESTNET),
        Err(RendezvousError::BadSignature)
    );
    // Someone else's key with this signature.
    let other = Registration {
        key: service(4).public().key,
        signature: reg.signature,
    };
    assert_eq!(
        check_establish_intro(here, &other, PowParams::TESTNET),
        Err(RendezvousError::BadSignature)
    );
    // A proof made for the test network does not pass a harder one.
    let hard = PowParams {
        difficulty_bits: 30,
    };
    assert_eq!(
        check_establish_intro(here, &reg, hard),
        Err(RendezvousError::BadProof)
    );
}

/// The introduction point's view: the service id, msg1, and its own node
/// keys. It must learn neither the rendezvous point nor the cookie.
#[test]
fn introduction_point_cannot_open_the_introduction() {
    let s = service(5);
    let mut r = rng(6);
    let run = run(&s, &mut r);
    assert!(!contains(&run.msg1, &run.cookie), "cookie in clear");
    assert!(
        !contains(&run.msg1, &rp_descriptor()[..32]),
        "rendezvous descriptor in clear"
    );
    // Its own static key as the responder's.
    let ip = NodeIdentity::generate(&mut rng(7), PowParams::TESTNET);
    let mut noise = noise_builder_state(
        SESSION_NOISE_PARAMS,
        seed(&mut r),
        Some(&ip.x25519_secret().to_bytes()),
        None,
        SESSION_PROLOGUE,
        false,
    )
    .expect("noise");
    let mut out = vec![0u8; MAX_INTRODUCE_BYTES];
    assert!(noise.read_message(&run.msg1, &mut out).is_err());
    // Any other service key.
    assert!(accept(&service(8), &run.msg1, seed(&mut r)).is_err());
    // An altered msg1 does not open even for the service.
    let mut bent = run.msg1.clone();
    *bent.last_mut().expect("byte") ^= 1;
    assert!(accept(&s, &bent, seed(&mut r)).is_err());
}

/// The rendezvous point's view (with the introduction point's too: the
/// whole transcript, msg1 and msg2, the cookie, and every ciphertext). The
/// session keys come from the Noise split; the handshake hash and the
/// transcript are public and must not open anything.
#[test]
fn session_keys_do_not_come_from_the_transcript() {
    let s = service(9);
    let mut r = rng(10);
    let mut run = run(&s, &mut r);
    let plain = b"the first sixteen bytes of the file".to_vec();
    let sealed = run.downloader.seal(&plain).expect("seal");
    assert_eq!(run.sharer.open(&sealed).expect("open"), plain);
    // Every 32-byte key a passive party can compute from what it saw.
    let mut transcript = Vec::new();
    transcript.extend_from_slice(SESSION_PROLOGUE);
    transcript.extend_from_slice(&s.public().x25519);
    transcript.extend_from_slice(&run.msg1);
    transcript.extend_from_slice(&run.msg2);
    let mut candidates: Vec<[u8; 32]> = vec![
        *blake3::hash(&transcript).as_bytes(),
        *blake3::hash(&run.msg1).as_bytes(),
        *blake3::hash(&run.msg2).as_bytes(),
        run.cookie,
        s.public().x25519,
    ];
    let mut e = [0u8; 32];
    e.copy_from_slice(&run.msg1[..32]);
    candidates.push(e);
    e.copy_from_slice(&run.msg2[..32]);
    candidates.push(e);
    for c in candidates.clone() {
        candidates.push(blake3::derive_key("veil", &c));
    }
    for key in candidates {
        let aead = ChaCha20Poly1305::new(Key::from_slice(&key));
        for n in 0..4u64 {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            assert!(
                aead.decrypt(Nonce::from_slice(&nonce), &sealed[..])
                    .is_err(),
                "a transcript-derived key opened the channel"
            );
        }
    }
    assert!(!contains(&sealed, &plain[..16]), "plaintext in clear");
}

/// Forward secrecy: the service key, stolen later, together with the
/// recorded msg1, does not open recorded traffic (it needs the ephemeral
/// of the real answer, which is gone).
#[test]
fn a_stolen_service_key_does_not_open_recorded_sessions() {
    let s = service(11);
    let mut r = rng(12);
    let mut run = run(&s, &mut r);
    let recorded = run.sharer.seal(b"a piece of the file").expect("seal");
    assert!(run.downloader.open(&recorded).is_ok());
    // The thief replays msg1 to the stolen key with its own randomness.
    let (_, msg2, mut thief) = accept(&s, &run.msg1, seed(&mut r)).expect("accept");
    assert_ne!(msg2, run.msg2);
    assert!(thief.open(&recorded).is_err());
}

#[test]
fn the_channel_refuses_tampering_replay_and_reordering() {
    let s = service(13);
    let mut r = rng(14);
    let mut run = run(&s, &mut r);
    let a = run.downloader.seal(b"one").expect("seal");
    let b = run.downloader.seal(b"two").expect("seal");
    // Reordered: b first.
    assert_eq!(run.sharer.open(&b), Err(RendezvousError::Open));
    let mut run = self::run(&s, &mut r);
    let a2 = run.downloader.seal(b"one").expect("seal");
    assert_ne!(a, a2, "fresh keys per session");
    let mut bent = a2.clone();
    bent[0] ^= 0x80;
    assert_eq!(run.sharer.open(&bent), Err(RendezvousError::Open));
    let mut run = self::run(&s, &mut r);
    let m = run.downloader.seal(b"once").expect("seal");
    assert_eq!(run.sharer.open(&m).expect("open"), b"once");
    assert_eq!(run.sharer.open(&m), Err(RendezvousError::Open), "replay");
    // Both directions, full size.
    let big = vec![0xab; MAX_SESSION_PLAINTEXT];
    let sealed = run.sharer.seal(&big).expect("seal");
    assert!(sealed.len() <= crate::circuit::MAX_DATA_BYTES);
    assert_eq!(run.downloader.open(&sealed).expect("open"), big);
    assert_eq!(
        run.sharer.seal(&[0; MAX_SESSION_PLAINTEXT + 1]),
        Err(RendezvousError::TooLong(MAX_SESSION_PLAINTEXT + 1))
    );
}

/// The introduction point sees msg1's length: it is the same whatever
/// the rendezvous point's descriptor (IPv4 or IPv6, extensions).
#[test]
fn every_introduction_has_the_same_length() {
    let s = service(17);
    let mut r = rng(18);
    let mut lengths = std::collections::BTreeSet::new();
    for len in [1, 100, 300, MAX_DESCRIPTOR_BYTES] {
        let intro = Introduction {
            rendezvous: vec![5; len],
            cookie: [1; 32],
            time_s: 7,
        };
        let (_, msg1) = Introducing::start(&s.public(), &intro, seed(&mut r)).expect("start");
        lengths.insert(msg1.len());
        let (opened, _, _) = accept(&s, &msg1, seed(&mut r)).expect("accept");
        assert_eq!(opened, intro);
    }
    assert_eq!(lengths.len(), 1, "lengths differ: {lengths:?}");
    assert_eq!(lengths.first(), Some(&MAX_INTRODUCE_BYTES));
}

#[test]
fn service_keys_round_trip_and_are_not_node_or_publisher_keys() {
    let s = service(15);
    let back = ServiceKey::from_bytes(&s.to_bytes()).expect("load");
    assert_eq!(back.public(), s.public());
    assert!(ServiceKey::from_bytes(&s.to_bytes()[..40]).is_err());
    // Drawn independently: two services of one node share nothing.
    let mut r = rng(16);
    let a = ServiceKey::generate(&mut r, PowParams::TESTNET);
    let b = ServiceKey::generate(&mut r, PowParams::TESTNET);
    assert_ne!(a.id(), b.id());
    assert_ne!(a.public().x25519, b.public().x25519);
}
