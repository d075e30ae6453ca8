// gguf_stream_writer.hpp: writes a GGUF v3 file tensor by tensor. The header (every metadata key,
// then every tensor's name, shape, type and offset) goes out first, so each tensor's data can be
// written as soon as it is made and dropped: files larger than memory can be written (lumen
// quantize). gguf_writer (gguf_writer.hpp) builds the same bytes in memory.
//
// The file appears under its name only when finish() succeeds: the bytes go to "PATH.partial",
// renamed over PATH at the end, so a failed run leaves no truncated model behind (and the output may
// replace the input that is still mapped).
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

class gguf_stream_writer {
public:
    struct tensor_info {
        std::string name;
        dtype type = dtype::f32;
        std::vector<int64_t> ne;  // ne[0] is the row length

        uint64_t n_bytes() const {
            int64_t n = 1;
            for (int64_t d : ne) n *= d;
            return static_cast<uint64_t>(row_bytes(type, ne[0]) * (n / ne[0]));
        }
    };

    // Opens PATH.partial and writes the header. `metadata` must not hold duplicate keys.
    gguf_stream_writer(std::string path, const std::vector<std::pair<std::string, gguf_value>>& metadata,
                       std::vector<tensor_info> tensors)
        : path_(std::move(path)), partial_(path_ + ".partial"), tensors_(std::move(tensors)) {
        for (const auto& [key, value] : metadata) {
            if (key == "general.alignment") {
                const int64_t a = value.as_int(path_ + ": key 'general.alignment'");
                if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0)
                    throw error(path_ + ": general.alignment " + std::to_string(a) + " is not a power of two up to 2^20");
                alignment_ = static_cast<uint64_t>(a);
            }
        }
        std::vector<std::byte> header;
        detail::gguf_put<uint32_t>(header, gguf_magic);
        detail::gguf_put<uint32_t>(header, 3);
        detail::gguf_put<uint64_t>(header, tensors_.size());
        detail::gguf_put<uint64_t>(header, metadata.size());
        for (const auto& [key, value] : metadata) {
            detail::gguf_put_string(header, key);
            detail::gguf_put<uint32_t>(header, static_cast<uint32_t>(value.type()));
            detail::gguf_put_value(header, value);
        }
        uint64_t offset = 0;
        for (const tensor_info& t : tensors_) {
            if (t.ne.empty() || t.ne.size() > gguf_max_dims)
                throw error(path_ + ": tensor '" + t.name + "' must have 1 to 4 dimensions");
            for (int64_t d : t.ne)
                if (d <= 0) throw error(path_ + ": tensor '" + t.name + "' has a non-positive dimension");
            detail::gguf_put_string(header, t.name);
            detail::gguf_put<uint32_t>(header, static_cast<uint32_t>(t.ne.size()));
            for (int64_t d : t.ne) detail::gguf_put<uint64_t>(header, static_cast<uint64_t>(d));
            detail::gguf_put<uint32_t>(header, static_cast<uint32_t>(t.type));
            detail::gguf_put<uint64_t>(header, offset);
            offset += padded(t.n_bytes());
        }
        header.resize(padded(header.size()), std::byte{0});
        file_.reset(std::fopen(partial_.c_str(), "wb"));
        if (!file_) throw error(partial_ + ": cannot open for writing");
        write_bytes(header.data(), header.size());
    }

    gguf_stream_writer(const gguf_stream_writer&) = delete;
    gguf_stream_writer& operator=(const gguf_stream_writer&) = delete;

    // An unfinished file is removed.
    ~gguf_stream_writer() {
        if (file_) {
            file_.reset();
            std::remove(partial_.c_str());
        }
    }

    // Writes the data of the next tensor (in the order given at construction), then its padding.
    void write_tensor(std::span<const std::byte> data) {
        if (next_ >= tensors_.size()) throw error(path_ + ": more tensors written than declared");
        const tensor_info& t = tensors_[next_];
        if (data.size() != t.n_bytes())
            throw error(path_ + ": tensor '" + t.name + "' has " + std::to_string(data.size()) + " bytes, expected " +
                        std::to_string(t.n_bytes()));
        write_bytes(data.data(), data.size());
        static const std::byte zeros[64] = {};
        for (uint64_t pad = padded(data.size()) - data.size(); pad > 0;) {
            const uint64_t n = pad < sizeof zeros ? pad : sizeof zeros;
            write_bytes(zeros, n);
            pad -= n;
        }
        ++next_;
    }

    // Checks that every tensor was written, closes the file and gives it its name.
    void finish() {
        if (next_ != tensors_.size())
            throw error(path_ + ": only " + std::to_string(next_) + " of " + std::to_string(tensors_.size()) +
                        " tensors were written");
        if (std::fflush(file_.get()) != 0) throw error(partial_ + ": write failed");
        if (std::fclose(file_.release()) != 0) {
            std::remove(partial_.c_str());
            throw error(partial_ + ": write failed");
        }
        if (std::rename(partial_.c_str(), path_.c_str()) != 0) {
            std::remove(partial_.c_str());
            throw error(path_ + ": cannot rename " + partial_ + " to it");
        }
    }

    uint64_t bytes_written() const { return written_; }

private:
    uint64_t padded(uint64_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }

    void write_bytes(const void* p, size_t n) {
        if (n > 0 && std::fwrite(p, 1, n, file_.get()) != n) throw error(partial_ + ": write failed (disk full?)");
        written_ += n;
    }


    std::string path_;
    std::string partial_;
    std::vector<tensor_info> tensors_;
    uint64_t alignment_ = gguf_default_alignment;
    std::unique_ptr<FILE, int (*)(FILE*)> file_{nullptr, &std::fclose};
    size_t next_ = 0;
    uint64_t written_ = 0;
};

}  // namespace lumen
