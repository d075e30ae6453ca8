// test_tokenizer.cpp: the SentencePiece tokenizer against real vectors (llama.cpp's vocab tests,
// llama2.c's test vectors), the three vocabulary readers, the streaming decoder and bad inputs.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include <lumen/convert/llama2c_tokenizer.hpp>
#include <lumen/convert/sentencepiece_model.hpp>
#include <lumen/gguf.hpp>
#include <lumen/gguf_writer.hpp>
#include <lumen/tokenizer.hpp>

#include "test_util.hpp"

using Catch::Matchers::Contains;

namespace {

const std::string realdata = LUMEN_REALDATA;
const std::string llama_model = realdata + "/llama2c/tokenizer.model";
const std::string llama_bin = realdata + "/llama2c/tokenizer.bin";
const std::string tok512_model = realdata + "/stories260K/tok512.model";
const std::string tok512_bin = realdata + "/stories260K/tok512.bin";

const lumen::tokenizer& llama_tokenizer() {
    static const lumen::tokenizer tok(lumen::read_sentencepiece_model(llama_model));
    return tok;
}

// Strict UTF-8 check (RFC 3629): what a terminal can print without replacement.
bool is_valid_utf8(std::string_view s) {
    while (!s.empty()) {
        const size_t n = lumen::detail::utf8_valid_length(s);
        if (n == 0) return false;
        s.remove_prefix(n);
    }
    return true;
}

std::vector<int32_t> parse_ids(const std::string& line) {
    std::vector<int32_t> ids;
    std::istringstream in(line);
    for (int32_t id; in >> id;) ids.push_back(id);
    return ids;
}

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

// Runs every case of llama.cpp's tests/<vocab>.inp/.out (no BOS, specials not parsed).
void check_llamacpp_vectors(const std::string& name) {
    const std::string base = realdata + "/llamacpp-vocab/" + name;
    const lumen::tokenizer tok(lumen::vocabulary_from_gguf(lumen::gguf_file::open(base)));
    const std::string inp = test_util::read_file(base + ".inp");
    const std::string separator = "\n__ggml_vocab_test__\n";
    std::vector<std::string> cases;
    for (size_t pos = 0; pos < inp.size();) {
        const size_t at = inp.find(separator, pos);
        REQUIRE(at != std::string::npos);
        cases.push_back(inp.substr(pos, at - pos));
        pos = at + separator.size();
    }
    std::ifstream out(base + ".out");
    std::vector<std::vector<int32_t>> expected;
    for (std::string line; std::getline(out, line);) expected.push_back(parse_ids(line));
    REQUIRE(cases.size() == 46);
    REQUIRE(expected.size() == cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
        INFO(name << " case " << i << ": \"" << escaped(cases[i]) << "\"");
        CHECK(tok.encode(cases[i], false) == expected[i]);
        CHECK(tok.decode(expected[i]) == cases[i]);
    }
}

}  // namespace

TEST_CASE("llama.cpp vocab vectors: llama-spm, all 46 cases", "[tokenizer][golden]") {
    check_llamacpp_vectors("ggml-vocab-llama-spm.gguf");
}

TEST_CASE("llama.cpp vocab vectors: phi-3, all 46 cases", "[tokenizer][golden]") {
    check_llamacpp_vectors("ggml-vocab-phi-3.gguf");
}

TEST_CASE("GGUF vocabulary metadata is read", "[tokenizer][gguf]") {
    const auto f = lumen::gguf_file::open(realdata + "/llamacpp-vocab/ggml-vocab-phi-3.gguf");
    const lumen::vocabulary v = lumen::vocabulary_from_gguf(f);
    CHECK(v.size() == 32064);
    CHECK(v.bos_id == 1);
    CHECK(v.eos_id == 32000);
    CHECK(v.unk_id == 0);
    CHECK(v.pad_id == 32000);
    CHECK(v.add_bos);
    CHECK_FALSE(v.add_eos);
    CHECK(v.add_space_prefix);
    CHECK(v.tokens[32007] == "<|end|>");
    CHECK(v.types[32007] == lumen::token_type::control);
    CHECK(v.types[3] == lumen::token_type::byte);
}

TEST_CASE("llama2.c test vectors, from tokenizer.model and from tokenizer.bin", "[tokenizer][golden]") {
    const lumen::tokenizer from_bin(lumen::read_llama2c_tokenizer(llama_bin, 32000));
    std::ifstream in(realdata + "/llama2c/tokenizer_test_vectors.jsonl");
    int n = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line);
        const std::string text = j.at("text").get<std::string>();
        const bool bos = j.at("bos").get<bool>();
        const auto expected = j.at("ids").get<std::vector<int32_t>>();
        INFO("text: \"" << escaped(text) << "\"");
        CHECK(llama_tokenizer().encode(text, bos) == expected);
        CHECK(from_bin.encode(text, bos) == expected);
        CHECK(llama_tokenizer().decode(expected) == text);
        ++n;
    }
    CHECK(n == 5);
}

TEST_CASE("tokenizer.bin and tokenizer.model give the same vocabulary", "[tokenizer][convert]") {
    for (const auto& [model, bin, n] : {std::tuple{llama_model, llama_bin, 32000}, std::tuple{tok512_model, tok512_bin, 512}}) {
        INFO(model);
        const lumen::vocabulary a = lumen::read_sentencepiece_model(model);
        const lumen::vocabulary b = lumen::read_llama2c_tokenizer(bin, n);
        REQUIRE(a.size() == n);
        CHECK(a.tokens == b.tokens);
        CHECK(a.scores == b.scores);
        CHECK(a.types == b.types);
        CHECK(a.bos_id == b.bos_id);
        CHECK(a.eos_id == b.eos_id);
        CHECK(a.unk_id == b.unk_id);
    }
    // tok512 was trained with remove_extra_whitespaces (SentencePiece's default); Llama 2 without.
    CHECK(lumen::read_sentencepiece_model(tok512_model).remove_extra_whitespaces);
    CHECK_FALSE(lumen::read_sentencepiece_model(llama_model).remove_extra_whitespaces);
    const lumen::tokenizer a(lumen::read_sentencepiece_model(tok512_model));
    const lumen::tokenizer b(lumen::read_llama2c_tokenizer(tok512_bin, 512));
    const std::string text = "Once upon a time, there was a little girl named Lily.";
    CHECK(a.encode(text, true) == b.encode(text, true));
}

TEST_CASE("encode: empty text, BOS/EOS, byte fallback, invalid UTF-8", "[tokenizer]") {
    const auto& tok = llama_tokenizer();
    CHECK(tok.encode("", false).empty());
    CHECK(tok.encode("", true) == std::vector<int32_t>{1});
    CHECK(tok.encode("Hello", true, true) == std::vector<int32_t>{1, 15043, 2});
    CHECK(tok.n_vocab() == 32000);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(tok.is_control(1));
    CHECK(tok.is_byte(3 + 0x0A));
    CHECK(tok.piece(15043) == "\xE2\x96\x81Hello");
    CHECK(tok.find_piece("<0x0A>") == 13);
    CHECK(tok.token_text(15043) == " Hello");
    // A lone 0xFF is U+FFFD (one byte consumed), as SentencePiece's normalizer does; so is an
    // overlong "/" (C0 AF) and an encoded surrogate (ED A0 80), byte by byte.
    const std::vector<int32_t> fffd = tok.encode("\xEF\xBF\xBD", false);
    CHECK(tok.encode("\xFF", false) == fffd);
    CHECK(tok.decode(tok.encode("a\xC0\xAF", false)) == "a\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK(tok.decode(tok.encode("\xED\xA0\x80", false)) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("decode: controls are invisible, <unk> is \" \\u2047 \", ids out of range throw", "[tokenizer]") {
    const auto& tok = llama_tokenizer();
    CHECK(tok.decode(std::vector<int32_t>{1, 15043, 2}) == "Hello");
    CHECK(tok.decode(std::vector<int32_t>{0}) == " \xE2\x81\x87 ");
    CHECK(tok.decode(std::vector<int32_t>{3 + 0xE2, 3 + 0x82, 3 + 0xAC}) == "\xE2\x82\xAC");
    // A control token ends a byte run, so its halves are both invalid.
    CHECK(tok.decode(std::vector<int32_t>{3 + 0xE2, 2, 3 + 0x82, 3 + 0xAC}) ==
          "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{32000}), lumen::error);
    CHECK_THROWS_AS(tok.decode(std::vector<int32_t>{-1}), lumen::error);
    CHECK_THROWS_AS(tok.piece(32000), lumen::error);
}

TEST_CASE("decode(encode(text)) gives the text back", "[tokenizer]") {
    const auto& tok = llama_tokenizer();
    const std::vector<std::string> texts = {
        "Hello world", " leading space", "trailing space ", "  two  spaces  ", "\ttab\nnewline\r\n",
        "caf\xC3\xA9 na\xC3\xAFve", "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",
        "\xF0\x9F\xA6\x99 llama \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
        "int main() { return 0; }\n", "\xEF\xBF\xBD", "1234567890",
    };
    for (const std::string& text : texts) {
        INFO("\"" << escaped(text) << "\"");
        CHECK(tok.decode(tok.encode(text, false)) == text);
        CHECK(tok.decode(tok.encode(text, true)) == text);
    }
    // A literal U+2581 is SentencePiece's space symbol, so it comes back as a space (as in libsentencepiece).
    CHECK(tok.encode("\xE2\x96\x81 a literal", false) == std::vector<int32_t>{259, 263, 16333});
    CHECK(tok.decode(tok.encode("\xE2\x96\x81 a literal", false)) == "  a literal");
}

TEST_CASE("token_streamer holds back partial UTF-8 and drops the first space", "[tokenizer][stream]") {
    const auto& tok = llama_tokenizer();
    SECTION("a character split over byte tokens comes out whole") {
        lumen::token_streamer s(tok);
        CHECK(s.push(3 + 0xF0).empty());
        CHECK(s.push(3 + 0x9F).empty());
        CHECK(s.push(3 + 0xA6).empty());
        CHECK(s.push(3 + 0x99) == "\xF0\x9F\xA6\x99");
        CHECK(s.flush().empty());
    }
    SECTION("an impossible continuation is replaced at once, an incomplete tail at flush") {
        lumen::token_streamer s(tok);
        CHECK(s.push(3 + 0xE2).empty());
        CHECK(s.push(3 + 0x41) == "\xEF\xBF\xBD" "A");
        CHECK(s.push(3 + 0xED).empty());
        CHECK(s.push(3 + 0xA0) == "\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate can never complete
        CHECK(s.push(3 + 0xE4).empty());
        CHECK(s.flush() == "\xEF\xBF\xBD");
    }
    SECTION("the first piece after BOS loses its space; later ones keep it") {
        lumen::token_streamer s(tok);
        std::string out;
        for (const int32_t id : tok.encode("Hello world", true)) out += s.push(id);
        CHECK(out == "Hello world");
        CHECK(s.push(1).empty());
        CHECK(s.push(15043) == "Hello");  // "▁Hello" after a new BOS
    }
    SECTION("emoji and CJK text: every chunk is valid UTF-8 and the chunks add up to decode()") {
        const std::string text = "\xF0\x9F\x98\x80 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 "
                                 "\xE1\x9E\x80\xE1\x9E\xB6 \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB ok";
        const std::vector<int32_t> ids = tok.encode(text, true);
        int n_bytes = 0;
        for (const int32_t id : ids) n_bytes += tok.is_byte(id);
        CHECK(n_bytes >= 8);  // the test really splits characters over byte tokens
        lumen::token_streamer s(tok);
        std::string all;
        for (const int32_t id : ids) {
            const std::string chunk = s.push(id);
            INFO("chunk \"" << escaped(chunk) << "\"");
            CHECK(is_valid_utf8(chunk));
            all += chunk;
        }
        all += s.flush();
        CHECK(all == text);
        CHECK(all == tok.decode(ids));
    }
    SECTION("random id sequences: the streamed text equals decode()") {
        uint64_t state = 12345;
        auto next = [&] {
            state += 0x9E3779B97F4A7C15ull;
            uint64_t z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            return z ^ (z >> 31);
        };
        for (int trial = 0; trial < 500; ++trial) {
            std::vector<int32_t> ids;
            if (trial % 2) ids.push_back(1);
            const int n = static_cast<int>(next() % 12);
            for (int i = 0; i < n; ++i) {
                // mostly byte tokens (UTF-8 lead and trail bytes), some pieces and controls
                const uint64_t r = next() % 10;
                if (r < 6) ids.push_back(3 + static_cast<int32_t>(0x80 + next() % 0x78));
                else if (r < 7) ids.push_back(3 + static_cast<int32_t>(next() % 0x80));
                else if (r < 8) ids.push_back(2);
                else ids.push_back(259 + static_cast<int32_t>(next() % 31000));
            }
            lumen::token_streamer s(tok);
            std::string all;
            for (const int32_t id : ids) all += s.push(id);
            all += s.flush();
            INFO("trial " << trial);
            CHECK(all == tok.decode(ids));
        }
    }
}

TEST_CASE("a vocabulary without byte tokens falls back to one <unk> per unknown run", "[tokenizer]") {
    lumen::vocabulary v;
    v.source = "tiny";
    const std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab",
                                             "\xE2\x96\x81" "ab", "c", "bc"};
    const std::vector<float> scores = {0, 0, 0, -1, -2, -3, -0.5f, -0.25f, -4, -0.1f};
    v.tokens = pieces;
    v.scores = scores;
    v.types.assign(pieces.size(), lumen::token_type::normal);
    v.types[0] = lumen::token_type::unknown;
    v.types[1] = v.types[2] = lumen::token_type::control;
    const lumen::tokenizer tok(v);
    // "▁abc": "bc" (-0.1) beats "ab" (-0.5), then "▁a" is not a piece: ▁ a bc
    CHECK(tok.encode("abc", false) == std::vector<int32_t>{3, 4, 9});
    CHECK(tok.encode("ab", false) == std::vector<int32_t>{7});
    // x, y, z are unknown: one <unk> for the run, then "▁" and another run.
    CHECK(tok.encode("axyz zz", false) == std::vector<int32_t>{3, 4, 0, 3, 0});
}

TEST_CASE("user-defined pieces are matched whole; unused pieces are re-segmented", "[tokenizer]") {
    lumen::vocabulary v;
    v.source = "tiny";
    v.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "ab", "<x>", "\xE2\x96\x81" "a", "x", "<", ">"};
    v.scores = {0, 0, 0, -1, -2, -3, -0.5f, 0, -0.1f, -1, -1, -1};
    v.types.assign(v.tokens.size(), lumen::token_type::normal);
    v.types[0] = lumen::token_type::unknown;
    v.types[1] = v.types[2] = lumen::token_type::control;
    v.types[6] = lumen::token_type::unused;        // "ab"
    v.types[7] = lumen::token_type::user_defined;  // "<x>"
    const lumen::tokenizer tok(v);
    // "▁a" (-0.1) first, then "▁ab" is no piece: ▁a b
    CHECK(tok.encode("ab", false) == std::vector<int32_t>{8, 5});
    // Without the prefix "ab" is merged, but it is unused, so it goes back to a + b.
    v.add_space_prefix = false;
    const lumen::tokenizer no_prefix(v);
    CHECK(no_prefix.encode("ab", false) == std::vector<int32_t>{4, 5});
    CHECK(no_prefix.encode("a<x>b", false) == std::vector<int32_t>{4, 7, 5});
    CHECK(no_prefix.encode("<x", false) == std::vector<int32_t>{10, 9});
}

TEST_CASE("bad tokenizer files throw lumen::error naming the file", "[tokenizer][errors]") {
    const std::string bin = test_util::read_file(tok512_bin);
    const auto* data = reinterpret_cast<const std::byte*>(bin.data());
    SECTION("tokenizer.bin") {
        CHECK_NOTHROW(lumen::parse_llama2c_tokenizer({data, bin.size()}, 512, "tok512.bin"));
        for (size_t cut : {size_t{0}, size_t{3}, size_t{4}, size_t{100}, bin.size() - 1}) {
            INFO("truncated to " << cut);
            CHECK_THROWS_WITH(lumen::parse_llama2c_tokenizer({data, cut}, 512, "tok512.bin"),
                              Contains("tok512.bin") && Contains("truncated"));
        }
        CHECK_THROWS_WITH(lumen::parse_llama2c_tokenizer({data, bin.size()}, 511, "tok512.bin"),
                          Contains("does not match"));
        CHECK_THROWS_WITH(lumen::parse_llama2c_tokenizer({data, bin.size()}, 513, "tok512.bin"), Contains("truncated"));
        std::string bad = bin;
        bad[4 + 4] = '\xFF', bad[4 + 5] = '\xFF', bad[4 + 6] = '\xFF', bad[4 + 7] = '\xFF';  // length -1
        CHECK_THROWS_WITH(lumen::parse_llama2c_tokenizer({reinterpret_cast<const std::byte*>(bad.data()), bad.size()}, 512, "x.bin"),
                          Contains("negative length"));
        const std::string path = std::string(LUMEN_TEST_TMP) + "/truncated_tokenizer.bin";
        std::ofstream(path, std::ios::binary).write(bin.data(), 1000);
        CHECK_THROWS_WITH(lumen::read_llama2c_tokenizer(path, 512), Contains(path));
        CHECK_THROWS_WITH(lumen::read_llama2c_tokenizer(realdata + "/nope.bin", 512), Contains("nope.bin"));
    }
    SECTION("tokenizer.model") {
        const std::string model = test_util::read_file(tok512_model);
        CHECK_NOTHROW(lumen::parse_sentencepiece_model(model, "tok512.model"));
        for (size_t cut : {size_t{1}, size_t{10}, size_t{1000}, model.size() - 1}) {
            INFO("truncated to " << cut);
            CHECK_THROWS_AS(lumen::parse_sentencepiece_model(std::string_view(model).substr(0, cut), "tok512.model"),
                            lumen::error);
        }
        uint64_t state = 7;
        for (int trial = 0; trial < 200; ++trial) {
            std::string garbage(1 + trial * 7, '\0');
            for (char& c : garbage) c = static_cast<char>((state = state * 6364136223846793005ull + 1442695040888963407ull) >> 56);
            CHECK_THROWS_WITH(lumen::parse_sentencepiece_model(garbage, "garbage.model"), Contains("garbage.model"));
        }
        // Flipping bytes of a real model either still parses or throws lumen::error; never crashes.
        for (size_t at = 0; at < model.size(); at += 37) {
            std::string flipped = model;
            flipped[at] = static_cast<char>(flipped[at] ^ 0x5A);
            try {
                lumen::parse_sentencepiece_model(flipped, "flipped.model");
            } catch (const lumen::error&) {
            }
        }
        CHECK_THROWS_WITH(lumen::read_sentencepiece_model(tok512_bin), Contains("tok512.bin"));
    }
    SECTION("GGUF") {
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(realdata + "/llamacpp-vocab/ggml-vocab-gpt-2.gguf")),
                          Contains("ggml-vocab-gpt-2.gguf") && Contains("tokenizer.ggml.model") && Contains("gpt2"));
        const lumen::vocabulary v = lumen::read_sentencepiece_model(tok512_model);
        auto write = [&](const std::string& name, auto&& edit) {
            lumen::gguf_writer w;
            w.set_string("tokenizer.ggml.model", "llama");
            w.set_array("tokenizer.ggml.tokens", v.tokens);
            w.set_array("tokenizer.ggml.scores", v.scores);
            std::vector<int32_t> types;
            for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
            w.set_array("tokenizer.ggml.token_type", types);
            w.set("tokenizer.ggml.bos_token_id", uint32_t{1});
            edit(w);
            const std::string path = std::string(LUMEN_TEST_TMP) + "/" + name;
            w.write(path);
            return path;
        };
        const std::string good = write("tok_good.gguf", [](lumen::gguf_writer&) {});
        const lumen::tokenizer from_gguf(lumen::vocabulary_from_gguf(lumen::gguf_file::open(good)));
        const lumen::tokenizer from_model(v);
        CHECK(from_gguf.encode("Lily and Ben", true) == from_model.encode("Lily and Ben", true));
        const std::string wrong = write("tok_wrong_model.gguf", [](lumen::gguf_writer& w) { w.set_string("tokenizer.ggml.model", "bert"); });
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(wrong)),
                          Contains(wrong) && Contains("tokenizer.ggml.model") && Contains("bert"));
        const std::string short_types = write("tok_short_types.gguf", [](lumen::gguf_writer& w) {
            w.set_array("tokenizer.ggml.token_type", std::vector<int32_t>(10, 1));
        });
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(short_types)),
                          Contains(short_types) && Contains("tokenizer.ggml.token_type") && Contains("512"));
        const std::string bad_bos = write("tok_bad_bos.gguf", [](lumen::gguf_writer& w) { w.set("tokenizer.ggml.bos_token_id", uint32_t{512}); });
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(bad_bos)),
                          Contains(bad_bos) && Contains("tokenizer.ggml.bos_token_id") && Contains("512"));
        const std::string bad_type = write("tok_bad_type.gguf", [](lumen::gguf_writer& w) {
            w.set_array("tokenizer.ggml.token_type", std::vector<int32_t>(512, 9));
        });
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(bad_type)), Contains("type 9"));
        lumen::gguf_writer no_tokenizer;
        no_tokenizer.set_string("general.architecture", "llama");
        const std::string no_model = std::string(LUMEN_TEST_TMP) + "/tok_no_model.gguf";
        no_tokenizer.write(no_model);
        CHECK_THROWS_WITH(lumen::vocabulary_from_gguf(lumen::gguf_file::open(no_model)),
                          Contains(no_model) && Contains("tokenizer.ggml.model"));
    }
    SECTION("vocabulary") {
        lumen::vocabulary v = lumen::read_sentencepiece_model(tok512_model);
        v.scores.pop_back();
        CHECK_THROWS_WITH(lumen::tokenizer(v), Contains("tok512.model") && Contains("scores"));
        v = lumen::read_sentencepiece_model(tok512_model);
        v.tokens[5] = "<0xZZ>";
        CHECK_THROWS_WITH(lumen::tokenizer(v), Contains("<0xZZ>"));
    }
}
