/* blas: which OpenBLAS kernels the process uses, and a guard against a generic choice.
 *
 * Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernels when it loads, by CPU model. On a CPU newer
 * than it knows (e.g. OpenBLAS 0.3.21 on an Emerald Rapids Xeon, cpu family 6 model 207) it falls
 * back to its generic "Prescott" SSE3 kernels: sgemm runs about 3x slower, and its results then
 * depend on the thread count, which breaks sinkscope's determinism contract.
 *
 * So before main() (an ELF constructor, which runs after OpenBLAS's own) sinkscope checks the
 * choice: when OpenBLAS chose kernels older than AVX2 on a CPU whose OS-enabled features include
 * AVX2 + FMA, it switches OpenBLAS to its "SkylakeX" kernels (AVX-512 F/BW/DQ/VL present) or its
 * "Haswell" kernels (otherwise) in process, as OPENBLAS_CORETYPE would have at load time.
 *
 * SINKSCOPE_BLAS_CORE controls it:
 *   unset    switch only when OPENBLAS_CORETYPE is unset (a user's explicit choice is kept);
 *   "auto"   switch whenever the choice is generic, even one forced by OPENBLAS_CORETYPE
 *            (tests use it with OPENBLAS_CORETYPE=Prescott to exercise the switch here);
 *   "keep"   never switch.
 */
#ifndef SS_BLAS_H
#define SS_BLAS_H

/* The core OpenBLAS uses now ("SkylakeX", "Haswell", "Prescott", ...). */
const char *ss_blas_core(void);
/* The core OpenBLAS had chosen itself before sinkscope switched it, or NULL when unchanged. */
const char *ss_blas_core_replaced(void);
/* One line for benchmarks and logs: "OpenBLAS 0.3.21 SkylakeX (switched from Prescott)". */
const char *ss_blas_describe(void);

/* The decision, pure for tests: the core to switch to for a CPU with these features when
 * OpenBLAS chose `core`, or NULL to keep it. */
const char *ss_blas_better_core(const char *core, int avx2_fma, int avx512);
/* Apply the policy now (the constructor calls it with the environment's setting). `mode`:
 * NULL = default, "auto", "keep" (see above). Returns 1 when it switched, 0 otherwise. */
int ss_blas_apply_policy(const char *mode);

/* Every object that calls cblas_* names this once (at file scope), so that static linking keeps
 * blas.o, and with it the constructor, in every program that uses BLAS. */
extern const char ss_blas_guard;
#define SS_BLAS_GUARD static const char *const ss_blas_guard_ref_ __attribute__((used)) = &ss_blas_guard;

#endif
