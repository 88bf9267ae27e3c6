/* CPython extension: sparse x dense kernels with run-time AVX2/FMA dispatch and a thread pool.
 *
 * Python passes plain buffers (no NumPy headers are needed to build), so the extension compiles
 * with nothing but the local C compiler.  The kernel bodies live in spmm_impl.h and are compiled
 * twice: once for AVX2+FMA (selected only when the CPU reports both) and once portable. Threads
 * come from the pool in thread_pool.h.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif

typedef struct {
    int m, k, n;                 /* W is m x k, X is k x n, Y is m x n */
    int block_rows, block_cols;  /* 1x1 is CSR */
    const int32_t *block_ptr;    /* ceil(m / block_rows) + 1 offsets into block_col */
    const int32_t *block_col;    /* first column of each block */
    const float *values;         /* block_rows * block_cols per block, column-major in a block */
    const float *x;
    float *y;
    const float *bias;           /* m entries, or NULL */
    const float *residual;       /* m x n added before the activation (fused Add), or NULL */
    float lo, hi;                /* fused activation: clip(v, lo, hi) */
    /* Where Y[row, col] is: y[(row - y_row0) * ldy + col - y_col0] (ldy = n, 0, 0 for all of Y;
     * a fused layer writes a block of rows and columns into a buffer of its own). */
    int y_row0, y_col0, ldy;
    int ldr; /* floats between residual rows (n unless a fused layer says otherwise) */
    float *strip; /* strips: this thread's copy of X's current strip (set by spmm_range) */
} spmm_args;

#define DEPTHWISE_MAX_TAPS 49 /* up to 7x7 filters */

typedef struct {
    int c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
    const float *x, *weight, *bias;  /* weight: c x kh x kw; bias: c entries or NULL */
    float *y;
    float lo, hi;
    int ch0;     /* plane p of x uses filter (p + ch0) % c */
    int y_plane; /* floats between output planes; 0 means oh * ow */
} depthwise_args;

/* Scratch of ``count`` floats on a 64-byte boundary; NULL when out of memory. It is the calling
 * thread's, kept between calls and grown as needed: buffers of hundreds of KiB come from mmap and
 * would pay a page fault per 4 KiB on every call (MobileNet makes ~40 such calls per image). The
 * GIL is released while kernels run, so each Python thread has its own. */
static __thread float *thread_scratch = NULL;
static __thread size_t thread_scratch_floats = 0;

static float *take_scratch(size_t count) {
    if (count > thread_scratch_floats) {
        void *memory = NULL;
        if (posix_memalign(&memory, 64, sizeof(float) * (count + 16)) != 0) return NULL;
        free(thread_scratch);
        thread_scratch = memory;
        thread_scratch_floats = count;
    }
    return thread_scratch;
}

/* The calling thread's buffer for strips of X (K x strip width, 64-byte aligned), kept and
 * grown like thread_scratch but apart from it: fused layers run the product while their
 * depthwise scratch is in use. NULL when out of memory (the caller runs tiles in place). */
static __thread float *strip_buffer = NULL;
static __thread size_t strip_buffer_floats = 0;

static float *take_strip_buffer(size_t count) {
    if (count > strip_buffer_floats) {
        void *memory = NULL;
        if (posix_memalign(&memory, 64, sizeof(float) * count) != 0) return NULL;
        free(strip_buffer);
        strip_buffer = memory;
        strip_buffer_floats = count;
    }
    return strip_buffer;
}

/* Zeroes the first ``zeroed`` floats of each of ``slices`` slices ``stride`` floats apart. */
static void zero_slices(float *scratch, int slices, size_t stride, size_t zeroed) {
    for (int t = 0; t < slices; ++t) memset(scratch + stride * t, 0, sizeof(float) * zeroed);
}

static size_t round16(size_t floats) { return (floats + 15) / 16 * 16; }

/* 3x3 depthwise filters with dilation 1 and equal strides 1 or 2 run the fast path. */
static int depthwise_fast_3x3(const depthwise_args *a) {
    return a->kh == 3 && a->kw == 3 && a->dh == 1 && a->dw == 1 && a->sh == a->sw &&
           (a->sh == 1 || a->sh == 2);
}

/* Floats per padded scratch row: the padded width for the general path; for the fast path
 * room for a vector's over-read past the row, and stride 2 keeps even then odd columns. */
static int depthwise_row_floats(const depthwise_args *a) {
    const int pw = a->w + a->pl + a->pr;
    if (!depthwise_fast_3x3(a)) return pw;
    return a->sh == 1 ? pw + 32 : 2 * ((pw + 1) / 2 + 16);
}

/* One thread's zeroed scratch: the padded plane and spare floats for over-reads. */
static size_t depthwise_scratch_floats(const depthwise_args *a) {
    return round16((size_t)(a->h + a->pt + a->pb) * depthwise_row_floats(a) + 64);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_BUILD 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA(name) name##_avx2
#define VEC_FLOATS 8
#include "vec_impl.h"
#include "spmm_impl.h"
#include "depthwise_impl.h"
#include "vec_end.h"
#undef VEC_FLOATS
#undef ISA
#pragma GCC pop_options
#endif

#define ISA(name) name##_portable
#define VEC_FLOATS 4
#include "vec_impl.h"
#include "spmm_impl.h"
#include "depthwise_impl.h"
#include "vec_end.h"
#undef VEC_FLOATS
#undef ISA

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AUTO = -1 };

/* Below this many columns per thread, threads split rows instead (see run_threads). A row
 * share copies every strip of X, so from 64 columns a thread a column split scales better:
 * 256x256x256 4x1 blocks 1.02x -> 1.69x on 2 threads, 512x512x196 1.72x -> 1.79x (best of 40
 * runs); at N = 49 rows stay better (1.89x against 1.31x for columns). */
#define COLUMNS_PER_THREAD 64
/* Column items are at least this wide (narrower tiles keep fewer FMA chains in flight). */
#define MIN_ITEM_COLUMNS 32

static int cpu_has_avx2_fma(void) {
#ifdef HAVE_AVX2_BUILD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

typedef void (*range_fn)(const spmm_args *, int, int, int, int);
typedef void (*planes_fn)(const depthwise_args *, int, int, float *);

/* The instruction set a call runs: AVX2+FMA when built, supported and not refused. */
static int pick_isa(int requested) {
#ifdef HAVE_AVX2_BUILD
    if (requested != ISA_PORTABLE && cpu_has_avx2_fma()) return ISA_AVX2;
#endif
    (void)requested;
    return ISA_PORTABLE;
}

/* ``name``'s copy for the instruction set a call runs (from pick_isa). */
#ifdef HAVE_AVX2_BUILD
#define FOR_ISA(name, isa) ((isa) == ISA_AVX2 ? name##_avx2 : name##_portable)
#else
#define FOR_ISA(name, isa) ((void)(isa), name##_portable)
#endif

/* First block row of thread t's share when block rows are split by stored blocks, so threads get
 * equal work even when the sparsity differs between rows. */
static int balanced_row(const spmm_args *a, int mblocks, int t, int nt) {
    long total = a->block_ptr[mblocks], target = total * t / nt;
    int lo = 0, hi = mblocks;
    if (total == 0) return (int)((long)mblocks * t / nt);
    while (lo < hi) { /* first row whose start offset reaches the target */
        int mid = (lo + hi) / 2;
        if (a->block_ptr[mid] < target) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

#include "thread_pool.h"

/* Work items per thread for the depthwise and fused calls, taken first come first served (see
 * thread_pool.h): a thread that starts late or runs slow costs at most the item in hand. */
#define ITEMS_PER_THREAD 4

/* Items for ``units`` units of work (planes, rows) on ``threads`` threads. */
static int items_for(Py_ssize_t units, int threads) {
    const Py_ssize_t most = threads > 1 ? (Py_ssize_t)threads * ITEMS_PER_THREAD : 1;
    return (int)(units < most ? units : most);
}

typedef struct {
    range_fn fn;
    const spmm_args *a;
    int split_cols, items, mblocks, col_groups;
} spmm_job;

/* Item t of a product split by columns (groups of 8) or by block rows balanced by stored blocks. */
static void spmm_item(void *ctx, int t, int thread) {
    const spmm_job *job = ctx;
    const spmm_args *a = job->a;
    (void)thread;
    if (job->split_cols) {
        int g0 = (int)((long)job->col_groups * t / job->items);
        int g1 = (int)((long)job->col_groups * (t + 1) / job->items);
        int n0 = g0 * 8, n1 = g1 * 8 < a->n ? g1 * 8 : a->n;
        if (n0 < n1) job->fn(a, 0, job->mblocks, n0, n1);
    } else {
        int b0 = balanced_row(a, job->mblocks, t, job->items);
        int b1 = t == job->items - 1 ? job->mblocks
                                     : balanced_row(a, job->mblocks, t + 1, job->items);
        if (b0 < b1) job->fn(a, b0, b1, 0, a->n);
    }
}

/* Columns when every thread gets COLUMNS_PER_THREAD or more (weights shared, X strips private),
 * in up to ITEMS_PER_THREAD items a thread taken first come first served (thread_pool.h): when
 * one core runs slower for a while (on this 2-vCPU VM one core's throughput drops 20-50% at
 * times while both are busy) the other takes more items. Median 2-thread scaling over 1 thread
 * went 1.46 -> 1.75 (128x128x3136 CSR), 1.30 -> 1.59 (256x256x784 4x1), 1.82 -> 2.02
 * (768x768x512 4x1) against one item a thread. Else one share of block rows per thread,
 * balanced by stored blocks, so each copies X's strips once (finer row items would each copy
 * all of X). */
static void run_threads(range_fn fn, const spmm_args *a, int threads) {
    spmm_job job = {fn, a, 0, threads, (a->m + a->block_rows - 1) / a->block_rows, (a->n + 7) / 8};
    if (threads <= 1 || (job.mblocks < 2 && job.col_groups < 2)) {
        fn(a, 0, job.mblocks, 0, a->n);
        return;
    }
    job.split_cols = a->n >= threads * COLUMNS_PER_THREAD || job.mblocks < 2 * threads;
    if (job.split_cols) {
        const int wide = a->n / MIN_ITEM_COLUMNS, most = threads * ITEMS_PER_THREAD;
        job.items = wide < most ? wide : most;
        if (job.items < threads) job.items = threads;
    }
    const int units = job.split_cols ? job.col_groups : job.mblocks;
    if (job.items > units) job.items = units;
    pool_run(spmm_item, &job, job.items, threads);
}

#include "fused.h"

/* ---- Python bindings ---------------------------------------------------------------------
 * Python passes plain buffers; every one taken is released by release_all on every path. */

typedef struct {
    Py_buffer views[16];
    int count;
} buffer_set;

/* The buffer of ``obj`` (C-contiguous, 4-byte items, at least ``items``), or NULL with an error
 * set; ``optional`` accepts None (NULL, no error). */
static void *take(buffer_set *s, PyObject *obj, Py_ssize_t items, int writable, int optional,
                  const char *what) {
    if (optional && obj == Py_None) return NULL;
    Py_buffer *view = &s->views[s->count];
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return NULL;
    s->count++;
    if (view->itemsize != 4 || view->len < items * 4) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least %zd items of 4 bytes, got %zd bytes",
                     what, items, view->len);
        return NULL;
    }
    return view->buf;
}

static void release_all(buffer_set *s) {
    while (s->count > 0) PyBuffer_Release(&s->views[--s->count]);
}

/* Fills a's sparse weights (block_ptr, block_col, values, bias) after checking their sizes
 * only: ``block_ptr`` non-decreasing and every ``block_col`` inside X are checked once, when the
 * Python SparseMatrix is built (its arrays are read-only from then on): per call the O(blocks)
 * check cost ~25 us of a 1024 x 1024 layer at 90%, serial, 7-10% of the call. Callers of this
 * private module pass SparseMatrix arrays only (workers/runtime/kernels.py). */
static int take_sparse(buffer_set *s, spmm_args *a, PyObject *ptr_o, PyObject *col_o,
                       PyObject *val_o, PyObject *bias_o) {
    if (a->m < 0 || a->k < 0 || a->n < 0 || a->block_rows < 1 || a->block_cols < 1) {
        PyErr_SetString(PyExc_ValueError, "spmm: negative size or empty block");
        return -1;
    }
    const int mblocks = (a->m + a->block_rows - 1) / a->block_rows, bc = a->block_cols;
    const int32_t *ptr = take(s, ptr_o, mblocks + 1, 0, 0, "block_ptr");
    if (!ptr) return -1;
    if (ptr[0] != 0 || ptr[mblocks] < 0 || (ptr[mblocks] > 0 && a->k < bc)) {
        PyErr_SetString(PyExc_ValueError, "spmm: block_ptr must run from 0 to the block count");
        return -1;
    }
    const Py_ssize_t nblocks = ptr[mblocks];
    const int32_t *cols = take(s, col_o, nblocks, 0, 0, "block_col");
    if (!cols || !(a->values = take(s, val_o, nblocks * a->block_rows * bc, 0, 0, "values")))
        return -1;
    a->block_ptr = ptr;
    a->block_col = cols;
    a->bias = take(s, bias_o, a->m, 0, 1, "bias");
    return PyErr_Occurred() ? -1 : 0;
}

/* Checks a's geometry and fills its filter and bias (c x kh x kw and c floats). */
static int take_depthwise(buffer_set *s, depthwise_args *a, PyObject *w_o, PyObject *bias_o) {
    if (a->c < 0 || a->h < 0 || a->w < 0 || a->oh < 0 || a->ow < 0 || a->kh < 1 || a->kw < 1 ||
        a->sh < 1 || a->sw < 1 || a->dh < 1 || a->dw < 1 || a->pt < 0 || a->pl < 0 ||
        a->pb < 0 || a->pr < 0 ||
        (a->oh - 1) * a->sh + (a->kh - 1) * a->dh >= a->h + a->pt + a->pb ||
        (a->ow - 1) * a->sw + (a->kw - 1) * a->dw >= a->w + a->pl + a->pr ||
        a->kh * a->kw > DEPTHWISE_MAX_TAPS) {
        PyErr_SetString(PyExc_ValueError, "depthwise: invalid geometry");
        return -1;
    }
    if (!(a->weight = take(s, w_o, (Py_ssize_t)a->c * a->kh * a->kw, 0, 0, "weight"))) return -1;
    a->bias = take(s, bias_o, a->c, 0, 1, "bias");
    return PyErr_Occurred() ? -1 : 0;
}

#define PARSE_DEPTHWISE_GEOMETRY(a)                                                               \
    &(a).h, &(a).w, &(a).oh, &(a).ow, &(a).kh, &(a).kw, &(a).sh, &(a).sw, &(a).pt, &(a).pl,     \
        &(a).pb, &(a).pr, &(a).dh, &(a).dw, &(a).lo, &(a).hi

static PyObject *py_spmm(PyObject *self, PyObject *args) {
    PyObject *ptr_o, *col_o, *val_o, *x_o, *y_o, *bias_o, *res_o;
    int batch, threads, isa;
    spmm_args a = {0};
    buffer_set s = {.count = 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiiOOOOOOOiffii", &a.m, &a.k, &a.n, &a.block_rows,
                          &a.block_cols, &ptr_o, &col_o, &val_o, &x_o, &y_o, &bias_o, &res_o,
                          &batch, &a.lo, &a.hi, &threads, &isa))
        return NULL;
    a.ldy = a.ldr = a.n;
    const size_t xs = (size_t)a.k * a.n, ys = (size_t)a.m * a.n;
    const float *x, *residual;
    float *y;
    if (batch < 0 || take_sparse(&s, &a, ptr_o, col_o, val_o, bias_o) < 0 ||
        !(x = take(&s, x_o, batch * xs, 0, 0, "x")) ||
        !(y = take(&s, y_o, batch * ys, 1, 0, "y")) ||
        ((residual = take(&s, res_o, batch * ys, 0, 1, "residual")), PyErr_Occurred())) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "spmm: negative batch");
        release_all(&s);
        return NULL;
    }
    const int chosen = pick_isa(isa);
    range_fn fn = FOR_ISA(spmm_range, chosen);
    Py_BEGIN_ALLOW_THREADS
    for (int b = 0; b < batch; ++b) {
        a.x = x + b * xs;
        a.y = y + b * ys;
        a.residual = residual ? residual + b * ys : NULL;
        run_threads(fn, &a, threads);
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    return PyLong_FromLong(chosen);
}

typedef struct {
    planes_fn fn;
    const depthwise_args *a;
    Py_ssize_t planes;
    int items;
    float *scratch;
    size_t scratch_floats;
} depthwise_job;

/* Item ``item`` of a depthwise call: its share of the planes, on this thread's scratch slice. */
static void depthwise_item(void *ctx, int item, int thread) {
    const depthwise_job *job = ctx;
    const int p0 = (int)(job->planes * item / job->items);
    const int p1 = (int)(job->planes * (item + 1) / job->items);
    job->fn(job->a, p0, p1, job->scratch + job->scratch_floats * thread);
}

static PyObject *py_depthwise(PyObject *self, PyObject *args) {
    PyObject *x_o, *w_o, *bias_o, *y_o;
    int batch, threads, isa;
    depthwise_args a = {0};
    buffer_set s = {.count = 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOiiiiiiiiiiiiiiiiffii", &x_o, &w_o, &bias_o, &y_o, &batch,
                          &a.c, PARSE_DEPTHWISE_GEOMETRY(a), &threads, &isa))
        return NULL;
    const Py_ssize_t planes = (Py_ssize_t)batch * a.c;
    if (batch < 0 || take_depthwise(&s, &a, w_o, bias_o) < 0 ||
        !(a.x = take(&s, x_o, planes * a.h * a.w, 0, 0, "x")) ||
        !(a.y = take(&s, y_o, planes * a.oh * a.ow, 1, 0, "y"))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "depthwise: negative batch");
        release_all(&s);
        return NULL;
    }
    const int chosen = pick_isa(isa);
    planes_fn fn = FOR_ISA(depthwise_planes, chosen);
    if (threads < 1) threads = 1;
    const size_t scratch_floats = depthwise_scratch_floats(&a);
    float *scratch = take_scratch(scratch_floats * threads);
    if (!scratch) {
        release_all(&s);
        return PyErr_NoMemory();
    }
    zero_slices(scratch, threads, scratch_floats, FOR_ISA(depthwise_zeroed, chosen)(&a));
    depthwise_job job = {fn, &a, planes, items_for(planes, threads), scratch, scratch_floats};
    Py_BEGIN_ALLOW_THREADS
    pool_run(depthwise_item, &job, job.items, threads);
    Py_END_ALLOW_THREADS
    release_all(&s);
    return PyLong_FromLong(chosen);
}

/* Validates the optional project convolution of a fused layer (m2 == 0: none) and sets its
 * weights, bias and residual (batch images of m2 x pixels). */
static int take_project(buffer_set *s, spmm_args *pj, PyObject *ptr_o, PyObject *col_o,
                        PyObject *val_o, PyObject *bias_o, PyObject *res_o, int batch,
                        size_t pixels) {
    if (pj->m == 0) return 0;
    if (take_sparse(s, pj, ptr_o, col_o, val_o, bias_o) < 0) return -1;
    pj->residual = take(s, res_o, batch * (size_t)pj->m * pixels, 0, 1, "residual");
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *py_conv_depthwise(PyObject *self, PyObject *args) {
    PyObject *ptr_o, *col_o, *val_o, *ebias_o, *x_o, *w_o, *dbias_o, *y_o;
    PyObject *pptr_o, *pcol_o, *pval_o, *pbias_o, *res_o;
    int batch, threads, isa;
    spmm_args e = {0}, pj = {0};
    conv_geometry g;
    depthwise_args d = {0};
    buffer_set s = {.count = 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiOOOOffiiiiiiiiiiiOOOOiiiiiiiiiiiiiiiffiiiiiOOOOffO", &e.m,
                          &e.k, &e.block_rows, &e.block_cols, &ptr_o, &col_o, &val_o, &ebias_o,
                          &e.lo, &e.hi, &g.c, &g.h, &g.w, &g.kh, &g.kw, &g.sh, &g.sw, &g.pt, &g.pl,
                          &g.dh, &g.dw, &x_o, &w_o, &dbias_o, &y_o, &batch,
                          PARSE_DEPTHWISE_GEOMETRY(d), &threads, &isa, &pj.m, &pj.block_rows,
                          &pj.block_cols, &pptr_o, &pcol_o, &pval_o, &pbias_o, &pj.lo, &pj.hi,
                          &res_o))
        return NULL;
    d.c = e.m;
    e.n = d.h * d.w;
    const size_t pixels = (size_t)d.oh * d.ow;
    pj.k = d.c;
    pj.n = pj.ldy = pj.ldr = (int)pixels;
    const size_t xs = (size_t)g.c * g.h * g.w, ys = (size_t)(pj.m ? pj.m : d.c) * pixels;
    const float *x;
    float *y;
    if (g.c < 0 || g.h < 0 || g.w < 0 || g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 ||
        g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0 || e.k != g.c * g.kh * g.kw || pj.m < 0) {
        PyErr_SetString(PyExc_ValueError, "conv_depthwise: invalid convolution geometry");
        return NULL;
    }
    if (batch < 0 || take_sparse(&s, &e, ptr_o, col_o, val_o, ebias_o) < 0 ||
        take_depthwise(&s, &d, w_o, dbias_o) < 0 ||
        take_project(&s, &pj, pptr_o, pcol_o, pval_o, pbias_o, res_o, batch, pixels) < 0 ||
        !(x = take(&s, x_o, batch * xs, 0, 0, "x")) ||
        !(y = take(&s, y_o, batch * ys, 1, 0, "y"))) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "conv_depthwise: negative batch");
        release_all(&s);
        return NULL;
    }
    const int chosen = pick_isa(isa);
    if (threads < 1) threads = 1;
    const fused_plan plan = plan_fused(&e, &g, &d, pj.m > 0, threads);
    const size_t scratch_floats = depthwise_scratch_floats(&d);
    /* One thread scratch: the depthwise slices first, then the bands, im2col and depthwise
     * bands. The full-image geometry picks the depthwise path unless bands split the image
     * (a band's geometry may take another path): then all of the padded plane is zeroed. */
    const size_t slices = scratch_floats * threads;
    const size_t per_thread = plan.buffer_floats + plan.cols_floats;
    const size_t dw_total = plan.dw_floats * (plan.project_bands ? threads : 1);
    float *scratch = take_scratch(slices + per_thread * threads + dw_total);
    if (!scratch) {
        release_all(&s);
        return PyErr_NoMemory();
    }
    const size_t zeroed =
        plan.band < d.oh ? scratch_floats : FOR_ISA(depthwise_zeroed, chosen)(&d);
    zero_slices(scratch, threads, scratch_floats, zeroed);
    float *buffers = scratch + slices, *cols = buffers + plan.buffer_floats * threads;
    float *dw_out = cols + plan.cols_floats * threads;
    const float *residual = pj.residual;
    Py_BEGIN_ALLOW_THREADS
    for (int b = 0; b < batch; ++b) {
        e.x = x + b * xs;
        d.y = pj.m ? NULL : y + b * ys;
        pj.y = y + b * ys;
        pj.residual = residual ? residual + b * ys : NULL;
        conv_depthwise(FOR_ISA(spmm_range, chosen), FOR_ISA(depthwise_planes, chosen), &e, &g, &d,
                       pj.m ? &pj : NULL, threads, buffers, cols, dw_out, scratch);
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    return PyLong_FromLong(chosen);
}

static PyObject *py_im2col(PyObject *self, PyObject *args) {
    PyObject *x_o, *out_o;
    int c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiiiiiiiiiiiiii", &x_o, &out_o, &c, &h, &w, &kh, &kw, &sh, &sw,
                          &pt, &pl, &dh, &dw, &oh, &ow, &threads))
        return NULL;
    if (c < 0 || h < 0 || w < 0 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 ||
        oh < 0 || ow < 0) {
        PyErr_SetString(PyExc_ValueError, "im2col: invalid geometry");
        return NULL;
    }
    buffer_set s = {.count = 0};
    const float *x = take(&s, x_o, (Py_ssize_t)c * h * w, 0, 0, "x");
    float *out = x ? take(&s, out_o, (Py_ssize_t)c * kh * kw * oh * ow, 1, 0, "out") : NULL;
    if (!out) {
        release_all(&s);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    im2col(x, out, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, threads);
    Py_END_ALLOW_THREADS
    release_all(&s);
    Py_RETURN_NONE;
}

/* Mean of each of ``planes`` rows of ``size`` floats, clipped: GlobalAveragePool (+ Relu/Clip). */
static PyObject *py_average_pool(PyObject *self, PyObject *args) {
    PyObject *x_o, *y_o;
    int planes, size;
    float lo, hi;
    buffer_set s = {.count = 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "OOiiff", &x_o, &y_o, &planes, &size, &lo, &hi)) return NULL;
    const float *x = planes >= 0 && size >= 0
                         ? take(&s, x_o, (Py_ssize_t)planes * size, 0, 0, "x") : NULL;
    float *y = x ? take(&s, y_o, planes, 1, 0, "y") : NULL;
    if (!y) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "average_pool: negative size");
        release_all(&s);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int p = 0; p < planes; ++p) {
        const float *row = x + (size_t)p * size;
        float sums[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int i = 0;
        for (; i + 4 <= size; i += 4)
            for (int u = 0; u < 4; ++u) sums[u] += row[i + u];
        for (; i < size; ++i) sums[0] += row[i];
        const float mean = size ? ((sums[0] + sums[1]) + (sums[2] + sums[3])) / (float)size : 0.0f;
        y[p] = mean < lo ? lo : (mean > hi ? hi : mean);
    }
    Py_END_ALLOW_THREADS
    release_all(&s);
    Py_RETURN_NONE;
}

static PyObject *py_build_info(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#ifdef HAVE_AVX2_BUILD
    int avx2_built = 1;
#else
    int avx2_built = 0;
#endif
    return Py_BuildValue("{s:i,s:i,s:i}", "thread_pool", 1, "avx2_fma_compiled", avx2_built,
                         "cpu_avx2_fma", cpu_has_avx2_fma());
}

static PyObject *py_set_thread_spin(PyObject *self, PyObject *args) {
    int microseconds;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &microseconds)) return NULL;
    if (microseconds < 0) {
        PyErr_SetString(PyExc_ValueError, "set_thread_spin: negative time");
        return NULL;
    }
    const int before = pool_spin_us();
    atomic_store(&pool.spin_us, microseconds);
    return PyLong_FromLong(before);
}

static PyObject *py_thread_pool_stats(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return Py_BuildValue("{s:i,s:l}", "workers", pool.workers, "worker_items",
                         atomic_load(&pool.worker_items));
}

static PyMethodDef methods[] = {
    {"spmm", py_spmm, METH_VARARGS,
     "spmm(m, k, n, block_rows, block_cols, block_ptr, block_col, values, x, y, bias, residual, "
     "batch, lo, hi, threads, isa) -> isa used (0 portable, 1 avx2)"},
    {"depthwise", py_depthwise, METH_VARARGS,
     "depthwise(x, weight, bias, y, batch, c, h, w, oh, ow, kh, kw, sh, sw, pad_top, pad_left, "
     "pad_bottom, pad_right, dh, dw, lo, hi, threads, isa) -> isa used"},
    {"conv_depthwise", py_conv_depthwise, METH_VARARGS,
     "conv_depthwise(m, k, block_rows, block_cols, block_ptr, block_col, values, bias, lo, hi, "
     "c, h, w, kh, kw, sh, sw, pad_top, pad_left, dh, dw, x, dw_weight, dw_bias, y, batch, "
     "dw_h, dw_w, oh, ow, dw_kh, dw_kw, dw_sh, dw_sw, dw_pad_top, dw_pad_left, dw_pad_bottom, "
     "dw_pad_right, dw_dh, dw_dw, dw_lo, dw_hi, threads, isa, project_m, project_block_rows, "
     "project_block_cols, project_block_ptr, project_block_col, project_values, project_bias, "
     "project_lo, project_hi, residual) -> isa used (project_m 0: no project convolution)"},
    {"im2col", py_im2col, METH_VARARGS,
     "im2col(x, out, c, h, w, kh, kw, sh, sw, pad_top, pad_left, dh, dw, oh, ow, threads)"},
    {"average_pool", py_average_pool, METH_VARARGS,
     "average_pool(x, y, planes, size, lo, hi): y[p] = clip(mean(x[p, :]), lo, hi)"},
    {"build_info", py_build_info, METH_NOARGS, "compile-time and CPU features"},
    {"set_thread_spin", py_set_thread_spin, METH_VARARGS,
     "set_thread_spin(microseconds) -> previous: how long idle pool workers spin before sleeping"},
    {"thread_pool_stats", py_thread_pool_stats, METH_NOARGS,
     "{'workers': started, 'worker_items': work items run by workers so far}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sparse_kernels",
                                    "Sparse x dense kernels (AVX2/FMA with portable fallback).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__sparse_kernels(void) { return PyModule_Create(&module); }
