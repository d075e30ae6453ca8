// cmd_info.cpp: `lumen info FILE`: the metadata, the architecture's hyperparameters, every tensor
// (name, type, shape, bytes) and the parameter count of a GGUF file.
#include <cstdio>
#include <string>

#include <lumen/gguf.hpp>
#include <lumen/model_config.hpp>

#include "commands.hpp"

namespace lumen::cli {
namespace {

std::string scalar_to_string(const gguf_value& v) {
    return std::visit([](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
            std::string s = x.size() > 80 ? x.substr(0, 77) + "..." : x;
            for (char& c : s)
                if (c == '\n') c = ' ';
            return "\"" + s + "\"";
        } else if constexpr (std::is_same_v<T, gguf_array>) {
            return "";
        } else if constexpr (std::is_same_v<T, bool>) {
            return x ? "true" : "false";
        } else if constexpr (std::is_floating_point_v<T>) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%g", static_cast<double>(x));
            return buf;
        } else {
            return std::to_string(x);
        }
    }, v.value);
}

std::string value_to_string(const gguf_value& v) {
    if (v.type() != gguf_type::array) return scalar_to_string(v);
    const gguf_array& a = std::get<gguf_array>(v.value);
    std::string s = "[" + std::string(gguf_type_name(a.type)) + " × " + std::to_string(a.values.size()) + "]";
    if (!a.values.empty()) {
        s += " ";
        for (size_t i = 0; i < a.values.size() && i < 5; ++i) s += (i ? ", " : "") + value_to_string(a.values[i]);
        if (a.values.size() > 5) s += ", ...";
    }
    return s;
}

std::string shape_to_string(const tensor_view& t) {
    std::string s;
    for (uint32_t d = 0; d < t.n_dims; ++d) s += (d ? " x " : "") + std::to_string(t.ne[d]);
    return s;
}

void print_hyperparameters(const gguf_file& file) {
    const model_config c = read_model_config(file);
    std::printf("\nhyperparameters (%s):\n", c.architecture.c_str());
    std::printf("  %-22s %lld\n", "embedding (dim)", static_cast<long long>(c.dim));
    std::printf("  %-22s %lld\n", "layers", static_cast<long long>(c.n_layers));
    std::printf("  %-22s %lld\n", "feed-forward", static_cast<long long>(c.hidden_dim));
    std::printf("  %-22s %lld\n", "heads", static_cast<long long>(c.n_heads));
    std::printf("  %-22s %lld\n", "kv heads", static_cast<long long>(c.n_kv_heads));
    std::printf("  %-22s %lld\n", "head dim", static_cast<long long>(c.head_dim));
    std::printf("  %-22s %lld\n", "rope dims", static_cast<long long>(c.rope_dims));
    std::printf("  %-22s %g\n", "rope freq base", static_cast<double>(c.rope_freq_base));
    std::printf("  %-22s %g\n", "rms norm eps", static_cast<double>(c.rms_norm_eps));
    std::printf("  %-22s %lld\n", "training context", static_cast<long long>(c.n_ctx_train));
}

void run_info(const std::string& path) {
    const gguf_file file = gguf_file::open(path);
    std::printf("%s: GGUF v%u, %zu metadata keys, %zu tensors, alignment %u, %llu bytes\n", path.c_str(),
                file.version(), file.metadata().size(), file.tensors().size(), file.alignment(),
                static_cast<unsigned long long>(file.file_size()));
    std::printf("\nmetadata:\n");
    for (const auto& [key, value] : file.metadata())
        std::printf("  %-40s %-6s %s\n", key.c_str(), std::string(gguf_type_name(value.type())).c_str(),
                    value_to_string(value).c_str());
    if (file.find("general.architecture") && !file.tensors().empty()) print_hyperparameters(file);

    std::printf("\ntensors:\n");
    std::printf("  %-32s %-6s %-20s %12s\n", "name", "type", "shape (ne0 first)", "bytes");
    int64_t n_params = 0;
    uint64_t n_bytes = 0;
    for (const tensor_view& t : file.tensors()) {
        std::printf("  %-32s %-6s %-20s %12llu\n", t.name.c_str(), std::string(dtype_name(t.type)).c_str(),
                    shape_to_string(t).c_str(), static_cast<unsigned long long>(t.n_bytes));
        n_params += t.n_elements();
        n_bytes += t.n_bytes;
    }
    std::printf("\nparameters: %lld (%.3f M), tensor data: %llu bytes (%.2f MiB)\n", static_cast<long long>(n_params),
                static_cast<double>(n_params) / 1e6, static_cast<unsigned long long>(n_bytes),
                static_cast<double>(n_bytes) / (1024.0 * 1024.0));
}

}  // namespace

void add_info_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("info", "Print a GGUF file's metadata, hyperparameters, tensors and parameter count");
    auto path = std::make_shared<std::string>();
    cmd->add_option("file", *path, "GGUF file")->required();
    cmd->callback([path] { run_info(*path); });
}

}  // namespace lumen::cli
