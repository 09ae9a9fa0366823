#ifndef HOSTVMM_THREAD_SANDBOX_H
#define HOSTVMM_THREAD_SANDBOX_H

/// Installs a seccomp allow-list on the calling thread only (no TSYNC): every
/// system call not named in `allowed` fails with EPERM. Sets no_new_privs on
/// the thread, as seccomp requires without CAP_SYS_ADMIN. Names this kernel's
/// architecture does not have are skipped. Returns the number of system calls
/// allowed, or -errno.
int thread_sandbox_apply(const char *const *allowed, int count);

/// Installs a seccomp deny-list on every thread of the process (TSYNC; threads
/// made later inherit it): the calls named in `denied` fail with EPERM; so does
/// clone without CLONE_THREAD (a new process), and clone3 fails with ENOSYS so
/// that glibc falls back to clone, whose flags a filter can see. Returns the
/// number of calls denied by name, or -errno. Unless `allow_network`, socket()
/// for the network families (AF_INET, AF_INET6, AF_PACKET, AF_VSOCK) fails with
/// EPERM too; AF_UNIX and AF_NETLINK stay.
int process_sandbox_apply(const char *const *denied, int count, int allow_network);

/// Whether the calling thread has installed a filter through this module.
int thread_sandbox_is_applied(void);

/// The calling thread's kernel id (gettid), as /proc/PID/task names it.
int thread_sandbox_thread_id(void);

#endif
