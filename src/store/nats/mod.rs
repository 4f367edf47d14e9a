//! The layer the NATS JetStream backend (issue 14, `docs/jetstream-design.md`) stands on: a
//! connection that provisions the streams, buckets and consumers of the design ([`engine`]), the
//! catalog on the `SH_CATALOG` bucket (the first storage interface it implements, [`catalog`]), the
//! durable append of raw webhooks with JetStream's duplicate window ([`inbox`]) and the partition
//! feed that hands each partition's webhooks to one node at a time, in per-account order across
//! nodes and across a drainer's death ([`feed`]).
//!
//! It owns no thread of its own: the connection's tasks and one puller and one dispatcher task per
//! partition, all on the tokio runtime. It does not yet implement the storage traits of
//! [`crate::store`] (the backend will, on top of this), and it runs no consensus, lease or queue of
//! its own: order and failover come from the server's pinned pull consumers, dedup from
//! `Nats-Msg-Id`, compare-and-set from KV revisions.
//!
//! The invariant it keeps: an append answers only after JetStream acknowledged the publish (an R3
//! ack means a quorum has it, in the servers' page cache: fsynced within their `sync_interval`, see
//! the design note's "Durability of an ack"), and a feed item's ack is refused once its node lost the
//! partition's pin.

pub mod catalog;
pub mod engine;
pub mod feed;
pub mod inbox;

pub use catalog::NatsCatalog;
pub use engine::{Engine, NatsConfig, NatsError, partition_of, subject_token, token_id};
pub use feed::{FeedAck, FeedBatch, FeedHandler, FeedItem, PartitionFeed};
pub use inbox::NatsInboxEntry;
