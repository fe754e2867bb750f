//! File system calls `std` does not offer.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `path` as a C string, or `InvalidInput` if it holds a NUL byte.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, or 0 for `rename(2)`).
pub fn rename2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; renameat2 only
    // reads them.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the unnamed (`O_TMPFILE`) `file` the name `path` (fails with `AlreadyExists` if taken):
/// `linkat` of `/proc/self/fd/N`, or where there is no `/proc`, of the descriptor itself with
/// `AT_EMPTY_PATH` (which needs `CAP_DAC_READ_SEARCH`).
pub fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let to = c_path(path)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; linkat only
    // reads them.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) {
        return Err(err);
    }
    // SAFETY: `file` keeps its descriptor open across the call; the empty path and `to` are
    // valid NUL-terminated strings that outlive it.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts the writeback of `len` bytes of `file` from `offset` (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`) without waiting for it. Best effort: a failure is ignored, since the
/// caller's later `fsync` syncs everything anyway.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: `file` keeps its descriptor open across the call; sync_file_range only schedules
    // I/O on it and touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Calls statfs(2) on `path`, for its outcome only: statfs is never answered from the kernel's
/// caches, so it fails with `ENOTCONN` on a FUSE mount whose process is gone.
#[cfg(feature = "mount")]
/// The file system statistics of the file system holding `path` (statvfs(3)): block size,
/// total, free and available blocks, total and free inodes, and the longest name.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c_path = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable buffer of the right
    // size, both outliving the call; `st` is read only after statvfs filled it (returned 0).
    if unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Ok(FsStats {
        block_size: st.f_frsize,
        blocks: st.f_blocks,
        free: st.f_bfree,
        available: st.f_bavail,
        files: st.f_files,
        free_files: st.f_ffree,
        name_max: st.f_namemax,
    })
}

/// What [`statvfs`] reports.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    pub block_size: u64,
    pub blocks: u64,
    pub free: u64,
    pub available: u64,
    pub files: u64,
    pub free_files: u64,
    pub name_max: u64,
}

pub fn statfs(path: &Path) -> io::Result<()> {
    let c_path = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable buffer of the
    // right size, both outliving the call; `st` is never read.
    if unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts the file system at `path` (umount2(2); needs root). `lazy` detaches it now even if
/// it is busy (`MNT_DETACH`); otherwise a busy mount fails with `EBUSY`.
#[cfg(feature = "mount")]
pub fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let c_path = c_path(path)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
