//! `stayhook migrate --to nats://`: the deliveries a single node still owes, taken over by the
//! cluster. The accounts, webhooks, state and events travel as an export imported into the
//! cluster (`backup::offline::migrate`); this moves what an export leaves out.

use std::sync::Arc;

use super::store::NatsStore;
use crate::store::*;

/// Events read from the source per page.
const PAGE: usize = 500;

/// What [`NatsStore::adopt_deliveries_blocking`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Deliveries still owed: attempted again by the cluster.
    pub pending: usize,
    /// Dead letters (holding their lane where they held it on the source).
    pub dead: usize,
}

impl NatsStore {
    /// Take over the pending deliveries and dead letters of `source` (whose accounts and events
    /// were imported here first), event by event in log order, so each lane keeps its order. A
    /// delivery keeps its attempts and last error; its id is this backend's id of its
    /// (event, subscription), so running it again adds nothing twice.
    pub fn adopt_deliveries_blocking(&self, source: &dyn Backend) -> Result<Adopted, StoreError> {
        let mut adopted = Adopted::default();
        for account in source.list_accounts()? {
            let mut after = None;
            loop {
                let filter = EventFilter { account_id: Some(account.id.clone()), after: after.clone(), limit: PAGE, ..Default::default() };
                let page = source.list_events(&filter)?;
                for event in &page {
                    self.adopt_event(source, event, &mut adopted)?;
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                    _ => break,
                }
            }
        }
        Ok(adopted)
    }

    fn adopt_event(&self, source: &dyn Backend, event: &StoredEvent, adopted: &mut Adopted) -> Result<(), StoreError> {
        let owed: Vec<Delivery> = source
            .deliveries_of_event(&event.id)?
            .into_iter()
            .filter(|delivery| matches!(delivery.status, DeliveryStatus::Pending | DeliveryStatus::Dead))
            .collect();
        if owed.is_empty() {
            return Ok(());
        }
        let bytes =
            Arc::new(serde_json::to_vec(event).map_err(|error| StoreError::Backend(format!("encoding event {}: {error}", event.id)))?);
        for delivery in owed {
            let holds_lane = source.lane_head(&delivery.subscription_id, &delivery.lane)? == Some(delivery.id);
            let moved = Delivery { id: self.delivery_id(&event.id, &delivery.subscription_id)?, ..delivery };
            self.block(async {
                match moved.status {
                    // A dead letter that no longer holds its lane is a record only.
                    DeliveryStatus::Dead if !holds_lane => self.work.put_record(&moved).await,
                    // Pending: joins its lane (attempted when it is the head); a dead head holds it.
                    _ => self.work.add(&moved, &bytes).await,
                }
            })?;
            match moved.status {
                DeliveryStatus::Dead => adopted.dead += 1,
                _ => adopted.pending += 1,
            }
        }
        Ok(())
    }
}
