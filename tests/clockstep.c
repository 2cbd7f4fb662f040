/* A step of the wall clock for the processes that preload this library, as NTP or a wake from
 * suspend makes one: CLOCK_REALTIME (and gettimeofday, time) read the nanoseconds stored in the
 * file $CLOCK_STEP_FILE ahead of the real clock; the monotonic clocks are left as they are.
 * Whoever writes a new number into the file steps the clock of every such process at once.
 * Built by tests/test_clock.py: cc -shared -fPIC -o clockstep.so clockstep.c */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int64_t *step_ns;
static volatile int mapped;

static void map_step(void) {
    if (mapped) return;
    mapped = 1;
    const char *path = getenv("CLOCK_STEP_FILE");
    if (!path) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    void *m = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED) step_ns = m;
}

/* the system call itself: no lookup of the next definition, which could allocate and recurse */
int clock_gettime(clockid_t id, struct timespec *ts) {
    int r = (int)syscall(SYS_clock_gettime, id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        map_step();
        if (step_ns) {
            int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + *step_ns;
            ts->tv_sec = ns / 1000000000LL;
            ts->tv_nsec = ns % 1000000000LL;
            if (ts->tv_nsec < 0) {
                ts->tv_nsec += 1000000000LL;
                ts->tv_sec -= 1;
            }
        }
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
