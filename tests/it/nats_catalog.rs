//! The catalog on JetStream (`store::nats::NatsCatalog`) on a real 3-node cluster: two nodes'
//! catalogs (each its own connection to its own server) see each other's writes, decide one
//! account's creation once between them, and compare-and-set daemon-wide values (sync states
//! included) against the bucket; a catalog opened later loads everything.

use std::time::{Duration, Instant};

use stayhook::model::EventType;
use stayhook::store::nats::{Engine, NatsCatalog, NatsConfig};
use stayhook::store::{Account, Catalog, Inserted, PassKind, Subscription, SyncPass, SyncState, SyncStates};

use crate::support::NatsCluster;

async fn bounded<T>(what: &str, bound: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future).await.unwrap_or_else(|_| panic!("{what}: not done within {bound:?}"))
}

/// A node's catalog, connected to server `node` of the cluster only.
async fn catalog(cluster: &NatsCluster, node: usize) -> NatsCatalog {
    let config = NatsConfig { urls: vec![cluster.urls()[node].clone()], replicas: 3, partitions: 4, ..NatsConfig::default() };
    let engine = bounded("connecting an engine", Duration::from_secs(60), Engine::connect(config)).await.expect("an engine");
    bounded("opening the catalog", Duration::from_secs(40), NatsCatalog::open(&engine)).await.expect("the catalog")
}

/// Poll `condition` until it holds (another node's write arrives through the watch).
async fn seen(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not seen within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn account(id: &str, name: &str) -> Account {
    Account {
        id: id.into(),
        workspace_id: "ws".into(),
        pms: "hostaway".into(),
        name: Some(name.into()),
        credentials: Default::default(),
        verification: Default::default(),
        settings: Default::default(),
        api_base_url: None,
        rate_limit_per_second: None,
        registration: Default::default(),
        reconcile_interval_secs: None,
        created_at: "2026-12-07T00:00:00Z".into(),
        updated_at: "2026-12-07T00:00:00Z".into(),
    }
}

fn subscription(account_id: &str, id: &str) -> Subscription {
    Subscription {
        id: id.into(),
        account_id: account_id.into(),
        name: "crm".into(),
        url: "https://crm.example.com/hooks".into(),
        enabled: true,
        event_types: vec![EventType::ReservationCreated],
        secret: "whsec_AAAA".into(),
        failing_since_ms: None,
        disabled_reason: None,
        created_at: "2026-12-07T00:00:00Z".into(),
        updated_at: "2026-12-07T00:00:00Z".into(),
    }
}

fn names(accounts: Vec<Account>) -> Vec<(String, Option<String>)> {
    accounts.into_iter().map(|account| (account.id, account.name)).collect()
}

#[tokio::test]
async fn two_nodes_share_one_catalog_and_decide_creations_and_swaps_once() {
    bounded("the catalog test", Duration::from_secs(120), async {
        let cluster = NatsCluster::start(3).await;
        let a = catalog(&cluster, 0).await;
        let b = catalog(&cluster, 1).await;

        // One id created on both nodes: exactly one creation. An odd id is a valid key.
        let id = "acct/1 ü";
        let (from_a, from_b) = (account(id, "from a"), account(id, "from b"));
        let (on_a, on_b) = tokio::join!(a.insert_account(&from_a), b.insert_account(&from_b));
        let outcomes = [on_a.unwrap(), on_b.unwrap()];
        assert_eq!(outcomes.iter().filter(|outcome| **outcome == Inserted::Created).count(), 1, "{outcomes:?}");
        let winner = if outcomes[0] == Inserted::Created { "from a" } else { "from b" };
        // The writer reads its write at once; the other node once the watch brings it.
        for node in [&a, &b] {
            seen("the account on both nodes", || node.get_account(id).unwrap().and_then(|account| account.name).as_deref() == Some(winner))
                .await;
        }
        a.put_account(&account(id, "renamed")).await.unwrap();
        assert_eq!(a.get_account(id).unwrap().unwrap().name.as_deref(), Some("renamed"), "read your own write");
        seen("the rename on b", || b.get_account(id).unwrap().unwrap().name.as_deref() == Some("renamed")).await;
        b.insert_account(&account("acct-2", "two")).await.unwrap();
        seen("both accounts on a", || names(a.list_accounts().unwrap()).len() == 2).await;
        assert_eq!(names(a.list_accounts().unwrap()), vec![("acct-2".into(), Some("two".into())), (id.into(), Some("renamed".into()))]);

        // Subscriptions, listed per account; an account's removal takes them.
        for sub in ["s2", "s1"] {
            b.put_subscription(&subscription(id, sub)).await.unwrap();
        }
        b.put_subscription(&subscription("acct-2", "s9")).await.unwrap();
        seen("the subscriptions on a", || a.list_subscriptions(id).unwrap().len() == 2).await;
        let listed: Vec<String> = a.list_subscriptions(id).unwrap().into_iter().map(|subscription| subscription.id).collect();
        assert_eq!(listed, ["s1", "s2"]);
        assert!(a.remove_subscription(id, "s2").await.unwrap());
        assert!(!a.remove_subscription(id, "s2").await.unwrap(), "removed once");
        seen("the removal on b", || b.get_subscription(id, "s2").unwrap().is_none()).await;
        assert!(b.remove_account(id).await.unwrap());
        seen("the account's removal on a", || a.get_account(id).unwrap().is_none() && a.list_subscriptions(id).unwrap().is_empty()).await;
        assert_eq!(a.list_subscriptions("acct-2").unwrap().len(), 1, "another account's subscription stays");

        // Compare-and-set against the bucket: b's copy may be stale, the swap is not.
        assert!(a.swap_meta("token", None, Some("1")).await.unwrap());
        assert!(!b.swap_meta("token", None, Some("2")).await.unwrap(), "a value exists already");
        assert!(b.swap_meta("token", Some("1"), Some("2")).await.unwrap());
        assert!(!a.swap_meta("token", Some("1"), Some("3")).await.unwrap(), "a's expectation is stale");
        seen("the swap on a", || a.get_meta("token").unwrap().as_deref() == Some("2")).await;
        assert!(a.swap_meta("token", Some("2"), None).await.unwrap(), "a swap to nothing removes");
        seen("the removal on b", || b.get_meta("token").unwrap().is_none()).await;

        // A sync pass on each node, the same account: the second writer's stale state loses.
        let started = SyncState { running: Some(pass()), ..SyncState::default() };
        assert!(a.put_sync_state("acct-2", None, &started).await.unwrap());
        let mut on_b = started.clone();
        on_b.running.as_mut().unwrap().pages_done = 1;
        assert!(!b.put_sync_state("acct-2", None, &on_b).await.unwrap(), "b did not read a's state");
        assert!(b.put_sync_state("acct-2", Some(&started), &on_b).await.unwrap());
        let mut on_a = started.clone();
        on_a.running.as_mut().unwrap().pages_done = 2;
        assert!(!a.put_sync_state("acct-2", Some(&started), &on_a).await.unwrap(), "a's pass was taken over");

        // A node that opens the catalog later loads everything there is.
        let c = catalog(&cluster, 2).await;
        assert_eq!(names(c.list_accounts().unwrap()), vec![("acct-2".into(), Some("two".into()))]);
        assert_eq!(c.list_subscriptions("acct-2").unwrap().len(), 1);
        assert_eq!(c.get_sync_state("acct-2").unwrap(), Some(on_b));
        assert!(c.get_account(id).unwrap().is_none());
    })
    .await;
}

fn pass() -> SyncPass {
    SyncPass {
        kind: PassKind::Reconciliation,
        mode: "modified-since".into(),
        modes_left: Vec::new(),
        deliver: true,
        cursor: None,
        since: None,
        started_at: "2026-12-07T00:00:00Z".into(),
        started_at_ms: 1_796_601_600_000,
        finished_at: None,
        pages_done: 0,
        records_seen: 0,
        recovered: 0,
        errors: 0,
        last_error: None,
    }
}
