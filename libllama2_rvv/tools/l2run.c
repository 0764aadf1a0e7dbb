/* l2run: a drop-in for llama2.c's `run`, on libllama2_rvv.
 * Same arguments, defaults and stdout; `achieved tok/s` on stderr. Unlike `run`, a bad option
 * value (-t -1, -p 2, -n -5, -t abc) is refused in one line naming it, not replaced by a
 * default, and a model file cut while mapped is reported, not a silent SIGBUS. Extra options:
 *   -k f32|f16   KV cache type (default f16 for packed f16/q8 models, else f32)
 *   -e NAME      kernel set (default: the fastest this CPU runs; -e list shows them)
 *   -v 1         report model, kernels and process memory on stderr at the end */
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "asan_options.h"
#include "llama2_rvv.h"

#if defined(__GNUC__)
#define L2RUN_FAILS_PRINTF __attribute__((format(printf, 1, 2), noreturn))
#else
#define L2RUN_FAILS_PRINTF
#endif

static void error_usage(void) {
    fprintf(stderr,
            "Usage:   l2run <checkpoint> [options]\n"
            "Example: l2run model.bin -n 256 -i \"Once upon a time\"\n"
            "Options:\n"
            "  -t <float>  temperature in [0,inf], default 1.0\n"
            "  -p <float>  p value in top-p (nucleus) sampling in [0,1] default 0.9\n"
            "  -s <int>    random seed, default time(NULL)\n"
            "  -n <int>    number of steps to run for, default 256. 0 = max_seq_len\n"
            "  -i <string> input prompt\n"
            "  -z <string> optional path to custom tokenizer\n"
            "  -m <string> mode: generate|chat, default: generate\n"
            "  -y <string> (optional) system prompt in chat mode\n"
            "  -k <string> KV cache type: f32|f16 (default f16 for packed f16/q8 models)\n"
            "  -e <string> kernel set (default: fastest available; 'list' prints them)\n"
            "  -v <int>    1: report model, kernels and memory on stderr\n");
    exit(EXIT_FAILURE);
}

/* ---------------------------------------------------------------- the command line
 * Every option is checked before anything is loaded: a bad value is named and refused, never
 * replaced by a default (llama2.c's `run` turns -t -1 into 0 and -p 2 into 0.9). The rule is
 * the library's (l2_check_option), which `storyteller run` applies too. */

static void bad_arg(const char *fmt, ...) L2RUN_FAILS_PRINTF;
static void bad_arg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("l2run: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (l2run without arguments lists the options)\n", stderr);
    va_end(ap);
    exit(EXIT_FAILURE);
}

/* The value of a numeric option (-t -p -s -n -v): *whole for the whole-number ones. */
static double number_arg(char flag, const char *v, int64_t *whole) {
    l2_error err;
    double number;
    if (l2_check_option(flag, v, &number, whole, &err) != L2_OK) bad_arg("%s", err.message);
    return number;
}

/* ---------------------------------------------------------------- a mapped file that changes
 * The model and tokenizer are read in place from their mapped files. Truncating or
 * overwriting one in place while l2run runs makes the next read of a lost page raise SIGBUS,
 * which would end the process without a word: say what happened instead, in one line. Only
 * async-signal-safe calls here (write, _exit). */
static void on_sigbus(int sig) {
    static const char msg[] =
        "l2run: bus error (SIGBUS) reading a mapped file: the model or tokenizer file was "
        "truncated or overwritten while in use; replace model files by renaming a new file over "
        "them (mv), then run again\n";
    (void)sig;
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
    _exit(EXIT_FAILURE);
}

/* Everything main allocates, so every exit path frees it. */
typedef struct {
    l2_model *model;
    l2_tokenizer *tok;
    l2_sampler *sampler;
    l2_session *session;
    int32_t *prompt_tokens;
} resources;

static void release(resources *r) {
    free(r->prompt_tokens);
    l2_session_free(r->session);
    l2_sampler_free(r->sampler);
    l2_tokenizer_free(r->tok);
    l2_model_free(r->model);
}

static int fail(resources *r, const char *what, const l2_error *err) {
    fprintf(stderr, "l2run: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    release(r);
    return EXIT_FAILURE;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Anonymous and private dirty memory of this process, from /proc/self/smaps_rollup. */
static void report_memory(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Rss:", 4) || !strncmp(line, "Private_Dirty:", 14) ||
            !strncmp(line, "Anonymous:", 10))
            fprintf(stderr, "memory %s", line);
    fclose(f);
}

int main(int argc, char **argv) {
    const char *checkpoint = NULL, *tokenizer_path = "tokenizer.bin", *prompt = NULL;
    const char *mode = "generate", *kv = NULL, *kernels = NULL;
    float temperature = 1.0f, topp = 0.9f;
    int steps = 256, verbose = 0;
    unsigned long long seed = 0;
    int64_t whole;

    if (argc >= 2) checkpoint = argv[1];
    else error_usage();
    for (int i = 2; i < argc; i += 2) {
        const char *flag = argv[i];
        if (flag[0] != '-' || strlen(flag) != 2)
            bad_arg("'%s' is not an option: options are a dash and one letter, each followed by "
                    "its value", flag);
        if (!strchr("tpsnizmykev", flag[1])) bad_arg("unknown option %s", flag);
        if (i + 1 >= argc) bad_arg("option %s needs a value", flag);
        const char *v = argv[i + 1];
        switch (flag[1]) {
        case 't': temperature = (float)number_arg('t', v, &whole); break;
        case 'p': topp = (float)number_arg('p', v, &whole); break;
        case 's':  /* as run's (unsigned long long)atoi(): a negative seed wraps */
            number_arg('s', v, &whole);
            seed = (unsigned long long)whole;
            break;
        case 'n': number_arg('n', v, &whole); steps = (int)whole; break;
        case 'i': prompt = v; break;
        case 'z': tokenizer_path = v; break;
        case 'm': mode = v; break;
        case 'y': break;  /* system prompt: chat mode only */
        case 'k':
            if (strcmp(v, "f16") != 0 && strcmp(v, "f32") != 0) bad_arg("-k takes f32 or f16, not '%s'", v);
            kv = v;
            break;
        case 'e': kernels = v; break;
        case 'v': number_arg('v', v, &whole); verbose = (int)whole; break;
        }
    }
    if (kernels && !strcmp(kernels, "list")) {
        for (int32_t i = 0; l2_kernels_name(i); i++) printf("%s\n", l2_kernels_name(i));
        return 0;
    }
    if (seed == 0) seed = (unsigned int)time(NULL);
    if (strcmp(mode, "generate") != 0) {
        fprintf(stderr, "l2run: mode '%s' is not supported (TinyStories models only continue "
                        "text: use -m generate)\n", mode);
        return EXIT_FAILURE;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);

    l2_error err = {{0}};
    resources r = {0};
    if (l2_model_open(checkpoint, &r.model, &err) != L2_OK) return fail(&r, "cannot load model", &err);
    l2_model_info info;
    l2_model_info_get(r.model, &info);
    steps = l2_run_positions(r.model, steps);

    l2_type kv_type = !kv ? L2_TYPE_AUTO : !strcmp(kv, "f16") ? L2_TYPE_F16 : L2_TYPE_F32;
    l2_session_params params = {steps, kv_type, kernels};

    if (l2_tokenizer_open(tokenizer_path, info.vocab_size, &r.tok, &err) != L2_OK)
        return fail(&r, "cannot load tokenizer", &err);
    if (l2_sampler_new(info.vocab_size, temperature, topp, seed, &r.sampler, &err) != L2_OK)
        return fail(&r, "cannot create sampler", &err);
    if (l2_session_new(r.model, &params, &r.session, &err) != L2_OK)
        return fail(&r, "cannot create session", &err);

    if (!prompt) prompt = "";
    size_t cap = strlen(prompt) + 3;
    int32_t n_prompt = 0;
    r.prompt_tokens = malloc(cap * sizeof *r.prompt_tokens);
    if (!r.prompt_tokens) return fail(&r, "out of memory", NULL);
    if (l2_tokenizer_encode(r.tok, prompt, 1, 0, r.prompt_tokens, (int32_t)cap, &n_prompt, &err) != L2_OK)
        return fail(&r, "cannot encode the prompt", &err);
    /* The generation loop of llama2.c, stepped by the library (l2_generate_step): the prompt
     * is evaluated in one call, its tokens echoed as forced choices, then each token sampled
     * until `steps` positions or BOS. */
    l2_generation g = {.prompt = r.prompt_tokens, .n_prompt = n_prompt, .max_pos = steps,
                       .max_sampled = -1};
    l2_status st = l2_generate_begin(r.session, &g, &err);
    if (st != L2_OK) return fail(&r, st == L2_ERR_RANGE ? "cannot generate" : "forward pass failed", &err);
    double start = 0.0;
    for (;;) {
        if (l2_generate_step(r.session, &g, r.sampler, r.tok, &err) != L2_OK)
            return fail(&r, "forward pass failed", &err);
        if (g.done) break;
        if (g.piece) fwrite(g.piece, 1, l2_printable_len(g.piece, g.piece_len), stdout);  /* run's rule */
        fflush(stdout);
        if (start == 0.0) start = now_ms();
    }
    printf("\n");
    if (g.pos > 1) fprintf(stderr, "achieved tok/s: %f\n", (g.pos - 1) / (now_ms() - start) * 1000.0);
    if (verbose) {
        fprintf(stderr, "model %s: dim %d hidden %d layers %d heads %d/%d vocab %d seq %d, weights "
                "%s, %llu bytes read per token\nkernels %s, KV cache %s, context %d\n", checkpoint,
                info.dim, info.hidden_dim, info.n_layers, info.n_heads, info.n_kv_heads,
                info.vocab_size, info.seq_len,
                l2_type_name(info.weight_type), (unsigned long long)info.weight_bytes_per_token,
                l2_session_kernels(r.session), l2_type_name(l2_session_kv_type(r.session)), steps);
        report_memory();
    }
    release(&r);
    return 0;
}
