//! Durable Object storage as dosql uses it, as a trait: read values of keys (and SQLite-backed
//! storage's head row), apply one write plan atomically. Implemented by the wasm's host
//! bridge (the Durable Object's storage), by [`MemKv`] (in memory, enforcing production's
//! limits and counting calls), by [`FaultKv`] (failing on command), and by `RedbKv` (a local
//! store file holding the very records a Durable Object holds).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use dosql_pagestore::{Fault, StoreError};

use crate::keys::Key;
use crate::plan::{Calls, WritePlan};
use crate::value::{HeadRow, StorageKind, Value};

/// Durable Object storage.
///
/// # Contract
/// - [`get`](Kv::get) takes at most 128 keys (callers split longer reads) and answers their
///   values in order, `None` for an absent key.
/// - [`apply`](Kv::apply) applies the whole plan or, returning an error, none of it (storage
///   as before). A store that cannot tell whether a plan landed (a lost acknowledgement) says
///   so with an error; its reads then tell the truth. Before writing anything it checks the
///   plan against the storage kind's limits ([`WritePlan::check`]).
/// - On classic storage there is no head row: [`head_row`](Kv::head_row) answers `None`.
pub trait Kv {
    /// Which kind of storage this is.
    fn kind(&self) -> StorageKind;
    /// The values of `keys`, in order.
    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError>;
    /// SQLite-backed storage's head row, if there is one.
    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError>;
    /// Applies `plan` atomically.
    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError>;
}

impl<K: Kv + ?Sized> Kv for Box<K> {
    fn kind(&self) -> StorageKind {
        (**self).kind()
    }
    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        (**self).get(keys)
    }
    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        (**self).head_row()
    }
    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        (**self).apply(plan)
    }
}

/// A KV shared with whoever holds another handle to it (tests keep one to look at storage
/// after handing the store to a database).
impl<K: Kv> Kv for Arc<Mutex<K>> {
    fn kind(&self) -> StorageKind {
        lock(self).kind()
    }
    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        lock(self).get(keys)
    }
    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        lock(self).head_row()
    }
    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        lock(self).apply(plan)
    }
}

fn lock<K>(m: &Mutex<K>) -> MutexGuard<'_, K> {
    // A panic while holding the lock leaves the KV as its last complete call left it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Storage calls made, as production would count them.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CallCounts {
    /// `get` calls (classic: up to 128 keys each; SQLite-backed: one per key).
    pub get_calls: u64,
    /// Keys read.
    pub get_keys: u64,
    /// Head row reads.
    pub head_row_reads: u64,
    /// `put` calls.
    pub put_calls: u64,
    /// Keys put.
    pub put_keys: u64,
    /// `delete` calls.
    pub delete_calls: u64,
    /// Keys deleted.
    pub delete_keys: u64,
    /// Head row writes.
    pub head_row_writes: u64,
    /// Plans applied.
    pub plans: u64,
    /// Plans refused for a limit (nothing written).
    pub refused: u64,
    /// Bytes of values written.
    pub bytes_written: u64,
    /// The largest value written.
    pub max_value_bytes: u64,
}

/// Durable Object storage in memory: keys in a sorted map, the head row, production's limits
/// enforced on every call, every call counted. Clone it to snapshot (values are copied).
#[derive(Clone, Debug)]
pub struct MemKv {
    kind: StorageKind,
    data: BTreeMap<String, Value>,
    head_row: Option<HeadRow>,
    counts: CallCounts,
}

impl MemKv {
    /// Empty storage of `kind`.
    pub fn new(kind: StorageKind) -> MemKv {
        MemKv {
            kind,
            data: BTreeMap::new(),
            head_row: None,
            counts: CallCounts::default(),
        }
    }

    /// Storage holding `data` and `head_row` (what an earlier release wrote, say).
    pub fn with_contents(
        kind: StorageKind,
        data: BTreeMap<String, Value>,
        head_row: Option<HeadRow>,
    ) -> MemKv {
        MemKv {
            kind,
            data,
            head_row,
            counts: CallCounts::default(),
        }
    }

    /// Every key and value.
    pub fn data(&self) -> &BTreeMap<String, Value> {
        &self.data
    }

    /// The head row.
    pub fn stored_head_row(&self) -> Option<&HeadRow> {
        self.head_row.as_ref()
    }

    /// The calls so far.
    pub fn counts(&self) -> CallCounts {
        self.counts
    }
}

impl Kv for MemKv {
    fn kind(&self) -> StorageKind {
        self.kind
    }

    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        let limits = self.kind.limits();
        if keys.len() > limits.max_keys_per_call {
            self.counts.refused += 1;
            return Err(StoreError::read(format!(
                "storage limit: {} keys in one get (limit {})",
                keys.len(),
                limits.max_keys_per_call
            )));
        }
        self.counts.get_calls += match self.kind {
            StorageKind::Classic => 1,
            StorageKind::SqliteBacked => keys.len() as u64,
        };
        self.counts.get_keys += keys.len() as u64;
        Ok(keys
            .iter()
            .map(|k| self.data.get(&k.encode()).cloned())
            .collect())
    }

    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        self.counts.head_row_reads += 1;
        Ok(match self.kind {
            StorageKind::Classic => None,
            StorageKind::SqliteBacked => self.head_row.clone(),
        })
    }

    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        let calls = match plan.check(self.kind) {
            Ok(c) => c,
            Err(e) => {
                self.counts.refused += 1;
                return Err(e);
            }
        };
        count(&mut self.counts, plan, &calls);
        for (k, v) in &plan.puts {
            self.data.insert(k.encode(), v.clone());
        }
        for k in &plan.deletes {
            self.data.remove(&k.encode());
        }
        if let Some(row) = &plan.head_row {
            self.head_row = Some(row.clone());
        }
        Ok(())
    }
}

fn count(c: &mut CallCounts, plan: &WritePlan, calls: &Calls) {
    c.plans += 1;
    c.put_calls += calls.puts as u64;
    c.put_keys += plan.puts.len() as u64;
    c.delete_calls += calls.deletes as u64;
    c.delete_keys += plan.deletes.len() as u64;
    c.head_row_writes += calls.head_rows as u64;
    c.bytes_written += calls.bytes as u64;
    c.max_value_bytes = c.max_value_bytes.max(calls.max_value_bytes as u64);
}

#[derive(Debug, Default)]
struct FaultState {
    gets: u64,
    applies: u64,
    fail_get_at: Option<u64>,
    fail_apply_at: Option<(u64, Fault)>,
    fail_all_gets: bool,
    fail_all_applies: Option<Fault>,
}

/// The control panel of a [`FaultKv`]: keep a clone to arm faults after the KV was handed to a
/// store. Call numbers count from 1 and include calls made before arming.
#[derive(Clone, Debug, Default)]
pub struct KvFaults(Arc<Mutex<FaultState>>);

impl KvFaults {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fail the read (get or head row) numbered `n`.
    pub fn fail_get_at(&self, n: u64) {
        self.state().fail_get_at = Some(n);
    }

    /// Fail the plan numbered `n`, the way `fault` says.
    pub fn fail_apply_at(&self, n: u64, fault: Fault) {
        self.state().fail_apply_at = Some((n, fault));
    }

    /// Fail every read from now on until called with `false`.
    pub fn fail_all_gets(&self, on: bool) {
        self.state().fail_all_gets = on;
    }

    /// Fail every plan from now on, the way `fault` says, until called with `None`.
    pub fn fail_all_applies(&self, fault: Option<Fault>) {
        self.state().fail_all_applies = fault;
    }

    /// Reads so far.
    pub fn gets(&self) -> u64 {
        self.state().gets
    }

    /// Plans so far, failed ones included.
    pub fn applies(&self) -> u64 {
        self.state().applies
    }

    fn next_get_fails(&self) -> bool {
        let mut s = self.state();
        s.gets += 1;
        s.fail_all_gets || s.fail_get_at == Some(s.gets)
    }

    fn next_apply_fault(&self) -> Option<Fault> {
        let mut s = self.state();
        s.applies += 1;
        match s.fail_apply_at {
            Some((n, fault)) if n == s.applies => Some(fault),
            _ => s.fail_all_applies,
        }
    }
}

/// Wraps a KV and fails reads or plans when its [`KvFaults`] says so: a plan refused (nothing
/// written), or applied with its acknowledgement lost.
#[derive(Debug)]
pub struct FaultKv<K> {
    inner: K,
    faults: KvFaults,
}

impl<K: Kv> FaultKv<K> {
    /// Wraps `inner`; arm faults through the returned panel.
    pub fn new(inner: K) -> (FaultKv<K>, KvFaults) {
        let faults = KvFaults::default();
        (
            FaultKv {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// The wrapped KV.
    pub fn inner(&self) -> &K {
        &self.inner
    }
}

impl<K: Kv> Kv for FaultKv<K> {
    fn kind(&self) -> StorageKind {
        self.inner.kind()
    }

    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        if self.faults.next_get_fails() {
            return Err(StoreError::read(format!(
                "injected fault reading {} keys",
                keys.len()
            )));
        }
        self.inner.get(keys)
    }

    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        if self.faults.next_get_fails() {
            return Err(StoreError::read("injected fault reading the head row"));
        }
        self.inner.head_row()
    }

    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        match self.faults.next_apply_fault() {
            None => self.inner.apply(plan),
            Some(Fault::Error) => Err(StoreError::commit("injected fault: write refused")),
            Some(Fault::LostAck) => {
                self.inner.apply(plan)?;
                Err(StoreError::commit(
                    "injected fault: write applied, acknowledgement lost",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Generation;
    use dosql_pagestore::PageNo;

    fn page(n: u32) -> Key {
        Key::Page(Generation(0), PageNo::new(n).unwrap())
    }

    #[test]
    fn mem_kv_enforces_limits_and_counts_calls_as_production_would() {
        for kind in [StorageKind::Classic, StorageKind::SqliteBacked] {
            let mut kv = MemKv::new(kind);
            let mut plan = WritePlan::default();
            for n in 1..=200 {
                plan.puts.push((page(n), Value::Bytes(vec![n as u8])));
            }
            kv.apply(&plan).unwrap();
            let c = kv.counts();
            assert_eq!(c.put_keys, 200);
            assert_eq!(
                c.put_calls,
                if kind == StorageKind::Classic { 2 } else { 200 }
            );
            let keys: Vec<Key> = (1..=129).map(page).collect();
            assert!(kv.get(&keys).is_err(), "129 keys in one get");
            let got = kv.get(&keys[..2]).unwrap();
            assert_eq!(
                got,
                vec![Some(Value::Bytes(vec![1])), Some(Value::Bytes(vec![2]))]
            );
            let big = WritePlan {
                puts: vec![(page(1), Value::Bytes(vec![0; 200 * 1024]))],
                ..WritePlan::default()
            };
            let refused = kv.apply(&big);
            assert_eq!(refused.is_err(), kind == StorageKind::Classic);
        }
    }

    #[test]
    fn fault_kv_refuses_or_loses_the_acknowledgement() {
        let (mut kv, faults) = FaultKv::new(MemKv::new(StorageKind::Classic));
        let plan = WritePlan {
            puts: vec![(page(1), Value::Bytes(vec![1]))],
            ..WritePlan::default()
        };
        faults.fail_apply_at(1, Fault::Error);
        assert!(kv.apply(&plan).is_err());
        assert!(kv.inner().data().is_empty());
        faults.fail_apply_at(2, Fault::LostAck);
        assert!(kv.apply(&plan).is_err());
        assert_eq!(kv.inner().data().len(), 1, "applied, but told it failed");
        faults.fail_all_gets(true);
        assert!(kv.get(&[page(1)]).is_err());
    }
}
