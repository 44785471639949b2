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
            puzzle: Puzzle {
                effort: 7,
                nonce: u64::MAX,
            },
            handshake: vec![9; MAX_INTRODUCE_BYTES],
        },
        ToHop::SetEffort { effort: MAX_EFFORT },
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
        FromHop::IntroduceAck {
            status: IntroStatus::NeedEffort(12),
        },
        FromHop::Introduction {
            puzzle: Puzzle {
                effort: 3,
                nonce: 77,
            },
            handshake: vec![2; MAX_INTRODUCE_BYTES],
        },
        FromHop::IntroLoad { refused: u32::MAX },
        FromHop::RendezvousEstablished,
        FromHop::Joined {
            handshake: vec![7; JOIN_HANDSHAKE_BYTES],
        },
        FromHop::JoinAck { joined: true },
    ];
    for m in &replies {
        let b = m.encode().expect("encode");
        assert_eq!(&FromHop::decode(&b).expect("decode"), m);
        let mut longer = b.clone();
        longer.push(0);
        assert!(FromHop::decode(&longer).is_err(), "trailing bytes");
        assert!(FromHop::decode(&b[..b.len() - 1]).is_err(), "truncated");
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

fn msg1_of(s: &ServiceKey, cookie: u8) -> Vec<u8> {
    let intro = Introduction {
        rendezvous: rp_descriptor(),
        cookie: [cookie; 32],
        time_s: 1_800_000_000,
    };
    Introducing::start(&s.public(), &intro, [cookie; 32])
        .expect("start")
        .1
}

fn zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for b in hash {
        bits += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    bits
}

/// A solution buys one introduction of one msg1 to one service: it does
/// not pass for another msg1, a msg1 altered by one bit, or another
/// service; a claim below the price is refused before any hash, and a
/// claim above the work done is false. The hashes are BLAKE3
/// `derive_key`, as spelled by the one-shot API.
#[test]
fn the_puzzle_is_bound_to_the_service_and_the_sealed_introduction() {
    let s = service(21);
    let sid = s.id();
    let msg1 = msg1_of(&s, 1);
    let subject = puzzle_subject(&sid, &msg1);
    let mut material = sid.as_bytes().to_vec();
    material.extend_from_slice(&msg1);
    assert_eq!(
        subject,
        blake3::derive_key(PUZZLE_SUBJECT_CONTEXT, &material),
        "the subject is derive_key over the id and msg1"
    );
    // Searched harder than checked, so a pass elsewhere would be a
    // 1-in-2^12 coincidence (the outcome is pinned by the fixed seeds).
    let p = solve_puzzle(&subject, 12, 0, u64::MAX).expect("solved");
    let mut m = subject.to_vec();
    m.extend_from_slice(&p.nonce.to_be_bytes());
    assert!(zero_bits(&blake3::derive_key(PowDomain::Introduce.context(), &m)) >= 12);
    assert_eq!(check_puzzle(&sid, &msg1, p, 12), Ok(()));
    assert_eq!(check_puzzle(&sid, &msg1, p, 5), Ok(()), "more than asked");
    // Another introduction to the same service.
    let other = msg1_of(&s, 2);
    assert_eq!(check_puzzle(&sid, &other, p, 12), Err(PuzzleError::False));
    // The same ciphertext, one bit changed.
    let mut bent = msg1.clone();
    bent[40] ^= 1;
    assert_eq!(check_puzzle(&sid, &bent, p, 12), Err(PuzzleError::False));
    // Another service.
    assert_eq!(
        check_puzzle(&service(22).id(), &msg1, p, 12),
        Err(PuzzleError::False)
    );
    // A claim below the price; a claim above the work.
    let low = Puzzle { effort: 4, ..p };
    assert_eq!(
        check_puzzle(&sid, &msg1, low, 12),
        Err(PuzzleError::TooLittle {
            claimed: 4,
            required: 12
        })
    );
    let bold = Puzzle { effort: 30, ..p };
    assert_eq!(check_puzzle(&sid, &msg1, bold, 12), Err(PuzzleError::False));
    // At effort 0 anything passes (and nothing is hashed).
    assert_eq!(check_puzzle(&sid, &msg1, Puzzle::default(), 0), Ok(()));
    // Work in another domain is not work here.
    let node_work = crate::pow::solve(
        PowDomain::Node,
        &subject,
        PowParams {
            difficulty_bits: 12,
        },
        0,
    );
    assert_eq!(
        check_puzzle(
            &sid,
            &msg1,
            Puzzle {
                effort: 12,
                nonce: node_work.nonce
            },
            12
        ),
        Err(PuzzleError::False)
    );
}

/// Effort fields out of range, a `NeedEffort` without a price, an effort
/// with a status that takes none, and a msg1 of another length are
/// decoding errors (and refused when encoding), never panics.
#[test]
fn malformed_effort_fields_are_errors_not_panics() {
    let s = service(23);
    let good = ToHop::Introduce {
        service: s.id(),
        puzzle: Puzzle {
            effort: MAX_EFFORT,
            nonce: 5,
        },
        handshake: vec![4; MAX_INTRODUCE_BYTES],
    }
    .encode()
    .expect("encode");
    assert!(ToHop::decode(&good).is_ok());
    // The effort byte follows the tag and the service id.
    for e in [MAX_EFFORT + 1, 0xff] {
        let mut b = good.clone();
        b[33] = e;
        assert!(matches!(
            ToHop::decode(&b),
            Err(DecodeError::BadValue { .. })
        ));
    }
    // A short msg1 (its length prefix and body cut).
    let mut short = good[..1 + 32 + PUZZLE_BYTES].to_vec();
    short.extend_from_slice(&100u16.to_be_bytes());
    short.extend_from_slice(&[4; 100]);
    assert!(ToHop::decode(&short).is_err());
    assert!(ToHop::decode(&[5, MAX_EFFORT + 1]).is_err());
    assert!(ToHop::decode(&[5]).is_err());
    assert_eq!(
        ToHop::decode(&[5, MAX_EFFORT]).expect("decode"),
        ToHop::SetEffort { effort: MAX_EFFORT }
    );
    // Acknowledgements: [tag, status, effort].
    for bad in [
        [66u8, 3, 0],
        [66, 3, MAX_EFFORT + 1],
        [66, 0, 5],
        [66, 2, 1],
        [66, 4, 0],
    ] {
        assert!(FromHop::decode(&bad).is_err(), "{bad:?}");
    }
    assert!(
        FromHop::decode(&[66, 0]).is_err(),
        "the effort byte is there"
    );
    let mut intro = FromHop::Introduction {
        puzzle: Puzzle::default(),
        handshake: vec![1; MAX_INTRODUCE_BYTES],
    }
    .encode()
    .expect("encode");
    intro[1] = 0xff;
    assert!(FromHop::decode(&intro).is_err());
    assert!(FromHop::decode(&[71, 0, 0]).is_err(), "a short load report");
    // Encoding refuses what decoding would.
    assert!(ToHop::SetEffort { effort: 33 }.encode().is_err());
    assert!(
        FromHop::IntroduceAck {
            status: IntroStatus::NeedEffort(0)
        }
        .encode()
        .is_err()
    );
    assert!(
        ToHop::Introduce {
            service: s.id(),
            puzzle: Puzzle {
                effort: 40,
                nonce: 0
            },
            handshake: vec![0; MAX_INTRODUCE_BYTES],
        }
        .encode()
        .is_err()
    );
    assert!(
        ToHop::Introduce {
            service: s.id(),
            puzzle: Puzzle::default(),
            handshake: vec![0; MAX_INTRODUCE_BYTES - 1],
        }
        .encode()
        .is_err()
    );
}

/// What the introduction point and the relays before it see: every
/// introduction has one length whatever its puzzle, and so has every
/// acknowledgement whatever its status, and each fits one data cell.
#[test]
fn introductions_and_their_answers_have_one_length_whatever_the_effort() {
    let s = service(25);
    let mut lengths = std::collections::BTreeSet::new();
    let mut passed = std::collections::BTreeSet::new();
    for (effort, nonce) in [(0, 0), (1, 9), (24, 1 << 40), (MAX_EFFORT, u64::MAX)] {
        let puzzle = Puzzle { effort, nonce };
        let handshake = msg1_of(&s, effort);
        let b = ToHop::Introduce {
            service: s.id(),
            puzzle,
            handshake: handshake.clone(),
        }
        .encode()
        .expect("encode");
        assert!(b.len() <= crate::circuit::MAX_DATA_BYTES, "one data cell");
        lengths.insert(b.len());
        let f = FromHop::Introduction { puzzle, handshake }
            .encode()
            .expect("encode");
        passed.insert(f.len());
    }
    assert_eq!(
        lengths.into_iter().collect::<Vec<_>>(),
        vec![INTRODUCE_MSG_BYTES]
    );
    assert_eq!(passed.len(), 1);
    let acks: std::collections::BTreeSet<usize> = [
        IntroStatus::Delivered,
        IntroStatus::UnknownService,
        IntroStatus::RateLimited,
        IntroStatus::NeedEffort(1),
        IntroStatus::NeedEffort(MAX_EFFORT),
    ]
    .into_iter()
    .map(|status| {
        FromHop::IntroduceAck { status }
            .encode()
            .expect("encode")
            .len()
    })
    .collect();
    assert_eq!(
        acks.into_iter().collect::<Vec<_>>(),
        vec![INTRODUCE_ACK_BYTES]
    );
}
