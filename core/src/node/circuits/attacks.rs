//! Circuits from the attacker's chair: hostile clients and peers against
//! real nodes in the in-memory test network. Each test hits one limit or
//! rule and checks that the attacker gets nothing and honest traffic keeps
//! going.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::super::tests::{T0, TestNet as Net, net};
use super::tests::{built, index_of, link_between, quiet_net};
use super::*;
use crate::circuit::ClientHopHandshake;
use crate::descriptor::flags;
use crate::identity::NodeIdentity;
use crate::node::Event;
use crate::pow::PowParams;
use ed25519_dalek::SigningKey;
use x25519_dalek::StaticSecret;

/// Node 0's first built circuit, its key in `circ.own`, and the node
/// indexes of its hops.
fn first_circuit(net: &Net) -> (u64, Vec<usize>) {
    let c = built(net, 0)[0].clone();
    let hops = c.hops.iter().map(|h| index_of(net, *h)).collect();
    (c.id.0, hops)
}

/// An EXTEND towards node `to`, with a fresh handshake.
fn extend_to(net: &Net, to: usize, seed: u8) -> CircuitMsg {
    let d = net.nodes()[to].descriptor().clone();
    let (_, msg1) = ClientHopHandshake::start(d.x25519(), [seed; 32]).unwrap();
    CircuitMsg::Extend {
        descriptor: d.to_bytes(),
        handshake: msg1,
    }
}

fn closed(net: &Net, i: usize, id: u64) -> bool {
    net.events()
        .iter()
        .any(|(n, e)| *n == i && matches!(e, Event::CircuitClosed { id: c, .. } if c.0 == id))
}

#[test]
fn extend_budget_caps_circuit_length_at_every_relay() {
    // A client builds the longest circuit allowed (4 hops, 3 extends),
    // then sends a 4th EXTEND anyway: the relays count RELAY_EARLY cells,
    // so the circuit dies instead of growing to a 5th hop.
    let mut net = quiet_net(12);
    net.nodes_mut()[0].config.circuits.hops = 4;
    net.run(T0 + 12_000);
    let (k, hops) = first_circuit(&net);
    assert_eq!(hops.len(), 4, "the 4-hop circuit is allowed");
    let fifth = (1..12).find(|i| !hops.contains(i)).unwrap();
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    net.take_events();
    let creates_before = net.nodes()[fifth].stats().circuits.relay_created;
    let msg = extend_to(&net, fifth, 77);
    net.nodes_mut()[0].send_own_as(k, 3, &msg, command::RELAY_EARLY);
    net.pump(T0 + 12_000);
    assert_eq!(
        net.nodes()[hops[0]].stats().circuits.over_extend_budget,
        1,
        "the guard refused the 4th extend"
    );
    assert_eq!(
        net.nodes()[fifth].stats().circuits.relay_created,
        creates_before,
        "no 5th hop was created"
    );
    assert!(closed(&net, 0, k), "the client's circuit came down");
    for h in hops {
        assert_eq!(net.nodes()[h].relay_circuit_count(), 0, "hop {h} kept it");
    }
}

#[test]
fn extend_outside_relay_early_is_refused() {
    // An EXTEND in a plain RELAY cell would dodge the budget: refused.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let (k, hops) = first_circuit(&net);
    let other = (1..10).find(|i| !hops.contains(i)).unwrap();
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    net.take_events();
    let before = net.nodes()[other].stats().circuits.relay_created;
    let msg = extend_to(&net, other, 5);
    net.nodes_mut()[0].send_own(k, hops.len() - 1, &msg);
    net.pump(T0 + 10_000);
    assert_eq!(net.nodes()[other].stats().circuits.relay_created, before);
    assert!(closed(&net, 0, k));
}

/// A relay-capable identity signing a descriptor with any address.
fn rogue(i: u8, addr: SocketAddr) -> Descriptor {
    let id = NodeIdentity::from_keys(
        SigningKey::from_bytes(&[i; 32]),
        StaticSecret::from([i ^ 0x55; 32]),
        PowParams::TESTNET,
    );
    Descriptor::sign(&id, flags::RELAY, Some(addr), T0, Vec::new())
}

#[test]
fn extend_dials_only_signed_dialable_addresses() {
    // The last hop of node 0's circuit is asked to extend to: a descriptor
    // whose address was altered (signature fails), and a validly signed
    // descriptor naming a LAN address (a relay on loopback never dials
    // outside its scope). Neither produces a dial; the hop keeps serving.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    for (n, bad) in [
        {
            let mut b = rogue(200, "127.77.0.1:7000".parse().unwrap()).to_bytes();
            // The address sits after version, flags, keys, nonce, family.
            b[2 + 64 + 8 + 1] ^= 1;
            b
        },
        rogue(201, "192.168.1.10:22".parse().unwrap()).to_bytes(),
        rogue(202, "10.0.0.1:7000".parse().unwrap()).to_bytes(),
        rogue(203, "0.0.0.0:7000".parse().unwrap()).to_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        net.nodes_mut()[0].config.circuits.circuits_wanted = 1;
        net.run_from(
            T0 + 10_000 + n as u64 * 5_000,
            T0 + 15_000 + n as u64 * 5_000,
        );
        let (k, hops) = first_circuit(&net);
        let exit = *hops.last().unwrap();
        net.take_events();
        let (_, msg1) = ClientHopHandshake::start(&[9; 32], [n as u8; 32]).unwrap();
        let msg = CircuitMsg::Extend {
            descriptor: bad,
            handshake: msg1,
        };
        net.nodes_mut()[0].send_own_as(k, hops.len() - 1, &msg, command::RELAY_EARLY);
        // The exit's dial requests, as the test network saw them.
        net.pump(T0 + 15_000 + n as u64 * 5_000);
        let connects: Vec<SocketAddr> = net
            .events()
            .iter()
            .filter_map(|(i, e)| match e {
                Event::Connect { addr, .. } if *i == exit => Some(*addr),
                _ => None,
            })
            .collect();
        assert!(
            connects.is_empty(),
            "case {n}: the exit dialled {connects:?}"
        );
        assert!(closed(&net, 0, k), "case {n}: the circuit failed cleanly");
        assert!(
            !net.nodes()[exit].peers().is_empty(),
            "the exit keeps its links"
        );
    }
}

#[test]
fn extend_dial_failures_never_mark_our_guard_unreachable() {
    // Relay R is extended (by someone else's circuit) towards R's own
    // guard G, and that dial fails: R must keep G as reachable. Only a
    // dial R made for its own circuits may mark G unreachable.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let (_, hops) = first_circuit(&net);
    let r = *hops.last().unwrap();
    net.nodes_mut()[r].config.circuits.circuits_wanted = 1;
    net.run_from(T0 + 10_000, T0 + 14_000);
    let g_id = net.nodes()[r].guard_ids()[0];
    let now = T0 + 14_000;
    // R drops its link to G, so the extend must dial.
    if let Some(l) = net.nodes()[r].link_to(&g_id) {
        net.nodes_mut()[r].handle_link_down(now, l);
    }
    let g_desc = net.nodes()[index_of(&net, g_id)].descriptor().clone();
    let (_, msg1) = ClientHopHandshake::start(g_desc.x25519(), [3; 32]).unwrap();
    // A relayed circuit at R (as a last hop), fed an EXTEND to G.
    let link = LinkId(999_999);
    net.nodes_mut()[r].plant_link(now, link, NodeId::from_bytes([1; 32]));
    let k = net.nodes_mut()[r].plant_last_hop(now, link, 5);
    net.nodes_mut()[r].on_extend(now, k, link, &g_desc.to_bytes(), msg1);
    let mut dialled = None;
    while let Some(e) = net.nodes_mut()[r].poll_event() {
        if let Event::Connect { addr, expected } = e {
            assert_eq!(expected, Some(g_id));
            assert_eq!(Some(addr), g_desc.address(), "only the signed address");
            dialled = Some(addr);
        }
    }
    let addr = dialled.expect("R dialled G for the extend");
    net.nodes_mut()[r].handle_connect_failed(now, addr);
    assert!(
        net.nodes()[r].guard_unreachable(g_id) == Some(false),
        "an extend dial moved our guard"
    );
    assert!(!net.nodes()[r].relays_circuit(k), "the extend failed");
    // The same failure on a dial of our own does count.
    assert!(net.nodes_mut()[r].dial_expected(now + 60_000, addr, g_id, true));
    while net.nodes_mut()[r].poll_event().is_some() {}
    net.nodes_mut()[r].handle_connect_failed(now + 60_000, addr);
    assert_eq!(net.nodes()[r].guard_unreachable(g_id), Some(true));
}

#[test]
fn unauthenticated_dialers_evict_nobody() {
    // A node at its inbound limit. Newcomers that never finish the link
    // handshake close nobody's link; one that authenticates takes the
    // slot of the least recently used idle inbound link.
    let mut net = net(8, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.nodes_mut()[0].config.max_links = 6;
    net.run(T0 + 5_000);
    let before: BTreeSet<LinkId> = net.nodes()[0].link_ids().into_iter().collect();
    let now = T0 + 5_000;
    for i in 0..3u64 {
        net.nodes_mut()[0].handle_link_up(
            now,
            LinkId(500 + i),
            Direction::Inbound,
            format!("127.{}.0.9:1", 60 + i).parse().unwrap(),
            [0; 32],
        );
    }
    while let Some(t) = net.nodes_mut()[0].poll_transmit() {
        net.nodes_mut()[0].handle_link_sent(now, t.link, 1);
    }
    let mut closed_links = Vec::new();
    while let Some(e) = net.nodes_mut()[0].poll_event() {
        if let Event::Close { link } = e {
            closed_links.push(link);
        }
    }
    assert!(
        closed_links.iter().all(|l| !before.contains(l)),
        "an established link was closed for an unauthenticated dialler"
    );
    for l in &before {
        assert!(net.nodes()[0].has_link(*l));
    }
    // They time out without harm.
    net.nodes_mut()[0].handle_timeout(now + 60_000);
    for i in 0..3u64 {
        assert!(!net.nodes()[0].has_link(LinkId(500 + i)));
    }
}

/// Node 1 of a 3-node network, with `cap` circuits per peer and `rate`
/// CREATEs per second per link. Node 0 attacks over its link to node 1: a
/// burst of `burst` CREATEs, then `per_sec` a second for a minute. Returns
/// how many circuits node 1 relays for it at the end, whether its link
/// survived, and whether node 2 (honest) then got a circuit through at
/// once.
fn create_flood(cap: usize, rate: u32, burst: u32, per_sec: u32) -> (usize, bool, bool) {
    let mut net = net(3, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.nodes_mut()[1].config.circuits.max_circuits_per_peer = cap;
    net.nodes_mut()[1].config.circuits.creates_per_sec_per_link = rate;
    let (l0, l1) = link_between(&mut net);
    let bit = own_side_bit(net.nodes()[0].direction_of(l0));
    let now = T0 + 3_000;
    let mut cid = 1000u32;
    for s in 0..60u64 {
        let n = if s == 0 { burst } else { per_sec };
        for i in 0..n {
            cid += 1;
            let c = super::tests::create_cell(&net.nodes()[1], bit | cid, i as u8);
            // Spread over the second, as a steady sender would.
            let at = now + s * 1000 + u64::from(i) * 1000 / u64::from(n.max(1));
            net.nodes_mut()[1].handle_link_data(at, l1, c.as_bytes());
        }
        // The attacker reads what it is sent (a peer that does not read is
        // cut for that, a different limit).
        while let Some(t) = net.nodes_mut()[1].poll_transmit() {
            net.nodes_mut()[1].handle_link_sent(now, t.link, 1);
        }
    }
    let alive = net.nodes()[1].has_link(l1);
    let got = net.nodes()[1].relay_circuit_count();
    // Node 2, an honest peer, asks for one circuit.
    let later = now + 60_000;
    let id1 = net.nodes()[1].node_id();
    let a1 = net.nodes()[1].descriptor().address().unwrap();
    if net.nodes()[2].link_to(&id1).is_none() {
        assert!(net.nodes_mut()[2].dial_expected(later, a1, id1, true));
        net.pump(later);
    }
    let l2 = net.nodes()[2].link_to(&id1).unwrap();
    let (_, peer_link) = net.peer_of(2, l2).unwrap();
    let bit2 = own_side_bit(net.nodes()[2].direction_of(l2));
    let c = super::tests::create_cell(&net.nodes()[1], bit2 | 7, 1);
    net.nodes_mut()[1].handle_link_data(later, peer_link, c.as_bytes());
    let honest_ok = net.nodes()[1].relay_circuit_count() == got + 1;
    (got, alive, honest_ok)
}

#[test]
fn one_peer_is_held_to_its_circuit_cap() {
    let (got, alive, honest_ok) = create_flood(8, 1000, 200, 50);
    assert_eq!(got, 8, "one peer filled more than its share");
    assert!(alive, "refused, not cut: it stayed within its rate");
    assert!(honest_ok, "an honest peer was refused");
}

#[test]
fn create_floods_are_rate_limited_per_link() {
    // Under every cap, a peer sending 1.5 times its rate is refused the
    // excess and keeps its link: a burst of two seconds' worth, then the
    // rate.
    let (got, alive, honest_ok) = create_flood(100_000, 4, 8, 6);
    assert!(alive, "a peer within twice its rate was cut");
    assert!(got <= 8 + 4 * 60, "{got} CREATEs answered at 4/s");
    assert!(got >= 8 + 4 * 55, "{got}: the limit is a rate, not a ban");
    assert!(honest_ok, "an honest peer was refused");
    // One that keeps flooding at many times its rate gets the same share
    // and keeps its link (it reads its DESTROYs; one that does not is cut
    // by the queue limits: `peers_that_stop_reading_are_cut_not_honest_circuits`).
    let (got, alive, honest_ok) = create_flood(100_000, 4, 200, 50);
    assert!(alive, "refused, not cut");
    assert!(got <= 8 + 4 * 60, "{got} CREATEs answered at 4/s");
    assert!(honest_ok, "an honest peer was refused");
}

#[test]
fn a_greedy_circuit_dies_alone_on_a_shared_link() {
    // Node 0 has two circuits through its guard G, on one link. G's links
    // onward are slow (their cells are held). Node 0 stays within its
    // window on circuit A and ignores it on circuit B, as a hostile client
    // would. G's queue for B overflows: G destroys B, alone; A, the link
    // and G's other traffic are untouched, and A's data all arrives.
    let mut net = quiet_net(10);
    net.nodes_mut()[0].config.circuits.circuits_wanted = 2;
    net.run(T0 + 12_000);
    let circuits = built(&net, 0);
    assert!(circuits.len() >= 2, "two circuits");
    let (a, b) = (circuits[0].clone(), circuits[1].clone());
    assert_eq!(a.hops[0], b.hops[0], "both through the primary guard");
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    let g = index_of(&net, a.hops[0]);
    let to_client = net.nodes()[g].link_to(&net.nodes()[0].node_id()).unwrap();
    for l in net.nodes()[g].link_ids() {
        if l != to_client {
            net.stall(g, l);
        }
    }
    net.take_events();
    let now = T0 + 12_000;
    let window = net.nodes()[0].config.circuits.window_cells;
    for i in 0..100u32 {
        let mut bytes = b"A".to_vec();
        bytes.extend_from_slice(&i.to_be_bytes());
        net.nodes_mut()[0].send_data(a.id, &bytes).unwrap();
    }
    net.pump(now);
    let last = b.hops.len() - 1;
    for batch in 0..(3 * window / 100) {
        for i in 0..100u32 {
            let mut bytes = b"B".to_vec();
            bytes.extend_from_slice(&(batch * 100 + i).to_be_bytes());
            net.nodes_mut()[0].send_own(b.id.0, last, &CircuitMsg::Data { bytes });
        }
        net.pump(now);
    }
    assert!(
        net.nodes()[g].stats().circuits.over_queue >= 1,
        "G never noticed"
    );
    assert!(closed(&net, 0, b.id.0), "B came down");
    assert!(!closed(&net, 0, a.id.0), "A came down with it");
    assert!(
        net.nodes()[g].has_link(to_client),
        "the shared link was cut"
    );
    assert_eq!(net.nodes()[g].stats().peers_penalised, 0);
    // The slow links catch up; A's data all arrives at its exit.
    for key in net.stalled() {
        net.release(now, key.0, key.1);
    }
    let exit = index_of(&net, *a.hops.last().unwrap());
    let got: Vec<Vec<u8>> = net
        .events()
        .iter()
        .filter_map(|(i, e)| match e {
            Event::RelayData { data, .. } if *i == exit && data[0] == b'A' => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 100, "A delivered {} of 100", got.len());
    assert!(built(&net, 0).iter().any(|c| c.id == a.id), "A still built");
}

#[test]
fn one_source_cannot_take_every_handshake_slot() {
    // Diallers from one /24 that never finish their handshake get
    // `max_handshakes_per_source` slots; another source still gets in, and
    // our own dials have a budget of their own.
    let mut n = super::super::tests::node(1, vec![]);
    n.config.max_pending_handshakes = 6;
    let now = T0;
    let mut accepted = 0;
    for i in 0..20u64 {
        let from: SocketAddr = format!("127.60.0.{}:4000", i + 2).parse().unwrap();
        n.handle_link_up(now, LinkId(100 + i), Direction::Inbound, from, [0; 32]);
        if n.has_link(LinkId(100 + i)) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, n.config.max_handshakes_per_source);
    let honest: SocketAddr = "127.61.0.1:4000".parse().unwrap();
    n.handle_link_up(now, LinkId(500), Direction::Inbound, honest, [0; 32]);
    assert!(n.has_link(LinkId(500)), "another source was refused");
    // Fill the inbound budget from many sources: our dials still go out.
    for i in 0..10u64 {
        let from: SocketAddr = format!("127.{}.0.1:4000", 70 + i).parse().unwrap();
        n.handle_link_up(now, LinkId(600 + i), Direction::Inbound, from, [0; 32]);
    }
    let (_, d) = crate::link::tests::node(9);
    assert!(n.dial_expected(now, "127.90.0.1:7000".parse().unwrap(), d.node_id(), true));
}

#[test]
fn a_descriptor_naming_a_relays_address_cannot_block_it() {
    // A client extends relay R to a descriptor of its own identity that
    // names honest relay H's address: R dials, finds someone else, and the
    // failure is kept against (address, that id) only. A real extend to H
    // then dials H at once. R's own address is never dialled, on any port.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let (_, hops) = first_circuit(&net);
    let r = *hops.last().unwrap();
    let h = (1..10).find(|i| !hops.contains(i) && *i != 0).unwrap();
    let now = T0 + 10_000;
    let h_id = net.nodes()[h].node_id();
    if let Some(l) = net.nodes()[r].link_to(&h_id) {
        net.nodes_mut()[r].handle_link_down(now, l);
    }
    let h_addr = net.nodes()[h].descriptor().address().unwrap();
    let fake = rogue(210, h_addr);
    let r_ip = net.nodes()[r].descriptor().address().unwrap().ip();
    let own = rogue(211, SocketAddr::new(r_ip, 22));
    let link = LinkId(999_998);
    net.nodes_mut()[r].plant_link(now, link, NodeId::from_bytes([2; 32]));
    let mut connects = Vec::new();
    for (i, d) in [fake, own, net.nodes()[h].descriptor().clone()]
        .iter()
        .enumerate()
    {
        let k = net.nodes_mut()[r].plant_last_hop(now, link, 10 + i as u32);
        let (_, msg1) = ClientHopHandshake::start(d.x25519(), [i as u8; 32]).unwrap();
        net.nodes_mut()[r].on_extend(now, k, link, &d.to_bytes(), msg1);
        while let Some(e) = net.nodes_mut()[r].poll_event() {
            if let Event::Connect { addr, expected } = e {
                connects.push((addr, expected));
                // The dial reaches H, which is not who was expected.
                net.nodes_mut()[r].handle_connect_failed(now, addr);
            }
        }
    }
    assert_eq!(
        connects,
        vec![
            (h_addr, Some(rogue(210, h_addr).node_id())),
            (h_addr, Some(h_id))
        ],
        "the real extend was blocked, or R dialled itself"
    );
}

#[test]
fn peers_that_stop_reading_are_cut_not_honest_circuits() {
    // Node 1's queues are small. Node 2 stops reading its link and keeps
    // sending CREATEs that node 1 must refuse (DESTROY answers pile up).
    // When the total overflows, node 1 cuts the link that does not read,
    // not node 0's circuit.
    let mut net = net(3, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.run(T0 + 3_000);
    net.nodes_mut()[1].config.max_queued_cells_total = 40;
    net.nodes_mut()[1].config.max_circuit_queue_cells = 20;
    net.nodes_mut()[1].config.max_link_in_flight_cells = 4;
    net.nodes_mut()[1].config.circuits.max_circuits_per_peer = 1;
    let now = T0 + 3_000;
    let id = |net: &Net, i: usize| net.nodes()[i].node_id();
    let l10 = net.nodes()[1].link_to(&id(&net, 0)).unwrap();
    let l12 = net.nodes()[1].link_to(&id(&net, 2)).unwrap();
    let (_, l01) = net.peer_of(1, l10).unwrap();
    let (_, l21) = net.peer_of(1, l12).unwrap();
    // Node 0: one honest circuit through node 1.
    let bit0 = own_side_bit(net.nodes()[0].direction_of(l01));
    let c = super::tests::create_cell(&net.nodes()[1], bit0 | 5, 1);
    net.nodes_mut()[1].handle_link_data(now, l10, c.as_bytes());
    net.pump(now);
    assert_eq!(net.nodes()[1].relay_circuit_count(), 1);
    // Node 2 stops reading.
    net.stall(1, l12);
    let bit2 = own_side_bit(net.nodes()[2].direction_of(l21));
    for i in 0..60u32 {
        let c = super::tests::create_cell(&net.nodes()[1], bit2 | (100 + i), i as u8);
        net.nodes_mut()[1].handle_link_data(now + u64::from(i) * 100, l12, c.as_bytes());
        net.pump(now + u64::from(i) * 100);
    }
    assert!(!net.nodes()[1].has_link(l12), "the non-reader was kept");
    assert!(net.nodes()[1].has_link(l10), "the honest link was cut");
    assert_eq!(
        net.nodes()[1].relay_circuit_count(),
        1,
        "the honest circuit went"
    );
}

#[test]
fn a_guard_that_vouches_for_a_forgery_is_replaced() {
    // Only the guard itself can vouch for a descriptor that fails its
    // check: it is cut, leaves the guard list and our samples, and a new
    // guard takes its place on the next tick.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let g = net.nodes()[0].guard_ids()[0];
    net.nodes_mut()[0].refuse_blaming(g);
    assert!(!net.nodes()[0].guard_ids().contains(&g));
    assert!(!net.nodes()[0].sample().contains(&g));
    net.run_from(T0 + 10_000, T0 + 20_000);
    assert!(!net.nodes()[0].guard_ids().contains(&g));
    assert_eq!(
        net.nodes()[0].guard_ids().len(),
        net.nodes()[0].config.circuits.guards
    );
    assert!(built(&net, 0).iter().all(|c| c.hops[0] != g));
}

#[test]
fn extends_never_starve_our_own_dials() {
    // A hostile client asks relay R to extend to many silent addresses, one
    // identity at a time or one identity with ever new addresses: extend
    // dials take at most half the dial budget, one per identity, and R's
    // own guard dials still go out.
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let (_, hops) = first_circuit(&net);
    let r = *hops.last().unwrap();
    let now = T0 + 10_000;
    net.nodes_mut()[r].config.max_pending_handshakes = 8;
    let link = LinkId(999_997);
    net.nodes_mut()[r].plant_link(now, link, NodeId::from_bytes([3; 32]));
    let mut descriptors: Vec<Descriptor> = (0..10u8)
        .map(|i| {
            rogue(
                220 + i,
                format!("127.{}.0.1:7000", 150 + i).parse().unwrap(),
            )
        })
        .collect();
    // The same identity again, at new addresses.
    for j in 0..5u8 {
        let id = NodeIdentity::from_keys(
            SigningKey::from_bytes(&[220; 32]),
            StaticSecret::from([220 ^ 0x55; 32]),
            PowParams::TESTNET,
        );
        let a: SocketAddr = format!("127.{}.0.1:7000", 170 + j).parse().unwrap();
        descriptors.push(Descriptor::sign(
            &id,
            flags::RELAY,
            Some(a),
            T0 + 1 + u64::from(j),
            Vec::new(),
        ));
    }
    let mut connects = 0;
    for (i, d) in descriptors.iter().enumerate() {
        let k = net.nodes_mut()[r].plant_last_hop(now, link, 100 + i as u32);
        let (_, msg1) = ClientHopHandshake::start(d.x25519(), [i as u8; 32]).unwrap();
        net.nodes_mut()[r].on_extend(now, k, link, &d.to_bytes(), msg1);
        while let Some(e) = net.nodes_mut()[r].poll_event() {
            connects += usize::from(matches!(e, Event::Connect { .. }));
        }
    }
    assert_eq!(connects, 4, "extend dials beyond half the budget");
    // R's own dial to a guard still goes out.
    let g = net.nodes()[r].guard_ids().first().copied();
    let gd = g.and_then(|g| net.nodes()[index_of(&net, g)].descriptor().address());
    if let (Some(g), Some(addr)) = (g, gd) {
        if let Some(l) = net.nodes()[r].link_to(&g) {
            net.nodes_mut()[r].handle_link_down(now, l);
        }
        assert!(net.nodes_mut()[r].dial_expected(now, addr, g, true));
    }
}

#[test]
fn a_liar_guard_is_not_redialled_for_circuits_in_flight() {
    let mut net = quiet_net(10);
    net.run(T0 + 10_000);
    let g = net.nodes()[0].guard_ids()[0];
    let gl = net.nodes()[0].link_to(&g).expect("linked to guard");
    // CREATEs to the guard are held: a build is in flight at hop 0.
    net.stall(0, gl);
    net.nodes_mut()[0].config.circuits.circuits_wanted = 3;
    let now = T0 + 11_000;
    net.nodes_mut()[0].handle_timeout(now);
    net.pump(now);
    let building: Vec<_> = net.nodes()[0]
        .circuits()
        .into_iter()
        .filter(|c| c.state == CircuitState::Building && c.hops[0] == g)
        .collect();
    assert!(!building.is_empty(), "no build in flight through the guard");
    net.take_events();
    // The guard vouched for a forgery.
    net.nodes_mut()[0].refuse_blaming(g);
    let mut redial = false;
    while let Some(e) = net.nodes_mut()[0].poll_event() {
        if let Event::Connect {
            expected: Some(id), ..
        } = e
        {
            redial |= id == g;
        }
    }
    assert!(!net.nodes()[0].guard_ids().contains(&g), "still a guard");
    let still: Vec<_> = net.nodes()[0]
        .circuits()
        .into_iter()
        .filter(|c| c.hops[0] == g)
        .collect();
    assert!(
        !redial && still.is_empty(),
        "after cutting the liar, node 0 redials it ({redial}) and keeps {} builds through it",
        still.len()
    );
}
