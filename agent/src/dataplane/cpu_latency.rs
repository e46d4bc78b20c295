//! Keeping the CPUs out of deep idle while traffic flows (a PM QoS
//! CPU-latency request, `/dev/cpu_dma_latency`).
//!
//! Most of a ping's time through two agents on an idle virtual machine was
//! not the agents' work but waking halted CPUs: the agent's packet thread
//! and every process the packet meets sleep between packets, and a halted
//! vCPU is woken through the hypervisor (40 µs per cross-CPU wake-up on the
//! benchmark VM, 5 µs when idle CPUs poll instead of halting; bench/ROUNDS.md,
//! "Round five"). So for a window after each batch of packets the agent asks
//! the kernel for a CPU wake-up latency of 0 µs: idle CPUs then poll in the
//! kernel's idle loop (which gives way at once to anything runnable) rather
//! than halt. When the window passes with no packet, the request is
//! relaxed: an agent without traffic leaves the CPUs' idle policy alone.
//! NIC drivers do the same while traffic flows (e1000e's `pm_qos` request).
//!
//! The request lasts while the file is open: it ends with the process,
//! however the agent stops. One request per agent, shared by its queues.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The kernel's CPU-latency request device.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// How long the request lasts after the last packet by default: long enough
/// to span the gaps of interactive traffic (a ping every 10 ms, a
/// request/response exchange), short enough that a host whose tunnels carry
/// only keepalives polls for a few hundredths of a second at a time.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);

/// The value asked for while traffic flows (microseconds): no idle state with
/// any exit latency, i.e. poll.
const HOLD_US: i32 = 0;
/// The value that asks nothing (the kernel's default, "no constraint").
const RELAX_US: i32 = 2_000_000_000;

/// What the metrics show.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HoldStatus {
    /// The request is in force now.
    pub held: bool,
    /// Seconds it was in force, in total (up to the last release).
    pub held_seconds: f64,
    /// Times it was made.
    pub holds: u64,
}

/// The agent's CPU-latency request.
pub struct CpuLatencyHold {
    epoch: Instant,
    window: u64,
    /// Nanoseconds after `epoch` of the last batch (0: none yet).
    last: AtomicU64,
    held: AtomicBool,
    state: Mutex<State>,
}

struct State {
    /// None: disabled (a zero window, or the device could not be opened).
    file: Option<File>,
    since: u64,
    held_ns: u64,
    holds: u64,
}

impl CpuLatencyHold {
    /// A hold on [`DEVICE`] for `window` after each batch; zero: none. A
    /// device that cannot be opened (no root, a container without it) costs
    /// only the latency: the agent runs without it.
    pub fn open(window: Duration) -> Self {
        if window.is_zero() {
            return Self::with_file(None, window);
        }
        match Self::open_device(Path::new(DEVICE)) {
            Ok(file) => Self::with_file(Some(file), window),
            Err(e) => {
                tracing::warn!(device = DEVICE, error = %e, "no CPU-latency request: idle CPUs may halt between packets (more latency)");
                Self::with_file(None, window)
            }
        }
    }

    /// No hold at all.
    pub fn off() -> Self {
        Self::with_file(None, Duration::ZERO)
    }

    /// Opens `path` for requests (the device, or a file in tests).
    pub fn open_device(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
    }

    /// A hold that writes its requests to `file` (None: disabled).
    pub fn with_file(file: Option<File>, window: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            held: AtomicBool::new(false),
            state: Mutex::new(State { file, since: 0, held_ns: 0, holds: 0 }),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A batch of packets moved: the request holds for another window (made
    /// now if it was not in force).
    pub fn touch(&self) {
        if self.window == 0 {
            return;
        }
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.held.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if self.held.load(Ordering::Relaxed) {
            return;
        }
        let Some(file) = state.file.as_mut() else { return };
        match write_request(file, HOLD_US) {
            Ok(()) => {
                state.since = now;
                state.holds += 1;
                self.held.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "CPU-latency request refused; going on without it");
                state.file = None;
            }
        }
    }

    /// Before a packet thread sleeps: how long the request still holds (the
    /// sleep should end then, to relax it), or None when it is not in force
    /// (relaxed now if its window has passed).
    pub fn remaining(&self) -> Option<Duration> {
        if !self.held.load(Ordering::Relaxed) {
            return None;
        }
        let left = |now: u64, last: u64| self.window.checked_sub(now.saturating_sub(last)).filter(|l| *l > 0);
        if let Some(l) = left(self.now(), self.last.load(Ordering::Relaxed)) {
            return Some(Duration::from_nanos(l));
        }
        let mut state = self.lock();
        let now = self.now();
        // Another thread may have moved a batch (or relaxed it) meanwhile.
        if !self.held.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(l) = left(now, self.last.load(Ordering::Relaxed)) {
            return Some(Duration::from_nanos(l));
        }
        self.held.store(false, Ordering::Relaxed);
        state.held_ns += now.saturating_sub(state.since);
        if let Some(file) = state.file.as_mut()
            && let Err(e) = write_request(file, RELAX_US)
        {
            // Closing the file withdraws the request as well.
            tracing::warn!(error = %e, "cannot relax the CPU-latency request; withdrawing it");
            state.file = None;
        }
        None
    }

    pub fn status(&self) -> HoldStatus {
        let state = self.lock();
        let held = self.held.load(Ordering::Relaxed);
        let open = if held { self.now().saturating_sub(state.since) } else { 0 };
        HoldStatus { held, held_seconds: (state.held_ns + open) as f64 / 1e9, holds: state.holds }
    }
}

/// One request: the value as a native-endian 32-bit integer, in one write.
fn write_request(file: &mut File, us: i32) -> io::Result<()> {
    file.write_all(&us.to_ne_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{fs, thread};

    use super::*;

    /// A file in a new temporary directory standing in for the device: its
    /// path (the directory lives as long as the returned guard) and the
    /// request file (`append`: each request is added, as the test reads
    /// them; read-only when `writable` is false, so every request fails).
    pub(crate) fn request_file(writable: bool) -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req");
        fs::write(&path, b"").unwrap();
        let file = if writable { OpenOptions::new().append(true).open(&path) } else { File::open(&path) }.unwrap();
        (dir, path, file)
    }

    fn requests(path: &Path) -> Vec<i32> {
        fs::read(path).unwrap().chunks(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn held_while_batches_come_relaxed_once_the_window_passes() {
        let (_dir, path, file) = request_file(true);
        let hold = CpuLatencyHold::with_file(Some(file), Duration::from_millis(60));
        assert_eq!(hold.remaining(), None, "nothing held before traffic");
        assert!(requests(&path).is_empty());
        hold.touch();
        hold.touch();
        assert_eq!(requests(&path), vec![HOLD_US], "made once, not per batch");
        let left = hold.remaining().expect("held inside the window");
        assert!(left <= Duration::from_millis(60) && left > Duration::ZERO, "{left:?}");
        assert!(hold.status().held);
        // Batches keep it: 5 × 20 ms, each inside the window.
        for _ in 0..5 {
            thread::sleep(Duration::from_millis(20));
            hold.touch();
            assert!(hold.remaining().is_some());
        }
        assert_eq!(requests(&path), vec![HOLD_US]);
        thread::sleep(Duration::from_millis(80));
        assert_eq!(hold.remaining(), None, "relaxed after a window without a batch");
        assert_eq!(requests(&path), vec![HOLD_US, RELAX_US]);
        let s = hold.status();
        assert!(!s.held && s.holds == 1 && s.held_seconds >= 0.1, "{s:?}");
        assert_eq!(hold.remaining(), None);
        assert_eq!(requests(&path), vec![HOLD_US, RELAX_US], "relaxed once");
        // The next batch makes it again.
        hold.touch();
        assert_eq!(requests(&path), vec![HOLD_US, RELAX_US, HOLD_US]);
        assert_eq!(hold.status().holds, 2);
    }

    #[test]
    fn a_zero_window_or_no_device_never_holds() {
        let (_dir, path, file) = request_file(true);
        let off = CpuLatencyHold::with_file(Some(file), Duration::ZERO);
        off.touch();
        assert_eq!(off.remaining(), None);
        assert!(requests(&path).is_empty());
        let none = CpuLatencyHold::with_file(None, Duration::from_millis(50));
        none.touch();
        assert_eq!(none.remaining(), None);
        assert_eq!(none.status(), HoldStatus::default());
    }

    #[test]
    fn a_refused_request_disables_the_hold() {
        // Read-only: every write fails.
        let (_dir, _path, file) = request_file(false);
        let hold = CpuLatencyHold::with_file(Some(file), Duration::from_millis(50));
        hold.touch();
        assert!(!hold.status().held);
        hold.touch();
        assert_eq!(hold.remaining(), None);
    }
}
