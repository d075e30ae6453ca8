// session.hpp: the high-level API: generate() tokenizes a prompt, runs it through a context and
// streams the sampled continuation as UTF-8 text pieces to a callback.
//
//     lumen::model model = lumen::model::load("model.gguf");
//     lumen::context ctx(model, {.n_ctx = 512});
//     lumen::generate(ctx, "Once upon a time", {}, [](std::string_view piece) {
//         std::cout << piece << std::flush;
//         return true;  // false stops the generation
//     });
#pragma once

#include <string>
#include <string_view>

#include "context.hpp"
#include "generator.hpp"

namespace lumen {

// Generates a continuation of `prompt` in a fresh sequence of `ctx`. on_text(std::string_view) gets
// each piece of text as soon as it forms complete UTF-8; returning false stops the generation.
template <class OnText>
generation_stats generate(context& ctx, std::string_view prompt, const generate_options& options, OnText&& on_text) {
    generator gen(ctx, prompt, options);
    std::string piece;
    for (bool more = true; more;) {
        piece.clear();
        more = gen.next(piece);
        if (!piece.empty() && !on_text(std::string_view(piece))) break;
    }
    return gen.stats();
}

}  // namespace lumen
