//! `CudaGraph`: work captured from a stream once and replayed with one launch (for decode steps
//! and for timing many small kernels without launch gaps).

use std::cell::Cell;
use std::fmt;
use std::ptr;
use std::sync::RwLock;

use super::device::ensure_device;
use super::error::check;
use super::ffi;
use super::stream::CudaStream;
use crate::{Error, Result};

/// CUDA invalidates a stream capture when another thread synchronizes the whole device meanwhile
/// (`cudaDeviceSynchronize`, and the implicit synchronization of `cudaMalloc`, `cudaFree` and
/// their page-locked twins). paradec's calls of that kind run under this lock shared
/// ([`device_wide`]) and a capture holds it exclusively, so a capture on one thread and
/// synchronous copies or allocations on another wait for each other instead of failing.
static CAPTURE_LOCK: RwLock<()> = RwLock::new(());

thread_local! {
    /// Whether this thread is recording a capture (its own device-wide calls then fail as
    /// CUDA decides, rather than waiting on the lock it holds).
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
}

/// Runs a call that synchronizes the whole device, never during another thread's capture.
pub(crate) fn device_wide<T>(call: impl FnOnce() -> T) -> T {
    if CAPTURING.with(Cell::get) {
        return call();
    }
    let _shared = CAPTURE_LOCK.read().unwrap_or_else(|e| e.into_inner());
    call()
}

/// An instantiated CUDA graph.
pub struct CudaGraph {
    graph: ffi::cudaGraph_t,
    exec: ffi::cudaGraphExec_t,
    device: usize,
}

// SAFETY: graph handles may be used from any host thread; launches take `&self` and the runtime
// serializes access to an executable graph per stream.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Captures what `record` queues on `stream` (which must not be the legacy default stream)
    /// into a graph; nothing runs until `launch`.
    pub fn capture(
        stream: &CudaStream,
        record: impl FnOnce(&CudaStream) -> Result<()>,
    ) -> Result<Self> {
        if stream.raw().is_null() {
            return Err(Error::bad_input(
                "CudaGraph::capture: the legacy default stream cannot be captured",
            ));
        }
        ensure_device(stream.device())?;
        let _exclusive = CAPTURE_LOCK.write().unwrap_or_else(|e| e.into_inner());
        CAPTURING.with(|c| c.set(true));
        let r = Self::capture_locked(stream, record);
        CAPTURING.with(|c| c.set(false));
        r
    }

    fn capture_locked(
        stream: &CudaStream,
        record: impl FnOnce(&CudaStream) -> Result<()>,
    ) -> Result<Self> {
        // SAFETY: live stream; thread-local capture mode (only this thread's calls are checked).
        check(
            unsafe {
                ffi::cudaStreamBeginCapture(
                    stream.raw(),
                    ffi::cudaStreamCaptureMode::cudaStreamCaptureModeThreadLocal,
                )
            },
            "cudaStreamBeginCapture",
        )?;
        let recorded = record(stream);
        let mut graph: ffi::cudaGraph_t = ptr::null_mut();
        // SAFETY: ends the capture begun above on the same stream; `graph` is an out-pointer.
        let ended = check(
            unsafe { ffi::cudaStreamEndCapture(stream.raw(), &mut graph) },
            "cudaStreamEndCapture",
        );
        if let Err(e) = recorded.and(ended) {
            if !graph.is_null() {
                // SAFETY: the graph came from the capture above and is not used again.
                unsafe {
                    let _ = ffi::cudaGraphDestroy(graph);
                }
            }
            return Err(e);
        }
        let mut exec: ffi::cudaGraphExec_t = ptr::null_mut();
        // SAFETY: `graph` is a valid captured graph; `exec` an out-pointer; flags 0.
        let inst = check(
            unsafe { ffi::cudaGraphInstantiate(&mut exec, graph, 0) },
            "cudaGraphInstantiate",
        );
        if let Err(e) = inst {
            // SAFETY: as above.
            unsafe {
                let _ = ffi::cudaGraphDestroy(graph);
            }
            return Err(e);
        }
        Ok(CudaGraph {
            graph,
            exec,
            device: stream.device(),
        })
    }

    /// Queues one replay of the graph on `stream`.
    pub fn launch(&self, stream: &CudaStream) -> Result<()> {
        ensure_device(self.device)?;
        // SAFETY: live executable graph and stream.
        check(
            unsafe { ffi::cudaGraphLaunch(self.exec, stream.raw()) },
            "cudaGraphLaunch",
        )
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: both handles are ours and destroyed once; errors ignored (no panic).
        unsafe {
            let _ = ffi::cudaGraphExecDestroy(self.exec);
            let _ = ffi::cudaGraphDestroy(self.graph);
        }
    }
}

impl fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaGraph {{ cuda:{} }}", self.device)
    }
}
