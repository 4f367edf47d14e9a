//! A dead letter holds its record's lane: a reservation's update is not delivered while its
//! creation stands dead-lettered, and redelivering the creation sends it first, then the update.
//! Other records are not held.

use std::time::Duration;

use serde_json::Value;

use super::{Account, Bodies, Seen, Stage, options};
use crate::support::{Daemon, Receiver};

/// Three attempts, then dead.
const SCHEDULE: &str = "50ms,50ms";

async fn post(daemon: &Daemon, account: &Account, body: &[u8]) {
    let answer = daemon.post_webhook(&account.id, body, &[("authorization", &account.authorization)]).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
}

#[tokio::test]
async fn a_dead_letter_holds_its_records_later_events_until_redelivered() {
    const TEST: &str = "dead-letter-holds-lane";
    let receiver = Receiver::start().await;
    // The receiver fails exactly the three attempts of the first event, then answers 200.
    receiver.fail_with(503);
    receiver.fail_next(3);
    let daemon = Daemon::start(options(SCHEDULE)).await;
    let account = Account::create(&daemon, "dead-letters", &receiver.url).await;
    let bodies = Bodies::load();

    post(&daemon, &account, &bodies.body(1, Stage::Created)).await;
    let dead: Value = daemon
        .wait_for("reservation 1's creation to be dead-lettered", async |daemon| {
            let (_, body) = daemon.admin("GET", "/v1/dead-letters", None).await;
            body["deadLetters"].as_array().and_then(|dead| dead.first().cloned())
        })
        .await;
    let dead_event = dead["eventId"].as_str().unwrap().to_string();

    // While the dead letter stands: reservation 1's update is held; reservation 2 goes through.
    post(&daemon, &account, &bodies.body(1, Stage::Updated)).await;
    post(&daemon, &account, &bodies.body(2, Stage::Created)).await;
    let mut seen = Seen::default();
    let other_arrived = seen
        .collect_until(&receiver, Duration::from_secs(30), |seen| seen.delivered().contains(&("2".into(), "reservation.created".into())))
        .await;
    assert!(other_arrived, "{TEST}: another record was held back by the dead letter");
    // The held update had every chance to go out meanwhile (the schedule is 50 ms); wait a little more.
    seen.drain(&receiver, Duration::from_secs(2)).await;
    let first_failures = seen.posts.iter().filter(|post| post.record == "1" && post.answered >= 300).count();
    let early: Vec<_> = seen.posts.iter().filter(|post| post.record == "1" && post.answered < 300).collect();
    assert!(early.is_empty(), "{TEST}: reservation 1 was delivered while its creation stood dead-lettered: {early:?}");

    // Redeliver the dead creation: it comes first, under its id, then the held update.
    let (status, answer) = daemon.admin("POST", &format!("/v1/events/{dead_event}/redeliver"), None).await;
    assert_eq!(status, 202, "{answer}");
    let both = seen
        .collect_until(&receiver, Duration::from_secs(30), |seen| {
            seen.delivered().contains(&("1".into(), "reservation.updated".into()))
                && seen.delivered().contains(&("1".into(), "reservation.created".into()))
        })
        .await;
    let record_1: Vec<(String, String, u16)> = seen
        .posts
        .iter()
        .filter(|post| post.record == "1" && post.answered < 300)
        .map(|post| (post.event_type.clone(), post.webhook_id.clone(), post.answered))
        .collect();
    eprintln!("fault-suite: {TEST} failed_attempts={first_failures} record_1_deliveries={}", record_1.len());
    assert!(both, "{TEST}: after the redelivery, reservation 1 got {record_1:?}");
    assert_eq!(record_1[0].0, "reservation.created", "{TEST}: reservation 1 arrived as {record_1:?}");
    assert_eq!(record_1[0].1, dead_event, "{TEST}: the redelivered creation keeps its webhook-id");
    assert_eq!(record_1[1].0, "reservation.updated", "{TEST}: reservation 1 arrived as {record_1:?}");
}
