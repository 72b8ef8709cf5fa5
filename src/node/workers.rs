//! The worker pool: a few threads for the work that blocks (HTTP downloads, proof
//! computation). The loop hands them [`Job`]s over a channel; each result comes back over
//! another channel, and a [`mio::Waker`] wakes the loop to read it. A worker never touches
//! the engine, the store or the chain: it owns only its job.
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

use super::data::{self, DownloadJob};
use super::prover::{ProofJob, Prover};
use crate::market::Groth16Proof;
use crate::sales::engine::Ticket;

/// Work for a worker thread.
pub enum Job {
    /// Download a slot's data.
    Download(Ticket, DownloadJob),
    /// Compute a proof.
    Prove(Ticket, ProofJob),
}

/// What a worker reports.
#[derive(Debug)]
pub enum Done {
    /// Bytes of a running download stored since its last report.
    Progress(Ticket, u64),
    /// A download ended.
    Downloaded(Ticket, Result<(), String>),
    /// A proof was computed (or not).
    Proved(Ticket, Result<Box<Groth16Proof>, String>),
}

/// The pool.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
}

impl Workers {
    /// Starts `n` threads (at least one) that report through `waker`.
    pub fn start(n: usize, prover: Arc<dyn Prover>, waker: Arc<Waker>) -> std::io::Result<Workers> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, results) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..n.max(1) {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let waker = waker.clone();
            let prover = prover.clone();
            std::thread::Builder::new()
                .name(format!("codex-worker-{i}"))
                .spawn(move || worker(job_rx, done_tx, waker, prover))?;
        }
        Ok(Workers {
            jobs: Some(jobs),
            results,
        })
    }

    /// Queues a job.
    pub fn submit(&mut self, job: Job) {
        if let Some(tx) = &self.jobs {
            // The receiving threads live as long as the pool; a send fails only when every
            // worker died, and then the job's sale waits for its timeout like a lost answer.
            if tx.send(job).is_err() {
                log::error!("no worker thread is left to take a job");
            }
        }
    }

    /// The next result, if one is waiting.
    pub fn try_recv(&self) -> Option<Done> {
        self.results.try_recv().ok()
    }

    /// Stops handing out jobs (the caller sets the cancel flags of the running downloads).
    pub fn shutdown(&mut self) {
        self.jobs = None;
    }
}

/// Attempts a download gets when it fails transiently (connection refused or reset, a
/// stall, a 5xx, 408 or 429 answer): the first one and three more, after 1, 2 and 4 s.
const DOWNLOAD_ATTEMPTS: u32 = 4;

/// Downloads, trying again after a transient failure. A new attempt writes the slot's file
/// from its start, so it reports only the bytes beyond what earlier attempts reported: the
/// reservation's downloaded count never counts a byte twice.
fn download_with_retries(job: &DownloadJob, progress: &mut dyn FnMut(u64)) -> Result<(), String> {
    let mut reported = 0u64;
    let mut attempt = 0;
    loop {
        let mut this = 0u64;
        let res = data::download(job, &mut |bytes| {
            this += bytes;
            // Report only bytes beyond what earlier attempts already reported.
            if this > reported {
                progress(this - reported);
                reported = this;
            }
        });
        match res {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt + 1 < DOWNLOAD_ATTEMPTS => {
                attempt += 1;
                let wait = Duration::from_secs(1 << (attempt - 1));
                log::warn!(target: "codex::sales", "{e}; trying again in {} s", wait.as_secs());
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if job.cancel.load(Ordering::Relaxed) {
                        return Err("cancelled".into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn worker(
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    waker: Arc<Waker>,
    prover: Arc<dyn Prover>,
) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let report = |d: Done| {
            let _ = done.send(d);
            let _ = waker.wake();
        };
        match job {
            Job::Download(ticket, job) => {
                let res = download_with_retries(&job, &mut |bytes| {
                    report(Done::Progress(ticket, bytes));
                });
                report(Done::Downloaded(ticket, res));
            }
            Job::Prove(ticket, job) => {
                let res = prover.prove(&job).map(Box::new).map_err(|e| e.to_string());
                report(Done::Proved(ticket, res));
            }
        }
    }
}
