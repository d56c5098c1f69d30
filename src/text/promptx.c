#include "text/promptx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

promptx_pad promptx_pad_default(void) {
    promptx_pad p = {.repeat = PROMPTX_PAD_DEFAULT_REPEAT, .pad = ",", .sep = " "};
    return p;
}

int promptx_pad_parse(promptx_pad *p, const char *spec, const char *where) {
    *p = promptx_pad_default();
    if (!where) where = "pad-prompt";
    const char *colon = strchr(spec, ':');
    char num[32];
    const size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (nlen == 0 || nlen >= sizeof num)
        return ss_fail(SS_EARG, "%s: expected N or N:STRING (N copies of STRING, default \",\"), got '%.40s'", where, spec);
    memcpy(num, spec, nlen);
    num[nlen] = 0;
    char *end;
    errno = 0;
    const long n = strtol(num, &end, 10);
    if (*end || errno || n < 0 || n > PROMPTX_MAX_REPEAT || num[0] == '-' || num[0] == '+' || num[0] == ' ')
        return ss_fail(SS_EARG, "%s: the count '%s' must be an integer in [0, %d]", where, num, PROMPTX_MAX_REPEAT);
    p->repeat = (int)n;
    if (colon) {
        const char *s = colon + 1;
        if (!*s) return ss_fail(SS_EARG, "%s: the padding string after ':' is empty", where);
        if (strlen(s) >= sizeof p->pad)
            return ss_fail(SS_EARG, "%s: the padding string is longer than %zu bytes", where, sizeof p->pad - 1);
        for (const char *q = s; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                return ss_fail(SS_EARG, "%s: the padding string contains a control character (0x%02x)", where, (unsigned char)*q);
        snprintf(p->pad, sizeof p->pad, "%s", s);
    }
    return 0;
}

int promptx_pad_apply(char **out, const char *prompt, const promptx_pad *p) {
    *out = NULL;
    if (p->repeat < 0 || p->repeat > PROMPTX_MAX_REPEAT)
        return ss_fail(SS_EARG, "prompt padding: repeat %d is outside [0, %d]", p->repeat, PROMPTX_MAX_REPEAT);
    const size_t lp = strlen(prompt), lpad = strlen(p->pad), ls = strlen(p->sep);
    if (p->repeat > 0 && lpad == 0) return ss_fail(SS_EARG, "prompt padding: the padding string is empty");
    const int sep = p->repeat > 0 && ls > 0 && !(lp >= ls && !memcmp(prompt + lp - ls, p->sep, ls));
    const size_t n = lp + (sep ? ls : 0) + (size_t)p->repeat * lpad;
    char *s = ss_malloc(n + 1);
    if (!s) return SS_ENOMEM;
    memcpy(s, prompt, lp);
    size_t at = lp;
    if (sep) {
        memcpy(s + at, p->sep, ls);
        at += ls;
    }
    for (int i = 0; i < p->repeat; i++, at += lpad) memcpy(s + at, p->pad, lpad);
    s[at] = 0;
    *out = s;
    return 0;
}
