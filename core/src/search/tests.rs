use super::*;
use crate::identity::Pseudonym;
use crate::pow::PowParams;
use ed25519_dalek::SigningKey;

const NOW_S: u64 = 1_800_000_000;

fn record(name: &str, id: u8, who: u8) -> SignedRecord {
    let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
    ContentRecord {
        content_id: ContentId::from_bytes([id; 32]),
        size: 1000 + u64::from(id),
        name: name.to_owned(),
        keywords: keywords_from_name(name),
        media_type: None,
        created: NOW_S,
        expires: NOW_S + 3600,
    }
    .sign(&p)
    .unwrap()
}

#[test]
fn the_matcher_takes_every_word_case_folded_and_content_ids() {
    let r = record("Ubuntu-24.04 Desktop AMD64.iso", 1, 1);
    let q = |t: &str| Query::parse(t).unwrap();
    assert!(q("ubuntu desktop").matches(r.record()));
    assert!(q("UBUNTU").matches(r.record()));
    assert!(
        !q("ubuntu server").matches(r.record()),
        "every word must match"
    );
    assert!(!q("ubunt").matches(r.record()), "whole words only");
    assert!(q(&r.record().content_id.to_hex()).matches(r.record()));
    assert_eq!(Query::parse(" a . ! "), Err(QueryError::Empty));
    assert_eq!(
        Query::parse("a1 b2 c3 d4 e5 f6 g7 h8 i9"),
        Err(QueryError::TooManyWords)
    );
}

#[test]
fn messages_round_trip_and_garbage_is_refused() {
    let r = record("some file", 2, 1);
    let walk = Walk {
        id: WalkId([7; 16]),
        flood_ttl: None,
        body: WalkBody::Publish {
            records: vec![r.to_bytes()],
        },
    };
    assert_eq!(Walk::decode(&walk.encode().unwrap()).unwrap(), walk);
    let q = ToExit::Search {
        walk: WalkId([1; 16]),
        query: Query::parse("some file").unwrap(),
        reply_key: [9; 32],
    };
    assert_eq!(ToExit::decode(&q.encode().unwrap()).unwrap(), q);
    let a = FromExit::Answer {
        walk: WalkId([1; 16]),
        sealed: vec![1, 2, 3],
    };
    assert_eq!(FromExit::decode(&a.encode().unwrap()).unwrap(), a);
    let mut bytes = q.encode().unwrap();
    bytes.push(0);
    assert!(ToExit::decode(&bytes).is_err(), "trailing bytes");
    assert!(Walk::decode(&[0xff; 40]).is_err());
    // A query word that is not canonical is refused on the wire.
    let mut w = Writer::new();
    w.put_u8(1);
    w.put_bytes(&[1; 16]);
    w.put_u8(0);
    w.put_u8(1);
    w.put_bytes_u8len(b"UPPER").unwrap();
    w.put_bytes(&[9; 32]);
    assert!(ToExit::decode(w.as_slice()).is_err());
}

#[test]
fn sealed_answers_open_only_with_the_searchers_key() {
    let secret = StaticSecret::from([5; 32]);
    let public = PublicKey::from(&secret).to_bytes();
    let r = record("a b", 3, 1).to_bytes();
    let sealed = seal(&public, std::slice::from_ref(&r), [6; 32]).unwrap();
    assert_eq!(open(&secret, &sealed).unwrap(), vec![r.clone()]);
    assert_eq!(
        open(&StaticSecret::from([8; 32]), &sealed),
        Err(OpenError::Garbled),
        "another key"
    );
    let mut bad = sealed.clone();
    bad[40] ^= 1;
    assert_eq!(open(&secret, &bad), Err(OpenError::Garbled));
    assert!(
        !sealed.windows(8).any(|w| r.windows(8).any(|x| x == w)),
        "the record is not in clear"
    );
    // A low-order reply key is refused rather than sealing to a known key.
    assert!(seal(&[0; 32], &[r], [6; 32]).is_none());
}

#[test]
fn answers_take_content_ids_in_turn_and_cap_publishers() {
    // One coalition publisher has 10 decoy ids for the words; an honest
    // record has one. The honest id is in the answer.
    let mut held: Vec<SignedRecord> = (10..20).map(|i| record("popular song", i, 9)).collect();
    held.push(record("popular song", 99, 1));
    let q = Query::parse("popular song").unwrap();
    let a = select_answer(&q, held.iter(), &WalkId([1; 16]), 4, 4000, 2);
    assert_eq!(
        a.len(),
        3,
        "4 records, at most 2 from the coalition pseudonym"
    );
    assert!(
        a.iter()
            .any(|r| r.record().content_id == ContentId::from_bytes([99; 32]))
    );
}

#[test]
fn ids_chosen_to_sort_first_or_big_records_cannot_own_an_answer() {
    // Two pseudonyms, two decoys each at the smallest ids; five honest
    // publishers of one file. Over many walks the honest id is answered as
    // often as chance gives, and a record over the byte budget is skipped
    // without cutting the rest.
    let mut held: Vec<SignedRecord> = Vec::new();
    for (who, id) in [(50, 0u8), (50, 1), (51, 2), (51, 3)] {
        held.push(record("free software song", id, who));
    }
    for who in 1..=5 {
        held.push(record("free software song", 0x80, who));
    }
    let q = Query::parse("free software").unwrap();
    let honest = ContentId::from_bytes([0x80; 32]);
    let with_honest = (0..64u8)
        .filter(|w| {
            select_answer(&q, held.iter(), &WalkId([*w; 16]), 2, 4000, 2)
                .iter()
                .any(|r| r.record().content_id == honest)
        })
        .count();
    // Two of five ids per answer: about 40 % of answers by chance.
    assert!(
        with_honest >= 12,
        "the honest id was in {with_honest} of 64 answers"
    );
    // A byte budget that fits one record: the first that fits is taken.
    let one = held[0].as_bytes().len() + 2;
    let a = select_answer(&q, held.iter(), &WalkId([7; 16]), 12, one, 2);
    assert_eq!(a.len(), 1);
}

#[test]
fn ranking_counts_distinct_aged_pseudonyms_and_standing() {
    let now = 10 * AGING_MS;
    let mut st = Standing::default();
    // Content 1: three honest pseudonyms known for long.
    let honest: Vec<SignedRecord> = (1..=3).map(|w| record("film x", 1, w)).collect();
    for r in &honest {
        st.seen(r.publisher().id(), 0);
    }
    // Content 2: five fresh pseudonyms (a coalition), and one repeats.
    let mut fresh: Vec<SignedRecord> = (10..15).map(|w| record("film x", 2, w)).collect();
    fresh.push(record("film x", 2, 10));
    for r in &fresh {
        st.seen(r.publisher().id(), now);
    }
    let all: Vec<SignedRecord> = honest.iter().chain(fresh.iter()).cloned().collect();
    let ranked = rank(&all, &[], &st, now);
    assert_eq!(ranked[0].content_id, ContentId::from_bytes([1; 32]));
    assert_eq!(ranked[0].publishers, 3);
    assert_eq!(ranked[1].publishers, 5, "a repeated pseudonym counts once");
    // A pseudonym the user marked as a decoy weighs nothing.
    let mut st2 = st.clone();
    for w in 1..=3 {
        st2.adjust(record("x", 1, w).publisher().id(), -100);
    }
    assert_eq!(
        rank(&all, &[], &st2, now)[0].content_id,
        ContentId::from_bytes([2; 32])
    );
}

fn rating(id: u8, who: u8, verdict: crate::rating::Verdict) -> crate::rating::SignedRating {
    naming("film x", id, who, verdict, &[])
}

#[test]
fn raters_dispute_a_decoy_but_one_misjudgment_does_not_bury_a_real_file() {
    use crate::rating::Verdict::{Fake, Good};
    let now = NOW_S * 1000;
    let st = Standing::default();
    // Content 1: two honest publishers. Content 2: six fresh decoy ones.
    let mut all: Vec<SignedRecord> = (1..=2).map(|w| record("film x", 1, w)).collect();
    all.extend((10..16).map(|w| record("film x", 2, w)));
    assert_eq!(
        rank(&all, &[], &st, now)[0].content_id,
        ContentId::from_bytes([2; 32])
    );
    // One user rated the real file fake by mistake: not a dispute.
    let one = [rating(1, 100, Fake)];
    let r = rank(&all, &one, &st, now);
    assert!(!r.iter().any(|x| x.disputed));
    // Two raters say the decoy is fake: it goes below the real file.
    let two = [rating(2, 100, Fake), rating(2, 101, Fake)];
    let r = rank(&all, &two, &st, now);
    assert_eq!(r[0].content_id, ContentId::from_bytes([1; 32]));
    assert!(r[1].disputed && r[1].rated_fake == 2);
    // A rater counts once per content id, however often it rates.
    let dup = [rating(2, 100, Fake), rating(2, 100, Fake)];
    assert!(!rank(&all, &dup, &st, now).iter().any(|x| x.disputed));
    // The decoy's own publishers cannot outvote the raters by rating it
    // good: a publisher's rating of its own content is ignored.
    let mut counter: Vec<_> = (10..16).map(|w| rating(2, w, Good)).collect();
    counter.extend(two.iter().cloned());
    let r = rank(&all, &counter, &st, now);
    assert_eq!(r[0].content_id, ContentId::from_bytes([1; 32]));
    assert_eq!(r[1].rated_good, 0);
    // As many good ratings from other raters cancel a dispute.
    let mut balanced = two.to_vec();
    balanced.extend([rating(2, 102, Good), rating(2, 103, Good)]);
    assert!(!rank(&all, &balanced, &st, now).iter().any(|x| x.disputed));
}

#[test]
fn a_rater_who_judged_against_our_user_weighs_nothing_after() {
    use crate::rating::Verdict::{Fake, Good};
    let now = NOW_S * 1000;
    let mut all: Vec<SignedRecord> = (1..=2).map(|w| record("film x", 1, w)).collect();
    all.extend((10..16).map(|w| record("film x", 2, w)));
    // Sybil raters (30..33) call the real file fake and the decoy good;
    // to a first-time searcher that disputes the real file.
    let mut sybil: Vec<_> = (30..33).map(|w| rating(1, w, Fake)).collect();
    sybil.extend((30..33).map(|w| rating(2, w, Good)));
    let mut st = Standing::default();
    assert!(rank(&all, &sybil, &st, now)[1].disputed);
    // Our user downloaded the decoy and judged it fake: the raters that
    // called it good disagree with us, and weigh nothing from now on.
    let me = PublisherId::from_bytes([9; 32]);
    assert_eq!(
        st.judged(&ContentId::from_bytes([2; 32]), Fake, &sybil, Some(&me)),
        (0, 3)
    );
    let r = rank(&all, &sybil, &st, now);
    assert!(!r.iter().any(|x| x.disputed));
    // A rater who agreed gains standing (and so weight).
    let honest = [rating(2, 40, Fake)];
    let before = st.weight(&honest[0].publisher().id(), now);
    assert_eq!(
        st.judged(&ContentId::from_bytes([2; 32]), Fake, &honest, Some(&me)),
        (1, 0)
    );
    assert!(st.weight(&honest[0].publisher().id(), now) > before);
    // Our own rating is not a rater we agree with.
    let mine = rating(2, 41, Good);
    let mine_id = mine.publisher().id();
    assert_eq!(
        st.judged(
            &ContentId::from_bytes([2; 32]),
            Good,
            &[mine],
            Some(&mine_id)
        ),
        (0, 0)
    );
}

#[test]
fn a_rater_that_signs_both_verdicts_counts_for_neither_and_disagrees() {
    use crate::rating::Verdict::{Fake, Good};
    let now = NOW_S * 1000;
    let st = Standing::default();
    let all: Vec<SignedRecord> = (1..=2).map(|w| record("film x", 1, w)).collect();
    // Two hedgers: fake under one name, good under another.
    let mut hedged = Vec::new();
    for who in [100u8, 101] {
        let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
        for (name, v) in [("film x", Fake), ("film x remastered", Good)] {
            hedged.push(
                crate::rating::Rating {
                    rated: record(name, 1, 250).record().clone(),
                    verdict: v,
                    signers: vec![],
                }
                .sign(&p)
                .unwrap(),
            );
        }
    }
    let r = rank(&all, &hedged, &st, now);
    assert!(!r[0].disputed);
    assert_eq!((r[0].rated_fake, r[0].rated_good), (0, 0));
    let id = ContentId::from_bytes([1; 32]);
    let moved = agreement(&id, Good, &hedged, None);
    assert_eq!(moved.len(), 2);
    assert!(moved.iter().all(|(_, d)| *d == RATER_DISAGREED));
}

#[test]
fn a_signer_ground_to_sort_first_is_not_always_answered_first() {
    // Ten raters of one id; an answer takes one. Over many walks, the
    // rater with the lowest id is not always the one taken.
    let q = Query::parse("film x").unwrap();
    let mut held: Vec<crate::rating::SignedRating> = (100..110u8)
        .map(|w| rating(1, w, crate::rating::Verdict::Fake))
        .collect();
    held.sort_by_key(|r| r.publisher().id());
    let lowest = held[0].publisher().id();
    let mut first = 0;
    for w in 0..64u8 {
        let a = select_answer(&q, held.iter(), &WalkId([w; 16]), 1, 4000, 1);
        first += usize::from(a[0].publisher().id() == lowest);
    }
    assert!(first < 32, "the lowest id was taken in {first} of 64 walks");
}

/// A rating of `name` (content `id`) by rater `who`, naming the pseudonyms
/// `signers` as the signers it saw.
fn naming(
    name: &str,
    id: u8,
    who: u8,
    verdict: crate::rating::Verdict,
    signers: &[u8],
) -> crate::rating::SignedRating {
    let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
    crate::rating::Rating {
        rated: record(name, id, 250).record().clone(),
        verdict,
        signers: signers
            .iter()
            .map(|w| crate::rating::SignerTag::of(&record("x", 0, *w).publisher().id()))
            .collect(),
    }
    .sign(&p)
    .unwrap()
}

#[test]
fn ratings_of_one_decoy_discredit_its_signers_under_every_name() {
    use crate::rating::Verdict::{Fake, Good};
    let now = NOW_S * 1000;
    let st = Standing::default();
    // "film x": the real file (id 1, two publishers) and a decoy (id 2)
    // signed by a coalition of six (10..16) that also signs a decoy of
    // "film y" (id 3), which nobody searching "film x" sees.
    let mut all: Vec<SignedRecord> = (1..=2).map(|w| record("film x", 1, w)).collect();
    all.extend((10..16).map(|w| record("film x", 2, w)));
    let coalition: Vec<u8> = (10..16).collect();
    // One user rated the "film y" decoy fake: one fresh rater is not
    // enough to discredit anyone.
    let one = [naming("film y", 3, 100, Fake, &coalition)];
    let r = rank(&all, &one, &st, now);
    assert_eq!(r[0].content_id, ContentId::from_bytes([2; 32]));
    assert_eq!(r[0].discredited, 0);
    // Two users did: the whole coalition is discredited wherever it signs,
    // its "film x" decoy is disputed and ranks below the real file.
    let two = [
        naming("film y", 3, 100, Fake, &coalition),
        naming("film y", 3, 101, Fake, &coalition),
    ];
    let r = rank(&all, &two, &st, now);
    assert_eq!(r[0].content_id, ContentId::from_bytes([1; 32]));
    assert_eq!((r[1].discredited, r[1].score), (6, 0.0));
    assert!(r[1].disputed && !r[0].disputed);
    // A pseudonym named by only some raters keeps its weight: naming is
    // per pseudonym, each rater once.
    let part = [
        naming("film y", 3, 100, Fake, &coalition[..3]),
        naming("film y", 3, 101, Fake, &coalition[3..]),
    ];
    assert_eq!(rank(&all, &part, &st, now)[0].discredited, 0);
    // A rater that named a pseudonym in any fake rating counts it fake:
    // the same users rating another file good, with the coalition among
    // its signers, do not wash the decoy out (a coalition co-signing a
    // real file to launder itself).
    let mut laundered = two.to_vec();
    let mut real_w: Vec<u8> = vec![3];
    real_w.extend(&coalition);
    laundered.extend([100, 101].map(|who| naming("film w", 5, who, Good, &real_w)));
    assert_eq!(rank(&all, &laundered, &st, now)[1].discredited, 6);
    // Other raters naming it good weigh against those naming it fake.
    let countered = [
        naming("film y", 3, 100, Fake, &coalition),
        naming("film y", 3, 101, Fake, &coalition),
        naming("film y", 3, 102, Good, &coalition),
        naming("film y", 3, 103, Good, &coalition),
    ];
    assert_eq!(rank(&all, &countered, &st, now)[0].discredited, 0);
    // The coalition's own pseudonyms vouching for each other (and for
    // themselves) count for nothing: raters that publish in the results
    // are not counted.
    let mut vouched: Vec<_> = (100..105)
        .map(|who| naming("film y", 3, who, Fake, &coalition))
        .collect();
    vouched.extend(
        coalition
            .iter()
            .map(|w| naming("film z", 4, *w, Good, &coalition)),
    );
    let r = rank(&all, &vouched, &st, now);
    assert_eq!(r[0].content_id, ContentId::from_bytes([1; 32]));
    assert_eq!(r[1].discredited, 6);
}

#[test]
fn discredited_signers_do_not_win_the_tie_break() {
    use crate::rating::Verdict::Fake;
    let now = NOW_S * 1000;
    let st = Standing::default();
    // A discredited decoy plus one fresh pseudonym nobody named scores as
    // much as a real file with one fresh publisher (0.1 each): the tie
    // goes by publishers not discredited (one each), then by content id.
    let mut all: Vec<SignedRecord> = vec![record("film x", 1, 1)];
    all.extend((10..17).map(|w| record("film x", 2, w)));
    let coalition: Vec<u8> = (10..16).collect();
    let ratings: Vec<_> = (100..102)
        .map(|who| naming("film y", 3, who, Fake, &coalition))
        .collect();
    let r = rank(&all, &ratings, &st, now);
    assert_eq!((r[0].score, r[1].score), (0.1, 0.1));
    assert_eq!(r[0].content_id, ContentId::from_bytes([1; 32]));
    assert_eq!((r[1].discredited, r[1].disputed), (6, false));
}

/// The attacker's chair: a coalition of fresh raters that names honest
/// publishers as signers of fakes. What it takes to discredit them is
/// what it takes to dispute their file directly (two fresh raters, each
/// a proof of work), good ratings from downloaders weigh against it, and
/// a user whose own judgment disagreed with those raters ignores them.
#[test]
fn framing_an_honest_publisher_costs_what_disputing_its_file_costs() {
    use crate::rating::Verdict::{Fake, Good};
    let now = NOW_S * 1000;
    let mut all: Vec<SignedRecord> = (1..=2).map(|w| record("film x", 1, w)).collect();
    all.extend((10..13).map(|w| record("film x", 2, w)));
    let honest = [1u8, 2];
    let mut st = Standing::default();
    for w in 1..=2 {
        st.seen(record("x", 0, w).publisher().id(), 0);
    }
    let now_aged = now.max(AGING_MS);
    assert_eq!(
        rank(&all, &[], &st, now_aged)[0].content_id,
        ContentId::from_bytes([1; 32])
    );
    // One framer: nothing.
    let one = [naming("other", 5, 200, Fake, &honest)];
    assert_eq!(rank(&all, &one, &st, now_aged)[0].discredited, 0);
    // Two framers: the honest pair is discredited, as two fake ratings of
    // their file would dispute it.
    let two = [
        naming("other", 5, 200, Fake, &honest),
        naming("other", 5, 201, Fake, &honest),
    ];
    let r = rank(&all, &two, &st, now_aged);
    assert_eq!(r[0].content_id, ContentId::from_bytes([2; 32]));
    // Downloaders who rated the real file good and named its signers
    // outweigh them.
    let mut answered = two.to_vec();
    answered.extend([
        naming("film x", 1, 202, Good, &honest),
        naming("film x", 1, 203, Good, &honest),
    ]);
    assert_eq!(
        rank(&all, &answered, &st, now_aged)[0].content_id,
        ContentId::from_bytes([1; 32])
    );
    // And a user who judged a file against the framers stops counting
    // them at all.
    let me = PublisherId::from_bytes([9; 32]);
    let disagreed = st.judged(&ContentId::from_bytes([5; 32]), Good, &two, Some(&me));
    assert_eq!(disagreed, (0, 2));
    let r = rank(&all, &two, &st, now_aged);
    assert_eq!(
        (r[0].content_id, r[0].discredited),
        (ContentId::from_bytes([1; 32]), 0)
    );
}

#[test]
fn holders_add_ratings_that_name_the_answers_signers_once_per_rater() {
    use crate::rating::Verdict::{Fake, Good};
    let records: Vec<SignedRecord> = (10..13).map(|w| record("film xx", 2, w)).collect();
    let shown: Vec<&SignedRecord> = records.iter().collect();
    let q = Query::parse("film xx").unwrap();
    let held = [
        naming("show yy", 3, 100, Fake, &[10, 11, 12]),
        naming("show yy", 3, 101, Fake, &[12]),
        naming("show zz", 4, 101, Fake, &[10]),
        naming("show yy", 3, 102, Good, &[11]),
        naming("show ww", 6, 103, Fake, &[50, 51]),
        // Of a file the query matches: it goes with the records, if at all.
        naming("film xx", 2, 104, Fake, &[10]),
    ];
    let who = |r: &crate::rating::SignedRating| -> u8 {
        (100..=104)
            .find(|w| naming("x", 0, *w, Fake, &[]).publisher() == r.publisher())
            .unwrap()
    };
    let w = WalkId([3; 16]);
    let out = select_signer_ratings(&q, &shown, held.iter(), &w, 8, 1 << 20);
    let mut raters: Vec<u8> = out.iter().map(|r| who(r)).collect();
    raters.sort();
    // One of rater 101's two, the good one too; never a rating naming none
    // of them, nor one of a matching file.
    assert_eq!(raters, vec![100, 101, 102]);
    assert!(any_signer_rating(&q, records.iter(), held.iter()));
    assert!(!any_signer_rating(&q, records.iter(), held[4..].iter()));
    // The order is drawn from the walk id, not from how many signers a
    // rating names: the one naming all three is not always first.
    let firsts: std::collections::BTreeSet<u8> = (0..16u8)
        .map(|i| {
            who(select_signer_ratings(&q, &shown, held.iter(), &WalkId([i; 16]), 1, 1 << 20)[0])
        })
        .collect();
    assert!(firsts.len() > 1, "{firsts:?}");
    // Bounded by count and by bytes.
    let one = held[0].as_bytes().len() + 2;
    assert!(select_signer_ratings(&q, &shown, held.iter(), &w, 8, one - 1).len() <= 1);
    assert!(select_signer_ratings(&q, &[], held.iter(), &w, 8, 1 << 20).is_empty());
}
