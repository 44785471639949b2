//! Tests of the test network itself.

use super::*;
use crate::cell::command;
use crate::identity::NodeId;
use crate::node::{CircuitId, CircuitState};

fn index_of(net: &TestNet, id: NodeId) -> usize {
    net.nodes()
        .iter()
        .position(|n| n.node_id() == id)
        .expect("a node of the net")
}

/// Node 0's built circuits from the record: (id, hops).
fn built(net: &TestNet) -> Vec<(CircuitId, Vec<NodeId>)> {
    net.events()
        .iter()
        .filter_map(|(i, e)| match e {
            Event::CircuitBuilt { id, hops, .. } if *i == 0 => Some((*id, hops.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn two_nodes_link() {
    let mut net = TestNet::new(2, false).unwrap();
    net.run(T0 + 2_000);
    let (a, b) = (&net.nodes()[0], &net.nodes()[1]);
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
    assert_eq!(a.peers()[0].node_id, b.node_id());
    // Node 1 dialled node 0 (its bootstrap): its link 1 is the wire's
    // dialler end, and both ends report it up.
    let l = net.link_to(1, 0).expect("linked");
    let (peer, pl) = net.peer_of(1, l).expect("a wire");
    assert_eq!(peer, 0);
    assert_eq!(net.peer_of(0, pl), Some((1, l)));
    let (_, w) = net.network().wires().next().expect("one wire");
    assert!(w.a_up && w.b_up && !w.closed && !w.failed);
    assert_eq!(w.a.0, 1);
}

#[test]
fn eight_nodes_link_and_gossip() {
    let mut net = TestNet::new(8, false).unwrap();
    net.run(T0 + 30_000);
    for n in net.nodes() {
        assert!(!n.peers().is_empty(), "node has no peers");
        assert!(n.known_count() >= 6, "node knows only {}", n.known_count());
        assert!(n.stats().rounds > 10);
        // (A handshake may fail when two nodes dial each other at once and
        // one end drops the duplicate; nobody misbehaves.)
        assert_eq!(n.stats().peers_penalised, 0);
    }
    assert!(net.network().cells_delivered() > 0);
}

#[test]
fn spliced_links_never_come_up() {
    let mut net = TestNet::new(3, true).unwrap();
    net.run(T0 + 5_000);
    for n in net.nodes() {
        assert!(n.peers().is_empty());
    }
    assert!(net.nodes()[1].stats().handshakes_failed > 0);
    assert!(net.network().wires().all(|(_, w)| w.failed || !w.a_up));
}

#[test]
fn a_dial_to_nobody_fails_and_a_killed_node_drops_its_links() {
    let mut net = TestNet::new(3, false).unwrap();
    net.run(T0 + 3_000);
    assert!(!net.nodes()[2].peers().is_empty());
    net.kill(0);
    net.run_from(T0 + 3_000, T0 + 3_100);
    assert!(net.is_dead(0));
    for i in 1..3 {
        let zero = net.nodes()[0].node_id();
        assert!(!net.nodes()[i].peers().iter().any(|p| p.node_id == zero));
        assert!(net.link_to(i, 0).is_none());
    }
    // Dials to the dead node fail.
    let failed = net.nodes()[1].stats().dials_failed;
    net.run_from(T0 + 3_100, T0 + 40_000);
    assert!(net.nodes()[1].stats().dials_failed > failed);
}

#[test]
fn a_stalled_link_holds_its_cells_until_released() {
    let mut net = TestNet::with_config(8, false, |_, c| c.circuits.circuits_wanted = 0).unwrap();
    net.run(T0 + 6_000);
    net.stall_all(0);
    assert!(!net.stalled().is_empty());
    let t = T0 + 6_000;
    net.nodes_mut()[0].set_circuits_wanted(1);
    net.nodes_mut()[0].handle_timeout(t + 1_000);
    net.pump(t + 2_000);
    // A CREATE went nowhere: no circuit, nothing at the guard.
    assert!(built(&net).is_empty());
    let building = net.nodes()[0]
        .circuits()
        .iter()
        .any(|c| c.state == CircuitState::Building);
    assert!(building, "a build waits on the stalled link");
    for (i, l) in net.stalled() {
        net.release(t + 2_000, i, l);
    }
    assert!(net.stalled().is_empty());
    net.run_from(t + 2_000, t + 5_000);
    assert_eq!(built(&net).len(), 1, "the build completed once released");
}

#[test]
fn a_flipped_bit_tears_the_circuit_down() {
    let mut net = TestNet::new(8, false).unwrap();
    net.run(T0 + 10_000);
    let (id, hops) = built(&net)
        .first()
        .cloned()
        .expect("node 0 built a circuit");
    let guard = index_of(&net, hops[0]);
    net.take_events();
    net.nodes_mut()[0].set_circuits_wanted(0);
    net.set_tamper(Some(Box::new(move |from, _, cell: &mut Cell| {
        if from == guard && cell.command() == command::RELAY {
            cell.body_mut()[100] ^= 0x20;
        }
        Verdict::Deliver
    })));
    let now = T0 + 10_000;
    net.nodes_mut()[0].send_data(id, b"one").unwrap();
    net.nodes_mut()[0].probe_circuit(now, id);
    net.pump(now);
    net.set_tamper(None);
    net.run_from(now, now + 20_000);
    let torn = net.events().iter().any(|(i, e)| {
        *i == 0 && matches!(e, Event::CircuitClosed { id: c, built: true, .. } if *c == id)
    });
    assert!(torn, "the tampered circuit was torn down");
    let delivered = net
        .events()
        .iter()
        .any(|(_, e)| matches!(e, Event::RelayData { data, .. } if data != b"one"));
    assert!(!delivered, "a mangled cell was delivered");
}

#[test]
fn same_seed_same_outcome() {
    let run = || {
        let mut net = TestNet::new(8, false).unwrap();
        net.run(T0 + 10_000);
        let nodes = net
            .nodes()
            .iter()
            .map(|n| (n.sample(), n.stats().clone()))
            .collect::<Vec<_>>();
        (nodes, net.network().events(), net.events().len())
    };
    assert_eq!(run(), run());
}

#[test]
fn owner_events_interleave_with_the_network() {
    // A latency model: the owner's event at 5 ms falls between a cell's
    // departure and its arrival 10 ms later.
    #[derive(Debug)]
    struct Slow;
    impl Model for Slow {
        fn latency(&self, _: usize, _: usize) -> Millis {
            10
        }
        fn serialise_ms(&self, _: usize) -> Millis {
            1
        }
        fn dial_ms(&self) -> Millis {
            5
        }
        fn dial_failed_ms(&self) -> Millis {
            100
        }
    }
    let mut net: Network<Slow, &'static str> = Network::new(Slow, T0);
    for k in 1..=2 {
        let node = test_node(k, vec![test_addr(1)], |_| {}).unwrap();
        net.add_node(test_addr(k), node);
    }
    net.schedule(T0 + 3, "early");
    net.schedule(T0 + 40_000, "late");
    net.start(0, &mut ());
    net.start(1, &mut ());
    let mut seen = Vec::new();
    while let Some(e) = net.run_until(T0 + 30_000, &mut ()) {
        seen.push((e, net.now()));
    }
    assert_eq!(seen, vec![("early", T0 + 3)]);
    assert_eq!(net.now(), T0 + 30_000);
    assert_eq!(net.nodes()[0].peers().len(), 1);
    assert_eq!(net.run_until(T0 + 40_000, &mut ()), Some("late"));
}
