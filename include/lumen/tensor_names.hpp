// tensor_names.hpp: the GGUF tensor names of the llama family, in one table (as llama.cpp's
// llama-arch.h), so no other file spells a tensor name as a string literal.
#pragma once

#include <string>

namespace lumen::tensor_names {

inline constexpr const char* token_embd = "token_embd.weight";
inline constexpr const char* output_norm = "output_norm.weight";
inline constexpr const char* output = "output.weight";

inline std::string block(int64_t layer, const char* what) { return "blk." + std::to_string(layer) + "." + what; }

inline constexpr const char* attn_norm = "attn_norm.weight";
inline constexpr const char* attn_q = "attn_q.weight";
inline constexpr const char* attn_k = "attn_k.weight";
inline constexpr const char* attn_v = "attn_v.weight";
inline constexpr const char* attn_output = "attn_output.weight";
inline constexpr const char* ffn_norm = "ffn_norm.weight";
inline constexpr const char* ffn_gate = "ffn_gate.weight";
inline constexpr const char* ffn_up = "ffn_up.weight";
inline constexpr const char* ffn_down = "ffn_down.weight";

}  // namespace lumen::tensor_names
