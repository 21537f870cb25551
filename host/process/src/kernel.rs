//! Raw Linux system calls the spawn path needs where glibc's wrappers hide something: glibc's
//! `sigprocmask` and `sigaction` refuse its own internal signals (32 and 33, used for thread
//! cancellation and `setuid` across threads), so blocking "every" signal through them leaves
//! those two open, and a disposition the agent's glibc installed for them would survive into
//! the child. glibc's own `posix_spawn` uses the system calls directly for the same reason.
//!
//! Everything here may run in a vfork-style child (on a borrowed stack, sharing the agent's
//! memory), so it only makes system calls: no allocation, no locks. Errors are returned as raw
//! errno values for the same reason.

use std::ptr;

/// The kernel's `sigset_t`: one bit per signal, 64 signals (`_NSIG / 8` bytes). This is its size
/// on x86_64 and aarch64, the architectures this crate is built for (MIPS, for one, has 128).
pub type KernelSigset = u64;

/// Every signal. The kernel silently leaves SIGKILL and SIGSTOP out of a blocked mask.
pub const ALL_SIGNALS: KernelSigset = !0;

/// No signal.
pub const NO_SIGNALS: KernelSigset = 0;

/// The highest signal number (`_NSIG`).
pub const MAX_SIGNAL: libc::c_int = 64;

/// The kernel's `struct sigaction` with every field zero: handler `SIG_DFL`, no flags, no
/// restorer, empty mask. 32 bytes on x86_64 and aarch64 (handler, flags, restorer, mask); the
/// kernel reads only its own size of it.
const DEFAULT_ACTION: [u64; 4] = [0; 4];

/// The errno of the system call that just failed.
pub fn last_errno() -> libc::c_int {
    // `last_os_error` reads errno without allocating.
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Set this thread's signal mask to `mask`; returns the previous one.
pub fn set_signal_mask(mask: KernelSigset) -> Result<KernelSigset, libc::c_int> {
    let mut old: KernelSigset = 0;
    // SAFETY: both pointers are valid for the call, the size is the kernel's sigset size.
    // Changing the mask breaks no memory invariant; callers restore it.
    let done = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const KernelSigset,
            &mut old as *mut KernelSigset,
            size_of::<KernelSigset>(),
        )
    };
    if done < 0 { Err(last_errno()) } else { Ok(old) }
}

/// This thread's signal mask.
#[cfg(test)]
pub fn signal_mask() -> Result<KernelSigset, libc::c_int> {
    let mut current: KernelSigset = 0;
    // SAFETY: a NULL new set only reads the mask into `current`, valid for the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            ptr::null::<KernelSigset>(),
            &mut current as *mut KernelSigset,
            size_of::<KernelSigset>(),
        )
    };
    if done < 0 {
        Err(last_errno())
    } else {
        Ok(current)
    }
}

/// Reset the disposition of `signal` to its default, glibc's own signals included.
///
/// # Safety
/// Changes a process-wide disposition: only for a process about to exec (the spawn child), or
/// one whose code installs no handler for `signal`.
pub unsafe fn reset_disposition(signal: libc::c_int) -> Result<(), libc::c_int> {
    // SAFETY: DEFAULT_ACTION is at least the size of the kernel's struct sigaction and lives
    // for the call; the old action is not asked for.
    let done = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            DEFAULT_ACTION.as_ptr(),
            ptr::null_mut::<u64>(),
            size_of::<KernelSigset>(),
        )
    };
    if done < 0 { Err(last_errno()) } else { Ok(()) }
}

/// Close every fd from `first` up (`close_range`, Linux 5.9).
///
/// # Safety
/// Closes fds that other code may own: only for a process about to exec with its own fd table
/// (the spawn child, which is not cloned with `CLONE_FILES`).
pub unsafe fn close_from(first: libc::c_uint) -> Result<(), libc::c_int> {
    // SAFETY: close_range takes plain integers; the caller vouches that nothing uses the fds.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0u32) };
    if done < 0 { Err(last_errno()) } else { Ok(()) }
}

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    /// Lowest address of the child's stack; the kernel starts it at `stack + stack_size`.
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    /// An open cgroup v2 directory, with `CLONE_INTO_CGROUP`.
    pub cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (not in every libc release yet).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(args)`, the child calling `entry(arg)` on the stack `args` gives it and exiting with
/// its result. Returns the child's PID to the parent, or a negative errno.
///
/// glibc has no public `clone3` wrapper, and the raw `syscall()` function cannot be used with
/// `CLONE_VM` and a new stack: the child would return through a frame on a stack it does not
/// have. So the child's side is written here in assembly: straight from the system call into
/// `entry`.
///
/// # Safety
/// As for `clone`: with `CLONE_VM` the child shares the caller's memory and runs `entry` on
/// `args.stack`, which must be mapped, 16-byte aligned at its top and used by nobody else until
/// the child has exec'd or exited (`CLONE_VFORK`); `entry` may only make system calls.
pub unsafe fn clone3(
    args: &mut CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let result: libc::c_long;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller vouches for `args`; the parent only gets rax back and loses rcx and
    // r11 to `syscall`. The child never returns from here: it calls `entry` on its own stack
    // (16-byte aligned before the call, as the ABI wants) and exits.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") args as *mut CloneArgs,
            in("rsi") size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; `svc` clobbers nothing but x0 in the parent. The child branches to
    // `entry` on its own stack and exits.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x21",
            "blr x20",
            "mov x8, {exit}",
            "svc 0",
            "brk #0",
            "2:",
            exit = const libc::SYS_exit,
            in("x8") libc::SYS_clone3,
            inlateout("x0") args as *mut CloneArgs => result,
            in("x1") size_of::<CloneArgs>(),
            in("x20") entry,
            in("x21") arg,
            options(nostack),
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_mask_blocks_glibcs_own_signals_too() {
        std::thread::spawn(|| {
            let old = set_signal_mask(ALL_SIGNALS).unwrap();
            let blocked = signal_mask().unwrap();
            set_signal_mask(old).unwrap();
            let bit = |signal: i32| 1u64 << (signal - 1);
            // Everything but SIGKILL and SIGSTOP, 32 and 33 included.
            assert_eq!(blocked, !(bit(libc::SIGKILL) | bit(libc::SIGSTOP)));
            assert_eq!(signal_mask().unwrap(), old, "restored");
        })
        .join()
        .unwrap();
    }
}
