#define _GNU_SOURCE
#include "thread_sandbox.h"

#include <errno.h>
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

int thread_sandbox_thread_id(void) { return (int)syscall(SYS_gettid); }
