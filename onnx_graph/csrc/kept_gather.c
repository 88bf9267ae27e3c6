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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DIMS 32

typedef struct {
    Py_ssize_t count;       /* positions copied along this dim */
    const int64_t *kept;    /* kept positions, or NULL for 0..count-1 */
    size_t stride;          /* bytes between positions in the source */
} Dim;

/* Copies the kept blocks below `src` at `level` to `dst`; returns the destination's new end. */
static char *gather_level(const char *src, char *dst, const Dim *dims, int level, int last,
                          size_t block) {
    const Dim *dim = &dims[level];
    if (level < last) {
        for (Py_ssize_t i = 0; i < dim->count; ++i) {
            const Py_ssize_t at = dim->kept ? (Py_ssize_t)dim->kept[i] : i;
            dst = gather_level(src + (size_t)at * dim->stride, dst, dims, level + 1, last, block);
        }
        return dst;
    }
    /* Innermost dim: blocks of one element get a typed loop (same size, never partly
     * overlapping, so safe in place); longer blocks a memmove (overlap allowed). */
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
        for (Py_ssize_t i = 0; i < dim->count; ++i) {
            const Py_ssize_t at = dim->kept ? (Py_ssize_t)dim->kept[i] : i;
            memmove(dst + (size_t)i * block, src + (size_t)at * block, block);
        }
    }
    return dst + (size_t)dim->count * block;
}

/* gather(src, dst, sizes, kept, block): see the module docstring of onnx_graph.kept_slices. */
static PyObject *py_gather(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer src, dst;
    PyObject *sizes, *kept_list;
    Py_ssize_t block;
    if (!PyArg_ParseTuple(args, "y*w*O!O!n", &src, &dst, &PyTuple_Type, &sizes, &PyTuple_Type,
                          &kept_list, &block))
        return NULL;
    Py_buffer views[MAX_DIMS];
    int held = 0;
    PyObject *result = NULL;
    Dim dims[MAX_DIMS];
    const Py_ssize_t nd = PyTuple_GET_SIZE(sizes);
    if (nd < 1 || nd > MAX_DIMS || PyTuple_GET_SIZE(kept_list) != nd || block < 1) {
        PyErr_SetString(PyExc_ValueError, "gather: 1 to 32 dims, one kept entry each, block >= 1");
        goto done;
    }
    Py_ssize_t source_bytes = block, kept_bytes = block;
    for (Py_ssize_t d = nd - 1; d >= 0; --d) {
        const Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes, d));
        if (size < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "gather: negative size");
            goto done;
        }
        dims[d].stride = (size_t)source_bytes;
        dims[d].kept = NULL;
        dims[d].count = size;
        PyObject *entry = PyTuple_GET_ITEM(kept_list, d);
        if (entry != Py_None) {
            if (PyObject_GetBuffer(entry, &views[held], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
                goto done;
            Py_buffer *view = &views[held++];
            if (view->itemsize != 8 || view->format == NULL ||
                (strcmp(view->format, "q") != 0 && strcmp(view->format, "l") != 0)) {
                PyErr_SetString(PyExc_TypeError, "gather: kept positions must be int64");
                goto done;
            }
            const int64_t *kept = (const int64_t *)view->buf;
            const Py_ssize_t count = view->len / 8;
            for (Py_ssize_t i = 0; i < count; ++i) {
                if (kept[i] < 0 || kept[i] >= size || (i > 0 && kept[i] <= kept[i - 1])) {
                    PyErr_Format(PyExc_ValueError,
                                 "gather: kept positions of dim %zd must increase within [0, %zd)",
                                 d, size);
                    goto done;
                }
            }
            dims[d].kept = kept;
            dims[d].count = count;
        }
        if (d == nd - 1 && dims[d].kept == NULL) {
            PyErr_SetString(PyExc_ValueError, "gather: the innermost dim must be cut");
            goto done;
        }
        source_bytes *= size;
        kept_bytes *= dims[d].count;
    }
    if (src.len != source_bytes || dst.len < kept_bytes) {
        PyErr_Format(PyExc_ValueError,
                     "gather: source has %zd bytes (dims say %zd), destination %zd (needs %zd)",
                     src.len, source_bytes, dst.len, kept_bytes);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    gather_level((const char *)src.buf, (char *)dst.buf, dims, 0, (int)nd - 1, (size_t)block);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(kept_bytes);
done:
    for (int i = 0; i < held; ++i) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"gather", py_gather, METH_VARARGS,
     "gather(src, dst, sizes, kept, block) -> bytes written: copy the kept blocks of src (viewed "
     "as dims of `sizes` over contiguous blocks of `block` bytes; kept[d] is an increasing int64 "
     "array or None for all) to dst in order. dst may be src itself."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kept_gather",
                                    "Gather of kept channels, in place or into a new buffer.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kept_gather(void) { return PyModule_Create(&module); }
