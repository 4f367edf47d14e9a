//! The catalog on JetStream ([`Catalog`]): accounts, subscriptions and daemon-wide values (the
//! admin token, OAuth2 tokens, sync states) in the `SH_CATALOG` bucket.
//!
//! Every node holds the whole bucket in memory, so the catalog's plain `fn` reads stay memory
//! reads: [`NatsCatalog::open`] loads it and a watch keeps it current (another node's write is
//! seen once the watch delivers it, milliseconds later; an account or subscription this node has
//! not seen yet is read from the bucket). A node's own write goes to the bucket and then into its
//! copy at once, so the node that wrote reads its write. `insert_account` is a KV
//! `create` (of two nodes creating one id, one gets `AlreadyExists`) and `swap_meta` an `update`
//! on the revision read fresh from the bucket: compare-and-set by the engine, never by this copy.
//!
//! Keys: `account.<id>`, `sub.<account>.<id>`, `value.<key>` (ids as subject tokens,
//! [`subject_token`]); `meta.partitions` is the engine's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{CATALOG_BUCKET, Engine, NatsError, classify, subject_token, token_id};
use super::follow::follow_bucket;
use crate::store::{Account, Catalog, Inserted, StoreError, StoreFuture, Subscription};

/// Key to (revision, value; `None` once deleted).
type Entries = HashMap<String, (u64, Option<Vec<u8>>)>;

/// The catalog of a node: the bucket, and this node's copy of it.
pub struct NatsCatalog {
    kv: kv::Store,
    entries: Arc<RwLock<Entries>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for NatsCatalog {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

fn account_key(account_id: &str) -> String {
    format!("account.{}", subject_token(account_id))
}

fn subscription_prefix(account_id: &str) -> String {
    format!("sub.{}.", subject_token(account_id))
}

fn subscription_key(account_id: &str, subscription_id: &str) -> String {
    format!("{}{}", subscription_prefix(account_id), subject_token(subscription_id))
}

fn value_key(key: &str) -> String {
    format!("value.{}", subject_token(key))
}

fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    // Accounts and subscriptions serialize to JSON without fail.
    bytes::Bytes::from(serde_json::to_vec(value).expect("catalog records serialize"))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Codec { tree: CATALOG_BUCKET, message: format!("{key}: {error}") })
}

/// Apply one entry to the copy, unless the copy holds a newer revision of its key.
fn apply(entries: &RwLock<Entries>, key: String, revision: u64, value: Option<Vec<u8>>) {
    let mut entries = entries.write().expect("catalog copy lock poisoned");
    if entries.get(&key).is_some_and(|(known, _)| *known >= revision) {
        return;
    }
    entries.insert(key, (revision, value));
}

fn apply_entry(entries: &RwLock<Entries>, entry: kv::Entry) {
    let value = (entry.operation == kv::Operation::Put).then(|| entry.value.to_vec());
    apply(entries, entry.key, entry.revision, value);
}

/// Called with the id of an account whose deletion the catalog's watch saw (made by any node).
pub type OnAccountRemoved = Box<dyn Fn(&str) + Send + Sync>;

impl NatsCatalog {
    /// Open the catalog of `engine`'s cluster: load the bucket's current contents, then follow it.
    pub async fn open(engine: &Engine) -> Result<NatsCatalog, NatsError> {
        Self::open_with(engine, Box::new(|_| {})).await
    }

    /// [`NatsCatalog::open`], telling `removed` of every account deletion the watch sees (the
    /// read model forgets the account's data another node purged).
    pub async fn open_with(engine: &Engine, removed: OnAccountRemoved) -> Result<NatsCatalog, NatsError> {
        let kv = engine.bucket(CATALOG_BUCKET).await?;
        let entries = Arc::new(RwLock::new(Entries::new()));
        let copy = entries.clone();
        let watch = follow_bucket(&kv, "the catalog", move |entry| {
            if entry.operation != kv::Operation::Put
                && let Some(account_id) = entry.key.strip_prefix("account.").and_then(token_id)
            {
                removed(&account_id);
            }
            apply_entry(&copy, entry);
        })
        .await?;
        let n_keys = entries.read().expect("catalog copy lock poisoned").len();
        tracing::debug!(n_keys, "catalog loaded");
        Ok(NatsCatalog { kv, entries, watch })
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.read().expect("catalog copy lock poisoned").get(key).and_then(|(_, value)| value.clone())
    }

    /// `get`, and for a key this node's copy has never seen, the bucket's value: another node may
    /// have written it a moment ago (behind a load balancer, an account created on one node is
    /// used on the next request, anywhere). A key the copy knows deleted is not read again.
    /// Only on a multi-thread runtime (the read blocks the thread); elsewhere the copy answers.
    fn get_or_fetch(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.entries.read().expect("catalog copy lock poisoned").contains_key(key) {
            return Ok(self.get(key));
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return Ok(None) };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Ok(None);
        }
        let entry = tokio::task::block_in_place(|| handle.block_on(self.kv.entry(key)))
            .map_err(|error| StoreError::from(classify(&format!("reading {key}"), &error)))?;
        let Some(entry) = entry else { return Ok(None) };
        let value = (entry.operation == kv::Operation::Put).then(|| entry.value.to_vec());
        apply(&self.entries, key.to_string(), entry.revision, value.clone());
        Ok(value)
    }

    /// Live values of the keys starting with `prefix`, decoded, in key order.
    fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        let entries = self.entries.read().expect("catalog copy lock poisoned");
        let mut found: Vec<(&String, &Vec<u8>)> = entries
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, (_, value))| Some((key, value.as_ref()?)))
            .collect();
        found.sort();
        found.into_iter().map(|(key, value)| decode(key, value)).collect()
    }

    async fn put(&self, key: String, value: bytes::Bytes) -> Result<(), StoreError> {
        let revision = self.kv.put(&key, value.clone()).await.map_err(|error| classify(&format!("writing {key}"), &error))?;
        apply(&self.entries, key, revision, Some(value.to_vec()));
        Ok(())
    }

    /// Delete `key`; whether it was there (in this node's copy).
    async fn delete(&self, key: String) -> Result<bool, StoreError> {
        let existed = self.get(&key).is_some();
        self.kv.delete(&key).await.map_err(|error| classify(&format!("deleting {key}"), &error))?;
        // The delete marker's revision comes with the watch; until then the copy says "deleted"
        // under the revision it knew, so any later write still applies.
        let mut entries = self.entries.write().expect("catalog copy lock poisoned");
        if let Some((_, value)) = entries.get_mut(&key) {
            *value = None;
        }
        Ok(existed)
    }
}

impl Catalog for NatsCatalog {
    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get(&value_key(key))
            .map(|bytes| String::from_utf8(bytes).map_err(|error| StoreError::Codec { tree: CATALOG_BUCKET, message: error.to_string() }))
            .transpose()
    }

    fn insert_meta<'a>(&'a self, key: &'a str, value: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.put(value_key(key), bytes::Bytes::from(value.to_string())))
    }

    fn remove_meta<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.delete(value_key(key)).await.map(|_| ()) })
    }

    /// Reads the bucket, not this node's copy (which it brings up to date with what it read).
    fn get_meta_latest<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let key = value_key(key);
            let entry = self.kv.entry(&key).await.map_err(|error| classify(&format!("reading {key}"), &error))?;
            let Some(entry) = entry else { return Ok(None) };
            let value = (entry.operation == kv::Operation::Put).then(|| entry.value.to_vec());
            apply(&self.entries, key, entry.revision, value.clone());
            value
                .map(|bytes| {
                    String::from_utf8(bytes).map_err(|error| StoreError::Codec { tree: CATALOG_BUCKET, message: error.to_string() })
                })
                .transpose()
        })
    }

    /// Compares against the bucket, not this node's copy: the revision is read fresh, and the
    /// write is an `update` on it (or a `create` when nothing is expected).
    fn swap_meta<'a>(&'a self, key: &'a str, expected: Option<&'a str>, value: Option<&'a str>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = value_key(key);
            let current = self.kv.entry(&key).await.map_err(|error| classify(&format!("reading {key}"), &error))?;
            let (revision, stored) = match &current {
                Some(entry) if entry.operation == kv::Operation::Put => (entry.revision, Some(entry.value.as_ref())),
                Some(entry) => (entry.revision, None),
                None => (0, None),
            };
            if stored != expected.map(str::as_bytes) {
                return Ok(false);
            }
            let written = match (value, stored) {
                (Some(value), None) => {
                    let created = self.kv.create(&key, bytes::Bytes::from(value.to_string())).await;
                    created.map(Some).map_err(|error| classify(&format!("creating {key}"), &error))
                }
                (Some(value), Some(_)) => {
                    let updated = self.kv.update(&key, bytes::Bytes::from(value.to_string()), revision).await;
                    updated.map(Some).map_err(|error| classify(&format!("updating {key}"), &error))
                }
                (None, Some(_)) => {
                    let deleted = self.kv.delete_expect_revision(&key, Some(revision)).await;
                    deleted.map(|()| None).map_err(|error| classify(&format!("deleting {key}"), &error))
                }
                (None, None) => return Ok(true),
            };
            match written {
                Ok(Some(new_revision)) => {
                    apply(&self.entries, key, new_revision, value.map(|value| value.as_bytes().to_vec()));
                    Ok(true)
                }
                Ok(None) => {
                    if let Some((_, known)) = self.entries.write().expect("catalog copy lock poisoned").get_mut(&key) {
                        *known = None;
                    }
                    Ok(true)
                }
                Err(NatsError::Conflict(_)) => Ok(false),
                Err(error) => Err(error.into()),
            }
        })
    }

    fn insert_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, Inserted> {
        Box::pin(async move {
            let key = account_key(&account.id);
            let value = encode(account);
            match self.kv.create(&key, value.clone()).await {
                Ok(revision) => {
                    apply(&self.entries, key, revision, Some(value.to_vec()));
                    Ok(Inserted::Created)
                }
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Inserted::AlreadyExists),
                // A create racing another one still being proposed loses with JetStream's 10164,
                // which async-nats does not map to `AlreadyExists`.
                Err(error) => match classify(&format!("creating {key}"), &error) {
                    NatsError::Conflict(_) => Ok(Inserted::AlreadyExists),
                    other => Err(other.into()),
                },
            }
        })
    }

    fn put_account<'a>(&'a self, account: &'a Account) -> StoreFuture<'a, ()> {
        Box::pin(self.put(account_key(&account.id), encode(account)))
    }

    fn get_account(&self, account_id: &str) -> Result<Option<Account>, StoreError> {
        let key = account_key(account_id);
        self.get_or_fetch(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut accounts: Vec<Account> = self.list("account.")?;
        accounts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(accounts)
    }

    /// The account's key first, then its subscriptions' (a crash in between leaves subscriptions
    /// of no account, which nothing lists).
    fn remove_account<'a>(&'a self, account_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let existed = self.delete(account_key(account_id)).await?;
            let prefix = subscription_prefix(account_id);
            let keys: Vec<String> = {
                let entries = self.entries.read().expect("catalog copy lock poisoned");
                entries.iter().filter(|(key, (_, value))| key.starts_with(&prefix) && value.is_some()).map(|(key, _)| key.clone()).collect()
            };
            for key in keys {
                self.delete(key).await?;
            }
            Ok(existed)
        })
    }

    fn put_subscription<'a>(&'a self, subscription: &'a Subscription) -> StoreFuture<'a, ()> {
        Box::pin(self.put(subscription_key(&subscription.account_id, &subscription.id), encode(subscription)))
    }

    fn get_subscription(&self, account_id: &str, subscription_id: &str) -> Result<Option<Subscription>, StoreError> {
        let key = subscription_key(account_id, subscription_id);
        self.get_or_fetch(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    fn list_subscriptions(&self, account_id: &str) -> Result<Vec<Subscription>, StoreError> {
        let mut subscriptions: Vec<Subscription> = self.list(&subscription_prefix(account_id))?;
        subscriptions.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(subscriptions)
    }

    fn remove_subscription<'a>(&'a self, account_id: &'a str, subscription_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.delete(subscription_key(account_id, subscription_id)))
    }
}
