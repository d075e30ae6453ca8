// tokenizer.hpp: SentencePiece BPE tokenization (what libsentencepiece's bpe_model.cc and
// llama.cpp's llm_tokenizer_spm do): the vocabulary, encode/decode, a streaming decoder, GGUF import.
//
// Encoding mirrors SentencePiece step by step:
//   1. Normalizer::Normalize with the identity rule: optional removal of leading/trailing/repeated
//      spaces, the dummy prefix "▁", ' ' → "▁", and every byte that does not start a valid UTF-8
//      character becomes U+FFFD while consuming ONE byte (string_util::IsValidDecodeUTF8).
//   2. bpe::Model::SampleEncode: split into characters (user-defined pieces are matched first and
//      frozen), then repeatedly merge the adjacent pair whose concatenation is the best-scoring
//      NORMAL/USER_DEFINED/UNUSED piece (ties: leftmost), and re-segment UNUSED pieces.
//   3. PopulateSentencePieceText: a final symbol missing from the vocabulary becomes <0xXX> byte
//      tokens (byte fallback) or <unk> (consecutive unknowns collapse into one <unk>).
// Decoding mirrors SentencePieceProcessor::Decode (the leading "▁" of the first piece is dropped,
// control tokens are invisible, runs of byte tokens are UTF-8-validated with U+FFFD per bad byte).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error.hpp"
#include "gguf.hpp"

namespace lumen {

// Token types, numbered as GGUF's tokenizer.ggml.token_type (and SentencePiece's piece types).
enum class token_type : int32_t {
    undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

// A SentencePiece vocabulary: pieces use "▁" (U+2581) for a space; byte pieces are "<0xXX>".
struct vocabulary {
    std::vector<std::string> tokens;
    std::vector<float> scores;       // merge priority: higher merges first
    std::vector<token_type> types;
    int32_t bos_id = 1;              // -1: none
    int32_t eos_id = 2;              // -1: none
    int32_t unk_id = 0;              // required
    int32_t pad_id = -1;             // -1: none
    bool add_space_prefix = true;    // SentencePiece normalizer_spec.add_dummy_prefix
    bool remove_extra_whitespaces = false;  // normalizer_spec.remove_extra_whitespaces
    bool add_bos = true;             // what a caller should do by default
    bool add_eos = false;
    std::string unk_surface = " \xE2\x81\x87 ";  // what <unk> decodes to (trainer_spec.unk_surface)
    std::string source = "vocabulary";           // the file it came from, for messages

    int32_t size() const { return static_cast<int32_t>(tokens.size()); }

    // Throws lumen::error naming `source` when the vocabulary is inconsistent.
    void validate() const {
        if (tokens.empty()) throw error(source + ": the vocabulary has no tokens");
        if (tokens.size() > static_cast<size_t>(INT32_MAX)) throw error(source + ": too many tokens");
        if (scores.size() != tokens.size() || types.size() != tokens.size())
            throw error(source + ": " + std::to_string(tokens.size()) + " tokens but " + std::to_string(scores.size()) +
                        " scores and " + std::to_string(types.size()) + " token types");
        check_id("bos", bos_id, true);
        check_id("eos", eos_id, true);
        check_id("unk", unk_id, false);
        check_id("pad", pad_id, true);
        for (size_t i = 0; i < types.size(); ++i) {
            const auto t = static_cast<int32_t>(types[i]);
            if (t < 0 || t > 6)
                throw error(source + ": token " + std::to_string(i) + " has type " + std::to_string(t) + ", expected 0 to 6");
            if (types[i] == token_type::byte && byte_piece_value(tokens[i]) < 0)
                throw error(source + ": token " + std::to_string(i) + " '" + tokens[i] + "' has type byte but is not <0xXX>");
        }
    }

    // "<0x41>" → 0x41; anything else → -1 (SentencePiece's PieceToByte: exactly "<0x%02X>").
    static int byte_piece_value(std::string_view piece) {
        if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
        auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1); };
        const int hi = hex(piece[3]), lo = hex(piece[4]);
        return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
    }

private:
    void check_id(const char* name, int32_t id, bool may_be_none) const {
        if ((may_be_none && id == -1) || (id >= 0 && id < size())) return;
        throw error(source + ": " + name + " token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(size()) + " tokens");
    }
};

// --- UTF-8, exactly as SentencePiece's string_util (util.h / util.cc) sees it
namespace detail {

inline constexpr std::string_view space_symbol = "\xE2\x96\x81";      // U+2581 "▁"
inline constexpr std::string_view replacement_char = "\xEF\xBF\xBD";  // U+FFFD

// string_util::OneCharLen: the length a lead byte announces (no validation).
inline size_t utf8_one_char_len(unsigned char c) {
    constexpr unsigned char lengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lengths[c >> 4];
}

// string_util::IsValidDecodeUTF8: the byte length of the valid character at the start of `s`, or
// 0 when DecodeUTF8 rejects it (truncated, bad trail byte, overlong, surrogate, > U+10FFFF).
inline size_t utf8_valid_length(std::string_view s) {
    if (s.empty()) return 0;
    const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
    const auto trail = [&](size_t i) { return (b(i) & 0xC0) == 0x80; };
    const auto valid_cp = [](uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); };
    if (b(0) < 0x80) return 1;
    if (s.size() >= 2 && (b(0) & 0xE0) == 0xC0) {
        const uint32_t cp = ((b(0) & 0x1Fu) << 6) | (b(1) & 0x3Fu);
        return trail(1) && cp >= 0x80 && valid_cp(cp) ? 2 : 0;
    }
    if (s.size() >= 3 && (b(0) & 0xF0) == 0xE0) {
        const uint32_t cp = ((b(0) & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
        // A literal U+FFFD counts as valid: IsValidDecodeUTF8 accepts kUnicodeError when mblen == 3.
        return trail(1) && trail(2) && cp >= 0x800 && valid_cp(cp) ? 3 : 0;
    }
    if (s.size() >= 4 && (b(0) & 0xF8) == 0xF0) {
        const uint32_t cp = ((b(0) & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu);
        return trail(1) && trail(2) && trail(3) && cp >= 0x10000 && valid_cp(cp) ? 4 : 0;
    }
    return 0;
}

// True when `s` (shorter than the character its lead byte announces) could still become a valid
// character once more bytes arrive. The valid code points of a prefix form one interval, so it is
// enough to try the smallest and the largest trail bytes.
inline bool utf8_could_complete(std::string_view s) {
    const auto lead = static_cast<unsigned char>(s.empty() ? 0 : s[0]);
    const size_t n = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 0;
    if (s.size() >= n) return false;
    for (const char pad : {'\x80', '\xBF'}) {
        std::string full(s);
        full.resize(n, pad);
        if (utf8_valid_length(full) == n) return true;
    }
    return false;
}

// Appends `bytes` (a run of byte tokens) the way Decode's ProcessBytePieces does: valid characters
// as they are, every byte of an invalid sequence as U+FFFD.
inline void append_utf8_or_replacement(std::string_view bytes, std::string& out) {
    while (!bytes.empty()) {
        const size_t n = utf8_valid_length(bytes);
        if (n == 0) {
            out += replacement_char;
            bytes.remove_prefix(1);
        } else {
            out += bytes.substr(0, n);
            bytes.remove_prefix(n);
        }
    }
}

struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using piece_map = std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>>;

}  // namespace detail

// --- tokenizer
class tokenizer {
public:
    explicit tokenizer(vocabulary vocab) : vocab_(std::move(vocab)) {
        vocab_.validate();
        build_index();
    }

    // Text → ids, as SentencePieceProcessor::Encode (plus <s>/</s> when asked). Never fails.
    std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos = false) const {
        std::vector<int32_t> ids;
        if (add_bos && vocab_.bos_id >= 0) ids.push_back(vocab_.bos_id);
        const std::string normalized = normalize(text);
        if (!normalized.empty()) encode_normalized(normalized, ids);
        if (add_eos && vocab_.eos_id >= 0) ids.push_back(vocab_.eos_id);
        return ids;
    }

    // Ids → text, as SentencePieceProcessor::DecodeIds. An id outside the vocabulary throws.
    std::string decode(std::span<const int32_t> ids) const {
        std::string text, bytes;
        bool is_bos_ws = true;     // the next piece may lose its leading "▁"
        bool bos_ws_seen = false;  // a leading "▁" has been dropped already
        for (const int32_t id : ids) {
            check_id(id);
            if (byte_value_[id] >= 0) {
                bytes.push_back(static_cast<char>(byte_value_[id]));
                continue;
            }
            detail::append_utf8_or_replacement(bytes, text);
            bytes.clear();
            if (bos_ws_seen || !text.empty()) is_bos_ws = false;
            bos_ws_seen = append_piece_text(id, is_bos_ws, text);
        }
        detail::append_utf8_or_replacement(bytes, text);
        return text;
    }

    int32_t n_vocab() const { return vocab_.size(); }
    std::string_view piece(int32_t id) const { check_id(id); return vocab_.tokens[id]; }
    float score(int32_t id) const { check_id(id); return vocab_.scores[id]; }
    token_type type(int32_t id) const { check_id(id); return vocab_.types[id]; }
    bool is_control(int32_t id) const { return type(id) == token_type::control; }
    bool is_unknown(int32_t id) const { return type(id) == token_type::unknown; }
    bool is_byte(int32_t id) const { return type(id) == token_type::byte; }
    // -1 when the vocabulary has none.
    int32_t bos() const { return vocab_.bos_id; }
    int32_t eos() const { return vocab_.eos_id; }
    int32_t unk() const { return vocab_.unk_id; }
    int32_t pad() const { return vocab_.pad_id; }
    bool add_bos() const { return vocab_.add_bos; }
    bool add_eos() const { return vocab_.add_eos; }
    const vocabulary& vocab() const { return vocab_; }

    // The id of a piece ("▁the", "<0x0A>", "<s>"), or -1.
    int32_t find_piece(std::string_view piece) const {
        if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
        if (auto it = mergeable_.find(piece); it != mergeable_.end()) return it->second;
        return -1;
    }

    // One token as text for display: "▁" → ' ', a byte token → its raw byte, control → "".
    std::string token_text(int32_t id) const {
        check_id(id);
        if (byte_value_[id] >= 0) return std::string(1, static_cast<char>(byte_value_[id]));
        std::string out;
        append_piece_text(id, false, out);
        return out;
    }

    // The byte a byte token stands for, or -1.
    int byte_value(int32_t id) const { check_id(id); return byte_value_[id]; }

    void check_id(int32_t id) const {
        if (id < 0 || id >= vocab_.size())
            throw error(vocab_.source + ": token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                        std::to_string(vocab_.size()) + ")");
    }

private:
    friend class token_streamer;

    // Appends the decoded text of one non-byte token (Decode's DecodeSentencePiece). Returns true
    // when a leading "▁" was consumed because this is the first piece (is_bos_ws).
    bool append_piece_text(int32_t id, bool is_bos_ws, std::string& out) const {
        const token_type t = vocab_.types[id];
        if (t == token_type::control) return false;  // <s>, </s>: invisible
        if (t == token_type::unknown) {
            out += vocab_.unk_surface;
            return false;
        }
        std::string_view piece = vocab_.tokens[id];
        bool has_bos_ws = false;
        if (is_bos_ws && (vocab_.add_space_prefix || vocab_.remove_extra_whitespaces)) {
            if (piece.starts_with(detail::space_symbol)) {
                piece.remove_prefix(detail::space_symbol.size());
                has_bos_ws = true;
            }
            // With remove_extra_whitespaces every leading whitespace piece is stripped.
            if (vocab_.remove_extra_whitespaces) has_bos_ws = false;
        }
        append_unescaped(piece, out);
        return has_bos_ws;
    }

    // One symbol of the BPE working list (bpe::Model's Symbol): a slice of the normalized text.
    struct symbol {
        int prev;       // -1 at the start
        int next;       // -1 at the end
        bool freeze;    // a user-defined piece: never merged
        uint32_t begin;
        uint32_t size;  // 0 once merged into its left neighbour
    };
    // A candidate merge (bpe::Model's SymbolPair).
    struct symbol_pair {
        int left, right;
        float score;
        size_t size;  // bytes of the merged piece, to detect stale entries
    };
    // SymbolPairComparator: highest score first, then the leftmost.
    struct pair_order {
        bool operator()(const symbol_pair& a, const symbol_pair& b) const {
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        }
    };

    void build_index() {
        const int32_t n = vocab_.size();
        byte_value_.assign(n, -1);
        byte_fallback_ = false;
        for (int32_t& id : byte_token_) id = vocab_.unk_id;
        for (int32_t i = 0; i < n; ++i) {
            const token_type t = vocab_.types[i];
            const std::string& p = vocab_.tokens[i];
            if (p.empty()) continue;
            // InitializePieces: NORMAL, USER_DEFINED and UNUSED pieces can be merged into; the
            // others (control, unknown, byte) are only found by their exact text.
            const bool mergeable = t == token_type::normal || t == token_type::user_defined ||
                                   t == token_type::unused || t == token_type::undefined;
            (mergeable ? mergeable_ : reserved_).emplace(p, i);  // first occurrence wins
            if (t == token_type::user_defined && user_defined_.emplace(p, i).second)
                user_defined_lengths_.push_back(p.size());
            if (t == token_type::unused) has_unused_ = true;
            if (t == token_type::byte) {
                const int b = vocabulary::byte_piece_value(p);
                byte_value_[i] = b;
                if (byte_token_[b] == vocab_.unk_id) byte_token_[b] = i;
                byte_fallback_ = true;
            }
        }
        std::sort(user_defined_lengths_.begin(), user_defined_lengths_.end(), std::greater<>());
        user_defined_lengths_.erase(std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
                                    user_defined_lengths_.end());
    }

    // Appends a piece with every "▁" turned back into ' '.
    static void append_unescaped(std::string_view piece, std::string& out) {
        for (size_t pos = 0;;) {
            const size_t at = piece.find(detail::space_symbol, pos);
            if (at == std::string_view::npos) {
                out += piece.substr(pos);
                return;
            }
            out += piece.substr(pos, at - pos);
            out += ' ';
            pos = at + detail::space_symbol.size();
        }
    }

    // Normalizer::Normalize with the identity rule (no precompiled character map).
    std::string normalize(std::string_view input) const {
        const bool remove_extra = vocab_.remove_extra_whitespaces;
        if (remove_extra)  // "Ignores heading space."
            while (!input.empty() && input.front() == ' ') input.remove_prefix(1);
        std::string out;
        if (input.empty()) return out;
        out.reserve(input.size() * 3 + 3);
        if (vocab_.add_space_prefix) out += detail::space_symbol;
        bool is_prev_space = remove_extra;
        while (!input.empty()) {
            // NormalizePrefix: one valid character, or U+FFFD for one malformed byte.
            const size_t n = detail::utf8_valid_length(input);
            const std::string_view ch = n ? input.substr(0, n) : detail::replacement_char;
            input.remove_prefix(n ? n : 1);
            if (ch == " ") {
                if (!is_prev_space) out += detail::space_symbol;  // a repeated space is dropped
                is_prev_space = remove_extra;
            } else {
                out += ch;
                is_prev_space = false;
            }
        }
        if (remove_extra)  // "Ignores trailing space."
            while (std::string_view(out).ends_with(detail::space_symbol)) out.resize(out.size() - detail::space_symbol.size());
        return out;
    }

    // bpe::Model::SampleEncode (alpha = 0) followed by PopulateSentencePieceText's unknown handling.
    void encode_normalized(const std::string& text, std::vector<int32_t>& ids) const {
        std::vector<symbol> symbols = split_symbols(text);
        const auto view = [&](int i) { return std::string_view(text).substr(symbols[i].begin, symbols[i].size); };

        std::vector<symbol_pair> storage;
        storage.reserve(symbols.size() * 2);
        std::priority_queue<symbol_pair, std::vector<symbol_pair>, pair_order> agenda(pair_order{}, std::move(storage));
        // rev_merge: for each UNUSED piece formed, the two halves it was last formed from.
        std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

        // MaybeAddNewSymbolPair
        const auto add_pair = [&](int left, int right) {
            if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
            const std::string_view merged(text.data() + symbols[left].begin, symbols[left].size + symbols[right].size);
            const auto it = mergeable_.find(merged);
            if (it == mergeable_.end()) return;
            agenda.push({left, right, vocab_.scores[it->second], merged.size()});
            if (vocab_.types[it->second] == token_type::unused) rev_merge[merged] = {view(left), view(right)};
        };

        for (size_t i = 1; i < symbols.size(); ++i) add_pair(static_cast<int>(i) - 1, static_cast<int>(i));

        while (!agenda.empty()) {
            const symbol_pair top = agenda.top();
            agenda.pop();
            symbol& l = symbols[top.left];
            symbol& r = symbols[top.right];
            if (l.size == 0 || r.size == 0 || l.size + r.size != top.size) continue;  // stale
            l.size += r.size;
            l.next = r.next;
            if (r.next >= 0) symbols[r.next].prev = top.left;
            r.size = 0;
            add_pair(l.prev, top.left);
            add_pair(top.left, l.next);
        }

        bool is_prev_unk = false;
        for (int i = 0; i != -1; i = symbols[i].next) resegment(view(i), rev_merge, ids, is_prev_unk);
    }

    // Splits the normalized text into characters; a user-defined piece (longest match) is one
    // frozen symbol, as PrefixMatcher::PrefixMatch does.
    std::vector<symbol> split_symbols(std::string_view text) const {
        std::vector<symbol> symbols;
        symbols.reserve(text.size());
        for (size_t pos = 0; pos < text.size();) {
            size_t n = 0;
            bool freeze = false;
            for (const size_t len : user_defined_lengths_) {
                if (len <= text.size() - pos && user_defined_.contains(text.substr(pos, len))) {
                    n = len;
                    freeze = true;
                    break;
                }
            }
            if (!freeze) n = std::min(text.size() - pos, detail::utf8_one_char_len(static_cast<unsigned char>(text[pos])));
            const int index = static_cast<int>(symbols.size());
            symbols.push_back({index - 1, pos + n < text.size() ? index + 1 : -1, freeze,
                               static_cast<uint32_t>(pos), static_cast<uint32_t>(n)});
            pos += n;
        }
        return symbols;
    }

    // The `resegment` lambda of SampleEncode (UNUSED pieces go back to the halves they were made
    // of), then the unknown handling of PopulateSentencePieceText.
    void resegment(std::string_view piece,
                   const std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>& rev_merge,
                   std::vector<int32_t>& ids, bool& is_prev_unk) const {
        const int32_t id = find_piece(piece);
        if (id >= 0 && has_unused_ && vocab_.types[id] == token_type::unused) {
            if (const auto it = rev_merge.find(piece); it != rev_merge.end()) {
                resegment(it->second.first, rev_merge, ids, is_prev_unk);
                resegment(it->second.second, rev_merge, ids, is_prev_unk);
                return;
            }
        }
        const bool is_unk = id < 0 || vocab_.types[id] == token_type::unknown;
        if (is_unk && byte_fallback_) {
            // "Decomposes an unknown piece into UTF-8 bytes"
            for (const char c : piece) ids.push_back(byte_token_[static_cast<unsigned char>(c)]);
        } else if (is_unk) {
            // "Merges continuous run of unknown pieces"
            if (!is_prev_unk) ids.push_back(id < 0 ? vocab_.unk_id : id);
        } else {
            ids.push_back(id);
        }
        is_prev_unk = is_unk;
    }

    vocabulary vocab_;
    detail::piece_map mergeable_;     // normal, user-defined, unused pieces → id
    detail::piece_map reserved_;      // control, unknown, byte pieces → id
    detail::piece_map user_defined_;  // matched whole before merging
    std::vector<size_t> user_defined_lengths_;  // distinct lengths, longest first
    std::vector<int> byte_value_;     // per id: the byte of a byte token, or -1
    int32_t byte_token_[256] = {};    // per byte: its <0xXX> token (unk when missing)
    bool byte_fallback_ = false;
    bool has_unused_ = false;
};

// --- streaming decoder
// Turns ids into text one at a time for printing while generating. It returns only complete UTF-8:
// bytes of a character split over byte tokens are held back until the character is complete.
// The concatenation of everything it returns (after flush) equals tokenizer::decode of the same
// ids, except that a BOS in the middle starts a new text again (its first piece loses its "▁",
// as llama2.c does after BOS).
class token_streamer {
public:
    explicit token_streamer(const tokenizer& tok) : tok_(&tok) {}

    // Feeds one id; returns the text it completes (often empty). Throws on an id out of range.
    std::string push(int32_t id) {
        tok_->check_id(id);
        std::string out;
        if (const int b = tok_->byte_value(id); b >= 0) {
            pending_.push_back(static_cast<char>(b));
            any_text_ = true;
            drain(false, out);
            return out;
        }
        drain(true, out);  // a byte run ends: what is incomplete now is invalid
        if (id == tok_->bos()) {
            start_text();
            return out;
        }
        if (bos_ws_seen_ || any_text_) is_bos_ws_ = false;
        const size_t before = out.size();
        bos_ws_seen_ = tok_->append_piece_text(id, is_bos_ws_, out);
        if (out.size() > before) any_text_ = true;
        return out;
    }

    // Ends the stream: held-back bytes of an incomplete character become U+FFFD each.
    std::string flush() {
        std::string out;
        drain(true, out);
        return out;
    }

    // Forgets everything, as at the start of a new text.
    void reset() {
        pending_.clear();
        start_text();
    }

private:
    void start_text() {
        is_bos_ws_ = true;
        bos_ws_seen_ = false;
        any_text_ = false;
    }

    // Moves decided characters from pending_ to out; keeps a tail that may still become valid
    // unless `force`.
    void drain(bool force, std::string& out) {
        std::string_view p = pending_;
        while (!p.empty()) {
            const size_t n = detail::utf8_valid_length(p);
            if (n > 0) {
                out += p.substr(0, n);
                p.remove_prefix(n);
            } else if (!force && detail::utf8_could_complete(p)) {
                break;
            } else {
                out += detail::replacement_char;
                p.remove_prefix(1);
            }
        }
        pending_.erase(0, pending_.size() - p.size());
    }

    const tokenizer* tok_;
    std::string pending_;     // bytes of an incomplete character
    bool is_bos_ws_ = true;   // as in tokenizer::decode
    bool bos_ws_seen_ = false;
    bool any_text_ = false;   // some text has come out since the start
};

// --- GGUF import
namespace detail {

inline int32_t gguf_token_id(const gguf_file& f, std::string_view key, int32_t fallback, int32_t n_vocab) {
    const std::optional<int64_t> v = f.find_int(key);
    if (!v) return fallback < n_vocab ? fallback : -1;
    // llama.cpp writes -1 (as i32) or 0xFFFFFFFF (as u32) for "none".
    if (*v == -1 || *v == 0xFFFFFFFFll) return -1;
    if (*v < 0 || *v >= n_vocab)
        throw error(f.what(key) + ": token id " + std::to_string(*v) + " is outside the vocabulary of " +
                    std::to_string(n_vocab) + " tokens");
    return static_cast<int32_t>(*v);
}

// An optional per-token array: absent → nullptr; present → exactly one entry per token.
inline const gguf_array* gguf_vocab_array(const gguf_file& f, std::string_view key, size_t n) {
    if (!f.find(key)) return nullptr;
    const gguf_array& a = f.get_array(key);
    if (a.values.size() != n)
        throw error(f.what(key) + ": " + std::to_string(a.values.size()) + " entries, expected one per token (" +
                    std::to_string(n) + ")");
    return &a;
}

}  // namespace detail

// Reads the `tokenizer.ggml.*` keys of a GGUF file whose tokenizer model is "llama" (SentencePiece).
inline vocabulary vocabulary_from_gguf(const gguf_file& f) {
    const std::string model = f.get_string("tokenizer.ggml.model");
    if (model != "llama")
        throw error(f.what("tokenizer.ggml.model") + ": tokenizer model '" + model +
                    "' is not supported; expected 'llama' (a SentencePiece BPE vocabulary)");
    vocabulary v;
    v.source = f.path();
    const gguf_array& tokens = f.get_array("tokenizer.ggml.tokens");
    const size_t n = tokens.values.size();
    if (n == 0 || n > static_cast<size_t>(INT32_MAX))
        throw error(f.what("tokenizer.ggml.tokens") + ": " + std::to_string(n) + " tokens");
    v.tokens.reserve(n);
    for (const gguf_value& t : tokens.values) v.tokens.push_back(t.as_string(f.what("tokenizer.ggml.tokens")));

    v.scores.assign(n, 0.0f);
    if (const gguf_array* a = detail::gguf_vocab_array(f, "tokenizer.ggml.scores", n))
        for (size_t i = 0; i < n; ++i) v.scores[i] = static_cast<float>(a->values[i].as_float(f.what("tokenizer.ggml.scores")));

    v.types.assign(n, token_type::normal);
    if (const gguf_array* a = detail::gguf_vocab_array(f, "tokenizer.ggml.token_type", n)) {
        for (size_t i = 0; i < n; ++i) {
            const int64_t t = a->values[i].as_int(f.what("tokenizer.ggml.token_type"));
            if (t < 0 || t > 6)
                throw error(f.what("tokenizer.ggml.token_type") + ": token " + std::to_string(i) + " has type " +
                            std::to_string(t) + ", expected 0 to 6");
            v.types[i] = static_cast<token_type>(t);
        }
    }

    const auto n32 = static_cast<int32_t>(n);
    v.bos_id = detail::gguf_token_id(f, "tokenizer.ggml.bos_token_id", 1, n32);
    v.eos_id = detail::gguf_token_id(f, "tokenizer.ggml.eos_token_id", 2, n32);
    v.unk_id = detail::gguf_token_id(f, "tokenizer.ggml.unknown_token_id", 0, n32);
    v.pad_id = detail::gguf_token_id(f, "tokenizer.ggml.padding_token_id", -1, n32);
    if (v.unk_id < 0) throw error(f.what("tokenizer.ggml.unknown_token_id") + ": a SentencePiece vocabulary needs an unknown token");
    v.add_bos = f.find_bool("tokenizer.ggml.add_bos_token").value_or(true);
    v.add_eos = f.find_bool("tokenizer.ggml.add_eos_token").value_or(false);
    v.add_space_prefix = f.find_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    v.remove_extra_whitespaces = f.find_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false);
    v.validate();
    return v;
}

}  // namespace lumen
