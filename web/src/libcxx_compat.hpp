// libcxx_compat.hpp: force-included (-include) in the WebAssembly build only. Emscripten 3.1.6
// (Debian) ships libc++ 13, which lacks C++20's std::bit_cast; clang 14 has the builtin behind it.
#pragma once

#include <bit>
#include <type_traits>

#if defined(_LIBCPP_VERSION) && _LIBCPP_VERSION < 14000
namespace std {
template <class To, class From>
    requires(sizeof(To) == sizeof(From) && is_trivially_copyable_v<To> && is_trivially_copyable_v<From>)
constexpr To bit_cast(const From& from) noexcept {
    return __builtin_bit_cast(To, from);
}
}  // namespace std
#endif
