/* The request loop: one leader thread reads the FUSE device and serves
 * what it reads; the other threads wait until it is needed elsewhere.
 *
 * libfuse's own multi-threaded loop keeps every idle thread blocked on the
 * device, so each request wakes a sleeping thread, and on an idle CPU that
 * wake-up costs more than the work of a key write. Here the leader serves
 * a request itself and goes straight back to the device, and before it
 * sleeps there it watches the device for up to spin_us microseconds: a
 * caller that sends its next request at once (the close after a write,
 * the next key) finds it awake.
 *
 * Work that may wait (on the store, the disk, a large parse, or another
 * thread's load) first says so (blocking_may_block() of fs/blocking.h, which
 * the daemon hooks to loop_may_block()): the leader then hands the
 * device to a waiting thread (started if none waits, up to max_threads)
 * and becomes an ordinary thread for the rest of that request. So a slow
 * upload never holds up key writes, and only slow requests cost a hand-off.
 * A thread that has just taken over does not spin: no caller waits on it.
 * The spin yields the CPU to any task ready on it (the caller, after its
 * answer); a spin that gave the CPU up (yielded, or was preempted: others
 * need it) is followed by 10 ms without one. */
#include "fs/loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "util/log.h"

#define BACK_OFF_NS 10000000 /* no spin for 10 ms after one that gave the CPU up */
/* Threads at most, whatever max_threads says: each request that waits on
 * the store keeps one (README, "The request loop"). */
#define LOOP_THREADS_MAX 1024

struct loop;

struct worker {
    struct worker *next;
    pthread_t thread;
    struct fuse_buf buf;
    struct loop *l;
    int leader; /* guarded by l->lock */
    int done;   /* guarded by l->lock: it ended, to be joined */
};

struct loop {
    struct fuse_session *se;
    unsigned max_threads;
    long spin_ns;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a waiting thread is to lead, or the end */
    sem_t finish;
    struct worker *workers;
    unsigned nworkers, nwaiting; /* threads running, and waiting to lead */
    int have_leader;
    int error;
    int64_t calm_until; /* only the leader reads and writes it */
};

static _Thread_local struct worker *self; /* this thread's, in the loop's threads */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The leader watches the device until a request is there or the budget is
 * spent, unless a spin lately gave the CPU up. */
static void spin(struct loop *l)
{
    int64_t now = mono_ns();
    if (now < l->calm_until)
        return;
    struct rusage before, after;
    if (getrusage(RUSAGE_THREAD, &before) != 0)
        return;
    struct pollfd p = {.fd = fuse_session_fd(l->se), .events = POLLIN};
    int64_t end = now + l->spin_ns;
    while (poll(&p, 1, 0) == 0 && mono_ns() < end)
        sched_yield(); /* a task ready on this CPU (the caller) goes first */
    /* A yield that ran another task counts as involuntary too. */
    if (getrusage(RUSAGE_THREAD, &after) == 0 && after.ru_nivcsw != before.ru_nivcsw)
        l->calm_until = mono_ns() + BACK_OFF_NS;
}

static void *work(void *arg);

/* Caller holds l->lock: joins the threads that ended. */
static void reap(struct loop *l)
{
    for (struct worker **p = &l->workers; *p;) {
        struct worker *w = *p;
        if (!w->done) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        pthread_join(w->thread, NULL); /* it holds nothing: returning */
        free(w);
    }
}

/* Caller holds l->lock. */
static int start_worker(struct loop *l)
{
    reap(l);
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->l = l;
    int rc = pthread_create(&w->thread, NULL, work, w);
    if (rc != 0) {
        free(w);
        log_error("cannot start a request thread: %s", strerror(rc));
        return -rc;
    }
    w->next = l->workers;
    l->workers = w;
    l->nworkers++;
    return 0;
}

/* Caller holds l->lock: someone else is to read the device. A thread is
 * started beyond max_threads when every thread is busy: the others may all
 * be waiting on the store, and the next request (a key write) must find a
 * leader. The threads beyond max_threads end when their request is done. */
static void hand_over(struct loop *l)
{
    l->have_leader = 0;
    if (l->nwaiting > 0)
        pthread_cond_signal(&l->wake);
    else if (l->nworkers < LOOP_THREADS_MAX)
        start_worker(l); /* on failure, this thread leads again when done */
}

void loop_may_block(void)
{
    struct worker *w = self;
    if (!w)
        return; /* not one of this loop's threads */
    struct loop *l = w->l;
    pthread_mutex_lock(&l->lock);
    if (w->leader) {
        w->leader = 0;
        hand_over(l);
    }
    pthread_mutex_unlock(&l->lock);
}

static void end_session(struct loop *l, int error)
{
    pthread_mutex_lock(&l->lock);
    if (error && !l->error)
        l->error = error;
    pthread_cond_broadcast(&l->wake);
    pthread_mutex_unlock(&l->lock);
    fuse_session_exit(l->se);
    sem_post(&l->finish);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct loop *l = w->l;
    self = w;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    int served = 0; /* it led and answered the last request itself */
    for (;;) {
        pthread_mutex_lock(&l->lock);
        served = served && w->leader;
        if (!w->leader && l->have_leader && l->nworkers > l->max_threads &&
            !fuse_session_exited(l->se)) {
            /* One too many, now that the request it waited on is done. */
            free(w->buf.mem);
            w->buf.mem = NULL;
            w->buf.size = 0;
            l->nworkers--;
            w->done = 1;
            pthread_mutex_unlock(&l->lock);
            return NULL;
        }
        if (!w->leader) {
            while (l->have_leader && !fuse_session_exited(l->se)) {
                l->nwaiting++;
                pthread_cond_wait(&l->wake, &l->lock);
                l->nwaiting--;
            }
            if (!fuse_session_exited(l->se)) {
                l->have_leader = 1;
                w->leader = 1;
            }
        }
        pthread_mutex_unlock(&l->lock);
        if (fuse_session_exited(l->se))
            break;
        if (l->spin_ns > 0 && served)
            spin(l); /* not on taking over: no caller is waiting on it */
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        int res = fuse_session_receive_buf(l->se, &w->buf);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        if (res == -EINTR || res == -EAGAIN)
            continue;
        if (res <= 0) { /* 0: unmounted */
            end_session(l, res);
            break;
        }
        fuse_session_process_buf(l->se, &w->buf);
        served = 1;
    }
    return NULL;
}

int loop_run(struct fuse_session *se, const struct loop_config *cfg)
{
    struct loop l = {
        .se = se,
        .max_threads = cfg->max_threads ? cfg->max_threads : 1,
        .spin_ns = cfg->spin_us * 1000,
    };
    int rc = -ENOMEM;
    if (pthread_mutex_init(&l.lock, NULL) != 0)
        return rc;
    if (pthread_cond_init(&l.wake, NULL) != 0)
        goto no_cond;
    if (sem_init(&l.finish, 0, 0) != 0)
        goto no_sem;
    /* Signals go to this thread, which ends the loop: the workers start
     * with them blocked. */
    sigset_t all_signals, old;
    sigfillset(&all_signals);
    pthread_sigmask(SIG_BLOCK, &all_signals, &old);
    pthread_mutex_lock(&l.lock);
    rc = start_worker(&l);
    pthread_mutex_unlock(&l.lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        /* A signal (fuse_set_signal_handlers) or an unmount ends it. */
        while (!fuse_session_exited(se))
            sem_wait(&l.finish);
    }
    pthread_mutex_lock(&l.lock);
    pthread_cond_broadcast(&l.wake);
    struct worker *all = l.workers;
    l.workers = NULL;
    pthread_mutex_unlock(&l.lock);
    /* The leader, blocked on the device, is cancelled there; the others
     * finish what they serve, see the session ended and return. */
    for (struct worker *w = all; w; w = w->next)
        pthread_cancel(w->thread);
    while (all) {
        struct worker *w = all;
        all = w->next;
        pthread_join(w->thread, NULL);
        free(w->buf.mem);
        free(w);
    }
    fuse_session_reset(se);
    if (rc == 0)
        rc = l.error;
    sem_destroy(&l.finish);
no_sem:
    pthread_cond_destroy(&l.wake);
no_cond:
    pthread_mutex_destroy(&l.lock);
    return rc;
}
