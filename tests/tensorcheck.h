/* Tensor-by-tensor checks of an output safetensors file against a reference one (cmocka
 * assertions inside; every failure names both files and the tensor). */
#ifndef SS_TEST_TENSORCHECK_H
#define SS_TEST_TENSORCHECK_H

/* Whether the safetensors file holds a tensor of that name (0 also when it cannot be opened). */
int tt_has(const char *file, const char *name);
/* Same shape, and relative L2 of got against exp at most tol; returns the error. */
double tt_cmp(const char *got, const char *exp, const char *name, double tol);
/* Same size, and max |got - exp| at most tol; returns it. */
double tt_max_abs(const char *got, const char *exp, const char *name, double tol);

#endif
