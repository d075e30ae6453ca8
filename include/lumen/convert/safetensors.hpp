// convert/safetensors.hpp: reads Hugging Face `.safetensors` files, one or sharded, with every
// length, offset and size checked; tensor data stays in the mapped file (never copied).
//
// The format (https://github.com/huggingface/safetensors):
//   u64 N (little-endian) | N bytes of UTF-8 JSON (may end in spaces) | the data buffer
//   JSON: { "__metadata__": {string: string} (optional),
//           "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ... }
// Offsets are bytes relative to the data buffer, end - begin = product(shape) × dtype size, and the
// tensors cover the buffer exactly, with no holes or overlaps (as the reference reader requires).
// Row-major (C order): the last shape entry moves fastest.
//
// A sharded checkpoint has `model.safetensors.index.json`: {"weight_map": {"<name>": "<shard file>"}}.
//
// Needs nlohmann/json (Debian nlohmann-json3-dev; CMake target nlohmann_json::nlohmann_json).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../detail/mapped_file.hpp"
#include "../error.hpp"
#include "../quant.hpp"
#include "../tensor.hpp"

namespace lumen {

// The safetensors dtypes and their element sizes. Only F32, F16 and BF16 can be converted; the
// others are still parsed, so that their sizes are checked and a clear error names them when used.
inline int64_t safetensors_dtype_size(std::string_view dtype) {
    static const std::pair<std::string_view, int64_t> sizes[] = {
        {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
        {"F16", 2}, {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
    for (const auto& [name, size] : sizes)
        if (name == dtype) return size;
    return 0;
}

struct safetensors_tensor {
    std::string name;
    std::string dtype;            // "F32", "F16", "BF16", ...
    std::vector<int64_t> shape;   // row-major; empty for a scalar
    const std::byte* data = nullptr;
    uint64_t n_bytes = 0;
    uint64_t offset = 0;          // bytes from the start of the data buffer
    std::string file;             // the file it lives in, for messages

    int64_t n_elements() const {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return n;
    }
    std::string shape_string() const {
        std::string s = "[";
        for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
        return s + "]";
    }
    // "file: tensor 'name'", the prefix of messages about this tensor.
    std::string what() const { return file + ": tensor '" + name + "'"; }
};

namespace detail {

// A JSON value as an unsigned integer, or an error naming `what`.
inline uint64_t json_u64(const nlohmann::json& j, const std::string& what) {
    if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0))
        throw error(what + ": expected a non-negative integer, found " + j.dump());
    return j.get<uint64_t>();
}

// The tensor info `info` of entry `name`, checked against a data buffer of `data_size` bytes.
inline safetensors_tensor parse_safetensors_info(const std::string& path, const std::string& name,
                                                 const nlohmann::json& info, uint64_t data_size) {
    safetensors_tensor t;
    t.name = name;
    t.file = path;
    const std::string what = t.what();
    if (!info.is_object()) throw error(what + ": expected an object with dtype, shape and data_offsets");
    const auto dtype_it = info.find("dtype");
    const auto shape_it = info.find("shape");
    const auto offsets_it = info.find("data_offsets");
    if (dtype_it == info.end() || !dtype_it->is_string()) throw error(what + ": missing or non-string 'dtype'");
    if (shape_it == info.end() || !shape_it->is_array()) throw error(what + ": missing or non-array 'shape'");
    if (offsets_it == info.end() || !offsets_it->is_array() || offsets_it->size() != 2)
        throw error(what + ": 'data_offsets' must be an array [begin, end]");
    t.dtype = dtype_it->get<std::string>();
    const int64_t element_size = safetensors_dtype_size(t.dtype);
    if (element_size == 0) throw error(what + ": unknown dtype '" + t.dtype + "'");
    if (shape_it->size() > 8) throw error(what + ": " + std::to_string(shape_it->size()) + " dimensions is too many");

    // product(shape) × element size, without overflow
    uint64_t n_bytes = static_cast<uint64_t>(element_size);
    for (const nlohmann::json& d : *shape_it) {
        const uint64_t dim = json_u64(d, what + ": shape");
        if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            throw error(what + ": shape entry " + std::to_string(dim) + " is too large");
        if (dim != 0 && n_bytes > std::numeric_limits<uint64_t>::max() / dim)
            throw error(what + ": shape " + shape_it->dump() + " is too large");
        n_bytes *= dim;
        t.shape.push_back(static_cast<int64_t>(dim));
    }
    if (n_bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw error(what + ": too large");
    const uint64_t begin = json_u64((*offsets_it)[0], what + ": data_offsets");
    const uint64_t end = json_u64((*offsets_it)[1], what + ": data_offsets");
    if (begin > end)
        throw error(what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] begin after end");
    if (end > data_size)
        throw error(what + ": data_offsets end " + std::to_string(end) + " is past the end of the data (" +
                    std::to_string(data_size) + " bytes): truncated file?");
    if (end - begin != n_bytes)
        throw error(what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                    std::to_string(end - begin) + " bytes, but dtype " + t.dtype + " and shape " + t.shape_string() +
                    " need " + std::to_string(n_bytes));
    t.n_bytes = n_bytes;
    t.offset = begin;
    return t;
}

}  // namespace detail

// One `.safetensors` file: its tensors point into the mapped file.
class safetensors_file {
public:
    static constexpr uint64_t max_header_bytes = 100u << 20;  // the reference reader's limit

    static safetensors_file open(const std::string& path) {
        return safetensors_file(path, detail::byte_source::map_file(path));
    }
    // Parses bytes already in memory; `name` is used in messages.
    static safetensors_file from_bytes(const std::string& name, detail::byte_source bytes) {
        return safetensors_file(name, std::move(bytes));
    }

    const std::string& path() const { return path_; }
    const std::vector<safetensors_tensor>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    const safetensors_tensor* find(std::string_view name) const {
        const auto it = index_.find(std::string(name));
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }

private:
    safetensors_file(std::string path, detail::byte_source bytes) : path_(std::move(path)), bytes_(std::move(bytes)) {
        parse();
    }

    nlohmann::json parse_header(uint64_t header_size) const {
        const char* begin = reinterpret_cast<const char*>(bytes_.data()) + 8;
        try {
            nlohmann::json header = nlohmann::json::parse(begin, begin + header_size);
            if (!header.is_object()) throw error(path_ + ": the safetensors header is not a JSON object");
            return header;
        } catch (const nlohmann::json::exception& e) {
            throw error(path_ + ": the safetensors header is not valid JSON: " + e.what());
        }
    }

    void parse() {
        const uint64_t size = bytes_.size();
        if (size < 8) throw error(path_ + ": too small to be a safetensors file (" + std::to_string(size) + " bytes)");
        uint64_t header_size = 0;
        std::memcpy(&header_size, bytes_.data(), 8);
        if (header_size > size - 8)
            throw error(path_ + ": safetensors header length " + std::to_string(header_size) +
                        " runs past the end of the file (" + std::to_string(size) + " bytes): truncated or not safetensors");
        if (header_size > max_header_bytes)
            throw error(path_ + ": safetensors header length " + std::to_string(header_size) + " is over 100 MB");
        const nlohmann::json header = parse_header(header_size);
        const uint64_t data_start = 8 + header_size;
        const uint64_t data_size = size - data_start;

        for (const auto& [name, info] : header.items()) {
            if (name == "__metadata__") {
                read_metadata(info);
                continue;
            }
            try {
                tensors_.push_back(detail::parse_safetensors_info(path_, name, info, data_size));
            } catch (const nlohmann::json::exception& e) {
                throw error(path_ + ": tensor '" + name + "': " + e.what());
            }
        }
        check_coverage(data_size);
        for (size_t i = 0; i < tensors_.size(); ++i) {
            safetensors_tensor& t = tensors_[i];
            t.data = bytes_.data() + data_start + t.offset;
            if (!index_.emplace(t.name, i).second) throw error(path_ + ": duplicate tensor '" + t.name + "'");
        }
    }

    void read_metadata(const nlohmann::json& info) {
        if (!info.is_object()) throw error(path_ + ": '__metadata__' must be an object of strings");
        for (const auto& [key, value] : info.items()) {
            if (!value.is_string()) throw error(path_ + ": '__metadata__' key '" + key + "' is not a string");
            metadata_[key] = value.get<std::string>();
        }
    }

    // The tensors must tile the data buffer exactly: sorted by offset, each starts where the
    // previous one ended and the last ends at the end of the file.
    void check_coverage(uint64_t data_size) const {
        std::vector<const safetensors_tensor*> order;
        for (const auto& t : tensors_) order.push_back(&t);
        std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
        uint64_t at = 0;
        for (const safetensors_tensor* t : order) {
            if (t->offset != at)
                throw error(t->what() + ": data starts at byte " + std::to_string(t->offset) + " of the data, expected " +
                            std::to_string(at) + " (tensors must cover the data with no gap or overlap)");
            at += t->n_bytes;
        }
        if (at != data_size)
            throw error(path_ + ": the tensors cover " + std::to_string(at) + " bytes but the data holds " +
                        std::to_string(data_size) + " (trailing bytes or a truncated file)");
    }

    std::string path_;
    detail::byte_source bytes_;
    std::vector<safetensors_tensor> tensors_;
    std::unordered_map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

// dst[0..n) = the tensor's elements as floats (F32, F16 or BF16 in the file; any alignment).
inline std::vector<float> read_safetensors_floats(const safetensors_tensor& t) {
    dtype type;
    if (t.dtype == "F32") type = dtype::f32;
    else if (t.dtype == "F16") type = dtype::f16;
    else if (t.dtype == "BF16") type = dtype::bf16;
    else throw error(t.what() + " has dtype " + t.dtype + ", which cannot be converted (supported: F32, F16, BF16)");
    std::vector<float> out(static_cast<size_t>(t.n_elements()));
    if (!out.empty()) dequantize_row(type, t.data, out.data(), t.n_elements());
    return out;
}

// The tensors of a Hugging Face model folder: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (each shard opened once).
class safetensors_checkpoint {
public:
    static constexpr const char* single_file = "model.safetensors";
    static constexpr const char* index_file = "model.safetensors.index.json";

    static safetensors_checkpoint open_folder(const std::string& folder) {
        namespace fs = std::filesystem;
        safetensors_checkpoint c;
        const fs::path index = fs::path(folder) / index_file;
        const fs::path single = fs::path(folder) / single_file;
        if (fs::exists(index)) {
            c.open_index(folder, index.string());
        } else if (fs::exists(single)) {
            c.add_shard(single.string(), nullptr);
        } else {
            throw error(folder + ": no " + single_file + " or " + index_file + " (expected a Hugging Face checkpoint in safetensors format)");
        }
        return c;
    }

    // Every tensor of every shard, in shard order.
    std::vector<const safetensors_tensor*> tensors() const {
        std::vector<const safetensors_tensor*> all;
        for (const auto& f : files_)
            for (const auto& t : f->tensors()) all.push_back(&t);
        return all;
    }
    const safetensors_tensor* find(std::string_view name) const {
        const auto it = index_.find(std::string(name));
        return it == index_.end() ? nullptr : it->second;
    }
    const safetensors_tensor& get(std::string_view name) const {
        const safetensors_tensor* t = find(name);
        if (!t) throw error(source_ + ": missing tensor '" + std::string(name) + "'");
        return *t;
    }
    // The index or the single file, for messages.
    const std::string& source() const { return source_; }
    size_t n_files() const { return files_.size(); }

private:
    void open_index(const std::string& folder, const std::string& index_path) {
        source_ = index_path;
        const detail::byte_source bytes = detail::byte_source::map_file(index_path);
        const char* text = reinterpret_cast<const char*>(bytes.data());
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(text, text + bytes.size());
        } catch (const nlohmann::json::exception& e) {
            throw error(index_path + ": not valid JSON: " + e.what());
        }
        const auto map = j.is_object() ? j.find("weight_map") : j.end();
        if (map == j.end() || !map->is_object() || map->empty())
            throw error(index_path + ": key 'weight_map' is missing or not a non-empty object of tensor name → shard file");
        std::map<std::string, std::vector<std::string>> by_shard;  // shard file → tensor names
        for (const auto& [name, shard] : map->items()) {
            if (!shard.is_string()) throw error(index_path + ": weight_map entry '" + name + "' is not a file name");
            const std::string file = shard.get<std::string>();
            if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "..")
                throw error(index_path + ": weight_map entry '" + name + "' names '" + file + "', expected a file in the folder");
            by_shard[file].push_back(name);
        }
        for (const auto& [file, names] : by_shard)
            add_shard((std::filesystem::path(folder) / file).string(), &names);
    }

    // Opens a shard; with `expected`, every listed tensor must be in it and it holds no others.
    void add_shard(const std::string& path, const std::vector<std::string>* expected) {
        if (source_.empty()) source_ = path;
        files_.push_back(std::make_unique<safetensors_file>(safetensors_file::open(path)));
        const safetensors_file& f = *files_.back();
        if (expected) {
            for (const std::string& name : *expected)
                if (!f.find(name))
                    throw error(source_ + ": weight_map puts tensor '" + name + "' in " + path + ", which does not hold it");
        }
        for (const auto& t : f.tensors()) {
            if (expected && std::find(expected->begin(), expected->end(), t.name) == expected->end())
                throw error(path + ": tensor '" + t.name + "' is not listed for this shard in " + source_);
            if (!index_.emplace(t.name, &t).second)
                throw error(path + ": tensor '" + t.name + "' also appears in another shard");
        }
    }

    std::string source_;
    std::vector<std::unique_ptr<safetensors_file>> files_;  // stable addresses for index_
    std::unordered_map<std::string, const safetensors_tensor*> index_;
};

}  // namespace lumen
