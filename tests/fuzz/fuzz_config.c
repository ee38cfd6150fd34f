/* libFuzzer target for the config loader: config_load_string on fuzzed text
 * (make fuzz: build/fuzz/fuzz_config). A load either returns a config or
 * says why in its error text — never both, never neither; nothing crashes,
 * leaks or reads past the text. base_dir is a directory that does not exist,
 * so an @include or a key path finds nothing on the machine.
 * Seeds: tests/fuzz/corpus/config/ (the test configs and config/herald.cfg).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (256u << 10)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char *err = NULL;
    herald_config *c = config_load_string(text, "fuzz.cfg", "/nonexistent-herald-fuzz", &err);
    if (c && err) abort();    /* a config that loaded has nothing to report */
    if (!c && (!err || !*err)) abort();   /* a refused config says why */
    config_destroy(&c);
    free(err);
    free(text);
    return 0;
}
