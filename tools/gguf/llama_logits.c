// llama_logits: run a GGUF model in llama.cpp (through libllama) and write what
// tools/gguf/llama_cpp_check.sh compares with `bitnet-run`.
//
//   llama_logits -m M.gguf -i IDS -o OUT.npy [-t N]   logits of every position of the token ids
//                                                      in IDS (ids separated by commas/whitespace),
//                                                      decoded as one prompt, as an f32 .npy
//                                                      (shape [n_tokens, n_vocab])
//   llama_logits -m M.gguf --tokenize TEXT_FILE       llama.cpp's token ids of the file's text
//                                                      (BOS added if the model asks for it), one a line
//   llama_logits -m M.gguf -i IDS -n N                greedy: decode IDS, then generate N tokens one at
//                                                      a time through the KV cache; print their ids
//
// The KV cache is f32 and flash attention off, so the approximations left are llama.cpp's own (Q8_K
// activations in the ternary matmuls, bf16 activations against bf16 embeddings). Built by llama_cpp_check.sh against
// llama.cpp's libllama; -DLLAMA_LOGITS_OLD_API builds it against the older libllama API of
// bitnet.cpp's llama.cpp fork (llama_load_model_from_file, llama_n_vocab(model), ...).
#include "llama.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *msg) {
    fprintf(stderr, "llama_logits: %s\n", msg);
    exit(1);
}

static char *read_file(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llama_logits: cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die("read failed");
    buf[n] = 0;
    fclose(f);
    *len = n;
    return buf;
}

static llama_token *parse_ids(const char *text, int *n_out) {
    int cap = 256, n = 0;
    llama_token *ids = malloc(sizeof(llama_token) * cap);
    const char *p = text;
    while (*p) {
        while (*p && (*p == ',' || *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) die("bad token id list");
        if (n == cap) ids = realloc(ids, sizeof(llama_token) * (cap *= 2));
        ids[n++] = (llama_token)v;
        p = end;
    }
    *n_out = n;
    return ids;
}

static void write_npy(const char *path, const float *data, int rows, int cols) {
    char header[128];
    int hl = snprintf(header, sizeof header,
                      "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    uint16_t hlen = (uint16_t)(hl + pad + 1);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write the output file");
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hlen & 0xff, f);
    fputc(hlen >> 8, f);
    fwrite(header, 1, (size_t)hl, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, sizeof(float), (size_t)rows * cols, f);
    if (fclose(f) != 0) die("write failed");
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

#ifdef LLAMA_LOGITS_OLD_API
#define VOCAB_OF(model) (model)
typedef struct llama_model vocab_t;
#define load_model llama_load_model_from_file
#define new_context llama_new_context_with_model
#define n_vocab_of(v) llama_n_vocab(v)
#else
#define VOCAB_OF(model) llama_model_get_vocab(model)
typedef struct llama_vocab vocab_t;
#define load_model llama_model_load_from_file
#define new_context llama_init_from_model
#define n_vocab_of(v) llama_vocab_n_tokens(v)
#endif

int main(int argc, char **argv) {
    const char *model_path = NULL, *ids_arg = NULL, *out = NULL, *tok_file = NULL;
    int threads = 1, n_gen = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) model_path = argv[++i];
        else if (!strcmp(a, "-i") && v) ids_arg = argv[++i];
        else if (!strcmp(a, "-o") && v) out = argv[++i];
        else if (!strcmp(a, "-t") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-n") && v) n_gen = atoi(argv[++i]);
        else if (!strcmp(a, "--tokenize") && v) tok_file = argv[++i];
        else {
            fprintf(stderr, "usage: %s -m MODEL.gguf (-i IDS_FILE [-o OUT.npy] [-n N] | --tokenize TEXT_FILE) [-t THREADS]\n", argv[0]);
            return 2;
        }
    }
    if (!model_path || (!ids_arg && !tok_file)) die("need -m and -i or --tokenize");

    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = load_model(model_path, mp);
    if (!model) die("cannot load the model");
    const vocab_t *vocab = VOCAB_OF(model);
    const int n_vocab = n_vocab_of(vocab);

    if (tok_file) {
        long len;
        char *text = read_file(tok_file, &len);
        int cap = (int)len + 16;
        llama_token *toks = malloc(sizeof(llama_token) * cap);
        int n = llama_tokenize(vocab, text, (int)len, toks, cap, true, false);
        if (n < 0) die("tokenize failed");
        for (int i = 0; i < n; i++) printf("%d\n", toks[i]);
        return 0;
    }

    long len;
    char *ids_text = read_file(ids_arg, &len);
    int n;
    llama_token *ids = parse_ids(ids_text, &n);
    if (n == 0) die("no token ids");

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n + n_gen + 16);
    cp.n_batch = (uint32_t)n;
    cp.n_ubatch = (uint32_t)n;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
#ifdef LLAMA_LOGITS_OLD_API
    cp.flash_attn = false;  // and the default f16 KV cache: this libllama wants flash attention for an f32 V cache
#else
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
#endif
    struct llama_context *ctx = new_context(model, cp);
    if (!ctx) die("cannot create a context");

    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed");

    if (out) {
        float *all = malloc(sizeof(float) * (size_t)n * n_vocab);
        for (int i = 0; i < n; i++) {
            const float *l = llama_get_logits_ith(ctx, i);
            if (!l) die("no logits");
            memcpy(all + (size_t)i * n_vocab, l, sizeof(float) * n_vocab);
        }
        write_npy(out, all, n, n_vocab);
    }

    if (n_gen > 0) {
        int pos = n;
        const float *l = llama_get_logits_ith(ctx, n - 1);
        struct llama_batch one = llama_batch_init(1, 0, 1);
        for (int g = 0; g < n_gen; g++) {
            int best = 0;
            for (int v = 1; v < n_vocab; v++)
                if (l[v] > l[best]) best = v;
            printf("%d%s", best, g + 1 < n_gen ? "," : "\n");
            one.token[0] = best;
            one.pos[0] = pos++;
            one.n_seq_id[0] = 1;
            one.seq_id[0][0] = 0;
            one.logits[0] = 1;
            one.n_tokens = 1;
            if (g + 1 < n_gen) {
                if (llama_decode(ctx, one) != 0) die("llama_decode failed");
                l = llama_get_logits_ith(ctx, 0);
            }
        }
        llama_batch_free(one);
    }

    llama_batch_free(batch);
    llama_free(ctx);
#ifdef LLAMA_LOGITS_OLD_API
    llama_free_model(model);
#else
    llama_model_free(model);
#endif
    llama_backend_free();
    return 0;
}
