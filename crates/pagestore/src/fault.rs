//! A store wrapper that fails on command, for atomicity and recovery tests.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Commit, Head, Page, PageNo, PageSize, PageStore, StoreError};

/// How an injected commit failure behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The commit is refused: nothing reaches the inner store.
    Error,
    /// The commit reaches the inner store, but the caller is told it failed: the ambiguous
    /// outcome of a write whose acknowledgement was lost on the way back.
    LostAck,
}

#[derive(Debug, Default)]
struct PlanState {
    reads: u64,
    commits: u64,
    fail_read_at: Option<u64>,
    fail_commit_at: Option<(u64, Fault)>,
    fail_all_reads: bool,
    fail_all_commits: Option<Fault>,
}

/// The shared control panel of a [`FaultStore`]: keep a clone to arm faults after the store
/// was handed to a database. Call numbers count from 1 and include calls made before arming.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan(Arc<Mutex<PlanState>>);

impl FaultPlan {
    fn state(&self) -> MutexGuard<'_, PlanState> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fail the read call numbered `n` (page reads and batch reads each count once).
    pub fn fail_read_at(&self, n: u64) {
        self.state().fail_read_at = Some(n);
    }

    /// Fail the commit call numbered `n`, the way `fault` says.
    pub fn fail_commit_at(&self, n: u64, fault: Fault) {
        self.state().fail_commit_at = Some((n, fault));
    }

    /// Fail every read from now on until called with `false`.
    pub fn fail_all_reads(&self, on: bool) {
        self.state().fail_all_reads = on;
    }

    /// Fail every commit from now on, the way `fault` says, until called with `None`.
    pub fn fail_all_commits(&self, fault: Option<Fault>) {
        self.state().fail_all_commits = fault;
    }

    /// Read calls so far.
    pub fn reads(&self) -> u64 {
        self.state().reads
    }

    /// Commit calls so far, failed ones included.
    pub fn commits(&self) -> u64 {
        self.state().commits
    }

    fn next_read_fails(&self) -> bool {
        let mut s = self.state();
        s.reads += 1;
        s.fail_all_reads || s.fail_read_at == Some(s.reads)
    }

    fn next_commit_fault(&self) -> Option<Fault> {
        let mut s = self.state();
        s.commits += 1;
        match s.fail_commit_at {
            Some((n, fault)) if n == s.commits => Some(fault),
            _ => s.fail_all_commits,
        }
    }
}

/// Wraps a store and fails reads or commits when its [`FaultPlan`] says so.
#[derive(Debug)]
pub struct FaultStore<S> {
    inner: S,
    plan: FaultPlan,
}

impl<S: PageStore> FaultStore<S> {
    /// Wraps `inner`; arm faults through the returned plan (or [`FaultStore::plan`]).
    pub fn new(inner: S) -> (FaultStore<S>, FaultPlan) {
        let plan = FaultPlan::default();
        (
            FaultStore {
                inner,
                plan: plan.clone(),
            },
            plan,
        )
    }

    /// The control panel.
    pub fn plan(&self) -> FaultPlan {
        self.plan.clone()
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: PageStore> PageStore for FaultStore<S> {
    fn page_size(&self) -> PageSize {
        self.inner.page_size()
    }

    fn head(&mut self) -> Result<Head, StoreError> {
        self.inner.head()
    }

    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        if self.plan.next_read_fails() {
            return Err(StoreError::read(format!(
                "injected fault reading page {no}"
            )));
        }
        self.inner.read_page(no)
    }

    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        if self.plan.next_read_fails() {
            return Err(StoreError::read(format!(
                "injected fault reading {} pages",
                nos.len()
            )));
        }
        self.inner.read_pages(nos)
    }

    fn commit(&mut self, commit: Commit) -> Result<Head, StoreError> {
        match self.plan.next_commit_fault() {
            None => self.inner.commit(commit),
            Some(Fault::Error) => Err(StoreError::commit("injected fault: commit refused")),
            Some(Fault::LostAck) => {
                self.inner.commit(commit)?;
                Err(StoreError::commit(
                    "injected fault: commit applied but acknowledgement lost",
                ))
            }
        }
    }
}
