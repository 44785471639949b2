//! Publication and search over the in-memory test network, and the
//! search part's limits from the attacker's chair.

use ed25519_dalek::SigningKey;

use super::*;
use crate::identity::Pseudonym;
use crate::node::tests::{T0, net};
use crate::node::{Event, Millis, Node};
use crate::pow::PowParams;
use crate::record::{ContentRecord, keywords_from_name};
use crate::testing::TestNet;

fn record(name: &str, id: u8, who: u8) -> SignedRecord {
    let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
    ContentRecord {
        content_id: ContentId::from_bytes([id; 32]),
        size: 4096,
        name: name.to_owned(),
        keywords: keywords_from_name(name),
        media_type: None,
        created: T0 / 1000,
        expires: T0 / 1000 + 3600,
    }
    .sign(&p)
    .unwrap()
}

/// A network where every node has built circuits.
fn ready(n: u8) -> TestNet {
    let mut net = net(n, false);
    net.run(T0 + 12_000);
    for (i, node) in net.nodes().iter().enumerate() {
        assert!(
            node.circuits()
                .iter()
                .any(|c| c.state == crate::node::CircuitState::Built),
            "node {i} has no circuit"
        );
    }
    net
}

/// The records and ratings node `i`'s search `id` brought.
fn results_and_ratings(
    net: &TestNet,
    i: usize,
    id: SearchId,
) -> (Vec<SignedRecord>, Vec<crate::rating::SignedRating>) {
    let (mut records, mut ratings) = (Vec::new(), Vec::new());
    for (n, e) in net.events() {
        if let Event::SearchResults {
            search,
            records: r,
            ratings: g,
        } = e
            && *n == i
            && *search == id
        {
            records.extend(r.iter().cloned());
            ratings.extend(g.iter().cloned());
        }
    }
    (records, ratings)
}

fn results(net: &TestNet, i: usize, id: SearchId) -> Vec<SignedRecord> {
    results_and_ratings(net, i, id).0
}

#[test]
fn a_search_finds_a_record_published_from_another_node() {
    let mut net = ready(16);
    let r = record("Free Software Song.ogg", 7, 1);
    let now = T0 + 12_000;
    net.nodes_mut()[3].publish(now, vec![r.clone()]);
    net.run_from(now, now + 3_000);
    let holders = net.nodes().iter().filter(|n| n.index_len() > 0).count();
    // A quarter of the nodes refuse any one pseudonym (see `Search::refuses`).
    assert!(holders >= 2, "replicated on {holders} index holders");
    assert_eq!(
        net.nodes()[3].index_len(),
        0,
        "the sharer holds nothing of its own"
    );
    let now = now + 3_000;
    let q = Query::parse("free software").unwrap();
    let id = net.nodes_mut()[9].search(now, q).unwrap();
    net.run_from(now, now + 9_000);
    let got = results(&net, 9, id);
    assert!(got.contains(&r), "the record came back");
    assert!(
        net.events()
            .iter()
            .any(|(n, e)| *n == 9 && matches!(e, Event::SearchDone { search } if *search == id))
    );
    // Nobody answered with its own records.
    let own = r.publisher().id();
    for (n, e) in net.events() {
        if let Event::Answered { records } = e {
            assert!(
                !(*n == 3 && records.iter().any(|(p, _)| *p == own)),
                "the sharer answered with its own record"
            );
        }
    }
    // Without circuits or peers, a search says why.
    let mut lonely = crate::node::tests::node(40, vec![]);
    assert_eq!(
        lonely.search(now, Query::parse("x1").unwrap()),
        Err(SearchError::NoPeers)
    );
}

/// Two users (rater pseudonyms 20 and 21, on nodes 6 and 7) rate `rated`
/// fake at `now`, naming `signers`.
fn two_users_rate_fake(
    net: &mut TestNet,
    rated: &ContentRecord,
    signers: &[crate::rating::SignerTag],
    now: Millis,
) {
    for (who, node) in [(20u8, 6usize), (21, 7)] {
        let rater = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
        let mut rated = rated.clone();
        rated.created = now / 1000;
        rated.expires = now / 1000 + 3600;
        let rating = crate::rating::Rating {
            rated,
            verdict: crate::rating::Verdict::Fake,
            signers: signers.to_vec(),
        }
        .sign(&rater)
        .unwrap();
        net.nodes_mut()[node].rate(now, rating);
    }
}

#[test]
fn a_rating_reaches_a_later_searcher_and_buries_the_decoy_it_names() {
    let mut net = ready(16);
    let now = T0 + 12_000;
    // A decoy with two fresh publishers outranks the real file's one.
    let real = record("popular film.mkv", 1, 1);
    let decoys = [
        record("popular film.mkv", 2, 2),
        record("popular film.mkv", 2, 3),
    ];
    net.nodes_mut()[3].publish(now, vec![real.clone()]);
    net.nodes_mut()[4].publish(now, vec![decoys[0].clone()]);
    net.nodes_mut()[5].publish(now, vec![decoys[1].clone()]);
    // Two users who downloaded the decoy rate it fake.
    two_users_rate_fake(&mut net, decoys[0].record(), &[], now);
    net.run_from(now, now + 3_000);
    let held: usize = net.nodes().iter().map(|n| n.search.ratings.len()).sum();
    assert!(held >= 2, "ratings are held by index holders ({held})");
    let now = now + 3_000;
    let id = net.nodes_mut()[9]
        .search(now, Query::parse("popular film").unwrap())
        .unwrap();
    net.run_from(now, now + 9_000);
    let (records, ratings) = results_and_ratings(&net, 9, id);
    assert!(!ratings.is_empty(), "ratings came back with the records");
    let st = crate::search::Standing::default();
    let unrated = crate::search::rank(&records, &[], &st, now);
    assert_eq!(unrated[0].content_id, decoys[0].record().content_id);
    // Both raters' verdicts came back (each from several holders): the
    // decoy is disputed and goes below the real file.
    let raters: std::collections::BTreeSet<_> =
        ratings.iter().map(|r| r.publisher().id()).collect();
    assert_eq!(raters.len(), 2);
    let ranked = crate::search::rank(&records, &ratings, &st, now);
    assert_eq!(ranked[0].content_id, real.record().content_id);
    assert!(ranked[1].disputed);
}

#[test]
fn ratings_of_another_name_reach_a_searcher_through_the_signers_they_name() {
    use crate::rating::SignerTag;
    let mut net = ready(16);
    let now = T0 + 12_000;
    // The coalition (pseudonyms 2 and 3) signs a decoy of "popular film"
    // and one of "other show"; only the second was downloaded and rated.
    let real = record("popular film.mkv", 1, 1);
    let decoys = [
        record("popular film.mkv", 2, 2),
        record("popular film.mkv", 2, 3),
    ];
    let coalition: Vec<SignerTag> = decoys
        .iter()
        .map(|r| SignerTag::of(&r.publisher().id()))
        .collect();
    net.nodes_mut()[3].publish(now, vec![real.clone()]);
    net.nodes_mut()[4].publish(now, vec![decoys[0].clone(), record("other show.mkv", 5, 2)]);
    net.nodes_mut()[5].publish(now, vec![decoys[1].clone(), record("other show.mkv", 5, 3)]);
    two_users_rate_fake(
        &mut net,
        record("other show.mkv", 5, 2).record(),
        &coalition,
        now,
    );
    net.run_from(now, now + 3_000);
    let now = now + 3_000;
    let id = net.nodes_mut()[9]
        .search(now, Query::parse("popular film").unwrap())
        .unwrap();
    net.run_from(now, now + 9_000);
    let (records, ratings) = results_and_ratings(&net, 9, id);
    // Only "popular film" records came back as results, and with them the
    // ratings of "other show" that name their signers.
    assert!(
        records
            .iter()
            .all(|r| r.record().name == "popular film.mkv")
    );
    let raters: std::collections::BTreeSet<_> = ratings
        .iter()
        .filter(|r| r.record().name == "other show.mkv")
        .map(|r| r.publisher().id())
        .collect();
    assert_eq!(raters.len(), 2, "both raters' verdicts came back");
    let st = crate::search::Standing::default();
    assert_eq!(
        crate::search::rank(&records, &[], &st, now)[0].content_id,
        decoys[0].record().content_id
    );
    let ranked = crate::search::rank(&records, &ratings, &st, now);
    assert_eq!(ranked[0].content_id, real.record().content_id);
    assert!(ranked[1].disputed && ranked[1].discredited == 2);
}

/// Sends a query walk for `words` to node `to` over its link from node
/// `from`, as a neighbour probing it would; returns whether `to` answered.
fn probe(net: &mut TestNet, from: usize, to: usize, words: &str, seed: u8) -> bool {
    let link = net.link_to(from, to).expect("linked");
    let secret = StaticSecret::from([seed; 32]);
    let walk = Walk {
        id: WalkId([seed; 16]),
        flood_ttl: None,
        body: WalkBody::Query {
            query: Query::parse(words).unwrap(),
            reply_key: PublicKey::from(&secret).to_bytes(),
        },
    };
    let cell = LinkMsg::search(command::WALK, &walk.encode().unwrap()).unwrap();
    let (_, far) = net.peer_of(from, link).unwrap();
    let now = T0 + 20_000;
    let before = net.nodes()[to].stats().search.answers;
    net.nodes_mut()[to].handle_link_data(now, far, cell.as_bytes());
    net.pump(now);
    net.nodes()[to].stats().search.answers > before
}

fn inject(net: &mut TestNet, from: usize, to: usize, cmd: u8, payload: &[u8], now: Millis) {
    let link = net.link_to(from, to).expect("linked");
    let cell = LinkMsg::search(cmd, payload).unwrap();
    let (_, far) = net.peer_of(from, link).unwrap();
    net.nodes_mut()[to].handle_link_data(now, far, cell.as_bytes());
}

/// A neighbour plants `records` on `to` (one publish walk step over their
/// link).
fn plant(
    net: &mut TestNet,
    from: usize,
    to: usize,
    records: &[SignedRecord],
    seed: u8,
    now: Millis,
) {
    let walk = Walk {
        id: WalkId([seed; 16]),
        flood_ttl: None,
        body: WalkBody::Publish {
            records: records.iter().map(SignedRecord::to_bytes).collect(),
        },
    };
    inject(net, from, to, command::WALK, &walk.encode().unwrap(), now);
    net.pump(now);
}

fn neighbour(net: &TestNet, of: usize) -> usize {
    (0..net.nodes().len())
        .find(|&j| j != of && net.link_to(j, of).is_some())
        .expect("a neighbour")
}

#[test]
fn neighbours_cannot_tell_a_sharer_from_its_answers() {
    let mut net = ready(12);
    let r = record("holiday photos", 5, 2);
    let now = T0 + 12_000;
    net.nodes_mut()[4].publish(now, vec![r.clone()]);
    net.run_from(now, now + 3_000);
    let now = now + 3_000;
    // The sharer never holds its own record, and a query for its share
    // gets nothing from it.
    assert!(!net.nodes()[4].index_records().contains(&r));
    let from = neighbour(&net, 4);
    assert!(!probe(&mut net, from, 4, "holiday photos", 1));
    // The OneSwarm attack by silence: replay the sharer's own record to
    // every node, then ask each for it. The sharer stays silent, and so
    // does every node that refuses that pseudonym (half of them, by a key
    // each keeps to itself): the sharer hides among them.
    let mut silent = Vec::new();
    for target in 0..12 {
        let from = neighbour(&net, target);
        plant(
            &mut net,
            from,
            target,
            std::slice::from_ref(&r),
            50 + target as u8,
            now,
        );
        if !probe(&mut net, from, target, "holiday photos", 100 + target as u8) {
            silent.push(target);
        }
    }
    assert!(silent.contains(&4));
    assert!(
        silent.len() >= 4,
        "the sharer is one of only {} silent nodes: {silent:?}",
        silent.len()
    );
    // A record for the same content signed by the prober: the sharer
    // treats it by the same rule as every node (no library lookup), so
    // its answer says nothing about what it shares.
    let bait = record("holiday photos", 5, 99);
    let mut answered_bait = Vec::new();
    for target in 0..12 {
        let from = neighbour(&net, target);
        plant(
            &mut net,
            from,
            target,
            std::slice::from_ref(&bait),
            150 + target as u8,
            now,
        );
        answered_bait.push(probe(
            &mut net,
            from,
            target,
            "holiday photos",
            200 + target as u8,
        ));
    }
    let refusing_bait: Vec<usize> = (0..12)
        .filter(|&t| !answered_bait[t] && !silent.contains(&t))
        .collect();
    let _ = refusing_bait;
    assert!(
        answered_bait.iter().filter(|a| **a).count() >= 4,
        "nodes holding a planted record answer: {answered_bait:?}"
    );
}

#[test]
fn a_flood_ttl_is_refused_by_a_walk_network() {
    let mut net = ready(16);
    let now = T0 + 20_000;
    let before: u64 = net
        .nodes()
        .iter()
        .map(|n| n.stats().search.walk_cells)
        .sum();
    let walk = Walk {
        id: WalkId([0x77; 16]),
        flood_ttl: Some(255),
        body: WalkBody::Query {
            query: Query::parse("anything").unwrap(),
            reply_key: PublicKey::from(&StaticSecret::from([7; 32])).to_bytes(),
        },
    };
    let from = neighbour(&net, 1);
    inject(
        &mut net,
        from,
        1,
        command::WALK,
        &walk.encode().unwrap(),
        now,
    );
    net.pump(now);
    let after: u64 = net
        .nodes()
        .iter()
        .map(|n| n.stats().search.walk_cells)
        .sum();
    assert_eq!(
        after,
        before,
        "one cell with a TTL made the network send {}",
        after - before
    );
}

#[test]
fn a_walk_relay_cannot_flood_the_searcher_with_replies() {
    let mut net = ready(12);
    let now = T0 + 12_000;
    net.nodes_mut()[9]
        .search(now, Query::parse("nothing at all").unwrap())
        .unwrap();
    net.run_from(now, now + 500);
    let walk = *net.nodes()[9].search.pending.keys().next().unwrap();
    // A relay the walk visited (not the exit), and its way back.
    let (relay, back) = (0..12)
        .find_map(|i| match net.nodes()[i].search.paths.back(&walk) {
            Some(Back::Link(l)) => Some((i, l)),
            _ => None,
        })
        .expect("a walk relay");
    let (prev, _) = net.peer_of(relay, back).unwrap();
    let before = net.nodes()[9].stats().search.bad_results;
    let now = now + 500;
    for i in 0..1000u32 {
        let mut sealed = vec![0u8; 200];
        sealed[..4].copy_from_slice(&i.to_be_bytes());
        let reply = WalkReply { id: walk, sealed };
        inject(
            &mut net,
            relay,
            prev,
            command::WALK_REPLY,
            &reply.encode().unwrap(),
            now,
        );
        net.pump(now);
    }
    let got = net.nodes()[9].stats().search.bad_results - before;
    let p = crate::node::Config::testnet().search;
    let cap = p.max_replies_per_walk * p.walkers as u32;
    assert!(
        got <= u64::from(cap),
        "the searcher had to open {got} forged replies for one walk"
    );
}

#[test]
fn replies_with_unknown_walk_ids_are_dropped() {
    let mut net = ready(6);
    let link = net.link_to(0, 1).unwrap();
    let (_, far) = net.peer_of(0, link).unwrap();
    let reply = WalkReply {
        id: WalkId([0xee; 16]),
        sealed: vec![1; 64],
    };
    let cell = LinkMsg::search(command::WALK_REPLY, &reply.encode().unwrap()).unwrap();
    let sent_before = net.nodes()[1].stats().search.reply_cells;
    net.nodes_mut()[1].handle_link_data(T0 + 12_000, far, cell.as_bytes());
    assert_eq!(net.nodes()[1].stats().search.unknown_replies, 1);
    assert_eq!(
        net.nodes()[1].stats().search.reply_cells,
        sent_before,
        "nothing reflected"
    );
    assert!(
        net.nodes()[1].has_link(far),
        "not cut: a late reply is normal"
    );
}

#[test]
fn a_walk_flood_on_one_link_is_limited_and_other_links_keep_working() {
    let mut net = ready(8);
    let rate = crate::node::Config::testnet().search.walks_per_sec_per_link;
    let link = net.link_to(0, 1).unwrap();
    let (_, far) = net.peer_of(0, link).unwrap();
    let now = T0 + 12_000;
    for i in 0..(3 * rate) {
        let walk = Walk {
            id: WalkId([(i % 250) as u8; 16]),
            flood_ttl: None,
            body: WalkBody::Query {
                query: Query::parse("nothing here").unwrap(),
                reply_key: [9; 32],
            },
        };
        let cell = LinkMsg::search(command::WALK, &walk.encode().unwrap()).unwrap();
        net.nodes_mut()[1].handle_link_data(now, far, cell.as_bytes());
    }
    let limited = net.nodes()[1].stats().search.rate_limited;
    assert!(
        limited >= u64::from(rate),
        "only {limited} walk steps limited"
    );
    // Another node's walk on another link still gets through.
    let r = record("still works", 3, 3);
    net.nodes_mut()[1].publish(now, vec![]);
    net.nodes_mut()[2].publish(now, vec![r]);
    net.run_from(now, now + 3_000);
    let held: usize = net.nodes().iter().map(Node::index_len).sum();
    assert!(held > 0, "publication still replicated");
}

#[test]
fn the_flood_baseline_publishes_by_walks_and_floods_queries() {
    let mut net = TestNet::with_config(14, false, |_, c| c.search.flood_ttl = Some(2)).unwrap();
    net.run(T0 + 12_000);
    let r = record("baseline flood test", 8, 4);
    let now = T0 + 12_000;
    net.nodes_mut()[2].publish(now, vec![r.clone()]);
    net.run_from(now, now + 3_000);
    let holders = net.nodes().iter().filter(|n| n.index_len() > 0).count();
    assert!(
        holders >= 2,
        "publish walks run in flood mode too: {holders} holders"
    );
    let now = now + 3_000;
    let id = net.nodes_mut()[7]
        .search(now, Query::parse("baseline flood").unwrap())
        .unwrap();
    net.run_from(now, now + 9_000);
    assert!(results(&net, 7, id).contains(&r));
}

/// Whether node `n`, knowing `known` nodes, refuses each of 40 other
/// publishers' records.
fn refusals_of_40(n: &mut Node, known: usize) -> Vec<bool> {
    (1..=40u8)
        .map(|who| {
            let id = record("x y", 1, who).publisher().id();
            let (mut cx, p) = n.split();
            p.search.refuses(&mut cx, known, &id)
        })
        .collect()
}

#[test]
fn the_refusal_choice_survives_a_restart() {
    // The same node (same identity, a different RNG seed: a restart) makes
    // the same choice for every pseudonym, so a prober gains nothing by
    // waiting for restarts; another node chooses differently.
    let choices = |k: u8, seed: u8| {
        let mut n = crate::node::tests::node(k, vec![]);
        n.rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([seed; 32]);
        refusals_of_40(&mut n, REFUSAL_MIN_KNOWN)
    };
    assert_eq!(choices(3, 1), choices(3, 2));
    assert_ne!(choices(3, 1), choices(4, 1));
    let refused = choices(3, 1).iter().filter(|r| **r).count();
    assert!(
        (3..=18).contains(&refused),
        "about a quarter refused: {refused} of 40"
    );
}

/// In a network this node knows to be tiny, the refusals that hide an
/// owner would hide it among fewer than two others while they can leave
/// a publisher with no holder at all: there a node refuses its own
/// pseudonyms only, and from 8 known nodes on, a quarter of the others.
#[test]
fn below_eight_known_nodes_only_our_own_pseudonyms_are_refused() {
    let mut n = crate::node::tests::node(3, vec![]);
    let own = record("mine", 1, 99).publisher().id();
    n.search.own_publisher(own);
    let refused =
        |n: &mut Node, known: usize| refusals_of_40(n, known).into_iter().filter(|r| *r).count();
    assert_eq!(refused(&mut n, REFUSAL_MIN_KNOWN - 1), 0);
    assert!(refused(&mut n, REFUSAL_MIN_KNOWN) >= 3);
    for known in [0, REFUSAL_MIN_KNOWN - 1, REFUSAL_MIN_KNOWN, 10_000] {
        let (mut cx, p) = n.split();
        assert!(p.search.refuses(&mut cx, known, &own), "own, {known} known");
    }
}

/// From every exit's chair: no publish message it reads carries our
/// library's record and our rating side by side (the rater pseudonym must
/// not be linked to the library by the message that carries it), neither
/// at the first publication nor at a republication of both.
#[test]
fn an_exit_never_reads_the_library_and_a_rating_in_one_message() {
    use crate::circuit::CircuitMsg;
    use crate::node::Observation;
    use crate::rating::{Rating, Verdict};
    let mut net = ready(16);
    for n in net.nodes_mut() {
        n.set_observing(true);
    }
    let now = T0 + 12_000;
    let lib = record("Free Software Song.ogg", 7, 1);
    let rater = Pseudonym::from_key(SigningKey::from_bytes(&[30; 32]), PowParams::TESTNET);
    let mut rated = record("some film.mkv", 8, 2).record().clone();
    rated.created = now / 1000;
    rated.expires = now / 1000 + 3600;
    let rating = Rating {
        rated,
        verdict: Verdict::Fake,
        signers: vec![],
    }
    .sign(&rater)
    .unwrap();
    net.nodes_mut()[3].publish(now, vec![lib.clone()]);
    net.nodes_mut()[3].rate(now, rating.clone());
    // Past a republication (20 s on a test network).
    net.run_from(now, now + 45_000);
    let (mut with_lib, mut with_rating) = (0, 0);
    for i in 0..16 {
        for o in net.take_observations(i) {
            if let Observation::Recognised { payload, .. } = o
                && let Ok(CircuitMsg::Search { bytes }) = CircuitMsg::decode(&payload)
                && let Ok(ToExit::Publish { records }) = ToExit::decode(&bytes)
            {
                let l = records.iter().any(|r| r.as_slice() == lib.as_bytes());
                let g = records.iter().any(|r| r.as_slice() == rating.as_bytes());
                assert!(
                    !(l && g),
                    "exit {i} read the library and a rating in one message"
                );
                with_lib += usize::from(l);
                with_rating += usize::from(g);
            }
        }
    }
    assert!(with_lib >= 2, "published and republished ({with_lib})");
    assert!(
        with_rating >= 2,
        "published and republished ({with_rating})"
    );
}

/// The attacker's chair: small records under one name, ratings of those
/// files and ratings of another file naming their signers, together more
/// than one message's places (12 records + 4 + 2 > 16). A holder must
/// still answer (every part is counted against the places), or anyone
/// could silence the holders of a name by publishing ratings.
#[test]
fn ratings_naming_signers_never_push_an_answer_past_one_message() {
    use crate::rating::{Rating, SignerTag, Verdict};
    let mut net = ready(12);
    let to = 5;
    let from = neighbour(&net, to);
    let now = T0 + 12_000;
    // 20 small records "ab", distinct ids and signers.
    let recs: Vec<SignedRecord> = (0..20u8).map(|i| record("ab", 100 + i, 100 + i)).collect();
    for (k, chunk) in recs.chunks(8).enumerate() {
        plant(&mut net, from, to, chunk, 10 + k as u8, now);
    }
    let rate = |who: u8, name: &str, id: u8, signers: Vec<SignerTag>| {
        let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
        Rating {
            rated: record(name, id, 1).record().clone(),
            verdict: Verdict::Good,
            signers,
        }
        .sign(&p)
        .unwrap()
        .to_bytes()
    };
    let plant_bytes = |net: &mut TestNet, rs: Vec<Vec<u8>>, seed: u8| {
        let walk = Walk {
            id: WalkId([seed; 16]),
            flood_ttl: None,
            body: WalkBody::Publish { records: rs },
        };
        inject(net, from, to, command::WALK, &walk.encode().unwrap(), now);
        net.pump(now);
    };
    // 8 raters of matching "ab" files: the ratings' places fill up.
    let per_id: Vec<Vec<u8>> = (0..8u8)
        .map(|i| rate(150 + i, "ab", 100 + i, vec![SignerTag([8; 8])]))
        .collect();
    plant_bytes(&mut net, per_id, 30);
    assert!(probe(&mut net, from, to, "ab", 40), "answers before");
    // 4 ratings of another file naming every signer of the "ab" records.
    let all: Vec<SignerTag> = recs
        .iter()
        .map(|r| SignerTag::of(&r.publisher().id()))
        .collect();
    let signer: Vec<Vec<u8>> = (0..4u8)
        .map(|i| rate(170 + i, "cd", 200, all.clone()))
        .collect();
    plant_bytes(&mut net, signer, 31);
    let answered = (0..8u8)
        .filter(|s| probe(&mut net, from, to, "ab", 50 + s))
        .count();
    assert_eq!(answered, 8, "the holder still answers every probe");
}
