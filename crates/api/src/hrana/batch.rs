//! Hrana batches: steps that run in order on one stream, each under an optional condition on
//! the steps before it (and, from Hrana 3, on whether the stream is in autocommit).

use dosql_vfs::Database;
use rusqlite::Connection;

use super::proto::{Batch, BatchCond, BatchResult, ProtoError, proto_error};
use super::stream::Stream;
use super::{Version, need_v3};

impl Stream {
    /// Runs a batch: each step whose condition holds, in order.
    pub(super) fn batch(
        &mut self,
        db: &Database,
        version: Version,
        batch: &Batch,
    ) -> Result<BatchResult, ProtoError> {
        for (i, step) in batch.steps.iter().enumerate() {
            if let Some(cond) = &step.condition {
                cond.check(i, version)?;
            }
        }
        let n = batch.steps.len();
        let mut result = BatchResult {
            step_results: Vec::with_capacity(n),
            step_errors: Vec::with_capacity(n),
        };
        for step in &batch.steps {
            let go = step
                .condition
                .as_ref()
                .is_none_or(|c| c.eval(&result, &self.conn));
            let (ok, err) = if go {
                let outcome = self.execute(db, &step.stmt);
                self.settle();
                match outcome {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(e)),
                }
            } else {
                (None, None)
            };
            result.step_results.push(ok);
            result.step_errors.push(err);
        }
        Ok(result)
    }
}

impl BatchCond {
    /// A condition of step `at` may only look at steps before it.
    fn check(&self, at: usize, version: Version) -> Result<(), ProtoError> {
        match self {
            BatchCond::Ok { step } | BatchCond::Error { step } if *step >= at => Err(proto_error(
                "PROTOCOL_ERROR",
                format!(
                    "the condition of batch step {at} refers to step {step}, which does \
                         not run before it"
                ),
            )),
            BatchCond::Ok { .. } | BatchCond::Error { .. } => Ok(()),
            BatchCond::Not { cond } => cond.check(at, version),
            BatchCond::And { conds } | BatchCond::Or { conds } => {
                conds.iter().try_for_each(|c| c.check(at, version))
            }
            BatchCond::IsAutocommit => need_v3(version, "the is_autocommit condition"),
        }
    }

    fn eval(&self, done: &BatchResult, conn: &Connection) -> bool {
        match self {
            BatchCond::Ok { step } => done.step_results.get(*step).is_some_and(Option::is_some),
            BatchCond::Error { step } => done.step_errors.get(*step).is_some_and(Option::is_some),
            BatchCond::Not { cond } => !cond.eval(done, conn),
            BatchCond::And { conds } => conds.iter().all(|c| c.eval(done, conn)),
            BatchCond::Or { conds } => conds.iter().any(|c| c.eval(done, conn)),
            BatchCond::IsAutocommit => conn.is_autocommit(),
        }
    }
}
