// detail/mapped_file.hpp: read-only bytes of a whole file, memory-mapped (never copied), or a
// buffer handed over by the caller (the browser build). Bad paths throw lumen::error.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.hpp"

namespace lumen::detail {

// A span of bytes that stays valid as long as some copy of this object lives.
class byte_source {
public:
    byte_source() = default;
    byte_source(const std::byte* data, size_t size, std::shared_ptr<const void> owner)
        : data_(data), size_(size), owner_(std::move(owner)) {}

    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }

    // Maps the whole file read-only. Directories, empty and unreadable files are errors.
    static byte_source map_file(const std::string& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw error(path + ": cannot open: " + std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            throw error(path + ": cannot stat: " + std::strerror(e));
        }
        if (S_ISDIR(st.st_mode)) {
            ::close(fd);
            throw error(path + ": is a directory, expected a file");
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            throw error(path + ": is not a regular file");
        }
        if (st.st_size == 0) {
            ::close(fd);
            throw error(path + ": is empty");
        }
        const size_t size = static_cast<size_t>(st.st_size);
        void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        const int e = errno;
        ::close(fd);
        if (p == MAP_FAILED) throw error(path + ": cannot map " + std::to_string(size) + " bytes: " + std::strerror(e));
        std::shared_ptr<const void> owner(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
        return byte_source(static_cast<const std::byte*>(p), size, std::move(owner));
    }

    // Takes ownership of a buffer already in memory.
    static byte_source from_buffer(std::vector<std::byte> buffer) {
        auto owned = std::make_shared<std::vector<std::byte>>(std::move(buffer));
        return byte_source(owned->data(), owned->size(), owned);
    }

private:
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
    std::shared_ptr<const void> owner_;
};

}  // namespace lumen::detail
