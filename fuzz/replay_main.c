/*
 * replay_main.c: a plain main() around fuzz_table.c's LLVMFuzzerTestOneInput,
 * for compilers without libFuzzer (gcc) and for CI replays of the corpus:
 *
 *   replay [FILE|DIR]...        run each file (each file of each DIR) once
 *   replay --random N [SEED]    also run N random inputs (a poor fuzzer:
 *                               the fallback where libFuzzer is missing)
 *
 * Build: cc -g -O1 -fsanitize=address,undefined -Icsrc fuzz/replay_main.c \
 *        fuzz/fuzz_table.c csrc/fdn_table.c -o replay
 * A failed check aborts (non-zero exit) after printing which input it was.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t replayed;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
        perror(path);
        exit(2);
    }
    rewind(f);
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(2);
    }
    fclose(f);
    fprintf(stderr, "replay: %s (%ld bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    replayed++;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, i;
    if (stat(path, &st) != 0) {
        perror(path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    d = opendir(path);
    if (d == NULL) {
        perror(path);
        exit(2);
    }
    while ((e = readdir(d)) != NULL) {
        size_t len;
        if (e->d_name[0] == '.')
            continue;
        len = strlen(path) + strlen(e->d_name) + 2;
        names = realloc(names, (n + 1) * sizeof(*names));
        names[n] = malloc(len);
        snprintf(names[n], len, "%s/%s", path, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), by_name); /* the same order everywhere */
    for (i = 0; i < n; i++) {
        run_path(names[i]);
        free(names[i]);
    }
    free(names);
}

/* xorshift64*: reproducible across libcs, unlike rand() */
static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

int main(int argc, char **argv)
{
    int i;
    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
            long count = strtol(argv[++i], NULL, 10), k;
            uint8_t buf[4096];
            rng_state = 0x9E3779B97F4A7C15ULL;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                char *end;
                unsigned long long seed = strtoull(argv[i + 1], &end, 10);
                if (*end == '\0') {
                    rng_state ^= seed * 0xD6E8FEB86659FD93ULL;
                    i++;
                }
            }
            for (k = 0; k < count; k++) {
                size_t len = (size_t)(rng() % sizeof(buf)), j;
                uint64_t keep = rng();
                for (j = 0; j < len; j++)
                    buf[j] = (uint8_t)rng();
                /* a third of the inputs: few opcodes, many collisions */
                if (keep % 3 == 0)
                    for (j = 3; j < len; j += 1 + (size_t)(rng() % 5))
                        buf[j] &= 0x8F;
                LLVMFuzzerTestOneInput(buf, len);
                replayed++;
            }
            continue;
        }
        run_path(argv[i]);
    }
    fprintf(stderr, "replay: %zu inputs, all checks passed\n", replayed);
    return 0;
}
