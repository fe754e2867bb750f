//! Signals delivered to one waiting thread: blocked in every thread, then taken with sigwait(3).

use std::io;

/// A set of signals blocked in the calling thread (and in every thread it starts afterwards),
/// to be taken with [`BlockedSignals::wait`].
#[derive(Clone, Copy)]
pub struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    /// Blocks `signals` in the calling thread. Call before any thread starts, so that every
    /// thread inherits the mask and only the one calling [`wait`](Self::wait) sees them.
    pub fn block(signals: &[i32]) -> io::Result<Self> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the sigset_t it is given, a writable buffer of the
        // right size; it cannot fail with a valid pointer.
        let mut set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            set.assume_init()
        };
        for &sig in signals {
            // SAFETY: `set` is an initialised sigset_t; an invalid signal number is an error
            // (EINVAL), not undefined behaviour.
            if unsafe { libc::sigaddset(&mut set, sig) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is an initialised sigset_t that outlives the call; the old mask is not
        // asked for (null is allowed).
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(BlockedSignals(set))
    }

    /// Waits until one of the signals is pending and takes it; returns its number.
    pub fn wait(&self) -> io::Result<i32> {
        let mut sig = 0;
        // SAFETY: `self.0` is an initialised sigset_t and `sig` a writable int, both outliving
        // the call.
        let r = unsafe { libc::sigwait(&self.0, &mut sig) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(sig)
    }
}
