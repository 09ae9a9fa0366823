#define _GNU_SOURCE
#include "CLinuxSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
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
                                 int in_fd, int out_fd, int err_fd,
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

    int fds[3] = {in_fd, out_fd, err_fd};
    // Move the sources above 2 first so that dup2 into 0..2 cannot clobber one.
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0 && fds[i] <= 2) {
            int moved = fcntl(fds[i], F_DUPFD, 3);
            if (moved < 0) _exit(127);
            fds[i] = moved;
        }
    }
    for (int i = 0; i < 3; i++) {
        if (fds[i] >= 0 && dup2(fds[i], i) < 0) _exit(127);
    }
    syscall(SYS_close_range, 3, ~0U, 0);
    execve(path, argv, envp);
    _exit(127);
}

pid_t clinux_spawn(const char *path, char *const argv[], char *const envp[],
                   int stdin_fd, int stdout_fd, int stderr_fd,
                   int detach_mode, int die_with_parent) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        child_setup_and_exec(path, argv, envp, stdin_fd, stdout_fd, stderr_fd,
                             detach_mode, die_with_parent, parent);
    }
    return pid;
}
