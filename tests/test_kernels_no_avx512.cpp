// test_kernels_no_avx512.cpp: the kernel tests again without the AVX-512 tiles (LUMEN_NO_AVX512),
// so that the AVX2+VNNI tiles, the path of CPUs with AVX-VNNI but no AVX-512, stay tested on
// machines that have it. Elsewhere it repeats test_kernels.
#define LUMEN_NO_AVX512 1
#include "test_kernels.cpp"
