// cmd_tokenize.cpp: `lumen tokenize -m FILE TEXT`: the token ids and pieces of a text, using the
// vocabulary stored in a GGUF file (a full model or a vocabulary-only file).
#include <cstdio>
#include <string>

#include <lumen/gguf.hpp>
#include <lumen/tokenizer.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

struct tokenize_args {
    std::string model_path;
    std::string text;
    bool no_bos = false;
    bool ids_only = false;
};

// The piece with control characters and non-printing bytes escaped, for display.
std::string printable(std::string_view piece) {
    std::string s;
    for (unsigned char c : piece) {
        if (c == '\n') s += "\\n";
        else if (c == '\t') s += "\\t";
        else if (c == '\'') s += "\\'";
        else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            s += buf;
        } else s += static_cast<char>(c);
    }
    return s;
}

void run_tokenize(const tokenize_args& a) {
    const gguf_file file = gguf_file::open(a.model_path);
    const tokenizer tok(vocabulary_from_gguf(file));
    const std::vector<int32_t> ids = tok.encode(a.text, !a.no_bos);
    if (a.ids_only) {
        std::printf("[");
        for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? ", " : "", ids[i]);
        std::printf("]\n");
        return;
    }
    for (int32_t id : ids) std::printf("%6d -> '%s'\n", id, printable(tok.piece(id)).c_str());
    std::fprintf(stderr, "%zu tokens\n", ids.size());
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
    auto a = std::make_shared<tokenize_args>();
    auto* cmd = app.add_subcommand("tokenize", "Print the token ids and pieces of a text");
    cmd->add_option("-m,--model", a->model_path, "GGUF file holding the vocabulary")->required();
    cmd->add_option("text", a->text, "Text to tokenize")->required();
    cmd->add_flag("--no-bos", a->no_bos, "Do not prepend the BOS token");
    cmd->add_flag("--ids", a->ids_only, "Print only the list of ids");
    cmd->callback([a] { run_tokenize(*a); });
}

}  // namespace lumen::cli
