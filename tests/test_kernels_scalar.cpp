// test_kernels_scalar.cpp: the kernel tests again with the portable scalar kernels forced as the
// active set (LUMEN_FORCE_SCALAR), so the path that WebAssembly and CPUs without AVX2 use stays
// tested on every build.
#define LUMEN_FORCE_SCALAR 1
#include "test_kernels.cpp"
