// test_sentencepiece_parity.cpp: lumen's tokenizer against libsentencepiece, the oracle, on real
// vocabularies (Llama 2's 32k, stories260K's 512) and on variants of them written here (unused and
// user-defined pieces, no byte fallback, other normalizer flags): a generated corpus of varied
// lines must encode to the same ids and decode to the same text, and random ids must decode alike.
#include <catch2/catch.hpp>

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include <lumen/convert/sentencepiece_model.hpp>
#include <lumen/tokenizer.hpp>

#include "test_util.hpp"

namespace {

const std::string realdata = LUMEN_REALDATA;

// --- a fixed-seed PRNG (splitmix64), so the corpus is the same on every machine
struct splitmix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
    bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
    template <class T>
    const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

// --- the corpus
const std::vector<std::string> words = {
    "the", "a", "Once", "upon", "time", "there", "was", "little", "girl", "named", "Lily", "she", "loved",
    "to", "play", "outside", "Hello", "world", "HELLO", "tokenizer", "SentencePiece", "don't", "it's",
    "I'm", "we'll", "they've", "x", "Zebra", "quickly", "jumped", "over", "lazy", "dog", "internationalization",
    "pneumonoultramicroscopic", "llama", "GGUF", "WebAssembly", "re-enter", "e-mail", "U.S.A.", "etc.",
};
const std::vector<std::string> unicode = {
    "caf\xC3\xA9", "na\xC3\xAFve", "\xC3\x85ngstr\xC3\xB6m", "\xC3\xBC" "ber", "se\xC3\xB1or", "fa\xC3\xA7" "ade",
    "Dvo\xC5\x99\xC3\xA1k", "\xC5\xBC\xC3\xB3\xC5\x82\xC4\x87", "e\xCC\x81", "\xE2\x80\x94", "\xE2\x80\x9Cquoted\xE2\x80\x9D",
    "\xC2\xBD", "\xE2\x82\xAC" "5", "\xC2\xA0", "\xE2\x80\x8B", "\xEF\xBB\xBF", "\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81",
    "\xEF\xBF\xBD", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82", "\xCE\xB1\xCE\xB2\xCE\xB3", "\xD8\xB3\xD9\x84\xD8\xA7\xD9\x85",
    "\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D", "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA\xE0\xB8\x94\xE0\xB8\xB5",
    "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87", "\xE1\x9E\x80\xE1\x9E\xB6",
    "\xE4\xBD\xA0\xE5\xA5\xBD", "\xE4\xB8\x96\xE7\x95\x8C", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
    "\xE3\x82\xAB\xE3\x82\xBF\xE3\x82\xAB\xE3\x83\x8A", "\xE9\xBE\x98", "\xF0\xA0\x80\x80",
    "\xF0\x9F\x98\x80", "\xF0\x9F\xA6\x99", "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
    "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7", "\xF0\x9F\x8F\xB3\xEF\xB8\x8F\xE2\x80\x8D\xF0\x9F\x8C\x88", "\xE2\x9C\x85", "\xF4\x8F\xBF\xBF",
};
const std::vector<std::string> code = {
    "int main() { return 0; }", "for (int i = 0; i < n; ++i) {", "def f(x):\n    return x * 2", "    ", "\t\t",
    "<div class=\"a\">", "</div>", "std::vector<int32_t>", "a->b", "x += 1;", "// comment", "/* block */", "#include <x>",
    "SELECT * FROM t WHERE id = 3;", "{\"key\": [1, 2.5, null]}", "$HOME/.config", "C:\\Windows\\", "0x7FFF", "1e-5",
    "<s>", "</s>", "<unk>", "<0x41>", "<|user|>", "@@", "[PAD]",
};
const std::vector<std::string> punctuation = {
    ".", ",", ";", ":", "!", "?", "'", "\"", "(", ")", "[", "]", "{", "}", "-", "_", "=", "+", "*", "/", "\\", "|",
    "@", "#", "$", "%", "^", "&", "~", "`", "...", "!!", "?!", "--",
};
const std::vector<std::string> invalid = {
    "\xFF", "\xFE", "\x80", "\xBF", "\xC0\xAF", "\xC1\xBF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xED\xBF\xBF",
    "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xF8\x88\x80\x80\x80", "\xC3", "\xE2\x82", "\xF0\x9F\x98", "\xF0\x9F",
    "\xC3\x28", "\xE2\x28\xA1", "\xF0\x28\x8C\x28", std::string("\0", 1), "\x01", "\x1B[0m", "\x7F", "\r",
};
const std::vector<std::string> spaces = {" ", " ", " ", "  ", "   ", "\t", "\n", "\r\n", " \t ", "\n\n", "        "};

std::string random_digits(splitmix64& rng) {
    std::string s;
    for (size_t n = 1 + rng.below(12); n > 0; --n) s += static_cast<char>('0' + rng.below(10));
    return s;
}

std::string random_bytes(splitmix64& rng) {
    std::string s;
    for (size_t n = 1 + rng.below(4); n > 0; --n) s += static_cast<char>(0x80 + rng.below(0x80));
    return s;
}

std::string fragment(splitmix64& rng) {
    switch (rng.below(12)) {
        case 0: case 1: case 2: return rng.pick(words);
        case 3: return rng.pick(unicode);
        case 4: return rng.pick(code);
        case 5: return rng.pick(punctuation);
        case 6: return random_digits(rng);
        case 7: return rng.chance(50) ? rng.pick(invalid) : random_bytes(rng);
        case 8: return std::string(1 + rng.below(20), rng.pick(punctuation)[0]);  // runs: "!!!!", "----"
        case 9: {
            std::string s;
            for (size_t n = 1 + rng.below(10); n > 0; --n) s += static_cast<char>('a' + rng.below(26));
            return s;
        }
        case 10: return rng.pick(unicode) + rng.pick(words);
        default: return rng.pick(words) + rng.pick(punctuation);
    }
}

std::string corpus_line(splitmix64& rng) {
    if (rng.chance(2)) return "";
    if (rng.chance(3)) return rng.pick(spaces) + (rng.chance(50) ? rng.pick(spaces) : "");
    std::string line;
    if (rng.chance(25)) line += rng.pick(spaces);
    const size_t n = rng.chance(3) ? 200 + rng.below(400) : 1 + rng.below(20);  // some long lines
    for (size_t i = 0; i < n; ++i) {
        if (i > 0) line += rng.chance(75) ? " " : (rng.chance(50) ? "" : rng.pick(spaces));
        line += fragment(rng);
    }
    if (rng.chance(20)) line += rng.pick(spaces);
    return line;
}

std::vector<std::string> make_corpus(uint64_t seed, size_t n) {
    splitmix64 rng{seed};
    std::vector<std::string> lines;
    lines.reserve(n);
    for (size_t i = 0; i < n; ++i) lines.push_back(corpus_line(rng));
    return lines;
}

// --- reporting
std::string escaped(std::string_view s) {
    std::string out;
    char buf[8];
    for (const char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (b >= 0x20 && b < 0x7F && b != '\\') {
            out += c;
        } else {
            std::snprintf(buf, sizeof buf, "\\x%02X", b);
            out += buf;
        }
    }
    return out;
}

template <class T>
std::string id_list(const std::vector<T>& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) s += ' ';
        s += std::to_string(ids[i]);
    }
    return s + "]";
}

// --- SentencePiece models written here (protobuf wire format), to test the rarer piece types
void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out += static_cast<char>((v & 0x7F) | 0x80);
        v >>= 7;
    }
    out += static_cast<char>(v);
}
void put_int(std::string& out, uint32_t field, int64_t v) {
    put_varint(out, field << 3);
    put_varint(out, static_cast<uint64_t>(v));
}
void put_bytes(std::string& out, uint32_t field, std::string_view s) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, s.size());
    out += s;
}
void put_float(std::string& out, uint32_t field, float f) {
    put_varint(out, (field << 3) | 5);
    char b[4];
    std::memcpy(b, &f, 4);
    out.append(b, 4);
}

std::string serialize_model(const lumen::vocabulary& v) {
    std::string model, trainer, normalizer;
    bool byte_fallback = false;
    for (int32_t i = 0; i < v.size(); ++i) {
        std::string piece;
        put_bytes(piece, 1, v.tokens[i]);
        put_float(piece, 2, v.scores[i]);
        put_int(piece, 3, static_cast<int32_t>(v.types[i]));
        put_bytes(model, 1, piece);
        byte_fallback |= v.types[i] == lumen::token_type::byte;
    }
    put_int(trainer, 3, 2);  // BPE
    put_int(trainer, 35, byte_fallback);
    put_int(trainer, 40, v.unk_id);
    put_int(trainer, 41, v.bos_id);
    put_int(trainer, 42, v.eos_id);
    put_int(trainer, 43, v.pad_id);
    put_bytes(trainer, 44, v.unk_surface);
    put_bytes(normalizer, 1, "identity");
    put_int(normalizer, 3, v.add_space_prefix);
    put_int(normalizer, 4, v.remove_extra_whitespaces);
    put_int(normalizer, 5, 1);
    put_bytes(model, 2, trainer);
    put_bytes(model, 3, normalizer);
    return model;
}

// Marks every `every`-th multi-byte normal piece UNUSED, a few USER_DEFINED, and appends
// user-defined pieces that the corpus contains.
lumen::vocabulary with_rare_types(lumen::vocabulary v, int every) {
    std::unordered_set<std::string> present(v.tokens.begin(), v.tokens.end());
    int counter = 0;
    for (int32_t i = 0; i < v.size(); ++i) {
        if (v.types[i] != lumen::token_type::normal || v.tokens[i].size() < 2) continue;
        if (++counter % every == 0) v.types[i] = lumen::token_type::unused;
        else if (counter % 97 == 1) v.types[i] = lumen::token_type::user_defined;
    }
    for (const char* extra : {"<|user|>", "@@", "[PAD]", "\xE2\x96\x81Hello"}) {
        if (present.count(extra)) continue;
        v.tokens.push_back(extra);
        v.scores.push_back(0.0f);
        v.types.push_back(lumen::token_type::user_defined);
    }
    return v;
}

// Drops the byte pieces: unknown characters then become <unk> (merged over a run).
lumen::vocabulary without_bytes(const lumen::vocabulary& v) {
    lumen::vocabulary out = v;
    out.tokens.clear(), out.scores.clear(), out.types.clear();
    for (int32_t i = 0; i < v.size(); ++i) {
        if (v.types[i] == lumen::token_type::byte) continue;
        out.tokens.push_back(v.tokens[i]);
        out.scores.push_back(v.scores[i]);
        out.types.push_back(v.types[i]);
    }
    return out;
}

// --- the comparison
struct parity_result {
    size_t lines = 0, encode_mismatches = 0, decode_mismatches = 0;
    std::string report;  // the first mismatches, for the failure message
};

void load_processor(sentencepiece::SentencePieceProcessor& sp, const std::string& serialized) {
    const auto status = sp.LoadFromSerializedProto(serialized);
    INFO(status.ToString());
    REQUIRE(status.ok());
}

parity_result compare_corpus(const sentencepiece::SentencePieceProcessor& sp, const lumen::tokenizer& tok,
                             const std::vector<std::string>& corpus, const std::string& name) {
    parity_result r;
    int reported = 0;
    for (const std::string& line : corpus) {
        ++r.lines;
        std::vector<int> expected;
        REQUIRE(sp.Encode(line, &expected).ok());
        const std::vector<int32_t> got = tok.encode(line, false);
        const bool same_ids = std::equal(expected.begin(), expected.end(), got.begin(), got.end());
        std::string expected_text;
        REQUIRE(sp.Decode(expected, &expected_text).ok());
        const std::string got_text = tok.decode(got);
        if (!same_ids) ++r.encode_mismatches;
        if (got_text != expected_text) ++r.decode_mismatches;
        if ((!same_ids || got_text != expected_text) && reported++ < 10) {
            r.report += name + ": line \"" + escaped(line) + "\"\n  sentencepiece " + id_list(expected) + " -> \"" +
                        escaped(expected_text) + "\"\n  lumen         " + id_list(got) + " -> \"" + escaped(got_text) + "\"\n";
        }
    }
    return r;
}

// Random id sequences of every token type must decode to sentencepiece's DecodeIds text.
size_t compare_random_decodes(const sentencepiece::SentencePieceProcessor& sp, const lumen::tokenizer& tok,
                              uint64_t seed, const std::string& name, std::string& report) {
    splitmix64 rng{seed};
    std::vector<int32_t> bytes, others;
    for (int32_t i = 0; i < tok.n_vocab(); ++i) (tok.is_byte(i) ? bytes : others).push_back(i);
    size_t mismatches = 0;
    for (int trial = 0; trial < 2000; ++trial) {
        std::vector<int> ids;
        for (size_t n = rng.below(10); n > 0; --n) {
            if (!bytes.empty() && rng.chance(50)) ids.push_back(rng.pick(bytes));
            else if (rng.chance(20)) ids.push_back(static_cast<int>(rng.below(3)));  // unk, bos, eos
            else ids.push_back(rng.pick(others));
        }
        std::string expected;
        REQUIRE(sp.Decode(ids, &expected).ok());
        const std::string got = tok.decode(std::vector<int32_t>(ids.begin(), ids.end()));
        if (got != expected && mismatches++ < 10)
            report += name + ": ids " + id_list(ids) + "\n  sentencepiece \"" + escaped(expected) +
                      "\"\n  lumen         \"" + escaped(got) + "\"\n";
    }
    return mismatches;
}

void check_parity(const std::string& name, const std::string& serialized, const lumen::vocabulary& vocab, uint64_t seed) {
    sentencepiece::SentencePieceProcessor sp;
    load_processor(sp, serialized);
    const lumen::tokenizer tok(vocab);
    REQUIRE(sp.GetPieceSize() == tok.n_vocab());
    const std::vector<std::string> corpus = make_corpus(seed, 2500);
    parity_result r = compare_corpus(sp, tok, corpus, name);
    const size_t decode_mismatches = compare_random_decodes(sp, tok, seed ^ 0xDEC0DE, name, r.report);
    INFO(r.report);
    INFO(name << ": " << r.lines << " lines, " << r.encode_mismatches << " encode and " << r.decode_mismatches
              << " decode mismatches; " << decode_mismatches << " of 2000 random id sequences decode differently");
    CHECK(r.lines == 2500);
    CHECK(r.encode_mismatches == 0);
    CHECK(r.decode_mismatches == 0);
    CHECK(decode_mismatches == 0);
}

}  // namespace

TEST_CASE("the generated corpus has what it should", "[parity]") {
    const std::vector<std::string> corpus = make_corpus(1, 2500);
    size_t empty = 0, long_lines = 0, invalid_utf8 = 0, leading = 0, trailing = 0;
    for (const std::string& line : corpus) {
        empty += line.empty();
        long_lines += line.size() > 1000;
        leading += !line.empty() && (line.front() == ' ' || line.front() == '\t');
        trailing += !line.empty() && line.back() == ' ';
        for (std::string_view s = line; !s.empty();) {
            const size_t n = lumen::detail::utf8_valid_length(s);
            if (n == 0) { ++invalid_utf8; break; }
            s.remove_prefix(n);
        }
    }
    CHECK(empty > 10);
    CHECK(long_lines > 20);
    CHECK(invalid_utf8 > 500);
    CHECK(leading > 100);
    CHECK(trailing > 100);
}

TEST_CASE("parity with libsentencepiece: Llama 2 tokenizer.model", "[parity][golden]") {
    const std::string path = realdata + "/llama2c/tokenizer.model";
    check_parity("llama2", test_util::read_file(path), lumen::read_sentencepiece_model(path), 1);
}

TEST_CASE("parity with libsentencepiece: stories260K tok512.model", "[parity][golden]") {
    const std::string path = realdata + "/stories260K/tok512.model";
    check_parity("tok512", test_util::read_file(path), lumen::read_sentencepiece_model(path), 2);
}

TEST_CASE("parity with libsentencepiece: variants with unused, user-defined pieces and other flags", "[parity]") {
    const lumen::vocabulary tok512 = lumen::read_sentencepiece_model(realdata + "/stories260K/tok512.model");
    const lumen::vocabulary llama = lumen::read_sentencepiece_model(realdata + "/llama2c/tokenizer.model");
    SECTION("tok512, unused and user-defined pieces") {
        const lumen::vocabulary v = with_rare_types(tok512, 3);
        check_parity("tok512-rare", serialize_model(v), v, 3);
    }
    SECTION("tok512 without byte fallback, no extra-whitespace removal") {
        lumen::vocabulary v = without_bytes(tok512);
        v.remove_extra_whitespaces = false;
        check_parity("tok512-nobytes", serialize_model(v), v, 4);
    }
    SECTION("llama, unused pieces, no dummy prefix, extra whitespace removed") {
        lumen::vocabulary v = with_rare_types(llama, 7);
        v.add_space_prefix = false;
        v.remove_extra_whitespaces = true;
        check_parity("llama-rare", serialize_model(v), v, 5);
    }
    SECTION("llama without byte fallback") {
        const lumen::vocabulary v = without_bytes(llama);
        check_parity("llama-nobytes", serialize_model(v), v, 6);
    }
    SECTION("the reader gives back what the writer wrote") {
        const lumen::vocabulary v = with_rare_types(tok512, 5);
        const lumen::vocabulary back = lumen::parse_sentencepiece_model(serialize_model(v), "written.model");
        CHECK(back.tokens == v.tokens);
        CHECK(back.scores == v.scores);
        CHECK(back.types == v.types);
        CHECK(back.pad_id == -1);
        CHECK(back.remove_extra_whitespaces == v.remove_extra_whitespaces);
    }
}
