// test_gguf.cpp: the GGUF reader and writer: every value type round-trips, tensor data comes back
// byte-exact at any alignment, and every kind of malformed file throws lumen::error naming the problem.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <lumen/gguf.hpp>
#include <lumen/gguf_writer.hpp>

using Catch::Contains;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers: a GGUF file assembled byte by byte (little-endian), and files under LUMEN_TEST_TMP.

std::string tmp_path(const std::string& name) { return std::string(LUMEN_TEST_TMP) + "/gguf_" + name + ".gguf"; }

void write_bytes(const std::string& path, const void* data, size_t size) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    REQUIRE(out.good());
}

std::vector<std::byte> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(chars.size());
    std::memcpy(out.data(), chars.data(), chars.size());
    return out;
}

// Appends little-endian values; the test machine is little-endian, as GGUF is.
class gguf_bytes {
public:
    std::vector<uint8_t> data;

    template <class T>
    gguf_bytes& put(T v) {
        const size_t at = data.size();
        data.resize(at + sizeof(T));
        std::memcpy(data.data() + at, &v, sizeof(T));
        return *this;
    }
    gguf_bytes& u8(uint8_t v) { return put(v); }
    gguf_bytes& u32(uint32_t v) { return put(v); }
    gguf_bytes& u64(uint64_t v) { return put(v); }
    gguf_bytes& str(std::string_view s) {
        u64(s.size());
        data.insert(data.end(), s.begin(), s.end());
        return *this;
    }
    gguf_bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        return u32(lumen::gguf_magic).u32(version).u64(n_tensors).u64(n_kv);
    }
    // A key with a u32 value.
    gguf_bytes& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
    gguf_bytes& tensor_info(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name).u32(static_cast<uint32_t>(ne.size()));
        for (uint64_t d : ne) u64(d);
        return u32(type).u64(offset);
    }
    gguf_bytes& pad_to(size_t alignment) {
        data.resize((data.size() + alignment - 1) / alignment * alignment, 0);
        return *this;
    }
    gguf_bytes& zeros(size_t n) {
        data.resize(data.size() + n, 0);
        return *this;
    }
    // Writes the bytes to LUMEN_TEST_TMP/gguf_<name>.gguf and returns the path.
    std::string write(const std::string& name) const {
        const std::string path = tmp_path(name);
        write_bytes(path, data.data(), data.size());
        return path;
    }
};

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> out(n);
    for (auto& b : out) b = static_cast<std::byte>(rng() & 0xFF);
    return out;
}

template <class T>
T value_of(const lumen::gguf_value& v) {
    REQUIRE(std::holds_alternative<T>(v.value));
    return std::get<T>(v.value);
}

// Checks that opening `path` throws lumen::error whose message names the file and contains `phrase`.
void require_gguf_error(const std::string& path, const std::string& phrase) {
    INFO("file " << path << ", expected an error containing \"" << phrase << "\"");
    REQUIRE_THROWS_AS(lumen::gguf_file::open(path), lumen::error);
    REQUIRE_THROWS_WITH(lumen::gguf_file::open(path), Contains(path) && Contains(phrase));
}

constexpr uint64_t absurd = uint64_t{1} << 60;
constexpr uint32_t f32_id = 0, f16_id = 1, q4_0_id = 2, q8_0_id = 8;

}  // namespace

// -------------------------------------------------------------------------------------------------
// Round trips

TEST_CASE("every metadata value type round-trips through gguf_writer and gguf_file", "[gguf]") {
    lumen::gguf_writer w;
    w.set("t.u8", uint8_t{255});
    w.set("t.i8", int8_t{-128});
    w.set("t.u16", uint16_t{65535});
    w.set("t.i16", int16_t{-32768});
    w.set("t.u32", uint32_t{4294967295u});
    w.set("t.i32", int32_t{-2147483647 - 1});
    w.set("t.f32", 3.25f);
    w.set("t.bool_true", true);
    w.set("t.bool_false", false);
    w.set("t.string", std::string("h\xC3\xA9llo \xE2\x96\x81world"));
    w.set("t.empty_string", std::string());
    w.set("t.string_with_nul", std::string("a\0b", 3));
    w.set("t.u64", uint64_t{18446744073709551615ull});
    w.set("t.i64", int64_t{std::numeric_limits<int64_t>::min()});
    w.set("t.f64", -1.0e300);
    w.set_array<uint8_t>("a.u8", {0, 1, 255});
    w.set_array<int8_t>("a.i8", {-128, 0, 127});
    w.set_array<uint16_t>("a.u16", {0, 65535});
    w.set_array<int16_t>("a.i16", {-32768, 32767});
    w.set_array<uint32_t>("a.u32", {1, 2, 4294967295u});
    w.set_array<int32_t>("a.i32", {-1, 0, 2147483647});
    w.set_array<float>("a.f32", {0.5f, -0.0f, 1e-30f, std::numeric_limits<float>::infinity()});
    w.set_array<bool>("a.bool", {true, false, true});
    w.set_array<std::string>("a.string", {"", "x", "\xE2\x96\x81the"});
    w.set_array<uint64_t>("a.u64", {0, 18446744073709551615ull});
    w.set_array<int64_t>("a.i64", {std::numeric_limits<int64_t>::min(), 7});
    w.set_array<double>("a.f64", {0.1, -2.5e-300});
    w.set_array<uint8_t>("a.empty_u8", {});
    w.set_array<std::string>("a.empty_string", {});
    // Arrays of arrays, two levels deep, with inner arrays of different element types and lengths.
    lumen::gguf_array inner_ints{lumen::gguf_type::int32, {int32_t{1}, int32_t{-2}, int32_t{3}}};
    lumen::gguf_array inner_strings{lumen::gguf_type::string, {std::string("p"), std::string("q")}};
    lumen::gguf_array inner_empty{lumen::gguf_type::float32, {}};
    w.set_array<lumen::gguf_array>("a.nested", {inner_ints, inner_strings, inner_empty});
    lumen::gguf_array level2{lumen::gguf_type::array, {lumen::gguf_value(inner_ints)}};
    w.set_array<lumen::gguf_array>("a.nested2", {level2, lumen::gguf_array{lumen::gguf_type::array, {}}});
    w.set_array<lumen::gguf_array>("a.empty_nested", {});

    const std::string path = tmp_path("roundtrip_values");
    w.write(path);
    const lumen::gguf_file f = lumen::gguf_file::open(path);

    CHECK(f.version() == 3);
    CHECK(f.tensors().empty());
    REQUIRE(f.metadata().size() == 32);
    CHECK(f.metadata()[0].first == "t.u8");  // order is kept
    CHECK(f.metadata().back().first == "a.empty_nested");

    CHECK(value_of<uint8_t>(f.get("t.u8")) == 255);
    CHECK(value_of<int8_t>(f.get("t.i8")) == -128);
    CHECK(value_of<uint16_t>(f.get("t.u16")) == 65535);
    CHECK(value_of<int16_t>(f.get("t.i16")) == -32768);
    CHECK(value_of<uint32_t>(f.get("t.u32")) == 4294967295u);
    CHECK(value_of<int32_t>(f.get("t.i32")) == -2147483647 - 1);
    CHECK(value_of<float>(f.get("t.f32")) == 3.25f);
    CHECK(f.get_bool("t.bool_true"));
    CHECK_FALSE(f.get_bool("t.bool_false"));
    CHECK(f.get_string("t.string") == "h\xC3\xA9llo \xE2\x96\x81world");
    CHECK(f.get_string("t.empty_string").empty());
    CHECK(f.get_string("t.string_with_nul") == std::string("a\0b", 3));
    CHECK(value_of<uint64_t>(f.get("t.u64")) == 18446744073709551615ull);
    CHECK(value_of<int64_t>(f.get("t.i64")) == std::numeric_limits<int64_t>::min());
    CHECK(value_of<double>(f.get("t.f64")) == -1.0e300);
    CHECK(f.get_float("t.f32") == 3.25);
    CHECK(f.get_float("t.f64") == -1.0e300);

    auto array_of = [&](const char* key, lumen::gguf_type type, size_t n) -> const lumen::gguf_array& {
        const lumen::gguf_array& a = f.get_array(key);
        INFO(key);
        CHECK(a.type == type);
        REQUIRE(a.values.size() == n);
        for (const auto& v : a.values) CHECK(v.type() == type);
        return a;
    };
    using gt = lumen::gguf_type;
    const auto& a_u8 = array_of("a.u8", gt::uint8, 3);
    CHECK(value_of<uint8_t>(a_u8.values[2]) == 255);
    CHECK(value_of<int8_t>(array_of("a.i8", gt::int8, 3).values[0]) == -128);
    CHECK(value_of<uint16_t>(array_of("a.u16", gt::uint16, 2).values[1]) == 65535);
    CHECK(value_of<int16_t>(array_of("a.i16", gt::int16, 2).values[0]) == -32768);
    CHECK(value_of<uint32_t>(array_of("a.u32", gt::uint32, 3).values[2]) == 4294967295u);
    CHECK(value_of<int32_t>(array_of("a.i32", gt::int32, 3).values[0]) == -1);
    const auto& a_f32 = array_of("a.f32", gt::float32, 4);
    CHECK(value_of<float>(a_f32.values[0]) == 0.5f);
    CHECK(std::signbit(value_of<float>(a_f32.values[1])));
    CHECK(value_of<float>(a_f32.values[2]) == 1e-30f);
    CHECK(std::isinf(value_of<float>(a_f32.values[3])));
    const auto& a_bool = array_of("a.bool", gt::boolean, 3);
    CHECK(value_of<bool>(a_bool.values[0]));
    CHECK_FALSE(value_of<bool>(a_bool.values[1]));
    const auto& a_str = array_of("a.string", gt::string, 3);
    CHECK(value_of<std::string>(a_str.values[0]).empty());
    CHECK(value_of<std::string>(a_str.values[2]) == "\xE2\x96\x81the");
    CHECK(value_of<uint64_t>(array_of("a.u64", gt::uint64, 2).values[1]) == 18446744073709551615ull);
    CHECK(value_of<int64_t>(array_of("a.i64", gt::int64, 2).values[0]) == std::numeric_limits<int64_t>::min());
    CHECK(value_of<double>(array_of("a.f64", gt::float64, 2).values[1]) == -2.5e-300);
    array_of("a.empty_u8", gt::uint8, 0);
    array_of("a.empty_string", gt::string, 0);
    array_of("a.empty_nested", gt::array, 0);

    const auto& nested = array_of("a.nested", gt::array, 3);
    const auto& n0 = value_of<lumen::gguf_array>(nested.values[0]);
    CHECK(n0.type == gt::int32);
    REQUIRE(n0.values.size() == 3);
    CHECK(value_of<int32_t>(n0.values[1]) == -2);
    const auto& n1 = value_of<lumen::gguf_array>(nested.values[1]);
    CHECK(n1.type == gt::string);
    REQUIRE(n1.values.size() == 2);
    CHECK(value_of<std::string>(n1.values[1]) == "q");
    const auto& n2 = value_of<lumen::gguf_array>(nested.values[2]);
    CHECK(n2.type == gt::float32);
    CHECK(n2.values.empty());

    const auto& nested2 = array_of("a.nested2", gt::array, 2);
    const auto& l2 = value_of<lumen::gguf_array>(nested2.values[0]);
    CHECK(l2.type == gt::array);
    REQUIRE(l2.values.size() == 1);
    const auto& l3 = value_of<lumen::gguf_array>(l2.values[0]);
    REQUIRE(l3.values.size() == 3);
    CHECK(value_of<int32_t>(l3.values[2]) == 3);
    CHECK(value_of<lumen::gguf_array>(nested2.values[1]).values.empty());

    // The same bytes parsed from memory give the same metadata.
    const lumen::gguf_file m =
        lumen::gguf_file::from_bytes("in-memory", lumen::detail::byte_source::from_buffer(read_bytes(path)));
    CHECK(m.path() == "in-memory");
    CHECK(m.metadata().size() == 32);
    CHECK(m.get_string("t.string") == f.get_string("t.string"));
}

TEST_CASE("integer keys stored as u32, u64 and other integer types are all readable with get_int", "[gguf]") {
    lumen::gguf_writer w;
    w.set("k.u32", uint32_t{4000000000u});
    w.set("k.u64", uint64_t{5000000000ull});
    w.set("k.i32", int32_t{-7});
    w.set("k.u8", uint8_t{200});
    w.set("k.i64", int64_t{-9000000000ll});
    w.set("k.u64_huge", uint64_t{18446744073709551615ull});
    w.set("k.float", 2.5f);
    const std::string path = tmp_path("int_keys");
    w.write(path);
    const lumen::gguf_file f = lumen::gguf_file::open(path);

    CHECK(f.get("k.u32").type() == lumen::gguf_type::uint32);
    CHECK(f.get("k.u64").type() == lumen::gguf_type::uint64);
    CHECK(f.get_int("k.u32") == 4000000000ll);
    CHECK(f.get_int("k.u64") == 5000000000ll);
    CHECK(f.get_int("k.i32") == -7);
    CHECK(f.get_int("k.u8") == 200);
    CHECK(f.get_int("k.i64") == -9000000000ll);
    CHECK(f.find_int("k.u64") == 5000000000ll);
    CHECK_FALSE(f.find_int("k.absent").has_value());
    CHECK(f.get_int("k.u32", 1, 4000000000ll) == 4000000000ll);
    // Integers are accepted where a float is expected (some writers store e.g. a rope base as int).
    CHECK(f.get_float("k.u64") == 5000000000.0);

    REQUIRE_THROWS_AS(f.get_int("k.u64_huge"), lumen::error);
    REQUIRE_THROWS_WITH(f.get_int("k.u64_huge"), Contains("k.u64_huge") && Contains("too large"));
    REQUIRE_THROWS_WITH(f.get_int("k.u32", 1, 100), Contains(path) && Contains("k.u32") && Contains("outside [1, 100]"));
    REQUIRE_THROWS_WITH(f.get_int("k.i32", 0, 10), Contains("k.i32") && Contains("-7"));
    REQUIRE_THROWS_WITH(f.get_int("k.float"), Contains("k.float") && Contains("expected an integer") && Contains("f32"));
}

TEST_CASE("find and get: missing keys, wrong types and missing tensors are named errors", "[gguf]") {
    lumen::gguf_writer w;
    w.set("general.architecture", std::string("llama"));
    w.set("k.int", uint32_t{3});
    w.set("k.u8", uint8_t{1});
    w.set_array<int32_t>("k.array", {1, 2});
    const std::vector<float> values{1, 2, 3};
    w.add_tensor_f32("present", {3}, values);
    const std::string path = tmp_path("find_get");
    w.write(path);
    const lumen::gguf_file f = lumen::gguf_file::open(path);

    CHECK(f.find("k.missing") == nullptr);
    CHECK(f.find("k.int") != nullptr);
    CHECK_FALSE(f.find_string("k.missing").has_value());
    CHECK_FALSE(f.find_float("k.missing").has_value());
    CHECK_FALSE(f.find_bool("k.missing").has_value());
    CHECK(f.find_string("general.architecture") == std::string("llama"));

    REQUIRE_THROWS_AS(f.get("k.missing"), lumen::error);
    REQUIRE_THROWS_WITH(f.get("k.missing"), Contains(path) && Contains("missing required key 'k.missing'"));
    REQUIRE_THROWS_WITH(f.get_string("k.missing"), Contains("k.missing"));
    REQUIRE_THROWS_WITH(f.get_string("k.int"), Contains(path) && Contains("'k.int'") && Contains("expected a string") && Contains("u32"));
    REQUIRE_THROWS_WITH(f.get_int("general.architecture"), Contains("general.architecture") && Contains("expected an integer") && Contains("string"));
    REQUIRE_THROWS_WITH(f.get_float("general.architecture"), Contains("general.architecture") && Contains("expected a float"));
    REQUIRE_THROWS_WITH(f.get_bool("k.u8"), Contains("k.u8") && Contains("expected a bool") && Contains("u8"));
    REQUIRE_THROWS_WITH(f.get_array("k.int"), Contains("k.int") && Contains("expected an array"));
    REQUIRE_THROWS_WITH(f.find_string("k.int"), Contains("k.int") && Contains("expected a string"));
    REQUIRE_THROWS_WITH(f.get_int("k.array"), Contains("k.array") && Contains("array"));

    CHECK(f.find_tensor("absent") == nullptr);
    REQUIRE(f.find_tensor("present") != nullptr);
    CHECK(&f.get_tensor("present") == f.find_tensor("present"));
    REQUIRE_THROWS_AS(f.get_tensor("absent"), lumen::error);
    REQUIRE_THROWS_WITH(f.get_tensor("absent"), Contains(path) && Contains("missing tensor 'absent'"));
}

TEST_CASE("tensor data reads back byte-exact for F32, F16, Q8_0 and Q4_0 at alignments 32, 64 and 1024", "[gguf]") {
    struct spec {
        std::string name;
        lumen::dtype type;
        std::vector<int64_t> ne;
        size_t n_bytes;
    };
    const std::vector<spec> specs{
        {"f32.vector", lumen::dtype::f32, {7}, 7 * 4},
        {"f32.matrix", lumen::dtype::f32, {5, 3}, 15 * 4},
        {"f16.3d", lumen::dtype::f16, {9, 4, 2}, 72 * 2},
        {"q8_0.matrix", lumen::dtype::q8_0, {64, 3}, 2 * 3 * 34},
        {"q4_0.4d", lumen::dtype::q4_0, {32, 2, 3, 2}, 12 * 18},
        {"q4_0.wide", lumen::dtype::q4_0, {96, 1}, 3 * 18},
        {"f16.one", lumen::dtype::f16, {1}, 2},
    };
    for (uint32_t alignment : {0u, 64u, 1024u}) {  // 0: no key, the default of 32
        DYNAMIC_SECTION("alignment " << alignment) {
            lumen::gguf_writer w;
            w.set("general.name", std::string("tensors"));
            if (alignment) w.set("general.alignment", alignment);
            std::vector<std::vector<std::byte>> contents;
            for (size_t i = 0; i < specs.size(); ++i) {
                contents.push_back(random_bytes(specs[i].n_bytes, static_cast<uint32_t>(i + 1)));
                w.add_tensor(specs[i].name, specs[i].type, specs[i].ne, contents.back());
            }
            const std::string path = tmp_path("tensors_align_" + std::to_string(alignment));
            w.write(path);
            const std::vector<std::byte> file_bytes = read_bytes(path);
            const lumen::gguf_file f = lumen::gguf_file::open(path);
            const uint32_t expected_alignment = alignment ? alignment : 32;

            CHECK(f.alignment() == expected_alignment);
            CHECK(f.data_offset() % expected_alignment == 0);
            CHECK(f.file_size() == file_bytes.size());
            REQUIRE(f.tensors().size() == specs.size());
            const std::byte* first = f.tensors()[0].data;
            // The first tensor sits at the start of the data section.
            REQUIRE(f.data_offset() + specs[0].n_bytes <= file_bytes.size());
            CHECK(std::memcmp(file_bytes.data() + f.data_offset(), contents[0].data(), specs[0].n_bytes) == 0);
            for (size_t i = 0; i < specs.size(); ++i) {
                const lumen::tensor_view& t = f.tensors()[i];
                INFO("tensor " << specs[i].name);
                CHECK(t.name == specs[i].name);
                CHECK(t.type == specs[i].type);
                CHECK(t.n_dims == specs[i].ne.size());
                for (size_t d = 0; d < 4; ++d) CHECK(t.ne[d] == (d < specs[i].ne.size() ? specs[i].ne[d] : 1));
                CHECK(t.n_bytes == specs[i].n_bytes);
                CHECK(t.cols() == specs[i].ne[0]);
                CHECK(t.rows() * t.bytes_per_row() == static_cast<int64_t>(specs[i].n_bytes));
                CHECK((t.data - first) % expected_alignment == 0);
                CHECK(std::memcmp(t.data, contents[i].data(), specs[i].n_bytes) == 0);
                CHECK(f.find_tensor(specs[i].name) == &t);
            }
        }
    }
}

TEST_CASE("a hand-written GGUF file (v2 and v3, alignment 64) is read with the right offsets", "[gguf]") {
    for (uint32_t version : {2u, 3u}) {
        gguf_bytes b;
        b.header(2, 2, version).kv_u32("general.alignment", 64);
        b.str("general.architecture").u32(8).str("test");
        b.tensor_info("a", {3}, f32_id, 0);
        b.tensor_info("b", {2, 2}, f32_id, 64);
        b.pad_to(64);
        const size_t data_start = b.data.size();
        for (float v : {1.0f, 2.0f, 3.0f}) b.put(v);
        b.pad_to(64);
        for (float v : {-1.0f, -2.0f, -3.0f, -4.0f}) b.put(v);
        const std::string path = b.write("handwritten_v" + std::to_string(version));

        const lumen::gguf_file f = lumen::gguf_file::open(path);
        CHECK(f.version() == version);
        CHECK(f.alignment() == 64);
        CHECK(f.data_offset() == data_start);
        CHECK(f.get_string("general.architecture") == "test");
        const lumen::tensor_view& a = f.get_tensor("a");
        const lumen::tensor_view& m = f.get_tensor("b");
        CHECK(m.data - a.data == 64);
        CHECK(a.data_as_f32()[2] == 3.0f);
        CHECK(m.rows() == 2);
        CHECK(m.cols() == 2);
        CHECK(m.data_as_f32()[0] == -1.0f);
        CHECK(m.data_as_f32()[3] == -4.0f);
    }
}

// -------------------------------------------------------------------------------------------------
// Malformed files: each throws lumen::error naming the file and the problem.

TEST_CASE("an empty file, a missing file and a directory are named errors", "[gguf][errors]") {
    const std::string empty = gguf_bytes{}.write("empty");
    require_gguf_error(empty, "empty");
    const std::string missing = tmp_path("does_not_exist");
    std::filesystem::remove(missing);
    require_gguf_error(missing, "cannot open");
    const std::string dir = std::string(LUMEN_TEST_TMP) + "/gguf_a_directory.gguf";
    std::filesystem::create_directories(dir);
    require_gguf_error(dir, "directory");
}

TEST_CASE("wrong magic and unknown versions are named errors", "[gguf][errors]") {
    require_gguf_error(gguf_bytes{}.u32(0x46554746).u32(3).u64(0).u64(0).write("bad_magic"), "not a GGUF file");
    require_gguf_error(gguf_bytes{}.str("hello, this is text").write("text_file"), "not a GGUF file");
    require_gguf_error(gguf_bytes{}.u8('G').u8('G').write("three_bytes"), "too small");
    require_gguf_error(gguf_bytes{}.header(0, 0, 1).write("version_1"), "unsupported GGUF version 1");
    require_gguf_error(gguf_bytes{}.header(0, 0, 1).write("version_1b"), "obsolete");
    require_gguf_error(gguf_bytes{}.header(0, 0, 4).write("version_4"), "unsupported GGUF version 4");
    require_gguf_error(gguf_bytes{}.header(0, 0, 0).write("version_0"), "unsupported GGUF version 0");
    // Version 3 written big-endian reads as 0x03000000 little-endian.
    const std::string big_endian = gguf_bytes{}.header(0, 0, 0x03000000u).write("big_endian");
    require_gguf_error(big_endian, "unsupported GGUF version");
    require_gguf_error(big_endian, "big-endian");
}

TEST_CASE("a valid file cut at every length before its end throws, never crashes", "[gguf][errors]") {
    lumen::gguf_writer w;
    w.set("general.architecture", std::string("llama"));
    w.set("k.u8", uint8_t{1});
    w.set("k.bool", true);
    w.set("k.u64", uint64_t{7});
    w.set("k.f64", 0.5);
    w.set_array<std::string>("k.strings", {"a", "bc", ""});
    w.set_array<float>("k.floats", {1, 2});
    w.set_array<lumen::gguf_array>("k.nested", {lumen::gguf_array{lumen::gguf_type::int16, {int16_t{1}}}});
    w.add_tensor("t.f32", lumen::dtype::f32, {3, 2}, random_bytes(24, 1));
    w.add_tensor("t.q8_0", lumen::dtype::q8_0, {32}, random_bytes(34, 2));
    const std::vector<std::byte> full = w.to_bytes();
    const std::string whole_path = tmp_path("truncation_whole");
    write_bytes(whole_path, full.data(), full.size());
    const lumen::gguf_file whole = lumen::gguf_file::open(whole_path);
    const lumen::tensor_view& last = whole.get_tensor("t.q8_0");
    // The last byte of tensor data; the writer's padding after it is not needed.
    const size_t data_end = static_cast<size_t>(whole.data_offset() + (last.data - whole.tensors()[0].data) + last.n_bytes);
    REQUIRE(data_end <= full.size());
    REQUIRE(whole.data_offset() > 100);

    const std::string path = tmp_path("truncated");
    for (size_t len = 0; len < data_end; ++len) {
        INFO("cut at " << len << " of " << data_end << " bytes");
        write_bytes(path, full.data(), len);
        const std::string expected = len == 0 ? "empty" : len < 4 ? "too small" : "truncated";
        REQUIRE_THROWS_AS(lumen::gguf_file::open(path), lumen::error);
        REQUIRE_THROWS_WITH(lumen::gguf_file::open(path), Contains(path) && Contains(expected));
        // The in-memory path checks the same bounds.
        std::vector<std::byte> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
        REQUIRE_THROWS_AS(lumen::gguf_file::from_bytes("prefix", lumen::detail::byte_source::from_buffer(prefix)),
                          lumen::error);
    }
    write_bytes(path, full.data(), data_end);
    CHECK_NOTHROW(lumen::gguf_file::open(path));
}

TEST_CASE("truncated tensor data and offsets past the end of the file name the tensor", "[gguf][errors]") {
    // One F32 tensor of 64 floats whose data stops short by one byte.
    gguf_bytes cut;
    cut.header(1, 0).tensor_info("weights.cut", {64}, f32_id, 0).pad_to(32).zeros(64 * 4 - 1);
    const std::string cut_path = cut.write("cut_data");
    require_gguf_error(cut_path, "'weights.cut'");
    require_gguf_error(cut_path, "runs past the end");

    gguf_bytes far;
    far.header(1, 0).tensor_info("weights.far", {4}, f32_id, uint64_t{1} << 40).pad_to(32).zeros(16);
    require_gguf_error(far.write("offset_past_end"), "'weights.far'");

    // An offset so large that offset + size wraps around 2^64.
    gguf_bytes wrap;
    wrap.header(1, 0).tensor_info("weights.wrap", {8}, f32_id, ~uint64_t{31}).pad_to(32).zeros(32);
    require_gguf_error(wrap.write("offset_wraps"), "'weights.wrap'");

    // The second of two tensors overlaps the end.
    gguf_bytes second;
    second.header(2, 0).tensor_info("ok", {8}, f32_id, 0).tensor_info("late", {16}, f32_id, 32).pad_to(32).zeros(32 + 60);
    require_gguf_error(second.write("second_cut"), "'late'");
}

TEST_CASE("absurd dimensions, counts and lengths throw at once, without huge allocations", "[gguf][errors]") {
    gguf_bytes dims;
    dims.header(1, 0).tensor_info("huge", {uint64_t{1} << 62, uint64_t{1} << 62}, f32_id, 0).pad_to(32);
    require_gguf_error(dims.write("dims_overflow"), "'huge'");
    require_gguf_error(tmp_path("dims_overflow"), "absurd dimension");

    gguf_bytes bytes_overflow;  // 2^62 F32 elements = 2^64 bytes
    bytes_overflow.header(1, 0).tensor_info("too_many_bytes", {uint64_t{1} << 62}, f32_id, 0).pad_to(32);
    require_gguf_error(bytes_overflow.write("bytes_overflow"), "'too_many_bytes'");

    gguf_bytes big;  // no overflow, but far more than the file holds
    big.header(1, 0).tensor_info("big", {uint64_t{1} << 20, uint64_t{1} << 20}, f16_id, 0).pad_to(32).zeros(64);
    require_gguf_error(big.write("big_tensor"), "runs past the end");

    gguf_bytes zero_dim;
    zero_dim.header(1, 0).tensor_info("empty_dim", {4, 0}, f32_id, 0).pad_to(32);
    require_gguf_error(zero_dim.write("zero_dim"), "'empty_dim'");

    require_gguf_error(gguf_bytes{}.header(absurd, 0).zeros(64).write("tensor_count"), "tensor count");
    require_gguf_error(gguf_bytes{}.header(0, absurd).zeros(64).write("kv_count"), "metadata count");

    gguf_bytes array_count;
    array_count.header(0, 1).str("k.array").u32(9).u32(4).u64(absurd).zeros(64);
    require_gguf_error(array_count.write("array_count"), "'k.array'");
    require_gguf_error(tmp_path("array_count"), "does not fit");

    gguf_bytes string_array_count;
    string_array_count.header(0, 1).str("k.strings").u32(9).u32(8).u64(absurd).zeros(64);
    require_gguf_error(string_array_count.write("string_array_count"), "'k.strings'");

    gguf_bytes nested_array_count;
    nested_array_count.header(0, 1).str("k.nested").u32(9).u32(9).u64(1).u32(0).u64(absurd).zeros(64);
    require_gguf_error(nested_array_count.write("nested_array_count"), "'k.nested'");

    gguf_bytes value_length;
    value_length.header(0, 1).str("k.string").u32(8).u64(absurd).zeros(64);
    require_gguf_error(value_length.write("string_length"), "'k.string'");
    require_gguf_error(tmp_path("string_length"), "truncated");

    gguf_bytes key_length;
    key_length.header(0, 1).u64(absurd).zeros(64);
    require_gguf_error(key_length.write("key_length"), "metadata key");

    gguf_bytes name_length;
    name_length.header(1, 0).u64(absurd).zeros(64);
    require_gguf_error(name_length.write("tensor_name_length"), "name of tensor");

    gguf_bytes string_in_array;
    string_in_array.header(0, 1).str("k.strs").u32(9).u32(8).u64(2).str("ok").u64(absurd).zeros(64);
    require_gguf_error(string_in_array.write("string_in_array_length"), "'k.strs'");
}

TEST_CASE("unknown and unsupported tensor types, bad dimension counts and bad rows are named", "[gguf][errors]") {
    gguf_bytes unknown;
    unknown.header(1, 0).tensor_info("odd_type", {32}, 99, 0).pad_to(32).zeros(128);
    require_gguf_error(unknown.write("type_99"), "'odd_type'");
    require_gguf_error(tmp_path("type_99"), "unknown tensor type 99");

    gguf_bytes q5_k;  // a known ggml type that lumen does not compute with
    q5_k.header(1, 0).tensor_info("k_quant", {256}, 13, 0).pad_to(32).zeros(176);
    require_gguf_error(q5_k.write("type_q5_k"), "'k_quant'");
    require_gguf_error(tmp_path("type_q5_k"), "Q5_K");

    for (uint32_t n_dims : {0u, 5u}) {
        gguf_bytes b;
        b.header(1, 0).str("bad_dims").u32(n_dims);
        for (uint32_t d = 0; d < n_dims; ++d) b.u64(2);
        b.u32(f32_id).u64(0).pad_to(32).zeros(256);
        const std::string path = b.write("n_dims_" + std::to_string(n_dims));
        require_gguf_error(path, "'bad_dims'");
        require_gguf_error(path, std::to_string(n_dims) + " dimensions");
    }

    gguf_bytes partial_block;  // a Q8_0 row must hold whole blocks of 32
    partial_block.header(1, 0).tensor_info("q8_row", {33, 2}, q8_0_id, 0).pad_to(32).zeros(256);
    require_gguf_error(partial_block.write("partial_block"), "'q8_row'");
    require_gguf_error(tmp_path("partial_block"), "block size");

    gguf_bytes q4_partial;
    q4_partial.header(1, 0).tensor_info("q4_row", {16}, q4_0_id, 0).pad_to(32).zeros(64);
    require_gguf_error(q4_partial.write("q4_partial_block"), "'q4_row'");
}

TEST_CASE("misaligned offsets and bad alignments are named errors", "[gguf][errors]") {
    gguf_bytes misaligned;
    misaligned.header(1, 0).tensor_info("shifted", {4}, f32_id, 4).pad_to(32).zeros(64);
    require_gguf_error(misaligned.write("misaligned"), "'shifted'");
    require_gguf_error(tmp_path("misaligned"), "not a multiple of the alignment");

    gguf_bytes misaligned64;  // aligned to 32 but not to the declared 64
    misaligned64.header(1, 1).kv_u32("general.alignment", 64).tensor_info("shifted64", {4}, f32_id, 32).pad_to(64).zeros(128);
    require_gguf_error(misaligned64.write("misaligned_64"), "'shifted64'");

    for (uint32_t alignment : {0u, 48u, 3u}) {
        gguf_bytes b;
        b.header(0, 1).kv_u32("general.alignment", alignment);
        require_gguf_error(b.write("alignment_" + std::to_string(alignment)), "general.alignment");
    }
    gguf_bytes string_alignment;
    string_alignment.header(0, 1).str("general.alignment").u32(8).str("32");
    require_gguf_error(string_alignment.write("alignment_string"), "general.alignment");
}

TEST_CASE("duplicate keys, duplicate tensors, bad bools and unknown value types are named", "[gguf][errors]") {
    gguf_bytes dup_key;
    dup_key.header(0, 2).kv_u32("k.twice", 1).kv_u32("k.twice", 2);
    require_gguf_error(dup_key.write("duplicate_key"), "duplicate key 'k.twice'");

    gguf_bytes dup_tensor;
    dup_tensor.header(2, 0).tensor_info("w", {8}, f32_id, 0).tensor_info("w", {8}, f32_id, 32).pad_to(32).zeros(64);
    require_gguf_error(dup_tensor.write("duplicate_tensor"), "duplicate tensor 'w'");

    gguf_bytes bad_bool;
    bad_bool.header(0, 1).str("k.flag").u32(7).u8(2);
    require_gguf_error(bad_bool.write("bool_2"), "'k.flag'");
    require_gguf_error(tmp_path("bool_2"), "bool value 2");

    gguf_bytes bad_bool_in_array;
    bad_bool_in_array.header(0, 1).str("k.flags").u32(9).u32(7).u64(3).u8(1).u8(0).u8(255);
    require_gguf_error(bad_bool_in_array.write("bool_255_in_array"), "'k.flags'");

    gguf_bytes bad_type;
    bad_type.header(0, 1).str("k.strange").u32(13).u32(0);
    require_gguf_error(bad_type.write("value_type_13"), "'k.strange'");
    require_gguf_error(tmp_path("value_type_13"), "unknown value type 13");

    gguf_bytes bad_element_type;
    bad_element_type.header(0, 1).str("k.strange_array").u32(9).u32(100).u64(1).u32(0);
    require_gguf_error(bad_element_type.write("element_type_100"), "'k.strange_array'");

    gguf_bytes deep;  // arrays nested far deeper than any real file
    deep.header(0, 1).str("k.deep");
    deep.u32(9);
    for (int level = 0; level < 64; ++level) deep.u32(9).u64(1);
    deep.u32(0).u64(0);
    require_gguf_error(deep.write("deep_nesting"), "'k.deep'");
}

TEST_CASE("release_file_pages drops the pages of a mapped file (its bytes read back unchanged) and nothing else", "[gguf]") {
    const size_t n = 256 * 1024;  // 64 pages of 4 KiB
    std::vector<std::byte> bytes(n);
    for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 131 + 7) % 251);
    const std::string path = tmp_path("release_pages");
    write_bytes(path, bytes.data(), n);
    const std::byte* old_data = nullptr;
    {
        const lumen::detail::byte_source mapped = lumen::detail::byte_source::map_file(path);
        REQUIRE(mapped.size() == n);
        REQUIRE(std::memcmp(mapped.data(), bytes.data(), n) == 0);  // all pages in
        // only whole pages inside the range go: [1000, n - 1000) holds 62 of them
        CHECK(lumen::detail::release_file_pages(mapped.data() + 1000, n - 2000) > 0);
        CHECK(lumen::detail::release_file_pages(mapped.data() + 1000, 2000) == 0);  // no whole page
        CHECK(std::memcmp(mapped.data(), bytes.data(), n) == 0);                   // read again from the file
        CHECK(lumen::detail::release_file_pages(mapped.data() + n - 8192, 16384) == 0);  // runs past the mapping
        old_data = mapped.data();
    }
    CHECK(lumen::detail::release_file_pages(old_data, n) == 0);  // unmapped: no longer a file mapping

    // memory that is not a file mapping keeps its pages (releasing them would zero it)
    const lumen::detail::byte_source buffer = lumen::detail::byte_source::from_buffer(bytes);
    CHECK(lumen::detail::release_file_pages(buffer.data(), n) == 0);
    CHECK(std::memcmp(buffer.data(), bytes.data(), n) == 0);
    std::vector<std::byte> heap(bytes);
    CHECK(lumen::detail::release_file_pages(heap.data(), n) == 0);
    CHECK(heap == bytes);
}
