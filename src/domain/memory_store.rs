//! An in-memory [`OrderStore`] for unit tests: it keeps the orders it is given (or, `refuse`,
//! panics on a store call where reaching the store would be the bug) and asks nothing else.
//! One fake for every unit test that needs a store, so a change to the port changes one file.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::idempotency::{KeyClaim, KeyCompletion, KeyLease, KeyTimes};
use super::{ListFilter, Order, OrderStore, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    pub orders: Mutex<Vec<Order>>,
    pub refuse: bool,
}

#[async_trait]
impl OrderStore for MemoryStore {
    async fn insert_order(&self, order: &Order, _: Option<&KeyCompletion>) -> Result<(), StoreError> {
        assert!(!self.refuse, "the order must fail before it is stored");
        self.orders.lock().expect("lock").push(order.clone());
        Ok(())
    }
    async fn claim_key(&self, _: &KeyLease, _: &str, _: KeyTimes) -> Result<KeyClaim, StoreError> {
        unreachable!()
    }
    async fn release_key(&self, _: &KeyLease) -> Result<(), StoreError> {
        unreachable!()
    }
    async fn purge_keys(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        unreachable!()
    }
    async fn get_order(&self, _: Uuid) -> Result<Option<Order>, StoreError> {
        unreachable!()
    }
    async fn list_orders(&self, _: &ListFilter) -> Result<Vec<Order>, StoreError> {
        unreachable!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unreachable!()
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}
