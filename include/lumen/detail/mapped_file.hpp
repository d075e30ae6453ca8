// detail/mapped_file.hpp: read-only bytes of a whole file, memory-mapped (never copied), or a
// buffer handed over by the caller (the browser build). Bad paths throw lumen::error.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.hpp"

namespace lumen::detail {

// The file mappings that byte_source::map_file made and that are still mapped, so that
// release_file_pages can tell them from memory whose contents live only in its pages.
class file_mappings {
public:
    static file_mappings& instance() {
        static file_mappings m;
        return m;
    }
    void add(const std::byte* p, size_t n) {
        std::lock_guard<std::mutex> lock(mutex_);
        live_.push_back({p, n});
    }
    // Unregisters and unmaps (under the lock, so no release_file_pages runs on it meanwhile).
    void unmap(const std::byte* p, size_t n) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (size_t i = 0; i < live_.size(); ++i)
            if (live_[i].data == p) {
                live_[i] = live_.back();
                live_.pop_back();
                break;
            }
        ::munmap(const_cast<std::byte*>(p), n);
    }
    // Drops the resident pages that lie wholly inside [p, p + n) if that range is inside a live file
    // mapping: they leave the process's resident memory, and a later read maps them again from the
    // file, unchanged (the mappings are private and never written). Anything else is left alone (for
    // anonymous memory the same call would zero the pages). Returns the bytes released.
    size_t release(const void* p, size_t n) {
#if defined(__EMSCRIPTEN__)
        (void)p;
        (void)n;
        return 0;
#else
        const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + n;
        const long page_size = ::sysconf(_SC_PAGESIZE);
        if (page_size <= 0) return 0;
        const auto page = static_cast<uintptr_t>(page_size);
        const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
        if (last <= first) return 0;
        std::lock_guard<std::mutex> lock(mutex_);
        for (const mapping& m : live_) {
            const auto m_begin = reinterpret_cast<uintptr_t>(m.data);
            if (begin >= m_begin && end <= m_begin + m.size)
                return ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) == 0 ? last - first : 0;
        }
        return 0;
#endif
    }

private:
    struct mapping {
        const std::byte* data;
        size_t size;
    };
    std::mutex mutex_;
    std::vector<mapping> live_;
};

// See file_mappings::release.
inline size_t release_file_pages(const void* p, size_t n) { return file_mappings::instance().release(p, n); }

// Memory for data that is read over and over, such as weights: 2 MiB-aligned and, where Linux has
// transparent huge pages on request, backed by huge pages (one TLB entry per 2 MiB instead of per
// 4 KiB, and 512 times fewer page faults filling it: both show on a large model read once per
// token). Free with free_weight_memory(p, n). Throws std::bad_alloc.
inline constexpr size_t huge_page_bytes = size_t{2} << 20;
inline std::byte* allocate_weight_memory(size_t n) {
    const size_t alignment = n >= huge_page_bytes ? huge_page_bytes : 64;
    auto* p = static_cast<std::byte*>(::operator new(n, std::align_val_t{alignment}));
#if defined(MADV_HUGEPAGE) && !defined(__EMSCRIPTEN__)
    if (alignment == huge_page_bytes) (void)::madvise(p, n, MADV_HUGEPAGE);  // a hint: fine if refused
#endif
    return p;
}
inline void free_weight_memory(std::byte* p, size_t n) {
    ::operator delete(p, std::align_val_t{n >= huge_page_bytes ? huge_page_bytes : 64});
}

// Weight memory for many weights, on huge pages even where each is smaller than one: a weight of
// 2 MiB or more gets an allocation of its own (allocate_weight_memory), smaller ones are cut, 64-byte
// aligned, from shared chunks of chunk_bytes (made the same way). Small models are all small
// weights: stories110M's layer matrices are 0.3-1.7 MB, and on 4 KiB pages each token's walk
// through them missed the TLB some 30,000 times (generation at 34 GB/s where tinyllama's 2-12 MB
// matrices, on huge pages, reached 53). A chunk lives while any weight cut from it does (the
// pointers share its ownership); the pages of a chunk's unused tail are never touched, so they
// cost address space, not memory. Thread-safe. Throws std::bad_alloc.
class weight_arena {
public:
    static constexpr size_t chunk_bytes = size_t{32} << 20;

    std::shared_ptr<std::byte> allocate(size_t n) {
#if !defined(__EMSCRIPTEN__)
        if (n < huge_page_bytes) {
            const size_t rounded = (n + 63) / 64 * 64;
            std::lock_guard<std::mutex> lock(mutex_);
            if (!chunk_ || used_ + rounded > chunk_bytes) {
                chunk_ = own(chunk_bytes);
                used_ = 0;
            }
            std::shared_ptr<std::byte> p(chunk_, chunk_.get() + used_);  // shares the chunk's ownership
            used_ += rounded;
            return p;
        }
#endif
        return own(n);
    }

private:
    static std::shared_ptr<std::byte> own(size_t n) {
        return {allocate_weight_memory(n), [n](std::byte* p) { free_weight_memory(p, n); }};
    }

    std::mutex mutex_;
    std::shared_ptr<std::byte> chunk_;  // the chunk small weights are cut from now
    size_t used_ = 0;                   // its bytes handed out
};

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
        const auto* data = static_cast<const std::byte*>(p);
        try {
            file_mappings::instance().add(data, size);
        } catch (...) {
            ::munmap(p, size);
            throw;
        }
        std::shared_ptr<const void> owner(p, [size](const void* q) {
            file_mappings::instance().unmap(static_cast<const std::byte*>(q), size);
        });
        return byte_source(data, size, std::move(owner));
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
