// spm_shim: C interface to libsentencepiece (see spm_shim.h).
#include "text/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <new>
#include <string>
#include <vector>

struct spm_shim {
    sentencepiece::SentencePieceProcessor sp;
};

static void put_err(char *err, size_t cap, const std::string &msg) {
    if (cap) std::snprintf(err, cap, "%s", msg.c_str());
}

extern "C" int spm_shim_load(spm_shim **out, const char *path, char *err, size_t errcap) {
    *out = nullptr;
    try {
        spm_shim *s = new spm_shim;
        auto st = s->sp.Load(path);
        if (!st.ok()) {
            put_err(err, errcap, st.ToString());
            delete s;
            return -1;
        }
        *out = s;
        return 0;
    } catch (const std::exception &e) {
        put_err(err, errcap, e.what());
    } catch (...) {
        put_err(err, errcap, "unknown error in sentencepiece");
    }
    return -1;
}

extern "C" void spm_shim_free(spm_shim *s) { delete s; }

extern "C" int spm_shim_piece_size(const spm_shim *s) { return s->sp.GetPieceSize(); }

extern "C" void spm_shim_special_ids(const spm_shim *s, int *unk, int *eos, int *pad) {
    *unk = s->sp.unk_id();
    *eos = s->sp.eos_id();
    *pad = s->sp.pad_id();
}

extern "C" int spm_shim_piece_to_id(const spm_shim *s, const char *piece, size_t n) {
    try {
        return s->sp.PieceToId(std::string_view(piece, n));
    } catch (...) {
        return s->sp.unk_id();
    }
}

extern "C" int spm_shim_encode(const spm_shim *s, const char *text, size_t n, int (*cb)(void *, const char *, size_t),
                               void *ctx, char *err, size_t errcap) {
    try {
        std::vector<std::string> pieces;
        auto st = s->sp.Encode(std::string_view(text, n), &pieces);
        if (!st.ok()) {
            put_err(err, errcap, st.ToString());
            return -1;
        }
        for (const auto &p : pieces) {
            int rc = cb(ctx, p.data(), p.size());
            if (rc < 0) return rc;
        }
        return 0;
    } catch (const std::exception &e) {
        put_err(err, errcap, e.what());
    } catch (...) {
        put_err(err, errcap, "unknown error in sentencepiece");
    }
    return -1;
}
