// gguf_writer.hpp: writes GGUF v3 files that llama.cpp and lumen's reader both load: metadata of
// every value type, then tensor infos, then the aligned tensor data.
#pragma once

#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "detail/gguf_serialize.hpp"
#include "error.hpp"
#include "gguf.hpp"
#include "gguf_value.hpp"
#include "tensor.hpp"

namespace lumen {

class gguf_writer {
public:
    // Sets (or replaces) a metadata key. Plain C++ values map to GGUF types by their type:
    // uint32_t → u32, int32_t → i32, float → f32, bool → bool, std::string → string, ...
    void set(const std::string& key, gguf_value value) {
        for (auto& kv : metadata_)
            if (kv.first == key) { kv.second = std::move(value); return; }
        metadata_.emplace_back(key, std::move(value));
    }
    void set_string(const std::string& key, std::string v) { set(key, gguf_value(std::move(v))); }

    template <class T>
    void set_array(const std::string& key, const std::vector<T>& values) {
        gguf_array arr;
        arr.type = gguf_value(T{}).type();
        arr.values.reserve(values.size());
        for (const T& v : values) arr.values.emplace_back(v);
        set(key, gguf_value(std::move(arr)));
    }

    // Adds a tensor; ne[0] is the row length. `data` must hold exactly the bytes of that shape.
    void add_tensor(const std::string& name, dtype type, std::vector<int64_t> ne, std::vector<std::byte> data) {
        if (ne.empty() || ne.size() > gguf_max_dims)
            throw error("gguf_writer: tensor '" + name + "' must have 1 to 4 dimensions");
        int64_t n = 1;
        for (int64_t d : ne) {
            if (d <= 0) throw error("gguf_writer: tensor '" + name + "' has a non-positive dimension");
            n *= d;
        }
        const int64_t expected = row_bytes(type, ne[0]) * (n / ne[0]);
        if (static_cast<int64_t>(data.size()) != expected)
            throw error("gguf_writer: tensor '" + name + "' has " + std::to_string(data.size()) + " bytes, expected " +
                        std::to_string(expected));
        for (const auto& t : tensors_)
            if (t.name == name) throw error("gguf_writer: duplicate tensor '" + name + "'");
        tensors_.push_back({name, type, std::move(ne), std::move(data)});
    }
    // Convenience for F32 tensors.
    void add_tensor_f32(const std::string& name, std::vector<int64_t> ne, std::span<const float> values) {
        std::vector<std::byte> bytes(values.size() * sizeof(float));
        std::memcpy(bytes.data(), values.data(), bytes.size());
        add_tensor(name, dtype::f32, std::move(ne), std::move(bytes));
    }

    // The metadata set so far, in order.
    const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return metadata_; }

    // general.alignment if set (a power of two up to 2^20), else GGUF's default of 32.
    uint32_t alignment() const {
        for (const auto& kv : metadata_) {
            if (kv.first != "general.alignment") continue;
            const int64_t a = kv.second.as_int("gguf_writer: general.alignment");
            if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0)
                throw error("gguf_writer: general.alignment " + std::to_string(a) + " is not a power of two up to 2^20");
            return static_cast<uint32_t>(a);
        }
        return gguf_default_alignment;
    }

    // Serialises the whole file to memory.
    std::vector<std::byte> to_bytes() const {
        std::vector<std::byte> out;
        detail::gguf_put<uint32_t>(out, gguf_magic);
        detail::gguf_put<uint32_t>(out, 3);
        detail::gguf_put<uint64_t>(out, tensors_.size());
        detail::gguf_put<uint64_t>(out, metadata_.size());
        for (const auto& [key, value] : metadata_) {
            detail::gguf_put_string(out, key);
            detail::gguf_put<uint32_t>(out, static_cast<uint32_t>(value.type()));
            detail::gguf_put_value(out, value);
        }
        const uint64_t align = alignment();
        uint64_t offset = 0;
        for (const auto& t : tensors_) {
            detail::gguf_put_string(out, t.name);
            detail::gguf_put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
            for (int64_t d : t.ne) detail::gguf_put<uint64_t>(out, static_cast<uint64_t>(d));
            detail::gguf_put<uint32_t>(out, static_cast<uint32_t>(t.type));
            detail::gguf_put<uint64_t>(out, offset);
            offset += (t.data.size() + align - 1) / align * align;
        }
        out.resize((out.size() + align - 1) / align * align, std::byte{0});
        for (const auto& t : tensors_) {
            out.insert(out.end(), t.data.begin(), t.data.end());
            out.resize((out.size() + align - 1) / align * align, std::byte{0});
        }
        return out;
    }

    void write(const std::string& path) const {
        const std::vector<std::byte> bytes = to_bytes();
        std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
        if (!f) throw error(path + ": cannot open for writing");
        if (std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
            throw error(path + ": write failed");
        if (std::fflush(f.get()) != 0) throw error(path + ": write failed");
    }

private:
    struct pending_tensor {
        std::string name;
        dtype type;
        std::vector<int64_t> ne;
        std::vector<std::byte> data;
    };


    std::vector<std::pair<std::string, gguf_value>> metadata_;
    std::vector<pending_tensor> tensors_;
};

}  // namespace lumen
