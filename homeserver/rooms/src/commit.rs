//! Group commit across rooms: one transaction for the batches of many room actors.
//!
//! Each room actor already batches its own queued events into one plan. With many rooms active at
//! once, committing each room's plan separately would make the database commit (the fsync on
//! PostgreSQL, the single writer on SQLite) the bottleneck. Actors therefore hand their plans to one
//! committer task, which writes everything that is waiting in a single transaction and then answers
//! every actor. If that transaction fails, it retries the plans one by one, so one bad plan (say, an
//! alias someone else took) fails only its own room's batch.
//!
//! Ordering per room is unaffected: an actor waits for its plan's answer before it writes again.

use homeserver_storage::{Db, StorageError, persist::PersistPlan};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Most plans written in one transaction.
const MAX_PLANS: usize = 64;

type Job = (PersistPlan, oneshot::Sender<Result<(), StorageError>>);

#[derive(Clone)]
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    pub(crate) fn spawn(db: Db) -> Committer {
        let (jobs, rx) = mpsc::channel::<Job>(1024);
        tokio::spawn(run(db, rx));
        Committer { jobs }
    }

    /// Persists a plan; returns once it is committed (or failed).
    pub(crate) async fn commit(&self, plan: PersistPlan) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send((plan, reply)).await.is_err() {
            return Err(StorageError::Corrupt("the committer stopped".into()));
        }
        answer.await.unwrap_or_else(|_| Err(StorageError::Corrupt("the committer stopped".into())))
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_PLANS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if jobs.len() == 1 {
            let (plan, reply) = jobs.pop().expect("one job");
            let _ = reply.send(db.persist(&plan).await);
            continue;
        }
        let (plans, replies): (Vec<PersistPlan>, Vec<_>) = jobs.into_iter().unzip();
        match db.persist_many(&plans).await {
            Ok(()) => {
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(err) => {
                debug!(error = %err, plans = plans.len(), "group commit failed; committing plans one by one");
                for (plan, reply) in plans.iter().zip(replies) {
                    let _ = reply.send(db.persist(plan).await);
                }
            }
        }
    }
}
