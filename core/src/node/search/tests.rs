//! Publication and search over the in-memory test network, and the
//! search part's limits from the attacker's chair.

use ed25519_dalek::SigningKey;

use super::*;
use crate::identity::Pseudonym;
use crate::node::tests::{T0, net};
use crate::node::{Event, Node};
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

fn results(net: &TestNet, i: usize, id: SearchId) -> Vec<SignedRecord> {
    net.events()
        .iter()
        .filter_map(|(n, e)| match e {
            Event::SearchResults { search, records } if *n == i && *search == id => {
                Some(records.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_search_finds_a_record_published_from_another_node() {
    let mut net = ready(16);
    let r = record("Free Software Song.ogg", 7, 1);
    let now = T0 + 12_000;
    net.nodes_mut()[3].publish(now, vec![r.clone()]);
    net.run_from(now, now + 3_000);
    let holders = net.nodes().iter().filter(|n| n.index_len() > 0).count();
    assert!(holders >= 3, "replicated on {holders} index holders");
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
    // Nobody answered about its own share.
    for (n, e) in net.events() {
        if let Event::Answered { content } = e {
            assert!(
                !(*n == 3 && content.contains(&r.record().content_id)),
                "the sharer answered about its own share"
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

/// Sends a query walk for `words` to node `to` over its link from node
/// `from`, as a neighbour probing it would; returns whether `to` answered.
fn probe(net: &mut TestNet, from: usize, to: usize, words: &str, seed: u8) -> bool {
    let link = net.link_to(from, to).expect("linked");
    let secret = StaticSecret::from([seed; 32]);
    let walk = Walk {
        id: WalkId([seed; 16]),
        flood_ttl: Some(0),
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

#[test]
fn neighbours_cannot_tell_a_sharer_from_its_answers() {
    let mut net = ready(12);
    let r = record("holiday photos", 5, 2);
    let now = T0 + 12_000;
    net.nodes_mut()[4].publish(now, vec![r.clone()]);
    net.run_from(now, now + 3_000);
    // The sharer does not answer a neighbour's probe for its own share.
    let from = (0..12)
        .find(|&j| j != 4 && net.link_to(j, 4).is_some())
        .unwrap();
    assert!(!probe(&mut net, from, 4, "holiday photos", 1));
    // An index holder that got the record by a walk does answer: answers
    // come from where records were replicated, not from sharers.
    let holder = (0..12)
        .find(|&j| j != 4 && net.nodes()[j].index_len() > 0)
        .expect("an index holder");
    let from = (0..12)
        .find(|&j| j != holder && net.link_to(j, holder).is_some())
        .unwrap();
    assert!(probe(&mut net, from, holder, "holiday photos", 2));
    // And a node holding nothing answers nothing, exactly as the sharer.
    if let Some(empty) = (0..12).find(|&j| j != 4 && net.nodes()[j].index_len() == 0) {
        let from = (0..12)
            .find(|&j| j != empty && net.link_to(j, empty).is_some())
            .unwrap();
        assert!(!probe(&mut net, from, empty, "holiday photos", 3));
    }
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
            flood_ttl: Some(0),
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
