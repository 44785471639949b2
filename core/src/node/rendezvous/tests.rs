//! Introductions, rendezvous and sessions over the in-memory test network,
//! and each limit and each party's view from the attacker's chair.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::circuit::CircuitMsg;
use crate::node::tests::T0;
use crate::node::{Config, Event, Node, Observation};
use crate::pow::PowParams;
use crate::rendezvous::ServiceKey;
use crate::testing::TestNet;

fn service(seed: u64) -> ServiceKey {
    ServiceKey::generate(&mut ChaCha20Rng::seed_from_u64(seed), PowParams::TESTNET)
}

/// A network where every node has built circuits.
fn ready(n: u8, tweak: impl FnMut(usize, &mut Config)) -> TestNet {
    let mut net = TestNet::with_config(n, false, tweak).expect("config");
    net.run(T0 + 12_000);
    net
}

fn intro_points(net: &TestNet, i: usize, sid: PublisherId) -> Vec<Vec<u8>> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::IntroPoints {
                service,
                descriptors,
            } if *n == i && *service == sid => Some(descriptors.clone()),
            _ => None,
        })
        .next_back()
        .unwrap_or_default()
}

fn opened(net: &TestNet, i: usize) -> Vec<(SessionId, bool)> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::SessionOpened {
                session, inbound, ..
            } if *n == i => Some((*session, *inbound)),
            _ => None,
        })
        .collect()
}

fn received(net: &TestNet, i: usize, s: SessionId) -> Vec<Vec<u8>> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::SessionData { session, bytes } if *n == i && *session == s => {
                Some(bytes.clone())
            }
            _ => None,
        })
        .collect()
}

fn closed(net: &TestNet, i: usize) -> Vec<(SessionId, SessionEnd)> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::SessionClosed { session, reason } if *n == i => Some((*session, *reason)),
            _ => None,
        })
        .collect()
}

/// Sharer 3 runs a service with its introduction points in place;
/// returns the service's public half and the descriptors.
fn with_service(net: &mut TestNet, now: Millis) -> (ServicePublic, Vec<Vec<u8>>, Millis) {
    let key = service(1);
    let public = key.public();
    let sid = net.nodes_mut()[3].add_service(now, key);
    net.run_from(now, now + 4_000);
    let intros = intro_points(net, 3, sid);
    assert!(!intros.is_empty(), "no introduction point came up");
    (public, intros, now + 4_000)
}

/// Downloader 9 opens a session to the service; returns both ends' ids.
fn meet(
    net: &mut TestNet,
    public: ServicePublic,
    intros: Vec<Vec<u8>>,
    now: Millis,
) -> (SessionId, SessionId, Millis) {
    let d = net.nodes_mut()[9]
        .connect(now, public, intros)
        .expect("connect");
    net.run_from(now, now + 5_000);
    assert_eq!(opened(net, 9), vec![(d, false)], "the downloader's session");
    let inbound = opened(net, 3);
    assert_eq!(inbound.len(), 1, "the service's session");
    (d, inbound[0].0, now + 5_000)
}

fn rp_of(node: &Node) -> Option<crate::identity::NodeId> {
    node.circuits()
        .iter()
        .find(|c| c.purpose == Purpose::Meet)
        .and_then(|c| c.hops.last().copied())
}

#[test]
fn a_downloader_and_a_service_meet_and_talk_both_ways() {
    let mut net = ready(16, |_, _| {});
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    assert_eq!(intros.len(), 3, "three introduction points");
    let (d, s, now) = meet(&mut net, public, intros, now);
    net.nodes_mut()[9]
        .session_send(d, b"want piece 0")
        .expect("send");
    net.run_from(now, now + 1_000);
    assert_eq!(received(&net, 3, s), vec![b"want piece 0".to_vec()]);
    let big = vec![0x5a; crate::rendezvous::MAX_SESSION_PLAINTEXT];
    for _ in 0..20 {
        net.nodes_mut()[3].session_send(s, &big).expect("send");
    }
    net.run_from(now + 1_000, now + 2_000);
    assert_eq!(received(&net, 9, d), vec![big; 20]);
    // The meeting: the downloader's rendezvous point spliced once, and
    // the service reached it through a four-hop circuit of its own.
    let rp = rp_of(&net.nodes()[9]).expect("a meet circuit");
    let spliced: Vec<usize> = (0..16)
        .filter(|&i| net.nodes()[i].stats().rendezvous.splices > 0)
        .collect();
    assert_eq!(spliced.len(), 1);
    assert_eq!(net.nodes()[spliced[0]].node_id(), rp);
    let join = net.nodes()[3]
        .circuits()
        .into_iter()
        .find(|c| c.purpose == Purpose::Join)
        .expect("a join circuit");
    assert_eq!(join.hops.len(), 4);
    assert_eq!(join.hops.last(), Some(&rp));
    // No introduction circuit is left once the session is open.
    assert!(
        !net.nodes()[9]
            .circuits()
            .iter()
            .any(|c| c.purpose == Purpose::Introduce)
    );
    // Closing one end closes the other.
    net.nodes_mut()[9].close_session(now + 2_000, d);
    net.run_from(now + 2_000, now + 4_000);
    assert_eq!(closed(&net, 9), vec![(d, SessionEnd::Closed)]);
    assert_eq!(closed(&net, 3), vec![(s, SessionEnd::CircuitClosed)]);
}

/// Every relay's view (each cell addressed to it, in clear after its
/// onion layer): none holds the session's plaintext; the introduction
/// point holds neither the cookie nor the rendezvous point's id; the
/// rendezvous point never sees the service's node id.
#[test]
fn no_relay_sees_the_session_and_the_introduction_point_cannot_find_the_meeting() {
    let mut net = ready(16, |_, _| {});
    for n in net.nodes_mut() {
        n.set_observing(true);
    }
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let (d, s, now) = meet(&mut net, public, intros, now);
    let secret = b"VEIL-PLAINTEXT-MARKER-0123456789".to_vec();
    net.nodes_mut()[9].session_send(d, &secret).expect("send");
    net.nodes_mut()[3].session_send(s, &secret).expect("send");
    net.run_from(now, now + 1_000);
    assert_eq!(received(&net, 3, s), vec![secret.clone()]);
    let rp = rp_of(&net.nodes()[9]).expect("rp");
    let rp_index = (0..16).find(|&i| net.nodes()[i].node_id() == rp).unwrap();
    let seen: Vec<Vec<Observation>> = (0..16).map(|i| net.take_observations(i)).collect();
    // The cookie, as the rendezvous point got it.
    let mut cookie = None;
    for o in &seen[rp_index] {
        if let Observation::Recognised { payload, .. } = o
            && let Ok(CircuitMsg::Rendezvous { bytes }) = CircuitMsg::decode(payload)
            && let Ok(ToHop::EstablishRendezvous { cookie: c }) = ToHop::decode(&bytes)
        {
            cookie = Some(c);
        }
        assert!(
            !contains(o.bytes(), net.nodes()[3].node_id().as_bytes()),
            "the rendezvous point saw the service's node id"
        );
    }
    let cookie = cookie.expect("the rendezvous point got a cookie");
    let mut introduced = 0;
    // Every node's relay side but the service's (the downloader's relay
    // side may be the introduction point: a loop, seeing only what any
    // introduction point sees).
    for (i, list) in seen.iter().enumerate().filter(|(i, _)| *i != 3) {
        for o in list {
            assert!(!contains(o.bytes(), &secret), "node {i} saw plaintext");
            if let Observation::Recognised { payload, .. } = o
                && let Ok(CircuitMsg::Rendezvous { bytes }) = CircuitMsg::decode(payload)
                && let Ok(ToHop::Introduce { handshake, .. }) = ToHop::decode(&bytes)
            {
                // This node is the introduction point.
                introduced += 1;
                assert!(!contains(&handshake, &cookie), "cookie in the introduction");
                assert!(
                    !contains(&handshake, rp.as_bytes()),
                    "rendezvous point in clear"
                );
                assert!(!contains(o.bytes(), &cookie));
            }
        }
    }
    assert_eq!(introduced, 1, "one introduction, seen by one node");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An introducer who floods one service: the introduction points pass at
/// most `intros_per_sec` for it, the service builds at most
/// `accepts_per_sec` circuits for them, and a later honest downloader
/// still gets in.
#[test]
fn an_introduction_flood_is_limited_and_the_service_keeps_serving() {
    let mut net = ready(16, |_, c| {
        c.rendezvous.intros_per_sec = 1;
        c.rendezvous.accepts_per_sec = 1;
    });
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    for _ in 0..12 {
        net.nodes_mut()[9]
            .connect(now, public, intros.clone())
            .expect("connect");
    }
    net.run_from(now, now + 600);
    let refused: u64 = net
        .nodes()
        .iter()
        .map(|n| n.stats().rendezvous.introductions_refused)
        .sum();
    let passed: u64 = net
        .nodes()
        .iter()
        .map(|n| n.stats().rendezvous.introductions_passed)
        .sum();
    assert!(refused > 0, "no introduction point refused");
    // Three points, two seconds' burst each.
    assert!(passed <= 6 + 3, "{passed} introductions passed");
    let joins = net.nodes()[3]
        .circuits()
        .iter()
        .filter(|c| c.purpose == Purpose::Join)
        .count();
    // The service's own bucket: two seconds' burst plus one per second.
    assert!(joins <= 3, "the service built {joins} join circuits");
    assert!(net.nodes()[3].stats().rendezvous.accepts_refused > 0);
    // Later, an honest downloader gets a session.
    let later = now + 40_000;
    net.run_from(now + 600, later);
    let before = opened(&net, 10).len();
    net.nodes_mut()[10]
        .connect(later, public, intros)
        .expect("connect");
    net.run_from(later, later + 5_000);
    assert_eq!(opened(&net, 10).len(), before + 1, "the honest one got in");
}

/// A hostile introduction point replays an introduction it passed: the
/// service acts on it once.
#[test]
fn a_replayed_introduction_is_refused() {
    let mut net = ready(16, |_, _| {});
    let key = service(1);
    let public = key.public();
    let (_, intros, now) = with_service(&mut net, T0 + 12_000);
    let node = &mut net.nodes_mut()[3];
    let intro_k = node
        .circuits()
        .iter()
        .find(|c| c.purpose == Purpose::Intro)
        .map(|c| c.id.0)
        .expect("an intro circuit");
    let (_, msg1) = Introducing::start(
        &public,
        &Introduction {
            rendezvous: intros[0].clone(),
            cookie: [7; 32],
            time_s: now / 1000,
        },
        [1; 32],
    )
    .expect("start");
    let bytes = FromHop::Introduction {
        puzzle: Puzzle::default(),
        handshake: msg1,
    }
    .encode()
    .expect("encode");
    node.clamp(now);
    for _ in 0..3 {
        let (mut cx, p) = node.split();
        p.rend.on(
            &mut cx,
            RendIn::FromHop {
                circuit: intro_k,
                bytes: bytes.clone(),
            },
        );
        node.settle();
    }
    assert_eq!(node.stats().rendezvous.accepts_refused, 2, "two replays");
    let joining = node
        .rend
        .sessions
        .values()
        .filter(|s| matches!(s.state, State::Joining { .. }))
        .count();
    assert_eq!(joining, 1);
}

/// Registrations and cookies a relay holds are capped; a forged
/// registration is refused; a join with an unknown cookie splices
/// nothing; an honest cookie after the flood still works.
#[test]
fn a_relay_bounds_registrations_and_cookies_and_refuses_forgeries() {
    let mut net = ready(4, |_, c| {
        c.rendezvous.max_cookies = 8;
        c.rendezvous.max_intro_registrations = 2;
    });
    let now = T0 + 12_000;
    let node = &mut net.nodes_mut()[1];
    node.clamp(now);
    let me = node.node_id();
    let at = |node: &mut Node, k: u64, msg: ToHop| {
        let (mut cx, p) = node.split();
        p.rend.on(
            &mut cx,
            RendIn::AtHop {
                circuit: k,
                bytes: msg.encode().expect("encode"),
            },
        );
        node.settle();
    };
    // A registration signed for another introduction point.
    let other = crate::identity::NodeId::from_bytes([9; 32]);
    at(node, 1, service(2).establish_intro(other));
    assert_eq!(node.rend.registrations.len(), 0);
    assert_eq!(node.stats().rendezvous.refused, 1);
    for (k, seed) in [(2, 3), (3, 4), (4, 5)] {
        at(node, k, service(seed).establish_intro(me));
    }
    assert_eq!(node.rend.registrations.len(), 2, "capped at two");
    // Cookies: eight held, the rest refused.
    for k in 10..30u64 {
        at(
            node,
            k,
            ToHop::EstablishRendezvous {
                cookie: [k as u8; 32],
            },
        );
    }
    assert_eq!(node.rend.cookies.len(), 8);
    // A join with a cookie nobody left.
    at(
        node,
        40,
        ToHop::Join {
            cookie: [0xee; 32],
            handshake: vec![0; crate::rendezvous::JOIN_HANDSHAKE_BYTES],
        },
    );
    assert_eq!(node.stats().rendezvous.splices, 0);
    // A circuit holding a cookie cannot also introduce or register.
    at(node, 10, service(6).establish_intro(me));
    assert!(!node.rend.registered_on.contains_key(&10));
    // Once the cookies expire, a new one is taken.
    let later = now + node.config.rendezvous.cookie_ttl_ms + 1;
    node.clamp(later);
    at(node, 50, ToHop::EstablishRendezvous { cookie: [0xab; 32] });
    assert!(node.rend.cookies.contains_key(&[0xab; 32]));
    // Garbage is refused without a panic.
    let (mut cx, p) = node.split();
    p.rend.on(
        &mut cx,
        RendIn::AtHop {
            circuit: 60,
            bytes: vec![0xff; 40],
        },
    );
}

/// A rendezvous point that alters session data (it re-seals every cell,
/// so it can): the receiving end detects it and ends the session.
#[test]
fn a_rendezvous_point_that_alters_data_is_caught() {
    let mut net = ready(16, |_, _| {});
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let (d, _s, now) = meet(&mut net, public, intros, now);
    let node = &mut net.nodes_mut()[9];
    let k = node.rend.session_circuit(d).expect("open");
    node.clamp(now);
    let (mut cx, p) = node.split();
    p.rend.on(
        &mut cx,
        RendIn::Data {
            circuit: k,
            bytes: vec![0x42; 64],
        },
    );
    node.settle();
    assert_eq!(node.stats().rendezvous.tampered, 1);
    net.run_from(now, now + 2_000);
    assert_eq!(closed(&net, 9), vec![(d, SessionEnd::Tampered)]);
    assert!(
        closed(&net, 3)
            .iter()
            .any(|(_, r)| *r == SessionEnd::CircuitClosed)
    );
}

/// A downloader given only dead or bogus introduction points is told so,
/// and keeps nothing.
#[test]
fn a_session_with_no_usable_introduction_point_fails_cleanly() {
    let mut net = ready(16, |_, _| {});
    let now = T0 + 12_000;
    let public = service(1).public();
    let d = net.nodes_mut()[9]
        .connect(now, public, vec![vec![1, 2, 3]])
        .expect("connect");
    net.run_from(now, now + 2_000);
    assert_eq!(closed(&net, 9), vec![(d, SessionEnd::Unreachable)]);
    // A real relay that is no introduction point for this service.
    let stranger = net.nodes()[5].descriptor().to_bytes();
    let d2 = net.nodes_mut()[9]
        .connect(now + 2_000, public, vec![stranger])
        .expect("connect");
    net.run_from(now + 2_000, now + 6_000);
    assert!(closed(&net, 9).contains(&(d2, SessionEnd::Unreachable)));
    let left = net.nodes()[9]
        .circuits()
        .iter()
        .filter(|c| c.purpose != Purpose::General)
        .count();
    assert_eq!(left, 0, "no rendezvous circuit left behind");
    assert!(net.nodes()[9].rend.sessions.is_empty());
    assert_eq!(
        net.nodes_mut()[9].connect(now, public, vec![]),
        Err(ConnectError::NoIntroPoints)
    );
}

/// A service that never joins (here: it froze after its introduction
/// points came up): the downloader gives up after `connect_timeout_ms`
/// and keeps no circuit or state.
#[test]
fn a_service_that_never_joins_times_out_cleanly() {
    let mut net = ready(16, |_, _| {});
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    net.kill_silently(3);
    let d = net.nodes_mut()[9]
        .connect(now, public, intros)
        .expect("connect");
    let timeout = net.nodes()[9].config.rendezvous.connect_timeout_ms;
    net.run_from(now, now + timeout + 2_000);
    assert_eq!(closed(&net, 9), vec![(d, SessionEnd::Timeout)]);
    assert_eq!(net.nodes()[9].stats().rendezvous.sessions_failed, 1);
    assert!(net.nodes()[9].rend.sessions.is_empty());
    assert!(net.nodes()[9].rend.circuits.is_empty());
    assert!(
        !net.nodes()[9]
            .circuits()
            .iter()
            .any(|c| c.purpose != Purpose::General)
    );
}

/// Downloaders that open sessions and keep them: the service holds at
/// most `max_inbound_sessions`, drops further introductions, and takes new ones
/// once a session ends.
#[test]
fn a_service_holds_at_most_max_sessions() {
    let mut net = ready(16, |_, c| {
        c.rendezvous.max_inbound_sessions = 2;
        c.rendezvous.accepts_per_sec = 100;
    });
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    for i in [8, 9, 10, 11] {
        net.nodes_mut()[i]
            .connect(now, public, intros.clone())
            .expect("connect");
    }
    net.run_from(now, now + 5_000);
    let inbound = opened(&net, 3);
    assert_eq!(inbound.len(), 2, "two sessions at the service");
    assert!(net.nodes()[3].stats().rendezvous.accepts_refused >= 2);
    // One ends; a new downloader gets in.
    let now = now + 5_000;
    let first = inbound[0].0;
    net.nodes_mut()[3].close_session(now, first);
    net.run_from(now, now + 1_000);
    net.nodes_mut()[12]
        .connect(now + 1_000, public, intros)
        .expect("connect");
    net.run_from(now + 1_000, now + 6_000);
    assert_eq!(opened(&net, 12).len(), 1, "room again");
}

/// The whole way in: a service provides a content id; a downloader
/// searches for the exact id, gets the signed provider record (service key
/// and introduction points) back through index holders, and opens a
/// session with it. The sharer holds none of its own provider records.
#[test]
fn a_downloader_finds_a_provider_by_content_id_and_meets_it() {
    let mut net = ready(16, |_, _| {});
    let now = T0 + 12_000;
    let key = service(1);
    let public = key.public();
    let sid = net.nodes_mut()[3].add_service(now, key);
    let id = crate::content::ContentId::from_bytes([0x77; 32]);
    net.nodes_mut()[3].provide(now, &sid, vec![id]);
    net.run_from(now, now + 8_000);
    let now = now + 8_000;
    assert_eq!(
        net.nodes()[3].providers_held(),
        0,
        "the sharer holds its own"
    );
    let holders = net
        .nodes()
        .iter()
        .filter(|n| n.providers_held() > 0)
        .count();
    assert!(holders >= 2, "provider record on {holders} index holders");
    let q = crate::search::Query::Content(id);
    let search = net.nodes_mut()[9].search(now, q).expect("search");
    net.run_from(now, now + 6_000);
    let now = now + 6_000;
    let found: Vec<crate::provider::SignedProvider> = net
        .events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::ProvidersFound {
                search: s,
                providers,
            } if *n == 9 && *s == search => Some(providers.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let p = found.first().expect("a provider record came back");
    assert_eq!(p.service(), public);
    assert_eq!(p.record().content_id, id);
    assert!(!p.record().intro_points.is_empty());
    let d = net.nodes_mut()[9]
        .connect(now, p.service(), p.record().intro_points.clone())
        .expect("connect");
    net.run_from(now, now + 5_000);
    assert_eq!(opened(&net, 9), vec![(d, false)]);
    // A service that provides content hands its sessions to the transfer
    // part, not to the driver.
    assert_eq!(net.nodes()[3].stats().rendezvous.sessions_opened, 1);
    assert!(opened(&net, 3).is_empty());
}

// ---- from the hostile review: each attack, and that it now fails ----

fn inject_intro(net: &mut TestNet, i: usize, k: u64, now: Millis, msg1: Vec<u8>) {
    inject_solved(net, i, k, now, Puzzle::default(), msg1);
}

/// As the service's introduction point would pass it on, with `puzzle`.
fn inject_solved(net: &mut TestNet, i: usize, k: u64, now: Millis, puzzle: Puzzle, msg1: Vec<u8>) {
    let node = &mut net.nodes_mut()[i];
    node.clamp(now);
    let bytes = FromHop::Introduction {
        puzzle,
        handshake: msg1,
    }
    .encode()
    .expect("encode");
    let (mut cx, p) = node.split();
    p.rend.on(&mut cx, RendIn::FromHop { circuit: k, bytes });
    node.settle();
}

fn intro_circuit(node: &Node) -> u64 {
    node.circuits()
        .iter()
        .find(|c| c.purpose == Purpose::Intro)
        .map(|c| c.id.0)
        .expect("an intro circuit")
}

/// Relays that are not the service (3) nor its guards or vanguards.
fn free_relays(net: &TestNet) -> Vec<usize> {
    let n3 = &net.nodes()[3];
    let mut avoid: Vec<crate::identity::NodeId> = n3.guards().iter().map(|g| g.id).collect();
    avoid.extend(n3.vanguards());
    (0..net.nodes().len())
        .filter(|&i| i != 3 && !avoid.contains(&net.nodes()[i].node_id()))
        .collect()
}

fn msg1_to(public: &ServicePublic, rp: Vec<u8>, cookie: u8, time_s: u64) -> Vec<u8> {
    let intro = Introduction {
        rendezvous: rp,
        cookie: [cookie; 32],
        time_s,
    };
    Introducing::start(public, &intro, [cookie; 32])
        .expect("start")
        .1
}

/// Introductions naming honest relays as rendezvous points with cookies
/// nobody left there: each rendezvous point refuses the join, so no
/// session opens, none holds a slot past `connect_timeout_ms`, and the
/// node's own downloads and honest downloaders are unaffected.
#[test]
fn introductions_with_a_cookie_nobody_left_hold_no_session() {
    let mut net = ready(16, |_, c| {
        c.rendezvous.max_inbound_sessions = 4;
        c.rendezvous.accepts_per_sec = 100;
    });
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let k = intro_circuit(&net.nodes()[3]);
    for (j, &i) in free_relays(&net).iter().take(4).enumerate() {
        let rp = net.nodes()[i].descriptor().to_bytes();
        inject_intro(
            &mut net,
            3,
            k,
            now,
            msg1_to(&public, rp, 0x40 + j as u8, now / 1000),
        );
    }
    net.run_from(now, now + 5_000);
    assert!(opened(&net, 3).is_empty(), "no session opened");
    assert!(net.nodes()[3].rend.sessions.is_empty(), "no slot held");
    let d = net.nodes_mut()[10]
        .connect(now + 5_000, public, intros.clone())
        .expect("connect");
    net.run_from(now + 5_000, now + 10_000);
    assert_eq!(opened(&net, 10), vec![(d, false)], "the honest one got in");
    assert!(
        net.nodes_mut()[3]
            .connect(now + 10_000, public, intros)
            .is_ok()
    );
}

/// A hostile introduction point replays an introduction after the
/// service's connect timeout, and sends one that is too old: both are
/// refused.
#[test]
fn a_replayed_or_stale_introduction_is_refused() {
    let mut net = ready(16, |_, _| {});
    let (public, _intros, now) = with_service(&mut net, T0 + 12_000);
    let k = intro_circuit(&net.nodes()[3]);
    let rp = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    let msg1 = msg1_to(&public, rp.clone(), 7, now / 1000);
    inject_intro(&mut net, 3, k, now, msg1.clone());
    assert_eq!(net.nodes()[3].rend.sessions.len(), 1);
    let later = now + net.nodes()[3].config().rendezvous.connect_timeout_ms + 1_000;
    net.run_from(now, later);
    inject_intro(&mut net, 3, k, later, msg1);
    assert_eq!(
        net.nodes()[3].stats().rendezvous.accepts_refused,
        1,
        "replay"
    );
    let skew = crate::record::MAX_CLOCK_SKEW_SECS;
    let stale = msg1_to(&public, rp, 8, later / 1000 - skew - 1);
    inject_intro(&mut net, 3, k, later, stale);
    assert_eq!(
        net.nodes()[3].stats().rendezvous.accepts_refused,
        2,
        "stale"
    );
    let joining = net.nodes()[3]
        .rend
        .sessions
        .values()
        .filter(|s| matches!(s.state, State::Joining { .. }))
        .count();
    assert_eq!(joining, 0, "acted on once, and that one has ended");
}

/// An introducer names the service's own guard as rendezvous point: the
/// service builds to it like to any relay, so whether a join circuit
/// starts says nothing about its guard.
#[test]
fn naming_the_services_guard_as_rendezvous_point_tells_nothing() {
    let mut net = ready(16, |_, c| c.rendezvous.accepts_per_sec = 100);
    let (public, _intros, now) = with_service(&mut net, T0 + 12_000);
    let k = intro_circuit(&net.nodes()[3]);
    let guard = net.nodes()[3].guards()[0].clone();
    let vanguard = net.nodes()[3].vanguards()[0];
    let vanguard = (0..16)
        .find(|&i| net.nodes()[i].node_id() == vanguard)
        .map(|i| net.nodes()[i].descriptor().to_bytes())
        .expect("vanguard");
    let other = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    for (j, rp) in [guard.descriptor.clone(), vanguard, other]
        .into_iter()
        .enumerate()
    {
        let before = net.nodes()[3]
            .circuits()
            .iter()
            .filter(|c| c.purpose == Purpose::Join)
            .count();
        inject_intro(
            &mut net,
            3,
            k,
            now,
            msg1_to(&public, rp, j as u8 + 1, now / 1000),
        );
        let after = net.nodes()[3]
            .circuits()
            .iter()
            .filter(|c| c.purpose == Purpose::Join)
            .count();
        assert_eq!(
            after,
            before + 1,
            "rendezvous point {j}: a join circuit starts"
        );
    }
    assert_eq!(net.nodes()[3].stats().rendezvous.sessions_failed, 0);
}

/// After the meeting, a spliced circuit takes nothing but session data
/// and probes: a request for a new role tears it down (and its partner).
/// A join whose splice fails is refused, not acknowledged.
#[test]
fn a_spliced_circuit_takes_nothing_but_the_session() {
    let mut net = ready(16, |_, _| {});
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let (d, s, now) = meet(&mut net, public, intros, now);
    let rp = rp_of(&net.nodes()[9]).expect("rp");
    let rpi = (0..16).find(|&i| net.nodes()[i].node_id() == rp).unwrap();
    let k = net.nodes()[9].rend.session_circuit(d).expect("open");
    let node = &mut net.nodes_mut()[9];
    node.clamp(now);
    let bytes = ToHop::EstablishRendezvous { cookie: [0x77; 32] }
        .encode()
        .unwrap();
    node.out.act(Action::RendToHop(k, bytes));
    node.settle();
    net.run_from(now, now + 2_000);
    assert!(!net.nodes()[rpi].rend.cookies.contains_key(&[0x77; 32]));
    assert!(closed(&net, 9).contains(&(d, SessionEnd::CircuitClosed)));
    assert!(closed(&net, 3).contains(&(s, SessionEnd::CircuitClosed)));
    // A cookie whose joiner cannot be spliced (an unknown circuit).
    let node = &mut net.nodes_mut()[rpi];
    node.clamp(now + 2_000);
    let at = |node: &mut Node, k: u64, msg: ToHop| {
        let (mut cx, p) = node.split();
        p.rend.on(
            &mut cx,
            RendIn::AtHop {
                circuit: k,
                bytes: msg.encode().expect("encode"),
            },
        );
        node.settle();
    };
    at(
        node,
        500_000,
        ToHop::EstablishRendezvous { cookie: [0x78; 32] },
    );
    let splices = node.stats().rendezvous.splices;
    at(
        node,
        500_001,
        ToHop::Join {
            cookie: [0x78; 32],
            handshake: vec![0; crate::rendezvous::JOIN_HANDSHAKE_BYTES],
        },
    );
    assert_eq!(node.stats().rendezvous.splices, splices, "nothing spliced");
}

/// Introductions that do not open with the service key cost the sender,
/// not the service's budget of circuit builds.
#[test]
fn garbage_introductions_do_not_spend_the_accept_budget() {
    let mut net = ready(16, |_, _| {});
    let (public, _intros, now) = with_service(&mut net, T0 + 12_000);
    let k = intro_circuit(&net.nodes()[3]);
    let burst = 2 * net.nodes()[3].config().rendezvous.accepts_per_sec as usize;
    for j in 0..burst * 3 {
        inject_intro(
            &mut net,
            3,
            k,
            now,
            vec![j as u8; crate::rendezvous::MAX_INTRODUCE_BYTES],
        );
    }
    let rp = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    inject_intro(&mut net, 3, k, now, msg1_to(&public, rp, 9, now / 1000));
    assert_eq!(
        net.nodes()[3].rend.sessions.len(),
        1,
        "the valid one was taken"
    );
}

/// A downloader that opens a session and then sends nothing does not
/// hold the service's slot: after `session_idle_ms` both ends close it.
#[test]
fn an_idle_session_is_closed() {
    let mut net = ready(16, |_, _| {});
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let (d, s, now) = meet(&mut net, public, intros, now);
    let idle = net.nodes()[3].config().rendezvous.session_idle_ms;
    net.run_from(now, now + idle + 2_000);
    assert!(closed(&net, 3).contains(&(s, SessionEnd::Idle)));
    assert!(closed(&net, 9).iter().any(|(x, _)| *x == d));
    assert!(net.nodes()[3].rend.sessions.is_empty());
}

/// An introduction point that says "delivered" and drops the
/// introduction: after `intro_answer_ms` the downloader tries the next
/// point and meets the service.
#[test]
fn a_point_that_swallows_introductions_is_passed_over() {
    let mut net = ready(16, |_, _| {});
    let key = service(1);
    let sid = key.id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    // The first listed point forwards into a circuit that does not exist.
    let first = crate::descriptor::Descriptor::decode(&intros[0])
        .ok()
        .map(|u| u.claimed_id())
        .expect("descriptor");
    let ip = (0..16)
        .find(|&i| net.nodes()[i].node_id() == first)
        .unwrap();
    net.nodes_mut()[ip]
        .rend
        .registrations
        .get_mut(&sid)
        .expect("registered here")
        .circuit = 999_999;
    let d = net.nodes_mut()[9]
        .connect(now, public, intros)
        .expect("connect");
    let wait = net.nodes()[9].config().rendezvous.intro_answer_ms;
    net.run_from(now, now + wait + 6_000);
    assert_eq!(
        opened(&net, 9),
        vec![(d, false)],
        "met through the next point"
    );
}

// ---- the client puzzle ----

/// The node index of each of the service's introduction points.
fn point_nodes(net: &TestNet, intros: &[Vec<u8>]) -> Vec<usize> {
    intros
        .iter()
        .map(|d| {
            let id = crate::descriptor::Descriptor::decode(d)
                .ok()
                .map(|u| u.claimed_id())
                .expect("descriptor");
            (0..net.nodes().len())
                .find(|&i| net.nodes()[i].node_id() == id)
                .expect("a point of the network")
        })
        .collect()
}

/// `msg` arrives at node `i` as the last hop of relayed circuit `k` (a
/// circuit of the sender's: here a made-up id); returns what the node
/// answers on it, and routes the rest.
fn at_point(net: &mut TestNet, i: usize, k: u64, now: Millis, msg: &ToHop) -> Vec<FromHop> {
    let node = &mut net.nodes_mut()[i];
    node.clamp(now);
    let (mut cx, p) = node.split();
    p.rend.on(
        &mut cx,
        RendIn::AtHop {
            circuit: k,
            bytes: msg.encode().expect("encode"),
        },
    );
    let mut answers = Vec::new();
    let mut rest = Vec::new();
    while let Some(a) = node.out.next_action() {
        match a {
            Action::RendToClient(c, bytes) if c == k => {
                answers.push(FromHop::decode(&bytes).expect("decodes"))
            }
            other => rest.push(other),
        }
    }
    for a in rest {
        node.route(a);
    }
    node.settle();
    answers
}

fn stats(net: &TestNet, i: usize) -> RendezvousStats {
    net.nodes()[i].stats().rendezvous.clone()
}

fn price(net: &TestNet, sid: &PublisherId) -> u8 {
    net.nodes()[3].rend.services[sid].price.current()
}

/// Introductions nobody will follow up, each its own (cookie and time
/// differ), with the puzzle left at zero: what a cheap flooder sends.
fn cheap(public: &ServicePublic, rp: &[u8], j: u32, now: Millis) -> ToHop {
    let msg1 = msg1_to(
        public,
        rp.to_vec(),
        (j % 251) as u8,
        now / 1000 + u64::from(j / 251),
    );
    ToHop::Introduce {
        service: public.id(),
        puzzle: Puzzle::default(),
        handshake: msg1,
    }
}

fn puzzle_net() -> TestNet {
    ready(16, |_, c| {
        c.rendezvous.accepts_per_sec = 1;
        c.rendezvous.effort_period_ms = 1_000;
        c.rendezvous.max_effort = 8;
    })
}

/// Floods the point `ip` with `per_100ms` cheap introductions every
/// 100 ms from `now` for `ms`; returns the time after and how many went.
fn flood(
    net: &mut TestNet,
    ip: usize,
    public: &ServicePublic,
    rp: &[u8],
    (from, ms): (Millis, Millis),
    per_100ms: u32,
    sent: &mut u32,
) -> Millis {
    let mut t = from;
    while t < from + ms {
        for _ in 0..per_100ms {
            let msg = cheap(public, rp, *sent, t);
            at_point(net, ip, 7_000_000 + u64::from(*sent), t, &msg);
            *sent += 1;
        }
        net.run_from(t, t + 100);
        t += 100;
    }
    t
}

/// An attacker floods one introduction point with introductions that do
/// no work. While the price is zero they reach the service and spend its
/// budget, so the price rises and reaches every point; from then on the
/// point refuses every one of them (counted), none reaches the service,
/// and an honest downloader, told the price, solves the puzzle and meets
/// the service in the middle of the flood. Free refusals let the price
/// fall back to `effort_step`, never lower, while the flood goes on.
#[test]
fn a_flood_raises_the_price_and_an_honest_downloader_still_gets_in() {
    let mut net = puzzle_net();
    let key = service(1);
    let sid = key.id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let points = point_nodes(&net, &intros);
    let ip = points[0];
    let rp = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    let mut sent = 0;
    let now = flood(&mut net, ip, &public, &rp, (now, 3_000), 10, &mut sent);
    let raised = price(&net, &sid);
    assert!(raised > 0, "the price rose under the flood");
    for &i in &points {
        assert_eq!(
            net.nodes()[i].rend.registrations[&sid].effort,
            raised,
            "point {i} heard the price"
        );
    }
    assert!(stats(&net, 3).accepts_refused > 0, "the budget was spent");
    // From now on, every cheap introduction stops at the point.
    let received = stats(&net, 3).introductions_received;
    let refused = stats(&net, ip).introductions_under_effort;
    let before = sent;
    // (Through the other points, so that the count at this one is the
    // attacker's alone.)
    let d = net.nodes_mut()[9]
        .connect(now, public, intros[1..].to_vec())
        .expect("connect");
    let now = flood(&mut net, ip, &public, &rp, (now, 4_000), 10, &mut sent);
    assert_eq!(
        stats(&net, ip).introductions_under_effort - refused,
        u64::from(sent - before),
        "every cheap introduction refused at the point"
    );
    // Free refusals do not hold the price (only work near it does), but
    // keep it at `effort_step` at least: the flood stays out.
    assert!(price(&net, &sid) >= 2, "a free flood keeps a price");
    assert_eq!(opened(&net, 9), vec![(d, false)], "the honest one got in");
    assert!(stats(&net, 9).puzzles_solved >= 1, "after solving");
    assert_eq!(
        stats(&net, 3).introductions_received,
        received + 1,
        "only the honest introduction reached the service"
    );
    assert_eq!(stats(&net, 3).accepts_under_effort, 0);
    // No puzzle search is left running.
    net.run_from(now, now + 1_000);
    assert!(
        net.nodes()[9]
            .timers
            .get(crate::node::timers::Timer::Puzzle)
            .is_none()
    );
}

/// After the flood, the price falls a bit per quiet period back to zero,
/// the points hear it, and the next downloader gets in without solving.
#[test]
fn the_price_decays_when_the_flood_stops() {
    let mut net = puzzle_net();
    let key = service(1);
    let sid = key.id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let points = point_nodes(&net, &intros);
    let rp = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    let mut sent = 0;
    let now = flood(
        &mut net,
        points[0],
        &public,
        &rp,
        (now, 4_000),
        10,
        &mut sent,
    );
    let raised = price(&net, &sid);
    assert!(raised >= 2, "the price rose to {raised}");
    // Quiet: held a period or two (the last reports), then one bit per
    // period (1 s) down to zero.
    let mut seen = vec![raised];
    let mut t = now;
    while t < now + (u64::from(raised) + 5) * 1_000 {
        net.run_from(t, t + 500);
        t += 500;
        if seen.last() != Some(&price(&net, &sid)) {
            seen.push(price(&net, &sid));
        }
    }
    let falling: Vec<u8> = (0..=raised).rev().collect();
    assert_eq!(seen, falling, "one bit at a time");
    for &i in &points {
        assert_eq!(net.nodes()[i].rend.registrations[&sid].effort, 0);
    }
    let solved = stats(&net, 10).puzzles_solved;
    let d = net.nodes_mut()[10]
        .connect(t, public, intros)
        .expect("connect");
    net.run_from(t, t + 5_000);
    assert_eq!(opened(&net, 10), vec![(d, false)]);
    assert_eq!(stats(&net, 10).puzzles_solved, solved, "no work asked");
}

/// The point refuses an introduction with too little work, one whose
/// nonce does less than it claims, and one whose work was done for
/// another service, and drops a replay of one it passed on; the service,
/// behind a point that does not check (colluding), refuses the same by
/// itself and acts on a paid introduction once.
#[test]
fn under_effort_and_replayed_introductions_are_refused_by_the_point_and_by_the_service() {
    let mut net = ready(16, |_, c| c.rendezvous.accepts_per_sec = 100);
    let key = service(1);
    let sid = key.id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let ip = point_nodes(&net, &intros)[0];
    let rp = net.nodes()[free_relays(&net)[0]].descriptor().to_bytes();
    let effort = 6;
    net.nodes_mut()[ip]
        .rend
        .registrations
        .get_mut(&sid)
        .expect("registered")
        .effort = effort;
    let need = vec![FromHop::IntroduceAck {
        status: IntroStatus::NeedEffort(effort),
    }];
    let msg1 = msg1_to(&public, rp.clone(), 1, now / 1000);
    let subject = crate::rendezvous::puzzle_subject(&sid, &msg1);
    let good = crate::rendezvous::solve_puzzle(&subject, effort, 0, u64::MAX).expect("solved");
    let weak = weak_for(&sid, &msg1, effort);
    let other = crate::rendezvous::puzzle_subject(&service(2).id(), &msg1);
    let moved = crate::rendezvous::solve_puzzle(&other, effort, 0, u64::MAX).expect("solved");
    assert!(crate::rendezvous::check_puzzle(&sid, &msg1, moved, effort).is_err());
    let introduce = |puzzle| ToHop::Introduce {
        service: sid,
        puzzle,
        handshake: msg1.clone(),
    };
    let received = stats(&net, 3).introductions_received;
    for (j, p) in [Puzzle::default(), Puzzle { effort: 5, ..good }, weak, moved]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            at_point(&mut net, ip, 100 + j as u64, now, &introduce(p)),
            need
        );
    }
    assert_eq!(stats(&net, ip).introductions_under_effort, 4);
    let delivered = vec![FromHop::IntroduceAck {
        status: IntroStatus::Delivered,
    }];
    assert_eq!(
        at_point(&mut net, ip, 110, now, &introduce(good)),
        delivered
    );
    // The same introduction again, on another circuit: dropped unanswered.
    assert!(at_point(&mut net, ip, 111, now, &introduce(good)).is_empty());
    assert_eq!(stats(&net, ip).introductions_replayed, 1);
    net.run_from(now, now + 1_000);
    assert_eq!(
        stats(&net, 3).introductions_received,
        received + 1,
        "only the paid one reached the service"
    );
    // A colluding point passes on whatever it gets: the service checks.
    let now = now + 1_000;
    net.nodes_mut()[3]
        .rend
        .services
        .get_mut(&sid)
        .expect("ours")
        .price
        .set(effort);
    let k = intro_circuit(&net.nodes()[3]);
    let msg1 = msg1_to(&public, rp.clone(), 2, now / 1000);
    let subject = crate::rendezvous::puzzle_subject(&sid, &msg1);
    let good = crate::rendezvous::solve_puzzle(&subject, effort, 0, u64::MAX).expect("solved");
    let sessions = net.nodes()[3].rend.sessions.len();
    let weak = weak_for(&sid, &msg1, effort);
    for p in [Puzzle::default(), Puzzle { effort: 3, ..good }, weak] {
        inject_solved(&mut net, 3, k, now, p, msg1.clone());
    }
    assert_eq!(stats(&net, 3).accepts_under_effort, 3);
    assert_eq!(
        net.nodes()[3].rend.sessions.len(),
        sessions,
        "none acted on"
    );
    inject_solved(&mut net, 3, k, now, good, msg1.clone());
    assert_eq!(
        net.nodes()[3].rend.sessions.len(),
        sessions + 1,
        "paid: acted on"
    );
    let refused = stats(&net, 3).accepts_refused;
    inject_solved(&mut net, 3, k, now, good, msg1);
    assert_eq!(stats(&net, 3).accepts_refused, refused + 1, "a replay");
    assert_eq!(net.nodes()[3].rend.sessions.len(), sessions + 1);
    // The price is asked only of the service's own circuit.
    let before = stats(&net, ip).refused;
    assert!(at_point(&mut net, ip, 120, now, &ToHop::SetEffort { effort: 0 }).is_empty());
    assert_eq!(stats(&net, ip).refused, before + 1);
    assert_eq!(net.nodes()[ip].rend.registrations[&sid].effort, effort);
}

/// A nonce that does less work than `effort` for this introduction.
fn weak_for(sid: &PublisherId, msg1: &[u8], effort: u8) -> Puzzle {
    (0..)
        .map(|nonce| Puzzle { effort, nonce })
        .find(|p| crate::rendezvous::check_puzzle(sid, msg1, *p, effort).is_err())
        .expect("a weak nonce")
}

/// A downloader asked more work than `client_max_effort` by every point
/// gives up with `TooCostly` and keeps nothing.
#[test]
fn a_downloader_asked_too_much_gives_up_with_a_reason() {
    let mut net = ready(16, |i, c| {
        if i == 9 {
            c.rendezvous.client_max_effort = 4;
        }
    });
    let key = service(1);
    let sid = key.id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    for i in point_nodes(&net, &intros) {
        net.nodes_mut()[i]
            .rend
            .registrations
            .get_mut(&sid)
            .expect("registered")
            .effort = 5;
    }
    let d = net.nodes_mut()[9]
        .connect(now, public, intros)
        .expect("connect");
    net.run_from(now, now + 10_000);
    assert_eq!(closed(&net, 9), vec![(d, SessionEnd::TooCostly)]);
    assert_eq!(stats(&net, 9).puzzles_solved, 0, "no work spent");
    assert!(net.nodes()[9].rend.sessions.is_empty());
    assert!(
        !net.nodes()[9]
            .circuits()
            .iter()
            .any(|c| c.purpose != Purpose::General)
    );
}

/// A point that quotes a price and then fails does not make the
/// downloader pay at the next point (whose price is zero): a quote stays
/// with the point that gave it (else it would tag the downloader there).
#[test]
fn a_points_quote_is_not_carried_to_the_next_point() {
    let mut net = ready(16, |_, _| {});
    let sid = service(1).id();
    let (public, intros, now) = with_service(&mut net, T0 + 12_000);
    let a = point_nodes(&net, &intros)[0];
    net.nodes_mut()[a]
        .rend
        .registrations
        .get_mut(&sid)
        .unwrap()
        .effort = 12;
    let d = net.nodes_mut()[9]
        .connect(now, public, intros.clone())
        .unwrap();
    let mut t = now;
    loop {
        net.run_from(t, t + 20);
        t += 20;
        if net.nodes()[9].rend.sessions.values().any(|s| {
            matches!(
                &s.state,
                State::Connecting {
                    solving: Some(_),
                    ..
                }
            )
        }) {
            break;
        }
        assert!(t < now + 10_000, "point A's price was never asked");
    }
    // Point A forgets the service: it answers UnknownService.
    net.nodes_mut()[a].rend.registrations.remove(&sid);
    net.run_from(t, t + 20_000);
    assert_eq!(opened(&net, 9), vec![(d, false)]);
    assert_eq!(stats(&net, 9).puzzles_solved, 1, "only point A's price");
}
