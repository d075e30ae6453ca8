// convert/sentencepiece_model.hpp: reads a SentencePiece `tokenizer.model` (a protobuf ModelProto)
// into a lumen::vocabulary, with a small bounds-checked protobuf wire-format reader (no protobuf).
//
// The fields used (sentencepiece_model.proto):
//   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
//   SentencePiece   1 piece (string), 2 score (float), 3 type (enum: NORMAL=1 UNKNOWN=2 CONTROL=3
//                   USER_DEFINED=4 UNUSED=5 BYTE=6, the same numbers as GGUF's token types)
//   TrainerSpec     3 model_type (UNIGRAM=1 BPE=2 WORD=3 CHAR=4; default UNIGRAM),
//                   24 treat_whitespace_as_suffix, 40 unk_id (0), 41 bos_id (1), 42 eos_id (2),
//                   43 pad_id (-1), 44 unk_surface (" ⁇ ")
//   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true),
//                   4 remove_extra_whitespaces (true), 5 escape_whitespaces (true)
// Wire format: each field is a varint key (field_number << 3 | wire_type), then a varint (type 0),
// 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). Integers are little-endian;
// a negative int32 is a 10-byte varint.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "../detail/mapped_file.hpp"
#include "../error.hpp"
#include "../tokenizer.hpp"

namespace lumen {

namespace detail {

// A cursor over one protobuf message; every failure names the file and the message.
class protobuf_reader {
public:
    protobuf_reader(std::string_view data, const std::string& path, std::string what)
        : data_(data), path_(path), what_(std::move(what)) {}

    // Reads the next field key; false at the end of the message.
    bool next(uint32_t& field, uint32_t& wire_type) {
        if (pos_ == data_.size()) return false;
        const uint64_t key = varint();
        field = static_cast<uint32_t>(key >> 3);
        wire_type = static_cast<uint32_t>(key & 7);
        if (field == 0 || key >> 32 != 0) fail("invalid field key " + std::to_string(key));
        return true;
    }

    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ == data_.size()) fail("truncated varint");
            const auto b = static_cast<uint8_t>(data_[pos_++]);
            v |= static_cast<uint64_t>(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
        fail("varint longer than 10 bytes");
    }

    std::string_view bytes() {
        const uint64_t n = varint();
        if (n > data_.size() - pos_)
            fail("length " + std::to_string(n) + " runs past the end (" + std::to_string(data_.size() - pos_) + " bytes left)");
        const std::string_view s = data_.substr(pos_, static_cast<size_t>(n));
        pos_ += static_cast<size_t>(n);
        return s;
    }

    float fixed32_float() {
        need(4);
        float f;
        std::memcpy(&f, data_.data() + pos_, 4);
        pos_ += 4;
        return f;
    }

    // Reads a field of the expected wire type (0 varint, 2 bytes, 5 fixed32) or fails.
    void expect(uint32_t field, uint32_t wire_type, uint32_t expected) const {
        if (wire_type != expected)
            fail("field " + std::to_string(field) + " has wire type " + std::to_string(wire_type) + ", expected " +
                 std::to_string(expected));
    }
    bool read_bool(uint32_t field, uint32_t wire_type) {
        expect(field, wire_type, 0);
        return varint() != 0;
    }
    // int32 fields: negative values are sign-extended to 64 bits on the wire.
    int32_t read_int32(uint32_t field, uint32_t wire_type) {
        expect(field, wire_type, 0);
        return static_cast<int32_t>(static_cast<int64_t>(varint()));
    }
    std::string_view read_bytes(uint32_t field, uint32_t wire_type) {
        expect(field, wire_type, 2);
        return bytes();
    }

    // Skips a field this reader does not use.
    void skip(uint32_t field, uint32_t wire_type) {
        switch (wire_type) {
            case 0: varint(); return;
            case 1: need(8); pos_ += 8; return;
            case 2: bytes(); return;
            case 5: need(4); pos_ += 4; return;
            default: fail("field " + std::to_string(field) + " has unsupported wire type " + std::to_string(wire_type));
        }
    }

    [[noreturn]] void fail(const std::string& message) const {
        throw error(path_ + ": not a valid SentencePiece model: " + what_ + " at byte " + std::to_string(pos_) + ": " + message);
    }

private:
    void need(size_t n) const {
        if (n > data_.size() - pos_) fail("truncated fixed-size field");
    }

    std::string_view data_;
    const std::string& path_;
    std::string what_;
    size_t pos_ = 0;
};

struct sentencepiece_settings {
    int32_t model_type = 1;  // UNIGRAM unless set
    bool treat_whitespace_as_suffix = false;
    std::string normalizer_name;
    bool has_charsmap = false;
    bool escape_whitespaces = true;
};

inline void read_sentencepiece_piece(std::string_view msg, const std::string& path, size_t index, vocabulary& v) {
    protobuf_reader in(msg, path, "piece " + std::to_string(index));
    std::string piece;
    float score = 0.0f;
    int32_t type = 1;  // NORMAL
    uint32_t field, wt;
    while (in.next(field, wt)) {
        if (field == 1) {
            piece = std::string(in.read_bytes(field, wt));
        } else if (field == 2) {
            in.expect(field, wt, 5);
            score = in.fixed32_float();
        } else if (field == 3) {
            type = in.read_int32(field, wt);
        } else {
            in.skip(field, wt);
        }
    }
    if (piece.empty()) in.fail("the piece is empty");
    if (type < 1 || type > 6) in.fail("piece '" + piece + "' has unknown type " + std::to_string(type));
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(static_cast<token_type>(type));  // SentencePiece's numbering is GGUF's
}

inline void read_trainer_spec(std::string_view msg, const std::string& path, vocabulary& v, sentencepiece_settings& s) {
    protobuf_reader in(msg, path, "trainer_spec");
    uint32_t field, wt;
    while (in.next(field, wt)) {
        switch (field) {
            case 3: s.model_type = in.read_int32(field, wt); break;
            case 24: s.treat_whitespace_as_suffix = in.read_bool(field, wt); break;
            case 40: v.unk_id = in.read_int32(field, wt); break;
            case 41: v.bos_id = in.read_int32(field, wt); break;
            case 42: v.eos_id = in.read_int32(field, wt); break;
            case 43: v.pad_id = in.read_int32(field, wt); break;
            case 44: v.unk_surface = std::string(in.read_bytes(field, wt)); break;
            default: in.skip(field, wt);
        }
    }
}

inline void read_normalizer_spec(std::string_view msg, const std::string& path, vocabulary& v, sentencepiece_settings& s) {
    protobuf_reader in(msg, path, "normalizer_spec");
    uint32_t field, wt;
    while (in.next(field, wt)) {
        switch (field) {
            case 1: s.normalizer_name = std::string(in.read_bytes(field, wt)); break;
            case 2: s.has_charsmap = !in.read_bytes(field, wt).empty(); break;
            case 3: v.add_space_prefix = in.read_bool(field, wt); break;
            case 4: v.remove_extra_whitespaces = in.read_bool(field, wt); break;
            case 5: s.escape_whitespaces = in.read_bool(field, wt); break;
            default: in.skip(field, wt);
        }
    }
}

// Rejects settings under which lumen's encoder would not give SentencePiece's ids.
inline void check_sentencepiece_settings(const sentencepiece_settings& s, const std::string& path) {
    static const char* const model_types[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    if (s.model_type != 2)
        throw error(path + ": SentencePiece model type " +
                    (s.model_type >= 1 && s.model_type <= 4 ? std::string(model_types[s.model_type]) : std::to_string(s.model_type)) +
                    " is not supported; expected BPE (trainer_spec.model_type = 2)");
    if (s.has_charsmap)
        throw error(path + ": normalization rule '" + s.normalizer_name +
                    "' (a precompiled character map) is not supported; expected 'identity'");
    if (!s.escape_whitespaces) throw error(path + ": normalizer_spec.escape_whitespaces = false is not supported");
    if (s.treat_whitespace_as_suffix) throw error(path + ": trainer_spec.treat_whitespace_as_suffix is not supported");
}

}  // namespace detail

// Parses the bytes of a SentencePiece model; `path` names it in messages.
inline vocabulary parse_sentencepiece_model(std::string_view bytes, const std::string& path) {
    vocabulary v;
    v.source = path;
    // Proto defaults: unk 0, bos 1, eos 2, pad -1; add_dummy_prefix and remove_extra_whitespaces true.
    v.unk_id = 0, v.bos_id = 1, v.eos_id = 2, v.pad_id = -1;
    v.add_space_prefix = true;
    v.remove_extra_whitespaces = true;
    detail::sentencepiece_settings settings;

    detail::protobuf_reader in(bytes, path, "ModelProto");
    uint32_t field, wt;
    while (in.next(field, wt)) {
        if (field == 1)
            detail::read_sentencepiece_piece(in.read_bytes(field, wt), path, v.tokens.size(), v);
        else if (field == 2)
            detail::read_trainer_spec(in.read_bytes(field, wt), path, v, settings);
        else if (field == 3)
            detail::read_normalizer_spec(in.read_bytes(field, wt), path, v, settings);
        else
            in.skip(field, wt);
    }
    if (v.tokens.empty()) throw error(path + ": not a valid SentencePiece model: it has no pieces");
    detail::check_sentencepiece_settings(settings, path);
    v.validate();
    return v;
}

// Reads a SentencePiece `tokenizer.model` file.
inline vocabulary read_sentencepiece_model(const std::string& path) {
    const detail::byte_source bytes = detail::byte_source::map_file(path);
    return parse_sentencepiece_model(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

}  // namespace lumen
