use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::*;
use crate::cell::CELL_SIZE;

/// Hooks into the parts, for tests that plant state or drive one step.
impl Node {
    pub(super) fn link_to(&self, id: &NodeId) -> Option<LinkId> {
        self.links.to_peer(id)
    }

    pub(super) fn has_link(&self, link: LinkId) -> bool {
        self.links.contains(link)
    }

    pub(super) fn link_ids(&self) -> Vec<LinkId> {
        self.links.ids()
    }

    pub(super) fn direction_of(&self, link: LinkId) -> Direction {
        self.links.get(link).expect("a known link").direction
    }

    pub(super) fn guard_ids(&self) -> Vec<NodeId> {
        self.circ.guard_ids()
    }

    pub(super) fn guard_unreachable(&self, id: NodeId) -> Option<bool> {
        self.circ.guard_unreachable(id)
    }

    pub(super) fn relays_circuit(&self, k: u64) -> bool {
        self.circ.relays_circuit(k)
    }

    /// A dial for our own circuits or an extend, as the circuit part asks.
    pub(super) fn dial_expected(
        &mut self,
        now: Millis,
        addr: SocketAddr,
        id: NodeId,
        own: bool,
    ) -> bool {
        self.clamp(now);
        let (mut cx, p) = self.split();
        let ok = p.dialer.dial_expected(&mut cx, &*p.links, addr, id, own);
        self.settle();
        ok
    }

    /// A gossip dial of `id`, as a round would make it.
    pub(super) fn gossip_dial(&mut self, now: Millis, id: NodeId) -> bool {
        self.clamp(now);
        let guards = self.circ.guard_ids();
        let (mut cx, p) = self.split();
        let Some(d) = p.dir.verified(&mut cx, id) else {
            return false;
        };
        let Some(addr) = d.address() else {
            return false;
        };
        let ok = guards.is_empty() && p.dialer.dial_gossip(&mut cx, &*p.links, addr, id);
        self.settle();
        ok
    }

    pub(super) fn maintain_guards(&mut self, now: Millis) {
        self.clamp(now);
        circuit_parts!(self, cx, w, circ);
        circ.maintain_guards(&mut cx, &mut w);
        self.settle();
    }

    pub(super) fn on_extend(
        &mut self,
        now: Millis,
        k: u64,
        prev: LinkId,
        descriptor: &[u8],
        msg1: Vec<u8>,
    ) {
        self.clamp(now);
        circuit_parts!(self, cx, w, circ);
        circ.on_extend(&mut cx, &mut w, k, prev, descriptor, msg1);
        self.settle();
    }

    pub(super) fn send_own(&mut self, k: u64, hop: usize, msg: &crate::circuit::CircuitMsg) {
        self.send_own_as(k, hop, msg, crate::cell::command::RELAY);
    }

    pub(super) fn send_own_as(
        &mut self,
        k: u64,
        hop: usize,
        msg: &crate::circuit::CircuitMsg,
        cmd: u8,
    ) {
        circuit_parts!(self, cx, w, circ);
        circ.send_own_as(&mut cx, &mut w, k, hop, msg, cmd);
        self.settle();
    }

    /// As if a pull reply had carried a forgery `peer` vouched for.
    pub(super) fn refuse_blaming(&mut self, peer: NodeId) {
        let r = directory::Refusal { blame: Some(peer) };
        self.route(output::Action::Refused(r));
        self.settle();
    }

    /// Plants an authenticated inbound link to `peer`.
    pub(super) fn plant_link(&mut self, now: Millis, link: LinkId, peer: NodeId) {
        self.links.plant_up(link, peer, now);
        self.out.open(link);
    }

    /// Plants a relayed circuit at its last hop (see
    /// `Circuits::plant_last_hop`).
    pub(super) fn plant_last_hop(&mut self, now: Millis, link: LinkId, cid: u32) -> u64 {
        self.clamp(now);
        let (cx, p) = self.split();
        p.circ.plant_last_hop(&cx, link, cid)
    }
}

pub(super) use crate::testing::{T0, Tamper, TestNet, Verdict};

pub(super) fn node(i: u8, bootstrap: Vec<SocketAddr>) -> Node {
    crate::testing::test_node(i, bootstrap, |_| {}).expect("a valid test config")
}

pub(super) fn addr(i: u8) -> SocketAddr {
    crate::testing::test_addr(i)
}

/// `n` test nodes on the one in-memory test network
/// ([`crate::testing::TestNet`]), bootstrapping from node 0.
pub(super) fn net(n: u8, bindings_differ: bool) -> TestNet {
    TestNet::new(n, bindings_differ).expect("a valid test config")
}

#[test]
fn nodes_link_and_gossip() {
    let mut net = net(12, false);
    net.run(T0 + 30_000);
    // No handshake failed a check. (A link closed by its dialler right
    // after its last handshake message, when both ends dialled each other
    // at once, counts as failed at the far end: the network drops cells in
    // flight on a closed link, as a transport does.)
    assert!(
        !net.events()
            .iter()
            .any(|(_, e)| matches!(e, Event::HandshakeFailed { .. }))
    );
    for n in net.nodes() {
        assert!(!n.peers().is_empty(), "node has no peers");
        assert!(n.known_count() >= 8, "node knows only {}", n.known_count());
        assert!(n.stats().rounds > 10);
        assert!(n.stats().handshakes_failed <= 2);
        assert_eq!(n.stats().peers_penalised, 0);
        assert!(!n.peers().iter().any(|p| p.node_id == n.node_id()));
    }
}

#[test]
fn spliced_links_never_come_up() {
    let mut net = net(3, true);
    net.run(T0 + 5_000);
    for n in net.nodes() {
        assert!(n.peers().is_empty());
    }
    assert!(net.nodes()[1].stats().handshakes_failed > 0);
}

#[test]
fn garbage_before_handshake_is_refused_and_node_keeps_serving() {
    let mut a = node(1, vec![]);
    a.handle_link_up(T0, LinkId(9), Direction::Inbound, addr(9), [0; 32]);
    a.handle_link_data(T0, LinkId(9), &[0xff; CELL_SIZE]);
    let mut closed = false;
    while let Some(e) = a.poll_event() {
        closed |= matches!(e, Event::Close { link: LinkId(9) });
    }
    assert!(closed);
    assert_eq!(a.stats().handshakes_failed, 1);
    // Still accepts new links.
    a.handle_link_up(T0, LinkId(10), Direction::Inbound, addr(9), [0; 32]);
    assert!(a.poll_event().is_none());
}

/// Node 1 receives `cells` padding cells at once from node 0 over an
/// established link. Returns whether the link survived, and node 1's
/// stats.
fn padding_burst(cells: usize) -> (bool, Stats) {
    let mut net = net(2, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.run(T0 + 3_000);
    let id0 = net.nodes()[0].node_id();
    let l1 = net.nodes()[1].link_to(&id0).expect("linked");
    let padding = Cell::new(0, crate::cell::command::PADDING);
    let mut burst = Vec::with_capacity(cells * CELL_SIZE);
    for _ in 0..cells {
        burst.extend_from_slice(padding.as_bytes());
    }
    net.nodes_mut()[1].handle_link_data(T0 + 3_000, l1, &burst);
    (net.nodes()[1].has_link(l1), net.nodes()[1].stats().clone())
}

#[test]
fn cell_floods_are_cut() {
    // Valid cells on an authenticated link: within the burst (two
    // seconds at max_link_cells_per_sec) the link stays; beyond it the rate
    // limiter cuts the peer. Only the rate differs between the runs.
    let burst = 2 * Config::testnet().max_link_cells_per_sec as usize;
    let (alive, stats) = padding_burst(burst - 100);
    assert!(alive, "cut within the allowed burst");
    assert_eq!(stats.peers_penalised, 0);
    let (alive, stats) = padding_burst(burst + 100);
    assert!(!alive, "a flood beyond the burst was not cut");
    assert_eq!(stats.peers_penalised, 1);
    assert_eq!(
        stats.handshakes_failed, 0,
        "cut by the limiter, not the handshake"
    );
}

#[test]
fn a_clock_stepped_back_is_no_time_passing() {
    // Node 0 starts a build at T; its cells are held, then delivered
    // after the driver's wall clock jumped back 9 s. Every entry point
    // clamps the time, so nothing underflows (a debug build would
    // panic) and the build time is sane.
    let mut net = net(8, false);
    for n in net.nodes_mut() {
        n.config.circuits.circuits_wanted = 0;
    }
    net.run(T0 + 6_000);
    let t = T0 + 6_000;
    let links: Vec<LinkId> = net.nodes()[0].link_ids().into_iter().collect();
    for l in links {
        net.stall(0, l);
    }
    net.nodes_mut()[0].config.circuits.circuits_wanted = 1;
    net.nodes_mut()[0].handle_timeout(t + 1_000);
    net.pump(t + 1_000);
    let mut now = t - 9_000;
    for key in net.stalled() {
        net.release(now, key.0, key.1);
    }
    // The network's own clock never runs back (a cell leaves an uplink no
    // earlier than the last one did), so the run goes a little past `t`.
    while now < t + 2_000
        && !net
            .events()
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::CircuitBuilt { .. }))
    {
        net.pump(now);
        now += 50;
    }
    let build_ms = net.events().iter().find_map(|(i, e)| match e {
        Event::CircuitBuilt { build_ms, .. } if *i == 0 => Some(*build_ms),
        _ => None,
    });
    assert_eq!(build_ms, Some(0), "built within the stepped-back period");
    assert!(net.nodes()[0].now_ms >= t + 1_000);
}

#[test]
fn gossiped_address_gets_one_attempt_per_backoff() {
    // Node 1 learns node 5's descriptor (claiming some address) only by
    // gossip; whatever the rounds ask, it dials that address at most
    // once per backoff period and sends it nothing but a handshake.
    let mut a = node(1, vec![]);
    let victim = node(5, vec![]);
    let now = T0 + 100;
    a.dir
        .offer(now, victim.descriptor().admitted(), None, false);
    let target = victim.node_id();
    let mut connects = 0;
    for step in 0..20u64 {
        let t = now + step * 100;
        if a.gossip_dial(t, target) {
            // The dial is pending until the driver reports.
        }
        while let Some(e) = a.poll_event() {
            if let Event::Connect { addr: at, expected } = e {
                assert_eq!(at, addr(5));
                assert_eq!(expected, Some(target));
                connects += 1;
                a.handle_connect_failed(t, at);
            }
        }
    }
    assert_eq!(connects, 1, "2 s of tries, one attempt per 5 s backoff");
    assert!(
        a.poll_transmit().is_none(),
        "nothing sent to an unreached address"
    );
}

#[test]
fn same_inputs_same_outputs() {
    let run = || {
        let mut net = net(8, false);
        net.run(T0 + 10_000);
        net.nodes()
            .iter()
            .map(|n| (n.sample(), n.stats().clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

// ---- invariants under churn and hostile input -------------------------

/// Every open link of the network: (node, its link, peer, peer's link).
fn live_wires(net: &TestNet) -> Vec<(usize, LinkId, usize, LinkId)> {
    (0..net.nodes().len())
        .flat_map(|a| {
            net.network()
                .links(a)
                .into_iter()
                .filter(|(_, _, _, w)| !w.closed)
                .map(move |(la, b, lb, _)| (a, la, b, lb))
        })
        .collect()
}

fn check_invariants(n: &Node, tag: &str) {
    let links: BTreeSet<LinkId> = n.links.ids().into_iter().collect();
    for (t, _) in n.timers.all() {
        match t {
            timers::Timer::Handshake(l) => assert!(
                n.links.get(l).is_some_and(|x| x.is_handshaking()),
                "{tag}: handshake timer for {l:?} which is not handshaking"
            ),
            timers::Timer::Dial(a) => assert!(
                n.dialer.dial_addrs().contains(&a),
                "{tag}: dial timer for {a} with no dial"
            ),
            _ => {}
        }
    }
    for a in n.dialer.dial_addrs() {
        assert!(
            n.timers.get(timers::Timer::Dial(a)).is_some(),
            "{tag}: dial {a} without a timer"
        );
    }
    for l in &links {
        if n.links.get(*l).unwrap().is_handshaking() {
            assert!(
                n.timers.get(timers::Timer::Handshake(*l)).is_some(),
                "{tag}: handshake {l:?} without timer"
            );
        }
    }
    for l in n.dialer.handshaking_links() {
        assert!(
            links.contains(&l),
            "{tag}: dialer remembers gone link {l:?}"
        );
    }
    for l in n.circ.on_link_ids() {
        assert!(
            links.contains(&l),
            "{tag}: circuit table for gone link {l:?}"
        );
    }
    for l in n.gossip.per_link_ids() {
        assert!(
            links.contains(&l),
            "{tag}: gossip state for gone link {l:?}"
        );
    }
    let ob: BTreeSet<LinkId> = n.out.outbox().link_ids().into_iter().collect();
    assert_eq!(ob, links, "{tag}: outbox queues vs links");
    assert!(
        n.circ.stale_ids().is_empty(),
        "{tag}: stale circuit ids {:?}",
        n.circ.stale_ids()
    );
}

#[test]
fn churn_keeps_every_table_consistent() {
    let mut net = net(8, false);
    net.run(T0 + 8_000);
    let mut seed: u64 = 0x1234_5678;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut now = T0 + 8_000;
    let mut hostile_link = 50_000_000u64;
    for step in 0..3000 {
        let pick = rnd() % 10;
        let i = (rnd() % net.nodes().len() as u64) as usize;
        match pick {
            0 => {
                // A hostile dialler opens a link and maybe sends junk.
                let from: SocketAddr = format!("127.200.{}.{}:9", rnd() % 4, rnd() % 250 + 1)
                    .parse()
                    .unwrap();
                let l = LinkId(hostile_link);
                hostile_link += 1;
                net.nodes_mut()[i].handle_link_up(now, l, Direction::Inbound, from, [1; 32]);
                if rnd() % 2 == 0 {
                    let mut c = Cell::new(0, crate::cell::command::PADDING);
                    c.body_mut()[0] = rnd() as u8;
                    net.nodes_mut()[i].handle_link_data(now, l, c.as_bytes());
                }
            }
            1 | 2 => {
                // A real link drops (both ends hear of it).
                let wires = live_wires(&net);
                if !wires.is_empty() {
                    let (a, la, b, lb) = wires[(rnd() % wires.len() as u64) as usize];
                    net.nodes_mut()[a].handle_link_down(now, la);
                    net.nodes_mut()[b].handle_link_down(now, lb);
                }
            }
            3 | 4 => {
                // A hostile peer on a real link sends a random circuit cell.
                let wires = live_wires(&net);
                if !wires.is_empty() {
                    let (a, la, _, _) = wires[(rnd() % wires.len() as u64) as usize];
                    let cmds = [
                        crate::cell::command::CREATE,
                        crate::cell::command::CREATED,
                        crate::cell::command::RELAY,
                        crate::cell::command::RELAY_EARLY,
                        crate::cell::command::DESTROY,
                        0x7f,
                    ];
                    let cmd = cmds[(rnd() % cmds.len() as u64) as usize];
                    let cid = (rnd() as u32) | 1;
                    let c = Cell::new(cid, cmd);
                    net.nodes_mut()[a].handle_link_data(now, la, c.as_bytes());
                }
            }
            5 => {
                let a: SocketAddr = format!("127.{}.0.1:7000", rnd() % 9 + 1).parse().unwrap();
                net.nodes_mut()[i].handle_connect_failed(now, a);
            }
            _ => {
                now += rnd() % 3_000;
                for n in net.nodes_mut().iter_mut() {
                    if n.poll_timeout().is_some_and(|t| t <= now) {
                        n.handle_timeout(now);
                        let next = n.poll_timeout().unwrap();
                        assert!(
                            next > now,
                            "step {step}: poll_timeout {next} not after now {now}"
                        );
                    }
                }
            }
        }
        net.pump(now);
        for (k, n) in net.nodes().iter().enumerate() {
            check_invariants(n, &format!("step {step} node {k}"));
        }
    }
}
