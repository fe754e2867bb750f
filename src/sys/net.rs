//! Socket options `std` does not offer (`TcpStream::set_linger` is unstable).

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Makes the socket close with a reset (RST) instead of an orderly end-of-stream when its last
/// handle is dropped (`SO_LINGER` with a zero timeout). Best effort: a failure is ignored.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `stream` keeps its socket open across the call; the option value points to a
    // `linger` that outlives the call, and the length passed is its size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
