// test_kernels_no_vnni.cpp: the kernel tests again with the AVX2 integer dot products forced to
// vpmaddubsw + vpmaddwd (LUMEN_NO_VNNI), the path of AVX2 CPUs without VNNI (Haswell, Zen 1-3), so
// it stays tested on machines that have VNNI. Elsewhere it repeats test_kernels.
#define LUMEN_NO_VNNI 1
#include "test_kernels.cpp"
