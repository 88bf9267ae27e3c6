/* Copy the kept channels of a weight tensor: a gather along one or more axes, in one pass.
 *
 * Pruning keeps a sorted subset of positions on some axes of every member initializer. numpy's
 * take copies one axis per call through a generic per-element loop (3 ns a float along the last
 * axis); a ViT-B keeps 170 MB this way. Here the tensor is viewed as collapsed dims (a cut axis,
 * or a run of uncut axes) over a contiguous trailing block, and the kept blocks are copied in
 * order, straight into the destination.
 *
 * Because kept positions strictly increase, every destination offset is at or before its source
 * offset: the destination may be the source buffer itself (compaction in place), which needs no
 * new memory, so no page faults on fresh pages and nothing to release afterwards.
 *
 * The innermost cut dim is planned once per job (its kept positions are the same for every outer
 * position): consecutive kept positions merge into runs copied by one memmove each (pruned
 * attention heads keep runs of head_dim), and scattered 4-byte elements (MLP channels of a
 * transposed weight) are packed 8 source elements at a time with an AVX2 permutation, where the
 * CPU has it: a scalar element loop moves ~1 element a ns, well under memory speed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define MAX_DIMS 32

typedef struct {
    Py_ssize_t count;       /* positions copied along this dim */
    const int64_t *kept;    /* kept positions, or NULL for 0..count-1 */
    size_t stride;          /* bytes between positions in the source */
} Dim;

/* How the innermost dim is copied, decided once per job from its kept positions. */
enum InnerMode { INNER_ELEMENTS, INNER_RUNS, INNER_PACK8 };

typedef struct {
    enum InnerMode mode;
    Py_ssize_t runs;         /* INNER_RUNS: number of runs */
    int64_t *run_start;      /* INNER_RUNS: first position of each run */
    int64_t *run_length;     /* INNER_RUNS: positions in each run */
    Py_ssize_t chunks;       /* INNER_PACK8: full chunks of 8 source elements */
    uint8_t *chunk_mask;     /* INNER_PACK8: bit i set when element 8c+i is kept */
    Py_ssize_t tail_from;    /* INNER_PACK8: first kept index past the full chunks */
} Inner;

/* Runs of at least this many bytes on average are copied run by run: memmove's call cost then
 * stays below the per-element loop's. */
#define MIN_RUN_BYTES 32

static int cpu_has_avx2 = 0;

#ifdef HAVE_X86
static int32_t pack_table[256][8]; /* lanes of the set bits of a mask, low first */

static void pack_table_fill(void) {
    for (int mask = 0; mask < 256; ++mask) {
        int lane = 0;
        for (int bit = 0; bit < 8; ++bit)
            if (mask & (1 << bit)) pack_table[mask][lane++] = bit;
        while (lane < 8) pack_table[mask][lane++] = 0;
    }
}

/* Packs the kept elements of one row: every chunk of 8 source floats is loaded, permuted so its
 * kept lanes come first and stored whole at the destination, which then advances by the kept
 * count; the lanes past it are overwritten by the next store. A whole-vector store is safe in
 * place: the destination never passes the start of the next unread chunk (the kept elements
 * before a chunk are at most the elements before it). It is only done while 8 lanes fit before
 * ``limit`` (the job's kept end), the rest element by element. */
__attribute__((target("avx2,popcnt"))) static char *pack8_row(const char *src, char *dst,
                                                       const Dim *dim, const Inner *inner,
                                                       const char *limit) {
    const float *from = (const float *)src;
    float *to = (float *)dst;
    for (Py_ssize_t c = 0; c < inner->chunks; ++c) {
        const unsigned mask = inner->chunk_mask[c];
        if (mask == 0) continue;
        const int kept = __builtin_popcount(mask);
        if ((const char *)(to + 8) <= limit) {
            const __m256 values = _mm256_loadu_ps(from + 8 * c);
            const __m256i lanes = _mm256_loadu_si256((const __m256i *)pack_table[mask]);
            _mm256_storeu_ps(to, _mm256_permutevar8x32_ps(values, lanes));
        } else {
            for (int i = 0; i < kept; ++i) to[i] = from[8 * c + pack_table[mask][i]];
        }
        to += kept;
    }
    for (Py_ssize_t i = inner->tail_from; i < dim->count; ++i) *to++ = from[dim->kept[i]];
    return (char *)to;
}
#endif

/* Copies the kept blocks below `src` at `level` to `dst`; returns the destination's new end. */
static char *gather_level(const char *src, char *dst, const Dim *dims, int level, int last,
                          size_t block, const Inner *inner, const char *limit) {
    const Dim *dim = &dims[level];
    if (level < last) {
        for (Py_ssize_t i = 0; i < dim->count; ++i) {
            const Py_ssize_t at = dim->kept ? (Py_ssize_t)dim->kept[i] : i;
            dst = gather_level(src + (size_t)at * dim->stride, dst, dims, level + 1, last, block,
                               inner, limit);
        }
        return dst;
    }
    if (inner->mode == INNER_RUNS) {
        for (Py_ssize_t r = 0; r < inner->runs; ++r) {
            const size_t bytes = (size_t)inner->run_length[r] * block;
            memmove(dst, src + (size_t)inner->run_start[r] * block, bytes);
            dst += bytes;
        }
        return dst;
    }
#ifdef HAVE_X86
    if (inner->mode == INNER_PACK8) return pack8_row(src, dst, dim, inner, limit);
#endif
    /* Blocks of one element get a typed loop (same size, never partly overlapping, so safe in
     * place); longer blocks a memmove (overlap allowed). */
    if (block == 4) {
        for (Py_ssize_t i = 0; i < dim->count; ++i) {
            uint32_t word;
            memcpy(&word, src + (size_t)dim->kept[i] * 4, 4);
            memcpy(dst + (size_t)i * 4, &word, 4);
        }
    } else if (block == 8) {
        for (Py_ssize_t i = 0; i < dim->count; ++i) {
            uint64_t word;
            memcpy(&word, src + (size_t)dim->kept[i] * 8, 8);
            memcpy(dst + (size_t)i * 8, &word, 8);
        }
    } else {
        for (Py_ssize_t i = 0; i < dim->count; ++i)  /* the innermost dim is always cut */
            memmove(dst + (size_t)i * block, src + (size_t)dim->kept[i] * block, block);
    }
    return dst + (size_t)dim->count * block;
}

static void inner_release(Inner *inner) {
    PyMem_Free(inner->run_start);
    PyMem_Free(inner->run_length);
    PyMem_Free(inner->chunk_mask);
    memset(inner, 0, sizeof *inner);
}

/* Picks the innermost dim's copy: runs when they are long enough, 8-lane packing for scattered
 * floats on AVX2, element by element otherwise. 0, or -1 with MemoryError set. */
static int inner_plan(Inner *inner, const Dim *dim, Py_ssize_t size, Py_ssize_t block) {
    memset(inner, 0, sizeof *inner);
    const int64_t *kept = dim->kept;
    const Py_ssize_t count = dim->count;
    Py_ssize_t runs = 0;
    for (Py_ssize_t i = 0; i < count; ++i)
        if (i == 0 || kept[i] != kept[i - 1] + 1) ++runs;
    if (runs > 0 && count * block >= runs * MIN_RUN_BYTES) {
        inner->run_start = PyMem_Malloc((size_t)runs * sizeof(int64_t));
        inner->run_length = PyMem_Malloc((size_t)runs * sizeof(int64_t));
        if (!inner->run_start || !inner->run_length) goto no_memory;
        Py_ssize_t r = -1;
        for (Py_ssize_t i = 0; i < count; ++i) {
            if (i == 0 || kept[i] != kept[i - 1] + 1) {
                inner->run_start[++r] = kept[i];
                inner->run_length[r] = 0;
            }
            inner->run_length[r]++;
        }
        inner->runs = runs;
        inner->mode = INNER_RUNS;
        return 0;
    }
    if (block == 4 && cpu_has_avx2 && size >= 8) {
        const Py_ssize_t chunks = size / 8;
        inner->chunk_mask = PyMem_Calloc((size_t)chunks, 1);
        if (!inner->chunk_mask) goto no_memory;
        Py_ssize_t i = 0;
        for (; i < count && kept[i] < chunks * 8; ++i)
            inner->chunk_mask[kept[i] / 8] |= (uint8_t)(1u << (kept[i] % 8));
        inner->chunks = chunks;
        inner->tail_from = i;
        inner->mode = INNER_PACK8;
        return 0;
    }
    inner->mode = INNER_ELEMENTS;
    return 0;
no_memory:
    inner_release(inner);
    PyErr_NoMemory();
    return -1;
}

/* One gather's arguments, parsed and checked while holding the GIL; the copy itself needs none. */
typedef struct {
    Py_buffer src, dst, views[MAX_DIMS];
    int held, have_src, have_dst, nd;
    Dim dims[MAX_DIMS];
    Py_ssize_t block, kept_bytes;
    Inner inner;
} Job;

static void job_release(Job *job) {
    for (int i = 0; i < job->held; ++i) PyBuffer_Release(&job->views[i]);
    if (job->have_src) PyBuffer_Release(&job->src);
    if (job->have_dst) PyBuffer_Release(&job->dst);
    inner_release(&job->inner);
    job->held = job->have_src = job->have_dst = 0;
}

/* Fills ``job`` from (src, dst, sizes, kept, block); 0, or -1 with an exception set (the job's
 * buffers are released either way on failure). */
static int job_parse(Job *job, PyObject *src_o, PyObject *dst_o, PyObject *sizes,
                     PyObject *kept_list, Py_ssize_t block) {
    memset(job, 0, sizeof *job);
    if (!PyTuple_Check(sizes) || !PyTuple_Check(kept_list)) {
        PyErr_SetString(PyExc_TypeError, "gather: sizes and kept must be tuples");
        return -1;
    }
    if (PyObject_GetBuffer(src_o, &job->src, PyBUF_C_CONTIGUOUS) < 0) return -1;
    job->have_src = 1;
    if (PyObject_GetBuffer(dst_o, &job->dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto fail;
    job->have_dst = 1;
    const Py_ssize_t nd = PyTuple_GET_SIZE(sizes);
    if (nd < 1 || nd > MAX_DIMS || PyTuple_GET_SIZE(kept_list) != nd || block < 1) {
        PyErr_SetString(PyExc_ValueError, "gather: 1 to 32 dims, one kept entry each, block >= 1");
        goto fail;
    }
    job->nd = (int)nd;
    job->block = block;
    Py_ssize_t source_bytes = block, kept_bytes = block;
    for (Py_ssize_t d = nd - 1; d >= 0; --d) {
        const Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, d));
        if (size < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "gather: negative size");
            goto fail;
        }
        Dim *dim = &job->dims[d];
        dim->stride = (size_t)source_bytes;
        dim->kept = NULL;
        dim->count = size;
        PyObject *entry = PyTuple_GET_ITEM(kept_list, d);
        if (entry != Py_None) {
            Py_buffer *view = &job->views[job->held];
            if (PyObject_GetBuffer(entry, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto fail;
            job->held++;
            if (view->itemsize != 8 || view->format == NULL ||
                (strcmp(view->format, "q") != 0 && strcmp(view->format, "l") != 0)) {
                PyErr_SetString(PyExc_TypeError, "gather: kept positions must be int64");
                goto fail;
            }
            const int64_t *kept = (const int64_t *)view->buf;
            const Py_ssize_t count = view->len / 8;
            for (Py_ssize_t i = 0; i < count; ++i) {
                if (kept[i] < 0 || kept[i] >= size || (i > 0 && kept[i] <= kept[i - 1])) {
                    PyErr_Format(PyExc_ValueError,
                                 "gather: kept positions of dim %zd must increase within [0, %zd)",
                                 d, size);
                    goto fail;
                }
            }
            dim->kept = kept;
            dim->count = count;
        }
        if (d == nd - 1 && dim->kept == NULL) {
            PyErr_SetString(PyExc_ValueError, "gather: the innermost dim must be cut");
            goto fail;
        }
        source_bytes *= size;
        kept_bytes *= dim->count;
    }
    if (job->src.len != source_bytes || job->dst.len < kept_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "gather: source has %zd bytes (dims say %zd), destination %zd (needs %zd)",
                     job->src.len, source_bytes, job->dst.len, kept_bytes);
        goto fail;
    }
    job->kept_bytes = kept_bytes;
    const Py_ssize_t inner_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, nd - 1));
    if (inner_plan(&job->inner, &job->dims[nd - 1], inner_size, block) < 0) goto fail;
    return 0;
fail:
    job_release(job);
    return -1;
}

static void job_run(const Job *job) {
    gather_level((const char *)job->src.buf, (char *)job->dst.buf, job->dims, 0, job->nd - 1,
                 (size_t)job->block, &job->inner, (const char *)job->dst.buf + job->kept_bytes);
}

/* gather(src, dst, sizes, kept, block): see the module docstring of onnx_graph.kept_slices. */
static PyObject *py_gather(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *src_o, *dst_o, *sizes, *kept_list;
    Py_ssize_t block;
    Job job;
    if (!PyArg_ParseTuple(args, "OOO!O!n", &src_o, &dst_o, &PyTuple_Type, &sizes, &PyTuple_Type,
                          &kept_list, &block))
        return NULL;
    if (job_parse(&job, src_o, dst_o, sizes, kept_list, block) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    job_run(&job);
    Py_END_ALLOW_THREADS
    job_release(&job);
    return PyLong_FromSsize_t(job.kept_bytes);
}

/* gather_many(jobs, claims=None): every (src, dst, sizes, kept, block) of the list checked
 * first, then copied with the GIL released once, so a Python thread running this leaves the
 * interpreter to the caller's other work for the whole batch (a GIL taken back between copies
 * waits for the busy thread's switch interval, 5 ms). Nothing is copied if any job is bad.
 * ``claims``, a writable int64 buffer shared by several calls on the same list (one per
 * thread), hands each job to whichever call takes it first (an atomic counter); without it the
 * call runs every job. */
static PyObject *py_gather_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *list, *claims_o = Py_None;
    if (!PyArg_ParseTuple(args, "O!|O", &PyList_Type, &list, &claims_o)) return NULL;
    Py_buffer claims = {0};
    int64_t *counter = NULL;
    if (claims_o != Py_None) {
        if (PyObject_GetBuffer(claims_o, &claims, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
            return NULL;
        if (claims.len < 8 || claims.itemsize != 8 || ((uintptr_t)claims.buf & 7) != 0) {
            PyBuffer_Release(&claims);
            PyErr_SetString(PyExc_ValueError, "gather_many: claims must be an aligned int64");
            return NULL;
        }
        counter = (int64_t *)claims.buf;
    }
    const Py_ssize_t count = PyList_GET_SIZE(list);
    Job *jobs = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(Job));
    if (!jobs) {
        if (counter) PyBuffer_Release(&claims);
        return PyErr_NoMemory();
    }
    Py_ssize_t parsed = 0;
    PyObject *result = NULL;
    for (; parsed < count; ++parsed) {
        PyObject *item = PyList_GET_ITEM(list, parsed), *src_o, *dst_o, *sizes, *kept_list;
        Py_ssize_t block;
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "OOOOn", &src_o, &dst_o, &sizes, &kept_list, &block)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "gather_many: jobs are tuples");
            goto done;
        }
        if (job_parse(&jobs[parsed], src_o, dst_o, sizes, kept_list, block) < 0) goto done;
    }
    Py_ssize_t ran = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        const Py_ssize_t i =
            counter ? (Py_ssize_t)__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED) : ran;
        if (i >= count) break;
        job_run(&jobs[i]);
        ++ran;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(ran);
done:
    for (Py_ssize_t i = 0; i < parsed; ++i) job_release(&jobs[i]);
    PyMem_Free(jobs);
    if (counter) PyBuffer_Release(&claims);
    return result;
}

static PyMethodDef methods[] = {
    {"gather", py_gather, METH_VARARGS,
     "gather(src, dst, sizes, kept, block) -> bytes written: copy the kept blocks of src (viewed "
     "as dims of `sizes` over contiguous blocks of `block` bytes; kept[d] is an increasing int64 "
     "array or None for all) to dst in order. dst may be src itself."},
    {"gather_many", py_gather_many, METH_VARARGS,
     "gather_many([(src, dst, sizes, kept, block), ...], claims=None) -> jobs this call ran: "
     "every job checked, then copied with the GIL released once; calls sharing an int64 "
     "`claims` counter split the jobs between them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kept_gather",
                                    "Gather of kept channels, in place or into a new buffer.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kept_gather(void) {
#ifdef HAVE_X86
    pack_table_fill();
    __builtin_cpu_init();
    cpu_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") &&
                   getenv("SPARSEARCH_GATHER_SCALAR") == NULL;
#endif
    return PyModule_Create(&module);
}
