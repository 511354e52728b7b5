/* Prototype (not built by the Makefile): cgroup v1 OOM notification.
 * Makes /sys/fs/cgroup/memory/imperium-research16-oom (limit 32 MB, no swap), registers an
 * eventfd for memory.oom_control through cgroup.event_control, forks a child into it that
 * touches 128 MB, and times the eventfd against the child's SIGKILL; prints oom_kill.
 * cc -O2 -o /tmp/research16/oomwatch oomwatch.c && /tmp/research16/oomwatch */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdint.h>

#define CG "/sys/fs/cgroup/memory/imperium-research16-oom"
static double ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static void put(const char *f, const char *v) {
    char p[256]; snprintf(p, sizeof p, CG "/%s", f);
    int fd = open(p, O_WRONLY); if (fd < 0 || write(fd, v, strlen(v)) < 0) perror(p); close(fd);
}
static void show(const char *f) {
    char p[256], b[4096]; snprintf(p, sizeof p, CG "/%s", f);
    int fd = open(p, O_RDONLY); ssize_t n = read(fd, b, sizeof b - 1); close(fd);
    if (n > 0) { b[n] = 0; printf("--- %s\n%s", f, b); }
}
int main(void)
{
    mkdir(CG, 0755);
    put("memory.limit_in_bytes", "33554432");
    if (access(CG "/memory.memsw.limit_in_bytes", F_OK) == 0) put("memory.memsw.limit_in_bytes", "33554432");
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int ofd = open(CG "/memory.oom_control", O_RDONLY | O_CLOEXEC);
    char reg[64]; snprintf(reg, sizeof reg, "%d %d", efd, ofd);
    put("cgroup.event_control", reg);             /* "<eventfd> <fd of memory.oom_control>" */
    int pfd[2]; pipe(pfd);
    pid_t pid = fork();
    if (pid == 0) {
        char b[16]; snprintf(b, sizeof b, "%d", getpid()); put("cgroup.procs", b);
        close(pfd[0]); write(pfd[1], "x", 1);
        size_t sz = 128u << 20; char *m = malloc(sz);
        for (size_t i = 0; i < sz; i += 4096) m[i] = 1;
        _exit(0);
    }
    char c; read(pfd[0], &c, 1);
    double t0 = ms();
    struct pollfd pf = {efd, POLLIN, 0};
    int r = poll(&pf, 1, 5000);
    double t_event = ms();
    uint64_t cnt = 0; if (r > 0) read(efd, &cnt, 8);
    int st; waitpid(pid, &st, 0);
    double t_reaped = ms();
    printf("eventfd: poll=%d count=%llu after %.1f ms; child %s %d, reaped after %.1f ms\n", r,
           (unsigned long long)cnt, t_event - t0, WIFSIGNALED(st) ? "killed by signal" : "exited",
           WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), t_reaped - t0);
    show("memory.oom_control");
    show("memory.failcnt");
    close(efd); close(ofd);
    if (rmdir(CG) < 0) perror("rmdir " CG);
    return 0;
}
