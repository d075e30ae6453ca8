// test_cli_bench.cpp: `lumen bench` as a user runs it: a random-weight model of a named shape, the
// llama-bench-like rows (csv and markdown), the read bandwidth next to generation, and bad options.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

const std::string cli = std::string(LUMEN_CLI);
const std::string tmp = std::string(LUMEN_TEST_TMP);

std::vector<std::string> split(const std::string& line, char sep) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, sep);) fields.push_back(f);
    return fields;
}

// Runs `lumen bench ARGS` with $TMPDIR = dir (a directory of the test case's own: ctest runs the
// cases in parallel); returns the exit status, stdout in out, stderr in dir/err.txt.
int bench(const std::string& dir, const std::string& args, std::string& out) {
    std::filesystem::create_directories(dir);
    const int rc = test_util::run_command("TMPDIR=" + dir + " " + cli + " bench " + args + " > " + dir + "/out.txt 2> " + dir + "/err.txt");
    out = test_util::read_file(dir + "/out.txt");
    return rc;
}

bool bench_models_left(const std::string& dir) {
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().filename().string().rfind("lumen-bench-", 0) == 0) return true;
    return false;
}

}  // namespace

TEST_CASE("lumen bench times pp and tg on a random model of a named shape and compares tg with the read bandwidth", "[cli][bench]") {
    const std::string dir = tmp + "/bench_csv";
    std::string out;
    REQUIRE(bench(dir, "--shape stories15M --type q8_0 -p 16 -n 8 -t 2 -r 2 --bandwidth-mib 64 --bandwidth-passes 2 --idle-wait 0 -o csv", out) == 0);
    CHECK_THAT(out, Catch::Contains("memory read bandwidth:"));
    CHECK_THAT(out, Catch::Contains("weights read per generated token:"));
    CHECK_FALSE(bench_models_left(dir));  // the temporary model is removed without --keep

    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> header;
    std::stringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("model,", 0) == 0) header = split(line, ',');
        if (line.rfind("stories15M shape,", 0) == 0) rows.push_back(split(line, ','));
    }
    REQUIRE(header.size() == 14);
    CHECK(header[6] == "test");
    CHECK(header[12] == "other_cpus");
    CHECK(header[13] == "bw_fraction");
    REQUIRE(rows.size() == 2);
    for (const auto& r : rows) {
        REQUIRE(r.size() == header.size());
        CHECK(r[1] == "Q8_0");
        CHECK(r[5] == "2");                          // threads
        CHECK(std::stod(r[7]) > 0);                  // t/s mean
        CHECK(std::stod(r[9]) > 0);                  // median
        CHECK(std::stoll(r[2]) > 20'000'000);        // the file's weight bytes (stories15M in Q8_0: ~26 MB)
    }
    CHECK(rows[0][6] == "pp16");
    CHECK(std::stod(rows[0][10]) == 0);  // no bandwidth figures for prompts
    CHECK(rows[1][6] == "tg8");
    const double tg_gbps = std::stod(rows[1][10]), read_gbps = std::stod(rows[1][11]), fraction = std::stod(rows[1][13]);
    CHECK(tg_gbps > 0);
    CHECK(read_gbps > 0);
    // the median of per-repetition ratios: close to, not exactly, the ratio of the medians
    CHECK(fraction > 0);
    CHECK(fraction == Approx(tg_gbps / read_gbps).epsilon(0.5));
}

TEST_CASE("lumen bench prints a markdown table like llama-bench's", "[cli][bench]") {
    const std::string dir = tmp + "/bench_md";
    std::string out;
    REQUIRE(bench(dir, "--shape stories15M --type q4_0 -p 0 -n 4 -t 1 -r 1 --no-bandwidth --idle-wait 0", out) == 0);
    CHECK_THAT(out, Catch::Contains("| model | type | size | params | backend | threads | test | t/s |"));
    CHECK_THAT(out, Catch::Contains("| stories15M shape | Q4_0 |"));
    CHECK_THAT(out, Catch::Contains("| 1 | tg4 |"));
    CHECK_THAT(out, !Catch::Contains("memory read bandwidth:"));  // --no-bandwidth
    CHECK_THAT(out, !Catch::Contains("pp"));
    CHECK_THAT(out, !Catch::Contains("f16-KV"));

    // --cache-type f16: the backend column says so
    REQUIRE(bench(dir, "--shape stories15M --type q4_0 -p 8 -n 4 -t 1 -r 1 --no-bandwidth --idle-wait 0 --cache-type f16", out) == 0);
    CHECK_THAT(out, Catch::Contains(" f16-KV | 1 | pp8 |"));
    CHECK_THAT(out, Catch::Contains(" f16-KV | 1 | tg4 |"));
}

TEST_CASE("lumen bench rejects bad options with a message and a non-zero exit", "[cli][bench][errors]") {
    const std::string dir = tmp + "/bench_errors";
    struct case_t {
        std::string args, expected;
    };
    const case_t cases[] = {
        {"", "either -m FILE or --shape NAME"},
        {"--shape stories15M -m x.gguf", "either -m FILE or --shape NAME"},
        {"--shape stories16M", "unknown --shape 'stories16M'"},
        {"--shape stories15M --type q9_9", "unknown --type 'q9_9'"},
        {"--shape stories15M -r 0", "-r must be at least 1"},
        {"--shape stories15M -t 0", "thread counts must be at least 1"},
        {"--shape stories15M -p -1", "-p values must be >= 0"},
        {"--shape stories15M -o xml", "-o must be md or csv"},
        {"--shape stories15M --cache-type q8_0 --idle-wait 0", "--cache-type: expected f32 or f16, got 'q8_0'"},
        {"-m " + tmp + "/does_not_exist.gguf --idle-wait 0", "cannot open"},
    };
    for (const case_t& c : cases) {
        INFO(c.args);
        std::string out;
        CHECK(bench(dir, c.args, out) != 0);
        const std::string message = test_util::read_file(dir + "/err.txt");
        CHECK_THAT(message, Catch::Contains(c.expected));
        CHECK_THAT(message, Catch::Contains("lumen: error:"));
    }
    CHECK_FALSE(bench_models_left(dir));
}
