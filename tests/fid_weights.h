/* The random FID Inception weights of tests/gen/gen_fid_inception_weights.py (the formula in
 * gen_fid_inception.py's docstring), made here, and a torch.save zip .pth writer for them: shared
 * by test_fid (parity with pytorch-fid) and test_run_metrics (`run --metrics fid`). */
#ifndef SS_TEST_FID_WEIGHTS_H
#define SS_TEST_FID_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

/* An inception_getter (metric/inception.h): u[i] = ((splitmix64(fnv1a(name) + i) >> 40) / 2^24) * 2 - 1,
 * scaled by the tensor's kind, in double, rounded once to float. ctx: an int counting the calls,
 * or NULL. */
int tc_inception_hash_getter(void *ctx, const char *name, int ndim, const int64_t *shape, float **out);

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
    float *data;
    size_t n;
} tc_tensor;

typedef struct {
    tc_tensor t[600];
    int n;
} tc_tensors;

/* Every tensor the network loads (in load order) with the hash weights, then the 1008-class
 * fc.weight of the real file (zeros; the features do not use it). 0, or -1 with ss_err() set. */
int tc_inception_tensors(tc_tensors *rec);
void tc_tensors_free(tc_tensors *rec);
/* torch.save(OrderedDict(name -> float32 tensor)) in the zip container, tensors skip..n-1. 0 / -1. */
int tc_write_pth(const char *path, const tc_tensor *t, int n, int skip);
/* tc_inception_tensors + tc_write_pth: a complete pt_inception .pth at path. 0 / -1. */
int tc_write_inception_pth(const char *path);

#endif
