#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

int clinux_ioctl_pointer(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

int clinux_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

// Only async-signal-safe calls between fork and exec.
static void child_setup_and_exec(const char *path, char *const argv[], char *const envp[],
                                 int in_fd, int out_fd, int err_fd, const int *inherit, int inherit_count,
                                 int detach_mode, int die_with_parent, pid_t parent) {
    if (die_with_parent) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(127);
        // The parent may have died before prctl took effect.
        if (getppid() != parent) _exit(127);
    }
    if (detach_mode == CLINUX_NEW_PROCESS_GROUP) setpgid(0, 0);
    if (detach_mode == CLINUX_NEW_SESSION) setsid();

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        signal(sig, SIG_DFL);
    }

    // Targets 0..2 (stdio) and 3..3+inherit_count-1. Every source is first moved above
    // all targets, so that no dup2 below can clobber a source not yet placed.
    enum { MAX = 3 + CLINUX_MAX_INHERIT };
    int sources[MAX];
    int count = 3 + (inherit_count < 0 ? 0 : inherit_count > CLINUX_MAX_INHERIT ? CLINUX_MAX_INHERIT : inherit_count);
    sources[0] = in_fd;
    sources[1] = out_fd;
    sources[2] = err_fd;
    for (int i = 3; i < count; i++) sources[i] = inherit[i - 3];
    for (int i = 0; i < count; i++) {
        if (sources[i] >= 0 && sources[i] < count) {
            int moved = fcntl(sources[i], F_DUPFD, count);
            if (moved < 0) _exit(127);
            sources[i] = moved;
        }
    }
    for (int i = 0; i < count; i++) {
        if (sources[i] >= 0 && dup2(sources[i], i) < 0) _exit(127);  // dup2 clears FD_CLOEXEC
        if (sources[i] < 0 && i >= 3) _exit(127);
    }
    syscall(SYS_close_range, count, ~0U, 0);
    execve(path, argv, envp);
    _exit(127);
}

pid_t clinux_spawn(const char *path, char *const argv[], char *const envp[],
                   int stdin_fd, int stdout_fd, int stderr_fd,
                   const int *inherit_fds, int inherit_count,
                   int detach_mode, int die_with_parent) {
    if (inherit_count > CLINUX_MAX_INHERIT) {
        errno = EINVAL;
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup_and_exec(path, argv, envp, stdin_fd, stdout_fd, stderr_fd, inherit_fds, inherit_count,
                             detach_mode, die_with_parent, parent);
    }
    return pid;
}

ssize_t clinux_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *truncated) {
    union {
        char space[CMSG_SPACE(sizeof(int) * CLINUX_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof(control.space);
    *nfds = 0;
    *truncated = 0;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int received[CLINUX_MAX_FDS];
        if (count > CLINUX_MAX_FDS) count = CLINUX_MAX_FDS;
        memcpy(received, CMSG_DATA(c), sizeof(int) * (size_t)count);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds && *nfds < CLINUX_MAX_FDS) {
                fds[(*nfds)++] = received[i];
            } else {
                close(received[i]);  // more than the caller can take: never leak them
                *truncated = 1;
            }
        }
    }
    return n;
}

ssize_t clinux_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    union {
        char space[CMSG_SPACE(sizeof(int) * CLINUX_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > CLINUX_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

int clinux_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

const char *clinux_shared_object_path(const void *address) {
    Dl_info info;
    if (dladdr(address, &info) == 0) return NULL;
    return info.dli_fname;
}

void clinux_release_free_memory(void) { malloc_trim(0); }

int clinux_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
