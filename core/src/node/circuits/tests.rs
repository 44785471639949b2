use super::super::tests::{T0, TestNet as Net, Verdict, addr, net, node};
use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::cell::CELL_SIZE;
use crate::circuit::{ClientHopHandshake, MAX_DATA_BYTES};
use crate::node::{Event, Node};

/// A network of `n` nodes where only node 0 builds circuits (so the
/// tests can reason about its paths).
pub(super) fn quiet_net(n: u8) -> Net {
    let mut net = net(n, false);
    for (i, node) in net.nodes_mut().iter_mut().enumerate() {
        if i != 0 {
            node.config.circuits.circuits_wanted = 0;
        }
    }
    net.nodes_mut()[0].config.circuits.circuits_wanted = 1;
    net
}

pub(super) fn built(net: &Net, i: usize) -> Vec<CircuitInfo> {
    net.nodes()[i]
        .circuits()
        .into_iter()
        .filter(|c| c.state == CircuitState::Built)
        .collect()
}

/// The data cells node `exit` delivered as a last hop.
pub(super) fn relay_data_at(net: &Net, exit: usize) -> Vec<Vec<u8>> {
    net.events()
        .iter()
        .filter_map(|(i, e)| match e {
            Event::RelayData { data, .. } if *i == exit => Some(data.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn index_of(net: &Net, id: NodeId) -> usize {
    net.nodes().iter().position(|n| n.node_id() == id).unwrap()
}

#[test]
fn every_node_builds_probe_verified_circuits() {
    let mut net = net(12, false);
    net.run(T0 + 20_000);
    let mut answered = BTreeMap::new();
    for (i, e) in net.events() {
        if let Event::ProbeAnswered { nonce } = e {
            answered.insert(*nonce, *i);
        }
    }
    for (i, n) in net.nodes().iter().enumerate() {
        let circuits = built(&net, i);
        assert!(!circuits.is_empty(), "node {i} built nothing");
        let guard = n.guards()[0].id;
        for c in circuits {
            assert_eq!(c.hops.len(), 3);
            assert_eq!(c.hops[0], guard, "not through the primary guard");
            assert!(!c.hops.contains(&n.node_id()));
            let ips: Vec<_> = c
                .hops
                .iter()
                .map(|h| addr(index_of(&net, *h) as u8 + 1).ip())
                .collect();
            for a in 0..3 {
                for b in a + 1..3 {
                    assert_ne!(c.hops[a], c.hops[b]);
                    assert!(!n.config.circuits.same_prefix(ips[a], ips[b]));
                }
            }
        }
    }
    // Every built circuit's probe was answered by its last hop.
    for (i, e) in net.events() {
        if let Event::CircuitBuilt { hops, probe, .. } = e {
            let exit = index_of(&net, *hops.last().unwrap());
            assert_eq!(answered.get(probe), Some(&exit), "node {i}'s probe");
        }
    }
}

#[test]
fn flow_control_credits() {
    let mut net = quiet_net(8);
    net.run(T0 + 10_000);
    let c = built(&net, 0)[0].clone();
    let exit = index_of(&net, *c.hops.last().unwrap());
    let window = net.nodes()[0].config.circuits.window_cells;
    // A window's worth goes out; then the sender must wait.
    for i in 0..window {
        net.nodes_mut()[0]
            .send_data(c.id, &i.to_be_bytes())
            .unwrap();
    }
    assert_eq!(
        net.nodes_mut()[0].send_data(c.id, b"x"),
        Err(SendError::NoCredit)
    );
    let now = T0 + 10_000;
    net.pump(now);
    let got = relay_data_at(&net, exit);
    assert_eq!(got.len(), window as usize);
    assert_eq!(got[7], 7u32.to_be_bytes());
    // The exit's SENDMEs gave the whole window back.
    assert_eq!(net.nodes()[0].circuit_window(c.id), Some(window));
    // And backwards: the exit sends to the client.
    let rc = net
        .events()
        .iter()
        .find_map(|(i, e)| match e {
            Event::RelayData { circuit, .. } if *i == exit => Some(*circuit),
            _ => None,
        })
        .unwrap();
    for _ in 0..window {
        net.nodes_mut()[exit].relay_send_data(rc, b"back").unwrap();
    }
    assert_eq!(
        net.nodes_mut()[exit].relay_send_data(rc, b"x"),
        Err(SendError::NoCredit)
    );
    net.pump(now);
    let back = net
        .events()
        .iter()
        .filter(|(i, e)| *i == 0 && matches!(e, Event::CircuitData { data, .. } if data == b"back"))
        .count();
    assert_eq!(back, window as usize);
    assert!(net.nodes_mut()[exit].relay_send_data(rc, b"again").is_ok());
    assert_eq!(
        net.nodes_mut()[0].send_data(c.id, &vec![0; MAX_DATA_BYTES + 1]),
        Err(SendError::TooLarge)
    );
}

#[test]
fn relay_crash_mid_build_retries_beyond_the_same_guard() {
    let mut net = quiet_net(10);
    // Let gossip run, but no builds yet: node 0 picks guards first.
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    net.run(T0 + 6_000);
    net.nodes_mut()[0].config.circuits.circuits_wanted = 1;
    net.nodes_mut()[0].maintain_guards(T0 + 6_000);
    let guard = net.nodes()[0].guards()[0].id;
    let g = index_of(&net, guard);
    // The first node other than the guard that receives a CREATE
    // crashes on the spot: node 0's second hop, mid-build.
    let crashed = std::rc::Rc::new(std::cell::Cell::new(None::<usize>));
    let seen = crashed.clone();
    net.set_tamper(Some(Box::new(move |from, to, cell| {
        if cell.command() == command::CREATE && to != g && from == g && seen.get().is_none() {
            seen.set(Some(to));
        }
        if seen.get() == Some(to) || seen.get() == Some(from) {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    })));
    let mut now = T0 + 6_000;
    while now < T0 + 60_000 && built(&net, 0).is_empty() {
        if let Some(dead) = crashed.get()
            && !net.is_dead(dead)
        {
            // It crashes: its links drop at every peer.
            net.kill(dead);
        }
        net.run_from(now, now + 500);
        now += 500;
    }
    let dead = crashed.get().expect("a second hop got a CREATE");
    let failed: Vec<&Vec<NodeId>> = net
        .events()
        .iter()
        .filter_map(|(i, e)| match e {
            Event::CircuitClosed {
                hops, built: false, ..
            } if *i == 0 => Some(hops),
            _ => None,
        })
        .collect();
    assert!(
        !failed.is_empty(),
        "the build through the crashed relay failed"
    );
    assert!(failed.iter().all(|h| h[0] == guard));
    let ok = built(&net, 0);
    assert!(!ok.is_empty(), "node 0 rebuilt");
    assert_eq!(ok[0].hops[0], guard, "same guard after an induced failure");
    assert!(!ok[0].hops.contains(&net.nodes()[dead].node_id()));
    assert_eq!(net.nodes()[0].guards()[0].id, guard);
}

/// Builds node 0's circuit, then lets `tamper` loose on relay cells and
/// sends two data cells. Returns (data cells the exit accepted, whether
/// node 0's circuit was torn down).
fn tampered(make: impl Fn(usize) -> super::super::tests::Tamper) -> (Vec<Vec<u8>>, bool) {
    let mut net = quiet_net(8);
    net.run(T0 + 10_000);
    let c = built(&net, 0)[0].clone();
    let guard = index_of(&net, c.hops[0]);
    let exit = index_of(&net, c.hops[2]);
    net.take_events();
    net.set_tamper(Some(make(guard)));
    // No replacement circuit: the relays' tables must empty.
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    let now = T0 + 10_000;
    net.nodes_mut()[0].send_data(c.id, b"one").unwrap();
    net.pump(now);
    let _ = net.nodes_mut()[0].send_data(c.id, b"two");
    net.pump(now);
    // A dropped last cell is caught by the probe timing out.
    net.nodes_mut()[0].probe_circuit(now, c.id);
    net.pump(now);
    net.set_tamper(None);
    net.run_from(now, now + 20_000);
    let accepted = relay_data_at(&net, exit);
    let torn = net.events().iter().any(|(i, e)| {
        *i == 0 && matches!(e, Event::CircuitClosed { id, built: true, .. } if *id == c.id)
    });
    // The relays forgot it too.
    if torn {
        for h in &c.hops {
            let n = &net.nodes()[index_of(&net, *h)];
            assert_eq!(n.relay_circuit_count(), 0, "a relay kept the circuit");
        }
    }
    (accepted, torn)
}

#[test]
fn corrupted_cells_tear_the_circuit_down() {
    let (accepted, torn) = tampered(|guard| {
        Box::new(move |from, _, cell: &mut Cell| {
            if from == guard && cell.command() == command::RELAY {
                cell.body_mut()[100] ^= 1;
            }
            Verdict::Deliver
        })
    });
    assert!(accepted.is_empty(), "a corrupted cell was accepted");
    assert!(torn);
}

#[test]
fn dropped_cells_tear_the_circuit_down() {
    let mut first = true;
    let (accepted, torn) = tampered(move |guard| {
        Box::new(move |from, _, cell: &mut Cell| {
            if from == guard && cell.command() == command::RELAY && first {
                first = false;
                return Verdict::Drop;
            }
            Verdict::Deliver
        })
    });
    assert!(accepted.is_empty(), "a cell after a gap was accepted");
    assert!(torn);
}

#[test]
fn replayed_cells_tear_the_circuit_down() {
    let (accepted, torn) = tampered(|guard| {
        let mut first = true;
        Box::new(move |from, _, cell: &mut Cell| {
            if from == guard && cell.command() == command::RELAY && first {
                first = false;
                return Verdict::Replay;
            }
            Verdict::Deliver
        })
    });
    assert_eq!(accepted, vec![b"one".to_vec()], "the replay was accepted");
    assert!(torn);
}

#[test]
fn relays_see_fixed_size_cells_and_nothing_of_the_initiator() {
    let mut net = quiet_net(10);
    for n in net.nodes_mut() {
        n.set_observing(true);
    }
    let mut sizes = BTreeSet::new();
    net.set_tamper(Some(Box::new(move |_, _, cell: &mut Cell| {
        assert_eq!(cell.as_bytes().len(), CELL_SIZE);
        Verdict::Deliver
    })));
    net.run(T0 + 10_000);
    let c = built(&net, 0)[0].clone();
    net.nodes_mut()[0].send_data(c.id, b"hello exit").unwrap();
    net.pump(T0 + 10_000);
    let me = net.nodes()[0].descriptor().clone();
    let secrets: Vec<Vec<u8>> = vec![
        me.node_id().as_bytes().to_vec(),
        me.x25519().to_vec(),
        me.public().ed25519.to_bytes().to_vec(),
        match addr(1).ip() {
            std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
            std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
        },
    ];
    let mut seen = 0;
    for i in 1..net.nodes().len() {
        for o in net.take_observations(i) {
            seen += 1;
            let bytes = o.bytes();
            if let Observation::Relayed { body, .. } = &o {
                sizes.insert(body.len());
            }
            for s in &secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == &s[..]),
                    "node {i} saw the initiator's identity in clear"
                );
            }
        }
    }
    assert!(seen > 0);
    assert_eq!(sizes.len(), 1, "relayed bodies of different sizes");
}

#[test]
fn client_only_nodes_link_to_guards_and_are_never_hops() {
    // Node 10 (the 11th) is client-only.
    let mut net = Net::with_config(11, false, |i, c| c.relay = i != 10).unwrap();
    net.run(T0 + 25_000);
    let client = net.nodes().len() - 1;
    let me = net.nodes()[client].node_id();
    assert!(!net.nodes()[client].descriptor().is_relay());
    let guards = net.nodes()[client].guard_ids();
    assert!(guards.len() >= 2);
    let peers: Vec<NodeId> = net.nodes()[client]
        .peers()
        .iter()
        .map(|p| p.node_id)
        .collect();
    assert!(peers.iter().all(|p| guards.contains(p)), "a non-guard link");
    assert!(peers.len() >= 2, "learns through more than one guard");
    assert!(
        !built(&net, client).is_empty(),
        "the client built a circuit"
    );
    for (i, n) in net.nodes().iter().enumerate() {
        for c in n.circuits() {
            assert!(!c.hops.contains(&me), "node {i} used the client as a hop");
        }
    }
    // A CREATE sent to it anyway, by a guard over their link, is
    // refused with NOT_A_RELAY.
    let g = index_of(&net, guards[0]);
    let lg = net.nodes()[g].link_to(&me).unwrap();
    let (_, lc) = net.peer_of(g, lg).unwrap();
    let bit = own_side_bit(net.nodes()[g].direction_of(lg));
    let create = create_cell(&net.nodes()[client], bit | 77, 3);
    net.nodes_mut()[client].handle_link_data(T0 + 25_000, lc, create.as_bytes());
    let mut refused = false;
    while let Some(t) = net.nodes_mut()[client].poll_transmit() {
        net.nodes_mut()[client].handle_link_sent(T0 + 25_000, t.link, 1);
        if t.cell.command() == command::DESTROY && t.cell.circ_id() == bit | 77 {
            refused = t.cell.link_payload().unwrap() == [crate::node::fault::wire::NOT_A_RELAY];
        }
    }
    assert!(refused, "the CREATE was not refused as NOT_A_RELAY");
    assert_eq!(net.nodes()[client].stats().circuits.relay_created, 0);
    assert_eq!(net.nodes()[client].relay_circuit_count(), 0);
}

/// Node 0's link to node 1 (and node 1's end of it), linking them
/// first if needed.
pub(super) fn link_between(net: &mut Net) -> (LinkId, LinkId) {
    net.run(T0 + 3_000);
    let id1 = net.nodes()[1].node_id();
    let l0 = net.nodes()[0].link_to(&id1).expect("0 and 1 linked");
    let (_, l1) = net.peer_of(0, l0).unwrap();
    (l0, l1)
}

pub(super) fn create_cell(to: &Node, cid: u32, seed: u8) -> Cell {
    let (_, msg1) = ClientHopHandshake::start(to.descriptor().x25519(), [seed; 32]).unwrap();
    let m = CircuitMsg::Create { handshake: msg1 }.encode().unwrap();
    Cell::control(cid, command::CREATE, &m).unwrap()
}

#[test]
fn relays_cap_circuits_and_keep_serving() {
    let mut net = net(2, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.nodes_mut()[1].config.circuits.max_circuits_per_link = 5;
    let (l0, l1) = link_between(&mut net);
    // Node 0 uses its own half of the id space on this link.
    let bit = own_side_bit(net.nodes()[0].direction_of(l0));
    for i in 0..8u32 {
        let c = create_cell(&net.nodes()[1], bit | (100 + i), i as u8);
        net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, c.as_bytes());
    }
    assert_eq!(net.nodes()[1].relay_circuit_count(), 5, "capped per link");
    let mut created = 0;
    let mut destroyed = 0;
    while let Some(t) = net.nodes_mut()[1].poll_transmit() {
        match t.cell.command() {
            command::CREATED => created += 1,
            command::DESTROY => destroyed += 1,
            _ => {}
        }
    }
    assert_eq!((created, destroyed), (5, 3));
    // Cells for unknown circuits, and garbage relay bodies, are
    // dropped without harm; the link stays up.
    let stray = Cell::relay(bit | 9999, &[7u8; crate::cell::CELL_BODY_BYTES]).unwrap();
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, stray.as_bytes());
    let garbage = Cell::relay(bit | 100, &[7u8; crate::cell::CELL_BODY_BYTES]).unwrap();
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, garbage.as_bytes());
    assert_eq!(
        net.nodes()[1].relay_circuit_count(),
        4,
        "the garbled one went"
    );
    assert_eq!(net.nodes()[1].stats().circuits.torn_down_bad_cell, 1);
    assert!(net.nodes()[1].has_link(l1));
    // A CREATE on the wrong half of the id space is a protocol
    // violation: the link is cut, the node keeps serving others.
    let wrong = create_cell(&net.nodes()[1], (bit ^ 0x8000_0000) | 5, 9);
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, wrong.as_bytes());
    assert!(!net.nodes()[1].has_link(l1));
    assert_eq!(
        net.nodes()[1].relay_circuit_count(),
        0,
        "the link's circuits went with it"
    );
    assert_eq!(net.nodes()[1].stats().peers_penalised, 1);
}

#[test]
fn client_only_nodes_refuse_to_relay() {
    let mut net = net(2, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    let (l0, l1) = link_between(&mut net);
    net.nodes_mut()[1].config.relay = false;
    let bit = own_side_bit(net.nodes()[0].direction_of(l0));
    let c = create_cell(&net.nodes()[1], bit | 1, 1);
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, c.as_bytes());
    assert_eq!(net.nodes()[1].relay_circuit_count(), 0);
    let t = net.nodes_mut()[1].poll_transmit().unwrap();
    assert_eq!(t.cell.command(), command::DESTROY);
    assert_eq!(
        t.cell.link_payload().unwrap(),
        [crate::node::fault::wire::NOT_A_RELAY]
    );
}

#[test]
fn guards_survive_a_restart() {
    let mut net = net(8, false);
    net.run(T0 + 8_000);
    let saved = net.nodes()[0].guards();
    assert!(!saved.is_empty());
    let mut fresh = node(1, vec![addr(1)]);
    assert_eq!(fresh.restore_guards(T0 + 9_000, &saved), saved.len());
    assert_eq!(fresh.guards(), saved);
    // Garbage records are skipped.
    let mut bad = saved.clone();
    bad[0].descriptor[10] ^= 1;
    let mut other = node(1, vec![addr(1)]);
    assert_eq!(other.restore_guards(T0 + 9_000, &bad[..1]), 0);
}

#[test]
fn guard_status_says_what_circuits_wait_for() {
    let mut net = quiet_net(8);
    net.nodes_mut()[0].config.circuits.guard_min_age_ms = 20_000;
    net.nodes_mut()[0].config.circuits.guards = 1;
    // Alone: nothing known, nothing picked.
    let s = net.nodes()[0].guard_status();
    assert_eq!((s.candidates, s.aged, s.guards), (0, 0, 0), "{s:?}");
    assert_eq!((s.hops, s.guards_wanted, s.aged_needed), (3, 1, 3));
    assert_eq!(s.next_aged_in_ms, None);
    // Relays known, none of them for the minimum age: no guard yet.
    net.run(T0 + 10_000);
    let s = net.nodes()[0].guard_status();
    assert!(s.candidates >= 3, "{s:?}");
    assert_eq!((s.aged, s.guards), (0, 0), "{s:?}");
    let wait = s.next_aged_in_ms.expect("a relay comes of age");
    assert!(wait > 0 && wait <= 20_000, "{s:?}");
    assert!(net.nodes()[0].circuits().is_empty());
    // Once they are aged, a guard is picked and a circuit built.
    net.run_from(T0 + 10_000, T0 + 40_000);
    let s = net.nodes()[0].guard_status();
    assert!(s.aged >= s.aged_needed, "{s:?}");
    assert_eq!((s.guards, s.guards_unreachable), (1, 0), "{s:?}");
    assert!(!built(&net, 0).is_empty());
    // Our own dial of the guard fails: it is unreachable until its retry.
    let g = net.nodes()[0].guard_ids()[0];
    let g_addr = net.nodes()[index_of(&net, g)]
        .descriptor()
        .address()
        .unwrap();
    let now = T0 + 40_000;
    if let Some(l) = net.nodes()[0].link_to(&g) {
        net.nodes_mut()[0].handle_link_down(now, l);
    }
    assert!(net.nodes_mut()[0].dial_expected(now, g_addr, g, true));
    while net.nodes_mut()[0].poll_event().is_some() {}
    net.nodes_mut()[0].handle_connect_failed(now, g_addr);
    let s = net.nodes()[0].guard_status();
    assert_eq!((s.guards, s.guards_unreachable), (1, 1), "{s:?}");
}

#[test]
fn rotation_destroys_the_old_circuit_at_every_relay() {
    let mut net = quiet_net(8);
    net.nodes_mut()[0].config.circuits.lifetime_ms = 5_000;
    net.run(T0 + 30_000);
    let rotated = net
        .events()
        .iter()
        .filter(|(i, e)| {
            *i == 0
                && matches!(
                    e,
                    Event::CircuitClosed {
                        reason: CloseReason::Rotated,
                        ..
                    }
                )
        })
        .count();
    assert!(rotated >= 2, "rotated {rotated} times");
    let relayed: usize = net.nodes().iter().map(Node::relay_circuit_count).sum();
    let live = net.nodes()[0].circuits().len();
    // Each of node 0's live circuits has at most 3 relay entries.
    assert!(
        relayed <= 3 * live,
        "{relayed} relayed entries for {live} circuits"
    );
}

#[test]
fn nothing_after_a_cut_in_one_read() {
    let mut net = net(2, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    let (l0, l1) = link_between(&mut net);
    let bit = own_side_bit(net.nodes()[0].direction_of(l0));
    let mut chunk = Vec::new();
    chunk.extend_from_slice(create_cell(&net.nodes()[1], bit | 100, 1).as_bytes());
    chunk.extend_from_slice(create_cell(&net.nodes()[1], bit | 100, 2).as_bytes());
    chunk.extend_from_slice(create_cell(&net.nodes()[1], bit | 101, 3).as_bytes());
    let before = net.nodes()[1].stats().circuits.relay_created;
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, &chunk);
    assert!(!net.nodes()[1].has_link(l1));
    assert_eq!(net.nodes()[1].relay_circuit_count(), 0);
    assert_eq!(
        net.nodes()[1].stats().circuits.relay_created,
        before + 1,
        "a CREATE after the cut was served"
    );
}
