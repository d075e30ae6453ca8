// bindings.cpp: the embind surface of the WebAssembly build. The same headers as the native tool;
// this file only moves bytes and values across the JS boundary and turns lumen::error into JS Errors.
//
//   const loader = new Module.ModelLoader(size);      // allocates `size` bytes once, in the wasm heap
//   loader.write(offset, uint8array);                  // chunk by chunk, as the download arrives
//   const model = Module.Model.load(loader, "x.gguf", {threads: 4, n_ctx: 0});  // loader is emptied
//   model.info(); model.tokenize("text", true); model.detokenize([1, 2]);
//   model.start("Once upon a time", {temperature: 0, n_predict: 32, seed: 1});
//   const r = model.step(8);    // up to 8 tokens: {text, done, n_generated, ...}
//   model.delete(); loader.delete();
//
// Every function that can fail throws a JS Error whose message is the core's lumen::error message.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <emscripten.h>
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <lumen/convert/sentencepiece_model.hpp>
#include <lumen/lumen.hpp>

namespace lumen::web {
namespace {

using emscripten::val;

// The 32-bit build addresses at most 4 GB; the model must leave room for the KV cache, the
// activations and the allocator, so files above 2 GiB are refused before anything is allocated.
// The pthread build is limited to 2 GB of memory (see CMakeLists.txt: its JS exception glue
// breaks on addresses above 2 GB), so it takes models up to 1.5 GiB; lumen.js then switches to
// the single-thread build for larger ones.
#ifdef __EMSCRIPTEN_PTHREADS__
constexpr double max_model_bytes = 1610612736.0;
constexpr const char* too_large = "more than the threaded browser build can load (1.5 GiB; the single-thread build loads up to 2 GiB)";
#else
constexpr double max_model_bytes = 2147483648.0;
constexpr const char* too_large = "more than the browser build can load (2 GiB: 32-bit WebAssembly has at most 4 GB of memory for the "
                                  "weights, the cache and everything else)";
#endif

// --- errors: C++ exceptions become JS Errors carrying the same message

[[noreturn]] void throw_js_error(const std::string& message) {
    // The message lives in a static so that nothing on this frame needs destroying when the JS
    // exception unwinds through it.
    static std::string last;
    last = message;
    val::global("Error").new_(val(last)).throw_();
}

template <class F>
auto guarded(F&& f) -> decltype(f()) {
    std::string message;
    try {
        return f();
    } catch (const std::bad_alloc&) {
        message = "out of memory: the WebAssembly heap (at most 4 GB) cannot hold this";
    } catch (const std::exception& e) {
        message = e.what();
    }
    throw_js_error(message);
}

std::string format_size(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
    return buf;
}

// --- ModelLoader: the file's bytes, allocated once and filled in chunks

class model_loader {
public:
    explicit model_loader(double size) {
        guarded([&] {
            if (!(size > 0) || size != static_cast<double>(static_cast<uint64_t>(size)))
                throw error("model loader: the size must be a positive whole number of bytes");
            if (size > max_model_bytes)
                throw error("the model is " + format_size(size) + ", " + too_large);
            try {
                bytes_.resize(static_cast<size_t>(size));
            } catch (const std::bad_alloc&) {
                throw error("out of memory: cannot allocate " + format_size(size) + " for the model in the WebAssembly heap");
            } catch (const std::length_error&) {
                throw error("out of memory: cannot allocate " + format_size(size) + " for the model in the WebAssembly heap");
            }
            return 0;
        });
    }

    double size() const { return static_cast<double>(bytes_.size()); }
    double received() const { return static_cast<double>(received_); }

    // Copies a Uint8Array into the buffer at `offset` (a view of the heap is made here, after any
    // growth of memory, so a stale HEAPU8 can never be written to).
    void write(double offset, const val& chunk) {
        guarded([&] {
            if (taken_) throw error("model loader: already handed to a model");
            const double n = chunk["length"].as<double>();
            if (!(offset >= 0) || offset + n > static_cast<double>(bytes_.size()))
                throw error("model loader: chunk [" + std::to_string(static_cast<uint64_t>(offset)) + ", +" +
                            std::to_string(static_cast<uint64_t>(n)) + ") is outside the " +
                            std::to_string(bytes_.size()) + " bytes announced");
            const size_t at = static_cast<size_t>(offset);
            val view(emscripten::typed_memory_view(static_cast<size_t>(n),
                                                   reinterpret_cast<uint8_t*>(bytes_.data()) + at));
            view.call<void>("set", chunk);
            received_ += static_cast<size_t>(n);
            return 0;
        });
    }

    // Hands the bytes over (no copy); the loader is empty afterwards.
    detail::byte_source take(const std::string& name) {
        if (taken_) throw error(name + ": the model loader was already used");
        if (received_ < bytes_.size())
            throw error(name + ": only " + std::to_string(received_) + " of " + std::to_string(bytes_.size()) +
                        " bytes were received");
        taken_ = true;
        return detail::byte_source::from_buffer(std::move(bytes_));
    }

private:
    std::vector<std::byte> bytes_;
    size_t received_ = 0;  // bytes written (chunks are not expected to overlap)
    bool taken_ = false;
};

// --- reading option objects

template <class T>
T option(const val& options, const char* key, T fallback) {
    if (options.isUndefined() || options.isNull()) return fallback;
    const val v = options[key];
    if (v.isUndefined() || v.isNull()) return fallback;
    if constexpr (std::is_same_v<T, bool>) {
        return v.as<bool>();
    } else {
        const double d = v.as<double>();
        if (!(d == d)) throw error(std::string("option '") + key + "' is not a number");
        return static_cast<T>(d);
    }
}

generate_options read_generate_options(const val& o) {
    generate_options g;
    sampler_options& s = g.sampling;
    s.temperature = option<float>(o, "temperature", s.temperature);
    s.top_k = option<int32_t>(o, "top_k", s.top_k);
    s.top_p = option<float>(o, "top_p", s.top_p);
    s.min_p = option<float>(o, "min_p", s.min_p);
    s.repeat_penalty = option<float>(o, "repeat_penalty", s.repeat_penalty);
    s.repeat_last_n = option<int32_t>(o, "repeat_last_n", s.repeat_last_n);
    s.seed = static_cast<uint64_t>(option<double>(o, "seed", static_cast<double>(s.seed)));
    g.n_predict = option<int32_t>(o, "n_predict", g.n_predict);
    g.add_bos = option<bool>(o, "add_bos", g.add_bos);
    g.ignore_eos = option<bool>(o, "ignore_eos", g.ignore_eos);
    // The same checks as `lumen generate`.
    if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) throw error("top_p must be in (0, 1], got " + std::to_string(s.top_p));
    if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) throw error("min_p must be in [0, 1], got " + std::to_string(s.min_p));
    if (s.top_k < 0) throw error("top_k must be >= 0 (0 = off), got " + std::to_string(s.top_k));
    if (!(s.repeat_penalty > 0.0f)) throw error("repeat_penalty must be > 0, got " + std::to_string(s.repeat_penalty));
    if (!(s.temperature >= 0.0f)) throw error("temperature must be >= 0, got " + std::to_string(s.temperature));
    return g;
}

// --- conversions to JS values

val int32_array(const std::vector<int32_t>& ids) {
    // A copy (slice) of a heap view, so the JS array does not alias wasm memory.
    return val(emscripten::typed_memory_view(ids.size(), ids.data())).call<val>("slice");
}

std::vector<int32_t> ids_from_js(const val& ids) {
    return emscripten::convertJSArrayToNumberVector<int32_t>(ids);
}

val metadata_value(const gguf_value& v) {
    if (v.type() == gguf_type::array) {
        const gguf_array& a = std::get<gguf_array>(v.value);
        return val("[" + std::string(gguf_type_name(a.type)) + " x " + std::to_string(a.values.size()) + "]");
    }
    return std::visit([](const auto& x) -> val {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
            return val(x.size() > 200 ? x.substr(0, 197) + "..." : x);
        } else if constexpr (std::is_same_v<T, gguf_array>) {
            return val::undefined();
        } else if constexpr (std::is_same_v<T, bool>) {
            return val(x);
        } else {
            return val(static_cast<double>(x));
        }
    }, v.value);
}

val tokenize_with(const tokenizer& tok, const std::string& text, bool add_bos) {
    return int32_array(tok.encode(text, add_bos));
}

// --- Tokenizer: a vocabulary on its own (a vocab-only GGUF or a SentencePiece tokenizer.model)

class web_tokenizer {
public:
    explicit web_tokenizer(vocabulary v) : tok_(std::move(v)) {}

    static web_tokenizer* from_gguf(model_loader& loader, const std::string& name) {
        return guarded([&] {
            const gguf_file f = gguf_file::from_bytes(name, loader.take(name));
            return new web_tokenizer(vocabulary_from_gguf(f));
        });
    }
    static web_tokenizer* from_sentencepiece(model_loader& loader, const std::string& name) {
        return guarded([&] {
            const detail::byte_source bytes = loader.take(name);
            const std::string_view view(reinterpret_cast<const char*>(bytes.data()), bytes.size());
            return new web_tokenizer(parse_sentencepiece_model(view, name));
        });
    }

    val encode(const std::string& text, bool add_bos) const {
        return guarded([&] { return tokenize_with(tok_, text, add_bos); });
    }
    std::string decode(const val& ids) const {
        return guarded([&] { return tok_.decode(ids_from_js(ids)); });
    }
    int n_vocab() const { return tok_.n_vocab(); }

private:
    tokenizer tok_;
};

// --- Model: a loaded GGUF, one context, and the generation in progress

int pool_threads() {
    // Workers pre-started by the pthread build (Module.lumenPoolSize, read by PTHREAD_POOL_SIZE);
    // the calling thread makes one more. A larger pool request would deadlock, so it is capped.
#ifdef __EMSCRIPTEN_PTHREADS__
    return 1 + EM_ASM_INT({ return Module["lumenPoolSize"] | 0; });
#else
    return 1;
#endif
}

class web_model {
public:
    static web_model* load(model_loader& loader, const std::string& name, const val& options) {
        return guarded([&] {
            auto m = std::make_unique<web_model>(gguf_file::from_bytes(name, loader.take(name)), options);
            return m.release();
        });
    }

    web_model(gguf_file file, const val& options)
        : model_(std::move(file)),
          threads_(std::clamp(option<int>(options, "threads", 1), 1, pool_threads())),
          ctx_(model_, {.n_ctx = option<int64_t>(options, "n_ctx", 0), .n_threads = threads_}) {}

    val info() const {
        return guarded([&] {
            const gguf_file& f = model_.file();
            const model_config& c = model_.config();
            val hp = val::object();
            hp.set("n_vocab", static_cast<double>(c.n_vocab));
            hp.set("dim", static_cast<double>(c.dim));
            hp.set("n_layers", static_cast<double>(c.n_layers));
            hp.set("hidden_dim", static_cast<double>(c.hidden_dim));
            hp.set("n_heads", static_cast<double>(c.n_heads));
            hp.set("n_kv_heads", static_cast<double>(c.n_kv_heads));
            hp.set("head_dim", static_cast<double>(c.head_dim));
            hp.set("rope_dims", static_cast<double>(c.rope_dims));
            hp.set("rope_freq_base", c.rope_freq_base);
            hp.set("rms_norm_eps", c.rms_norm_eps);
            hp.set("n_ctx_train", static_cast<double>(c.n_ctx_train));

            val metadata = val::object();
            for (const auto& [key, value] : f.metadata()) metadata.set(key, metadata_value(value));
            val types = val::object();
            for (const tensor_view& t : f.tensors()) {
                const std::string type(dtype_name(t.type));
                const val seen = types[type];
                types.set(type, (seen.isUndefined() ? 0 : seen.as<int>()) + 1);
            }

            val out = val::object();
            out.set("file", f.path());
            out.set("name", c.name);
            out.set("architecture", c.architecture);
            out.set("gguf_version", f.version());
            out.set("file_size", static_cast<double>(f.file_size()));
            out.set("n_tensors", static_cast<double>(f.tensors().size()));
            out.set("tensor_types", types);
            out.set("n_params", static_cast<double>(model_.n_params()));
            out.set("n_weight_bytes", static_cast<double>(model_.n_weight_bytes()));
            out.set("n_ctx", static_cast<double>(ctx_.n_ctx()));
            out.set("threads", threads_);
            out.set("bos", model_.tokenizer().bos());
            out.set("eos", model_.tokenizer().eos());
            out.set("hyperparameters", hp);
            out.set("metadata", metadata);
            return out;
        });
    }

    val tokenize(const std::string& text, bool add_bos) const {
        return guarded([&] { return tokenize_with(model_.tokenizer(), text, add_bos); });
    }
    std::string detokenize(const val& ids) const {
        return guarded([&] { return model_.tokenizer().decode(ids_from_js(ids)); });
    }

    // Starts a generation (tokenizes and processes the prompt); step() continues it.
    void start(const std::string& prompt, const val& options) {
        guarded([&] {
            generation_.reset();
            generation_.emplace(ctx_, prompt, read_generate_options(options));
            return 0;
        });
    }

    // Generates up to max_tokens tokens: {text, done, n_generated, n_prompt_tokens, prompt_ms,
    // generate_ms, stopped_at_eos, context_full}.
    val step(int max_tokens) {
        return guarded([&] {
            if (!generation_) throw error("step: no generation was started");
            std::string text;
            for (int i = 0; i < max_tokens && generation_->next(text); ++i) {
            }
            const generation_stats& s = generation_->stats();
            val out = val::object();
            out.set("text", text);
            out.set("done", generation_->done());
            out.set("n_generated", static_cast<double>(s.n_generated));
            out.set("n_prompt_tokens", static_cast<double>(s.n_prompt_tokens));
            out.set("prompt_ms", s.prompt_seconds * 1e3);
            out.set("generate_ms", s.generate_seconds * 1e3);
            out.set("stopped_at_eos", s.stopped_at_eos);
            out.set("context_full", s.context_full);
            return out;
        });
    }

private:
    model model_;
    int threads_;
    context ctx_;
    std::optional<generator> generation_;
};

std::string build_flavor() {
#if defined(LUMEN_CPU_HAVE_WASM_RELAXED)
    std::string s = "simd128+relaxed";
#elif defined(LUMEN_CPU_HAVE_WASM)
    std::string s = "simd128";
#else
    std::string s = "scalar";
#endif
#ifdef __EMSCRIPTEN_PTHREADS__
    s += "+pthreads";
#endif
    return s;
}

}  // namespace
}  // namespace lumen::web

EMSCRIPTEN_BINDINGS(lumen) {
    using namespace emscripten;
    using namespace lumen::web;
    constant("maxModelBytes", max_model_bytes);
    function("buildFlavor", &build_flavor);
    function("maxThreads", &pool_threads);

    class_<model_loader>("ModelLoader")
        .constructor<double>()
        .function("size", &model_loader::size)
        .function("received", &model_loader::received)
        .function("write", &model_loader::write);

    class_<web_tokenizer>("Tokenizer")
        .class_function("fromGGUF", &web_tokenizer::from_gguf, allow_raw_pointers())
        .class_function("fromSentencePiece", &web_tokenizer::from_sentencepiece, allow_raw_pointers())
        .function("encode", &web_tokenizer::encode)
        .function("decode", &web_tokenizer::decode)
        .function("nVocab", &web_tokenizer::n_vocab);

    class_<web_model>("Model")
        .class_function("load", &web_model::load, allow_raw_pointers())
        .function("info", &web_model::info)
        .function("tokenize", &web_model::tokenize)
        .function("detokenize", &web_model::detokenize)
        .function("start", &web_model::start)
        .function("step", &web_model::step);
}
