/* libFuzzer target for score's image-name parser (sw_score_parse_name). The rule is
 * "<prompt index %05d>_<seed %llu>.png", parsed strictly, so names and (index, seed) keys are in
 * one-to-one correspondence: a name that parses must be exactly what printf writes for its key
 * (no second spelling can count the same image twice), and the key printed back must parse to
 * the same key. Build with `make fuzz`; seeds in fuzz/seeds-score_name/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/score.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 200) return 0;
    char name[201];
    memcpy(name, data, size);
    name[size] = 0;
    int index = -1;
    uint64_t seed = 0;
    if (sw_score_parse_name(name, &index, &seed) != 0) return 0;
    /* (file names hold no NUL: the name is the C string up to the first one) */
    if (index < 0) abort();
    char canon[64];
    snprintf(canon, sizeof canon, "%05d_%llu.png", index, (unsigned long long)seed);
    if (strcmp(canon, name) != 0) abort(); /* a second spelling of the same key */
    int i2 = -1;
    uint64_t s2 = 0;
    if (sw_score_parse_name(canon, &i2, &s2) != 0 || i2 != index || s2 != seed) abort();
    return 0;
}
