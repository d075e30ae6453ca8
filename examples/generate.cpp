// generate.cpp: the smallest complete use of lumen: load a GGUF model and stream a continuation.
// Usage: example_generate MODEL.gguf "PROMPT" [N_TOKENS]
#include <cstdlib>
#include <iostream>

#include <lumen/lumen.hpp>

int main(int argc, char** argv) try {
    if (argc < 3) { std::cerr << "usage: " << argv[0] << " MODEL.gguf PROMPT [N_TOKENS]\n"; return 2; }
    lumen::model model = lumen::model::load(argv[1]);
    lumen::context ctx(model, {.n_ctx = 512});
    lumen::generate_options options;
    options.n_predict = argc > 3 ? std::atoi(argv[3]) : 64;
    options.sampling.temperature = 0.0f;  // greedy: the same text on every machine
    std::cout << argv[2];
    lumen::generate(ctx, argv[2], options, [](std::string_view piece) {
        std::cout << piece << std::flush;
        return true;  // false would stop the generation
    });
    std::cout << "\n";
} catch (const lumen::error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
