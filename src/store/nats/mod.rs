//! The NATS JetStream backend (issue 14, `docs/jetstream-design.md`): the storage traits of
//! [`crate::store`] on a JetStream cluster that any number of stayhook nodes share.
//!
//! - [`engine`]: the connection, and the provisioning of the streams, buckets and consumers;
//! - [`catalog`]: accounts, subscriptions and daemon values in the `SH_CATALOG` bucket;
//! - [`inbox`]: the durable append of raw webhooks with JetStream's duplicate window;
//! - [`feed`]: the partition feed, handing each partition's webhooks to one node at a time, in
//!   per-account order across nodes and across a drainer's death;
//! - [`ledger`]: record state by compare-and-set, the event log, and the commit of a run;
//! - [`work`]: deliveries as work messages, one lane head at a time;
//! - [`view`] and [`follow`]: each node's read model of the listings, kept by following the
//!   streams and buckets;
//! - [`store`]: [`NatsStore`], which puts them together behind the traits;
//! - [`retention`]: deleting what retention no longer keeps, on every node;
//! - [`migrate`]: taking over the deliveries a single node owes (`stayhook migrate --to`).
//!
//! It owns no thread of its own (tasks on the tokio runtime) and runs no consensus, lease or queue
//! of its own: order and failover come from the server's pinned pull consumers, dedup from
//! `Nats-Msg-Id`, compare-and-set from KV revisions, retries from the work consumer's naks.
//!
//! The invariant it keeps: an append answers only after JetStream acknowledged the publish (an R3
//! ack means a quorum has it, in the servers' page cache: fsynced within their `sync_interval`, see
//! the design note's "Durability of an ack"), and a feed item's ack is refused once its node lost the
//! partition's pin.

pub mod catalog;
pub mod engine;
pub mod feed;
pub mod follow;
pub mod inbox;
pub mod ledger;
pub mod migrate;
pub mod retention;
pub mod store;
pub mod view;
pub mod work;

pub use catalog::NatsCatalog;
pub use engine::{Engine, NatsConfig, NatsError, partition_of, subject_token, token_id};
pub use feed::{FeedAck, FeedBatch, FeedHandler, FeedItem, PartitionFeed};
pub use inbox::NatsInboxEntry;
pub use migrate::Adopted;
pub use store::{NatsStore, open};
