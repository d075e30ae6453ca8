// gguf_value.hpp: the metadata value of a GGUF key (every GGUF value type, arrays nested to any
// depth), with checked conversions that name the key and the expected type when they fail.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "error.hpp"

namespace lumen {

// GGUF's value type ids, as stored in the file.
enum class gguf_type : uint32_t {
    uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7,
    string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

inline std::string_view gguf_type_name(gguf_type t) {
    switch (t) {
        case gguf_type::uint8: return "u8";
        case gguf_type::int8: return "i8";
        case gguf_type::uint16: return "u16";
        case gguf_type::int16: return "i16";
        case gguf_type::uint32: return "u32";
        case gguf_type::int32: return "i32";
        case gguf_type::float32: return "f32";
        case gguf_type::boolean: return "bool";
        case gguf_type::string: return "string";
        case gguf_type::array: return "array";
        case gguf_type::uint64: return "u64";
        case gguf_type::int64: return "i64";
        case gguf_type::float64: return "f64";
    }
    return "unknown";
}

struct gguf_value;

struct gguf_array {
    gguf_type type = gguf_type::uint8;  // element type
    std::vector<gguf_value> values;
};

struct gguf_value {
    using storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                                 std::string, gguf_array, uint64_t, int64_t, double>;
    storage value;

    gguf_value() = default;
    template <class T>
    gguf_value(T v) : value(std::move(v)) {}

    // The storage alternatives are declared in gguf_type order.
    gguf_type type() const { return static_cast<gguf_type>(value.index()); }
    bool is_integer() const {
        const gguf_type t = type();
        return t <= gguf_type::int32 || t == gguf_type::uint64 || t == gguf_type::int64;
    }

    // Any integer type, as int64 (a u64 above INT64_MAX is an error).
    int64_t as_int(std::string_view what) const {
        return std::visit([&](const auto& v) -> int64_t {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, bool> || !std::is_integral_v<T>) {
                throw error(std::string(what) + ": expected an integer, found " +
                            std::string(gguf_type_name(type())));
            } else {
                if constexpr (std::is_same_v<T, uint64_t>)
                    if (v > static_cast<uint64_t>(INT64_MAX))
                        throw error(std::string(what) + ": integer " + std::to_string(v) + " is too large");
                return static_cast<int64_t>(v);
            }
        }, value);
    }
    // f32 or f64 (integers are accepted too, since some writers store e.g. a rope base as int).
    double as_float(std::string_view what) const {
        if (const float* f = std::get_if<float>(&value)) return *f;
        if (const double* d = std::get_if<double>(&value)) return *d;
        if (is_integer()) return static_cast<double>(as_int(what));
        throw error(std::string(what) + ": expected a float, found " + std::string(gguf_type_name(type())));
    }
    bool as_bool(std::string_view what) const {
        if (const bool* b = std::get_if<bool>(&value)) return *b;
        throw error(std::string(what) + ": expected a bool, found " + std::string(gguf_type_name(type())));
    }
    const std::string& as_string(std::string_view what) const {
        if (const std::string* s = std::get_if<std::string>(&value)) return *s;
        throw error(std::string(what) + ": expected a string, found " + std::string(gguf_type_name(type())));
    }
    const gguf_array& as_array(std::string_view what) const {
        if (const gguf_array* a = std::get_if<gguf_array>(&value)) return *a;
        throw error(std::string(what) + ": expected an array, found " + std::string(gguf_type_name(type())));
    }
};

}  // namespace lumen
