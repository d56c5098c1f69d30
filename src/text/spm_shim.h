/* spm_shim: the few calls sinkscope makes into libsentencepiece (C++), behind a C interface.
 * spm_shim.cc is the project's only C++ file; no C++ exception crosses into C. */
#ifndef SS_SPM_SHIM_H
#define SS_SPM_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spm_shim spm_shim;
/* Loads a SentencePiece model file. On failure returns -1 with the library's message in err. */
int spm_shim_load(spm_shim **out, const char *path, char *err, size_t errcap);
void spm_shim_free(spm_shim *s);
int spm_shim_piece_size(const spm_shim *s);
/* unk, eos, pad ids of the model (-1 when it has none). */
void spm_shim_special_ids(const spm_shim *s, int *unk, int *eos, int *pad);
/* Id of a piece (the unk id when not a piece), as SentencePieceProcessor::PieceToId. */
int spm_shim_piece_to_id(const spm_shim *s, const char *piece, size_t n);
/* Encode (normalisation + Viterbi) to pieces: cb(ctx, piece, len) per piece, in order.
 * Returns 0, a negative callback result, or -1 with the library's message in err. */
int spm_shim_encode(const spm_shim *s, const char *text, size_t n, int (*cb)(void *, const char *, size_t),
                    void *ctx, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif
