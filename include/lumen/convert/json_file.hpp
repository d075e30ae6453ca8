// convert/json_file.hpp: a JSON file of a Hugging Face folder (config.json, tokenizer.json, ...)
// read with nlohmann/json, and typed look-ups whose errors name the file and the key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "../detail/mapped_file.hpp"
#include "../error.hpp"

namespace lumen {

class json_file {
public:
    // Reads and parses a file; a missing file or bad JSON throws lumen::error naming the file.
    static json_file read(const std::string& path) {
        const detail::byte_source bytes = detail::byte_source::map_file(path);
        const char* text = reinterpret_cast<const char*>(bytes.data());
        try {
            nlohmann::json j = nlohmann::json::parse(text, text + bytes.size());
            if (!j.is_object()) throw error(path + ": expected a JSON object at the top level");
            return json_file(path, std::move(j));
        } catch (const nlohmann::json::exception& e) {
            throw error(path + ": not valid JSON: " + e.what());
        }
    }

    json_file(std::string path, nlohmann::json j) : path_(std::move(path)), json_(std::move(j)) {}

    const std::string& path() const { return path_; }
    const nlohmann::json& json() const { return json_; }

    // "file: key 'name'", the prefix of messages about a key.
    std::string what(const std::string& key) const { return path_ + ": key '" + key + "'"; }

    // The value of a top-level key, or nullptr when it is absent or null.
    const nlohmann::json* find(const std::string& key) const {
        const auto it = json_.find(key);
        return it == json_.end() || it->is_null() ? nullptr : &*it;
    }

    std::optional<int64_t> find_int(const std::string& key) const {
        const nlohmann::json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > INT64_MAX))
            throw error(what(key) + ": expected an integer, found " + v->dump());
        return v->get<int64_t>();
    }
    // An integer key that must be present and lie in [lo, hi].
    int64_t get_int(const std::string& key, int64_t lo, int64_t hi) const {
        const std::optional<int64_t> v = find_int(key);
        if (!v) throw error(path_ + ": missing required key '" + key + "'");
        return check_range(key, *v, lo, hi);
    }
    int64_t get_int(const std::string& key, int64_t lo, int64_t hi, int64_t fallback) const {
        return check_range(key, find_int(key).value_or(fallback), lo, hi);
    }

    std::optional<double> find_float(const std::string& key) const {
        const nlohmann::json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_number()) throw error(what(key) + ": expected a number, found " + v->dump());
        return v->get<double>();
    }
    std::optional<bool> find_bool(const std::string& key) const {
        const nlohmann::json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) throw error(what(key) + ": expected true or false, found " + v->dump());
        return v->get<bool>();
    }
    std::optional<std::string> find_string(const std::string& key) const {
        const nlohmann::json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_string()) throw error(what(key) + ": expected a string, found " + v->dump());
        return v->get<std::string>();
    }

    // Runs `f`, turning a nlohmann::json type error (a field of the wrong type deep inside) into
    // lumen::error naming the file.
    template <class F>
    static auto rethrowing(const std::string& path, F&& f) -> decltype(f()) {
        try {
            return f();
        } catch (const nlohmann::json::exception& e) {
            throw error(path + ": unexpected JSON content: " + e.what());
        }
    }

private:
    int64_t check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi) const {
        if (v < lo || v > hi)
            throw error(what(key) + ": " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
        return v;
    }

    std::string path_;
    nlohmann::json json_;
};

}  // namespace lumen
