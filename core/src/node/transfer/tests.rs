//! Downloads over the in-memory test network: search, rendezvous, pieces
//! verified from several sources; sources that lie or stall; a downloader
//! that breaks the protocol.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::content::{Outboard, content_id};
use crate::node::tests::T0;
use crate::node::{Config, Event};
use crate::pow::PowParams;
use crate::rendezvous::ServiceKey;
use crate::testing::TestNet;
use crate::transfer::{DropReason, PIECE_BYTES, serve};

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// How a sharer's driver answers requests.
#[derive(Clone, Copy, PartialEq)]
enum Sharer {
    Honest,
    /// Flips a byte of every piece it sends.
    Corrupt,
    /// Never answers.
    Silent,
}

struct World {
    net: TestNet,
    now: Millis,
    data: Vec<u8>,
    outboard: Outboard,
    sharers: Vec<(usize, Sharer)>,
    /// Pieces written by the downloader, by offset.
    written: std::collections::BTreeMap<u64, Vec<u8>>,
    done: bool,
    dropped: Vec<(PublisherId, DropReason, bool)>,
}

fn world(sharers: &[(usize, Sharer)], len: usize, tweak: impl FnMut(usize, &mut Config)) -> World {
    let mut net = TestNet::with_config(16, false, tweak).expect("config");
    net.run(T0 + 12_000);
    let data = content(7, len);
    let outboard = Outboard::from_slice(&data);
    let id = content_id(&data);
    let mut now = T0 + 12_000;
    for (n, (i, _)) in sharers.iter().enumerate() {
        let key = ServiceKey::generate(
            &mut ChaCha20Rng::seed_from_u64(n as u64 + 1),
            PowParams::TESTNET,
        );
        let sid = net.nodes_mut()[*i].add_service(now, key);
        net.nodes_mut()[*i].provide(now, &sid, vec![id]);
    }
    net.run_from(now, now + 8_000);
    now += 8_000;
    World {
        net,
        now,
        data,
        outboard,
        sharers: sharers.to_vec(),
        written: Default::default(),
        done: false,
        dropped: Vec::new(),
    }
}

impl World {
    /// Runs `ms` of virtual time in 20 ms steps, playing every node's
    /// driver: sharers answer requests, the downloader keeps pieces.
    fn run(&mut self, ms: Millis) {
        let end = self.now + ms;
        while self.now < end && !self.done {
            let next = self.now + 20;
            self.net.run_from(self.now, next);
            self.now = next;
            for (i, e) in self.net.take_events() {
                match e {
                    Event::PieceWanted {
                        session,
                        req,
                        id,
                        piece,
                    } => {
                        let how = self.sharers.iter().find(|(s, _)| *s == i).map(|(_, h)| *h);
                        let request = crate::transfer::Request { req, id, piece };
                        let mut reply = serve(&request, &self.data[..], &self.outboard).reply;
                        match how {
                            Some(Sharer::Silent) | None => continue,
                            Some(Sharer::Corrupt) => {
                                if let TransferMsg::Piece { encoded, .. } = &mut reply {
                                    let mid = encoded.len() / 2;
                                    encoded[mid] ^= 0x40;
                                }
                            }
                            Some(Sharer::Honest) => {}
                        }
                        let now = self.now;
                        self.net.nodes_mut()[i].serve_piece(now, session, &reply);
                    }
                    Event::PieceVerified { piece, .. } if i == 9 => {
                        self.written.insert(piece.offset(), piece.data().to_vec());
                    }
                    Event::DownloadDone { .. } if i == 9 => self.done = true,
                    Event::SourceDropped {
                        service,
                        reason,
                        proven,
                        ..
                    } if i == 9 => self.dropped.push((service, reason, proven)),
                    _ => {}
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.written.values().flatten().copied().collect()
    }

    fn service_of(&self, i: usize) -> PublisherId {
        let n = self.sharers.iter().position(|(s, _)| *s == i).unwrap();
        ServiceKey::generate(
            &mut ChaCha20Rng::seed_from_u64(n as u64 + 1),
            PowParams::TESTNET,
        )
        .id()
    }
}

fn start(w: &mut World, have: Bitfield) -> DownloadId {
    let id = content_id(&w.data);
    let size = w.data.len() as u64;
    let now = w.now;
    w.net.nodes_mut()[9]
        .download(now, id, size, have)
        .expect("download")
}

#[test]
fn a_file_crosses_the_network_verified_from_two_sources() {
    let mut w = world(
        &[(3, Sharer::Honest), (5, Sharer::Honest)],
        12 * PIECE_BYTES as usize + 77,
        |_, _| {},
    );
    start(&mut w, Bitfield::new(12 * PIECE_BYTES + 77));
    w.run(30_000);
    assert!(w.done, "the download finished");
    assert_eq!(w.bytes(), w.data, "the bytes are the file's");
    let served: Vec<u64> = [3, 5]
        .iter()
        .map(|&i| w.net.nodes()[i].stats().transfer.pieces_served)
        .collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "both sources served: {served:?}"
    );
    assert_eq!(w.net.nodes()[9].stats().transfer.pieces_verified, 13);
    // Nothing is left open at the downloader.
    assert!(
        !w.net.nodes()[9]
            .circuits()
            .iter()
            .any(|c| c.purpose != crate::node::Purpose::General)
    );
}

#[test]
fn a_source_that_serves_corrupt_pieces_is_dropped_and_the_file_completes() {
    let mut w = world(
        &[(3, Sharer::Honest), (5, Sharer::Corrupt)],
        10 * PIECE_BYTES as usize,
        |_, _| {},
    );
    start(&mut w, Bitfield::new(10 * PIECE_BYTES));
    w.run(60_000);
    assert!(w.done, "the download finished");
    assert_eq!(w.bytes(), w.data, "no corrupt byte was kept");
    let liar = w.service_of(5);
    assert!(
        w.dropped
            .iter()
            .any(|(s, r, _)| *s == liar && *r == DropReason::Bad),
        "the corrupt source was dropped as bad: {:?}",
        w.dropped
    );
    assert!(!w.dropped.iter().any(|(s, _, _)| *s == w.service_of(3)));
    assert!(w.net.nodes()[9].stats().transfer.corrupt_pieces_rejected >= 1);
}

#[test]
fn a_silent_source_is_replaced_by_the_other() {
    let mut w = world(
        &[(3, Sharer::Silent), (5, Sharer::Honest)],
        6 * PIECE_BYTES as usize,
        |_, c| {
            c.transfer.schedule.stall_ms = 3_000;
            c.transfer.schedule.max_failures = 1;
        },
    );
    start(&mut w, Bitfield::new(6 * PIECE_BYTES));
    w.run(60_000);
    assert!(w.done, "the download finished");
    assert_eq!(w.bytes(), w.data);
}

#[test]
fn stallers_are_replaced_by_untried_providers_not_retried_first() {
    // One source at a time, eight stallers and one honest provider: each
    // staller is dropped at its first stall (it never served), and the
    // next source is always a provider not tried yet, so the honest one is
    // reached after at most eight stalls, with no staller tried twice.
    let mut w = world(
        &[
            (1, Sharer::Silent),
            (2, Sharer::Silent),
            (3, Sharer::Silent),
            (4, Sharer::Silent),
            (6, Sharer::Silent),
            (7, Sharer::Silent),
            (8, Sharer::Silent),
            (10, Sharer::Silent),
            (5, Sharer::Honest),
        ],
        4 * PIECE_BYTES as usize,
        |_, c| {
            c.transfer.schedule.stall_ms = 3_000;
            c.transfer.max_sources = 1;
        },
    );
    start(&mut w, Bitfield::new(4 * PIECE_BYTES));
    w.run(180_000);
    assert!(w.done, "the download finished");
    assert_eq!(w.bytes(), w.data);
    let stalled: Vec<PublisherId> = w
        .dropped
        .iter()
        .filter(|(_, r, proven)| *r == DropReason::Stalled && !*proven)
        .map(|(s, _, _)| *s)
        .collect();
    let distinct: std::collections::BTreeSet<_> = stalled.iter().collect();
    assert_eq!(
        distinct.len(),
        stalled.len(),
        "a staller tried twice: {stalled:?}"
    );
    assert!(!stalled.is_empty(), "the test reaches stallers first");
    assert!(stalled.len() <= 8 && !stalled.contains(&w.service_of(5)));
}

#[test]
fn a_resumed_download_fetches_only_what_is_missing() {
    let size = 8 * PIECE_BYTES;
    let mut w = world(&[(3, Sharer::Honest)], size as usize, |_, _| {});
    let mut have = Bitfield::new(size);
    for i in [0, 2, 3, 7] {
        have.set(i);
    }
    start(&mut w, have);
    // Long enough for a session that fails to open (connect timeout, 30
    // s) to be retried.
    w.run(90_000);
    assert!(w.done);
    let got: Vec<u64> = w.written.keys().map(|o| o / PIECE_BYTES).collect();
    assert_eq!(got, vec![1, 4, 5, 6], "only the missing pieces came");
    for (off, bytes) in &w.written {
        let o = *off as usize;
        assert_eq!(&w.data[o..o + bytes.len()], &bytes[..]);
    }
}

/// A downloader that sends more requests than its window: the service
/// closes its session and keeps serving others.
#[test]
fn a_downloader_over_its_window_is_cut_off() {
    let mut w = world(&[(3, Sharer::Honest)], 4 * PIECE_BYTES as usize, |_, _| {});
    let node = &mut w.net.nodes_mut()[3];
    let session = SessionId(9_999);
    node.clamp(w.now);
    let (mut cx, p) = node.split();
    p.transfer.opened(&mut cx, session, true);
    let window = cx.config.transfer.schedule.window_per_source as u32;
    let mut framer = Framer::new(MAX_SESSION_PLAINTEXT, MAX_PIECE_MESSAGE);
    for req in 0..=window {
        let r = Request {
            req,
            id: content_id(&w.data),
            piece: 0,
        };
        framer
            .push(&TransferMsg::Request(r).encode().unwrap())
            .unwrap();
    }
    while let Some(chunk) = framer.poll_chunk() {
        p.transfer.data(&mut cx, session, &chunk);
    }
    assert_eq!(cx.stats.transfer.protocol_errors, 1);
    node.settle();
    // Garbage on a fresh session: closed too, no panic.
    let (mut cx, p) = node.split();
    p.transfer.opened(&mut cx, SessionId(10_000), true);
    p.transfer.data(&mut cx, SessionId(10_000), &[0xff; 64]);
    assert_eq!(cx.stats.transfer.protocol_errors, 2);
    node.settle();
    // An honest downloader still gets the file.
    let size = w.data.len() as u64;
    start(&mut w, Bitfield::new(size));
    w.run(90_000);
    assert!(w.done);
    assert_eq!(w.bytes(), w.data);
}

/// A content record that lies about the size (anyone can sign one): every
/// honest source then fails verification, but none is blamed, because no
/// piece ever proved the size.
#[test]
fn a_wrong_size_blames_no_source() {
    let size = 4 * PIECE_BYTES;
    let mut w = world(
        &[(3, Sharer::Honest), (5, Sharer::Honest)],
        size as usize,
        |_, _| {},
    );
    let id = content_id(&w.data);
    let now = w.now;
    w.net.nodes_mut()[9]
        .download(now, id, size + 1, Bitfield::new(size + 1))
        .expect("download");
    w.run(20_000);
    assert!(!w.done);
    assert!(!w.dropped.is_empty(), "the sources were dropped");
    assert!(
        w.dropped
            .iter()
            .all(|(_, r, proven)| *r == DropReason::Bad && !proven),
        "blamed without proof: {:?}",
        w.dropped
    );
}

/// A downloader that stops reading (sends no flow-control credit) while
/// asking for pieces: answered pieces wait in the service's queue and
/// count against its window, so it cannot make the service queue more.
#[test]
fn a_downloader_that_does_not_read_cannot_grow_the_services_queue() {
    let w = world(&[(3, Sharer::Honest)], 4 * PIECE_BYTES as usize, |_, _| {});
    let mut net = w.net;
    let node = &mut net.nodes_mut()[3];
    let session = SessionId(9_999);
    node.clamp(w.now);
    let (mut cx, p) = node.split();
    p.transfer.opened(&mut cx, session, true);
    let window = cx.config.transfer.schedule.window_per_source as u32;
    let id = content_id(&w.data);
    let mut req = 0;
    // Ask, get answered (the session has no circuit: nothing leaves).
    for _ in 0..3 * window {
        let mut framer = Framer::new(MAX_SESSION_PLAINTEXT, MAX_PIECE_MESSAGE);
        framer
            .push(
                &TransferMsg::Request(Request { req, id, piece: 0 })
                    .encode()
                    .unwrap(),
            )
            .unwrap();
        while let Some(chunk) = framer.poll_chunk() {
            p.transfer.data(&mut cx, session, &chunk);
        }
        let reply = serve(&Request { req, id, piece: 0 }, &w.data[..], &w.outboard).reply;
        p.transfer.serve(&mut cx, session, &reply);
        req += 1;
        if cx.stats.transfer.protocol_errors > 0 {
            break;
        }
    }
    assert_eq!(cx.stats.transfer.protocol_errors, 1, "cut off");
    assert!(req <= window + 1, "{req} requests taken");
}
