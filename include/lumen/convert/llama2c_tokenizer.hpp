// convert/llama2c_tokenizer.hpp: reads a llama2.c `tokenizer.bin` into a lumen::vocabulary.
//
// Format (little-endian, written by llama2.c's tokenizer.py export):
//   u32 max_token_length
//   per token: f32 score | i32 length | `length` bytes (UTF-8, "▁" stored as ' ')
// The token count is not stored: it is the model's vocab size, so the caller passes it in.
// The export writes <s> and </s> as "\n<s>\n" and "\n</s>\n"; ids 0, 1, 2 are <unk>, <s>, </s>
// and "<0xNN>" pieces are byte tokens, as in the SentencePiece model the file was made from.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "../detail/mapped_file.hpp"
#include "../error.hpp"
#include "../tokenizer.hpp"

namespace lumen {

namespace detail {

// ' ' → "▁", undoing the export's `t.replace('▁', ' ')`.
inline std::string llama2c_piece(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    for (const char c : raw) {
        if (c == ' ')
            out += space_symbol;
        else
            out += c;
    }
    return out;
}

}  // namespace detail

// Parses the bytes of a tokenizer.bin holding `n_vocab` tokens; `path` names it in messages.
inline vocabulary parse_llama2c_tokenizer(std::span<const std::byte> bytes, int32_t n_vocab, const std::string& path) {
    if (n_vocab < 3)
        throw error(path + ": a llama2.c tokenizer needs at least 3 tokens (<unk>, <s>, </s>), the model has " +
                    std::to_string(n_vocab));
    size_t pos = 0;
    auto read = [&](void* out, size_t n, const std::string& what) {
        if (n > bytes.size() - pos)
            throw error(path + ": truncated llama2.c tokenizer: " + what + " at byte " + std::to_string(pos) +
                        " needs " + std::to_string(n) + " bytes, " + std::to_string(bytes.size() - pos) + " left");
        std::memcpy(out, bytes.data() + pos, n);
        pos += n;
    };

    uint32_t max_token_length = 0;
    read(&max_token_length, 4, "max_token_length");

    vocabulary v;
    v.source = path;
    v.tokens.reserve(static_cast<size_t>(n_vocab));
    v.scores.reserve(static_cast<size_t>(n_vocab));
    v.types.reserve(static_cast<size_t>(n_vocab));
    std::string raw;
    for (int32_t i = 0; i < n_vocab; ++i) {
        const std::string what = "token " + std::to_string(i) + " of " + std::to_string(n_vocab);
        float score = 0.0f;
        int32_t length = 0;
        read(&score, 4, what);
        read(&length, 4, what);
        if (length < 0) throw error(path + ": " + what + " has negative length " + std::to_string(length));
        raw.resize(static_cast<size_t>(length));
        read(raw.data(), raw.size(), what);
        v.tokens.push_back(detail::llama2c_piece(raw));
        v.scores.push_back(score);
        v.types.push_back(vocabulary::byte_piece_value(raw) >= 0 ? token_type::byte : token_type::normal);
    }
    if (pos != bytes.size())
        throw error(path + ": " + std::to_string(bytes.size() - pos) + " bytes left after " + std::to_string(n_vocab) +
                    " tokens: the tokenizer does not match the model's vocab size");

    v.tokens[0] = "<unk>", v.types[0] = token_type::unknown;
    v.tokens[1] = "<s>", v.types[1] = token_type::control;
    v.tokens[2] = "</s>", v.types[2] = token_type::control;
    v.unk_id = 0, v.bos_id = 1, v.eos_id = 2, v.pad_id = -1;
    v.add_space_prefix = true;  // SentencePiece's default, which llama2.c's encoder also applies
    v.remove_extra_whitespaces = false;
    v.validate();
    return v;
}

// Reads a llama2.c tokenizer.bin file for a model with `n_vocab` tokens.
inline vocabulary read_llama2c_tokenizer(const std::string& path, int32_t n_vocab) {
    const detail::byte_source bytes = detail::byte_source::map_file(path);
    return parse_llama2c_tokenizer(std::span<const std::byte>(bytes.data(), bytes.size()), n_vocab, path);
}

}  // namespace lumen
