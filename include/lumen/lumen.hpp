// lumen.hpp: the public API in one include: load a GGUF model, tokenize, run it, sample, and
// stream generated text (see session.hpp for the ten-line version).
#pragma once

#include "context.hpp"
#include "error.hpp"
#include "gguf.hpp"
#include "gguf_writer.hpp"
#include "model.hpp"
#include "sampler.hpp"
#include "session.hpp"
#include "tokenizer.hpp"
