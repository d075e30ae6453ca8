// weight_cache.hpp: what backends derive from a model's weights for their kernels (the CPU's
// repacked copies), made once per model and shared by every context on it; thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "detail/mapped_file.hpp"

namespace lumen {

class weight_cache {
public:
    // The object kept for (weight, kind), made by make() (a std::shared_ptr<T>) on the first call.
    // `kind` tells apart what different kernels derive from the same weight. Callers of one kind
    // must ask for the same T.
    template <class T, class Make>
    std::shared_ptr<T> get(const void* weight, const void* kind, Make&& make) {
        std::lock_guard<std::mutex> lock(mutex_);
        std::shared_ptr<void>& slot = entries_[{weight, kind}];
        if (!slot) slot = make();
        return std::static_pointer_cast<T>(slot);
    }

    // Where the derived copies' memory comes from (huge pages, small weights packed together).
    detail::weight_arena& arena() { return arena_; }

private:
    detail::weight_arena arena_;
    std::mutex mutex_;
    std::map<std::pair<const void*, const void*>, std::shared_ptr<void>> entries_;
};

}  // namespace lumen
