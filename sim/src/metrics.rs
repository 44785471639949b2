//! What the harness records and what it computes from it: the [`Outcome`]
//! of a run, [`PickShares`], the circuits it saw built, and relays'
//! observations folded per circuit.

use std::collections::{BTreeMap, BTreeSet};

use veil_core::identity::NodeId;
use veil_core::node::{Event, Millis, Node, Observation};
use veil_core::testing::WireInfo;

use crate::adversary::Role;
use crate::position::{Observed, PositionGuess};
use crate::scenario::{EPOCH_MS, Scenario};

/// The `p`th percentile (nearest rank, rounded up) of `sorted`, 0 if empty.
pub(crate) fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        0
    } else {
        sorted[((sorted.len() - 1) * p).div_ceil(100)]
    }
}

/// What the harness recorded.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Links whose handshake completed at both ends.
    pub links_up: u64,
    /// Links whose handshake failed or never finished.
    pub handshakes_failed: u64,
    /// Mean attacker fraction of honest nodes' samples.
    pub attacker_share_of_samples: f64,
    /// Attacker ids / all ids.
    pub attacker_population_share: f64,
    /// Events processed.
    pub events: u64,
    /// Mean size of honest nodes' samples.
    pub mean_sample_size: f64,
    /// Mean number of descriptors honest nodes hold.
    pub mean_known: f64,
    /// Mean authenticated peers per honest node at the end.
    pub mean_peers: f64,
    /// Honest nodes with at least one peer at the end.
    pub honest_connected: u64,
    /// Honest nodes in all.
    pub honest_nodes: u64,
    /// Gossip rounds run by honest nodes (sum).
    pub rounds: u64,
    /// Rounds in which honest nodes detected a push flood (sum).
    pub floods_detected: u64,
    /// Cells delivered over simulated links.
    pub cells_delivered: u64,
    /// Peers penalised by honest nodes (sum).
    pub peers_penalised: u64,
    /// Pull requests sent by honest nodes (sum).
    pub pulls_sent: u64,
    /// Pull-reply cells accepted by honest nodes (sum).
    pub pull_replies: u64,
    /// Pushes sent by honest nodes (sum).
    pub pushes_sent: u64,
    /// Circuit builds started (all nodes).
    pub circuits_attempted: u64,
    /// Builds whose end-to-end probe was answered by the path's last hop.
    pub circuits_built: u64,
    /// Builds that failed.
    pub circuits_failed: u64,
    /// Median build time of built circuits (virtual ms).
    pub circuit_build_ms_p50: u64,
    /// 95th percentile build time (virtual ms).
    pub circuit_build_ms_p95: u64,
    /// Built circuits of honest (non-colluding) nodes.
    pub honest_circuits_built: u64,
    /// Of those, circuits whose first and last hops both collude.
    pub colluder_first_last: u64,
    /// Honest nodes whose primary guard colludes / honest nodes with a
    /// guard.
    pub colluder_guard_share: f64,
    /// Honest nodes with at least one built circuit whose first and last
    /// hops both collude.
    pub clients_exposed: u64,
    /// Most honest nodes sharing one primary guard (load concentration).
    pub guard_max_clients: u64,
    /// Honest online nodes holding a built circuit at the end.
    pub nodes_with_circuit: u64,
    /// Circuits torn down because a cell failed its checks (all nodes).
    pub circuits_torn_down_bad_cell: u64,
    /// Failed builds whose path held a flooder.
    pub circuits_failed_via_flooder: u64,
    /// Failed builds whose path held a forger.
    pub circuits_failed_via_forger: u64,
    /// Failed builds by nodes that neither flood nor forge, through relays
    /// that neither flood nor forge.
    pub circuits_failed_clean: u64,
    /// Data cells sent over built circuits by the harness.
    pub data_sent: u64,
    /// Data cells last hops delivered intact (equal to one that was sent).
    pub data_delivered: u64,
    /// Data cells a last hop delivered that nobody sent (must stay 0).
    pub data_corrupted_accepted: u64,
    /// Built circuits with a tamperer on the path at tamper time.
    pub circuits_via_tamperer: u64,
    /// Of those, circuits torn down by the end.
    pub circuits_via_tamperer_torn_down: u64,
    /// Built circuits with no tamperer that were torn down (must stay 0
    /// within a circuit lifetime).
    pub circuits_clean_torn_down: u64,
    /// Nodes crashed by the harness.
    pub crashed: u64,
    /// Builds that failed after the crash, by surviving honest nodes.
    pub builds_failed_after_crash: u64,
    /// Of those, builds whose guard was not the node's primary guard at
    /// crash time although that guard survived (must stay 0: a failure
    /// further along keeps the guard).
    pub builds_failed_off_guard: u64,
    /// Surviving nodes whose primary guard survived but changed (must
    /// stay 0).
    pub guards_changed: u64,
    /// Surviving nodes without a built circuit at the end.
    pub survivors_without_circuit: u64,
    /// Forging nodes.
    pub forgers: u64,
    /// Honest relays the forgers target.
    pub forge_targets: u64,
    /// Of those, relays a forgery was sent for.
    pub forge_targeted: u64,
    /// Honest nodes whose primary guard forges.
    pub forger_guarded: u64,
    /// Of those, nodes without a built circuit at the end.
    pub forger_guarded_without_circuit: u64,
    /// Forged descriptors sent in pull replies.
    pub forgeries_sent: u64,
    /// Of those, marked as checked by the forger (vouched).
    pub forgeries_vouched: u64,
    /// Gossiped descriptors honest nodes refused (sum).
    pub descriptors_refused: u64,
    /// Where targeted relays stand in honest nodes' picks.
    pub targeted_picks: PickShares,
    /// How well relays guess their position on the circuits they relay.
    pub position_guess: PositionGuess,
}

/// The share of honest nodes' picks held by a set of relays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PickShares {
    /// The set's share of relays (what uniform picks would give).
    pub relay_share: f64,
    /// Share of the entries of honest nodes' guard lists.
    pub guard_pool: f64,
    /// Share of the entries of honest nodes' vanguard lists.
    pub vanguard_pool: f64,
    /// Share of first hops of honest nodes' built circuits.
    pub first_hop: f64,
    /// Share of last hops of honest nodes' built circuits.
    pub exit: f64,
    /// Guard-list entries counted.
    pub guard_entries: u64,
    /// Built circuits counted.
    pub circuits: u64,
}

/// A circuit the harness saw built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltCircuit {
    /// The node that built it.
    pub builder: usize,
    /// Its relays, guard first (node indices).
    pub hops: Vec<usize>,
    /// Build time (virtual ms).
    pub build_ms: Millis,
    /// Whether the last hop reported answering its probe.
    pub probe_seen: bool,
    /// The nonce of that probe.
    pub probe: u64,
}

/// What the harness records as the run goes.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Counters kept as the run goes (the rest of the outcome is computed
    /// at the end).
    pub(crate) counts: Outcome,
    /// Probe nonces answered, by the answering node.
    probes_answered: BTreeMap<u64, usize>,
    /// Circuits reported built: (builder, hops, build ms, probe nonce).
    built: Vec<(usize, Vec<NodeId>, Millis, u64)>,
    /// Built circuits by (builder, circuit id): their path.
    pub(crate) live: BTreeMap<(usize, u64), Vec<usize>>,
    /// Built circuits that closed: (builder, circuit id).
    closed_built: BTreeSet<(usize, u64)>,
    /// Primary guard of every node at crash time.
    pub(crate) guard_at_crash: BTreeMap<usize, NodeId>,
    /// Who crashed.
    pub(crate) crashed: BTreeSet<usize>,
    /// Circuits given data at tamper time, with their paths.
    pub(crate) tested: BTreeMap<(usize, u64), Vec<usize>>,
    /// Data cells sent over built circuits.
    pub(crate) data_sent: BTreeSet<Vec<u8>>,
    /// Sizes of every circuit cell the network carried.
    pub(crate) circuit_cell_sizes: BTreeSet<usize>,
    /// What relays saw, folded per relayed circuit.
    pub(crate) observed: Observed,
    /// Raw observations, kept when the scenario asks (`observe`).
    pub(crate) raw_observations: BTreeMap<usize, Vec<Observation>>,
}

/// What the figures are computed from: the nodes as they stand, the roles
/// the harness gave them, who is online, ids to indices.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) nodes: &'a [Node],
    pub(crate) roles: &'a [Role],
    pub(crate) online: &'a [bool],
    pub(crate) by_id: &'a BTreeMap<NodeId, usize>,
}

impl Metrics {
    /// Node `i` emitted `ev` at `now`.
    pub(crate) fn on_event(
        &mut self,
        roles: &[Role],
        by_id: &BTreeMap<NodeId, usize>,
        now: Millis,
        i: usize,
        ev: Event,
    ) {
        let path = |hops: &[NodeId]| -> Vec<usize> {
            hops.iter().filter_map(|h| by_id.get(h).copied()).collect()
        };
        match ev {
            Event::HandshakeFailed { error, .. } => {
                tracing::debug!(node = i, %error, "handshake failed");
            }
            Event::CircuitBuilt {
                id,
                hops,
                build_ms,
                probe,
            } => {
                self.live.insert((i, id.0), path(&hops));
                self.built.push((i, hops, build_ms, probe));
            }
            Event::RelayData { data, .. } => {
                if self.data_sent.contains(&data) {
                    self.counts.data_delivered += 1;
                } else {
                    self.counts.data_corrupted_accepted += 1;
                }
            }
            Event::ProbeAnswered { nonce } => {
                self.probes_answered.insert(nonce, i);
            }
            Event::CircuitClosed {
                id,
                hops,
                reason,
                built,
                reached,
            } => {
                if built {
                    self.live.remove(&(i, id.0));
                    self.closed_built.insert((i, id.0));
                }
                if !built && !self.crashed.is_empty() && !self.crashed.contains(&i) {
                    self.counts.builds_failed_after_crash += 1;
                    let guard_alive = self
                        .guard_at_crash
                        .get(&i)
                        .and_then(|g| by_id.get(g))
                        .is_some_and(|j| !self.crashed.contains(j));
                    if guard_alive && hops.first() != self.guard_at_crash.get(&i) {
                        self.counts.builds_failed_off_guard += 1;
                    }
                }
                let path = path(&hops);
                if !built && path.iter().any(|&j| roles[j].flooder) {
                    self.counts.circuits_failed_via_flooder += 1;
                }
                if !built && path.iter().any(|&j| roles[j].forger) {
                    self.counts.circuits_failed_via_forger += 1;
                }
                if !built && !roles[i].adversary() && !path.iter().any(|&j| roles[j].adversary()) {
                    self.counts.circuits_failed_clean += 1;
                }
                if !built {
                    tracing::debug!(
                        t = now - EPOCH_MS,
                        node = i,
                        ?reason,
                        reached,
                        ?path,
                        "build failed"
                    );
                }
            }
            _ => {}
        }
    }

    /// Node `i` recorded what it saw as a relay.
    pub(crate) fn on_observations(&mut self, s: &Scenario, i: usize, seen: Vec<Observation>) {
        if s.position_guess {
            for o in &seen {
                self.observed.record(i, o);
            }
        }
        if s.observe && !seen.is_empty() {
            self.raw_observations.entry(i).or_default().extend(seen);
        }
    }

    /// Every circuit a node reported built, with whether the path's last
    /// hop reported answering the probe that completed it.
    pub(crate) fn built_circuits(&self, by_id: &BTreeMap<NodeId, usize>) -> Vec<BuiltCircuit> {
        self.built
            .iter()
            .filter_map(|(builder, hops, build_ms, probe)| {
                let hops: Option<Vec<usize>> = hops.iter().map(|h| by_id.get(h).copied()).collect();
                let hops = hops?;
                let probe_seen = self.probes_answered.get(probe) == hops.last();
                Some(BuiltCircuit {
                    builder: *builder,
                    hops,
                    build_ms: *build_ms,
                    probe_seen,
                    probe: *probe,
                })
            })
            .collect()
    }

    /// Completes `o` (the counters, with the network's figures and the
    /// forgers' counts filled in; `forged`: the targets forgeries were sent
    /// for) from what the harness recorded and what the
    /// nodes hold: links, samples, circuits, picks, positions.
    pub(crate) fn outcome(
        &self,
        v: View<'_>,
        s: &Scenario,
        wires: impl Iterator<Item = WireInfo>,
        now: Millis,
        forged: &BTreeSet<usize>,
        mut o: Outcome,
    ) -> Outcome {
        let timeout = v
            .nodes
            .first()
            .map_or(0, |n| n.config().handshake_timeout_ms);
        for w in wires {
            // A handshake completed if an end verified its peer and nobody
            // refused it. (An end may then close a duplicate link at once.)
            if w.failed {
                o.handshakes_failed += 1;
            } else if w.a_up || w.b_up {
                o.links_up += 1;
            } else if w.opened_ms + timeout < now {
                // Stalled past the handshake timeout; links opened in the
                // last moments of the run are neither.
                o.handshakes_failed += 1;
            }
        }
        let attackers: BTreeSet<NodeId> = v
            .nodes
            .iter()
            .zip(v.roles)
            .filter(|(_, r)| r.flooder)
            .map(|(n, _)| n.node_id())
            .collect();
        o.attacker_population_share = attackers.len() as f64 / v.nodes.len().max(1) as f64;
        let honest: Vec<&Node> = v
            .nodes
            .iter()
            .zip(v.roles)
            .filter(|(_, r)| !r.adversary())
            .map(|(n, _)| n)
            .collect();
        o.honest_nodes = honest.len() as u64;
        let mut share_sum = 0.0;
        let mut sampled = 0usize;
        for n in &honest {
            let sample = n.sample();
            o.mean_sample_size += sample.len() as f64;
            o.mean_known += n.known_count() as f64;
            let peers = n.peers().len();
            o.mean_peers += peers as f64;
            o.honest_connected += u64::from(peers > 0);
            o.rounds += n.stats().rounds;
            o.floods_detected += n.stats().floods_detected;
            o.peers_penalised += n.stats().peers_penalised;
            o.descriptors_refused += n.stats().descriptors_refused;
            o.pulls_sent += n.stats().pulls_sent;
            o.pull_replies += n.stats().pull_replies;
            o.pushes_sent += n.stats().pushes_sent;
            if !sample.is_empty() {
                let bad = sample.iter().filter(|id| attackers.contains(id)).count();
                share_sum += bad as f64 / sample.len() as f64;
                sampled += 1;
            }
        }
        self.circuit_outcome(v, &mut o);
        o.forgers = v.roles.iter().filter(|r| r.forger).count() as u64;
        o.forge_targeted = forged.len() as u64;
        let adversaries = (0..v.roles.len())
            .filter(|&i| v.roles[i].adversary())
            .collect();
        o.targeted_picks = self.pick_shares(v, forged, &adversaries);
        if s.position_guess {
            let built: Vec<(Vec<usize>, u64)> = self
                .built_circuits(v.by_id)
                .into_iter()
                .filter(|c| c.probe_seen)
                .map(|c| (c.hops, c.probe))
                .collect();
            o.position_guess = self
                .observed
                .measure(built.iter().map(|(p, n)| (p.as_slice(), *n)), s.hops);
        }
        let h = honest.len().max(1) as f64;
        o.attacker_share_of_samples = if sampled == 0 {
            0.0
        } else {
            share_sum / sampled as f64
        };
        o.mean_sample_size /= h;
        o.mean_known /= h;
        o.mean_peers /= h;
        o
    }

    /// Circuit figures: builds verified by the last hop's probe answer,
    /// build times, and what colluders at both ends of a path could
    /// correlate.
    fn circuit_outcome(&self, v: View<'_>, o: &mut Outcome) {
        let roles = v.roles;
        let mut times = Vec::new();
        let mut guarded = 0u64;
        let mut colluder_guards = 0u64;
        let mut per_guard: BTreeMap<NodeId, u64> = BTreeMap::new();
        for (n, r) in v.nodes.iter().zip(roles) {
            let st = &n.stats().circuits;
            o.circuits_attempted += st.attempted;
            o.circuits_failed += st.failed;
            o.circuits_torn_down_bad_cell += st.torn_down_bad_cell;
            if !r.adversary()
                && !r.colluder
                && let Some(g) = n.guards().first()
            {
                guarded += 1;
                *per_guard.entry(g.id).or_default() += 1;
                if v.by_id.get(&g.id).is_some_and(|&j| roles[j].colluder) {
                    colluder_guards += 1;
                }
            }
        }
        let mut exposed = BTreeSet::new();
        for c in self.built_circuits(v.by_id) {
            if !c.probe_seen {
                continue;
            }
            o.circuits_built += 1;
            times.push(c.build_ms);
            let b = &roles[c.builder];
            if b.colluder || b.adversary() {
                continue;
            }
            o.honest_circuits_built += 1;
            let first = roles[c.hops[0]].colluder;
            let last = c.hops.last().is_some_and(|&j| roles[j].colluder);
            if first && last {
                o.colluder_first_last += 1;
                exposed.insert(c.builder);
            }
        }
        o.clients_exposed = exposed.len() as u64;
        if !self.crashed.is_empty() {
            for (i, n) in v.nodes.iter().enumerate() {
                if self.crashed.contains(&i) || roles[i].adversary() {
                    continue;
                }
                if let Some(g) = self.guard_at_crash.get(&i)
                    && v.by_id.get(g).is_some_and(|j| !self.crashed.contains(j))
                    && n.guards().first().map(|x| x.id) != Some(*g)
                {
                    o.guards_changed += 1;
                }
                if !self.live.keys().any(|(b, _)| *b == i) {
                    o.survivors_without_circuit += 1;
                    let guards: Vec<(usize, bool)> = n
                        .guards()
                        .iter()
                        .filter_map(|g| v.by_id.get(&g.id))
                        .map(|&j| (j, self.crashed.contains(&j)))
                        .collect();
                    tracing::debug!(
                        node = i,
                        ?guards,
                        stats = ?n.stats().circuits,
                        "survivor has no circuit"
                    );
                }
            }
        }
        o.guard_max_clients = per_guard.values().copied().max().unwrap_or(0);
        let holders: BTreeSet<usize> = self.live.keys().map(|(b, _)| *b).collect();
        for (i, n) in v.nodes.iter().enumerate() {
            if !holders.contains(&i) && v.online[i] && !roles[i].adversary() {
                tracing::debug!(
                    node = i,
                    client_only = roles[i].client_only,
                    guards = n.guards().len(),
                    vanguards = n.vanguards().len(),
                    peers = n.peers().len(),
                    known = n.known_count(),
                    sample = n.sample().len(),
                    stats = ?n.stats().circuits,
                    "node holds no circuit"
                );
            }
        }
        o.nodes_with_circuit = holders
            .iter()
            .filter(|&&i| !roles[i].adversary() && v.online[i])
            .count() as u64;
        for (i, n) in v.nodes.iter().enumerate() {
            if roles[i].adversary() {
                continue;
            }
            let forger_guard = n
                .guards()
                .first()
                .and_then(|g| v.by_id.get(&g.id))
                .is_some_and(|&j| roles[j].forger);
            o.forger_guarded += u64::from(forger_guard);
            o.forger_guarded_without_circuit +=
                u64::from(forger_guard && v.online[i] && !holders.contains(&i));
        }
        for (key, path) in &self.tested {
            let bad = roles[key.0].tamperer || path.iter().any(|&j| roles[j].tamperer);
            let closed = self.closed_built.contains(key);
            if bad {
                o.circuits_via_tamperer += 1;
                o.circuits_via_tamperer_torn_down += u64::from(closed);
            } else {
                o.circuits_clean_torn_down += u64::from(closed);
            }
        }
        times.sort_unstable();
        o.circuit_build_ms_p50 = percentile(&times, 50);
        o.circuit_build_ms_p95 = percentile(&times, 95);
        o.colluder_guard_share = if guarded == 0 {
            0.0
        } else {
            colluder_guards as f64 / guarded as f64
        };
    }

    /// The share of `targets` in the picks of every node outside `skip`
    /// (and not itself an adversary): guard and vanguard lists at the end,
    /// first and last hops of every circuit built.
    pub(crate) fn pick_shares(
        &self,
        v: View<'_>,
        targets: &BTreeSet<usize>,
        skip: &BTreeSet<usize>,
    ) -> PickShares {
        let counted = |i: usize| !skip.contains(&i) && !v.roles[i].adversary();
        let hit = |id: &NodeId| v.by_id.get(id).is_some_and(|j| targets.contains(j));
        let relays = v.roles.iter().filter(|r| !r.client_only).count();
        let (mut guards, mut guard_hits, mut vanguards, mut vanguard_hits) =
            (0u64, 0u64, 0u64, 0u64);
        for (i, n) in v.nodes.iter().enumerate() {
            if !counted(i) {
                continue;
            }
            for g in n.guards() {
                guards += 1;
                guard_hits += u64::from(hit(&g.id));
            }
            for id in n.vanguards() {
                vanguards += 1;
                vanguard_hits += u64::from(hit(&id));
            }
        }
        let (mut circuits, mut first, mut exit) = (0u64, 0u64, 0u64);
        for c in self.built_circuits(v.by_id) {
            if !c.probe_seen || !counted(c.builder) {
                continue;
            }
            circuits += 1;
            first += u64::from(targets.contains(&c.hops[0]));
            exit += u64::from(c.hops.last().is_some_and(|h| targets.contains(h)));
        }
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        PickShares {
            relay_share: share(targets.len() as u64, relays as u64),
            guard_pool: share(guard_hits, guards),
            vanguard_pool: share(vanguard_hits, vanguards),
            first_hop: share(first, circuits),
            exit: share(exit, circuits),
            guard_entries: guards,
            circuits,
        }
    }
}
