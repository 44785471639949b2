//! Floods against the per-link and per-circuit bounds, and honest bulk
//! traffic past them. A link's cell budget
//! ([`crate::node::Config::max_link_cells_per_sec`]) counts only
//! link-level and circuit-control cells; relay cells are bounded per
//! circuit (flow control, the circuit queue cap, and the allowance for
//! cells crossing our DESTROY). Each test has an attacker hit one bound
//! while an honest circuit or peer keeps working, or shows that honest
//! bulk traffic far above the old per-link ceiling is not cut.

use super::super::tests::{T0, TestNet as Net, net};
use super::tests::{built, create_cell, index_of, link_between, quiet_net};
use super::*;
use crate::circuit::MAX_DATA_BYTES;
use crate::node::{Event, Millis, RelayCircuitId};

fn closed(net: &Net, i: usize, id: u64) -> bool {
    net.events()
        .iter()
        .any(|(n, e)| *n == i && matches!(e, Event::CircuitClosed { id: c, .. } if c.0 == id))
}

fn penalised(net: &Net) -> u64 {
    net.nodes().iter().map(|n| n.stats().peers_penalised).sum()
}

/// `tag`, `i` and padding: one full data cell.
fn payload(tag: u8, i: u32) -> Vec<u8> {
    let mut p = vec![tag; MAX_DATA_BYTES];
    p[1..5].copy_from_slice(&i.to_be_bytes());
    p
}

/// Data cells node `i` got, as client (`CircuitData`) or as a last hop
/// (`RelayData`), whose first byte is `tag`, in arrival order.
fn got(net: &Net, i: usize, tag: u8) -> Vec<u32> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::CircuitData { data, .. } | Event::RelayData { data, .. }
                if *n == i && data.first() == Some(&tag) =>
            {
                Some(u32::from_be_bytes(data[1..5].try_into().unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn bulk_circuits_are_not_capped_per_link() {
    // Node 0 has two circuits through its guard G, on one link, and sends
    // on both as fast as its windows allow; the exit of the first sends
    // back as fast as its window allows. Each 10 virtual ms step sends a
    // window on each and lets the SENDMEs come back, so each circuit moves
    // 51 200 cells/s each way: the link 0 → G carries 25 times the old
    // per-link ceiling (4096 cells/s, burst 8192), G → 0 12 times it.
    // Nothing is cut or torn down and every cell arrives, in order. (Under
    // the old ceiling G cut node 0 after 8192 cells.)
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
    let exit_a = index_of(&net, *a.hops.last().unwrap());
    let exit_b = index_of(&net, *b.hops.last().unwrap());
    // The exit learns its circuit's id from the first data cell.
    net.nodes_mut()[0]
        .send_data(a.id, &payload(b'A', 0))
        .unwrap();
    net.pump(T0 + 12_000);
    let rc: RelayCircuitId = net
        .events()
        .iter()
        .find_map(|(i, e)| match e {
            Event::RelayData { circuit, .. } if *i == exit_a => Some(*circuit),
            _ => None,
        })
        .expect("A's exit got a cell");
    let start = T0 + 12_000;
    let mut now = start;
    const CELLS: u32 = 10_240;
    let (mut sent_a, mut sent_b, mut sent_back) = (1u32, 0u32, 0u32);
    while sent_a < CELLS || sent_b < CELLS || sent_back < CELLS {
        let before = (sent_a, sent_b, sent_back);
        while sent_a < CELLS
            && net.nodes_mut()[0]
                .send_data(a.id, &payload(b'A', sent_a))
                .is_ok()
        {
            sent_a += 1;
        }
        while sent_b < CELLS
            && net.nodes_mut()[0]
                .send_data(b.id, &payload(b'B', sent_b))
                .is_ok()
        {
            sent_b += 1;
        }
        while sent_back < CELLS
            && net.nodes_mut()[exit_a]
                .relay_send_data(rc, &payload(b'R', sent_back))
                .is_ok()
        {
            sent_back += 1;
        }
        assert_ne!(before, (sent_a, sent_b, sent_back), "no credit came back");
        now += 10;
        net.pump(now);
    }
    let secs = (now - start) as f64 / 1000.0;
    let rate = f64::from(2 * CELLS) / secs;
    assert!(rate > 20.0 * 4096.0, "only {rate:.0} cells/s on 0 → G");
    let in_order = |v: Vec<u32>| v == (0..CELLS).collect::<Vec<_>>();
    assert!(in_order(got(&net, exit_a, b'A')), "A's data");
    assert!(in_order(got(&net, exit_b, b'B')), "B's data");
    assert!(in_order(got(&net, 0, b'R')), "the data back on A");
    assert_eq!(penalised(&net), 0, "a peer was cut");
    assert!(net.nodes()[g].has_link(to_client), "the guard link went");
    assert!(!closed(&net, 0, a.id.0) && !closed(&net, 0, b.id.0));
    let ids: Vec<_> = built(&net, 0).iter().map(|c| c.id).collect();
    assert!(ids.contains(&a.id) && ids.contains(&b.id), "still built");
    assert_eq!(net.nodes()[g].stats().circuits.over_queue, 0);
}

#[test]
fn a_greedy_circuit_dies_alone_beside_a_bulk_one() {
    // Node 0 has two circuits A and B through its guard G, on one link,
    // with different middle hops. G's link to B's middle is slow (its
    // cells are held). A is a bulk transfer within its window at 12 times
    // the old per-link ceiling; B ignores flow control. B's queue at G
    // overflows and G destroys B alone; A, the shared link and node 0 are
    // untouched (under the old per-link ceiling, G cut node 0 after 8192
    // cells and took A down with B).
    let mut net = quiet_net(10);
    net.nodes_mut()[0].config.circuits.circuits_wanted = 3;
    net.run(T0 + 12_000);
    let circuits = built(&net, 0);
    let (a, b) = circuits
        .iter()
        .flat_map(|a| circuits.iter().map(move |b| (a, b)))
        .find(|(a, b)| a.hops[0] == b.hops[0] && a.hops[1] != b.hops[1])
        .map(|(a, b)| (a.clone(), b.clone()))
        .expect("two circuits through one guard with different middles");
    net.nodes_mut()[0].config.circuits.circuits_wanted = 0;
    let g = index_of(&net, a.hops[0]);
    let to_client = net.nodes()[g].link_to(&net.nodes()[0].node_id()).unwrap();
    let to_b_middle = net.nodes()[g].link_to(&b.hops[1]).unwrap();
    net.stall(g, to_b_middle);
    let exit_a = index_of(&net, *a.hops.last().unwrap());
    net.take_events();
    let start = T0 + 12_000;
    let mut now = start;
    const CELLS: u32 = 10_240;
    let (mut sent_a, mut sent_b) = (0u32, 0u32);
    let last_b = b.hops.len() - 1;
    while sent_a < CELLS {
        let before = sent_a;
        while sent_a < CELLS
            && net.nodes_mut()[0]
                .send_data(a.id, &payload(b'A', sent_a))
                .is_ok()
        {
            sent_a += 1;
        }
        assert!(sent_a > before, "A stalled after {sent_a} cells");
        if !closed(&net, 0, b.id.0) {
            for _ in 0..200 {
                let bytes = payload(b'B', sent_b);
                net.nodes_mut()[0].send_own(b.id.0, last_b, &CircuitMsg::Data { bytes });
                sent_b += 1;
            }
        }
        now += 10;
        net.pump(now);
    }
    let window = net.nodes()[0].config.circuits.window_cells;
    assert!(sent_b > window, "B stayed within its window");
    assert!(closed(&net, 0, b.id.0), "B is still up");
    assert!(
        net.nodes()[g].stats().circuits.over_queue >= 1,
        "G never noticed"
    );
    assert!(!closed(&net, 0, a.id.0), "A came down with B");
    assert!(built(&net, 0).iter().any(|c| c.id == a.id), "A still built");
    assert_eq!(got(&net, exit_a, b'A'), (0..CELLS).collect::<Vec<_>>());
    assert!(
        net.nodes()[g].has_link(to_client),
        "the shared link was cut"
    );
    assert_eq!(penalised(&net), 0, "a peer was cut");
}

/// Node 1 of a 3-node network; node 0 opens `circuits` circuits at it (as
/// CREATEs on their link), which node 1 then ends for being idle. Returns
/// the network, node 1's link from node 0, and the circuit ids.
fn ended_circuits(circuits: u32) -> (Net, LinkId, Vec<u32>, Millis) {
    let mut net = net(3, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.nodes_mut()[1].config.circuits.relay_idle_ms = 1_000;
    let (l0, l1) = link_between(&mut net);
    let bit = own_side_bit(net.nodes()[0].direction_of(l0));
    let now = T0 + 3_000;
    let ids: Vec<u32> = (0..circuits).map(|i| bit | (100 + i)).collect();
    for (i, cid) in ids.iter().enumerate() {
        let c = create_cell(&net.nodes()[1], *cid, i as u8);
        net.nodes_mut()[1].handle_link_data(now, l1, c.as_bytes());
    }
    net.pump(now);
    assert_eq!(net.nodes()[1].relay_circuit_count(), circuits as usize);
    let later = now + 3_000;
    net.run_from(now, later);
    assert_eq!(net.nodes()[1].relay_circuit_count(), 0, "ended as idle");
    (net, l1, ids, later)
}

fn relay_cells(ids: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for cid in ids {
        out.extend_from_slice(Cell::new(cid, command::RELAY).as_bytes());
    }
    out
}

/// Whether node 2, an honest peer of node 1, still gets a circuit there
/// (a new one, id `cid`).
fn honest_peer_served(net: &mut Net, now: Millis, cid: u32) -> bool {
    let id1 = net.nodes()[1].node_id();
    let l2 = net.nodes()[2].link_to(&id1).expect("2 linked to 1");
    let (_, at1) = net.peer_of(2, l2).unwrap();
    let bit = own_side_bit(net.nodes()[2].direction_of(l2));
    let before = net.nodes()[1].relay_circuit_count();
    let c = create_cell(&net.nodes()[1], bit | cid, 9);
    net.nodes_mut()[1].handle_link_data(now, at1, c.as_bytes());
    net.nodes()[1].relay_circuit_count() == before + 1
}

#[test]
fn cells_crossing_our_destroy_are_expected_invented_ids_are_cut() {
    // Node 1 ends 12 circuits node 0 had through it. Node 0's cells for
    // them that were already on their way (a full circuit queue plus the
    // cells in flight, for each: 9984 in all, more than the old per-link
    // burst) arrive after: dropped, and node 0 keeps its link. Then node 0
    // sends relay cells on ids it never had: the stray rate's burst is
    // dropped too, one more and node 0 is cut. Node 2 is served
    // throughout.
    const CIRCUITS: u32 = 12;
    let (mut net, l1, ids, now) = ended_circuits(CIRCUITS);
    let cfg = net.nodes()[1].config.clone();
    let per = (cfg.max_circuit_queue_cells + cfg.max_link_in_flight_cells) as u32;
    let crossing = ids
        .iter()
        .flat_map(|cid| std::iter::repeat_n(*cid, per as usize));
    net.nodes_mut()[1].handle_link_data(now, l1, &relay_cells(crossing));
    assert!(
        net.nodes()[1].has_link(l1),
        "cut for cells crossing our DESTROYs"
    );
    assert_eq!(net.nodes()[1].stats().peers_penalised, 0);
    assert_eq!(
        net.nodes()[1].stats().circuits.stray_cells,
        u64::from(CIRCUITS * per)
    );
    let burst = 2 * cfg.max_link_cells_per_sec;
    let invented = (0..burst).map(|i| 0x4000_0000 | i);
    net.nodes_mut()[1].handle_link_data(now, l1, &relay_cells(invented));
    assert!(net.nodes()[1].has_link(l1), "cut within the stray burst");
    assert!(honest_peer_served(&mut net, now, 7), "honest peer refused");
    net.nodes_mut()[1].handle_link_data(now, l1, &relay_cells([0x4000_ffff]));
    assert!(!net.nodes()[1].has_link(l1), "a stray flood was not cut");
    assert_eq!(net.nodes()[1].stats().peers_penalised, 1);
    assert!(honest_peer_served(&mut net, now, 8), "honest peer refused");
}

#[test]
fn control_cell_floods_are_cut_honest_peers_are_not() {
    // Control cells (here DESTROYs for circuits node 0 never had) count
    // against the link's budget: two seconds' worth pass, one more and
    // node 0 is cut. Node 2 keeps its link and is served; nobody else is
    // penalised.
    let mut net = net(3, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    let (_, l1) = link_between(&mut net);
    let now = T0 + 3_000;
    let burst = 2 * net.nodes()[1].config.max_link_cells_per_sec;
    let destroy = |cid: u32| Cell::control(cid, command::DESTROY, &[0]).unwrap();
    // A few cells went on the link already (handshake, gossip).
    let mut flood = Vec::new();
    for i in 0..burst - 100 {
        flood.extend_from_slice(destroy(0x4000_0000 | i).as_bytes());
    }
    net.nodes_mut()[1].handle_link_data(now, l1, &flood);
    assert!(net.nodes()[1].has_link(l1), "cut within the burst");
    net.nodes_mut()[1].handle_link_data(now, l1, &flood[..200 * crate::cell::CELL_SIZE]);
    assert!(
        !net.nodes()[1].has_link(l1),
        "a control-cell flood was not cut"
    );
    assert_eq!(net.nodes()[1].stats().peers_penalised, 1);
    let id2 = net.nodes()[2].node_id();
    assert!(
        net.nodes()[1].link_to(&id2).is_some(),
        "the honest link went"
    );
    assert!(honest_peer_served(&mut net, now, 7), "honest peer refused");
    net.run_from(now, now + 5_000);
    assert!(net.nodes()[1].link_to(&id2).is_some());
    for i in [0, 2] {
        assert_eq!(net.nodes()[i].stats().peers_penalised, 0);
    }
}
