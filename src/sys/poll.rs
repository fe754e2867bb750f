//! Waiting until descriptors can be read, with an optional timeout (poll(2)).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until at least one of `fds` can be read without blocking (data, end of file or an
/// error), or `timeout` passes (`None`: no limit). Returns, per descriptor, whether it is ready;
/// all `false` after a timeout. A signal interrupting the wait is a timeout with nothing ready.
pub fn readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structs that lives across the
    // call; the descriptors are borrowed, so they stay open while poll looks at them.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(polled
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_pipe_is_readable_once_written_and_a_timeout_reports_nothing() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let ready = readable(&[reader.as_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, [false]);
        writer.write_all(b"x").unwrap();
        assert_eq!(readable(&[reader.as_fd()], None).unwrap(), [true]);
        drop(writer);
    }
}
