// gguf.hpp: reads GGUF v2/v3 model files (llama.cpp's format), byte-compatible with ggml. Tensor
// data stays in the mapped file; every count, length, offset and size is checked before use.
//
// The format (all little-endian):
//   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
//   n_kv × { string key | u32 value_type | value }
//   n_tensors × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (u32, default 32), then the tensor data section.
// string = u64 length + bytes (no terminator). value_type: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32,
// 5 i32, 6 f32, 7 bool (1 byte), 8 string, 9 array (u32 element type, u64 count, elements;
// arrays may nest), 10 u64, 11 i64, 12 f64. Tensor offsets are relative to the data section and
// multiples of the alignment; ne[0] is the row length (the fastest-moving dimension).
#pragma once

#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "detail/mapped_file.hpp"
#include "error.hpp"
#include "gguf_value.hpp"
#include "tensor.hpp"

namespace lumen {

inline constexpr uint32_t gguf_magic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t gguf_default_alignment = 32;
inline constexpr uint32_t gguf_max_dims = 4;

namespace detail {

// A bounds-checked cursor over the file's bytes; every read names the file on failure.
class gguf_cursor {
public:
    gguf_cursor(const std::string& path, const std::byte* data, size_t size)
        : path_(path), data_(data), size_(size) {}

    size_t offset() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }

    void need(uint64_t n, std::string_view what) const {
        if (n > remaining())
            throw error(path_ + ": truncated while reading " + std::string(what) + " at byte " +
                        std::to_string(pos_) + " (needs " + std::to_string(n) + " bytes, " +
                        std::to_string(remaining()) + " left)");
    }

    template <class T>
    T read(std::string_view what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(std::string_view what) {
        const uint64_t n = read<uint64_t>(what);
        need(n, what);
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
        pos_ += static_cast<size_t>(n);
        return s;
    }

private:
    const std::string& path_;
    const std::byte* data_;
    size_t size_;
    size_t pos_ = 0;
};

// Smallest number of bytes one value of this type can take in the file (for count checks).
inline uint64_t gguf_min_value_bytes(gguf_type t) {
    switch (t) {
        case gguf_type::uint8: case gguf_type::int8: case gguf_type::boolean: return 1;
        case gguf_type::uint16: case gguf_type::int16: return 2;
        case gguf_type::uint32: case gguf_type::int32: case gguf_type::float32: return 4;
        case gguf_type::uint64: case gguf_type::int64: case gguf_type::float64: return 8;
        case gguf_type::string: return 8;
        case gguf_type::array: return 12;
    }
    return 1;
}

inline gguf_type read_gguf_type(gguf_cursor& in, const std::string& path, const std::string& what) {
    const uint32_t raw = in.read<uint32_t>(what);
    if (raw > static_cast<uint32_t>(gguf_type::float64))
        throw error(path + ": " + what + ": unknown value type " + std::to_string(raw));
    return static_cast<gguf_type>(raw);
}

inline gguf_value read_gguf_value(gguf_cursor& in, gguf_type type, const std::string& path,
                                  const std::string& key, int depth) {
    switch (type) {
        case gguf_type::uint8: return in.read<uint8_t>(key);
        case gguf_type::int8: return in.read<int8_t>(key);
        case gguf_type::uint16: return in.read<uint16_t>(key);
        case gguf_type::int16: return in.read<int16_t>(key);
        case gguf_type::uint32: return in.read<uint32_t>(key);
        case gguf_type::int32: return in.read<int32_t>(key);
        case gguf_type::float32: return in.read<float>(key);
        case gguf_type::uint64: return in.read<uint64_t>(key);
        case gguf_type::int64: return in.read<int64_t>(key);
        case gguf_type::float64: return in.read<double>(key);
        case gguf_type::boolean: {
            const uint8_t b = in.read<uint8_t>(key);
            if (b > 1) throw error(path + ": key '" + key + "': bool value " + std::to_string(b) + " is not 0 or 1");
            return b != 0;
        }
        case gguf_type::string: return in.read_string("string value of key '" + key + "'");
        case gguf_type::array: {
            if (depth > 8) throw error(path + ": key '" + key + "': arrays nested deeper than 8 levels");
            gguf_array arr;
            arr.type = read_gguf_type(in, path, "element type of array key '" + key + "'");
            const uint64_t count = in.read<uint64_t>(key);
            // Every element takes at least a few bytes, so a count the file cannot hold is caught
            // here, before anything is allocated.
            if (count > in.remaining() / gguf_min_value_bytes(arr.type))
                throw error(path + ": key '" + key + "': array of " + std::to_string(count) + " " +
                            std::string(gguf_type_name(arr.type)) + " elements does not fit in the file");
            arr.values.reserve(static_cast<size_t>(count));
            for (uint64_t i = 0; i < count; ++i) arr.values.push_back(read_gguf_value(in, arr.type, path, key, depth + 1));
            return arr;
        }
    }
    throw error(path + ": key '" + key + "': unknown value type");
}

}  // namespace detail

// A GGUF file: its metadata and its tensors, whose data points into the mapped file.
class gguf_file {
public:
    // Maps and parses a file. Throws lumen::error naming the file and the problem.
    static gguf_file open(const std::string& path) {
        return gguf_file(path, detail::byte_source::map_file(path));
    }
    // Parses bytes already in memory (the browser build); `name` is used in messages.
    static gguf_file from_bytes(const std::string& name, detail::byte_source bytes) {
        return gguf_file(name, std::move(bytes));
    }

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }
    uint64_t file_size() const { return bytes_.size(); }

    const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return metadata_; }
    const std::vector<tensor_view>& tensors() const { return tensors_; }

    const gguf_value* find(std::string_view key) const {
        auto it = key_index_.find(std::string(key));
        return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
    }
    const gguf_value& get(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) throw error(path_ + ": missing required key '" + std::string(key) + "'");
        return *v;
    }
    std::string get_string(std::string_view key) const { return get(key).as_string(what(key)); }
    int64_t get_int(std::string_view key) const { return get(key).as_int(what(key)); }
    // An integer key that must lie in [lo, hi] (u32 or u64 in real files).
    int64_t get_int(std::string_view key, int64_t lo, int64_t hi) const {
        const int64_t v = get_int(key);
        if (v < lo || v > hi)
            throw error(what(key) + ": value " + std::to_string(v) + " is outside [" + std::to_string(lo) +
                        ", " + std::to_string(hi) + "]");
        return v;
    }
    double get_float(std::string_view key) const { return get(key).as_float(what(key)); }
    bool get_bool(std::string_view key) const { return get(key).as_bool(what(key)); }
    const gguf_array& get_array(std::string_view key) const { return get(key).as_array(what(key)); }

    std::optional<std::string> find_string(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return v->as_string(what(key));
    }
    std::optional<int64_t> find_int(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return v->as_int(what(key));
    }
    std::optional<double> find_float(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return v->as_float(what(key));
    }
    std::optional<bool> find_bool(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) return std::nullopt;
        return v->as_bool(what(key));
    }

    const tensor_view* find_tensor(std::string_view name) const {
        auto it = tensor_index_.find(std::string(name));
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_view& get_tensor(std::string_view name) const {
        const tensor_view* t = find_tensor(name);
        if (!t) throw error(path_ + ": missing tensor '" + std::string(name) + "'");
        return *t;
    }

    // "file: key 'name'", the prefix of messages about a key.
    std::string what(std::string_view key) const { return path_ + ": key '" + std::string(key) + "'"; }

private:
    gguf_file(std::string path, detail::byte_source bytes) : path_(std::move(path)), bytes_(std::move(bytes)) {
        parse();
    }

    void parse() {
        detail::gguf_cursor in(path_, bytes_.data(), bytes_.size());
        if (bytes_.size() < 4) throw error(path_ + ": too small to be a GGUF file (" + std::to_string(bytes_.size()) + " bytes)");
        const uint32_t magic = in.read<uint32_t>("magic");
        if (magic != gguf_magic) throw error(path_ + ": not a GGUF file (bad magic; expected \"GGUF\")");
        version_ = in.read<uint32_t>("version");
        if (version_ != 2 && version_ != 3) {
            std::string hint = (version_ == 1) ? " (GGUF v1 is obsolete; re-convert the model)"
                               : ((version_ & 0xFFFF) == 0 ? " (a big-endian file?)" : "");
            throw error(path_ + ": unsupported GGUF version " + std::to_string(version_) + ", expected 2 or 3" + hint);
        }
        const uint64_t n_tensors = in.read<uint64_t>("tensor count");
        const uint64_t n_kv = in.read<uint64_t>("metadata count");
        // A key takes at least 12 bytes (length + type), a tensor info at least 24.
        if (n_kv > in.remaining() / 12)
            throw error(path_ + ": metadata count " + std::to_string(n_kv) + " does not fit in the file");
        if (n_tensors > in.remaining() / 24)
            throw error(path_ + ": tensor count " + std::to_string(n_tensors) + " does not fit in the file");

        metadata_.reserve(static_cast<size_t>(n_kv));
        for (uint64_t i = 0; i < n_kv; ++i) {
            std::string key = in.read_string("metadata key " + std::to_string(i));
            const gguf_type type = detail::read_gguf_type(in, path_, "key '" + key + "'");
            gguf_value value = detail::read_gguf_value(in, type, path_, key, 0);
            if (!key_index_.emplace(key, metadata_.size()).second)
                throw error(path_ + ": duplicate key '" + key + "'");
            metadata_.emplace_back(std::move(key), std::move(value));
        }

        if (const gguf_value* a = find("general.alignment")) {
            const int64_t al = a->as_int(what("general.alignment"));
            if (al <= 0 || al > (1 << 20) || (al & (al - 1)) != 0)
                throw error(what("general.alignment") + ": " + std::to_string(al) + " is not a power of two");
            alignment_ = static_cast<uint32_t>(al);
        }

        struct raw_info { uint64_t offset; };
        std::vector<raw_info> offsets;
        tensors_.reserve(static_cast<size_t>(n_tensors));
        offsets.reserve(static_cast<size_t>(n_tensors));
        for (uint64_t i = 0; i < n_tensors; ++i) {
            tensor_view t;
            t.name = in.read_string("name of tensor " + std::to_string(i));
            const std::string tw = "tensor '" + t.name + "'";
            t.n_dims = in.read<uint32_t>(tw);
            if (t.n_dims == 0 || t.n_dims > gguf_max_dims)
                throw error(path_ + ": " + tw + " has " + std::to_string(t.n_dims) + " dimensions, expected 1 to 4");
            uint64_t n_elements = 1;
            for (uint32_t d = 0; d < t.n_dims; ++d) {
                const uint64_t ne = in.read<uint64_t>(tw);
                if (ne == 0 || ne > static_cast<uint64_t>(INT64_MAX) / n_elements)
                    throw error(path_ + ": " + tw + " has an absurd dimension " + std::to_string(ne));
                n_elements *= ne;
                t.ne[d] = static_cast<int64_t>(ne);
            }
            const uint32_t raw_type = in.read<uint32_t>(tw);
            const dtype_traits* traits = find_dtype(raw_type);
            if (!traits) throw error(path_ + ": " + tw + " has unknown tensor type " + std::to_string(raw_type));
            if (!traits->supported)
                throw error(path_ + ": " + tw + " has type " + std::string(traits->name) +
                            ", which this version of lumen cannot compute with (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
            t.type = traits->type;
            if (t.ne[0] % traits->block_size != 0)
                throw error(path_ + ": " + tw + " row length " + std::to_string(t.ne[0]) +
                            " is not a multiple of the " + std::string(traits->name) + " block size");
            const uint64_t n_blocks = n_elements / static_cast<uint64_t>(traits->block_size);
            if (n_blocks > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(traits->block_bytes))
                throw error(path_ + ": " + tw + " is too large");
            t.n_bytes = n_blocks * static_cast<uint64_t>(traits->block_bytes);
            const uint64_t offset = in.read<uint64_t>(tw);
            if (offset % alignment_ != 0)
                throw error(path_ + ": " + tw + " data offset " + std::to_string(offset) + " is not a multiple of the alignment " + std::to_string(alignment_));
            if (!tensor_index_.emplace(t.name, tensors_.size()).second)
                throw error(path_ + ": duplicate tensor '" + t.name + "'");
            tensors_.push_back(std::move(t));
            offsets.push_back({offset});
        }

        const uint64_t end_of_infos = in.offset();
        data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
        for (size_t i = 0; i < tensors_.size(); ++i) {
            tensor_view& t = tensors_[i];
            const uint64_t size = bytes_.size();
            if (data_offset_ > size || offsets[i].offset > size - data_offset_ ||
                t.n_bytes > size - data_offset_ - offsets[i].offset)
                throw error(path_ + ": tensor '" + t.name + "' (" + std::to_string(t.n_bytes) + " bytes at data offset " +
                            std::to_string(offsets[i].offset) + ") runs past the end of the file (" +
                            std::to_string(size) + " bytes): truncated file?");
            t.data = bytes_.data() + data_offset_ + offsets[i].offset;
        }
    }

    std::string path_;
    detail::byte_source bytes_;
    uint32_t version_ = 0;
    uint32_t alignment_ = gguf_default_alignment;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, gguf_value>> metadata_;
    std::unordered_map<std::string, size_t> key_index_;
    std::vector<tensor_view> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lumen
