//! A small pool of frame workers for the streaming writer and reader: frames
//! are independent, so a stream seals or opens several at once on worker
//! threads while the caller's thread does the IO, and releases the results
//! strictly in sequence order.
//!
//! - Bounded: at most `2 × workers` frames are in flight; their buffers are
//!   recycled (no allocation per frame once the pipeline is full) and are
//!   zeroizing, so plaintext is wiped when the pool is dropped.
//! - A worker that panics reports an error for its frame instead of
//!   leaving the caller waiting; the pool never panics.
//! - Dropping the pool closes the job queue and joins the workers.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zeroize::Zeroizing;

/// The work on one frame, in place: `(sequence number, is final, buffer)`;
/// returns where in the buffer the result starts (it ends at the end).
pub(crate) type FrameFn = dyn Fn(u32, bool, &mut Vec<u8>) -> Result<usize> + Send + Sync;

/// A buffer of the pool (zeroizing: it holds plaintext on one side).
pub(crate) type Buf = Zeroizing<Vec<u8>>;

struct Job {
    seq: u32,
    is_final: bool,
    buf: Buf,
}

/// A finished frame.
pub(crate) struct Done {
    pub(crate) seq: u32,
    pub(crate) is_final: bool,
    /// Where the result starts in `buf`.
    pub(crate) result: Result<usize>,
    pub(crate) buf: Buf,
}

/// The workers and the frames in flight.
pub(crate) struct FramePool {
    jobs: Option<SyncSender<Job>>,
    done: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    /// Finished frames that arrived before an earlier one.
    early: BTreeMap<u32, Done>,
    /// The sequence number released next.
    next: u32,
    in_flight: usize,
    max_in_flight: usize,
    spare: Vec<Buf>,
    buf_capacity: usize,
}

impl FramePool {
    /// Starts `workers` threads running `work`; the first frame released
    /// will be `first_seq`. `None` if no thread could be started (the
    /// caller goes on with one thread).
    pub(crate) fn start(
        workers: usize,
        work: Arc<FrameFn>,
        first_seq: u32,
        buf_capacity: usize,
    ) -> Option<FramePool> {
        let workers = workers.max(1);
        let max_in_flight = 2 * workers;
        let (job_tx, job_rx) = sync_channel::<Job>(max_in_flight);
        let (done_tx, done_rx) = sync_channel::<Done>(max_in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (rx, tx, work) = (job_rx.clone(), done_tx.clone(), work.clone());
            let spawned = std::thread::Builder::new()
                .name("strongroom-frames".into())
                .spawn(move || worker(&rx, &tx, &*work));
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        if handles.is_empty() {
            return None;
        }
        Some(FramePool {
            jobs: Some(job_tx),
            done: Some(done_rx),
            workers: handles,
            early: BTreeMap::new(),
            next: first_seq,
            in_flight: 0,
            max_in_flight,
            spare: Vec::new(),
            buf_capacity,
        })
    }

    /// True if no more frames may be submitted before one is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight >= self.max_in_flight
    }

    /// Frames submitted and not yet taken.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// A cleared buffer for the next frame.
    pub(crate) fn buffer(&mut self) -> Buf {
        match self.spare.pop() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Zeroizing::new(Vec::with_capacity(self.buf_capacity)),
        }
    }

    /// Gives the buffer of a taken frame back for reuse.
    pub(crate) fn recycle(&mut self, buf: Buf) {
        self.spare.push(buf);
    }

    /// Queues a frame (its input in `input`). The caller keeps at most
    /// [`FramePool::is_full`] frames in flight.
    pub(crate) fn submit(&mut self, seq: u32, is_final: bool, buf: Buf) -> Result<()> {
        if self.is_full() {
            return Err(Error::invalid("internal: too many frames in flight"));
        }
        let tx = self.jobs.as_ref().ok_or_else(gone)?;
        tx.send(Job { seq, is_final, buf }).map_err(|_| gone())?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next frame in sequence order, waiting for it; `None` if nothing
    /// is in flight.
    pub(crate) fn take(&mut self) -> Result<Option<Done>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        loop {
            if let Some(d) = self.early.remove(&self.next) {
                self.next = self.next.wrapping_add(1);
                self.in_flight -= 1;
                return Ok(Some(d));
            }
            let rx = self.done.as_ref().ok_or_else(gone)?;
            let d = rx.recv().map_err(|_| gone())?;
            self.early.insert(d.seq, d);
        }
    }
}

fn gone() -> Error {
    Error::invalid("internal: the frame workers stopped")
}

fn worker(jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>, work: &FrameFn) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut job) = job else { return };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work(job.seq, job.is_final, &mut job.buf)
        }))
        .unwrap_or_else(|_| Err(Error::invalid("internal: a frame worker panicked")));
        let d = Done {
            seq: job.seq,
            is_final: job.is_final,
            result,
            buf: job.buf,
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Closing both queues ends every worker after its current frame
        // (its result is then dropped, and zeroized, unsent).
        self.jobs = None;
        self.done = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_errors_and_panics_are_reported() {
        let work: Arc<FrameFn> = Arc::new(|seq, _fin, buf| {
            if seq == 7 {
                return Err(Error::DecryptionFailed);
            }
            if seq == 9 {
                panic!("test panic in a frame worker");
            }
            // Later frames finish first.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(20 - seq)));
            buf.push(seq as u8);
            Ok(1)
        });
        let mut pool = FramePool::start(3, work, 1, 8).unwrap();
        let mut got = Vec::new();
        let mut seq = 1u32;
        while seq <= 10 || pool.in_flight() > 0 {
            if seq <= 10 && !pool.is_full() {
                let mut b = pool.buffer();
                b.extend_from_slice(&[0xee, seq as u8 * 10]);
                pool.submit(seq, seq == 10, b).unwrap();
                seq += 1;
                continue;
            }
            let d = pool.take().unwrap().unwrap();
            let out = match d.result {
                Ok(start) => d.buf[start..].to_vec(),
                Err(_) => Vec::new(),
            };
            got.push((d.seq, out.len() == 2, out));
            pool.recycle(d.buf);
        }
        assert_eq!(got.len(), 10);
        for (k, (s, ok, out)) in got.iter().enumerate() {
            assert_eq!(*s, k as u32 + 1);
            assert_eq!(*ok, *s != 7 && *s != 9, "{s}");
            if *ok {
                assert_eq!(out, &vec![*s as u8 * 10, *s as u8]);
            }
        }
        assert!(pool.take().unwrap().is_none());
    }
}
