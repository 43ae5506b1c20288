//! Database commits off the async workers.
//!
//! A redb commit fsyncs, which takes milliseconds (far more on a busy
//! disk); made on a tokio worker it stalls every task scheduled there, and
//! with two workers a write flood stalls the node. So each database has a
//! writer thread of its own ([`DbWriter`]): callers hand it a write and go
//! on; it commits whatever has queued up since its last commit as one
//! transaction (a burst of writes costs one fsync, not one each). Readers
//! never touch the database after open: stores serve reads from memory and
//! update memory before they queue the write.
//!
//! Each write gets a [`Ticket`]. Data a user gave us is acknowledged only
//! once it is on disk: the caller waits for its ticket
//! ([`DbWriter::durable`]), off the worker threads. Data peers gave us is
//! not waited for (it has other copies); if the backlog passes its bound,
//! [`DbWriter::try_write`] refuses rather than queue without limit, and
//! the store answers the peer "full".
//!
//! A failed commit is logged, and the tickets of that batch report the
//! error to whoever waits for them; later batches are tried afresh.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex};

use redb::{Database, WriteTransaction};
use tokio::sync::watch;

/// A write's place in the commit order.
pub type Ticket = u64;

/// One write: applied to the batch's transaction by the writer thread.
pub type Write = Box<dyn FnOnce(&WriteTransaction) -> Result<(), String> + Send>;

/// Writes waiting for the writer, at most; past this, [`DbWriter::try_write`]
/// refuses.
pub const MAX_BACKLOG: usize = 65_536;
/// Writes one transaction takes at most.
const MAX_BATCH: usize = 4096;
/// Failed batches remembered for the tickets in them.
const FAILURES_KEPT: usize = 64;

#[derive(Clone, Debug, Default)]
struct Committed {
    /// Every ticket up to this one has been tried.
    through: Ticket,
    /// Ticket ranges of failed batches (oldest dropped first), and why.
    failed: VecDeque<(Ticket, Ticket, String)>,
}

struct Queue {
    next: Ticket,
    /// `None` once dropping: the thread drains what is queued and ends.
    tx: Option<mpsc::Sender<(Ticket, Write)>>,
}

struct Shared {
    queue: Mutex<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    /// Waits for what is queued to be committed, and for the thread to
    /// let go of the database (so it can be opened again at once).
    fn drop(&mut self) {
        self.queue.get_mut().map(|q| q.tx.take()).ok();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread of one database. Cheap to clone; dropping the last
/// clone waits for the queued writes (shutdown) and ends the thread.
#[derive(Clone)]
pub struct DbWriter {
    shared: Arc<Shared>,
    committed: watch::Receiver<Committed>,
}

/// The write could not be queued or committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the database writer is {MAX_BACKLOG} writes behind")]
    Backlog,
    #[error("the database writer has stopped")]
    Stopped,
    #[error("commit failed: {0}")]
    Commit(String),
}

impl DbWriter {
    /// Starts the writer thread for `db`.
    pub fn start(db: Database, name: &str) -> std::io::Result<DbWriter> {
        let (tx, rx) = mpsc::channel::<(Ticket, Write)>();
        let (done_tx, done_rx) = watch::channel(Committed::default());
        let thread = std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    let (from, n) = (batch[0].0, batch.len());
                    let to = from + n as u64 - 1;
                    let result = commit(&db, batch);
                    done_tx.send_modify(|c| {
                        c.through = to;
                        if let Err(e) = result {
                            tracing::warn!("database commit of {n} writes failed: {e}");
                            if c.failed.len() == FAILURES_KEPT {
                                c.failed.pop_front();
                            }
                            c.failed.push_back((from, to, e));
                        }
                    });
                }
            })?;
        Ok(DbWriter {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    next: 1,
                    tx: Some(tx),
                }),
                thread: Some(thread),
            }),
            committed: done_rx,
        })
    }

    /// Queues `write` whatever the backlog (for a user's own data, which
    /// the user paces).
    pub fn write(&self, write: Write) -> Result<Ticket, WriteError> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = q.next;
        let tx = q.tx.as_ref().ok_or(WriteError::Stopped)?;
        tx.send((ticket, write)).map_err(|_| WriteError::Stopped)?;
        q.next += 1;
        Ok(ticket)
    }

    /// Queues `write` unless [`MAX_BACKLOG`] writes are waiting (for data
    /// peers send, which must not queue without bound).
    pub fn try_write(&self, write: Write) -> Result<Ticket, WriteError> {
        if self.backlog() >= MAX_BACKLOG {
            return Err(WriteError::Backlog);
        }
        self.write(write)
    }

    /// Writes queued and not yet committed.
    pub fn backlog(&self) -> usize {
        let through = self.committed.borrow().through;
        self.last_ticket().saturating_sub(through) as usize
    }

    /// The ticket of the last write queued (0: none yet).
    pub fn last_ticket(&self) -> Ticket {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next
            - 1
    }

    /// Waits until `ticket` is committed, or says why it was not.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), WriteError> {
        let mut rx = self.committed.clone();
        let c = rx
            .wait_for(|c| c.through >= ticket)
            .await
            .map_err(|_| WriteError::Stopped)?;
        c.outcome(ticket)
    }

    /// `Some` once `ticket` has been tried: no need to wait.
    pub fn outcome(&self, ticket: Ticket) -> Option<Result<(), WriteError>> {
        let c = self.committed.borrow();
        (c.through >= ticket).then(|| c.outcome(ticket))
    }
}

impl Committed {
    fn outcome(&self, ticket: Ticket) -> Result<(), WriteError> {
        match self
            .failed
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&ticket))
        {
            Some((_, _, e)) => Err(WriteError::Commit(e.clone())),
            None => Ok(()),
        }
    }
}

fn commit(db: &Database, batch: Vec<(Ticket, Write)>) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    for (_, w) in batch {
        w(&tx)?;
    }
    tx.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(dir: &std::path::Path) -> Database {
        Database::create(dir.join("w.redb")).unwrap()
    }

    fn row(i: u64) -> Write {
        Box::new(move |tx| {
            let mut t = tx.open_table(T).map_err(|e| e.to_string())?;
            t.insert(i, i).map(|_| ()).map_err(|e| e.to_string())
        })
    }

    /// A write that holds the writer (a disk that has stopped) until
    /// released.
    fn stall() -> (Write, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let w: Write = Box::new(move |_| {
            let _ = rx.recv();
            Ok(())
        });
        (w, tx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_return_at_once_while_the_disk_is_stalled_and_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let w = DbWriter::start(open(dir.path()), "test").unwrap();
        let (gate, release) = stall();
        w.write(gate).unwrap();
        // On the only worker thread: none of these waits for the disk.
        let tickets: Vec<Ticket> = (0..1000).map(|i| w.try_write(row(i)).unwrap()).collect();
        assert!(tickets.iter().all(|t| w.outcome(*t).is_none()));
        assert!(w.backlog() >= 1000);
        release.send(()).unwrap();
        w.durable(*tickets.last().unwrap()).await.unwrap();
        assert!(matches!(w.outcome(tickets[0]), Some(Ok(()))));
        assert_eq!(w.backlog(), 0);
        drop(w);
        // Dropping the last handle committed everything and let go of the file.
        let db = open(dir.path());
        let n = db
            .begin_read()
            .unwrap()
            .open_table(T)
            .unwrap()
            .len()
            .unwrap();
        assert_eq!(n, 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn peers_writes_are_refused_past_the_backlog_and_a_failed_commit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let w = DbWriter::start(open(dir.path()), "test").unwrap();
        let (gate, release) = stall();
        w.write(gate).unwrap();
        for i in 0..MAX_BACKLOG as u64 - 1 {
            w.try_write(row(i)).unwrap();
        }
        assert!(matches!(w.try_write(row(0)), Err(WriteError::Backlog)));
        // The user's own data is still taken.
        let own = w.write(row(1)).unwrap();
        release.send(()).unwrap();
        w.durable(own).await.unwrap();
        // A write that fails fails its batch, and only that batch.
        let bad = w.write(Box::new(|_| Err("disk on fire".into()))).unwrap();
        let err = w.durable(bad).await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        let good = w.write(row(2)).unwrap();
        w.durable(good).await.unwrap();
    }
}
