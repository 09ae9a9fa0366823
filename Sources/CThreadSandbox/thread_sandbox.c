#define _GNU_SOURCE
#include "thread_sandbox.h"

#include <errno.h>
#include <sched.h>
#include <sys/socket.h>
#include <seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

static __thread int applied;

int thread_sandbox_apply(const char *const *allowed, int count) {
    if (applied) return -EALREADY;
    // Refused, not killed: a call spice-server makes on a rare path fails as
    // any failed call would, and hostvmm keeps serving.
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx) return -ENOMEM;
    int added = 0;
    for (int i = 0; i < count; i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr == __NR_SCMP_ERROR) continue;
        int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (r < 0) { seccomp_release(ctx); return r; }
        added++;
    }
    int r = seccomp_load(ctx);  // this thread only: SCMP_FLTATR_CTL_TSYNC stays off
    seccomp_release(ctx);
    if (r < 0) return r;
    applied = 1;
    return added;
}

int thread_sandbox_is_applied(void) { return applied; }

int process_sandbox_apply(const char *const *denied, int count, int allow_network) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return -ENOMEM;
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    int added = 0;
    for (int i = 0; r == 0 && i < count; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR) continue;
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        added++;
    }
    // A new process is clone without CLONE_THREAD (fork, vfork and posix_spawn all are).
    if (r == 0)
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
    static const int network_families[] = {AF_INET, AF_INET6, AF_PACKET, AF_VSOCK};
    for (unsigned i = 0; r == 0 && !allow_network && i < sizeof network_families / sizeof *network_families; i++)
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                             SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)network_families[i]));
    // clone3 passes its flags in memory, out of a filter's sight: refuse it as
    // unimplemented and glibc uses clone instead (for threads too).
    if (r == 0) r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (r == 0) r = seccomp_load(ctx);
    seccomp_release(ctx);
    return r < 0 ? r : added;
}

int thread_sandbox_thread_id(void) { return (int)syscall(SYS_gettid); }
