/* pth: read PyTorch state dicts (`torch.save(model.state_dict(), path)`) without Python.
 *
 * Both serializations torch has written are read:
 *   - the zip container (torch >= 1.6 default): <prefix>/data.pkl, a pickle whose persistent ids
 *     name the storages <prefix>/data/<key>; read through libzip;
 *   - the legacy format (`_use_new_zipfile_serialization=False`, and files from torch < 1.6 such
 *     as lpips' own alex.pth): pickles of the magic number, protocol version and sys_info, the
 *     state-dict pickle, the pickle of the storage keys, then per storage an int64 element count
 *     and the raw little-endian elements.
 *
 *   pth_file *f; if (pth_open(&f, "alex.pth") < 0) puts(ss_err());
 *   const st_tensor *t = pth_find(f, "lin0.model.1.weight");
 *   pth_close(f);
 *
 * The unpickler is strict and bounded: it knows only the opcodes of pickle protocols 2-4 that
 * state dicts use and only the globals collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter and the typed storages torch.{Float,Half,BFloat16,Double,Long,
 * Int,Short,Char,Byte,Bool}Storage; anything else is an error naming the file. The top-level
 * object must be a dict of str -> tensor. Every size, offset and stride is overflow-checked
 * against its storage; tensors that are views (offset, non-contiguous strides, storages shared
 * by several tensors) are returned as their own contiguous copy.
 *
 * Tensors are st_tensor (src/io/safetensors.h), so st_to_f32 converts them; data stays valid
 * until pth_close. Errors name the file and, where one is involved, the tensor.
 */
#ifndef SS_PTH_H
#define SS_PTH_H

#include <stddef.h>

#include "io/safetensors.h"

#define PTH_MAX_FILE_BYTES (1ULL << 36) /* largest .pth read (64 GiB) */

typedef struct pth_file pth_file;

int pth_open(pth_file **out, const char *path);
/* Parse a .pth image already in memory; `label` stands for the path in messages. The buffer may
 * be freed after the call (everything needed is copied). */
int pth_open_memory(pth_file **out, const void *buf, size_t n, const char *label);
void pth_close(pth_file *f);
int pth_count(const pth_file *f);
const st_tensor *pth_get(const pth_file *f, int i);                /* in the state dict's order */
const st_tensor *pth_find(const pth_file *f, const char *name);   /* NULL if absent (no error) */
/* 1 for the zip container, 0 for the legacy format. */
int pth_is_zip(const pth_file *f);
/* Look up `name`, check its shape equals `shape` (ndim entries), convert to a newly malloc'ed
 * fp32 array. Errors name the tensor and the file. */
int pth_load_f32(float **out, const pth_file *f, const char *name, int ndim, const int64_t *shape);

#endif
