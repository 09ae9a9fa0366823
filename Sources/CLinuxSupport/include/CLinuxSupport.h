// Linux calls Swift cannot make directly: variadic syscalls, and the work a
// child must do between fork and exec. Every name is prefixed clinux_.
#ifndef CLINUX_SUPPORT_H
#define CLINUX_SUPPORT_H

#include <sys/types.h>
// Re-exported: Swift's Glibc module leaves these headers out.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>

enum {
    CLINUX_SAME_PROCESS_GROUP = 0,
    CLINUX_NEW_PROCESS_GROUP = 1,
    CLINUX_NEW_SESSION = 2,
};

/// ioctl(2) with a pointer argument (ioctl is variadic, which Swift cannot call).
int clinux_ioctl_pointer(int fd, unsigned long request, void *argument);

/// The path of the shared object (or executable) that contains `address`, as the
/// loader opened it (dladdr(3), a GNU extension Swift's Glibc module leaves out); NULL if none.
const char *clinux_shared_object_path(const void *address);

/// pidfd_open(2): a file descriptor that becomes readable when `pid` exits.
int clinux_pidfd_open(pid_t pid);

/// Forks and execs `path` with `argv`/`envp`.
/// In the child: stdin/stdout/stderr become the given fds (-1 keeps the
/// parent's), `inherit_fds[i]` becomes fd 3 + i (at most CLINUX_MAX_INHERIT: guest
/// RAM handed to QEMU), every other fd is closed, the signal mask and dispositions are
/// reset, the child gets its own process group or session per `detach_mode`
/// (so a terminal's Ctrl-C reaches only the parent), and with `die_with_parent`
/// it receives SIGKILL when the forking *thread* exits (PR_SET_PDEATHSIG).
/// Returns the pid, or -1 with errno set. If exec fails the child exits 127.
pid_t clinux_spawn(const char *path, char *const argv[], char *const envp[],
                   int stdin_fd, int stdout_fd, int stderr_fd,
                   const int *inherit_fds, int inherit_count,
                   int detach_mode, int die_with_parent);

enum { CLINUX_MAX_INHERIT = 8 };

/// The most descriptors one clinux_recv_with_fds call accepts (vhost-user sends at most 8).
enum { CLINUX_MAX_FDS = 16 };

/// recvmsg(2) that also collects SCM_RIGHTS descriptors (made close-on-exec).
/// Reads at most `len` bytes into `buf`; stores at most `max_fds` (<= CLINUX_MAX_FDS)
/// received descriptors in `fds` and their number in `*nfds`. `*truncated` is set
/// when the kernel had to cut the control data (descriptors were lost).
/// Returns the byte count, 0 at end of stream, or -1 with errno.
ssize_t clinux_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated);

/// sendmsg(2) of `len` bytes with `nfds` (<= CLINUX_MAX_FDS) descriptors as SCM_RIGHTS.
ssize_t clinux_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// memfd_create(2).
int clinux_memfd_create(const char *name, unsigned int flags);

/// malloc_trim(0): gives freed heap memory back to the system (Swift cannot see malloc.h).
void clinux_release_free_memory(void);

/// prctl(PR_SET_NAME): names the calling thread (at most 15 bytes are kept).
int clinux_set_thread_name(const char *name);

#endif
