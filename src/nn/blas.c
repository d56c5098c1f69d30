#include "nn/blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* OpenBLAS's own entry points (not in cblas.h). gotoblas_dynamic_quit/init re-run its kernel
 * selection, which reads OPENBLAS_CORETYPE; only DYNAMIC_ARCH builds (Debian's) have them, so they
 * are weak: with another build they are NULL and the kernels are left as they are. */
char *openblas_get_corename(void);
char *openblas_get_config(void);
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));

const char ss_blas_guard = 1;

static char g_replaced[32];

/* Cores whose sgemm uses AVX2 or AVX-512 kernels; anything else is older than such a CPU. */
static const char *const modern_cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids",
                                           "Excavator"};

const char *ss_blas_better_core(const char *core, int avx2_fma, int avx512) {
    if (!core || !avx2_fma) return NULL;
    for (size_t i = 0; i < sizeof modern_cores / sizeof *modern_cores; i++)
        if (!strcasecmp(core, modern_cores[i])) return NULL;
    return avx512 ? "SkylakeX" : "Haswell";
}

static void cpu_features(int *avx2_fma, int *avx512) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init(); /* constructors may run before libgcc's own */
    *avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    *avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    *avx2_fma = *avx512 = 0; /* the x86 kernel names mean nothing here */
#endif
}

int ss_blas_apply_policy(const char *mode) {
    if (mode && !strcmp(mode, "keep")) return 0;
    if (!(mode && !strcmp(mode, "auto")) && getenv("OPENBLAS_CORETYPE")) return 0;
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) return 0; /* not a DYNAMIC_ARCH OpenBLAS */
    int avx2_fma, avx512;
    cpu_features(&avx2_fma, &avx512);
    const char *core = openblas_get_corename();
    const char *to = ss_blas_better_core(core, avx2_fma, avx512);
    if (!to) return 0;
    char was[sizeof g_replaced];
    snprintf(was, sizeof was, "%s", core);
    /* OpenBLAS's selection reads the variable; restore the user's value afterwards. */
    const char *user = getenv("OPENBLAS_CORETYPE");
    char *saved = user ? strdup(user) : NULL;
    setenv("OPENBLAS_CORETYPE", to, 1);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    if (saved) {
        setenv("OPENBLAS_CORETYPE", saved, 1);
        free(saved);
    } else {
        unsetenv("OPENBLAS_CORETYPE");
    }
    if (strcasecmp(openblas_get_corename(), to) != 0) return 0; /* OpenBLAS refused: nothing changed */
    snprintf(g_replaced, sizeof g_replaced, "%s", was);
    return 1;
}

__attribute__((constructor)) static void blas_check_core(void) {
    ss_blas_apply_policy(getenv("SINKSCOPE_BLAS_CORE"));
}

const char *ss_blas_core(void) { return openblas_get_corename(); }

const char *ss_blas_core_replaced(void) { return g_replaced[0] ? g_replaced : NULL; }

const char *ss_blas_describe(void) {
    static char line[256];
    const char *cfg = openblas_get_config(); /* "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY ..." */
    char ver[64] = "OpenBLAS";
    if (cfg && !strncmp(cfg, "OpenBLAS ", 9)) {
        size_t n = strcspn(cfg + 9, " ");
        snprintf(ver, sizeof ver, "OpenBLAS %.*s", (int)(n < 40 ? n : 40), cfg + 9);
    }
    if (g_replaced[0])
        snprintf(line, sizeof line, "%s %s (switched from %s)", ver, ss_blas_core(), g_replaced);
    else
        snprintf(line, sizeof line, "%s %s", ver, ss_blas_core());
    return line;
}
