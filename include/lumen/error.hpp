// error.hpp: lumen::error, the one exception type the library throws on bad input.
// Messages name the file, key or tensor involved and what was expected.
#pragma once

#include <stdexcept>
#include <string>

namespace lumen {

class error : public std::runtime_error {
public:
    explicit error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace lumen
