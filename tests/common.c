#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>

#include "core/err.h"
#include "io/safetensors.h"

const char *tc_vjoin(const char *root, const char *fmt, va_list ap) {
    static char buf[8][4096];
    static int k;
    char rel[3000];
    char *b = buf[k++ % 8];
    if ((size_t)vsnprintf(rel, sizeof rel, fmt, ap) >= sizeof rel ||
        (size_t)snprintf(b, sizeof buf[0], "%s/%s", root, rel) >= sizeof buf[0]) {
        fprintf(stderr, "test path too long under %s\n", root); /* a test bug: stop loudly */
        abort();
    }
    return b;
}

const char *tc_join(const char *root, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin(root, fmt, ap);
    va_end(ap);
    return b;
}

const char *tc_path(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *b = tc_vjoin("tests", fmt, ap);
    va_end(ap);
    return b;
}

float *tc_load(const char *file, const char *name, size_t *numel, int64_t *shape, int *ndim) {
    st_file *f;
    if (st_open(&f, file) < 0) return NULL;
    const st_tensor *t = st_find(f, name);
    float *x = NULL;
    if (t) {
        x = malloc(sizeof(float) * (t->numel ? t->numel : 1));
        if (x && st_to_f32(x, t) < 0) {
            free(x);
            x = NULL;
        }
        if (numel) *numel = (size_t)t->numel;
        if (shape) memcpy(shape, t->shape, sizeof(int64_t) * t->ndim);
        if (ndim) *ndim = t->ndim;
    }
    st_close(f);
    return x;
}

double tc_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

char *tc_tmpdir(void) {
    char *t = strdup("/tmp/sinkscope-test-XXXXXX");
    if (!mkdtemp(t)) {
        free(t);
        return NULL;
    }
    return t;
}

void tc_rmtree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

const char *tc_bin(void) {
    const char *s = getenv("SINKSCOPE_BIN");
    return s && *s ? s : "./sinkscope";
}

int tc_run(char *buf, size_t cap, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int tc_spawn(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        dup2(devnull, STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    return (int)pid;
}

int tc_wait_exit(int pid) {
    int st;
    if (waitpid((pid_t)pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

void tc_fill(float *x, size_t n, uint64_t seed, float a) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        double u = (double)((s * 2685821657736338717ull) >> 11) * 0x1.0p-53;
        x[i] = (float)((2 * u - 1) * a);
    }
}

char *tc_read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

int tc_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int tc_sd3fx_load(tc_sd3fx *f, const char *name) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", tc_path("fixtures/%s", name));
    snprintf(f->expected, sizeof f->expected, "%s", tc_path("fixtures/%s/expected.safetensors", name));
    if (sd3_load(&f->m, f->dir) < 0) return -1;
    const char *in = tc_path("fixtures/%s/inputs.safetensors", name);
    int64_t sx[4], sc[3];
    f->x = tc_load(in, "hidden_states", NULL, sx, NULL);
    f->ctx = tc_load(in, "encoder_hidden_states", NULL, sc, NULL);
    f->pooled = tc_load(in, "pooled_projections", NULL, NULL, NULL);
    f->t = tc_load(in, "timestep", NULL, NULL, NULL);
    if (!f->x || !f->ctx || !f->pooled || !f->t) {
        ss_fail(SS_EMISSING, "%s: an input tensor is missing", in);
        tc_sd3fx_free(f);
        return -1;
    }
    f->B = (int)sx[0];
    f->Hl = (int)sx[2];
    f->Wl = (int)sx[3];
    f->S = (int)sc[1];
    f->N = (f->Hl / f->m->cfg.patch_size) * (f->Wl / f->m->cfg.patch_size);
    f->nout = (size_t)f->B * f->m->cfg.out_channels * f->Hl * f->Wl;
    return 0;
}

void tc_sd3fx_free(tc_sd3fx *f) {
    sd3_free(f->m);
    free(f->x);
    free(f->ctx);
    free(f->pooled);
    free(f->t);
    memset(f, 0, sizeof *f);
}
