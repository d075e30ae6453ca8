// detail/gguf_serialize.hpp: appends GGUF's little-endian encodings (scalars, strings, metadata
// values and arrays) to a byte buffer; shared by gguf_writer and gguf_stream_writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../error.hpp"
#include "../gguf_value.hpp"

namespace lumen::detail {

template <class T>
void gguf_put(std::vector<std::byte>& out, T v) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &v, sizeof(T));
}

// u64 length, then the bytes (no terminator).
inline void gguf_put_string(std::vector<std::byte>& out, const std::string& s) {
    gguf_put<uint64_t>(out, s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
}

// A value without its type tag; arrays carry their element type and count.
inline void gguf_put_value(std::vector<std::byte>& out, const gguf_value& value) {
    std::visit([&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
            gguf_put_string(out, v);
        } else if constexpr (std::is_same_v<T, gguf_array>) {
            gguf_put<uint32_t>(out, static_cast<uint32_t>(v.type));
            gguf_put<uint64_t>(out, v.values.size());
            for (const gguf_value& e : v.values) {
                if (e.type() != v.type) throw error("GGUF writer: array element of the wrong type");
                gguf_put_value(out, e);
            }
        } else if constexpr (std::is_same_v<T, bool>) {
            gguf_put<uint8_t>(out, v ? 1 : 0);
        } else {
            gguf_put<T>(out, v);
        }
    }, value.value);
}

}  // namespace lumen::detail
