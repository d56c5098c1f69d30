/* libFuzzer target for the .pth reader (zip container and legacy pickle): parse the input from
 * memory, then touch every tensor (bytes, lookups, fp32 conversion). A failed parse must leave
 * a one-line message naming the file. Build with `make fuzz`; seeds in fuzz/seeds-pth (torch's
 * own files from tests/gen/gen_pth_cases.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "io/pth.h"

#define LABEL "fuzz.pth"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pth_file *f;
    ss_err_clear();
    if (pth_open_memory(&f, data, size, LABEL) < 0) {
        if (f) abort();
        const char *msg = ss_err();
        if (strncmp(msg, LABEL ": ", strlen(LABEL) + 2) != 0 && strncmp(msg, "out of memory", 13) != 0)
            abort();
        if (strchr(msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < pth_count(f); i++) {
        const st_tensor *t = pth_get(f, i);
        const volatile uint8_t *p = t->data;
        uint8_t acc = 0;
        for (size_t k = 0; k < t->nbytes; k++) acc ^= p[k];
        (void)acc;
        if (pth_find(f, t->name) == NULL) abort();
        if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes) abort();
        if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64) {
            float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
            if (!dst) continue;
            if (st_to_f32(dst, t) < 0) abort();
            free(dst);
        }
    }
    if (pth_get(f, pth_count(f)) != NULL) abort();
    pth_close(f);
    return 0;
}
