/* libFuzzer target for the safetensors parser: parse the input from memory, then touch every
 * tensor (bytes, lookups, fp32 conversion). Also checks the error contract: a failed parse
 * leaves a one-line message naming the file. Build with `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/safetensors.h"

#define LABEL "fuzz.safetensors"

static void check_error_message(void) {
    const char *msg = ss_err();
    if (strncmp(msg, LABEL ": ", strlen(LABEL) + 2) != 0 && strncmp(msg, "out of memory", 13) != 0)
        abort();
    if (strchr(msg, '\n')) abort();
}

static void touch(const st_file *f, const st_tensor *t) {
    /* Every byte of the claimed range must be readable (ASan sees any overrun). */
    const volatile uint8_t *p = t->data;
    uint8_t acc = 0;
    for (size_t i = 0; i < t->nbytes; i++) acc ^= p[i];
    (void)acc;
    if (st_find(f, t->name) != t) abort();
    if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || t->numel < 0) abort();
    if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes) abort();
    if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64) {
        float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
        if (!dst) return;
        if (st_to_f32(dst, t) < 0) abort();
        free(dst);
    } else if (st_to_f32(NULL, t) >= 0) {
        abort(); /* integer dtypes must be refused */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f;
    ss_err_clear();
    if (st_open_memory(&f, data, size, LABEL) < 0) {
        if (f) abort();
        check_error_message();
        return 0;
    }
    for (int i = 0; i < st_count(f); i++) touch(f, st_get(f, i));
    if (st_get(f, st_count(f)) != NULL) abort();
    (void)st_metadata(f, "format");
    st_close(f);
    return 0;
}
