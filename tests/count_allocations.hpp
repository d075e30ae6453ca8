// count_allocations.hpp: replaces the global operator new/delete of the test program that includes it
// (include it in exactly one file of a program) and counts every allocation, so a test can show
// that some code makes none: compare allocations() before and after.
//
// All the replaceable forms are replaced, so every new and delete pair up on malloc and free (also
// under AddressSanitizer, which would otherwise mix its own operator new with this delete).
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace test_util {
inline std::atomic<long> allocation_count{0};
inline long allocations() { return allocation_count.load(); }
inline void* counted_malloc(std::size_t n) noexcept {
    allocation_count.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
}  // namespace test_util

void* operator new(std::size_t n) {
    if (void* p = test_util::counted_malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return test_util::counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return test_util::counted_malloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
