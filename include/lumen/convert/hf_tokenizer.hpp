// convert/hf_tokenizer.hpp: the SentencePiece vocabulary of a Hugging Face model folder, from
// `tokenizer.model` (preferred) or `tokenizer.json`, with the special tokens and add_bos/add_eos
// of `tokenizer_config.json`.
//
// tokenizer.json is accepted in the form Llama 1/2, Mistral and TinyLlama ship it: model.type "BPE"
// with byte_fallback true, a SentencePiece vocabulary in SentencePiece id order. It stores merges,
// not scores. Hugging Face's BPE applies the merge of lowest rank first; SentencePiece merges the
// pair whose result has the highest score. So the score of a piece is -(rank of the first merge
// that makes it), and pieces no merge makes come after all of them, in id order:
// -(n_merges + id). (transformers' converter writes merges sorted by SentencePiece score, so this
// gives back SentencePiece's order, including Llama 2's "▁▁" pieces, which score -1e9 there.)
// Without merges the score is -id. Special and byte pieces score 0, as SentencePiece stores them.
// (llama.cpp's LlamaHfVocab writes -1000 for every piece, which loses the merge priority.)
// Byte-level BPE (GPT-2, Llama 3, Qwen: no byte_fallback) is not supported yet.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../error.hpp"
#include "../tokenizer.hpp"
#include "json_file.hpp"
#include "sentencepiece_model.hpp"

namespace lumen {

namespace detail {

// Sets token `id` to an added token: appended when id == size, else it must already hold `content`.
inline void apply_added_token(vocabulary& v, int64_t id, const std::string& content, bool special, const std::string& where) {
    if (id < 0 || id > v.size())
        throw error(where + ": added token '" + content + "' has id " + std::to_string(id) + ", but the vocabulary has " +
                    std::to_string(v.size()) + " tokens (ids must follow on without gaps)");
    if (id == v.size()) {
        v.tokens.push_back(content);
        v.scores.push_back(0.0f);
        v.types.push_back(token_type::normal);
    } else if (v.tokens[static_cast<size_t>(id)] != content) {
        throw error(where + ": added token " + std::to_string(id) + " is '" + content + "' but the vocabulary has '" +
                    v.tokens[static_cast<size_t>(id)] + "' there");
    }
    token_type& type = v.types[static_cast<size_t>(id)];
    if (type == token_type::unknown || type == token_type::byte) return;  // keep what the model says
    type = special ? token_type::control : token_type::user_defined;
    if (special) v.scores[static_cast<size_t>(id)] = 0.0f;
}

// The two pieces of a merge: "a b" (tokenizers < 0.20) or ["a", "b"].
inline std::pair<std::string, std::string> merge_pair(const nlohmann::json& m, const std::string& where) {
    if (m.is_string()) {
        const std::string text = m.get<std::string>();
        const size_t space = text.find(' ');
        if (space == std::string::npos) throw error(where + ": merge '" + text + "' is not two pieces");
        return {text.substr(0, space), text.substr(space + 1)};
    }
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
        return {m[0].get<std::string>(), m[1].get<std::string>()};
    throw error(where + ": a merge is neither \"a b\" nor [\"a\", \"b\"]");
}

// SentencePiece-equivalent scores of `pieces` from the merge ranks (see the top of this file).
inline std::vector<float> scores_from_merges(const std::vector<std::string>& pieces, const nlohmann::json* merges,
                                             const std::string& where) {
    std::vector<float> scores(pieces.size());
    if (!merges || !merges->is_array() || merges->empty()) {
        for (size_t i = 0; i < pieces.size(); ++i) scores[i] = -static_cast<float>(i);
        return scores;
    }
    std::unordered_map<std::string, size_t> id_of;
    for (size_t i = 0; i < pieces.size(); ++i) id_of.emplace(pieces[i], i);
    const size_t n_merges = merges->size();
    std::vector<size_t> rank(pieces.size(), n_merges);  // n_merges: made by no merge
    for (size_t r = 0; r < n_merges; ++r) {
        const auto [left, right] = merge_pair((*merges)[r], where);
        const auto it = id_of.find(left + right);
        if (it != id_of.end() && rank[it->second] == n_merges) rank[it->second] = r;
    }
    for (size_t i = 0; i < pieces.size(); ++i)
        scores[i] = -static_cast<float>(rank[i] < n_merges ? rank[i] : n_merges + i);
    return scores;
}

// A JSON object's string field, or an error naming `where`.
inline std::string json_string_field(const nlohmann::json& j, const char* key, const std::string& where) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string()) throw error(where + ": missing string '" + key + "'");
    return it->get<std::string>();
}

// True when the normalizer or pre-tokenizer prepends "▁" to the text (SentencePiece's dummy prefix).
inline bool hf_adds_space_prefix(const nlohmann::json& root) {
    auto prepends = [](const nlohmann::json& n) {
        if (!n.is_object()) return false;
        const std::string type = n.value("type", "");
        if (type == "Prepend") return n.value("prepend", "") == std::string(space_symbol);
        if (type == "Metaspace") return n.value("prepend_scheme", n.value("add_prefix_space", true) ? "always" : "never") != "never";
        return false;
    };
    for (const char* key : {"normalizer", "pre_tokenizer"}) {
        const auto it = root.find(key);
        if (it == root.end() || !it->is_object()) continue;
        if (prepends(*it)) return true;
        for (const char* list : {"normalizers", "pretokenizers"}) {
            const auto sub = it->find(list);
            if (sub != it->end() && sub->is_array())
                for (const nlohmann::json& n : *sub)
                    if (prepends(n)) return true;
        }
    }
    return false;
}

// The token id of a tokenizer_config.json entry such as "bos_token": "<s>" or {"content": "<s>"};
// a token missing from the vocabulary is an error when `required`, else ignored.
inline std::optional<int32_t> config_token_id(const json_file& cfg, const std::string& key, const vocabulary& v,
                                              bool required = true) {
    const nlohmann::json* j = cfg.find(key);
    if (!j) return std::nullopt;
    std::string content;
    if (j->is_string()) content = j->get<std::string>();
    else if (j->is_object()) content = json_string_field(*j, "content", cfg.what(key));
    else throw error(cfg.what(key) + ": expected a string or an object with 'content'");
    for (int32_t i = 0; i < v.size(); ++i)
        if (v.tokens[static_cast<size_t>(i)] == content) return i;
    if (!required) return std::nullopt;
    throw error(cfg.what(key) + ": token '" + content + "' is not in the vocabulary (" + v.source + ")");
}

}  // namespace detail

namespace detail {

inline vocabulary parse_hf_tokenizer_json(const std::string& path) {
    const json_file file = json_file::read(path);
    const nlohmann::json* model = file.find("model");
    if (!model || !model->is_object()) throw error(file.what("model") + ": missing or not an object");
    const std::string type = model->value("type", "");
    if (type != "BPE")
        throw error(file.what("model") + ": tokenizer model type '" + type +
                    "' is not supported (expected BPE with byte_fallback, the Llama/SentencePiece kind)");
    const auto fallback = model->find("byte_fallback");
    if (fallback == model->end() || !fallback->is_boolean() || !fallback->get<bool>())
        throw error(path + ": byte-level BPE (gpt2) tokenizers are not supported yet (model.byte_fallback is not true)");
    const auto vocab_it = model->find("vocab");
    if (vocab_it == model->end() || !vocab_it->is_object() || vocab_it->empty())
        throw error(file.what("model") + ": 'vocab' is missing or empty");

    vocabulary v;
    v.source = path;
    std::vector<std::string> pieces(vocab_it->size());
    std::vector<bool> seen(pieces.size(), false);
    for (const auto& [piece, id_json] : vocab_it->items()) {
        if (!id_json.is_number_integer()) throw error(path + ": model.vocab entry '" + piece + "' has no integer id");
        const int64_t id = id_json.get<int64_t>();
        if (id < 0 || id >= static_cast<int64_t>(pieces.size()) || seen[static_cast<size_t>(id)])
            throw error(path + ": model.vocab entry '" + piece + "' has id " + std::to_string(id) +
                        ", expected each of 0.." + std::to_string(pieces.size() - 1) + " once");
        seen[static_cast<size_t>(id)] = true;
        pieces[static_cast<size_t>(id)] = piece;
    }
    const auto merges = model->find("merges");
    v.scores = scores_from_merges(pieces, merges == model->end() ? nullptr : &*merges, file.what("model") + ".merges");
    for (size_t i = 0; i < pieces.size(); ++i) {
        const bool is_byte = vocabulary::byte_piece_value(pieces[i]) >= 0;
        v.tokens.push_back(pieces[i]);
        v.types.push_back(is_byte ? token_type::byte : token_type::normal);
        if (is_byte) v.scores[i] = 0.0f;
    }
    if (const nlohmann::json* added = file.find("added_tokens")) {
        if (!added->is_array()) throw error(file.what("added_tokens") + ": expected an array");
        std::map<int64_t, const nlohmann::json*> by_id;  // applied in id order, so appends follow on
        for (const nlohmann::json& t : *added) {
            if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer())
                throw error(file.what("added_tokens") + ": an entry has no integer 'id'");
            by_id[t["id"].get<int64_t>()] = &t;
        }
        for (const auto& [id, t] : by_id)
            detail::apply_added_token(v, id, detail::json_string_field(*t, "content", file.what("added_tokens")),
                                      t->value("special", false), file.what("added_tokens"));
    }

    auto id_of = [&](const std::string& piece) -> int32_t {
        for (int32_t i = 0; i < v.size(); ++i)
            if (v.tokens[static_cast<size_t>(i)] == piece) return i;
        return -1;
    };
    const auto unk = model->find("unk_token");
    v.unk_id = id_of(unk != model->end() && unk->is_string() ? unk->get<std::string>() : "<unk>");
    if (v.unk_id < 0) throw error(path + ": model.unk_token is not set or not in the vocabulary (SentencePiece needs one)");
    v.types[static_cast<size_t>(v.unk_id)] = token_type::unknown;
    v.scores[static_cast<size_t>(v.unk_id)] = 0.0f;
    v.bos_id = id_of("<s>");
    v.eos_id = id_of("</s>");
    v.pad_id = -1;
    v.add_space_prefix = detail::hf_adds_space_prefix(file.json());
    v.remove_extra_whitespaces = false;
    v.validate();
    return v;
}

inline void apply_tokenizer_config_json(vocabulary& v, const json_file& cfg) {
    if (const nlohmann::json* added = cfg.find("added_tokens_decoder")) {
        if (!added->is_object()) throw error(cfg.what("added_tokens_decoder") + ": expected an object");
        std::map<int64_t, const nlohmann::json*> by_id;
        for (const auto& [key, t] : added->items()) {
            int64_t id = -1;
            try { id = std::stoll(key); } catch (const std::exception&) {}
            if (id < 0 || !t.is_object()) throw error(cfg.what("added_tokens_decoder") + ": bad entry '" + key + "'");
            by_id[id] = &t;
        }
        for (const auto& [id, t] : by_id)
            apply_added_token(v, id, json_string_field(*t, "content", cfg.what("added_tokens_decoder")),
                              t->value("special", false), cfg.what("added_tokens_decoder"));
    }
    v.add_bos = cfg.find_bool("add_bos_token").value_or(v.add_bos);
    v.add_eos = cfg.find_bool("add_eos_token").value_or(v.add_eos);
    if (auto id = config_token_id(cfg, "bos_token", v)) v.bos_id = *id;
    if (auto id = config_token_id(cfg, "eos_token", v)) v.eos_id = *id;
    if (auto id = config_token_id(cfg, "unk_token", v)) v.unk_id = *id;
    if (auto id = config_token_id(cfg, "pad_token", v, false)) v.pad_id = *id;
    v.validate();
}

}  // namespace detail

// Reads a tokenizer.json of the SentencePiece kind (BPE with byte fallback).
inline vocabulary read_hf_tokenizer_json(const std::string& path) {
    return json_file::rethrowing(path, [&] { return detail::parse_hf_tokenizer_json(path); });
}

// Applies tokenizer_config.json: add_bos_token, add_eos_token, bos/eos/unk/pad tokens and
// added_tokens_decoder (special → control, others user-defined).
inline void apply_tokenizer_config(vocabulary& v, const std::string& path) {
    json_file::rethrowing(path, [&] { detail::apply_tokenizer_config_json(v, json_file::read(path)); });
}

// Pads a vocabulary to the model's n_vocab rows with unused "[PAD<id>]" tokens, as llama.cpp does.
inline void pad_vocabulary(vocabulary& v, int64_t n_vocab, const std::string& model_source) {
    if (v.size() > n_vocab)
        throw error(v.source + ": the tokenizer has " + std::to_string(v.size()) + " tokens but " + model_source +
                    " has a vocabulary of " + std::to_string(n_vocab));
    while (v.size() < n_vocab) {
        v.tokens.push_back("[PAD" + std::to_string(v.size()) + "]");
        v.scores.push_back(-1000.0f);
        v.types.push_back(token_type::unused);
    }
}

// The vocabulary of a model folder: `tokenizer_path` if given, else tokenizer.model, else
// tokenizer.json; then the folder's tokenizer_config.json if there is one.
inline vocabulary read_hf_vocabulary(const std::string& folder, const std::string& tokenizer_path = "") {
    namespace fs = std::filesystem;
    std::string path = tokenizer_path;
    if (path.empty()) {
        for (const char* name : {"tokenizer.model", "tokenizer.json"})
            if (fs::exists(fs::path(folder) / name)) {
                path = (fs::path(folder) / name).string();
                break;
            }
    }
    if (path.empty()) throw error(folder + ": no tokenizer.model or tokenizer.json (pass --tokenizer FILE)");
    vocabulary v = path.ends_with(".json") ? read_hf_tokenizer_json(path) : read_sentencepiece_model(path);
    const fs::path config = fs::path(folder) / "tokenizer_config.json";
    if (fs::exists(config)) apply_tokenizer_config(v, config.string());
    return v;
}

}  // namespace lumen
