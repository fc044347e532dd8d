/* libcublas.so.12 for a machine that has only cuBLAS 13, for bench/device_check.sh.
 *
 * The faiss-gpu-cu12 wheel links eight cuBLAS 12 entry points (versioned
 * `@libcublas.so.12`), while the lent GPU machines ship CUDA 13 and the cuBLAS 12 wheel is
 * far over what the device tool carries. These eight have the same prototypes in cuBLAS 13,
 * so each is forwarded to the libcublas.so.13 found on LD_LIBRARY_PATH. Built with
 * cublas12_shim.map by bench/device_wheels.sh; never part of the product (docker/Dockerfile.gpu
 * installs real CUDA 12 libraries). Enum and handle types are written as int and void *,
 * which is their ABI.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef int status_t;
typedef void *handle_t;

static void *real(const char *name) {
  static void *lib;
  if (!lib && !(lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL))) {
    fprintf(stderr, "cublas12 shim: %s\n", dlerror());
    abort();
  }
  void *fn = dlsym(lib, name);
  if (!fn) {
    fprintf(stderr, "cublas12 shim: no %s in libcublas.so.13\n", name);
    abort();
  }
  return fn;
}

#define FORWARD(name, params, args)                                  \
  status_t name params {                                             \
    static status_t(*fn) params;                                     \
    if (!fn) fn = (status_t(*) params)real(#name);                   \
    return fn args;                                                  \
  }

FORWARD(cublasCreate_v2, (handle_t * h), (h))
FORWARD(cublasDestroy_v2, (handle_t h), (h))
FORWARD(cublasSetStream_v2, (handle_t h, void *stream), (h, stream))
FORWARD(cublasGetMathMode, (handle_t h, int *mode), (h, mode))
FORWARD(cublasSetMathMode, (handle_t h, int mode), (h, mode))
FORWARD(cublasSgemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const float *alpha, const void *a,
         int atype, int lda, const void *b, int btype, int ldb, const float *beta, void *c,
         int ctype, int ldc),
        (h, ta, tb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc))
FORWARD(cublasGemmEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
         int atype, int lda, const void *b, int btype, int ldb, const void *beta, void *c,
         int ctype, int ldc, int compute, int algo),
        (h, ta, tb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc, compute,
         algo))
FORWARD(cublasGemmStridedBatchedEx,
        (handle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
         int atype, int lda, long long sa, const void *b, int btype, int ldb, long long sb,
         const void *beta, void *c, int ctype, int ldc, long long sc, int batch, int compute,
         int algo),
        (h, ta, tb, m, n, k, alpha, a, atype, lda, sa, b, btype, ldb, sb, beta, c, ctype, ldc, sc,
         batch, compute, algo))
