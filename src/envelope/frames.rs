//! A small pool of frame workers for the streaming writer and reader: frames
//! are independent, so a stream seals or opens several at once while the
//! caller's thread does the IO, and releases the results strictly in order.
//!
//! - Work goes in *jobs* of several consecutive frames (about
//!   [`JOB_BYTES`] of data, see [`frames_per_job`]) laid out in one buffer
//!   exactly as they are read or written, so a job costs one handoff and
//!   the frames are read into and written from that buffer directly.
//! - `threads` threads work: `threads - 1` worker threads, and the
//!   caller's thread, which does a queued job itself whenever it would
//!   otherwise wait for one (so on two cores two threads run, not three).
//! - Bounded: at most `2 × threads` jobs are in flight; their buffers are
//!   recycled (no allocation per job once the pipeline is full) and are
//!   zeroizing, so plaintext is wiped when the pool is dropped.
//! - A worker that panics reports an error for its job instead of leaving
//!   the caller waiting; the pool never panics.
//! - Dropping the pool stops the workers (after their current job) and
//!   joins them.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use zeroize::Zeroizing;

/// Data bytes a job aims at (and a task of the in-memory parallel paths).
pub(crate) const JOB_BYTES: usize = 1 << 20;

/// Most frames in one job (tiny frames).
const MAX_JOB_FRAMES: usize = 256;

/// Data bytes in flight a stream's jobs aim to stay under: with more than
/// 8 threads jobs get smaller than [`JOB_BYTES`].
const IN_FLIGHT_BYTES: usize = 16 << 20;

/// Frames per job for frames of `frame_len` bytes on `threads` threads:
/// about [`JOB_BYTES`] of data (less with more than 8 threads, so that the
/// `2 × threads` jobs in flight hold about 16 MiB), 1 to 256 frames.
pub(crate) fn frames_per_job(frame_len: usize, threads: usize) -> usize {
    let bytes = JOB_BYTES.min(IN_FLIGHT_BYTES / (2 * threads.max(1)));
    (bytes / frame_len.max(1)).clamp(1, MAX_JOB_FRAMES)
}

/// One frame of a job: where it is in the job's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) seq: u32,
    pub(crate) is_final: bool,
    /// Offset of the frame's bytes in the buffer.
    pub(crate) start: usize,
    /// Their length.
    pub(crate) len: usize,
}

/// The work on one frame, in place: `(buffer, frame)`.
pub(crate) type FrameFn = dyn Fn(&mut [u8], &Frame) -> Result<()> + Send + Sync;

/// A buffer of the pool (zeroizing: it holds plaintext on one side).
pub(crate) type Buf = Zeroizing<Vec<u8>>;

/// Consecutive frames in one buffer, handled by one thread.
pub(crate) struct Job {
    id: u64,
    pub(crate) buf: Buf,
    pub(crate) frames: Vec<Frame>,
    /// After the work: how many frames (from the first) succeeded.
    pub(crate) done: usize,
    /// After the work: the error of frame `done`, if one failed.
    pub(crate) error: Option<Error>,
}

impl Job {
    /// A job with no buffer and no frames, to stand in for one moved out.
    pub(crate) fn placeholder() -> Job {
        Job {
            id: 0,
            buf: Zeroizing::new(Vec::new()),
            frames: Vec::new(),
            done: 0,
            error: None,
        }
    }

    /// Runs `work` on each frame in order, stopping at the first failure
    /// (a panic is a failure).
    fn run(&mut self, work: &FrameFn) {
        self.done = 0;
        self.error = None;
        for fr in &self.frames {
            let buf = &mut self.buf;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(buf, fr)))
                .unwrap_or_else(|_| Err(Error::invalid("internal: a frame worker panicked")));
            if let Err(e) = r {
                self.error = Some(e);
                return;
            }
            self.done += 1;
        }
    }
}

struct State {
    /// Submitted, not started.
    queue: VecDeque<Job>,
    /// Finished, not yet taken.
    done: BTreeMap<u64, Job>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool closes.
    queued: Condvar,
    /// Signalled when a job is finished.
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The workers and the jobs in flight.
pub(crate) struct FramePool {
    shared: Arc<Shared>,
    work: Arc<FrameFn>,
    workers: Vec<JoinHandle<()>>,
    next_id: u64,
    next_take: u64,
    in_flight: usize,
    max_in_flight: usize,
    spare: Vec<Job>,
    buf_len: usize,
}

impl FramePool {
    /// Starts `threads - 1` worker threads running `work` (the caller's
    /// thread is the last one); job buffers are `buf_len` bytes. `None` if
    /// `threads < 2` or no thread could be started (the caller goes on
    /// with one thread).
    pub(crate) fn start(threads: usize, work: Arc<FrameFn>, buf_len: usize) -> Option<FramePool> {
        if threads < 2 {
            return None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                done: BTreeMap::new(),
                closed: false,
            }),
            queued: Condvar::new(),
            finished: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads - 1);
        for _ in 1..threads {
            let (shared, work) = (shared.clone(), work.clone());
            let spawned = std::thread::Builder::new()
                .name("strongroom-frames".into())
                .spawn(move || worker(&shared, &*work));
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        if handles.is_empty() {
            return None;
        }
        Some(FramePool {
            shared,
            work,
            workers: handles,
            next_id: 0,
            next_take: 0,
            in_flight: 0,
            max_in_flight: 2 * threads,
            spare: Vec::new(),
            buf_len,
        })
    }

    /// True if no more jobs may be submitted before one is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight >= self.max_in_flight
    }

    /// Jobs submitted and not yet taken.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// An empty job (no frames) whose buffer is `buf_len` bytes (contents
    /// unspecified: a recycled buffer keeps its old bytes until
    /// overwritten, and is wiped on drop).
    pub(crate) fn job(&mut self) -> Job {
        match self.spare.pop() {
            Some(mut j) => {
                j.frames.clear();
                j.done = 0;
                j.error = None;
                j
            }
            None => Job {
                id: 0,
                buf: Zeroizing::new(vec![0u8; self.buf_len]),
                frames: Vec::new(),
                done: 0,
                error: None,
            },
        }
    }

    /// Gives a taken job back for reuse.
    pub(crate) fn recycle(&mut self, job: Job) {
        self.spare.push(job);
    }

    /// Queues a job. The caller keeps at most [`FramePool::is_full`] jobs
    /// in flight.
    pub(crate) fn submit(&mut self, mut job: Job) -> Result<()> {
        if self.is_full() {
            return Err(Error::invalid("internal: too many frames in flight"));
        }
        job.id = self.next_id;
        self.next_id += 1;
        self.shared.lock().queue.push_back(job);
        self.shared.queued.notify_one();
        self.in_flight += 1;
        Ok(())
    }

    /// The next job in submission order, done, waiting for it (and doing
    /// queued jobs on this thread meanwhile); `None` if nothing is in
    /// flight.
    pub(crate) fn take(&mut self) -> Result<Option<Job>> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        let mut st = self.shared.lock();
        loop {
            if let Some(j) = st.done.remove(&self.next_take) {
                self.next_take += 1;
                self.in_flight -= 1;
                return Ok(Some(j));
            }
            if let Some(mut j) = st.queue.pop_front() {
                drop(st);
                j.run(&*self.work);
                st = self.shared.lock();
                st.done.insert(j.id, j);
                continue;
            }
            if self.workers.iter().all(|h| h.is_finished()) {
                // Cannot happen while the pool is open; never wait forever.
                return Err(gone());
            }
            st = self
                .shared
                .finished
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn gone() -> Error {
    Error::invalid("internal: the frame workers stopped")
}

fn worker(shared: &Shared, work: &FrameFn) {
    let mut st = shared.lock();
    loop {
        if st.closed {
            return;
        }
        let Some(mut j) = st.queue.pop_front() else {
            st = shared.queued.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(st);
        j.run(work);
        st = shared.lock();
        st.done.insert(j.id, j);
        shared.finished.notify_one();
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // Workers stop after their current job; every buffer (queued,
        // finished, spare) is wiped as it is dropped.
        self.shared.lock().closed = true;
        self.shared.queued.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_come_back_in_order_and_errors_and_panics_are_reported() {
        // A frame is one byte b at `start`; the work writes b * 2.
        let work: Arc<FrameFn> = Arc::new(|buf, fr| {
            if fr.seq == 17 {
                return Err(Error::DecryptionFailed);
            }
            if fr.seq == 33 {
                panic!("test panic in a frame worker");
            }
            // Later jobs finish first.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(50 - fr.seq) / 8));
            buf[fr.start] = buf[fr.start].wrapping_mul(2);
            Ok(())
        });
        for threads in [2, 3, 5] {
            let mut pool = FramePool::start(threads, work.clone(), 4).unwrap();
            let mut got = Vec::new();
            let mut seq = 1u32;
            // Jobs of 4 one-byte frames, seq 1..=40.
            while seq <= 40 || pool.in_flight() > 0 {
                if seq <= 40 && !pool.is_full() {
                    let mut j = pool.job();
                    for i in 0..4 {
                        j.buf[i] = (seq + i as u32) as u8;
                        j.frames.push(Frame {
                            seq: seq + i as u32,
                            is_final: seq + i as u32 == 40,
                            start: i,
                            len: 1,
                        });
                    }
                    pool.submit(j).unwrap();
                    seq += 4;
                    continue;
                }
                let j = pool.take().unwrap().unwrap();
                for fr in &j.frames[..j.done] {
                    got.push((fr.seq, j.buf[fr.start]));
                }
                if let Some(fr) = j.frames.get(j.done) {
                    assert!(j.error.is_some());
                    got.push((fr.seq, 0));
                }
                pool.recycle(j);
            }
            assert!(pool.take().unwrap().is_none());
            // In order; frames after a failure in the same job not done.
            let seqs: Vec<u32> = got.iter().map(|g| g.0).collect();
            let expect: Vec<u32> = (1..=40).filter(|s| !(18..=20).contains(s)).collect();
            let expect: Vec<u32> = expect.into_iter().filter(|s| *s < 34 || *s > 36).collect();
            assert_eq!(seqs, expect, "{threads} threads");
            for (s, v) in got {
                let want = if s == 17 || s == 33 { 0 } else { (s as u8) * 2 };
                assert_eq!(v, want, "frame {s}");
            }
        }
    }

    #[test]
    fn dropping_a_busy_pool_joins_its_workers() {
        let work: Arc<FrameFn> = Arc::new(|_, _| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(())
        });
        let mut pool = FramePool::start(2, work, 1).unwrap();
        while !pool.is_full() {
            let mut j = pool.job();
            j.frames.push(Frame {
                seq: 1,
                is_final: false,
                start: 0,
                len: 1,
            });
            pool.submit(j).unwrap();
        }
        assert!(pool.submit(Job::placeholder()).is_err());
        drop(pool);
    }

    #[test]
    fn frames_per_job_is_bounded() {
        for threads in [1, 2, 8] {
            assert_eq!(frames_per_job(65_536, threads), 16);
            assert_eq!(frames_per_job(1, threads), MAX_JOB_FRAMES);
            assert_eq!(frames_per_job(1 << 24, threads), 1);
            assert_eq!(frames_per_job(JOB_BYTES + 1, threads), 1);
        }
        // Many threads: smaller jobs, about 16 MiB in flight in all.
        assert_eq!(frames_per_job(65_536, 16), 8);
        assert_eq!(frames_per_job(65_536, 64), 2);
        assert_eq!(frames_per_job(65_536, 1000), 1);
    }
}
