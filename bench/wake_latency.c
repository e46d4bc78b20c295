/* How long a thread blocked in poll() takes to run after another thread
 * writes to its pipe, after a pause: the cost of one wake-up on this
 * machine, with and without a CPU-latency request (what the agent holds
 * while traffic flows, /dev/cpu_dma_latency; bench/ROUNDS.md, "Round sixteen").
 *
 *     cc -O2 -pthread -o /tmp/wake_latency bench/wake_latency.c
 *     sudo /tmp/wake_latency PAUSE_US WRITER_CPU READER_CPU HOLD   # e.g. 10000 0 1 1
 *
 * 300 wake-ups, PAUSE_US apart; prints the median, mean and 90th percentile
 * in microseconds. HOLD 1 asks for 0 µs (idle CPUs poll) while it runs.
 * Touches no network and no namespace. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N 300

static int fds[2];
static int reader_cpu = -1;
static double took[N];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void pin(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        fprintf(stderr, "cannot pin to CPU %d\n", cpu);
        exit(1);
    }
}

static void *reader(void *arg) {
    (void)arg;
    pin(reader_cpu);
    for (int i = 0; i < N; i++) {
        struct pollfd p = {fds[0], POLLIN, 0};
        uint64_t sent;
        if (poll(&p, 1, -1) != 1 || read(fds[0], &sent, sizeof sent) != sizeof sent) {
            perror("reader");
            exit(1);
        }
        took[i] = (double)(now_ns() - sent) / 1000.0;
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PAUSE_US WRITER_CPU READER_CPU HOLD\n", argv[0]);
        return 2;
    }
    long pause_us = atol(argv[1]);
    int writer_cpu = atoi(argv[2]);
    reader_cpu = atoi(argv[3]);
    int hold = atoi(argv[4]);
    int dev = -1;
    if (hold) {
        int32_t zero = 0;
        dev = open("/dev/cpu_dma_latency", O_WRONLY);
        if (dev < 0 || write(dev, &zero, sizeof zero) != sizeof zero) {
            perror("/dev/cpu_dma_latency");
            return 1;
        }
    }
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    pin(writer_cpu);
    for (int i = 0; i < N; i++) {
        usleep((useconds_t)pause_us);
        uint64_t sent = now_ns();
        if (write(fds[1], &sent, sizeof sent) != sizeof sent) {
            perror("writer");
            return 1;
        }
    }
    pthread_join(t, NULL);
    qsort(took, N, sizeof took[0], by_value);
    double sum = 0;
    for (int i = 0; i < N; i++)
        sum += took[i];
    printf("pause %ld us, CPU %d -> %d, hold %d: median %.1f mean %.1f p90 %.1f us\n", pause_us, writer_cpu,
           reader_cpu, hold, took[N / 2], sum / N, took[N * 9 / 10]);
    if (dev >= 0)
        close(dev);
    return 0;
}
