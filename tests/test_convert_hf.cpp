// test_convert_hf.cpp: `lumen convert` from Hugging Face folders. Random Llama/Mistral checkpoints in
// Hugging Face layout (F32, F16, BF16, tied and untied, GQA/MQA, sharded), written with their logits
// by tests/oracle/hf_llama_reference.py (a plain PyTorch Hugging Face forward, rotate-half RoPE),
// are converted and run; a conversion without the Q/K permutation must fail the same bound. Then
// the safetensors reader on a real file and on every kind of broken input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <lumen/context.hpp>
#include <lumen/convert/hf_llama.hpp>
#include <lumen/model.hpp>

#include <sentencepiece_processor.h>

#include "test_util.hpp"

namespace fs = std::filesystem;

namespace {

const std::string python = "/usr/bin/python3";
const std::string tok512 = std::string(LUMEN_REALDATA) + "/stories260K/tok512.model";
const std::string llama2_tokenizer = std::string(LUMEN_REALDATA) + "/llama2c/tokenizer.model";
constexpr double tolerance = 1e-4;

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

const std::vector<std::string> variants{"llama_f32_gqa_untied", "llama_f16_tied_tokjson", "llama_bf16_mqa_sharded",
                                        "mistral_f32", "llama_f32_wide"};

// Runs the oracle once: ROOT/<variant>/ holds a checkpoint, tokens.txt and reference.bin. ctest runs
// each test case in its own process, maybe in parallel: the data goes to a private folder first and
// is then renamed into place; ROOT's name carries a hash of the script, so a changed script reruns.
const std::string& reference_root() {
    static const std::string root = [] {
        const std::string script = std::string(LUMEN_SOURCE_DIR) + "/tests/oracle/hf_llama_reference.py";
        const std::string dir = std::string(LUMEN_TEST_TMP) + "/hf-" +
                                std::to_string(std::hash<std::string>{}(test_util::read_file(script) + tok512 + llama2_tokenizer));
        if (fs::exists(dir + "/done")) return dir;
        const std::string mine = dir + ".tmp" + std::to_string(::getpid());
        fs::remove_all(mine);
        fs::create_directories(mine);
        const std::string command = python + " " + script + " " + mine + " " + tok512 + " " + llama2_tokenizer;
        if (test_util::run_command(command) != 0)
            throw std::runtime_error("the oracle failed: " + command +
                                     " (it needs /usr/bin/python3 with torch, numpy and sentencepiece)");
        write_file(mine + "/done", "");
        std::error_code ec;
        fs::rename(mine, dir, ec);  // fails when another process got there first: use its data
        fs::remove_all(mine, ec);
        return dir;
    }();
    return root;
}

std::string folder_of(const std::string& variant) { return reference_root() + "/" + variant; }

std::vector<int32_t> read_tokens(const std::string& folder) {
    std::istringstream in(test_util::read_file(folder + "/tokens.txt"));
    std::vector<int32_t> tokens;
    for (int32_t t; in >> t;) tokens.push_back(t);
    return tokens;
}

// Logits (n_tokens, n_vocab) written by the oracle.
std::vector<float> read_reference(const std::string& folder, size_t n_values) {
    const std::string bytes = test_util::read_file(folder + "/reference.bin");
    REQUIRE(bytes.size() == n_values * sizeof(float));
    std::vector<float> v(n_values);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
}

// max over positions of max |a - b| / max |b| in that row: lumen's logits for the oracle's tokens.
double max_relative_error(const std::string& gguf_path, const std::string& folder) {
    const lumen::model model = lumen::model::load(gguf_path);
    const std::vector<int32_t> tokens = read_tokens(folder);
    const int64_t n_vocab = model.config().n_vocab;
    const std::vector<float> ref = read_reference(folder, tokens.size() * static_cast<size_t>(n_vocab));
    lumen::context ctx(model, {.n_ctx = 64, .n_batch = 5, .n_threads = 2});
    const xt::xtensor<float, 2> logits = ctx.evaluate(tokens);
    double worst = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
        double diff = 0, scale = 0;
        for (int64_t i = 0; i < n_vocab; ++i) {
            const double b = ref[t * n_vocab + i];
            diff = std::max(diff, std::abs(logits(t, i) - b));
            scale = std::max(scale, std::abs(b));
        }
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

int cli_convert(const std::string& args) {
    return test_util::run_command(std::string(LUMEN_CLI) + " convert " + args + " 2>/dev/null");
}

// The variant converted by the CLI with --outtype f32 (written under a private name, then renamed
// into place, since test cases may run in parallel processes).
std::string converted(const std::string& variant) {
    const std::string out = std::string(LUMEN_TEST_TMP) + "/hf_" + variant + ".gguf";
    const std::string mine = out + "." + std::to_string(::getpid());
    if (cli_convert(folder_of(variant) + " -o " + mine) != 0)
        throw std::runtime_error("lumen convert " + folder_of(variant) + " failed");
    fs::rename(mine, out);
    return out;
}

// The message of the lumen::error that `f` throws (fails the test when it throws nothing).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const lumen::error& e) {
        return e.what();
    }
    FAIL("expected a lumen::error");
    return {};
}

// --- writing checkpoints for the error tests

struct st_entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};

std::string u64_bytes(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// A safetensors file: u64 header length, the JSON header padded to 8 bytes, the data.
std::string safetensors_bytes(const std::vector<st_entry>& entries) {
    nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
    std::string data;
    for (const st_entry& e : entries) {
        header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.bytes.size()}}};
        data += e.bytes;
    }
    std::string text = header.dump();
    text.append((8 - (8 + text.size()) % 8) % 8, ' ');
    return u64_bytes(text.size()) + text + data;
}

std::string header_file(const std::string& json_text) { return u64_bytes(json_text.size()) + json_text; }

// The entries of a safetensors file, bytes copied.
std::vector<st_entry> entries_of(const std::string& path) {
    const lumen::safetensors_file f = lumen::safetensors_file::open(path);
    std::vector<st_entry> out;
    for (const auto& t : f.tensors())
        out.push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(t.data), t.n_bytes)});
    return out;
}

// A fresh copy of the F32 variant's folder, to be broken by the caller.
std::string broken_copy(const std::string& name) {
    const std::string dir = std::string(LUMEN_TEST_TMP) + "/hf_bad/" + name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy(folder_of("llama_f32_gqa_untied"), dir, fs::copy_options::recursive);
    return dir;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(test_util::read_file(path)); }
void write_json(const std::string& path, const nlohmann::json& j) { write_file(path, j.dump(2)); }

std::string convert_error(const std::string& folder, lumen::hf_convert_options o = {}) {
    return error_of([&] {
        lumen::gguf_writer out;
        lumen::convert_hf_llama(folder, out, o);
    });
}

}  // namespace

TEST_CASE("lumen convert of Hugging Face folders gives the PyTorch Hugging Face logits", "[convert][hf][logits]") {
    for (const std::string& v : variants) {
        DYNAMIC_SECTION(v) {
            const std::string folder = folder_of(v);
            const std::string out = converted(v);
            const double err = max_relative_error(out, folder);
            std::printf("hf convert %-24s f32: max relative error %.3g\n", v.c_str(), err);
            INFO(v << ": max relative error " << err);
            CHECK(err <= tolerance);

            const lumen::gguf_file f = lumen::gguf_file::open(out);
            const nlohmann::json cfg = read_json(folder + "/config.json");
            CHECK(f.get_string("general.architecture") == "llama");
            CHECK(f.get_string("general.name") == v);
            CHECK(f.get_int("general.file_type") == 0);
            CHECK(f.get_int("llama.context_length") == 256);
            CHECK(f.get_int("llama.vocab_size") == 512);
            CHECK(f.get_int("llama.embedding_length") == cfg["hidden_size"].get<int64_t>());
            CHECK(f.get_int("llama.rope.dimension_count") ==
                  cfg["hidden_size"].get<int64_t>() / cfg["num_attention_heads"].get<int64_t>());
            CHECK(f.get_float("llama.rope.freq_base") == Approx(cfg["rope_theta"].get<double>()));
            CHECK(f.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(cfg["rms_norm_eps"].get<double>()));
            CHECK((f.find_tensor("output.weight") == nullptr) == cfg["tie_word_embeddings"].get<bool>());
            CHECK(f.get_tensor("blk.0.attn_norm.weight").type == lumen::dtype::f32);
            CHECK(f.find_bool("tokenizer.ggml.add_bos_token") == true);
        }
    }
}

TEST_CASE("F16 and BF16 checkpoints keep their exact weights with --outtype f16 / bf16", "[convert][hf][logits]") {
    for (const auto& [v, type] : {std::pair<std::string, std::string>{"llama_f16_tied_tokjson", "f16"},
                                  {"llama_bf16_mqa_sharded", "bf16"}}) {
        const std::string out = std::string(LUMEN_TEST_TMP) + "/hf_" + v + "." + type + ".gguf";
        REQUIRE(cli_convert(folder_of(v) + " -o " + out + " --outtype " + type) == 0);
        const lumen::gguf_file f = lumen::gguf_file::open(out);
        CHECK(lumen::dtype_name(f.get_tensor("blk.0.attn_q.weight").type) == (type == "f16" ? "F16" : "BF16"));
        CHECK(f.get_int("general.file_type") == (type == "f16" ? 1 : 32));
        const double err = max_relative_error(out, folder_of(v));
        std::printf("hf convert %-24s %s: max relative error %.3g\n", v.c_str(), type.c_str(), err);
        CHECK(err <= tolerance);
    }
}

TEST_CASE("quantized outtypes hold the F32 conversion's weights quantized as ggml does", "[convert][hf][logits]") {
    // Exactness of the conversion: every matrix equals quantize_row of the F32 file's matrix, and
    // vectors stay F32. The logits then differ by quantization error only (printed; bounded loosely
    // for the 6- and 8-bit types). Rows that do not fill the type's blocks fall back: Q4_K to Q8_0
    // (rows of 64 or 96), Q8_0 to F16 (mistral_f32's ffn_down rows of 72).
    struct quant_case { std::string variant, outtype; lumen::dtype type, ffn_down_type; double bound; };
    using lumen::dtype;
    for (const quant_case& qc : {quant_case{"llama_f32_gqa_untied", "q8_0", dtype::q8_0, dtype::q8_0, 0.2},
                                 {"llama_f32_gqa_untied", "q4_0", dtype::q4_0, dtype::q4_0, 10.0},
                                 {"llama_f32_gqa_untied", "q4_k", dtype::q4_k, dtype::q8_0, 0.2},
                                 {"mistral_f32", "q8_0", dtype::q8_0, dtype::f16, 0.2},
                                 {"llama_f32_wide", "q4_k", dtype::q4_k, dtype::q4_k, 10.0},
                                 {"llama_f32_wide", "q6_k", dtype::q6_k, dtype::q6_k, 0.2}}) {
        const lumen::gguf_file f32 = lumen::gguf_file::open(converted(qc.variant));
        const std::string out = std::string(LUMEN_TEST_TMP) + "/hf_" + qc.variant + "." + qc.outtype + ".gguf";
        REQUIRE(cli_convert(folder_of(qc.variant) + " -o " + out + " --outtype " + qc.outtype) == 0);
        const lumen::gguf_file q = lumen::gguf_file::open(out);
        REQUIRE(q.tensors().size() == f32.tensors().size());
        for (const lumen::tensor_view& t : f32.tensors()) {
            const lumen::tensor_view& qt = q.get_tensor(t.name);
            INFO(qc.variant << " " << qc.outtype << " " << t.name);
            CHECK(qt.ne == t.ne);
            const dtype expected = t.n_dims == 1 ? dtype::f32 : lumen::hf_matrix_type(qc.type, t.cols());
            REQUIRE(qt.type == expected);
            std::vector<std::byte> bytes(qt.n_bytes);
            for (int64_t r = 0; r < t.rows(); ++r)
                lumen::quantize_row(expected, t.data_as_f32() + r * t.cols(), bytes.data() + r * qt.bytes_per_row(), t.cols());
            CHECK(std::memcmp(bytes.data(), qt.data, qt.n_bytes) == 0);
        }
        CHECK(q.get_tensor("blk.0.ffn_down.weight").type == qc.ffn_down_type);
        const double err = max_relative_error(out, folder_of(qc.variant));
        std::printf("hf convert %-24s %s: max relative error %.3g (quantization)\n", qc.variant.c_str(),
                    qc.outtype.c_str(), err);
        CHECK(err <= qc.bound);
    }
}

TEST_CASE("without the Q/K permutation the logits miss the reference", "[convert][hf][logits]") {
    // The negative control: the comparison above can tell the two RoPE layouts apart.
    for (const std::string& v : variants) {
        DYNAMIC_SECTION(v) {
            for (const bool permute : {true, false}) {
                lumen::gguf_writer out;
                lumen::hf_convert_options options;
                options.permute_qk = permute;
                lumen::convert_hf_llama(folder_of(v), out, options);
                const std::string path = std::string(LUMEN_TEST_TMP) + "/hf_" + v + (permute ? ".api" : ".nopermute") + ".gguf";
                out.write(path);
                const double err = max_relative_error(path, folder_of(v));
                std::printf("hf convert %-24s permute_qk=%d: max relative error %.3g\n", v.c_str(), permute, err);
                if (permute) {
                    CHECK(err <= tolerance);
                    // In memory (gguf_writer) and streamed (the CLI) give the same bytes.
                    CHECK(test_util::read_file(path) == test_util::read_file(converted(v)));
                } else {
                    CHECK(err > 100 * tolerance);
                }
            }
        }
    }
}

TEST_CASE("a SentencePiece tokenizer.json gives the vocabulary and ids of tokenizer.model", "[convert][hf][tokenizer]") {
    const lumen::vocabulary from_json = lumen::read_hf_vocabulary(folder_of("llama_f16_tied_tokjson"));
    const lumen::vocabulary from_model = lumen::read_hf_vocabulary(folder_of("llama_f32_gqa_untied"));
    REQUIRE(from_json.size() == 512);
    CHECK(from_json.tokens == from_model.tokens);
    CHECK(from_json.types == from_model.types);
    CHECK(from_json.bos_id == 1);
    CHECK(from_json.eos_id == 2);
    CHECK(from_json.unk_id == 0);
    CHECK(from_json.add_space_prefix);
    // Scores come from merge ranks: not SentencePiece's numbers, but the same order.
    for (int32_t i = 259; i + 1 < 512; ++i) {
        INFO("pieces " << i << " and " << i + 1);
        CHECK((from_json.scores[i] > from_json.scores[i + 1]) == (from_model.scores[i] > from_model.scores[i + 1]));
    }
    const lumen::model a = lumen::model::load(converted("llama_f16_tied_tokjson"));
    const lumen::model b = lumen::model::load(converted("llama_f32_gqa_untied"));
    for (const char* text : {"Once upon a time, Lily saw a big red ball.", "The cat sat. \"Hi!\" said Tom",
                             "naïve café ☃ 123", ""})
        CHECK(a.tokenizer().encode(text, true) == b.tokenizer().encode(text, true));
}

TEST_CASE("Llama 2's tokenizer as tokenizer.json encodes as libsentencepiece does", "[convert][hf][tokenizer][realdata]") {
    // tokenizer.json made from Llama 2's tokenizer.model the way transformers makes it: 61249 merges,
    // and "▁▁" pieces that SentencePiece scores -1e9, so merges of spaces come last.
    const lumen::tokenizer tok(lumen::read_hf_vocabulary(reference_root() + "/tokenizer_json_2"));
    REQUIRE(tok.n_vocab() == 32000);
    sentencepiece::SentencePieceProcessor sp;
    REQUIRE(sp.Load(llama2_tokenizer).ok());
    for (const char* text : {"Hello world", "a  b   c    d", "  leading and trailing  ", "def f(x):\n    return x  # two",
                             "Привет, мир! 你好 🙂", "tabs\tand\nnewlines\n\n", "1234567890 3.14159", "\xe2\x96\x81\xe2\x96\x81x"}) {
        std::vector<int> expected;
        REQUIRE(sp.Encode(text, &expected).ok());
        INFO("text: " << text);
        CHECK(tok.encode(text, false) == std::vector<int32_t>(expected.begin(), expected.end()));
    }
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(tok.add_bos());
}

TEST_CASE("the safetensors reader reads a real file in place", "[convert][safetensors][realdata]") {
    const std::string path = std::string(LUMEN_REALDATA) + "/tiny-random-gpt2/model.safetensors";
    const lumen::safetensors_file f = lumen::safetensors_file::open(path);
    CHECK(f.tensors().size() == 64);
    CHECK(f.metadata().at("format") == "pt");
    const lumen::safetensors_tensor* t = f.find("transformer.h.0.attn.c_attn.weight");
    REQUIRE(t != nullptr);
    CHECK(t->dtype == "F32");
    CHECK(t->shape == std::vector<int64_t>{32, 96});
    CHECK(t->offset == 384);
    // The data is the file's bytes at 8 + header + offset (mapped, not copied).
    const std::string bytes = test_util::read_file(path);
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    CHECK(std::memcmp(t->data, bytes.data() + 8 + header + 384, t->n_bytes) == 0);
    const std::vector<float> values = lumen::read_safetensors_floats(*t);
    float first;
    std::memcpy(&first, bytes.data() + 8 + header + 384, 4);
    CHECK(values.size() == 32 * 96);
    CHECK(values[0] == first);
}

TEST_CASE("unsupported checkpoints are rejected by name", "[convert][hf][errors][realdata]") {
    const std::string gpt2 = std::string(LUMEN_REALDATA) + "/tiny-random-gpt2";
    std::string msg = convert_error(gpt2);
    CHECK_THAT(msg, Catch::Contains("architectures") && Catch::Contains("GPT2LMHeadModel") && Catch::Contains("config.json"));
    msg = error_of([&] { lumen::read_hf_tokenizer_json(gpt2 + "/tokenizer.json"); });
    CHECK_THAT(msg, Catch::Contains("byte-level BPE (gpt2) tokenizers are not supported yet") &&
                        Catch::Contains("tokenizer.json"));
    CHECK(cli_convert(gpt2 + " -o " + std::string(LUMEN_TEST_TMP) + "/gpt2.gguf") == 1);
}

TEST_CASE("broken safetensors files raise lumen::error naming the file and tensor", "[convert][safetensors][errors]") {
    const std::string dir = std::string(LUMEN_TEST_TMP) + "/hf_bad";
    fs::create_directories(dir);
    const std::string path = dir + "/bad.safetensors";
    const std::string f32x4(16, '\0');
    auto open_error = [&](const std::string& bytes) {
        write_file(path, bytes);
        return error_of([&] { lumen::safetensors_file::open(path); });
    };
    const std::string good = safetensors_bytes({{"a", "F32", {2, 2}, f32x4}, {"b", "F16", {3}, std::string(6, '\0')}});
    REQUIRE_NOTHROW((write_file(path, good), lumen::safetensors_file::open(path)));

    CHECK_THAT(open_error(good.substr(0, good.size() - 3)), Catch::Contains(path) && Catch::Contains("'b'") &&
                                                                Catch::Contains("past the end"));
    CHECK_THAT(open_error(good.substr(0, 5)), Catch::Contains(path) && Catch::Contains("too small"));
    CHECK_THAT(open_error(u64_bytes(1000) + "{}"), Catch::Contains(path) && Catch::Contains("header length 1000"));
    CHECK_THAT(open_error(header_file("{\"a\": {\"dtype\": \"F32\",")), Catch::Contains(path) && Catch::Contains("not valid JSON"));
    CHECK_THAT(open_error(header_file("[1, 2]")), Catch::Contains("not a JSON object"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})") + "1234"),
               Catch::Contains("'w'") && Catch::Contains("past the end"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})") + "1234"),
               Catch::Contains("'w'") && Catch::Contains("need 8"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("begin after end"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("unknown dtype 'Q4'"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("non-negative"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("too large"));
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [2]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("data_offsets"));
    // The tensors must cover the data exactly: a gap, an overlap, trailing bytes.
    CHECK_THAT(open_error(header_file(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})") + "12345678"),
               Catch::Contains("'w'") && Catch::Contains("gap or overlap"));
    CHECK_THAT(open_error(header_file(R"({"v": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                          "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})") + "12345678"),
               Catch::Contains("gap or overlap"));
    CHECK_THAT(open_error(good + "xx"), Catch::Contains(path) && Catch::Contains("trailing bytes"));

    // Parsed, but not convertible: an integer tensor read as floats.
    write_file(path, safetensors_bytes({{"ids", "I64", {2}, std::string(16, '\0')}}));
    const lumen::safetensors_file ints = lumen::safetensors_file::open(path);
    CHECK_THAT(error_of([&] { lumen::read_safetensors_floats(ints.tensors()[0]); }),
               Catch::Contains(path) && Catch::Contains("'ids'") && Catch::Contains("I64"));
}

TEST_CASE("mutated safetensors files give lumen::error or a consistent file and never crash", "[convert][safetensors][errors]") {
    const std::string path = std::string(LUMEN_TEST_TMP) + "/hf_bad/fuzz.safetensors";
    fs::create_directories(fs::path(path).parent_path());
    const std::string good = safetensors_bytes({{"a.weight", "F32", {2, 3}, std::string(24, '\x01')},
                                                {"b", "BF16", {4}, std::string(8, '\x02')},
                                                {"c", "I64", {1}, std::string(8, '\x03')}});
    std::mt19937 rng(7);
    int errors = 0, opened = 0;
    for (int i = 0; i < 3000; ++i) {
        std::string bytes = good;
        const int kind = i % 3;
        if (kind == 0) {  // overwrite a few bytes anywhere
            for (int k = 0; k < 1 + i % 4; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng() % 256);
        } else if (kind == 1) {  // a digit of the header changed (offsets, shapes, the length)
            const size_t at = rng() % (bytes.size() - 24);
            if (std::isdigit(static_cast<unsigned char>(bytes[at]))) bytes[at] = static_cast<char>('0' + rng() % 10);
            else bytes[rng() % 8] = static_cast<char>(rng() % 256);
        } else {  // truncated
            bytes.resize(rng() % bytes.size());
        }
        write_file(path, bytes);
        try {
            const lumen::safetensors_file f = lumen::safetensors_file::open(path);
            for (const auto& t : f.tensors()) REQUIRE(t.offset + t.n_bytes <= bytes.size());
            ++opened;
        } catch (const lumen::error& e) {
            REQUIRE_THAT(e.what(), Catch::Contains(path) || Catch::Contains("is empty"));
            ++errors;
        }
    }
    CHECK(errors > 1000);
    CHECK(opened > 20);
}

TEST_CASE("broken Hugging Face folders raise lumen::error naming the file, key or tensor", "[convert][hf][errors]") {
    SECTION("a missing tensor") {
        const std::string dir = broken_copy("missing_tensor");
        auto entries = entries_of(dir + "/model.safetensors");
        std::erase_if(entries, [](const st_entry& e) { return e.name == "model.layers.1.mlp.up_proj.weight"; });
        write_file(dir + "/model.safetensors", safetensors_bytes(entries));
        CHECK_THAT(convert_error(dir), Catch::Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'") &&
                                           Catch::Contains("model.safetensors"));
    }
    SECTION("a tensor of the wrong shape, an F16-sized tensor declared F32, an unexpected tensor") {
        const std::string dir = broken_copy("wrong_shape");
        auto entries = entries_of(dir + "/model.safetensors");
        for (st_entry& e : entries)
            if (e.name == "model.layers.0.self_attn.k_proj.weight") e.shape = {e.shape[1], e.shape[0]};
        write_file(dir + "/model.safetensors", safetensors_bytes(entries));
        CHECK_THAT(convert_error(dir), Catch::Contains("'model.layers.0.self_attn.k_proj.weight' has shape [64, 16]") &&
                                           Catch::Contains("expected [16, 64]"));

        entries = entries_of(folder_of("llama_f32_gqa_untied") + "/model.safetensors");
        for (st_entry& e : entries)
            if (e.name == "model.norm.weight") e.dtype = "F16";  // 64 F32 values are 256 bytes, not 128
        write_file(dir + "/model.safetensors", safetensors_bytes(entries));
        CHECK_THAT(convert_error(dir), Catch::Contains("'model.norm.weight'") && Catch::Contains("dtype F16") &&
                                           Catch::Contains("need 128"));

        entries = entries_of(folder_of("llama_f32_gqa_untied") + "/model.safetensors");
        entries.push_back({"model.layers.0.self_attn.q_proj.bias", "F32", {64}, std::string(256, '\0')});
        write_file(dir + "/model.safetensors", safetensors_bytes(entries));
        CHECK_THAT(convert_error(dir), Catch::Contains("'model.layers.0.self_attn.q_proj.bias'") &&
                                           Catch::Contains("not part of a LlamaForCausalLM"));
    }
    SECTION("config.json: architecture, rope_scaling, sliding window, bad JSON, bad values") {
        const std::string dir = broken_copy("config");
        const std::string path = dir + "/config.json";
        const nlohmann::json good = read_json(path);
        auto with = [&](const char* key, const nlohmann::json& value) {
            nlohmann::json j = good;
            j[key] = value;
            write_json(path, j);
            return convert_error(dir);
        };
        CHECK_THAT(with("architectures", {"Qwen2ForCausalLM"}), Catch::Contains("config.json: key 'architectures'") &&
                                                                    Catch::Contains("Qwen2ForCausalLM"));
        CHECK_THAT(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}),
                   Catch::Contains("config.json: key 'rope_scaling'") && Catch::Contains("linear"));
        CHECK_THAT(with("num_key_value_heads", 3), Catch::Contains("key 'num_key_value_heads'"));
        CHECK_THAT(with("hidden_size", "64"), Catch::Contains("key 'hidden_size'") && Catch::Contains("integer"));
        CHECK_THAT(with("head_dim", 16), Catch::Contains("key 'head_dim'"));
        CHECK_THAT(with("torch_dtype", "int8"), Catch::Contains("key 'torch_dtype'"));
        CHECK_THAT(with("vocab_size", 600), Catch::Contains("'model.embed_tokens.weight' has shape [512, 64]"));
        nlohmann::json mistral = good;
        mistral["architectures"] = {"MistralForCausalLM"};
        mistral["sliding_window"] = 128;
        write_json(path, mistral);
        CHECK_THAT(convert_error(dir), Catch::Contains("key 'sliding_window'") && Catch::Contains("128"));
        write_file(path, "{\"architectures\": [\"LlamaForCausalLM\"],");
        CHECK_THAT(convert_error(dir), Catch::Contains(path) && Catch::Contains("not valid JSON"));
        nlohmann::json no_hidden = good;
        no_hidden.erase("hidden_size");
        write_json(path, no_hidden);
        CHECK_THAT(convert_error(dir), Catch::Contains("missing required key 'hidden_size'"));
    }
    SECTION("shards: a shard file missing, a tensor listed in the wrong shard") {
        const std::string dir = std::string(LUMEN_TEST_TMP) + "/hf_bad/shards";
        fs::remove_all(dir);
        fs::create_directories(dir);
        fs::copy(folder_of("llama_bf16_mqa_sharded"), dir, fs::copy_options::recursive);
        const std::string index = dir + "/model.safetensors.index.json";
        nlohmann::json j = read_json(index);
        j["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors";
        write_json(index, j);
        CHECK_THAT(convert_error(dir), Catch::Contains("'model.norm.weight'") && Catch::Contains("does not hold it"));
        j["weight_map"]["model.norm.weight"] = "../outside.safetensors";
        write_json(index, j);
        CHECK_THAT(convert_error(dir), Catch::Contains("expected a file in the folder"));
        fs::remove(dir + "/model-00002-of-00003.safetensors");
        j = read_json(folder_of("llama_bf16_mqa_sharded") + "/model.safetensors.index.json");
        write_json(index, j);
        CHECK_THAT(convert_error(dir), Catch::Contains("model-00002-of-00003.safetensors") && Catch::Contains("cannot open"));
    }
    SECTION("tokenizer: none, a tokenizer.json of another kind, too many tokens") {
        const std::string dir = broken_copy("tokenizer");
        fs::remove(dir + "/tokenizer.model");
        CHECK_THAT(convert_error(dir), Catch::Contains("no tokenizer.model or tokenizer.json"));
        write_file(dir + "/tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
        CHECK_THAT(convert_error(dir), Catch::Contains("tokenizer.json") && Catch::Contains("'Unigram'"));
        write_file(dir + "/tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
        CHECK_THAT(convert_error(dir), Catch::Contains("byte-level BPE (gpt2) tokenizers are not supported yet"));
        nlohmann::json cfg = read_json(dir + "/config.json");
        cfg["vocab_size"] = 100;
        write_json(dir + "/config.json", cfg);
        lumen::hf_convert_options options;
        options.tokenizer_path = tok512;
        CHECK_THAT(convert_error(dir, options),
                   Catch::Contains("512 tokens") && Catch::Contains("vocabulary of 100"));
    }
    SECTION("the CLI prints the error and exits with status 1") {
        const std::string dir = broken_copy("cli");
        fs::remove(dir + "/model.safetensors");
        const std::string log = dir + "/stderr.txt";
        CHECK(test_util::run_command(std::string(LUMEN_CLI) + " convert " + dir + " -o " + dir + "/out.gguf 2>" + log) == 1);
        CHECK_THAT(test_util::read_file(log), Catch::Contains("lumen: error:") && Catch::Contains("model.safetensors"));
        CHECK(!fs::exists(dir + "/out.gguf"));
        CHECK(!fs::exists(dir + "/out.gguf.partial"));
    }
}
