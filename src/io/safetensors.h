/* safetensors: read (mmap, strictly validated) and write the safetensors format.
 *
 * File layout: 8-byte little-endian header length n, then n bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
 * then the data section; offsets are relative to the data section start.
 *
 *   st_file *f; if (st_open(&f, "model.safetensors") < 0) puts(ss_err());
 *   const st_tensor *t = st_find(f, "proj_out.weight");
 *   st_close(f);
 *
 * Validation (every check names the file and the tensor): header length within the file, JSON
 * object, known dtype, shape x dtype size == byte range (overflow-checked), ranges inside the data
 * section, no two ranges overlapping. Sharded checkpoints (diffusers' *.safetensors.index.json
 * with a "weight_map") are opened as one st_set.
 */
#ifndef SS_SAFETENSORS_H
#define SS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_DTYPE_COUNT
} st_dtype;

typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the mapping; not aligned beyond 1 byte in general */
    size_t nbytes;
    const char *file; /* path of the file holding it */
} st_tensor;

size_t st_dtype_size(st_dtype d);
const char *st_dtype_name(st_dtype d);
int st_dtype_parse(const char *s, st_dtype *out); /* 0 or -1 */

/* ---- one file ---- */
typedef struct st_file st_file;
int st_open(st_file **out, const char *path);
void st_close(st_file *f);
int st_count(const st_file *f);
const st_tensor *st_get(const st_file *f, int i);
const st_tensor *st_find(const st_file *f, const char *name); /* NULL if absent (no error set) */
const char *st_metadata(const st_file *f, const char *key);  /* __metadata__ value or NULL */
/* Parse a safetensors image already in memory (same validation as st_open). `buf` must outlive
 * the st_file: tensors point into it. `label` stands for the path in messages and st_tensor.file. */
int st_open_memory(st_file **out, const void *buf, size_t n, const char *label);

/* ---- a model folder: a single file, or shards listed by an index.json ---- */
typedef struct st_set st_set;
/* path: a .safetensors file, a *.safetensors.index.json, or a directory holding
 * diffusion_pytorch_model.safetensors or diffusion_pytorch_model.safetensors.index.json
 * (or model.safetensors / model.safetensors.index.json). */
int st_set_open(st_set **out, const char *path);
void st_set_close(st_set *s);
int st_set_count(const st_set *s);
const st_tensor *st_set_get(const st_set *s, int i);
const st_tensor *st_set_find(const st_set *s, const char *name);
/* Drop the mappings (after weights were converted into memory of their own). Tensors'
 * data pointers become invalid; names and shapes stay valid. */
void st_set_unmap(st_set *s);

/* Convert any float tensor (F32, F16, BF16, F64) to fp32: dst holds t->numel floats. */
int st_to_f32(float *dst, const st_tensor *t);
/* Look up `name`, check its shape equals `shape` (ndim entries), convert to a newly malloc'ed
 * fp32 array. Errors name the tensor and the file. */
int st_load_f32(float **out, const st_set *s, const char *name, int ndim, const int64_t *shape);

/* ---- writer ---- */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* Data is copied when added. Names must be unique. */
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data);
/* f32 data stored as `dtype` (F32, F16 or BF16, round-to-nearest-even). */
int st_writer_add_f32(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                      const float *data);
int st_writer_set_metadata(st_writer *w, const char *key, const char *value);
/* Writes through the one atomic writer (io/fsutil.h: unique temporary file, fsync, rename, folder
 * fsync): an existing file is never left half-written, and no temporary file is left behind. */
int st_writer_save(st_writer *w, const char *path);
void st_writer_free(st_writer *w);

#endif
