//! Adversaries: harness behaviour layered on real nodes.
//!
//! A flooder runs an honest `Node` (so its handshakes are genuine and its
//! identity has valid proof of work) and the harness adds what an attacker
//! would do on top, on the links the flooder really has. A forger does the
//! same with pull replies: it answers them with badly signed copies of
//! honest relays' descriptors (the impersonation attack the directory
//! defends against). Tamperers mangle the relay cells they send; colluders
//! relay honestly and pool what they see; a crash takes nodes down at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use veil_core::cell::{Cell, command};
use veil_core::descriptor::{Admitted, Descriptor, MAX_CLOCK_SKEW_MS, flags};
use veil_core::identity::{NodeId, NodeIdentity};
use veil_core::link::LinkMsg;
use veil_core::node::{LinkId, Millis, Node};
use veil_core::pow::PowParams;
use veil_core::testing::{Control, Hooks, Model, Network, Verdict};

use crate::scenario::{Scenario, Tamper};

/// What the harness makes of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) flooder: bool,
    pub(crate) forger: bool,
    pub(crate) colluder: bool,
    pub(crate) client_only: bool,
    pub(crate) tamperer: bool,
}

impl Role {
    /// Flooders and forgers: nodes whose own figures are not counted.
    pub(crate) fn adversary(&self) -> bool {
        self.flooder || self.forger
    }
}

/// Shuffles `v` in place with `rng` (Fisher–Yates, the draw order every
/// run depends on).
pub(crate) fn shuffle<T>(rng: &mut ChaCha20Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Draws every node's role. Flooders are spread over the id space by the
/// harness's RNG, never among the seed nodes (a seed list is curated);
/// colluders, client-only nodes, tamperers and forgers are drawn among the
/// rest, in that order, so adding forgers changes no other role.
pub(crate) fn draw_roles(rng: &mut ChaCha20Rng, s: &Scenario) -> Vec<Role> {
    let n = s.nodes;
    let count = |f: f64| ((n as f64) * f).round() as usize;
    let mut order: Vec<usize> = (s.seed_nodes.min(n)..n).collect();
    shuffle(rng, &mut order);
    let mut roles = vec![Role::default(); n];
    let flooders = count(s.flooders);
    for &i in order.iter().take(flooders) {
        roles[i].flooder = true;
    }
    let mut rest: Vec<usize> = order.into_iter().skip(flooders).collect();
    let mut take = |k: usize| -> Vec<usize> { rest.drain(..k.min(rest.len())).collect() };
    let colluders = take(count(s.colluders));
    let clients = take(count(s.client_only));
    let tamperers = take(count(s.tamperers));
    let forgers = take(count(s.forgers));
    for i in colluders {
        roles[i].colluder = true;
    }
    for i in clients {
        roles[i].client_only = true;
    }
    for i in tamperers {
        roles[i].tamperer = true;
    }
    for i in forgers {
        roles[i].forger = true;
    }
    roles
}

/// What a tamperer does to a relay cell it sends, once tampering started.
pub(crate) fn tamper(how: Tamper, from: usize, cell: &mut Cell) -> Verdict {
    if cell.command() != command::RELAY {
        return Verdict::Deliver;
    }
    match how {
        // Each tamperer flips its own bit: two flips of the same bit would
        // cancel (XOR layers are malleable; see docs/protocol.md on
        // tagging).
        Tamper::Corrupt => {
            cell.body_mut()[100 + from % 3000] ^= 0x20;
            Verdict::Deliver
        }
        Tamper::Drop => Verdict::Drop,
        Tamper::Replay => Verdict::Replay,
    }
}

/// The nodes a crash takes down: `fraction` of all nodes (the count
/// asked), drawn among the non-seed nodes with the harness's RNG.
pub(crate) fn crash_victims(
    rng: &mut ChaCha20Rng,
    n: usize,
    seed_nodes: usize,
    fraction: f64,
) -> (usize, Vec<usize>) {
    let k = ((n as f64) * fraction).round() as usize;
    let mut pool: Vec<usize> = (seed_nodes.min(n)..n).collect();
    shuffle(rng, &mut pool);
    pool.truncate(k);
    (k, pool)
}

/// The flooders' shared knowledge: every attacker's (validly signed)
/// descriptor.
#[derive(Debug, Default)]
pub(crate) struct Flooders {
    descriptors: Vec<Descriptor>,
}

impl Flooders {
    pub(crate) fn new(nodes: &[Node], roles: &[Role]) -> Flooders {
        let descriptors = nodes
            .iter()
            .zip(roles)
            .filter(|(_, r)| r.flooder)
            .map(|(n, _)| n.descriptor().clone())
            .collect();
        Flooders { descriptors }
    }

    /// A flooder answers every pull request with attacker descriptors only
    /// (instead of letting its honest node answer). Returns true if the
    /// cell was consumed.
    pub(crate) fn intercept(
        &self,
        rng: &mut ChaCha20Rng,
        ctl: &mut Control<'_>,
        node: usize,
        link: LinkId,
        cell: &Cell,
    ) -> bool {
        if cell.circ_id() != 0 {
            return false;
        }
        let Ok(LinkMsg::PullRequest { nonce }) = LinkMsg::decode(cell) else {
            return false;
        };
        let view = ctl.nodes()[node].config().brahms.view_size;
        let mut attackers = self.descriptors.clone();
        // A different attacker subset each time, all valid and fresh enough.
        shuffle(rng, &mut attackers);
        attackers.truncate(view);
        // Flooders vouch for their own (validly signed) descriptors.
        let attackers: Vec<_> = attackers.iter().map(|d| (d.admitted(), true)).collect();
        for c in LinkMsg::pull_reply(nonce, &attackers) {
            ctl.send(node, link, c);
        }
        true
    }
}

/// Mixed into the scenario seed for the forgers' RNG.
const FORGE_SEED: u64 = 0x666f_7267_6572_7321;
/// Stands for the timestamp in a forgery template until it is patched.
const FORGE_TS_MARK: u64 = 0x5645_494c_5f54_535f;
/// Where an encoded descriptor holds the keys and the proof-of-work nonce
/// (after version and flags): what a forger copies from an honest one.
const DESCRIPTOR_KEYS: std::ops::Range<usize> = 2..2 + 32 + 32 + 8;
/// The junk address half the forgeries claim (TEST-NET-1).
const JUNK_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);

/// Encodings the forgers patch into forgeries: signed once by a throwaway
/// identity (so every forgery's signature fails), flags 0 without an
/// address, and the relay flag with a junk address. (Its proof of work does
/// not matter: the target's replaces it.)
fn forge_templates(seed: u64) -> [Vec<u8>; 2] {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ FORGE_SEED ^ 1);
    let signer = NodeIdentity::generate(&mut rng, PowParams { difficulty_bits: 0 });
    [(0, None), (flags::RELAY, Some(JUNK_ADDR))]
        .map(|(f, a)| Descriptor::sign(&signer, f, a, FORGE_TS_MARK, Vec::new()).to_bytes())
}

/// The forgers: what they learnt, whom they target, what they sent.
#[derive(Debug)]
pub(crate) struct Forgers {
    /// The forgers' own RNG, so that forging leaves the rest of the run's
    /// randomness as it is without forgers.
    rng: ChaCha20Rng,
    /// Badly signed descriptor encodings the forgers patch: flags 0 and no
    /// address, and the relay flag with a junk address.
    templates: [Vec<u8>; 2],
    /// Honest relays the forgers target.
    pub(crate) targets: BTreeSet<usize>,
    /// Targets each forger has received a descriptor of.
    learned: BTreeMap<usize, BTreeSet<usize>>,
    /// Targets a forgery was sent for.
    pub(crate) forged: BTreeSet<usize>,
    /// Forged descriptors sent in pull replies.
    pub(crate) sent: u64,
    /// Of those, marked as checked by the forger (vouched).
    pub(crate) vouched: u64,
}

impl Forgers {
    pub(crate) fn new(seed: u64) -> Forgers {
        Forgers {
            rng: ChaCha20Rng::seed_from_u64(seed ^ FORGE_SEED),
            templates: forge_templates(seed),
            targets: BTreeSet::new(),
            learned: BTreeMap::new(),
            forged: BTreeSet::new(),
            sent: 0,
            vouched: 0,
        }
    }

    /// The forgers' targets: a share of the honest relays, drawn with the
    /// forgers' RNG.
    pub(crate) fn pick_targets(&mut self, roles: &[Role], share: f64) {
        let mut pool: Vec<usize> = (0..roles.len())
            .filter(|&i| !roles[i].adversary() && !roles[i].client_only)
            .collect();
        shuffle(&mut self.rng, &mut pool);
        let k = ((pool.len() as f64) * share).round() as usize;
        self.targets = pool.into_iter().take(k).collect();
    }

    /// Forger `node` received a descriptor claiming `id`: if that is a
    /// target, it can now copy its keys and proof of work.
    pub(crate) fn learns(&mut self, by_id: &BTreeMap<NodeId, usize>, node: usize, id: &NodeId) {
        if let Some(&j) = by_id.get(id)
            && self.targets.contains(&j)
        {
            self.learned.entry(node).or_default().insert(j);
        }
    }

    /// A forger reads the descriptors it receives (to learn whom it can
    /// impersonate) and answers every pull request with forgeries of the
    /// targets it learnt, once it knows one (before, its honest node
    /// answers). Returns true if the cell was consumed.
    pub(crate) fn intercept(
        &mut self,
        by_id: &BTreeMap<NodeId, usize>,
        ctl: &mut Control<'_>,
        node: usize,
        link: LinkId,
        cell: &Cell,
    ) -> bool {
        if cell.circ_id() != 0 {
            return false;
        }
        let nonce = match LinkMsg::decode(cell) {
            Ok(LinkMsg::Push(u)) => {
                self.learns(by_id, node, &u.claimed_id());
                return false;
            }
            Ok(LinkMsg::PullReply { descriptors, .. }) => {
                for (u, _) in &descriptors {
                    self.learns(by_id, node, &u.claimed_id());
                }
                return false;
            }
            Ok(LinkMsg::PullRequest { nonce }) => nonce,
            _ => return false,
        };
        let mut targets: Vec<usize> = self
            .learned
            .get(&node)
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        if targets.is_empty() {
            return false;
        }
        shuffle(&mut self.rng, &mut targets);
        targets.truncate(ctl.nodes()[node].config().brahms.view_size);
        let mut reply = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(a) = self.forge(ctl.nodes(), ctl.now(), node, t) else {
                continue;
            };
            // Some vouched for (the forger risks its link), some not.
            let vouched = self.rng.next_u32() & 1 == 1;
            self.sent += 1;
            self.vouched += u64::from(vouched);
            self.forged.insert(t);
            reply.push((a, vouched));
        }
        for c in LinkMsg::pull_reply(nonce, &reply) {
            ctl.send(node, link, c);
        }
        true
    }

    /// A fresh forgery of `target`'s descriptor: its keys and proof-of-work
    /// nonce (the same bytes as in every copy of its descriptor the forger
    /// received), flags 0 or a junk address, a timestamp newer than the
    /// real one but within the allowed clock skew, and a signature that
    /// does not verify. Admitted as a receiver admits it (proof of work and
    /// freshness pass: they are the target's).
    fn forge(
        &mut self,
        nodes: &[Node],
        now: Millis,
        forger: usize,
        target: usize,
    ) -> Option<Admitted> {
        let junk = self.rng.next_u32() & 1 == 1;
        let mut bytes = self.templates[usize::from(junk)].clone();
        let honest = nodes[target].descriptor().to_bytes();
        bytes[DESCRIPTOR_KEYS].copy_from_slice(&honest[DESCRIPTOR_KEYS]);
        let mark = FORGE_TS_MARK.to_be_bytes();
        let at = bytes.windows(8).position(|w| w == mark)?;
        let ts = now + 1 + self.rng.next_u64() % (MAX_CLOCK_SKEW_MS / 2);
        bytes[at..at + 8].copy_from_slice(&ts.to_be_bytes());
        let sig = bytes.len() - 64;
        self.rng.fill_bytes(&mut bytes[sig..]);
        let pow = nodes[forger].config().pow;
        Descriptor::decode(&bytes)
            .ok()?
            .admit(now, u64::MAX, pow)
            .ok()
    }
}

/// Whom flooder `node` dials this round: every online honest node it has
/// no link to (the attacker knows every address), a bounded number per
/// round. `None` if the flooder is offline.
pub(crate) fn flood_targets<M: Model, C>(
    net: &Network<M, C>,
    roles: &[Role],
    node: usize,
) -> Option<Vec<usize>> {
    if !net.is_online(node) {
        return None;
    }
    let linked: BTreeSet<usize> = net.links(node).iter().map(|(_, peer, ..)| *peer).collect();
    let targets = (0..roles.len())
        .filter(|&j| j != node && !roles[j].flooder && net.is_online(j) && !linked.contains(&j))
        .take(64)
        .collect();
    Some(targets)
}

/// One flooder round: flooder `node` links to `targets` and pushes itself
/// on every link that is up: one push per link per round is the most the
/// protocol honours (a push can only carry the pusher's own descriptor, so
/// the attacker set is pushed by its members).
pub(crate) fn flood<M: Model, C, H: Hooks>(
    net: &mut Network<M, C>,
    hooks: &mut H,
    node: usize,
    targets: &[usize],
) {
    for &to in targets {
        let at = net.now() + net.model().latency(node, to);
        net.open_wire(node, to, at);
    }
    let push = LinkMsg::push(net.nodes()[node].descriptor());
    let links: Vec<LinkId> = net
        .links(node)
        .into_iter()
        .filter(|(.., w)| w.a_up && w.b_up && !w.closed)
        .map(|(l, ..)| l)
        .collect();
    for link in links {
        net.send(node, link, push.clone(), hooks);
    }
}
