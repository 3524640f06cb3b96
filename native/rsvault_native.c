/*
 * rsvault_native: AES-256-GCM seal/open into caller-provided buffers.
 *
 * Uses the OpenSSL inside the node binary (node exports its EVP_* symbols; this addon is linked
 * without -lcrypto and resolves them from the process when loaded). Node's createCipheriv
 * allocates a new Buffer per update() and the caller copies it into its slot; here OpenSSL writes
 * straight into the destination, in one EVP_*Update call per buffer.
 *
 * Context-aware (NAPI_MODULE_INIT): every JS environment (main thread, each worker_threads Worker)
 * gets its own instance data holding two EVP_CIPHER_CTX (one per direction), so a context is
 * never shared between threads. The cipher is bound to each context once; a call only re-keys
 * it with EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, -1), which also resets the GCM state.
 *
 *   seal(key, iv, aad, plain, out): void
 *       out.length >= plain.length + 16; ciphertext -> out[0..n), tag -> out[n..n+16).
 *   open(key, iv, aad, ct, tag, out): boolean
 *       out.length >= ct.length; plaintext -> out[0..n); false when the tag does not authenticate.
 *   addressMod(bytes, m): number
 *       the address of bytes[0] modulo m: lets JavaScript align views for O_DIRECT I/O.
 *   adviseHugePages(bytes): number
 *       madvise(MADV_HUGEPAGE) over the 2 MiB-aligned interior of bytes (Linux; 0 elsewhere or
 *       when refused): the number of bytes advised.
 *
 * All arguments are Uint8Array (Buffer included), possibly views into a SharedArrayBuffer.
 * key 32 bytes, iv 12 bytes, tag 16 bytes; wrong sizes throw a TypeError. out may be exactly the
 * input memory (in place) or disjoint from it; a partial overlap throws a TypeError.
 */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE under -std=c11 */
#endif
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <node_api.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#define KEY_LEN 32
#define IV_LEN 12
#define TAG_LEN 16
/* EVP_*Update takes an int length: feed at most 1 GiB per call. */
#define PIECE ((size_t)1 << 30)

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
} instance_t;

typedef struct {
  uint8_t *data;
  size_t len;
} bytes_t;

/* ---------- helpers ---------- */

/* Throws (if nothing is pending yet) and returns NULL, for `return fail(...)` in callbacks. */
static napi_value throw_type(napi_env env, const char *msg) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && !pending) napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static napi_value throw_error(napi_env env, const char *msg) {
  bool pending = false;
  /* Never let an OpenSSL error linger on this thread's queue: Node's own crypto reads it. */
  ERR_clear_error();
  if (napi_is_exception_pending(env, &pending) == napi_ok && !pending) napi_throw_error(env, NULL, msg);
  return NULL;
}

/* Reads a Uint8Array (or Buffer) argument. Returns false after throwing a TypeError. */
static bool get_bytes(napi_env env, napi_value v, const char *bad_type_msg, bytes_t *out) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    throw_type(env, bad_type_msg);
    return false;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  /* data already points at the first element (byte_offset applied), also for SharedArrayBuffer views. */
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok) {
    throw_type(env, bad_type_msg);
    return false;
  }
  if (type != napi_uint8_array) {
    throw_type(env, bad_type_msg);
    return false;
  }
  out->data = (uint8_t *)data;
  out->len = length;
  return true;
}

/* True when [a, a+alen) and [b, b+blen) share memory but do not start at the same address. */
static bool partially_overlapping(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  if (alen == 0 || blen == 0 || a == b) return false;
  uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  return pa < pb + blen && pb < pa + alen;
}

static void instance_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  instance_t *inst = (instance_t *)data;
  if (inst == NULL) return;
  EVP_CIPHER_CTX_free(inst->enc);
  EVP_CIPHER_CTX_free(inst->dec);
  free(inst);
}

static instance_t *get_instance(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return (instance_t *)data;
}

/* Feeds `len` bytes of AAD (out == NULL) or data in pieces that fit an int. */
static bool update_all(EVP_CIPHER_CTX *ctx, int enc, uint8_t *out, const uint8_t *in, size_t len) {
  size_t done = 0;
  while (done < len) {
    size_t n = len - done;
    if (n > PIECE) n = PIECE;
    int outl = 0;
    int ok = enc ? EVP_EncryptUpdate(ctx, out ? out + done : NULL, &outl, in + done, (int)n)
                 : EVP_DecryptUpdate(ctx, out ? out + done : NULL, &outl, in + done, (int)n);
    /* GCM is a stream mode: every input byte comes out at once. */
    if (ok != 1 || (out != NULL && (size_t)outl != n)) return false;
    done += n;
  }
  return true;
}

/* ---------- seal ---------- */

static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return throw_error(env, "napi_get_cb_info failed");
  if (argc < 5) return throw_type(env, "seal(key, iv, aad, plain, out): expected 5 arguments");

  bytes_t key, iv, aad, plain, out;
  if (!get_bytes(env, argv[0], "seal: key must be a Uint8Array", &key)) return NULL;
  if (!get_bytes(env, argv[1], "seal: iv must be a Uint8Array", &iv)) return NULL;
  if (!get_bytes(env, argv[2], "seal: aad must be a Uint8Array", &aad)) return NULL;
  if (!get_bytes(env, argv[3], "seal: plain must be a Uint8Array", &plain)) return NULL;
  if (!get_bytes(env, argv[4], "seal: out must be a Uint8Array", &out)) return NULL;
  if (key.len != KEY_LEN) return throw_type(env, "seal: key must be 32 bytes");
  if (iv.len != IV_LEN) return throw_type(env, "seal: iv must be 12 bytes");
  if (out.len < TAG_LEN || out.len - TAG_LEN < plain.len) return throw_type(env, "seal: out must hold plain.length + 16 bytes");
  if (partially_overlapping(plain.data, plain.len, out.data, plain.len + TAG_LEN))
    return throw_type(env, "seal: out must be the same memory as plain or not overlap it");

  instance_t *inst = get_instance(env);
  if (inst == NULL) return throw_error(env, "rsvault_native: no instance data");
  EVP_CIPHER_CTX *ctx = inst->enc;

  int outl = 0;
  if (EVP_CipherInit_ex(ctx, NULL, NULL, key.data, iv.data, -1) != 1) return throw_error(env, "seal: EVP_CipherInit_ex failed");
  if (!update_all(ctx, 1, NULL, aad.data, aad.len)) return throw_error(env, "seal: AAD update failed");
  if (!update_all(ctx, 1, out.data, plain.data, plain.len)) return throw_error(env, "seal: EVP_EncryptUpdate failed");
  if (EVP_EncryptFinal_ex(ctx, out.data + plain.len, &outl) != 1 || outl != 0) return throw_error(env, "seal: EVP_EncryptFinal_ex failed");
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out.data + plain.len) != 1) return throw_error(env, "seal: reading the tag failed");

  napi_value undef;
  napi_get_undefined(env, &undef);
  return undef;
}

/* ---------- open ---------- */

static napi_value open_(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return throw_error(env, "napi_get_cb_info failed");
  if (argc < 6) return throw_type(env, "open(key, iv, aad, ct, tag, out): expected 6 arguments");

  bytes_t key, iv, aad, ct, tag, out;
  if (!get_bytes(env, argv[0], "open: key must be a Uint8Array", &key)) return NULL;
  if (!get_bytes(env, argv[1], "open: iv must be a Uint8Array", &iv)) return NULL;
  if (!get_bytes(env, argv[2], "open: aad must be a Uint8Array", &aad)) return NULL;
  if (!get_bytes(env, argv[3], "open: ct must be a Uint8Array", &ct)) return NULL;
  if (!get_bytes(env, argv[4], "open: tag must be a Uint8Array", &tag)) return NULL;
  if (!get_bytes(env, argv[5], "open: out must be a Uint8Array", &out)) return NULL;
  if (key.len != KEY_LEN) return throw_type(env, "open: key must be 32 bytes");
  if (iv.len != IV_LEN) return throw_type(env, "open: iv must be 12 bytes");
  if (tag.len != TAG_LEN) return throw_type(env, "open: tag must be 16 bytes");
  if (out.len < ct.len) return throw_type(env, "open: out must hold ct.length bytes");
  if (partially_overlapping(ct.data, ct.len, out.data, ct.len))
    return throw_type(env, "open: out must be the same memory as ct or not overlap it");

  instance_t *inst = get_instance(env);
  if (inst == NULL) return throw_error(env, "rsvault_native: no instance data");
  EVP_CIPHER_CTX *ctx = inst->dec;

  if (EVP_CipherInit_ex(ctx, NULL, NULL, key.data, iv.data, -1) != 1) return throw_error(env, "open: EVP_CipherInit_ex failed");
  /* The tag is copied into the context here, before out (which may overlap it) is written. */
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag.data) != 1) return throw_error(env, "open: setting the tag failed");
  if (!update_all(ctx, 0, NULL, aad.data, aad.len)) return throw_error(env, "open: AAD update failed");
  if (!update_all(ctx, 0, out.data, ct.data, ct.len)) return throw_error(env, "open: EVP_DecryptUpdate failed");
  int outl = 0;
  bool ok = EVP_DecryptFinal_ex(ctx, out.data + ct.len, &outl) == 1;
  if (!ok) ERR_clear_error();

  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

/*
 * addressMod(bytes, m): the address of bytes[0] modulo m (1 <= m <= 2^20). JavaScript cannot see
 * addresses; O_DIRECT I/O needs buffers aligned to the device's block size, so callers allocate a
 * little more and start their view at (m - addressMod(view, m)) % m. The backing memory of an
 * ArrayBuffer never moves (also not when transferred to a worker), so the answer stays valid.
 */
static napi_value address_mod(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2)
    return throw_type(env, "addressMod(bytes, m) takes two arguments");
  bytes_t b;
  if (!get_bytes(env, argv[0], "addressMod: bytes must be a Uint8Array", &b)) return NULL;
  uint32_t m = 0;
  if (napi_get_value_uint32(env, argv[1], &m) != napi_ok || m < 1 || m > (1u << 20))
    return throw_type(env, "addressMod: m must be an integer in 1..2^20");
  napi_value result;
  napi_create_uint32(env, (uint32_t)((uintptr_t)b.data % m), &result);
  return result;
}

/*
 * adviseHugePages(bytes): transparent huge pages for a large, long-lived buffer (the engine's slot
 * pools). On a guest where a 4 KiB page fault is expensive (≈ 6 µs on the reference VM: the first
 * touch of 64 MiB took 0.35–0.5 s, against 0.01 s with 2 MiB pages), a fresh 4 MiB slot costs
 * ≈ 25 ms before the first byte is read into it. Only the 2 MiB-aligned interior of the view is
 * advised (its edges stay 4 KiB pages, so no memory outside the view is pulled in), and only
 * memory not yet touched gets huge pages at fault time; touched pages are left to khugepaged.
 * Returns the bytes advised: 0 when the view has no aligned 2 MiB inside it, the kernel refuses
 * (THP disabled: "never"), or the platform is not Linux. Harmless in every case.
 */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1)
    return throw_type(env, "adviseHugePages(bytes) takes one argument");
  bytes_t b;
  if (!get_bytes(env, argv[0], "adviseHugePages: bytes must be a Uint8Array", &b)) return NULL;
  double advised = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t)2 << 20;
  uintptr_t start = ((uintptr_t)b.data + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t)b.data + b.len) & ~(huge - 1);
  if (b.data != NULL && end > start && madvise((void *)start, end - start, MADV_HUGEPAGE) == 0) advised = (double)(end - start);
#endif
  napi_value result;
  napi_create_double(env, advised, &result);
  return result;
}

/* ---------- module ---------- */

static EVP_CIPHER_CTX *new_ctx(int enc) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return NULL;
  /* Bind the cipher once; IV length stays GCM's default of 12 bytes. */
  if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  instance_t *inst = (instance_t *)calloc(1, sizeof *inst);
  if (inst == NULL) return throw_error(env, "rsvault_native: out of memory");
  inst->enc = new_ctx(1);
  inst->dec = new_ctx(0);
  if (inst->enc == NULL || inst->dec == NULL) {
    instance_free(env, inst, NULL);
    return throw_error(env, "rsvault_native: cannot create an AES-256-GCM context");
  }
  if (napi_set_instance_data(env, inst, instance_free, NULL) != napi_ok) {
    instance_free(env, inst, NULL);
    return throw_error(env, "rsvault_native: napi_set_instance_data failed");
  }

  napi_property_descriptor props[] = {
      {"seal", NULL, seal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"open", NULL, open_, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addressMod", NULL, address_mod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adviseHugePages", NULL, advise_huge_pages, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return throw_error(env, "rsvault_native: napi_define_properties failed");
  return exports;
}
