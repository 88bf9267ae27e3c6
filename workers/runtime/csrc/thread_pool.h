/* A persistent pool of worker threads for the kernels' parallel calls, with bounded spinning.
 *
 * Why not OpenMP: an idle vCPU of this VM halts, and waking it took ~0.5 ms, longer than a whole
 * 1x1 layer (0.1-0.4 ms), so a 2-thread call after a pause ran no faster than 1 thread. libgomp
 * either spins for GOMP_SPINCOUNT (a process-wide setting shared with torch's OpenMP, read once)
 * or sleeps at once. Here a worker spins for ``spin_us`` microseconds after its last job (default
 * POOL_SPIN_US, environment SPARSEARCH_SPIN_US, or set_thread_spin), yielding its core to any
 * other runnable thread every few microseconds, then sleeps on a condition variable: back-to-back
 * layers of a model find the workers awake, and a pause longer than the spin costs one wake-up.
 * onnxruntime's pool spins by default too.
 *
 * A call hands out ``items`` work items first come first served (an atomic ticket); the calling
 * thread takes items too and then waits only for items already taken, so a worker that wakes
 * late finds nothing left instead of holding the call up, and no result ever depends on a worker
 * running at all (after fork, or when another Python thread holds the pool, the caller runs every
 * item itself). Included by sparse_kernels.c.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

typedef void (*pool_fn)(void *ctx, int item, int thread);

#define POOL_MAX_THREADS 64
#define POOL_SPIN_US 300
#define POOL_CLOSED 0xffffffffu

static struct {
    pthread_mutex_t job_lock; /* held by the caller of a parallel call for its whole duration */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    atomic_int sleepers;
    int workers; /* started, numbered 1..workers */
    /* generation << 32 | next item; the low half is POOL_CLOSED between calls */
    _Atomic unsigned long long ticket;
    atomic_int done;
    pool_fn fn; /* the open call: valid while its ticket is open */
    void *ctx;
    atomic_int items, threads;
    atomic_int spin_us; /* negative: not read from the environment yet */
    atomic_long worker_items; /* items the workers (not callers) ran: tests check they help */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, 0, POOL_CLOSED, 0, NULL, NULL, 0, 0, -1, 0};

static __thread int pool_worker_index = 0; /* 0 outside the pool's workers */

static double pool_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline void pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Microseconds an idle worker spins before sleeping. */
static int pool_spin_us(void) {
    int spin = atomic_load(&pool.spin_us);
    if (spin < 0) {
        const char *text = getenv("SPARSEARCH_SPIN_US");
        spin = text && *text ? atoi(text) : POOL_SPIN_US;
        if (spin < 0) spin = 0;
        atomic_store(&pool.spin_us, spin);
    }
    return spin;
}

/* Takes and runs items of the open call with generation ``generation`` until none is left. */
static void pool_take_items(unsigned long long generation, int thread) {
    for (;;) {
        unsigned long long seen = atomic_load(&pool.ticket);
        const unsigned next = (unsigned)(seen & 0xffffffffu);
        if (seen >> 32 != generation || next == POOL_CLOSED ||
            thread >= atomic_load(&pool.threads) || (int)next >= atomic_load(&pool.items))
            return;
        /* Success means the call is still open: it stays so until this item is done. */
        if (!atomic_compare_exchange_weak(&pool.ticket, &seen, seen + 1)) continue;
        pool.fn(pool.ctx, (int)next, thread);
        if (thread > 0) atomic_fetch_add(&pool.worker_items, 1);
        atomic_fetch_add(&pool.done, 1);
    }
}

static void *pool_worker(void *arg) {
    const int index = (int)(long)arg;
    unsigned long long seen = ~0ull; /* joins the call open now, if any */
    pool_worker_index = index;
    for (;;) {
        unsigned long long now = atomic_load(&pool.ticket) >> 32;
        const double give_up = pool_seconds() + 1e-6 * pool_spin_us();
        for (unsigned spins = 1; now == seen; ++spins) {
            pool_pause();
            if (spins % 256 == 0) {
                if (pool_seconds() > give_up) break;
                sched_yield(); /* another runnable thread on this core goes first */
            }
            now = atomic_load(&pool.ticket) >> 32;
        }
        if (now == seen) {
            pthread_mutex_lock(&pool.sleep_lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while ((now = atomic_load(&pool.ticket) >> 32) == seen)
                pthread_cond_wait(&pool.wake, &pool.sleep_lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep_lock);
        }
        seen = now;
        pool_take_items(seen, index);
    }
    return NULL;
}

/* After fork the child has no workers and maybe locks held by threads that are gone. */
static void pool_after_fork_in_child(void) {
    pthread_mutex_init(&pool.job_lock, NULL);
    pthread_mutex_init(&pool.sleep_lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.sleepers, 0);
    pool.workers = 0;
}

/* Starts workers up to ``count`` (with job_lock held); returns how many there are. */
static int pool_start_workers(int count) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, pool_after_fork_in_child);
        registered = 1;
    }
    while (pool.workers < count) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int failed =
            pthread_create(&thread, &attr, pool_worker, (void *)(long)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        pool.workers++;
    }
    return pool.workers;
}

/* fn(ctx, item, thread) for items 0..items-1 on up to ``threads`` threads (thread 0 is the
 * caller; thread < threads always, for per-thread scratch). Returns when every item is done. */
static void pool_run(pool_fn fn, void *ctx, int items, int threads) {
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    if (threads <= 1 || items <= 1 || pool_worker_index != 0 ||
        pthread_mutex_trylock(&pool.job_lock) != 0) {
        for (int item = 0; item < items; ++item) fn(ctx, item, 0);
        return;
    }
    if (pool_start_workers(threads - 1) < 1) {
        pthread_mutex_unlock(&pool.job_lock);
        for (int item = 0; item < items; ++item) fn(ctx, item, 0);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    atomic_store(&pool.items, items);
    atomic_store(&pool.threads, threads);
    atomic_store(&pool.done, 0);
    const unsigned long long generation = (atomic_load(&pool.ticket) >> 32) + 1;
    atomic_store(&pool.ticket, generation << 32); /* open, next item 0 */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
    pool_take_items(generation, 0);
    while (atomic_load(&pool.done) < items) pool_pause();
    atomic_store(&pool.ticket, generation << 32 | POOL_CLOSED);
    pthread_mutex_unlock(&pool.job_lock);
}

#undef POOL_CLOSED
