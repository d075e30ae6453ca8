// convert/vocabulary_writer.hpp: stores a SentencePiece vocabulary as the `tokenizer.ggml.*` keys
// of a GGUF file, as llama.cpp's converters write them (vocabulary_from_gguf reads them back).
#pragma once

#include <vector>

#include "../gguf_writer.hpp"
#include "../tokenizer.hpp"

namespace lumen {

inline void add_vocabulary(gguf_writer& out, const vocabulary& v) {
    v.validate();
    out.set_string("tokenizer.ggml.model", "llama");
    out.set_array("tokenizer.ggml.tokens", v.tokens);
    out.set_array("tokenizer.ggml.scores", v.scores);
    std::vector<int32_t> types;
    types.reserve(v.types.size());
    for (token_type t : v.types) types.push_back(static_cast<int32_t>(t));
    out.set_array("tokenizer.ggml.token_type", types);
    if (v.bos_id >= 0) out.set("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
    if (v.eos_id >= 0) out.set("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
    out.set("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk_id));
    if (v.pad_id >= 0) out.set("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v.pad_id));
    out.set("tokenizer.ggml.add_bos_token", v.add_bos);
    out.set("tokenizer.ggml.add_eos_token", v.add_eos);
    out.set("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
    if (v.remove_extra_whitespaces) out.set("tokenizer.ggml.remove_extra_whitespaces", true);
}

}  // namespace lumen
